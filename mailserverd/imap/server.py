"""The thin Twisted side of IMAP: sockets, TLS, COMPRESS, timeouts and caps.

IMAPServerProtocol feeds bytes to the CommandParser (parser.py) and hands
each command to the IMAPSession (session.py), ONE at a time: while
session.handle() runs, later commands wait in the parser's buffer (RFC 9051
5.5), except the lines AUTHENTICATE and IDLE read (session.awaiting_line).
When the client stops reading our output, or sends faster than we parse,
no further command runs and the transport stops reading (the protocol is a
streaming producer for its own output), so memory stays bounded.

build_factory(mode, settings, store, authenticator, tls) is what the service
tree calls; mode is "imap" (STARTTLS offered) or "imaps" (the caller wraps
the port in TLS; the session is secure from its first byte).
"""

from __future__ import annotations

import collections
import weakref
import zlib

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from ..auth import plaintext_allowed
from ..smtp.ratelimit import ConnectionLimiter
from . import responses
from .events import ClientLine, CommandError, CommandReady, ContinuationNeeded
from .parser import CommandParser, ParserLimits
from ..netio import set_no_delay

log = Logger(namespace="mailserverd.imap")

MODES = ("imap", "imaps")
CONTINUATION = b"+ Ready for literal data\r\n"
TOO_MANY_CONNECTIONS = responses.bye("Too many connections from your address")
AUTOLOGOUT = responses.bye("Autologout; idle for too long")
INTERNAL_ERROR = ("NO", "Internal error", "SERVERBUG")  # RFC 5530 3
INPUT_HIGH_WATER = 256 * 1024  # parser buffer above which the socket is not read
INFLATE_CHUNK = 64 * 1024  # most octets one inflate step may produce (bomb defence)
DEFAULT_USERIP_LIMIT = 10


class _Release:
    """An idempotent release of one (account, IP) slot: a small object rather than a
    closure (a closure and its cells cost ~200 bytes more per logged-in session)."""

    __slots__ = ("_limiter", "_key")

    def __init__(self, limiter: "UserIPLimiter", key: tuple[int, str]):
        self._limiter = limiter
        self._key = key

    def __call__(self) -> None:
        if self._key is None:
            return
        key, self._key = self._key, None
        open_ = self._limiter._open
        left = open_.get(key, 0) - 1
        if left > 0:
            open_[key] = left
        else:
            open_.pop(key, None)


class UserIPLimiter:
    """Logged-in sessions per (account, client IP), across imap and imaps
    (Dovecot's mail_max_userip_connections). A limit of 0 means unlimited."""

    def __init__(self):
        self._open: dict[tuple[int, str], int] = {}

    def acquire(self, account_id: int, ip: str, limit: int):
        """A release callable (idempotent), or None when the pair is at its limit."""
        key = (account_id, ip)
        count = self._open.get(key, 0)
        if limit and count >= limit:
            return None
        self._open[key] = count + 1
        return _Release(self, key)

    def count(self, account_id: int, ip: str) -> int:
        return self._open.get((account_id, ip), 0)


_USERIP: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # store -> UserIPLimiter


def userip_limiter_for(store) -> UserIPLimiter:
    """The (user, IP) session table of one store, shared by imap and imaps."""
    if store not in _USERIP:
        _USERIP[store] = UserIPLimiter()
    return _USERIP[store]


class Deflate:
    """RFC 4978: raw DEFLATE both ways (RFC 1951, no zlib header: wbits=-15).

    Output is flushed with Z_SYNC_FLUSH per write so every response reaches
    the client whole (RFC 4978 4). Input is inflated at most INFLATE_CHUNK
    octets at a time, so a small compressed "bomb" cannot fill memory.
    """

    def __init__(self):
        self._compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        self._decompressor = zlib.decompressobj(-15)
        self.pending = b""  # received octets not inflated yet

    def compress(self, data: bytes) -> bytes:
        return self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    def inflate_step(self) -> bytes:
        """Inflate some pending input; raises zlib.error on a corrupt stream."""
        if not self.pending:
            return b""
        out = self._decompressor.decompress(self.pending, INFLATE_CHUNK)
        self.pending = self._decompressor.unconsumed_tail
        if self._decompressor.eof:
            raise zlib.error("compressed stream ended")  # a client may not end it and go on
        return out


