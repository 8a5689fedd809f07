"""The IMAP Twisted protocol over a StringTransport, with a scripted session double
and an injected clock: one command at a time, lines for a waiting command,
continuations, parser errors, COMPRESS, timeouts, caps and flow control.
A few tests use the real IMAPSession to pin what the protocol tells it."""

from __future__ import annotations

import types
import zlib

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from mailserverd.imap import responses
from mailserverd.imap.server import INPUT_HIGH_WATER, build_factory
from mailserverd.store.api import Account

ALICE = Account(id=1, address="alice@example.test", shard=0)


def settings(timeout=1800.0, per_ip=3, per_userip=2, max_line_length=1024 * 1024):
    return types.SimpleNamespace(
        server=types.SimpleNamespace(hostname="mx.example.test"),
        imap=types.SimpleNamespace(timeout=timeout, max_userip_connections=per_userip),
        limits=types.SimpleNamespace(max_connections_per_ip=per_ip, max_line_length=max_line_length,
                                     max_message_size=25 * 1024 * 1024))


class FakeSession:
    """Records what the protocol hands it; `hold[name]` keeps that command's Deferred
    unfired, `raise_on[name]` makes handle() fail, `script[name]` runs custom code."""

    instances: list["FakeSession"] = []

    def __init__(self, send, store, authenticator, remote_ip, parser, start_tls=None, secure=False,
                 plaintext_ok=False, start_compress=None, login_gate=None, settings=None, clock=None):
        self.send, self.parser, self.remote_ip = send, parser, remote_ip
        self.start_tls, self.secure, self.plaintext_ok = start_tls, secure, plaintext_ok
        self.start_compress, self.login_gate = start_compress, login_gate
        self.state = "not-authenticated"
        self.account = None
        self.handled: list[str] = []
        self.lines: list = []
        self.hold: dict[str, defer.Deferred] = {}
        self.raise_on: set[str] = set()
        self.lost = False
        self._line_waiter: defer.Deferred | None = None
        FakeSession.instances.append(self)

    def greeting(self) -> bytes:
        return b"* OK fake ready\r\n"

    @property
    def awaiting_line(self) -> bool:
        return self._line_waiter is not None

    def client_line(self, data):
        self.lines.append(data)
        waiter, self._line_waiter = self._line_waiter, None
        if waiter is not None:
            waiter.callback(data)

    def connection_lost(self):
        self.lost = True

    @defer.inlineCallbacks
    def handle(self, command):
        name = command.name
        self.handled.append(f"{command.tag} {name}")
        if name in self.raise_on:
            raise RuntimeError("session bug")
        if name in self.hold:
            yield self.hold[name]
        if name == "IDLE":
            self.send(b"+ idling\r\n")
            self.parser.expect_line()
            self._line_waiter = defer.Deferred()
            line = yield self._line_waiter
            status = "OK" if line == b"DONE" else "BAD"
            self.send(responses.tagged(command.tag, status, "IDLE terminated"))
            return
        if name == "COMPRESS":
            self.send(responses.tagged(command.tag, "OK", "DEFLATE active"))
            self.start_compress(self.parser.take_buffer())
            return
        if name == "STARTTLS":
            self.send(responses.tagged(command.tag, "OK", "Begin TLS negotiation now"))
            self.parser.take_buffer()
            self.start_tls()
            return
        if name == "LOGOUT":
            self.send(responses.bye("Logging out"))
            self.state = "logout"
        self.send(responses.tagged(command.tag, "OK", f"{name} completed"))


class NoStore:
    """The fake session never calls the store; the factory only keys its tables by it."""


class Harness:
    def __init__(self, mode="imap", tls=None, **setting_overrides):
        self.clock = Clock()
        self.store = NoStore()
        self.factory = build_factory(mode, settings(**setting_overrides), self.store, None, tls,
                                     clock=self.clock, session_class=FakeSession)

    def connect(self, ip="127.0.0.1"):
        proto = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", ip, 40000))
        proto.makeConnection(transport)
        transport.clear()
        return proto, transport, proto.session


