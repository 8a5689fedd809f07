"""Push connections end with the credential that opened them.

An EventSource stream (eventsource.py) or a JMAP WebSocket (websocket.py) is
authenticated once, at its start, and may stay open for hours; signing out,
a password change, an account removal, a revoked or expired Bearer token or
an expired browser session must end it too (issue 14: "session expiry and
revocation"), not just refuse its next request.

web.py records what authenticated each request (credential_of): the browser
session ("session", SHA-256 of its secret), the Bearer token ("token", id),
or for HTTP Basic the account and the digest of its credential row
("account", id, digest, read once when the connection opens). A push ticket
carries the credential of the request that got it (browser.Tickets). Each
push connection registers here with that credential and a close function.

- Sign-out in this process (POST /auth/logout, or a new sign-in replacing a
  session) calls revoke(): that session's connections close at once.
- Every `interval` seconds (RECHECK_INTERVAL, or MAILSERVERD_PUSH_RECHECK for
  tests) one batched read on the store's read pool, store/pushauth.dead(),
  checks every distinct credential with a live connection; the connections
  of a dead one close. So a change made by another process or node
  (mailserverctl with the daemon stopped, another node's sign-out, a token
  revoked there, a session that expired) ends them within one interval.
- An admin change in this process (the Authenticator's forget_cached hook:
  every mailserverctl command on the control socket) runs the check at once.
- A check that finds a password changed elsewhere calls on_dead (web.py: the
  Authenticator forgets its cached logins), so the old password cannot open a
  new connection here for the rest of the login cache's lifetime.

The loop runs only while connections are registered; a check never overlaps
another (a request for one while one runs makes one more afterwards). The
close functions end an EventSource response, or send a WebSocket close frame
1008 "policy violation" (RFC 6455 7.4.1) with the reason.
"""

from __future__ import annotations

import os

from twisted.internet import defer, task, threads
from twisted.logger import Logger

from ..store import pushauth

log = Logger(namespace="mailserverd.jmap")

RECHECK_INTERVAL = 30.0  # seconds between checks of every open push connection's credential
RECHECK_ENV = "MAILSERVERD_PUSH_RECHECK"  # seconds; the transcript tests use a short interval


def default_interval() -> float:
    try:
        value = float(os.environ.get(RECHECK_ENV, ""))
    except ValueError:
        return RECHECK_INTERVAL
    return value if 0.05 <= value <= 3600 else RECHECK_INTERVAL


def store_check(store, settings, reactor):
    """check(credentials, now) -> Deferred[set of dead ones], one read on the store's pool."""
    def check(credentials, now):
        return threads.deferToThreadPool(reactor, store.pool, pushauth.dead, store.store, credentials, now,
                                         settings.http.session_lifetime, settings.http.session_max_lifetime)
    return check


class PushGuard:
    """Open push connections by credential. `check(credentials, now)` answers a Deferred
    set of the dead credentials; `clock` schedules the loop (reactor or task.Clock)."""

    def __init__(self, check, clock, interval: float | None = None, on_dead=None):
        self.check = check
        self.on_dead = on_dead  # called with the set of dead credentials a check found
        self.clock = clock
        self.interval = default_interval() if interval is None else interval
        self.watched: dict[tuple, dict] = {}  # credential -> {connection key: close(reason)}
        self._loop: task.LoopingCall | None = None
        self._running: defer.Deferred | None = None
        self._again = False
        self.checks = 0  # batched reads made (tests, /metrics-style inspection)

    def watch(self, credential, key, close) -> None:
        """Close `key` with close(reason) once `credential` is dead; no-op for None
        (a connection opened without a recorded credential, e.g. in unit tests)."""
        if credential is None:
            return
        self.watched.setdefault(credential, {})[key] = close
        if self._loop is None:
            self._loop = task.LoopingCall(self._tick)
            self._loop.clock = self.clock
            self._loop.start(self.interval, now=False).addErrback(
                lambda f: log.failure("push guard: the loop failed", f))

    def unwatch(self, credential, key) -> None:
        connections = self.watched.get(credential)
        if connections is None:
            return
        connections.pop(key, None)
        if not connections:
            del self.watched[credential]
        if not self.watched and self._loop is not None:
            loop, self._loop = self._loop, None
            if loop.running:
                loop.stop()

    def revoke(self, credential, reason: str) -> int:
        """Close every connection `credential` opened (sign-out here); how many."""
        connections = self.watched.pop(credential, {})
        for close in list(connections.values()):
            self._close(close, reason)
        if not self.watched and self._loop is not None:
            loop, self._loop = self._loop, None
            if loop.running:
                loop.stop()
        return len(connections)

    def check_now(self) -> None:
        """Check every credential now (after an admin change in this process)."""
        self._tick()

    def _tick(self) -> defer.Deferred:
        if self._running is not None:  # the last check has not answered yet: skip this beat
            self._again = True
            return defer.succeed(None)
        credentials = list(self.watched)
        if not credentials:
            return defer.succeed(None)
        self.checks += 1
        try:
            d = self.check(credentials, self.clock.seconds())
        except Exception:
            d = defer.fail()
        self._running = d
        d.addCallback(self._apply)
        d.addErrback(lambda f: log.failure("push guard: checking credentials failed", f))
        d.addBoth(self._done)
        return d

    def _done(self, _result) -> None:
        self._running = None
        if self._again:
            self._again = False
            self._tick()

    def _apply(self, dead) -> None:
        if dead and self.on_dead is not None:
            try:
                self.on_dead(dead)
            except Exception:
                log.failure("push guard: on_dead failed")
        for credential in dead:
            connections = self.watched.pop(credential, None)
            if connections:
                for close in list(connections.values()):
                    self._close(close, _reason(credential))
        if not self.watched and self._loop is not None:
            loop, self._loop = self._loop, None
            if loop.running:
                loop.stop()

    @staticmethod
    def _close(close, reason: str) -> None:
        try:
            close(reason)
        except Exception:
            log.failure("push guard: closing a connection failed")


def _reason(credential) -> str:
    return {"session": "the session ended (signed out, expired or the password changed)",
            "token": "the token was revoked or expired",
            "account": "the password changed or the account was removed"}.get(credential[0],
                                                                              "the credential was revoked")


def basic_credential(store, reactor, account) -> defer.Deferred:
    """("account", id, digest) of an account authenticated by password, read now; None
    when the account is gone already."""
    d = threads.deferToThreadPool(reactor, store.pool, pushauth.account_digest, store.store,
                                  account.id, account.address)
    return d.addCallback(lambda digest: None if digest is None else ("account", account.id, digest))
