"""Connection reuse (outbound/client.py ConnectionPool) against a scripted SMTP sink on loopback:
several messages in one SMTP session (RFC 5321 3.3), a 4xx on one message not losing the
others, a pooled connection the server closed replaced by a fresh one, idle connections
QUIT after the pool's idle time."""

from __future__ import annotations

import socket
import threading
import time
import types
import uuid

from twisted.internet import defer

from mailserverd.outbound.client import ConnectionPool, Timeouts
from mailserverd.outbound.resolver import MailHost
from mailserverd.outbound.transport import Transport
from mailserverd.outbound.types import OutboundMessage
from tests.support.reactorthread import ensure_running, run_in_reactor

QUICK = Timeouts(connect=3, greeting=5, command=5, data_init=5, data_end=10, quit=2)


class Sink:
    """A PIPELINING SMTP server, one thread per connection. Per connection it records the
    commands; a body containing TEMPFAIL gets 451 after the final dot; `close_after` drops
    each connection after that many messages without a reply to what follows."""

    def __init__(self, close_after: int | None = None):
        self.close_after = close_after
        self.connections: list[list[str]] = []
        self.bodies: list[bytes] = []
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self._socket.settimeout(0.2)
        self.port = self._socket.getsockname()[1]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._stopping.is_set():
            try:
                connection, _ = self._socket.accept()
            except (socket.timeout, OSError):
                continue
            commands: list[str] = []
            self.connections.append(commands)
            threading.Thread(target=self._serve, args=(connection, commands), daemon=True).start()

    def _serve(self, connection, commands):
        with connection:
            connection.settimeout(10)
            stream = connection.makefile("rwb")
            try:
                self._session(stream, commands)
            except (OSError, ValueError):
                pass

    def _session(self, stream, commands):
        def say(text):
            stream.write(text.encode() + b"\r\n")
            stream.flush()

        say("220 sink.test ESMTP")
        messages = 0
        while True:
            line = stream.readline()
            if not line:
                return
            command = line.decode().rstrip("\r\n")
            commands.append(command)
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                say("250-sink.test")
                say("250 PIPELINING")
            elif verb in ("MAIL", "RCPT", "RSET"):
                say("250 2.1.0 ok")
            elif verb == "DATA":
                say("354 go ahead")
                body = b""
                while (chunk := stream.readline()) not in (b".\r\n", b""):
                    body += chunk
                messages += 1
                if b"TEMPFAIL" in body:
                    say("451 4.3.0 try again later")
                else:
                    self.bodies.append(body)
                    say("250 2.0.0 queued")
                if self.close_after and messages >= self.close_after:
                    return
            elif verb == "QUIT":
                say("221 2.0.0 bye")
                return
            else:
                say("502 5.5.1 not implemented")

    def stop(self):
        self._stopping.set()
        self._thread.join(5)
        self._socket.close()


class StaticResolver:
    def route(self, domain):
        return defer.succeed([MailHost("sink.test", 10, ("127.0.0.1",))])


def make_transport(sink: Sink, idle_timeout: float = 2.0) -> Transport:
    reactor = ensure_running()
    settings = types.SimpleNamespace(
        server=types.SimpleNamespace(hostname="mta.sender.test"),
        dns=types.SimpleNamespace(nameservers=()),
        outbound=types.SimpleNamespace(port=sink.port, max_per_destination=4))
    return Transport(reactor, settings, resolver=StaticResolver(), timeouts=QUICK,
                     pool=ConnectionPool(reactor, idle_timeout=idle_timeout))


def message(text: str = "Hello.") -> OutboundMessage:
    token = uuid.uuid4().hex
    body = (f"From: alice@sender.test\r\nTo: bob@sink.test\r\nSubject: {token}\r\n"
            f"Message-ID: <{token}@sender.test>\r\n\r\n{text}\r\n").encode()
    return OutboundMessage(queue_id=token, sender="alice@sender.test", recipients=("bob@sink.test",), body=body)


def send(transport, msg):
    return run_in_reactor(transport.deliver, "sink.test", msg, timeout=30)


def wait_for(predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_several_messages_share_one_session_and_a_4xx_loses_none():
    """Five messages in a row go over ONE connection (one EHLO, five MAIL, no QUIT in
    between); the third gets 451 after its data and is deferred, the others are delivered,
    and the connection carries on; after the idle time the client QUITs."""
    sink = Sink()
    try:
        transport = make_transport(sink, idle_timeout=0.5)
        texts = ["one", "two", "TEMPFAIL three", "four", "five"]
        statuses = [send(transport, message(text))[0].status for text in texts]
        assert statuses == ["delivered", "delivered", "deferred", "delivered", "delivered"]
        assert len(sink.connections) == 1
        commands = sink.connections[0]
        assert [c.split(" ")[0] for c in commands].count("EHLO") == 1
        assert [c.split(":")[0] for c in commands].count("MAIL FROM") == 5
        assert "QUIT" not in commands
        assert len(sink.bodies) == 4 and all(b"TEMPFAIL" not in body for body in sink.bodies)
        assert transport.pool.reused == 4
        assert wait_for(lambda: commands[-1:] == ["QUIT"]), "idle connection QUIT after the idle time"
    finally:
        sink.stop()


def test_concurrent_messages_use_at_most_max_per_destination_connections():
    """Twelve messages at once to one destination: at most 4 connections (max_per_destination),
    every message delivered, the connections reused for the rest."""
    sink = Sink()
    try:
        transport = make_transport(sink)
        messages = [message(f"m{number}") for number in range(12)]

        def all_at_once():
            return defer.gatherResults([transport.deliver("sink.test", msg) for msg in messages])
        results = run_in_reactor(all_at_once, timeout=30)
        assert [r[0].status for r in results] == ["delivered"] * 12
        assert 1 <= len(sink.connections) <= 4
        assert len(sink.bodies) == 12
    finally:
        sink.stop()


def test_a_pooled_connection_the_server_closed_is_replaced():
    """The server drops the connection after each message: the next message finds the pooled
    connection dead before any reply and goes on a fresh connection, delivered once."""
    sink = Sink(close_after=1)
    try:
        transport = make_transport(sink)
        first = send(transport, message("first"))
        wait_for(lambda: False, 0.2)  # let the close reach the client
        second = send(transport, message("second"))
        assert [first[0].status, second[0].status] == ["delivered", "delivered"]
        assert len(sink.bodies) == 2 and len(sink.connections) == 2
    finally:
        sink.stop()


def test_close_idle_quits_pooled_connections():
    """Transport.close_idle (the outbound service stopping) QUITs every idle connection."""
    sink = Sink()
    try:
        transport = make_transport(sink, idle_timeout=60)
        send(transport, message())
        run_in_reactor(lambda: defer.succeed(transport.close_idle()))
        assert wait_for(lambda: sink.connections[0][-1:] == ["QUIT"])
    finally:
        sink.stop()
