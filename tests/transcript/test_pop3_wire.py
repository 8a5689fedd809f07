"""POP3 on the raw wire against the real daemon: dot-stuffing as sent, strict
arguments, line limits, STLS injection, pipelining, and authentication replies."""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
import time

import pytest

from tests.support.daemon import PASSWORD

ALICE = "alice@example.test"
TIMEOUT = 15  # seconds for any one socket operation: a hang fails the test, it never blocks CI
# Lines that must be stuffed on the wire: a lone ".", "..", ".x"; and one that must not.
TRICKY = (b"From: s@remote.test\r\nTo: alice@example.test\r\nSubject: dots\r\n\r\n"
          b".\r\n..\r\n.hidden\r\nnot.a.dot\r\n.\r\nlast line\r\n")


class Wire:
    """A POP3 client that shows exactly what the server sends."""

    def __init__(self, address, sock=None):
        self.sock = sock or socket.create_connection(address, timeout=TIMEOUT)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; pending {self.buffer[:200]!r}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def multiline(self) -> list[bytes]:
        """Raw lines of a multi-line body, stuffing intact, up to (not including) the lone "."."""
        lines = []
        while (line := self.line()) != b".":
            lines.append(line)
        return lines

    def command(self, text: str) -> bytes:
        self.send(text.encode() + b"\r\n")
        return self.line()

    def closed(self) -> bool:
        """True if the server closed the connection (EOF) with nothing more to read."""
        if self.buffer:
            return False
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def login(server) -> Wire:
    wire = Wire(server.address("pop3"))
    assert wire.line().startswith(b"+OK")
    assert wire.command(f"USER {ALICE}").startswith(b"+OK")
    assert wire.command(f"PASS {PASSWORD}").startswith(b"+OK Logged in")
    return wire


@pytest.fixture(scope="module")
def server(shared_mailserver):
    """The shared daemon with two messages for alice: TRICKY, then a plain one. Read-only tests."""
    with smtplib.SMTP(*shared_mailserver.address("smtp"), timeout=TIMEOUT) as smtp:
        smtp.sendmail("s@remote.test", [ALICE], TRICKY)
        smtp.sendmail("s@remote.test", [ALICE], b"Subject: plain\r\n\r\nhello\r\n")
    return shared_mailserver


@pytest.fixture
def session(server):
    wire = login(server)
    yield wire
    wire.close()


def test_retr_dot_stuffs_on_the_wire(session):
    """RETR sends a lone "." as "..", ".." as "...", ".hidden" as "..hidden"; the only lone "." ends it."""
    assert session.command("RETR 1").startswith(b"+OK")
    body = session.multiline()
    tail = body[body.index(b"Subject: dots") + 1:]
    assert tail == [b"", b"..", b"...", b"..hidden", b"not.a.dot", b"..", b"last line"]
    assert session.command("NOOP") == b"+OK"  # nothing was left over after the terminator


def test_top_dot_stuffs_on_the_wire(session):
    """TOP n 2 sends the header, the blank line and two body lines, stuffed."""
    assert session.command("TOP 1 2").startswith(b"+OK")
    body = session.multiline()
    assert body[-3:] == [b"", b"..", b"..."]


@pytest.mark.parametrize("command", [
    "RETR 0", "RETR -1", "RETR 999999999999999999999999999999", "RETR 3", "RETR abc", "RETR",
    "RETR 1 1", "TOP 1 -1", "TOP 1", "TOP x 1", "LIST abc", "LIST 0", "LIST 1 2", "UIDL -1",
    "DELE 0", "DELE 99", "STAT now", "NOOP 1", "RSET 1", "XTND XMIT", "APOP alice abc",
])
def test_bad_arguments_answer_err(session, command):
    """Malformed, out-of-range or surplus arguments get -ERR; the session goes on."""
    reply = session.command(command)
    assert reply.startswith(b"-ERR"), (command, reply)
    assert session.command("STAT").startswith(b"+OK 2 ")


def test_deleted_message_access_is_refused(session):
    """After DELE n, RETR/TOP/LIST/UIDL/DELE of n answer -ERR (and RSET before leaving)."""
    assert session.command("DELE 2").startswith(b"+OK")
    for command in ("RETR 2", "TOP 2 0", "LIST 2", "UIDL 2", "DELE 2"):
        assert session.command(command).startswith(b"-ERR"), command
    assert session.command("RSET").startswith(b"+OK")


def test_command_over_255_octets_is_refused(session):
    """RFC 2449 4: a 256-octet command line gets -ERR; the session goes on."""
    assert session.command("NOOP " + "x" * 249) == b"-ERR Line too long"
    assert session.command("NOOP") == b"+OK"


def test_megabyte_line_is_refused(server):
    """A 1 MB line gets -ERR Line too long, and the server keeps serving the connection."""
    wire = Wire(server.address("pop3"))
    wire.line()
    wire.send(b"x" * 1_000_000 + b"\r\n")
    assert wire.line() == b"-ERR Line too long"
    assert wire.command("CAPA").startswith(b"+OK")
    wire.multiline()
    wire.close()