def drop(proto, transport):
    transport.loseConnection()
    proto.connectionLost(Failure(ConnectionError("gone")))


def inflate_all(data: bytes) -> bytes:
    return zlib.decompressobj(-15).decompress(data)


class Deflater:
    def __init__(self):
        self._compressor = zlib.compressobj(6, zlib.DEFLATED, -15)

    def __call__(self, data: bytes) -> bytes:
        return self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)


# -- greeting and one command at a time ---------------------------------------------------

def test_greeting_is_sent_on_connect():
    """The session's greeting is the first thing written."""
    harness = Harness()
    proto = harness.factory.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    proto.makeConnection(transport)
    assert transport.value() == b"* OK fake ready\r\n"


def test_pipelined_commands_wait_for_the_running_one():
    """While one command's Deferred is unfired, a pipelined command is not handed over."""
    harness = Harness()
    proto, transport, session = harness.connect()
    session.hold["NOOP"] = pending = defer.Deferred()
    proto.dataReceived(b"a NOOP\r\nb CAPABILITY\r\n")
    assert session.handled == ["a NOOP"]
    pending.callback(None)
    assert session.handled == ["a NOOP", "b CAPABILITY"]
    assert transport.value() == b"a OK NOOP completed\r\nb OK CAPABILITY completed\r\n"


def test_answers_keep_command_order():
    """Many pipelined commands are answered in the order sent."""
    proto, transport, _session = Harness().connect()
    proto.dataReceived(b"".join(b"t%d NOOP\r\n" % n for n in range(50)))
    lines = transport.value().split(b"\r\n")[:-1]
    assert lines == [b"t%d OK NOOP completed" % n for n in range(50)]


def test_client_line_goes_to_the_waiting_command():
    """While IDLE waits, the next line reaches session.client_line, and later commands run after."""
    proto, transport, session = Harness().connect()
    proto.dataReceived(b"a IDLE\r\n")
    assert session.awaiting_line
    proto.dataReceived(b"DONE\r\nb NOOP\r\n")
    assert session.lines == [b"DONE"]
    assert session.handled == ["a IDLE", "b NOOP"]
    assert transport.value() == b"+ idling\r\na OK IDLE terminated\r\nb OK NOOP completed\r\n"


def test_command_pipelined_with_done_waits_for_idle_to_finish():
    """A command sent in the same packet as IDLE is not run before IDLE's DONE."""
    proto, _transport, session = Harness().connect()
    proto.dataReceived(b"a IDLE\r\n")
    proto.dataReceived(b"DONE\r\n")
    proto.dataReceived(b"b NOOP\r\n")
    assert session.handled == ["a IDLE", "b NOOP"]


# -- parser events ------------------------------------------------------------------------------

def test_synchronizing_literal_gets_continuation():
    """An acceptable synchronizing literal is answered "+ Ready for literal data"."""
    proto, transport, session = Harness().connect()
    proto.dataReceived(b"a LOGIN {5}\r\n")
    assert transport.value() == b"+ Ready for literal data\r\n"
    proto.dataReceived(b"alice secret\r\n")
    assert session.handled == ["a LOGIN"]


def test_continuation_waits_for_the_running_command():
    """A literal of a pipelined command gets its "+" only after the command before it finished."""
    proto, transport, session = Harness().connect()
    session.hold["NOOP"] = pending = defer.Deferred()
    proto.dataReceived(b"a NOOP\r\nb LOGIN {5}\r\n")
    assert transport.value() == b""
    pending.callback(None)
    assert transport.value() == b"a OK NOOP completed\r\n+ Ready for literal data\r\n"


def test_huge_literal_before_login_is_refused_without_continuation():
    """LOGIN {4294967296} gets a tagged BAD [TOOBIG] and no "+"; the connection goes on."""
    proto, transport, session = Harness().connect()
    proto.dataReceived(b"a LOGIN {4294967296}\r\nb NOOP\r\n")
    assert not transport.value().startswith(b"+")
    assert transport.value().startswith(b"a BAD [TOOBIG]")
    assert transport.value().endswith(b"b OK NOOP completed\r\n")


