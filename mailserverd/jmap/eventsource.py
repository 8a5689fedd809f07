"""GET /jmap/eventsource: push over Server-Sent Events (RFC 8620 7.3).

Query arguments: types ("*" or a comma-separated list of Mailbox, Email,
Thread), closeafter ("state" ends the response after the first StateChange,
"no" keeps it open) and ping (seconds between "ping" events, 0 = none;
clamped to MIN_PING..MAX_PING). AsyncStore calls us after each commit that
touched the account (the hook IMAP IDLE uses); we read the states and send a
"state" event with the types whose state moved since the last one sent.

A stream lives as long as the credential that opened it (pushguard.py): when
the session is signed out or expires, the token is revoked, or the password
changes, the server writes a comment line saying so and ends the response.
The browser's EventSource then reconnects and gets a 401, which ends it.
"""

from __future__ import annotations

import json
from collections import defaultdict

from twisted.logger import Logger

from ..store import jmapreads
from . import state

log = Logger(namespace="mailserverd.jmap")

MIN_PING, MAX_PING = 5, 300
MAX_STREAMS_PER_ACCOUNT = 16


class BadArguments(ValueError):
    pass


def parse_arguments(args: dict) -> tuple[set, bool, int]:
    """(types, close after the first state event, ping seconds) from the query string."""
    def one(name, default):
        values = args.get(name.encode(), [default.encode()])
        return values[0].decode("ascii", "replace")
    types_text = one("types", "*")
    types = set(state.TYPES) if types_text == "*" else set(filter(None, types_text.split(",")))
    if not types <= set(state.TYPES):
        raise BadArguments(f"types: known types are {', '.join(state.TYPES)} or *")
    closeafter = one("closeafter", "no")
    if closeafter not in ("state", "no"):
        raise BadArguments("closeafter is state or no")
    ping = one("ping", "0")
    if not ping.isdigit() or len(ping) > 6:
        raise BadArguments("ping is a number of seconds")
    ping = int(ping)
    return types, closeafter == "state", 0 if ping == 0 else min(max(ping, MIN_PING), MAX_PING)


class Stream:
    def __init__(self, owner, request, account, account_id, types, close_after, ping, credential=None):
        self.owner, self.request, self.account, self.account_id = owner, request, account, account_id
        self.credential = credential  # what opened it (pushguard.py); None: not watched
        self.types, self.close_after, self.ping = types, close_after, ping
        self.sent: dict | None = None  # the states the client was last told (or had at start)
        self.reading = self.dirty = self.closed = False
        self.ping_call = None

    def start(self) -> None:
        request = self.request
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache, no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        request.notifyFinish().addBoth(lambda _: self.close())
        self.owner.store.subscribe(self.account.id, self.changed)
        if self.owner.guard is not None:
            self.owner.guard.watch(self.credential, self, self.revoked)
        self.changed(self.account.id)  # the baseline; ": ready" goes out once it is read
        self._schedule_ping()

    def _schedule_ping(self) -> None:
        if self.ping and not self.closed:
            self.ping_call = self.owner.reactor.callLater(self.ping, self._ping)

    def _ping(self) -> None:
        self.ping_call = None
        self._write("ping", {"interval": self.ping})
        self._schedule_ping()

    def changed(self, _account_id) -> None:
        if self.closed:
            return
        if self.reading:
            self.dirty = True
            return
        self.reading = True
        d = self.owner.store.run_read(jmapreads.states, self.account)
        d.addCallback(self._compare)
        d.addErrback(lambda failure: log.failure("eventsource: reading states failed", failure))
        d.addBoth(self._read_done)

    def _read_done(self, _result) -> None:
        self.reading = False
        if self.dirty and not self.closed:
            self.dirty = False
            self.changed(self.account.id)

    def _compare(self, found: dict) -> None:
        now = {k: v for k, v in state.strings(found).items() if k in self.types}
        if self.sent is None:  # the baseline: from here on every change is pushed
            self.sent = now
            if not self.closed:
                self.request.write(b": ready\n\n")
            return
        moved = {k: v for k, v in now.items() if self.sent.get(k) != v}
        if not moved:
            return
        self.sent = now
        self._write("state", {"@type": "StateChange", "changed": {self.account_id: moved}})
        if self.close_after:
            self.close(finish=True)

    def _write(self, event: str, data: dict) -> None:
        if self.closed:
            return
        self.request.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

    def revoked(self, reason: str) -> None:
        """The credential that opened the stream is dead (pushguard.py): say why, end it."""
        if self.closed:
            return
        log.info("eventsource: closed user={user}: {reason}", user=self.account.address, reason=reason)
        if not self.request.finished:
            self.request.write(f": closed: {reason}\n\n".encode())
        self.close(finish=True)

    def close(self, finish: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if self.owner.guard is not None:
            self.owner.guard.unwatch(self.credential, self)
        self.owner.store.unsubscribe(self.account.id, self.changed)
        self.owner.streams[self.account.id].discard(self)
        if not self.owner.streams[self.account.id]:
            del self.owner.streams[self.account.id]
        if self.ping_call is not None and self.ping_call.active():
            self.ping_call.cancel()
        if finish and not self.request.finished:
            self.request.finish()


class EventSource:
    def __init__(self, store, reactor, guard=None):
        self.store = store
        self.reactor = reactor
        self.guard = guard  # pushguard.PushGuard: streams end with their credential
        self.streams: dict[int, set] = defaultdict(set)

    def open(self, request, account, account_id: str, credential=None) -> None:
        from .web import HTTPError
        try:
            types, close_after, ping = parse_arguments(request.args)
        except BadArguments as exc:
            raise HTTPError(400, "invalidArguments", str(exc))
        if len(self.streams[account.id]) >= MAX_STREAMS_PER_ACCOUNT:
            raise HTTPError(429, "limit", f"at most {MAX_STREAMS_PER_ACCOUNT} event streams per account")
        stream = Stream(self, request, account, account_id, types, close_after, ping, credential)
        self.streams[account.id].add(stream)
        stream.start()
