"""The inbound MX (listen.smtp) driven over real sockets: delivery, relay refusal, limits, PIPELINING."""

from __future__ import annotations

import mailbox
import smtplib
import socket

import pytest

SMTP_LISTENERS = ("smtp", "submission", "submissions")
MESSAGE = b"From: sender@remote.test\r\nTo: alice@example.test\r\nSubject: hello\r\n\r\nHello Alice.\r\n"


class Wire:
    """A raw SMTP client socket: send bytes, read whole replies."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> list[bytes]:
        """One reply's lines (multiline replies end at "NNN ")."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                return lines
            lines.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                return lines

    def code(self) -> str:
        """The next reply as "NNN X.Y.Z" (or "NNN")."""
        last = self.reply()[-1].decode()
        return last[:9] if last[4:5].isdigit() else last[:3]

    def is_closed(self) -> bool:
        return self.file.readline() == b""

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server(mailserver_factory):
    """The daemon with only the SMTP listeners, domain example.test, alice@ and bob@."""
    return mailserver_factory(listeners=SMTP_LISTENERS)


def wire(server) -> Wire:
    return Wire(server.host, server.ports["smtp"])


def mailbox_messages(server, tmp_path, address="alice@example.test", name="INBOX"):
    out = tmp_path / f"{address}-{name}.mbox"
    server.ctl("user", "export", address, "--mailbox", name, "-o", str(out))
    return [message.as_bytes() for message in mailbox.mbox(str(out))]


def test_smtplib_delivers_with_return_path_and_received(server, tmp_path):
    """A message sent with smtplib lands in the INBOX with Return-Path and a Received header on top."""
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=10) as client:
        refused = client.sendmail("sender@remote.test", ["alice@example.test"], MESSAGE)
    assert refused == {}
    stored, = mailbox_messages(server, tmp_path)
    assert stored.startswith(b"Return-Path: <sender@remote.test>\nReceived: from ")
    assert b"by mx.example.test (mailserverd) with ESMTP id" in stored
    assert b"for <alice@example.test>;" in stored and stored.endswith(b"Hello Alice.\n")


def test_ehlo_advertises_the_working_extensions(server):
    """EHLO on the MX lists exactly PIPELINING, SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, CHUNKING, STARTTLS (no DSN until bounces exist)."""
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=10) as client:
        client.ehlo("client.test")
        assert set(client.esmtp_features) == {"pipelining", "size", "8bitmime", "smtputf8",
                                              "enhancedstatuscodes", "chunking", "starttls"}
        assert client.esmtp_features["size"] == str(25 * 1024 * 1024)


def test_unknown_user_gets_550_5_1_1(server):
    """RCPT to a local domain without that user gets 550 5.1.1."""
    client = wire(server)
    client.send(b"EHLO c.test\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<nobody@example.test>\r\n")
    assert [client.code() for _ in range(3)][1:] == ["250 2.1.0", "550 5.1.1"]


@pytest.mark.parametrize("recipient", [
    b"<alice%remote.test@example.test>",  # percent hack
    b"<remote.test!alice@example.test>",  # bang path
    b'<"alice@remote.test"@example.test>',  # quoted local part hiding an address
    b"<alice@remote.test@example.test>",  # doubled @
    b"<alice@[127.0.0.1]>",  # address literal
    b"<@example.test:alice@remote.test>",  # source route through us to elsewhere
    b"<@remote.test:alice@example.test>",  # source route through a foreign host
    b"<alice@remote.test>",  # plain relaying
    b"<alice@example.test.remote.test>",  # our domain as a prefix of a foreign one
])
def test_relay_attempt_is_refused_with_554_5_7_1(server, recipient):
    """Every classic relay trick at RCPT gets 554 5.7.1 on the MX."""
    client = wire(server)
    client.send(b"EHLO c.test\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:" + recipient + b"\r\n")
    assert [client.code() for _ in range(3)][2] == "554 5.7.1"


def test_too_many_recipients_get_452(server):
    """Past limits.max_recipients (100) RCPT gets 452 4.5.3; the accepted ones still receive the message."""
    client = wire(server)
    client.send(b"EHLO c.test\r\nMAIL FROM:<s@remote.test>\r\n" + b"RCPT TO:<alice@example.test>\r\n" * 101)
    codes = [client.code() for _ in range(103)]
    assert codes[2:102] == ["250 2.1.5"] * 100 and codes[102] == "452 4.5.3"


