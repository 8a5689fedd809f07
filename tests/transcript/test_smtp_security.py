"""Attacks on the SMTP front door, against the real daemon: smuggling, STARTTLS
injection, over-long DATA lines, and kill -9 while senders are busy."""

from __future__ import annotations

import mailbox
import smtplib
import socket
import ssl
import threading
import time

import pytest

SMTP_LISTENERS = ("smtp", "submission", "submissions")
START = b"EHLO c.test\r\nMAIL FROM:<sender@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
SMUGGLED = (b"MAIL FROM:<ceo@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
            b"From: ceo@example.test\r\nSubject: smuggled\r\n\r\nWire the money.\r\n")


@pytest.fixture
def server(mailserver_factory):
    return mailserver_factory(listeners=SMTP_LISTENERS)


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the daemon's self-signed certificate
    return context


class Wire:
    def __init__(self, server, listener="smtp"):
        self.sock = socket.create_connection(server.address(listener), timeout=10)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> list[bytes]:
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                return lines
            lines.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                return lines

    def code(self) -> str:
        last = self.reply()[-1].decode()
        return last[:9] if last[4:5].isdigit() else last[:3]

    def start_tls(self) -> None:
        self.sock = tls_context().wrap_socket(self.sock)
        self.file = self.sock.makefile("rb")


def inbox(server, tmp_path, address="alice@example.test"):
    out = tmp_path / "inbox.mbox"
    server.ctl("user", "export", address, "--mailbox", "INBOX", "-o", str(out))
    return [message.as_bytes() for message in mailbox.mbox(str(out))]


@pytest.mark.parametrize("sequence", [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n"],
                         ids=repr)
def test_bare_newline_smuggling_is_refused_once_and_nothing_is_stored(server, tmp_path, sequence):
    """A fake end of data made of bare CR/LF neither ends the message nor starts a second one:
    one 550 5.5.2 after the real end, and neither message is stored (CVE-2023-51764 family)."""
    client = Wire(server)
    client.send(START)
    assert [client.code() for _ in range(4)][3] == "354"
    client.send(b"Subject: innocent\r\n\r\nhello" + sequence + SMUGGLED + b".\r\nNOOP\r\n")
    assert [client.code(), client.code()] == ["550 5.5.2", "250 2.0.0"]
    assert inbox(server, tmp_path) == []


def test_nul_before_dot_does_not_end_data(server, tmp_path):
    """<CRLF><NUL>.<CRLF> is not an end of data: the "smuggled" commands stay inside the one message."""
    client = Wire(server)
    client.send(START)
    [client.code() for _ in range(4)]
    client.send(b"Subject: innocent\r\n\r\nhello\r\n\x00.\r\n" + SMUGGLED + b".\r\nNOOP\r\n")
    assert [client.code(), client.code()] == ["250 2.0.0", "250 2.0.0"]
    stored, = inbox(server, tmp_path)
    assert b"Subject: innocent" in stored and b"MAIL FROM:<ceo@example.test>" in stored


def test_starttls_injection_is_not_answered_inside_tls(server):
    """Bytes sent with STARTTLS in one write are discarded: after the handshake the first reply
    belongs to the first command sent over TLS, and the pre-TLS MAIL is forgotten (CVE-2011-0411)."""
    client = Wire(server)
    client.send(b"EHLO c.test\r\nMAIL FROM:<sender@remote.test>\r\n")
    assert [client.code() for _ in range(2)] == ["250", "250 2.1.0"]
    client.send(b"STARTTLS\r\nRSET\r\nRCPT TO:<alice@example.test>\r\n")
    assert client.code() == "220 2.0.0"
    client.start_tls()
    client.send(b"HELP\r\nRCPT TO:<alice@example.test>\r\nEHLO c.test\r\n")
    assert client.code() == "214 2.0.0"  # not RSET's 250, not the injected RCPT's reply
    assert client.code() == "503 5.5.1"  # the transaction from before TLS is gone
    ehlo = client.reply()
    assert b"250 CHUNKING" in ehlo[-1:] and not any(b"STARTTLS" in line for line in ehlo)


def test_delivery_over_starttls_records_tls_in_received(server, tmp_path):
    """A message received after STARTTLS says ESMTPS and names the TLS version and cipher."""
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as client:
        client.starttls(context=tls_context())
        client.sendmail("sender@remote.test", ["alice@example.test"], b"Subject: tls\r\n\r\nsecret\r\n")
    stored, = inbox(server, tmp_path)
    assert b"with ESMTPS id" in stored and b"(using TLSv1." in stored and b"with cipher " in stored


def test_line_over_the_cap_never_drops_back_to_command_mode(server, tmp_path):
    """A DATA line over limits.max_line_length (1 MiB) is read to the real end of data and
    refused once with 552 5.3.4; the commands after it are never run."""
    client = Wire(server)
    client.send(START)
    [client.code() for _ in range(4)]
    client.send(b"Subject: long\r\n\r\n" + b"A" * (1024 * 1024 + 10) + b"\r\n" + SMUGGLED + b".\r\nNOOP\r\n")
    assert [client.code(), client.code()] == ["552 5.3.4", "250 2.0.0"]
    assert inbox(server, tmp_path) == []


def test_line_longer_than_16k_is_body_not_commands(server, tmp_path):
    """A 20 kB line (over stock Twisted's 16,384) stays message content: one message, nothing smuggled."""
    client = Wire(server)
    client.send(START)
    [client.code() for _ in range(4)]
    client.send(b"Subject: wide\r\n\r\n" + b"B" * 20_000 + b"\r\n" + SMUGGLED + b".\r\nNOOP\r\n")
    assert [client.code(), client.code()] == ["250 2.0.0", "250 2.0.0"]
    stored, = inbox(server, tmp_path)
    assert b"B" * 20_000 in stored and b"Subject: wide" in stored


def test_kill_9_under_concurrent_senders_loses_no_acknowledged_message(server, tmp_path):
    """kill -9 while 8 clients send: every message that got 250 is stored after restart, none truncated."""
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def body(tag: str) -> bytes:
        lines = b"".join(b"%s line %03d\r\n" % (tag.encode(), n) for n in range(100))
        return b"Subject: " + tag.encode() + b"\r\n\r\n" + lines + b"END " + tag.encode() + b"\r\n"

    def sender(number: int):
        try:
            with smtplib.SMTP(*server.address("smtp"), timeout=10) as client:
                for n in range(100):
                    if stop.is_set():
                        return
                    tag = f"msg-{number}-{n}"
                    client.sendmail("sender@remote.test", ["alice@example.test"], body(tag))
                    with lock:
                        acknowledged.append(tag)
        except (OSError, smtplib.SMTPException):
            return  # the server died under us: expected

    threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(10)
    with lock:
        acked = list(acknowledged)
    assert len(acked) >= 40
    server.restart()
    stored = {}
    for raw in inbox(server, tmp_path):
        tag = raw.split(b"Subject: ", 1)[1].split(b"\n", 1)[0].decode()
        stored[tag] = raw
    missing = [tag for tag in acked if tag not in stored]
    assert not missing
    for tag, raw in stored.items():
        assert raw.rstrip(b"\n").endswith(b"END " + tag.encode()), f"{tag} is truncated"