def test_fatal_parser_error_says_bye_and_closes():
    """A LITERAL+ too large to even discard gets a tagged BAD, * BYE and a close."""
    proto, transport, session = Harness().connect()
    proto.dataReceived(b"a LOGIN {99999999999+}\r\n")
    out = transport.value()
    assert out.startswith(b"a BAD [TOOBIG]")
    assert b"* BYE" in out
    assert transport.disconnecting
    assert session.handled == []


def test_malformed_command_gets_bad_and_connection_goes_on():
    """A syntax error is answered BAD with the command's tag; the next command runs."""
    proto, transport, session = Harness().connect()
    proto.dataReceived(b"a FROBNICATE\r\nb NOOP\r\n")
    assert transport.value().startswith(b"a BAD ")
    assert session.handled == ["b NOOP"]


# -- failures and logout -----------------------------------------------------------------------

def test_session_exception_answers_serverbug_and_keeps_connection():
    """An exception escaping session.handle() is answered NO [SERVERBUG]; later commands run."""
    proto, transport, session = Harness().connect()
    session.raise_on.add("NOOP")
    proto.dataReceived(b"a NOOP\r\nb CAPABILITY\r\n")
    assert transport.value() == b"a NO [SERVERBUG] Internal error\r\nb OK CAPABILITY completed\r\n"
    assert not transport.disconnecting


def test_logout_closes_and_ignores_later_commands():
    """After the session enters logout the connection closes; a pipelined command is not run."""
    proto, transport, session = Harness().connect()
    proto.dataReceived(b"a LOGOUT\r\nb NOOP\r\n")
    assert transport.value() == b"* BYE Logging out\r\na OK LOGOUT completed\r\n"
    assert transport.disconnecting
    assert session.handled == ["a LOGOUT"]


def test_connection_lost_tells_the_session_and_stops_writes():
    """connectionLost reaches session.connection_lost; a command finishing later writes nothing."""
    proto, transport, session = Harness().connect()
    session.hold["NOOP"] = pending = defer.Deferred()
    proto.dataReceived(b"a NOOP\r\n")
    drop(proto, transport)
    transport.clear()
    pending.callback(None)
    assert session.lost
    assert transport.value() == b""


# -- COMPRESS=DEFLATE (RFC 4978) ------------------------------------------------------------

def test_compress_round_trip_including_pipelined_leftover():
    """After COMPRESS, input sent in the same packet is inflated and every answer is deflated."""
    proto, transport, session = Harness().connect()
    deflate = Deflater()
    proto.dataReceived(b"a COMPRESS DEFLATE\r\n" + deflate(b"b NOOP\r\n"))
    out = transport.value()
    ok = b"a OK DEFLATE active\r\n"
    assert out.startswith(ok)
    receiver = zlib.decompressobj(-15)
    assert receiver.decompress(out[len(ok):]) == b"b OK NOOP completed\r\n"
    transport.clear()
    proto.dataReceived(deflate(b"c CAPABILITY\r\n"))
    assert receiver.decompress(transport.value()) == b"c OK CAPABILITY completed\r\n"
    assert session.handled == ["a COMPRESS", "b NOOP", "c CAPABILITY"]


def test_compressed_bomb_is_inflated_in_bounded_steps():
    """A small compressed line of 20 MB is refused as too long while the parser holds < 1 MB."""
    proto, transport, session = Harness().connect()
    proto.dataReceived(b"a COMPRESS DEFLATE\r\n")
    transport.clear()
    deflate = Deflater()
    bomb = deflate(b"b NOOP " + b"x" * (20 * 1024 * 1024) + b"\r\nc NOOP\r\n")
    assert len(bomb) < 100_000
    seen = []
    original = proto.parser.receive
    proto.parser.receive = lambda data: (original(data), seen.append(proto.parser.buffered))
    proto.dataReceived(bomb)
    out = zlib.decompressobj(-15).decompress(transport.value())
    assert out.startswith(b"b BAD [TOOBIG]")
    assert out.endswith(b"c OK NOOP completed\r\n")
    assert max(seen) < 1024 * 1024


