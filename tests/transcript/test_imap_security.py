"""IMAP against the real daemon under attack: STARTTLS injection, literals that
ask for gigabytes, nesting and length bombs, connection caps per IP and per
user and IP, and the authentication penalty (issue 5, "Security and bad input").
Every refusal must come fast, as BAD or NO, never as a "+" continuation, and
leave the connection usable (or close it cleanly)."""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
import time

import pytest

from tests.support.daemon import PASSWORD

ALICE = "alice@example.test"
TIMEOUT = 15  # seconds for any one socket operation: a hang fails the test, it never blocks CI
QUICK = 3.0  # seconds within which a refusal must arrive (milliseconds in practice)
IMAP_LISTENERS = ("smtp", "imap", "imaps")


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the daemon's self-signed certificate
    return context


class Wire:
    """A raw IMAP client: what the server sends, line by line (literals kept inline)."""

    def __init__(self, address):
        self.sock = socket.create_connection(address, timeout=TIMEOUT)
        self.buffer = b""
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; pending {self.buffer[:200]!r}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        announced = re.search(rb"\{(\d+)\}$", line)
        if announced:
            size = int(announced.group(1))
            while len(self.buffer) < size:
                self.buffer += self.sock.recv(65536)
            line += b"\r\n" + self.buffer[:size]
            self.buffer = self.buffer[size:]
            line += self.line()
        return line

    def until_tagged(self, tag: str) -> list[bytes]:
        lines = []
        while True:
            lines.append(self.line())
            if lines[-1].startswith(tag.encode() + b" "):
                return lines

    def command(self, tag: str, text: str | bytes) -> list[bytes]:
        data = text.encode() if isinstance(text, str) else text
        self.send(tag.encode() + b" " + data + b"\r\n")
        return self.until_tagged(tag)

    def login(self, user: str = ALICE) -> list[bytes]:
        return self.command("L", f'LOGIN {user} "{PASSWORD}"')

    def usable(self) -> bool:
        """The connection still answers a NOOP."""
        return self.command("ping", "NOOP")[-1].startswith(b"ping OK")

    def closed(self) -> bool:
        if self.buffer:
            return False
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, ssl.SSLError):
            return True

    def close(self) -> None:
        self.sock.close()


def refused_quickly(wire: Wire, tag: str, data: bytes) -> bytes:
    """Send `data` (a whole command or its first line); the tagged answer, checked to be
    BAD or NO, without a "+" before it, within QUICK seconds."""
    started = time.monotonic()
    wire.send(data)
    lines = wire.until_tagged(tag)
    assert time.monotonic() - started < QUICK
    assert not any(line.startswith(b"+") for line in lines), lines
    answer = lines[-1]
    assert answer.split()[1] in (b"BAD", b"NO"), answer
    return answer


@pytest.fixture(scope="module")
def server(shared_mailserver):
    """The shared daemon with one message in alice's INBOX. Tests change nothing."""
    for name in IMAP_LISTENERS:
        if name not in shared_mailserver.ports:
            pytest.fail(f"the shared daemon has no {name} listener (tests/support/daemon.py)")
    with smtplib.SMTP(*shared_mailserver.address("smtp"), timeout=TIMEOUT) as smtp:
        smtp.sendmail("s@remote.test", [ALICE],
                      b"Subject: target\r\nContent-Type: text/plain\r\n\r\nbody\r\n")
    return shared_mailserver


@pytest.fixture
def selected(server):
    """A raw connection logged in as alice with INBOX selected (read-only)."""
    wire = Wire(server.address("imap"))
    assert wire.login()[-1].startswith(b"L OK")
    assert wire.command("E", "EXAMINE INBOX")[-1].startswith(b"E OK")
    yield wire
    wire.close()


# -- STARTTLS injection (RFC 3501 6.2.1; CVE-2011-0411 class) ------------------------------------

