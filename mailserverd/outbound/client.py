"""The socket side of the SMTP client: a thin Twisted protocol around ClientSession.

`attempt(reactor, address, port, session, ...)` connects (with a timeout),
lets the session talk, and fires with the session once the connection is
gone, whatever happened: connection failures and timeouts are recorded in
`session.host_error`, never raised. Every timer runs on the injected reactor.

With a ConnectionPool, a session made with keep_open fires as soon as its
message is done and the connection goes into the pool (keyed by address,
port and credentials) instead of QUIT; `pool.take(key)` hands it to the next
message for that host (`reuse(envelope)`), so one connection, one TLS
handshake and one EHLO carry many messages (RFC 5321 3.3; Postfix's
connection cache). An idle connection is closed with QUIT after
`idle_timeout` seconds (Postfix's smtp_connection_cache_time_limit, 2 s) or
after `max_uses` messages, and is dropped at once if the server speaks or
closes while idle.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet import defer, protocol
from twisted.logger import Logger

from .clientparser import DEFERRED, ClientSession, Close, Idle, Outcome, Send, StartTLS

log = Logger(namespace="mailserverd.outbound.client")


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait; the RFC 5321 4.5.3.2 minimums by default."""

    connect: float = 30.0
    greeting: float = 300.0     # 4.5.3.2.1
    command: float = 300.0      # 4.5.3.2.2, 4.5.3.2.3 (EHLO, STARTTLS, AUTH, MAIL, RCPT too)
    data_init: float = 120.0    # 4.5.3.2.4
    data_end: float = 600.0     # 4.5.3.2.6
    quit: float = 10.0          # nothing depends on the answer to QUIT

    def for_stage(self, stage: str) -> float:
        return {"greeting": self.greeting, "data": self.data_init, "data_end": self.data_end,
                "quit": self.quit}.get(stage, self.command)


def default_tls_context_factory():
    """Opportunistic TLS: encrypt, verify nothing (RFC 7435; Postfix's default `may` level)."""
    from twisted.internet import ssl
    return ssl.CertificateOptions()


