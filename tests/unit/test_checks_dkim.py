"""DKIM verification of every signature (mailserverd/checks/dkimverify.py) against a loopback DNS server."""

from __future__ import annotations

import pytest

from mailserverd.checks import auth
from mailserverd.checks.dkimverify import verify_all
from tests.support import mailauth
from tests.support.dnsserver import DnsServer


@pytest.fixture(scope="module")
def dns_server():
    zone = {
        "sel._domainkey.example.com": {"TXT": [mailauth.key_record("a")]},
        "other._domainkey.lists.test": {"TXT": [mailauth.key_record("b")]},
        "bad._domainkey.example.com": {"TXT": ["v=DKIM1; k=rsa; p=notbase64!!"]},
        "sel._domainkey.flaky.test": "SERVFAIL",
    }
    with DnsServer(zone) as server:
        yield server


@pytest.fixture
def resolver(dns_server):
    return mailauth.resolver(dns_server)


def results(resolver, raw):
    return [(item.result, item.domain, item.selector) for item in verify_all(raw, resolver.dkim_txt)]


def test_valid_signature_passes(resolver):
    """A message signed with the key published at sel._domainkey.example.com verifies."""
    raw = mailauth.sign(mailauth.message(), "example.com")
    assert results(resolver, raw) == [("pass", "example.com", "sel")]


def test_tampered_body_fails(resolver):
    """A changed body breaks the body hash: dkim=fail (RFC 6376 3.7)."""
    raw = mailauth.sign(mailauth.message(body="Pay 10 EUR.\r\n"), "example.com")
    assert results(resolver, raw.replace(b"10 EUR", b"99 EUR")) == [("fail", "example.com", "sel")]


def test_tampered_signed_header_fails(resolver):
    """A changed signed header field (Subject) breaks the signature: dkim=fail."""
    raw = mailauth.sign(mailauth.message(subject="Invoice"), "example.com")
    assert results(resolver, raw.replace(b"Subject: Invoice", b"Subject: Urgent")) == [
        ("fail", "example.com", "sel")]


def test_every_signature_is_verified(resolver):
    """Two signatures, the inner one broken by a later change: one pass and one fail, in header order."""
    raw = mailauth.sign(mailauth.message(subject="Invoice"), "example.com")
    raw = raw.replace(b"Subject: Invoice", b"Subject: [list] Invoice")  # the list edits, then signs
    raw = mailauth.sign(raw, "lists.test", selector="other", label="b")
    assert results(resolver, raw) == [("pass", "lists.test", "other"), ("fail", "example.com", "sel")]


def test_missing_and_unusable_keys_are_permerror(resolver):
    """No key record, or one that does not parse, is permerror (RFC 6376 6.1.2)."""
    raw = mailauth.sign(mailauth.message(), "example.com", selector="gone")
    assert results(resolver, raw) == [("permerror", "example.com", "gone")]
    raw = mailauth.sign(mailauth.message(), "example.com", selector="bad")
    assert results(resolver, raw) == [("permerror", "example.com", "bad")]


def test_key_lookup_servfail_is_temperror(resolver):
    """A SERVFAIL for the key is temperror (RFC 6376 6.1.2 TEMPFAIL), not fail."""
    raw = mailauth.sign(mailauth.message(from_address="a@flaky.test"), "flaky.test")
    assert results(resolver, raw) == [("temperror", "flaky.test", "sel")]


def test_malformed_signature_is_neutral(resolver):
    """A DKIM-Signature missing required tags is reported (neutral), not dropped (RFC 8601 2.7.1)."""
    raw = b"DKIM-Signature: v=1; d=example.com; s=sel\r\n" + mailauth.message()
    assert results(resolver, raw) == [("neutral", "example.com", "sel")]


def test_no_signature_no_results(resolver):
    """An unsigned message has no DKIM results (A-R says dkim=none)."""
    assert verify_all(mailauth.message(), resolver.dkim_txt) == []


