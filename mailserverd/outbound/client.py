"""The socket side of the SMTP client: a thin Twisted protocol around ClientSession.

`attempt(reactor, address, port, session, ...)` connects (with a timeout),
lets the session talk, and fires with the session once the connection is
gone, whatever happened: connection failures and timeouts are recorded in
`session.host_error`, never raised. Every timer runs on the injected reactor.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet import defer, protocol
from twisted.logger import Logger

from .clientparser import DEFERRED, ClientSession, Close, Outcome, Send, StartTLS

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
                 finished: defer.Deferred):
        self.session = session
        self.reactor = reactor
        self.tls_context_factory = tls_context_factory
        self.timeouts = timeouts
        self.finished = finished
        self._timer = None

    def connectionMade(self):
        self._arm()

    def dataReceived(self, data: bytes):
        self._perform(self.session.receive(data))
        self._arm()

    def _perform(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, Send):
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

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if not self.session.closed:
            self._timer = self.reactor.callLater(self.timeouts.for_stage(self.session.stage), self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        self.session.timed_out()
        self.transport.abortConnection()

    def connectionLost(self, reason):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.session.connection_lost(reason.getErrorMessage())
        if not self.finished.called:
            self.finished.callback(self.session)


class _Factory(protocol.ClientFactory):
    def __init__(self, session, reactor, tls_context_factory, timeouts, finished, address):
        self.session = session
        self.reactor = reactor
        self.tls_context_factory = tls_context_factory
        self.timeouts = timeouts
        self.finished = finished
        self.address = address

    def buildProtocol(self, addr):
        return SmtpClientProtocol(self.session, self.reactor, self.tls_context_factory, self.timeouts,
                                  self.finished)

    def clientConnectionFailed(self, connector, reason):
        # RFC 3463 4.4.1: no answer from host
        self.session.host_error = Outcome(DEFERRED, 0, "4.4.1",
                                          f"connection to {self.address} failed: {reason.getErrorMessage()}")
        self.session.closed = True
        if not self.finished.called:
            self.finished.callback(self.session)


def attempt(reactor, address: str, port: int, session: ClientSession, tls_context_factory=None,
            timeouts: Timeouts = Timeouts()) -> defer.Deferred:
    """Deferred[ClientSession], fired when the connection is over; never fails."""
    finished: defer.Deferred = defer.Deferred()
    factory = _Factory(session, reactor, tls_context_factory, timeouts, finished, f"[{address}]:{port}")
    reactor.connectTCP(address, port, factory, timeout=timeouts.connect)
    return finished
