"""IMAP against the real daemon: the greeting, CAPABILITY, LOGIN, SELECT and FETCH
of mail delivered over SMTP, IMAPS and STARTTLS, pipelining, COMPRESS=DEFLATE,
IDLE and LOGOUT, with imaplib and on the raw wire."""

from __future__ import annotations

import base64
import imaplib
import re
import smtplib
import socket
import ssl
import zlib

import pytest

from tests.support.daemon import PASSWORD

ALICE = "alice@example.test"
BOB = "bob@example.test"
TIMEOUT = 15  # seconds for any one socket operation: a hang fails the test, it never blocks CI
IMAP_LISTENERS = ("smtp", "imap", "imaps")
FIRST = b"From: s@remote.test\r\nTo: alice@example.test\r\nSubject: first\r\n\r\nhello imap\r\n"
SECOND = b"From: s@remote.test\r\nTo: alice@example.test\r\nSubject: second\r\n\r\nagain\r\n"


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the daemon's self-signed certificate
    return context


class Wire:
    """An IMAP client that shows exactly what the server sends (literals included)."""

    def __init__(self, address, sock=None):
        self.sock = sock or socket.create_connection(address, timeout=TIMEOUT)
        self.buffer = b""
        self.greeting = self.line() if sock is None else None

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError(f"connection closed; pending {self.buffer[:200]!r}")
        self.buffer += chunk

    def line(self) -> bytes:
        """One response line without CRLF; a literal it announces is appended whole."""
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        announced = re.search(rb"\{(\d+)\}$", line)
        if announced:
            size = int(announced.group(1))
            while len(self.buffer) < size:
                self._fill()
            line += b"\r\n" + self.buffer[:size]
            self.buffer = self.buffer[size:]
            line += self.line()
        return line

    def until_tagged(self, tag: str) -> list[bytes]:
        """Every line up to and including the one tagged `tag`."""
        lines = []
        while True:
            lines.append(self.line())
            if lines[-1].startswith(tag.encode() + b" "):
                return lines

    def command(self, tag: str, text: str) -> list[bytes]:
        self.send(f"{tag} {text}\r\n".encode())
        return self.until_tagged(tag)

    def login(self, user: str = ALICE) -> None:
        assert self.command("L", f'LOGIN {user} "{PASSWORD}"')[-1].startswith(b"L OK")

    def closed(self) -> bool:
        """True if the server closed the connection (EOF) with nothing more to read."""
        if self.buffer:
            return False
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, ssl.SSLError):
            return True

    def close(self) -> None:
        self.sock.close()


def deliver(server, recipient: str, message: bytes) -> None:
    with smtplib.SMTP(*server.address("smtp"), timeout=TIMEOUT) as smtp:
        smtp.sendmail("s@remote.test", [recipient], message)


@pytest.fixture(scope="module")
def server(shared_mailserver):
    """The shared daemon with two messages for alice, FIRST then SECOND. Tests leave alice's
    INBOX as it is; bob's mail is theirs to change."""
    for name in IMAP_LISTENERS:
        if name not in shared_mailserver.ports:
            pytest.fail(f"the shared daemon has no {name} listener (tests/support/daemon.py)")
    deliver(shared_mailserver, ALICE, FIRST)
    deliver(shared_mailserver, ALICE, SECOND)
    return shared_mailserver


def imap_client(server) -> imaplib.IMAP4:
    client = imaplib.IMAP4(*server.address("imap"), timeout=TIMEOUT)
    client.login(ALICE, PASSWORD)
    return client


# -- greeting and capabilities ----------------------------------------------------------------

def test_greeting_is_ok_with_capabilities(server):
    """The greeting is `* OK [CAPABILITY IMAP4rev1 ...]` and offers STARTTLS on the imap port."""
    wire = Wire(server.address("imap"))
    assert wire.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    assert b" STARTTLS" in wire.greeting
    wire.close()