def test_command_pipelined_after_starttls_is_discarded(server):
    """A command sent in the same packet as STARTTLS is never answered, in or out of TLS."""
    wire = Wire(server.address("imap"))
    wire.send(b"a STARTTLS\r\nb CAPABILITY\r\n")
    assert wire.line().startswith(b"a OK")
    assert wire.buffer == b""
    secure = tls_context().wrap_socket(wire.sock)
    secure.sendall(b"c NOOP\r\n")
    received = b""
    while not re.search(rb"(^|\r\n)c OK", received):
        chunk = secure.recv(65536)
        assert chunk, received
        received += chunk
    assert not re.search(rb"(^|\r\n)b ", received), received
    assert b"* CAPABILITY" not in received
    secure.close()


# -- literal limits (RFC 7888 4, RFC 7889 4) --------------------------------------------------------

def test_huge_append_literal_gets_no_continuation(selected):
    """APPEND INBOX {99999999999}: NO [TOOBIG] or BAD at once, never "+"; the session goes on."""
    answer = refused_quickly(selected, "a", b"a APPEND INBOX {99999999999}\r\n")
    assert b"TOOBIG" in answer or answer.startswith(b"a BAD")
    assert selected.usable()


def test_huge_login_literal_gets_no_continuation(server):
    """LOGIN {4294967296} before authentication: BAD, never "+"; the connection goes on."""
    wire = Wire(server.address("imap"))
    refused_quickly(wire, "a", b"a LOGIN {4294967296}\r\n")
    assert wire.usable()
    wire.close()


def test_large_non_synchronizing_literal_before_login_is_refused(server):
    """A LITERAL+ of more than 4,096 octets before authentication is BAD (RFC 7888 4); its
    octets are skipped, not run as commands, and the connection stays usable."""
    wire = Wire(server.address("imap"))
    payload = b"x NOOP\r\n" * 700  # 5,600 octets that would each be a command if not skipped
    answer = refused_quickly(wire, "a", b"a LOGIN {%d+}\r\n" % len(payload) + payload + b" pw\r\n")
    assert answer.startswith(b"a BAD")
    assert wire.usable()
    wire.close()


def test_small_non_synchronizing_literal_before_login_works(server):
    """A LITERAL+ within 4,096 octets before authentication is accepted."""
    wire = Wire(server.address("imap"))
    user = ALICE.encode()
    lines = wire.command("a", b"LOGIN {%d+}\r\n" % len(user) + user + f' "{PASSWORD}"'.encode())
    assert lines[-1].startswith(b"a OK")
    wire.close()


# -- nesting and length -----------------------------------------------------------------------------------

def test_hundred_thousand_open_parentheses(selected):
    """100,000 "(" in SEARCH: BAD quickly (the line is too long); the session goes on."""
    refused_quickly(selected, "a", b"a SEARCH " + b"(" * 100_000 + b"\r\n")
    assert selected.usable()


def test_deeply_nested_search_within_line_limit(selected):
    """SEARCH nested 20,000 deep in a line under the limit: BAD quickly, no RecursionError."""
    program = b"(" * 20_000 + b"ALL" + b")" * 20_000
    refused_quickly(selected, "a", b"a SEARCH " + program + b"\r\n")
    assert selected.usable()


def test_deeply_nested_not_chain(selected):
    """SEARCH NOT NOT NOT ... 10,000 times: BAD quickly; the session goes on."""
    refused_quickly(selected, "a", b"a SEARCH " + b"NOT " * 10_000 + b"ALL\r\n")
    assert selected.usable()


def test_one_megabyte_line(selected):
    """A 1 MB command line: BAD [TOOBIG] quickly; what follows it is a fresh command."""
    answer = refused_quickly(selected, "a", b"a NOOP " + b"x" * (1024 * 1024) + b"\r\n")
    assert b"TOOBIG" in answer
    assert selected.usable()


def test_one_megabyte_line_before_login(server):
    """A 1 MB line before authentication: BAD quickly; the connection goes on."""
    wire = Wire(server.address("imap"))
    refused_quickly(wire, "a", b"a LOGIN " + b"y" * (1024 * 1024) + b"\r\n")
    assert wire.usable()
    wire.close()


def test_ten_thousand_header_field_names(selected):
    """BODY[HEADER.FIELDS (...10,000 names...)]: BAD quickly; the session goes on."""
    names = b" ".join(b"H%d" % n for n in range(10_000))
    refused_quickly(selected, "a", b"a FETCH 1 BODY.PEEK[HEADER.FIELDS (" + names + b")]\r\n")
    assert selected.usable()


