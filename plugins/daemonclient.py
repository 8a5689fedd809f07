"""One request/reply exchange with a local daemon (clamd, spamd), on Twisted.

Both protocols send one request and read one reply that ends when the
daemon closes the connection (or, for clamd, at a NUL). exchange() adds what
a mail server needs around that: a connect and overall timeout, a cap on the
reply size, and an error that says what went wrong for the log line.

The fail-safe options shared by the plugins live here too:

    on_failure = tempfail   the daemon is down, slow or confused: 451 4.7.1, the
                            client retries later (RFC 5321 4.2.5)
    on_failure = accept     let the message through unchecked (a log line says so)
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint

from mailserverd.checks.base import Verdict

MAX_REPLY = 1024 * 1024
TEMPFAIL = Verdict.reject(451, "4.7.1", "Message checks unavailable; try again later")
_FAILURE_ACTIONS = {"tempfail": "tempfail", "accept": "accept", "pass": "accept"}


def global_reactor():
    """Twisted's reactor, for a check built without a CheckContext (tests, scripts)."""
    from twisted.internet import reactor
    return reactor


class DaemonError(Exception):
    """The exchange failed; str() is one line for the log."""


def parse_on_failure(section: str, value: str) -> str:
    action = _FAILURE_ACTIONS.get(value.strip().lower())
    if action is None:
        raise ValueError(f"[{section}] on_failure: expected tempfail or accept, got {value!r}")
    return action


def make_endpoint(reactor, section: str, socket: str, host: str, port: str, timeout: float):
    """A unix socket path if `socket` is set, else host:port (TCP)."""
    if socket.strip():
        path = socket.strip()
        return UNIXClientEndpoint(reactor, path, timeout=timeout), f"unix:{path}"
    if not host.strip():
        raise ValueError(f"[{section}]: set socket (a unix socket path) or host and port")
    if not port.strip().isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"[{section}] port: expected a port number, got {port!r}")
    host, port = host.strip(), int(port)
    return HostnameEndpoint(reactor, host, port, timeout=timeout), f"{host}:{port}"


def fail_safe(log, daemon: str, where: str, on_failure: str, envelope, error: BaseException):
    """The verdict when the daemon failed: None (accept) or TEMPFAIL, with one log line.
    Errors that are not DaemonError are bugs: re-raised, so the chain logs a traceback."""
    if not isinstance(error, DaemonError):
        raise error
    outcome = "accepted unchecked" if on_failure == "accept" else "deferred with 451 4.7.1"
    log.warn("message {id}: {daemon} at {where} failed ({error}); {outcome}", id=envelope.id,
             daemon=daemon, where=where, error=str(error), outcome=outcome)
    return None if on_failure == "accept" else TEMPFAIL


class _Exchange(protocol.Protocol):
    def __init__(self, request: bytes, done: defer.Deferred, complete: Optional[Callable[[bytes], bool]]):
        self.request, self.done, self.complete = request, done, complete
        self.received = bytearray()

    def connectionMade(self):
        self.transport.write(self.request)
        self.request = b""

    def dataReceived(self, data: bytes):
        self.received += data
        if len(self.received) > MAX_REPLY:
            self._finish(DaemonError(f"reply longer than {MAX_REPLY} bytes"))
            self.transport.abortConnection()
        elif self.complete is not None and self.complete(bytes(self.received)):
            self._finish(bytes(self.received))
            self.transport.loseConnection()

    def connectionLost(self, reason=None):
        self._finish(bytes(self.received))

    def _finish(self, result):
        if not self.done.called:
            if isinstance(result, Exception):
                self.done.errback(result)
            else:
                self.done.callback(result)


def exchange(reactor, endpoint, request: bytes, timeout: float,
             complete: Optional[Callable[[bytes], bool]] = None, clock=None) -> defer.Deferred:
    """Deferred[bytes]: connect, send `request`, return what came back until the daemon
    closed the connection or complete(reply) said the reply is whole. Fails with
    DaemonError on a refused connection or when `timeout` seconds pass."""
    clock = clock or reactor
    done: defer.Deferred = defer.Deferred()
    state: dict = {}

    def connected(proto):
        state["proto"] = proto

    def not_connected(failure):
        if not done.called:
            done.errback(DaemonError(f"cannot connect: {failure.getErrorMessage()}"))

    def too_slow():
        if not done.called:
            done.errback(DaemonError(f"no reply within {timeout:g} s"))
        proto = state.get("proto")
        if proto is not None and proto.transport is not None:
            proto.transport.abortConnection()
        elif not connecting.called:
            connecting.cancel()

    factory = protocol.Factory.forProtocol(lambda: _Exchange(request, done, complete))
    connecting = endpoint.connect(factory)
    connecting.addCallbacks(connected, not_connected)
    timer = clock.callLater(timeout, too_slow)

    def stop_timer(result):
        if timer.active():
            timer.cancel()
        return result
    return done.addBoth(stop_timer)