def test_loopback_plaintext_login_is_not_disabled(server):
    """From loopback, plaintext LOGIN is allowed: no LOGINDISABLED before TLS (RFC 3501 6.2.3)."""
    wire = Wire(server.address("imap"))
    lines = wire.command("a", "CAPABILITY")
    assert lines[0].startswith(b"* CAPABILITY IMAP4rev1 ")
    assert b"LOGINDISABLED" not in lines[0]
    assert lines[-1].startswith(b"a OK")
    wire.close()


def test_imaps_greeting_offers_no_starttls(server):
    """On the implicit-TLS port the session is secure: no STARTTLS, no LOGINDISABLED."""
    sock = tls_context().wrap_socket(socket.create_connection(server.address("imaps"), timeout=TIMEOUT))
    wire = Wire(None, sock)
    greeting = wire.line()
    assert greeting.startswith(b"* OK") and b"STARTTLS" not in greeting
    assert b"LOGINDISABLED" not in greeting
    wire.close()


def test_capabilities_after_login_include_extensions(server):
    """After LOGIN the capability list carries the authenticated-state extensions."""
    client = imap_client(server)
    typ, data = client.capability()
    names = data[0].split()
    assert typ == "OK"
    for name in (b"IMAP4rev1", b"IDLE", b"UIDPLUS", b"LITERAL+"):
        assert name in names
    client.logout()


# -- reading delivered mail -----------------------------------------------------------------------

def test_select_inbox_after_smtp_delivery(server):
    """SELECT INBOX reports the two delivered messages, UIDVALIDITY and UIDNEXT."""
    client = imap_client(server)
    typ, data = client.select("INBOX", readonly=True)
    assert (typ, data) == ("OK", [b"2"])
    assert client.untagged_responses.get("UIDVALIDITY")
    assert client.untagged_responses.get("UIDNEXT")
    client.logout()