def test_corrupt_compressed_input_says_bye_and_closes():
    """Input that is not a DEFLATE stream after COMPRESS ends the connection with BYE."""
    proto, transport, _session = Harness().connect()
    proto.dataReceived(b"a COMPRESS DEFLATE\r\n")
    transport.clear()
    proto.dataReceived(b"\xff" * 64)
    assert b"BYE" in inflate_all(transport.value())
    assert transport.disconnecting


# -- STARTTLS and what the session is told -----------------------------------------------------

def test_imap_mode_offers_starttls_and_plaintext_only_on_loopback():
    """In imap mode with TLS configured: start_tls offered, not secure, plaintext only from loopback."""
    harness = Harness(tls=object())
    _p, _t, local = harness.connect("127.0.0.1")
    _p, _t, remote = harness.connect("192.0.2.7")
    assert local.start_tls is not None and not local.secure and local.plaintext_ok
    assert remote.start_tls is not None and not remote.plaintext_ok


def test_imaps_mode_is_secure_without_starttls():
    """In imaps mode the session is secure from the start and STARTTLS is not offered."""
    _p, _t, session = Harness(mode="imaps", tls=object()).connect("192.0.2.7")
    assert session.secure and session.plaintext_ok and session.start_tls is None


def test_starttls_switches_transport_and_drops_pipelined_command():
    """STARTTLS starts TLS on the transport; a command pipelined after it is never run."""
    tls = types.SimpleNamespace(server_context_factory=lambda: "context")
    proto, transport, session = Harness(tls=tls).connect("192.0.2.7")
    started = []
    transport.startTLS = started.append
    proto.dataReceived(b"a STARTTLS\r\nb NOOP\r\n")
    assert started == ["context"]
    assert session.handled == ["a STARTTLS"]


def test_real_session_advertises_logindisabled_to_remote_plaintext_client():
    """The real session on imap, from a non-loopback address: STARTTLS and LOGINDISABLED, no AUTH=PLAIN."""
    harness = Harness(tls=object())
    from mailserverd.imap.session import IMAPSession
    harness.factory.session_class = IMAPSession
    proto = harness.factory.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
    proto.makeConnection(transport)
    greeting = transport.value()
    assert b"STARTTLS" in greeting and b"LOGINDISABLED" in greeting
    assert b"AUTH=PLAIN" not in greeting


def test_real_session_allows_login_on_loopback_plaintext():
    """The real session on imap from loopback: no LOGINDISABLED (plaintext allowed locally)."""
    harness = Harness(tls=object())
    from mailserverd.imap.session import IMAPSession
    harness.factory.session_class = IMAPSession
    proto = harness.factory.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    proto.makeConnection(transport)
    assert b"LOGINDISABLED" not in transport.value()


# -- idle timeout (RFC 3501 5.4) --------------------------------------------------------------------

def test_idle_client_is_logged_out_after_timeout():
    """With no input for settings.imap.timeout seconds: * BYE Autologout and close."""
    harness = Harness(timeout=60.0)
    proto, transport, _session = harness.connect()
    harness.clock.advance(59)
    assert not transport.disconnecting
    harness.clock.advance(2)
    assert transport.value().startswith(b"* BYE Autologout")
    assert transport.disconnecting


def test_input_resets_idle_timeout():
    """Each received command restarts the idle clock."""
    harness = Harness(timeout=60.0)
    proto, transport, _session = harness.connect()
    harness.clock.advance(50)
    proto.dataReceived(b"a NOOP\r\n")
    harness.clock.advance(50)
    assert not transport.disconnecting


# -- connection caps ------------------------------------------------------------------------------------