def test_authentication_results_has_one_dkim_entry_per_signature(resolver):
    """A-R lists dkim= for each signature with header.d, header.s and the first 8 chars of b= (RFC 6008)."""
    raw = mailauth.sign(mailauth.message(subject="Invoice"), "example.com")
    raw = mailauth.sign(raw.replace(b"Subject: Invoice", b"Subject: [x] Invoice"), "lists.test", "other", "b")
    found = auth.evaluate(resolver, "127.0.0.1", "client.test", "a@lists.test", raw)
    value = auth.header_value("mx.example.test", found)
    entries = [entry for entry in value.split("; ") if entry.startswith("dkim=")]
    assert len(entries) == 2
    assert entries[0].startswith("dkim=pass header.d=lists.test ") and "header.s=other" in entries[0]
    assert entries[1].startswith("dkim=fail header.d=example.com ") and "header.s=sel" in entries[1]
    b_value = found.dkim[0].b
    assert len(b_value) == 8 and b_value in raw.decode().replace("\r\n\t", "").replace(" ", "")
    assert found.dkim_pass_domains() == {"lists.test"}


def test_hostile_signature_fields_never_raise(resolver):
    """Garbage in DKIM-Signature and ARC fields gives results (neutral/fail/permerror), never an exception."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    from mailserverd.checks.arc import verify_chain

    tags = st.sampled_from(["v=1", "a=rsa-sha256", "a=ed25519-sha256", "a=x", "d=example.com", "s=sel",
                            "h=from", "h=", "bh=", "bh=!!", "b=AAAA", "b=%%%", "c=bogus/x", "l=-1", "l=x",
                            "x=1", "t=9999999999", "i=@other.test", "q=dns/txt", "cv=pass", "i=0", "i=99"])

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(tags, max_size=10), st.sampled_from([b"DKIM-Signature", b"ARC-Seal",
                                                         b"ARC-Message-Signature"]))
    def run(parts, name):
        raw = name + b": " + "; ".join(parts).encode() + b"\r\n" + mailauth.message()
        for result in verify_all(raw, resolver.dkim_txt):
            assert result.result in ("pass", "fail", "neutral", "permerror", "temperror")
        assert verify_chain(raw, resolver.dkim_txt).result in ("none", "pass", "fail", "temperror")

    run()


def test_our_own_outbound_signatures_verify(tmp_path):
    """Mail signed by outbound/dkim.py (Ed25519 and RSA-2048 keys from `dkim keygen`) verifies here:
    two dkim=pass results, the Ed25519 one needing PyNaCl (RFC 8463)."""
    from mailserverd.outbound.dkim import DkimSigner, keygen

    keys = keygen(str(tmp_path), "example.org")
    zone = {f"{key.record_name}.example.org": {"TXT": [key.public_txt]} for key in keys}
    signed = DkimSigner(str(tmp_path)).sign(mailauth.message("alice@example.org"), "example.org")
    with DnsServer(zone) as server:
        found = verify_all(signed, mailauth.resolver(server).dkim_txt)
    assert sorted((item.result, item.algorithm) for item in found) == [
        ("pass", "ed25519-sha256"), ("pass", "rsa-sha256")]


def test_unsigned_message_is_not_parsed_by_dkimpy(monkeypatch):
    """A message with no DKIM-Signature anywhere has no results, without dkimpy's parse
    (issue 10: most mail is unsigned); a signature field in any case still is parsed."""
    import dkim

    def refuse(*args, **kwargs):
        raise AssertionError("dkimpy parsed an unsigned message")
    monkeypatch.setattr(dkim, "DKIM", refuse)
    assert verify_all(b"From: a@example.test\r\nSubject: hi\r\n\r\nbody\r\n", lambda *a, **k: None) == []
    results = verify_all(b"dkim-SIGNATURE: v=1; d=example.test\r\n\r\nbody\r\n", lambda *a, **k: None)
    assert [result.result for result in results] == ["neutral"]  # the parse was attempted (and refused here)