def test_fetch_body_returns_the_delivered_message(server):
    """BODY.PEEK[] of each message holds what was sent over SMTP, in delivery order."""
    client = imap_client(server)
    client.select("INBOX", readonly=True)
    typ, data = client.fetch("1:2", "(UID RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK"
    bodies = [item[1] for item in data if isinstance(item, tuple)]
    assert bodies[0].endswith(FIRST) and bodies[1].endswith(SECOND)
    client.logout()


def test_fetch_envelope_and_flags(server):
    """FETCH (FLAGS ENVELOPE) answers with the Subject in the envelope."""
    client = imap_client(server)
    client.select("INBOX", readonly=True)
    typ, data = client.fetch("1", "(FLAGS ENVELOPE)")
    assert typ == "OK"
    assert b'"first"' in data[0] and b"FLAGS (" in data[0]
    client.logout()


def test_imaps_login_and_select(server):
    """imaplib over IMAPS logs in and selects INBOX."""
    client = imaplib.IMAP4_SSL(*server.address("imaps"), ssl_context=tls_context(), timeout=TIMEOUT)
    client.login(ALICE, PASSWORD)
    assert client.select("INBOX", readonly=True) == ("OK", [b"2"])
    client.logout()


def test_starttls_then_login(server):
    """STARTTLS on the imap port, then LOGIN and SELECT inside TLS."""
    client = imaplib.IMAP4(*server.address("imap"), timeout=TIMEOUT)
    client.starttls(ssl_context=tls_context())
    assert "STARTTLS" not in client.capabilities
    client.login(ALICE, PASSWORD)
    assert client.select("INBOX", readonly=True)[0] == "OK"
    client.logout()


# -- the wire ----------------------------------------------------------------------------------------

def test_pipelined_commands_are_answered_in_order(server):
    """Commands sent in one packet are answered one after another, in order."""
    wire = Wire(server.address("imap"))
    wire.send(f'a LOGIN {ALICE} "{PASSWORD}"\r\nb EXAMINE INBOX\r\nc FETCH 1 (UID)\r\nd NOOP\r\n'.encode())
    tagged = [line[:1] for line in wire.until_tagged("d") if not line.startswith(b"*")]
    assert tagged == [b"a", b"b", b"c", b"d"]
    wire.close()


def test_synchronizing_literal_login(server):
    """LOGIN with synchronizing literals: "+" for each, then OK."""
    wire = Wire(server.address("imap"))
    user, password = ALICE.encode(), PASSWORD.encode()
    wire.send(b"a LOGIN {%d}\r\n" % len(user))
    assert wire.line().startswith(b"+ ")
    wire.send(user + b" {%d}\r\n" % len(password))
    assert wire.line().startswith(b"+ ")
    wire.send(password + b"\r\n")
    assert wire.until_tagged("a")[-1].startswith(b"a OK")
    wire.close()


def test_logout_says_bye_and_closes(server):
    """LOGOUT: * BYE, the tagged OK, then the server closes the connection."""
    wire = Wire(server.address("imap"))
    lines = wire.command("a", "LOGOUT")
    assert lines[0].startswith(b"* BYE") and lines[-1].startswith(b"a OK")
    assert wire.closed()


def test_compress_deflate_round_trip(server):
    """After COMPRESS DEFLATE (RFC 4978) both directions are raw DEFLATE and commands work."""
    wire = Wire(server.address("imap"))
    wire.login()
    assert wire.command("c", "COMPRESS DEFLATE")[-1].startswith(b"c OK")
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    decompressor = zlib.decompressobj(-15)
    wire.send(compressor.compress(b"d EXAMINE INBOX\r\ne NOOP\r\n") + compressor.flush(zlib.Z_SYNC_FLUSH))
    received = b""
    while not re.search(rb"(^|\r\n)e OK[^\r\n]*\r\n", received):
        chunk = wire.sock.recv(65536)
        assert chunk, received
        received += decompressor.decompress(chunk)
    assert b"* 2 EXISTS" in received and b"\r\nd OK" in received
    wire.close()


def test_idle_reports_new_mail(server):
    """While bob IDLEs in INBOX, mail delivered over SMTP is announced with * n EXISTS."""
    wire = Wire(server.address("imap"))
    wire.login(BOB)
    exists = [line for line in wire.command("s", "SELECT INBOX") if line.endswith(b" EXISTS")]
    before = int(exists[0].split()[1])
    wire.send(b"i IDLE\r\n")
    assert wire.line().startswith(b"+ ")
    deliver(server, BOB, b"Subject: ping\r\n\r\nwake up\r\n")
    update = wire.line()
    while update.startswith(b"* ") and update.endswith(b" RECENT"):
        update = wire.line()
    assert update == b"* %d EXISTS" % (before + 1)
    wire.send(b"DONE\r\n")
    assert wire.until_tagged("i")[-1].startswith(b"i OK")
    wire.close()


def test_append_then_fetch(server):
    """APPEND to bob's INBOX (synchronizing literal) then FETCH returns the same octets."""
    message = b"Subject: appended\r\n\r\nkept as sent\r\n"
    wire = Wire(server.address("imap"))
    wire.login(BOB)
    wire.send(b"a APPEND INBOX (\\Seen) {%d}\r\n" % len(message))
    assert wire.line().startswith(b"+ ")
    wire.send(message + b"\r\n")
    answer = wire.until_tagged("a")[-1]
    assert answer.startswith(b"a OK")
    uid = re.search(rb"APPENDUID \d+ (\d+)", answer).group(1).decode()
    wire.command("s", "SELECT INBOX")
    lines = wire.command("f", f"UID FETCH {uid} BODY.PEEK[]")
    assert any(line.endswith(message + b")") for line in lines), lines
    wire.close()


def test_authenticate_plain_reads_the_response_line(server):
    """AUTHENTICATE PLAIN without an initial response: "+ ", one base64 line, then OK;
    a command pipelined after that line runs after the login."""
    wire = Wire(server.address("imap"))
    wire.send(b"a AUTHENTICATE PLAIN\r\n")
    assert wire.line().startswith(b"+")
    credentials = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())
    wire.send(credentials + b"\r\nb EXAMINE INBOX\r\n")
    assert wire.until_tagged("a")[-1].startswith(b"a OK")
    assert wire.until_tagged("b")[-1].startswith(b"b OK")
    wire.close()
