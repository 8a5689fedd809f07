"""check.auth in the real daemon: DMARC verdicts over smtplib and the stored Authentication-Results.

The daemon resolves through a loopback DNS server ([dns] nameservers) that
publishes SPF, DKIM and DMARC records for the sending domains; messages are
signed with dkimpy using keys made here.
"""

from __future__ import annotations

import mailbox
import smtplib

import pytest

from tests.support import mailauth
from tests.support.daemon import MailServer
from tests.support.dnsserver import DnsServer

ZONE = {
    "bank.test": {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]},
    "_dmarc.bank.test": {"TXT": ["v=DMARC1; p=reject"]},
    "sel._domainkey.bank.test": {"TXT": [mailauth.key_record("a")]},
    "shop.test": {"TXT": ["v=spf1 -all"]},
    "_dmarc.shop.test": {"TXT": ["v=DMARC1; p=quarantine"]},
    "friend.test": {"TXT": ["v=spf1 ip4:127.0.0.0/8 -all"]},
    "_dmarc.friend.test": {"TXT": ["v=DMARC1; p=none"]},
    "arc._domainkey.lists.test": {"TXT": [mailauth.key_record("arc")]},
    "flaky.test": "SERVFAIL",
    "_dmarc.flaky.test": "SERVFAIL",
}


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """One daemon (smtp listener only) with check.auth, resolving through the test DNS server."""
    with DnsServer(ZONE) as dns_server:
        daemon = MailServer(tmp_path_factory.mktemp("authresults"), ("smtp",), {
            "dns": {"nameservers": dns_server.nameservers},
            "checks": {"chain": "check.hops, check.auth"},
        })
        daemon.copy_data_from(request.getfixturevalue("mailserver_seed_data"))
        daemon.start()
        try:
            yield daemon
        finally:
            daemon.stop()
            print(daemon.log_tail(100))


def send(server, raw: bytes, mail_from: str, to: str = "alice@example.test", helo: str = "client.test"):
    with smtplib.SMTP(server.host, server.ports["smtp"], local_hostname=helo, timeout=20) as client:
        return client.sendmail(mail_from, [to], raw)


def stored(server, tmp_path, name="INBOX", address="alice@example.test"):
    out = tmp_path / f"{name}.mbox"
    server.ctl("user", "export", address, "--mailbox", name, "-o", str(out))
    return [message.as_bytes() for message in mailbox.mbox(str(out))]


def find(messages, subject: str) -> bytes:
    matches = [raw for raw in messages if f"Subject: {subject}".encode() in raw]
    assert len(matches) == 1, f"{len(matches)} messages with subject {subject!r}"
    return matches[0]


def header_fields(raw: bytes, name: bytes) -> list[bytes]:
    head = raw.split(b"\n\n", 1)[0].replace(b"\n\t", b" ").replace(b"\n ", b" ")
    return [line for line in head.split(b"\n") if line.lower().startswith(name.lower() + b":")]


def test_signed_message_passes_with_one_authentication_results(server, tmp_path):
    """A DKIM-signed message from bank.test is delivered with ONE A-R: dkim=pass, dmarc=pass."""
    raw = mailauth.sign(mailauth.message("ceo@bank.test", subject="Signed"), "bank.test")
    assert send(server, raw, "ceo@bank.test") == {}
    message = find(stored(server, tmp_path), "Signed")
    fields = header_fields(message, b"Authentication-Results")
    assert len(fields) == 1
    field = fields[0].decode()
    assert field.startswith("Authentication-Results: mx.example.test;")
    assert "spf=fail smtp.mailfrom=ceo@bank.test" in field  # 127.0.0.1 is not bank.test's
    assert "dkim=pass header.d=bank.test" in field and "header.s=sel" in field
    assert "dmarc=pass (p=reject dis=none) header.from=bank.test" in field and "arc=none" in field


def test_spoofed_from_with_p_reject_is_refused_550(server):
    """From: bank.test without its signature or SPF: 550 5.7.1 at the end of DATA (RFC 7489 6.7)."""
    raw = mailauth.message("ceo@bank.test", subject="Spoof")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(server, raw, "attacker@evil.test")
    assert refused.value.smtp_code == 550 and refused.value.smtp_error.startswith(b"5.7.1")


def test_tampered_signed_body_is_refused(server):
    """A bank.test message whose body changed after signing fails DKIM and so DMARC: refused."""
    raw = mailauth.sign(mailauth.message("ceo@bank.test", body="Pay 10 EUR.\r\n"), "bank.test")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(server, raw.replace(b"10 EUR", b"99 EUR"), "ceo@bank.test")
    assert refused.value.smtp_code == 550


def test_p_quarantine_lands_in_junk(server, tmp_path):
    """From: shop.test (p=quarantine) unauthenticated: delivered to Junk, not INBOX."""
    raw = mailauth.message("news@shop.test", subject="Quarantined")
    assert send(server, raw, "news@shop.test") == {}
    junk = find(stored(server, tmp_path, "Junk"), "Quarantined")
    assert b"dmarc=fail (p=quarantine dis=quarantine) header.from=shop.test" in junk.replace(b"\n\t", b" ")
    assert not [raw for raw in stored(server, tmp_path) if b"Subject: Quarantined" in raw]


def test_forged_authentication_results_is_removed(server, tmp_path):
    """An incoming A-R claiming mx.example.test is dropped; another ADMD's A-R stays (RFC 8601 5)."""
    raw = (b"Authentication-Results: mx.example.test; dkim=pass header.d=bank.test; dmarc=pass\r\n"
           b"Authentication-Results: relay.other.test; spf=pass smtp.mailfrom=x@friend.test\r\n"
           + mailauth.message("x@friend.test", subject="Forged AR"))
    assert send(server, raw, "x@friend.test") == {}
    message = find(stored(server, tmp_path), "Forged AR")
    fields = [field.decode() for field in header_fields(message, b"Authentication-Results")]
    assert len(fields) == 2
    assert fields[0].startswith("Authentication-Results: mx.example.test;")
    assert "spf=pass smtp.mailfrom=x@friend.test" in fields[0] and "dmarc=pass" in fields[0]
    assert "dkim=none" in fields[0]  # ours, not the forged dkim=pass
    assert fields[1].startswith("Authentication-Results: relay.other.test;")


def test_forwarded_message_with_arc_chain(server, tmp_path):
    """A list-forwarded message: DKIM broken by the list, ARC intact: arc=pass in our A-R (RFC 8617)."""
    raw = mailauth.sign(mailauth.message("x@friend.test", subject="Weekly"), "friend.test", label="a")
    raw = raw.replace(b"Subject: Weekly", b"Subject: [list] Weekly")
    raw = mailauth.arc_seal(raw, "lists.test", "mx.lists.test")
    assert send(server, raw, "bounce@lists.test", helo="mx.lists.test") == {}
    message = find(stored(server, tmp_path), r"[list] Weekly")
    field = header_fields(message, b"Authentication-Results")[0].decode()
    assert "arc=pass (i=1)" in field and "dkim=permerror header.d=friend.test" in field


def test_dns_failure_never_refuses_mail(server, tmp_path):
    """SERVFAIL for the sender's SPF and DMARC records: delivered, spf=temperror dmarc=temperror (RFC 7208 2.6.6)."""
    raw = mailauth.message("x@flaky.test", subject="Flaky DNS")
    assert send(server, raw, "x@flaky.test") == {}
    field = header_fields(find(stored(server, tmp_path), "Flaky DNS"), b"Authentication-Results")[0].decode()
    assert "spf=temperror smtp.mailfrom=x@flaky.test" in field and "dmarc=temperror" in field
