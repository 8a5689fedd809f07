"""swaks (the SMTP Swiss army knife) against the daemon: inbound delivery in plain text,
with STARTTLS, with an 8-bit body and with PIPELINING; authenticated submission over 587
and 465; relay refusal. swaks 20201014 has no BDAT, so CHUNKING is left to the transcript
tests."""

from __future__ import annotations

import re

import pytest

from tests.interop import (exported, require_program, run_program, start_module_mailserver,
                           unique_subject, with_subject)
from tests.support.daemon import PASSWORD

SWAKS_EXIT_RCPT_FAILED = 24  # swaks(1) EXIT CODES: "error while running RCPT"
SWAKS_TIMEOUT = "10s"  # swaks' own limit for each SMTP reply


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    return start_module_mailserver(request, tmp_path_factory)


def swaks(server, listener, *arguments, expect_exit=0):
    command = [require_program("swaks"), "--server", server.host, "--port", str(server.ports[listener]),
               "--timeout", SWAKS_TIMEOUT, *arguments]
    result = run_program(command)
    assert result.returncode == expect_exit, \
        f"swaks exited {result.returncode}\n{result.stdout}{result.stderr}"
    return result.stdout


def inbound(server, subject, *arguments):
    return swaks(server, "smtp", "--from", "sender@remote.test", "--to", "alice@example.test",
                 "--header", f"Subject: {subject}", *arguments)


def received_header(message: bytes) -> str:
    """The first (newest) Received header, unfolded."""
    match = re.search(rb"^Received:(.*(?:\n[ \t].*)*)", message, re.MULTILINE)
    assert match, message
    return " ".join(match.group(1).decode().split())


def delivered_to_alice(server, tmp_path, subject) -> bytes:
    message, = with_subject(exported(server, tmp_path, "alice@example.test"), subject)
    return message


def test_plain_inbound_delivery_arrives_as_esmtp(server, tmp_path):
    """A plain-text swaks delivery to port 25 arrives in INBOX, stamped `with ESMTP`."""
    subject = unique_subject("plain")
    inbound(server, subject)
    received = received_header(delivered_to_alice(server, tmp_path, subject))
    assert "by mx.example.test (mailserverd) with ESMTP id" in received


def test_starttls_inbound_delivery_arrives_as_esmtps(server, tmp_path):
    """swaks -tls upgrades port 25 with STARTTLS; the message arrives stamped `with ESMTPS`
    and the TLS version and cipher."""
    subject = unique_subject("starttls")
    transcript = inbound(server, subject, "-tls")
    assert "=== TLS started with cipher" in transcript
    received = received_header(delivered_to_alice(server, tmp_path, subject))
    assert "with ESMTPS id" in received and "(using TLSv1." in received


def test_eight_bit_body_arrives_byte_for_byte(server, tmp_path):
    """An 8-bit UTF-8 body (Content-Transfer-Encoding: 8bit) sent by swaks is stored
    unchanged: 8BITMIME is advertised and no byte of the body is altered."""
    subject = unique_subject("8bit")
    body = "Grüße aus Köln: naïve café, 東京, Ελληνικά.\r\n".encode()
    data = (b"From: sender@remote.test\r\nTo: alice@example.test\r\nSubject: " + subject.encode()
            + b"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            + b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body)
    data_file = tmp_path / "eight-bit.eml"
    data_file.write_bytes(data)
    transcript = swaks(server, "smtp", "--from", "sender@remote.test", "--to", "alice@example.test",
                       "--data", f"@{data_file}")
    assert "250-8BITMIME" in transcript
    message = delivered_to_alice(server, tmp_path, subject)
    header_end = message.index(b"\n\n")
    # mbox export: LF line ends, and a blank line after each message
    assert message[header_end + 2:].rstrip(b"\n") == body.replace(b"\r\n", b"\n").rstrip(b"\n")


def test_pipelined_session_is_answered_in_order_and_delivers(server, tmp_path):
    """swaks --pipeline sends MAIL, RCPT and DATA in one burst; the replies come back in
    order (250 sender, 250 recipient, 354) and the message arrives."""
    subject = unique_subject("pipelined")
    transcript = inbound(server, subject, "--pipeline")
    # swaks marks what it sent with "->" and what it read with "<-"
    burst = re.search(r" -> MAIL FROM:.*\n -> RCPT TO:.*\n -> DATA\n"
                      r"<-  250 2\.1\.0 .*\n<-  250 2\.1\.5 .*\n<-  354 ", transcript)
    assert burst, transcript
    delivered_to_alice(server, tmp_path, subject)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("listener, tls_option", [("submission", "-tls"), ("submissions", "-tlsc")],
                         ids=["587-starttls", "465-implicit-tls"])
def test_authenticated_submission_delivers_and_files_a_sent_copy(server, tmp_path, mechanism,
                                                                 listener, tls_option):
    """AUTH PLAIN and AUTH LOGIN from swaks, over 587 with STARTTLS and over 465 with
    implicit TLS: the message to a local user arrives `with ESMTPSA` and a copy lands in the
    sender's Sent mailbox."""
    subject = unique_subject(f"submit {mechanism} {listener}")
    transcript = swaks(server, listener, tls_option, "--auth", mechanism,
                       "--auth-user", "alice@example.test", "--auth-password", PASSWORD,
                       "--from", "alice@example.test", "--to", "alice@example.test",
                       "--header", f"Subject: {subject}")
    assert "235 2.7.0" in transcript
    # one export of every mailbox (Maildir++: INBOX at the top, Sent in .Sent)
    maildir = tmp_path / "alice"
    server.ctl("user", "export", "alice@example.test", "--format", "maildir", "-o", str(maildir))
    inbox = [path.read_bytes() for path in (maildir / "cur").iterdir()]
    sent = [path.read_bytes() for path in (maildir / ".Sent" / "cur").iterdir()]
    delivered, = with_subject(inbox, subject)
    assert "with ESMTPSA id" in received_header(delivered)
    sent_copy, = with_subject(sent, subject)
    assert b"Received:" not in sent_copy  # what the client sent, not a delivered copy


def test_relay_attempt_is_refused_with_554_5_7_1(server):
    """swaks asking port 25 to relay to a remote domain gets 554 5.7.1 at RCPT."""
    transcript = swaks(server, "smtp", "--from", "sender@remote.test", "--to", "victim@remote.test",
                       expect_exit=SWAKS_EXIT_RCPT_FAILED)
    assert re.search(r"^<\*\* 554 5\.7\.1 ", transcript, re.MULTILINE), transcript