def test_pipelined_commands_are_answered_in_order(server, tmp_path):
    """One write of EHLO, MAIL, two RCPT (one bad), DATA gets replies in command order; the message is delivered once."""
    client = wire(server)
    client.send(b"EHLO c.test\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<nobody@example.test>\r\n"
                b"RCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert [client.code() for _ in range(5)] == ["250", "250 2.1.0", "550 5.1.1", "250 2.1.5", "354"]
    client.send(MESSAGE + b".\r\nNOOP\r\nQUIT\r\n")
    assert [client.code() for _ in range(3)] == ["250 2.0.0", "250 2.0.0", "221 2.0.0"]
    assert len(mailbox_messages(server, tmp_path)) == 1


def test_bdat_delivers_chunks_as_one_message(server, tmp_path):
    """CHUNKING: two BDAT chunks, the second LAST, store one message with the bytes given."""
    first, second = MESSAGE[:20], MESSAGE[20:]
    client = wire(server)
    client.send(b"EHLO c.test\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
                b"BDAT %d\r\n%sBDAT %d LAST\r\n%s" % (len(first), first, len(second), second))
    assert [client.code() for _ in range(5)][3:] == ["250 2.0.0", "250 2.0.0"]
    stored, = mailbox_messages(server, tmp_path)
    assert stored.endswith(b"Subject: hello\n\nHello Alice.\n")


def test_declared_size_over_the_limit_is_refused_at_mail(server):
    """MAIL FROM with SIZE over limits.max_message_size gets 552 5.3.4 before any data is sent."""
    client = wire(server)
    client.send(b"EHLO c.test\r\nMAIL FROM:<s@remote.test> SIZE=%d\r\n" % (25 * 1024 * 1024 + 1))
    assert [client.code() for _ in range(2)][1] == "552 5.3.4"


def test_oversized_header_is_read_to_the_end_and_refused(server, tmp_path):
    """A header block over 100 KiB gets one 552 5.3.4 after the end of data; the session goes on."""
    header = b"".join(b"X-Filler-%05d: %s\r\n" % (n, b"v" * 60) for n in range(2000))
    client = wire(server)
    client.send(b"EHLO c.test\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    [client.code() for _ in range(4)]
    client.send(header + b"\r\nbody\r\n.\r\nNOOP\r\n")
    assert [client.code() for _ in range(2)] == ["552 5.3.4", "250 2.0.0"]
    assert mailbox_messages(server, tmp_path) == []


def test_vrfy_and_expn_reveal_nothing(server):
    """VRFY answers 252 2.5.0 the same for real and unknown users; EXPN gets 502 5.5.1."""
    client = wire(server)
    client.send(b"VRFY alice\r\nVRFY nosuchuser\r\nEXPN staff\r\n")
    first, second, third = client.reply(), client.reply(), client.reply()
    assert first == second and first[0].startswith(b"252 2.5.0") and third[0].startswith(b"502 5.5.1")


@pytest.mark.parametrize("request_line", [b"GET / HTTP/1.1", b"POST /form HTTP/1.1", b"CONNECT mx:25 HTTP/1.1"])
def test_http_request_is_disconnected_at_once(server, request_line):
    """An HTTP request line on port 25 ends the connection; the request's body is never read as SMTP."""
    client = wire(server)
    client.send(request_line + b"\r\nHost: x\r\n\r\nMAIL FROM:<s@remote.test>\r\n")
    assert client.reply()[0].startswith(b"221 2.7.0") and client.is_closed()


def test_too_many_bad_commands_disconnects_with_421(server):
    """The 10th bad command (smtp.max_bad_commands) is followed by 421 4.7.0 and a disconnect."""
    client = wire(server)
    client.send(b"BOGUS\r\n" * 12)
    codes = [client.code() for _ in range(11)]
    assert codes == ["500 5.5.2"] * 10 + ["421 4.7.0"] and client.is_closed()


def test_message_rate_per_ip_gives_450(mailserver_factory):
    """Past smtp.message_rate_per_ip (120 a minute) MAIL gets 450 4.7.1 from a client outside
    smtp.trusted_networks (emptied here, so 127.0.0.1 is not exempt)."""
    server = mailserver_factory(listeners=SMTP_LISTENERS, extra_config={"smtp": {"trusted_networks": ""}})
    client = wire(server)
    client.send(b"EHLO c.test\r\n" + b"MAIL FROM:<s@remote.test>\r\nRSET\r\n" * 121)
    codes = [client.code() for _ in range(243)]
    assert codes[1:241:2] == ["250 2.1.0"] * 120 and codes[241] == "450 4.7.1"


def test_loopback_is_trusted_640_messages_over_16_connections_all_get_250(server, tmp_path):
    """With the default configuration, 640 messages from 127.0.0.1 over 16 concurrent
    connections (far past message_rate_per_ip = 120 a minute) all get 250: loopback is in
    smtp.trusted_networks, exempt like Postfix's $mynetworks."""
    clients = [wire(server) for _ in range(16)]
    for client in clients:
        client.send(b"EHLO c.test\r\n")
        assert client.code() == "250"
    codes = []
    for _round in range(40):
        for client in clients:  # PIPELINING (RFC 2920): envelope and DATA in one write
            client.send(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        for client in clients:
            codes.extend(client.code() for _ in range(3))
            client.send(MESSAGE + b".\r\n")
        for client in clients:
            codes.append(client.code())
    assert codes.count("250 2.0.0") == 640 and not [c for c in codes if c[0] in "45"]
    for client in clients:
        client.close()


def test_postmaster_without_domain_is_accepted_when_it_exists(server, tmp_path):
    """RCPT TO:<Postmaster> (RFC 5321 4.1.1.3) reaches the postmaster alias of our domain."""
    server.ctl("alias", "add", "postmaster@example.test", "bob@example.test")
    client = wire(server)
    client.send(b"EHLO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nDATA\r\n")
    assert [client.code() for _ in range(4)][2:] == ["250 2.1.5", "354"]
    client.send(MESSAGE + b".\r\n")
    assert client.code() == "250 2.0.0"
    assert len(mailbox_messages(server, tmp_path, "bob@example.test")) == 1