def test_per_ip_connection_cap():
    """Past limits.max_connections_per_ip, a connection gets * BYE and is closed; others are not."""
    harness = Harness(per_ip=2)
    first = harness.connect()
    harness.connect()
    proto = harness.factory.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    proto.makeConnection(transport)
    assert transport.value().startswith(b"* BYE")
    assert transport.disconnecting
    _p, other, _s = harness.connect("127.0.0.2")
    assert not other.disconnecting
    drop(*first[:2])
    _p, again, _s = harness.connect()
    assert not again.disconnecting


def test_login_gate_caps_sessions_per_user_and_ip():
    """login_gate grants max_userip_connections sessions per (user, IP), then None."""
    harness = Harness(per_userip=2)
    gates = [harness.connect()[2].login_gate for _ in range(3)]
    assert gates[0](ALICE) is not None and gates[1](ALICE) is not None
    assert gates[2](ALICE) is None
    other_ip = harness.connect("127.0.0.2")[2]
    assert other_ip.login_gate(ALICE) is not None


def test_login_gate_is_released_on_connection_loss():
    """A connection lost frees its (user, IP) slot even if the session never released it."""
    harness = Harness(per_userip=1)
    proto, transport, session = harness.connect()
    assert session.login_gate(ALICE) is not None
    assert harness.connect()[2].login_gate(ALICE) is None
    drop(proto, transport)
    assert harness.connect()[2].login_gate(ALICE) is not None


def test_login_gate_is_shared_by_imap_and_imaps():
    """The (user, IP) count is per store: imaps sessions count against imap ones."""
    harness = Harness(per_userip=1)
    assert harness.connect()[2].login_gate(ALICE) is not None
    imaps = build_factory("imaps", settings(per_userip=1), harness.store, None, None,
                          clock=harness.clock, session_class=FakeSession)
    proto = imaps.buildProtocol(None)
    proto.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40001)))
    assert proto.session.login_gate(ALICE) is None


def test_release_is_idempotent():
    """Releasing twice (session and server both) frees exactly one slot."""
    harness = Harness(per_userip=2)
    release = harness.connect()[2].login_gate(ALICE)
    harness.connect()[2].login_gate(ALICE)
    release()
    release()
    assert harness.factory.userip.count(ALICE.id, "127.0.0.1") == 1


# -- flow control -------------------------------------------------------------------------------------

def test_slow_reader_pauses_commands_then_reading():
    """While the transport's buffer is full no command runs; input piling up stops reading."""
    proto, transport, session = Harness().connect()
    proto.pauseProducing()
    proto.dataReceived(b"a NOOP\r\n")
    assert session.handled == []
    proto.dataReceived(b"b NOOP\r\n" * (INPUT_HIGH_WATER // 8))
    assert transport.producerState == "paused"
    proto.resumeProducing()
    assert session.handled[:2] == ["a NOOP", "b NOOP"]
    assert transport.producerState == "producing"


def test_flood_while_a_command_runs_pauses_reading():
    """Input piling up behind a running command stops reading; it resumes once parsed."""
    proto, transport, session = Harness().connect()
    session.hold["NOOP"] = pending = defer.Deferred()
    proto.dataReceived(b"a NOOP\r\n")
    proto.dataReceived(b"b CAPABILITY\r\n" * (INPUT_HIGH_WATER // 10))
    assert transport.producerState == "paused"
    pending.callback(None)
    assert transport.producerState == "producing"
    assert len(session.handled) == 1 + INPUT_HIGH_WATER // 10


def test_unknown_mode_is_refused():
    """build_factory rejects a mode other than imap or imaps."""
    with pytest.raises(ValueError):
        build_factory("pop3", settings(), NoStore(), None, None, clock=Clock())


def test_session_that_cannot_start_gets_bye_and_close():
    """If the session cannot be built, the client gets * BYE and the per-IP slot is freed."""
    harness = Harness(per_ip=1)

    def broken(*args, **kwargs):
        raise RuntimeError("bug")
    harness.factory.session_class = broken
    proto = harness.factory.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    proto.makeConnection(transport)
    assert transport.value().startswith(b"* BYE")
    assert transport.disconnecting
    proto.connectionLost(Failure(ConnectionError("gone")))
    assert harness.factory.connections.count("127.0.0.1") == 0
