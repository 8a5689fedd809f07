"""Submission (587 STARTTLS, 465 implicit TLS) against the real daemon: AUTH, sender
ownership, local delivery, the Sent copy, remote recipients."""

from __future__ import annotations

import mailbox
import os
import smtplib
import ssl

import pytest

from tests.support.daemon import PASSWORD

SMTP_LISTENERS = ("smtp", "submission", "submissions")
MESSAGE = b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: lunch\r\n\r\nNoon?\r\n"


@pytest.fixture
def server(mailserver_factory):
    # No auth failure penalty, so a wrong-password test stays fast; a DNS server that does not
    # answer, so remote recipients stay queued (deferred) instead of bouncing off real DNS.
    return mailserver_factory(listeners=SMTP_LISTENERS, extra_config={
        "auth": {"penalty_initial": "0s"}, "dns": {"nameservers": "127.0.0.1:9"}})


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the daemon's self-signed certificate
    return context


def submit(server, listener="submission") -> smtplib.SMTP:
    if listener == "submissions":
        client = smtplib.SMTP_SSL(*server.address(listener), timeout=10, context=tls_context())
    else:
        client = smtplib.SMTP(*server.address(listener), timeout=10)
        client.starttls(context=tls_context())
    client.login("alice@example.test", PASSWORD)
    return client


def messages(server, tmp_path, address, name="INBOX"):
    out = tmp_path / f"{address}-{name}.mbox"
    server.ctl("user", "export", address, "--mailbox", name, "-o", str(out))
    return [message.as_bytes() for message in mailbox.mbox(str(out))]


def test_starttls_auth_submission_delivers_locally_and_files_a_seen_sent_copy(server, tmp_path):
    """Over 587 with STARTTLS and AUTH, mail to a local user is delivered (ESMTPSA) and a
    \\Seen copy of what was sent lands in the sender's Sent mailbox."""
    with submit(server) as client:
        assert client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE) == {}
    delivered, = messages(server, tmp_path, "bob@example.test")
    assert b"with ESMTPSA id" in delivered and b"Subject: lunch" in delivered
    maildir = tmp_path / "sent"
    server.ctl("user", "export", "alice@example.test", "--mailbox", "Sent", "--format", "maildir", "-o", maildir)
    folder = maildir / ".Sent" / "cur"  # Maildir++ layout: mailboxes other than INBOX are .Name
    sent, = os.listdir(folder)
    assert sent.endswith(":2,S")  # the Maildir info for \Seen
    assert (folder / sent).read_bytes() == MESSAGE.replace(b"\r\n", b"\n")


def test_implicit_tls_submission_works(server, tmp_path):
    """Port 465 (submissions) speaks TLS from the first byte and accepts AUTH at once."""
    with submit(server, "submissions") as client:
        assert "starttls" not in client.esmtp_features
        client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
    assert len(messages(server, tmp_path, "bob@example.test")) == 1


def test_mail_before_auth_gets_530(server):
    """MAIL FROM without AUTH on submission gets 530 5.7.0."""
    with smtplib.SMTP(*server.address("submission"), timeout=10) as client:
        client.starttls(context=tls_context())
        client.ehlo()
        assert client.mail("alice@example.test")[0] == 530


def test_wrong_password_gets_535(server):
    """A wrong password gets 535 5.7.8."""
    with smtplib.SMTP(*server.address("submission"), timeout=10) as client:
        client.starttls(context=tls_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
            client.login("alice@example.test", "wrong")
    assert caught.value.smtp_code == 535 and caught.value.smtp_error.startswith(b"5.7.8")


def test_envelope_sender_spoofing_is_refused(server):
    """An authenticated user may not use another user's address as MAIL FROM: 550 5.7.1."""
    with submit(server) as client:
        code, text = client.mail("bob@example.test")
    assert code == 550 and text.startswith(b"5.7.1")


def test_from_header_spoofing_is_refused_and_nothing_is_stored(server, tmp_path):
    """A From: header with another user's address gets 550 5.7.1 after DATA; nothing is delivered."""
    spoof = MESSAGE.replace(b"From: Alice <alice@example.test>", b"From: Bob <bob@example.test>")
    with submit(server) as client:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail("alice@example.test", ["bob@example.test"], spoof)
    assert caught.value.smtp_code == 550 and caught.value.smtp_error.startswith(b"5.7.1")
    assert messages(server, tmp_path, "bob@example.test") == []


def test_alias_owned_by_the_user_may_be_used_as_sender(server, tmp_path):
    """An alias that delivers only to the account counts as its own address (any case)."""
    server.ctl("alias", "add", "sales@example.test", "alice@example.test")
    owned = MESSAGE.replace(b"Alice <alice@example.test>", b"Sales <Sales@Example.Test>")
    with submit(server) as client:
        assert client.sendmail("SALES@example.test", ["bob@example.test"], owned) == {}


def test_remote_recipient_is_queued_before_the_250(server, tmp_path):
    """A remote recipient is accepted and durably queued (with its NOTIFY) before the 250, whose
    "queued as" id is the queue id; the local recipient gets the message at once."""
    with submit(server) as client:
        client.ehlo()
        client.mail("alice@example.test")
        assert client.rcpt("friend@remote.test", ["NOTIFY=FAILURE"])[0] == 250
        assert client.rcpt("bob@example.test")[0] == 250
        code, text = client.data(MESSAGE)
    assert code == 250
    queue_id = text.decode().rsplit(" ", 1)[1]
    shown = server.ctl("queue", "show", queue_id).stdout
    assert "sender: <alice@example.test>" in shown and "<friend@remote.test>" in shown
    assert "notify=FAILURE" in shown and "Subject: lunch" in shown
    assert len(messages(server, tmp_path, "bob@example.test")) == 1