@implementer(IPushProducer)
class IMAPServerProtocol(protocol.Protocol, TimeoutMixin):
    """One IMAP connection. Memory per connection matters (thousands sit in IDLE): the
    defaults below are class attributes, so an instance's dict holds only what differs,
    and the rarely used containers (_held, _releases) exist only once needed."""

    remote_ip = "unknown"
    parser: CommandParser | None = None
    session = None
    deflate: Deflate | None = None
    _running: defer.Deferred | None = None  # the command session.handle() is running
    _held: collections.deque | None = None  # events pulled while a command ran
    _releases: list | None = None  # login_gate releases not given back yet
    _counted = False
    _producing = False
    _pumping = False
    _read_paused = False
    _write_paused = False
    _lost = False
    _closing = False
    _end_reason = "disconnected"

    def __init__(self, factory: "IMAPFactory"):
        self.factory = factory
        self.callLater = factory.clock.callLater  # TimeoutMixin uses it: an injectable clock

    # -- connection lifecycle -------------------------------------------------

    def connectionMade(self):
        factory = self.factory
        self.remote_ip = getattr(self.transport.getPeer(), "host", "unknown")
        set_no_delay(self.transport)
        if not factory.connections.acquire(self.remote_ip):
            log.info("imap {mode}: refused connection from {ip}: too many connections",
                     mode=factory.mode, ip=self.remote_ip)
            self.transport.write(TOO_MANY_CONNECTIONS)
            self.transport.loseConnection()
            self._closing = True
            return
        self._counted = True
        secure = factory.mode == "imaps"
        self.parser = CommandParser(factory.limits)
        offer_tls = factory.tls is not None and factory.mode == "imap"
        try:
            self.session = factory.session_class(
                self.send, factory.store, factory.authenticator, self.remote_ip, self.parser,
                start_tls=self._start_tls if offer_tls else None, secure=secure,
                plaintext_ok=plaintext_allowed(secure, self.remote_ip),
                start_compress=self._start_compress, login_gate=self._login_gate,
                settings=factory.settings, clock=factory.clock)
            greeting = self.session.greeting()
        except Exception:
            log.failure("imap: cannot start a session for {ip}", ip=self.remote_ip)
            self.session = None
            self.transport.write(responses.bye("Internal error; try again later"))
            self._close("error")
            return
        self.transport.registerProducer(self, True)
        self._producing = True
        self.setTimeout(factory.timeout)
        self.send(greeting)

    def dataReceived(self, data: bytes):
        if self.session is None or self._closing:
            return
        self.resetTimeout()
        if self.deflate is not None:
            self.deflate.pending += data
        else:
            self.parser.receive(data)
        self._pump()

    def connectionLost(self, reason=protocol.connectionDone):
        self._lost = self._closing = True
        self.setTimeout(None)
        if not self._counted:
            return
        self._counted = False
        self.factory.connections.release(self.remote_ip)
        if self.session is None:
            return
        try:
            self.session.connection_lost()
        except Exception:
            log.failure("imap: session cleanup failed for {ip}", ip=self.remote_ip)
        for release in self._releases or ():
            release()  # idempotent: the session may have released already
        self._releases = None
        account = getattr(self.session, "account", None)
        log.info("imap {mode}: rip={ip} user={user} end={reason}", mode=self.factory.mode,
                 ip=self.remote_ip, user=getattr(account, "address", "-"), reason=self._end_reason)

    def timeoutConnection(self):
        # RFC 3501 5.4: an idle client may be logged out after 30 minutes.
        self.send(AUTOLOGOUT)
        self._close("timeout")

    # -- output -----------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """What the session writes; compressed once COMPRESS is active."""
        if self._lost or not data:
            return
        if self.deflate is not None:
            data = self.deflate.compress(data)
        self.transport.write(data)

    def _close(self, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self._end_reason = reason
        self.setTimeout(None)
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    # -- output flow control (IPushProducer for our own writes) -------------------------

    def pauseProducing(self):
        self._write_paused = True

    def resumeProducing(self):
        self._write_paused = False
        self.resetTimeout()  # the client is reading what we sent: not idle
        self._pump()

    def stopProducing(self):
        self._write_paused = True

    # -- driving the session ------------------------------------------------------

    def _busy(self) -> bool:
        """A command runs and is not reading a line from the client."""
        return self._running is not None and not self.session.awaiting_line

    def _pump(self) -> None:
        """Pull parser events while nothing stops us (see module docstring)."""
        if self._pumping or self._closing:
            return  # a command that finished synchronously: the running loop continues
        self._pumping = True
        try:
            while not self._closing and not self._write_paused:
                if self._held and self._running is None:  # None or empty: nothing held
                    self._dispatch(self._held.popleft())
                    continue
                if self._busy():
                    break
                event = self._next_event()
                if event is None:
                    break
                self._dispatch(event)
        except Exception:
            log.failure("imap: connection from {ip} broken; closing", ip=self.remote_ip)
            self.send(responses.bye("Internal error"))
            self._close("error")
        finally:
            self._pumping = False
        self._update_reading()

    def _next_event(self):
        """The next parser event, inflating compressed input only as the parser needs it."""
        while not self._closing:
            event = self.parser.next_event()
            if event is not None or self.deflate is None or not self.deflate.pending:
                return event
            self._inflate()
        return None

    def _inflate(self) -> None:
        try:
            self.parser.receive(self.deflate.inflate_step())
        except zlib.error:
            self.deflate.pending = b""
            self.send(responses.bye("Corrupt compressed data"))  # RFC 4978 3
            self._close("bad-compression")

    def _update_reading(self) -> None:
        """Read the socket unless the client's unparsed input piles up. While our output
        is stuck no command runs, so input piles up and reading stops then too. (Pausing
        at once would deadlock a TLS handshake: TLS pauses its producers until it is done.)"""
        if self._lost or self.parser is None:
            return
        backlog = self.parser.buffered + (len(self.deflate.pending) if self.deflate else 0)
        pause = backlog >= self.factory.input_high_water
        if pause and not self._read_paused:
            self._read_paused = True
            self.transport.pauseProducing()
        elif not pause and self._read_paused:
            self._read_paused = False
            self.transport.resumeProducing()

    def _dispatch(self, event) -> None:
        if isinstance(event, ClientLine):
            if self.session.awaiting_line:
                self.session.client_line(event.data)
            return  # a line nobody asked for cannot happen; ignore it rather than misparse
        if self._running is not None:
            # Only lines are expected while a command runs; anything else waits its turn.
            if self._held is None:
                self._held = collections.deque()
            self._held.append(event)
            return
        if isinstance(event, ContinuationNeeded):
            # RFC 9051 7.5: the literal is acceptable; the client may send it now.
            self.send(CONTINUATION)
        elif isinstance(event, CommandError):
            self.send(responses.tagged(event.tag, event.status, event.text, event.code))
            if event.fatal:
                self.send(responses.bye("Protocol error; closing"))
                self._close("protocol-error")
        elif isinstance(event, CommandReady):
            self._run(event.command)

    def _run(self, command) -> None:
        try:
            result = self.session.handle(command)
        except Exception:
            self._command_failed(Failure(), command)
            self._command_done(None)
            return
        if not isinstance(result, defer.Deferred):
            self._command_done(result)  # answered at once: no Deferred, no callbacks kept
            return
        self._running = result
        # one callback (not an errback plus a callback): less kept per waiting session (IDLE)
        result.addBoth(self._command_ended, command)

    def _command_ended(self, result, command) -> None:
        if isinstance(result, Failure):
            self._command_failed(result, command)
        self._command_done(None)

    def _command_failed(self, failure, command) -> None:
        # Never leave the client waiting for a tagged answer that will not come.
        log.failure("imap: {name} from {ip} failed", failure=failure, name=command.name,
                    ip=self.remote_ip)
        status, text, code = INTERNAL_ERROR
        self.send(responses.tagged(command.tag, status, text, code))

    def _command_done(self, _result) -> None:
        self._running = None
        if self._lost:
            return
        if self.session.state == "logout":
            self._close("logout")
            return
        self._pump()

    # -- STARTTLS (RFC 3501 6.2.1), COMPRESS (RFC 4978) and login caps ------------------

    def _start_tls(self) -> None:
        # The tagged OK went out in the clear and the session dropped what the client
        # pipelined after STARTTLS (the parser's buffer); every later byte is TLS.
        if self.deflate is not None:
            self.deflate.pending = b""
        self.transport.startTLS(self.factory.tls.server_context_factory())

    def _start_compress(self, leftover: bytes) -> None:
        # RFC 4978 3: the tagged OK was the last uncompressed response; what the
        # client sent after COMPRESS is already compressed.
        self.deflate = Deflate()
        self.deflate.pending = bytes(leftover)

    def _login_gate(self, account):
        limit = self.factory.userip_limit
        release = self.factory.userip.acquire(account.id, self.remote_ip, limit)
        if release is None:
            log.info("imap {mode}: {user} refused from {ip}: {limit} sessions already",
                     mode=self.factory.mode, user=account.address, ip=self.remote_ip, limit=limit)
            return None
        if self._releases is None:
            self._releases = []
        self._releases.append(release)
        return release


class IMAPFactory(protocol.ServerFactory):
    def __init__(self, mode: str, settings, store, authenticator, tls, clock, session_class):
        self.mode = mode
        self.settings = settings
        self.store = store
        self.authenticator = authenticator
        self.tls = tls
        self.clock = clock
        self.session_class = session_class
        self.limits = ParserLimits.from_settings(settings)
        # Above the longest line the parser may wait for, or a paused read would never end it.
        self.input_high_water = max(INPUT_HIGH_WATER, 2 * self.limits.max_line)
        self.timeout = settings.imap.timeout
        self.userip_limit = getattr(settings.imap, "max_userip_connections", DEFAULT_USERIP_LIMIT)
        self.connections = ConnectionLimiter(settings.limits.max_connections_per_ip)
        self.userip = userip_limiter_for(store)

    def buildProtocol(self, addr):
        return IMAPServerProtocol(self)


def build_factory(mode: str, settings, store, authenticator, tls, clock=None,
                  session_class=None) -> IMAPFactory:
    """The protocol factory for one IMAP listener (see module docstring).

    clock: for idle timeouts and the session's polling; default: the reactor.
    session_class: IMAPSession's constructor (tests pass a double).
    """
    if mode not in MODES:
        raise ValueError(f"unknown IMAP mode {mode!r}; expected one of {MODES}")
    if session_class is None:
        from .session import IMAPSession as session_class
    if clock is None:
        from twisted.internet import reactor as clock
    return IMAPFactory(mode, settings, store, authenticator, tls, clock, session_class)