class SmtpClientProtocol(protocol.Protocol):
    def __init__(self, session: ClientSession, reactor, tls_context_factory, timeouts: Timeouts,
                 finished: defer.Deferred, pool: "ConnectionPool | None" = None, key=None):
        self.session = session
        self.reactor = reactor
        self.tls_context_factory = tls_context_factory
        self.timeouts = timeouts
        self.finished = finished
        self.pool = pool
        self.key = key
        self.uses = 1
        self.lost = False
        self._timer = None

    def connectionMade(self):
        self._arm()

    def dataReceived(self, data: bytes):
        self._perform(self.session.receive(data))
        self._arm()

    def reuse(self, envelope) -> defer.Deferred:
        """Send the next message on this idle connection; Deferred[ClientSession] as attempt()."""
        self.uses += 1
        self.session = self.session.follow_on(envelope)
        self.finished = defer.Deferred()
        finished = self.finished
        self._perform(self.session.start())
        self._arm()
        return finished

    def quit(self) -> None:
        """Leave an idle connection politely (RFC 5321 4.1.1.10)."""
        if self.lost:
            return
        self.session.idle = False
        self.session.closed = True
        self.transport.write(b"QUIT\r\n")
        self.transport.loseConnection()

    def _perform(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, Idle):
                self._went_idle()
            elif isinstance(action, Send):
                self.transport.write(action.data)
            elif isinstance(action, StartTLS):
                if self.tls_context_factory is None:
                    self.session.host_error = Outcome(DEFERRED, 0, "4.7.0", "no TLS context")
                    self.transport.loseConnection()
                    return
                self.transport.startTLS(self.tls_context_factory)
                # writes made now go out once the handshake is done; a failed handshake
                # ends the connection (connectionLost, the recipients stay pending)
                self._perform(self.session.tls_started())
            elif isinstance(action, Close):
                self.transport.loseConnection()

    def _went_idle(self) -> None:
        # Pooled BEFORE the message's Deferred fires: a delivery waiting for this destination
        # runs from that callback and should find this connection. (It makes a new session
        # object with follow_on, so the finished one stays as the caller reads it.)
        finished, session = self.finished, self.session
        if self.pool is None or self.uses >= self.pool.max_uses:
            self.quit()
        elif not self.lost:
            self.pool.put(self)
        if not finished.called:
            finished.callback(session)

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.session.idle:
            return  # the pool times idle connections out
        if not self.session.closed:
            self._timer = self.reactor.callLater(self.timeouts.for_stage(self.session.stage), self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        self.session.timed_out()
        self.transport.abortConnection()

    def connectionLost(self, reason):
        self.lost = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.pool is not None:
            self.pool.discard(self)
        self.session.connection_lost(reason.getErrorMessage())
        if not self.finished.called:
            self.finished.callback(self.session)


class ConnectionPool:
    """Idle SMTP client connections by (address, port, credentials); see the module docstring."""

    def __init__(self, reactor, idle_timeout: float = 2.0, max_uses: int = 100):
        self.reactor = reactor
        self.idle_timeout = idle_timeout
        self.max_uses = max_uses
        self._idle: dict[object, list[SmtpClientProtocol]] = {}
        self._timers: dict[SmtpClientProtocol, object] = {}
        self.reused = 0  # messages sent on a pooled connection (tests, logs)

    def put(self, connection: SmtpClientProtocol) -> None:
        self._idle.setdefault(connection.key, []).append(connection)
        self._timers[connection] = self.reactor.callLater(self.idle_timeout, self._expire, connection)

    def take(self, key) -> SmtpClientProtocol | None:
        """The most recently idle live connection for key, or None."""
        stack = self._idle.get(key)
        while stack:
            connection = stack.pop()
            self._cancel(connection)
            if not connection.lost and connection.session.idle:
                self.reused += 1
                if not stack:
                    del self._idle[key]
                return connection
        self._idle.pop(key, None)
        return None

    def discard(self, connection: SmtpClientProtocol) -> None:
        self._cancel(connection)
        stack = self._idle.get(connection.key)
        if stack and connection in stack:
            stack.remove(connection)
            if not stack:
                del self._idle[connection.key]

    def close_all(self) -> None:
        """QUIT every idle connection (the service is stopping)."""
        for stack in list(self._idle.values()):
            for connection in list(stack):
                self.discard(connection)
                connection.quit()

    def _expire(self, connection: SmtpClientProtocol) -> None:
        self._timers.pop(connection, None)
        self.discard(connection)
        connection.quit()

    def _cancel(self, connection: SmtpClientProtocol) -> None:
        timer = self._timers.pop(connection, None)
        if timer is not None and timer.active():
            timer.cancel()


class _Factory(protocol.ClientFactory):
    def __init__(self, session, reactor, tls_context_factory, timeouts, finished, address, pool=None, key=None):
        self.pool = pool
        self.key = key
        self.session = session
        self.reactor = reactor
        self.tls_context_factory = tls_context_factory
        self.timeouts = timeouts
        self.finished = finished
        self.address = address

    def buildProtocol(self, addr):
        return SmtpClientProtocol(self.session, self.reactor, self.tls_context_factory, self.timeouts,
                                  self.finished, self.pool, self.key)

    def clientConnectionFailed(self, connector, reason):
        # RFC 3463 4.4.1: no answer from host
        self.session.host_error = Outcome(DEFERRED, 0, "4.4.1",
                                          f"connection to {self.address} failed: {reason.getErrorMessage()}")
        self.session.closed = True
        if not self.finished.called:
            self.finished.callback(self.session)


def attempt(reactor, address: str, port: int, session: ClientSession, tls_context_factory=None,
            timeouts: Timeouts = Timeouts(), pool: ConnectionPool | None = None, key=None) -> defer.Deferred:
    """Deferred[ClientSession], fired when the connection is over, or (pool and a keep_open
    session) when the message is done and the connection went into the pool; never fails."""
    finished: defer.Deferred = defer.Deferred()
    factory = _Factory(session, reactor, tls_context_factory, timeouts, finished, f"[{address}]:{port}",
                       pool, key)
    reactor.connectTCP(address, port, factory, timeout=timeouts.connect)
    return finished