def test_line_past_max_line_length_closes(server):
    """A line longer than limits.max_line_length (1 MiB) ends the connection."""
    wire = Wire(server.address("pop3"))
    wire.line()
    try:
        wire.send(b"x" * (2 * 1024 * 1024))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close while we are still sending
    assert wire.line() == b"-ERR Line too long"
    assert wire.closed()
    wire.close()


def test_stls_discards_pipelined_commands(server):
    """Commands sent in the same packet as STLS are never run: inside TLS the session is not logged in."""
    wire = Wire(server.address("pop3"))
    wire.line()
    wire.send(f"STLS\r\nUSER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
    assert wire.line() == b"+OK Begin TLS negotiation"
    assert wire.buffer == b""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    secure = Wire(None, context.wrap_socket(wire.sock))
    # The first reply inside TLS answers STAT: USER/PASS left no replies and no login.
    assert secure.command("STAT") == b"-ERR Command not valid in this state"
    assert secure.command(f"USER {ALICE}") == b"+OK Send your password"
    assert secure.command(f"PASS {PASSWORD}").startswith(b"+OK Logged in")
    secure.command("QUIT")
    secure.close()


def test_pipelined_commands_answered_in_order(server):
    """RFC 2449 6.6: a whole session sent at once is answered in command order."""
    wire = Wire(server.address("pop3"))
    wire.line()
    wire.send(f"USER {ALICE}\r\nPASS {PASSWORD}\r\nSTAT\r\nRETR 2\r\nLIST 2\r\nUIDL\r\nTOP 2 0\r\n"
              f"NOOP\r\nQUIT\r\n".encode())
    assert wire.line().startswith(b"+OK")
    assert wire.line().startswith(b"+OK Logged in")
    assert wire.line().startswith(b"+OK 2 ")
    assert wire.line().startswith(b"+OK")
    assert wire.multiline()[-2:] == [b"", b"hello"]
    assert wire.line().startswith(b"+OK 2 ")
    assert wire.line().startswith(b"+OK")
    assert len(wire.multiline()) == 2
    assert wire.line().startswith(b"+OK")
    assert wire.multiline()[-1] == b""
    assert wire.line() == b"+OK"
    assert wire.line().startswith(b"+OK Logging out")
    assert wire.closed()
    wire.close()


def test_auth_plain_with_continuation_and_cancel(server):
    """AUTH PLAIN: "*" cancels with -ERR; a continuation response logs in."""
    wire = Wire(server.address("pop3"))
    wire.line()
    assert wire.command("AUTH PLAIN") == b"+ "
    assert wire.command("*") == b"-ERR Authentication cancelled"
    assert wire.command("AUTH PLAIN") == b"+ "
    response = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    assert wire.command(response).startswith(b"+OK Logged in")
    wire.command("QUIT")
    wire.close()


def test_auth_plain_initial_response(server):
    """AUTH PLAIN with an initial response logs in (RFC 5034 4)."""
    wire = Wire(server.address("pop3"))
    wire.line()
    response = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    assert wire.command(f"AUTH PLAIN {response}").startswith(b"+OK Logged in")
    wire.command("QUIT")
    wire.close()


@pytest.fixture
def penalized_server(mailserver_factory):
    """A daemon whose auth penalty is short enough to measure: 0.4 s, doubling, at most 2 s."""
    return mailserver_factory(extra_config={"auth": {"penalty_initial": "0.4s", "penalty_max": "2s"}})


def failed_login(server, user: str, mechanism: str = "USER") -> tuple[bytes, float]:
    wire = Wire(server.address("pop3"))
    wire.line()
    started = time.monotonic()
    if mechanism == "USER":
        wire.command(f"USER {user}")
        reply = wire.command("PASS wrong-password")
    else:
        reply = wire.command("AUTH PLAIN " + base64.b64encode(f"\0{user}\0wrong-password".encode()).decode())
    elapsed = time.monotonic() - started
    wire.close()
    return reply, elapsed


def good_login(server) -> None:
    """A successful login from our IP clears the per-IP failure count."""
    wire = login(server)
    wire.command("QUIT")
    wire.close()


@pytest.mark.parametrize("mechanism", ["USER", "PLAIN"])
def test_unknown_user_and_wrong_password_look_the_same(penalized_server, mechanism):
    """An unknown user and a known user with a wrong password get the same bytes after the same
    penalty delay, so neither the reply nor its timing tells which addresses exist."""
    unknown_reply, unknown_time = failed_login(penalized_server, "nobody@example.test", mechanism)
    good_login(penalized_server)
    known_reply, known_time = failed_login(penalized_server, ALICE, mechanism)
    assert unknown_reply == known_reply == b"-ERR [AUTH] Authentication failed"
    assert unknown_time >= 0.4 and known_time >= 0.4
    assert abs(unknown_time - known_time) < 0.3


def test_auth_penalty_grows_with_failures(penalized_server):
    """Repeated failures from one IP wait longer each time (the authenticator's penalty)."""
    _reply, first = failed_login(penalized_server, "x@example.test")
    _reply, second = failed_login(penalized_server, "y@example.test")
    assert first >= 0.4 and second >= 0.8