def test_section_two_hundred_parts_deep(selected):
    """BODY[1.1.1...] 200 parts deep: BAD quickly; the session goes on."""
    section = b".".join([b"1"] * 200)
    refused_quickly(selected, "a", b"a FETCH 1 BODY.PEEK[" + section + b"]\r\n")
    assert selected.usable()


def test_nested_parentheses_in_fetch_items(selected):
    """FETCH 1 ((((... 10,000 deep: BAD quickly; the session goes on."""
    refused_quickly(selected, "a", b"a FETCH 1 " + b"(" * 10_000 + b"FLAGS" + b")" * 10_000 + b"\r\n")
    assert selected.usable()


# -- connection caps -----------------------------------------------------------------------------------------

def test_connections_per_ip_are_capped(mailserver_factory):
    """Past limits.max_connections_per_ip the server says * BYE and closes; a slot frees on close."""
    server = mailserver_factory(listeners=IMAP_LISTENERS,
                                extra_config={"limits": {"max_connections_per_ip": 3}})
    open_wires = [Wire(server.address("imap")) for _ in range(3)]
    refused = Wire(server.address("imap"))
    assert refused.greeting.startswith(b"* BYE")
    assert refused.closed()
    open_wires[0].command("z", "LOGOUT")
    assert open_wires[0].closed()
    deadline = time.monotonic() + TIMEOUT
    while True:  # the server counts the close when it sees it: retry briefly
        again = Wire(server.address("imap"))
        if again.greeting.startswith(b"* OK") or time.monotonic() > deadline:
            break
        again.close()
    assert again.greeting.startswith(b"* OK")


def test_sessions_per_user_and_ip_are_capped(mailserver_factory):
    """Past [imap] max_userip_connections, LOGIN answers NO [LIMIT]; a LOGOUT frees a slot."""
    server = mailserver_factory(listeners=IMAP_LISTENERS,
                                extra_config={"imap": {"max_userip_connections": 2}})
    first, second, third = (Wire(server.address("imap")) for _ in range(3))
    assert first.login()[-1].startswith(b"L OK")
    assert second.login()[-1].startswith(b"L OK")
    answer = third.login()[-1]
    assert answer.startswith(b"L NO [LIMIT]"), answer
    first.command("z", "LOGOUT")
    assert first.closed()
    deadline = time.monotonic() + TIMEOUT
    while not (answer := third.login()[-1]).startswith(b"L OK") and time.monotonic() < deadline:
        pass
    assert answer.startswith(b"L OK")


def test_user_ip_cap_counts_imaps_too(mailserver_factory):
    """The per user and IP count is shared by the imap and imaps listeners."""
    server = mailserver_factory(listeners=IMAP_LISTENERS,
                                extra_config={"imap": {"max_userip_connections": 1}})
    plain = Wire(server.address("imap"))
    assert plain.login()[-1].startswith(b"L OK")
    sock = tls_context().wrap_socket(socket.create_connection(server.address("imaps"), timeout=TIMEOUT))
    sock.sendall(f'L LOGIN {ALICE} "{PASSWORD}"\r\n'.encode())
    received = b""
    while not re.search(rb"(^|\r\n)L (OK|NO|BAD)[^\r\n]*\r\n", received):
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    assert b"L NO [LIMIT]" in received
    sock.close()


def test_failed_login_is_answered_after_the_penalty(mailserver_factory):
    """A wrong password gets NO [AUTHENTICATIONFAILED] only after the auth penalty."""
    server = mailserver_factory(listeners=IMAP_LISTENERS,
                                extra_config={"auth": {"penalty_initial": "0.5s"}})
    wire = Wire(server.address("imap"))
    started = time.monotonic()
    answer = wire.command("a", f'LOGIN {ALICE} "wrong-password"')[-1]
    assert answer.startswith(b"a NO [AUTHENTICATIONFAILED]")
    assert time.monotonic() - started >= 0.45
    assert wire.usable()
