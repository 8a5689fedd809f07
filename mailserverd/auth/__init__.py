"""One door for authentication: a twisted.cred Portal for every protocol.

Authenticator.authenticate() is what SMTP, POP3 (and later IMAP, HTTP)
call. It goes through the Portal (checker + realm), caches verified
passwords (argon2 costs ~0.1 s per check), applies Dovecot's auth penalty
(a growing delay after failures, per source IP and per account) and logs one
line per failure with the remote IP, for fail2ban.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os

from twisted.cred import credentials, error, portal
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from ..store.api import Account

log = Logger(namespace="mailserverd.auth")


class AuthFailed(Exception):
    """Wrong user name or password (deliberately not saying which)."""


class IMailAccount(Interface):
    """The avatar interface: an authenticated mail account (store.api.Account)."""


@implementer(ICredentialsChecker)
class StoreChecker:
    """Checks IUsernamePassword against the directory's argon2 hashes, with a cache.

    argon2 costs ~0.1 s of CPU per check, so the cost must be per password
    check, not per login (Dovecot's auth_cache): a verified (address,
    password) pair is remembered for `ttl` seconds, and while one check of a
    pair runs, other logins with the same pair wait for it instead of
    starting their own (ten clients logging in at once cost one argon2).

    The cache keys on an HMAC (random per-process key) of the address and
    password, never the password itself. forget() (an admin change: password,
    removal, domain) empties it and bumps a generation, so a check that
    started before the change is neither cached nor shared after it. Only
    successes are cached: a wrong password is checked (and penalised) every time.
    """

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, store, clock, ttl: float = 300.0, max_entries: int = 100_000):
        self.store = store
        self.clock = clock
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: dict[bytes, tuple[float, Account]] = {}
        self._inflight: dict[bytes, list[defer.Deferred]] = {}  # key -> waiters of the running check
        self._generation = 0
        self._key = os.urandom(32)
        self.hits = self.checks = 0  # for tests and /metrics-style inspection

    def _cache_key(self, username: str, password: str) -> bytes:
        material = username.lower().encode("utf-8", "surrogateescape") + b"\0" + \
            password.encode("utf-8", "surrogateescape")
        return hmac.new(self._key, material, hashlib.sha256).digest()

    def requestAvatarId(self, creds):
        username = creds.username.decode("utf-8", "replace") if isinstance(creds.username, bytes) else creds.username
        password = creds.password.decode("utf-8", "replace") if isinstance(creds.password, bytes) else creds.password
        key = self._cache_key(username, password)
        cached = self._cache.get(key)
        if cached is not None:
            if cached[0] > self.clock.seconds():
                self.hits += 1
                return defer.succeed(cached[1])
            del self._cache[key]
        waiters = self._inflight.get(key)
        if waiters is not None:  # the same pair is being checked: share its answer
            waiter: defer.Deferred = defer.Deferred()
            waiters.append(waiter)
            return waiter
        waiters = self._inflight[key] = []
        generation = self._generation
        self.checks += 1
        d = self.store.verify_password(username, password)

        def verified(account):
            if account is None:
                raise error.UnauthorizedLogin()
            if generation == self._generation:
                if len(self._cache) >= self.max_entries:
                    self._drop_expired()
                self._cache[key] = (self.clock.seconds() + self.ttl, account)
            return account

        def settle(result):
            if self._inflight.get(key) is waiters:
                del self._inflight[key]
            for waiter in waiters:
                waiter.callback(result) if not isinstance(result, Failure) else waiter.errback(result)
            return result
        return d.addCallback(verified).addBoth(settle)

    def _drop_expired(self) -> None:
        now = self.clock.seconds()
        self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        if len(self._cache) >= self.max_entries:
            self._cache.clear()  # bounded memory, whatever the login pattern

    def forget(self) -> None:
        """Drop cached entries (after an admin command that may change a password);
        checks already running finish for their own callers only."""
        self._cache.clear()
        self._inflight.clear()
        self._generation += 1


@implementer(portal.IRealm)
class MailRealm:
    """Hands every protocol the same avatar: the Account the checker found."""

    def requestAvatar(self, avatar_id, mind, *interfaces):
        if IMailAccount in interfaces:
            return IMailAccount, avatar_id, lambda: None
        raise TypeError("mailserverd only offers IMailAccount avatars")


class Penalty:
    """Dovecot's auth penalty: after n failures, wait initial * 2**(n-1) seconds,
    capped; failures are forgotten after `forget_after` quiet seconds."""

    def __init__(self, clock, initial: float = 2.0, maximum: float = 15.0, forget_after: float = 900.0):
        self.clock = clock
        self.initial = initial
        self.maximum = maximum
        self.forget_after = forget_after
        self._failures: dict[str, tuple[int, float]] = {}

    def delay(self, *keys: str) -> float:
        now = self.clock.seconds()
        worst = 0
        for key in keys:
            count, last = self._failures.get(key, (0, 0.0))
            if count and now - last < self.forget_after:
                worst = max(worst, count)
        if not worst or not self.initial:
            return 0.0
        return min(self.initial * 2 ** (worst - 1), self.maximum)

    def failed(self, *keys: str) -> None:
        now = self.clock.seconds()
        if len(self._failures) > 100_000:  # bound memory under a spray attack
            self._failures = {k: v for k, v in self._failures.items() if now - v[1] < self.forget_after}
        for key in keys:
            count, last = self._failures.get(key, (0, 0.0))
            if now - last >= self.forget_after:
                count = 0
            self._failures[key] = (count + 1, now)

    def succeeded(self, ip_key: str) -> None:
        self._failures.pop(ip_key, None)


class Authenticator:
    def __init__(self, portal_: portal.Portal, clock, penalty: Penalty):
        self.portal = portal_
        self.clock = clock
        self.penalty = penalty

    def forget_cached(self) -> None:
        for checker in set(self.portal.checkers.values()):
            checker.forget()

    @defer.inlineCallbacks
    def authenticate(self, username: str, password: str, remote_ip: str, protocol: str = ""):
        """Deferred[Account]; errbacks AuthFailed after the failure delay."""
        user_key = "user:" + username.lower()[:320]
        ip_key = "ip:" + remote_ip
        creds = credentials.UsernamePassword(username[:320], password[:1024])
        try:
            _iface, account, _logout = yield self.portal.login(creds, None, IMailAccount)
        except error.UnauthorizedLogin:
            self.penalty.failed(ip_key, user_key)
            log.info("auth failed: user={user!r} rip={ip} proto={proto}",
                     user=username[:320], ip=remote_ip, proto=protocol)
            delay = self.penalty.delay(ip_key, user_key)
            if delay:
                yield task.deferLater(self.clock, delay, lambda: None)
            raise AuthFailed()
        self.penalty.succeeded(ip_key)
        log.info("auth ok: user={user} rip={ip} proto={proto}", user=account.address,
                 ip=remote_ip, proto=protocol)
        return account


def build_authenticator(store, settings, clock=None) -> Authenticator:
    if clock is None:
        from twisted.internet import reactor as clock
    checker = StoreChecker(store, clock, ttl=settings.auth.cache_ttl)
    penalty = Penalty(clock, initial=settings.auth.penalty_initial, maximum=settings.auth.penalty_max)
    return Authenticator(portal.Portal(MailRealm(), [checker]), clock, penalty)


def plaintext_allowed(secure: bool, remote_ip: str) -> bool:
    """Plaintext passwords only over TLS or from loopback (RFC 8314 4, RFC 3501 6.2.3)."""
    if secure:
        return True
    try:
        return ipaddress.ip_address(remote_ip.split("%")[0]).is_loopback
    except ValueError:
        return False
