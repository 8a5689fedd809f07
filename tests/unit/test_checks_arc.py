"""ARC chain validation (mailserverd/checks/arc.py, RFC 8617) against a loopback DNS server."""

from __future__ import annotations

import pytest

from mailserverd.checks import auth
from mailserverd.checks.arc import verify_chain
from tests.support import mailauth
from tests.support.dnsserver import DnsServer


@pytest.fixture(scope="module")
def dns_server():
    zone = {
        "sel._domainkey.example.com": {"TXT": [mailauth.key_record("a")]},
        "_dmarc.example.com": {"TXT": ["v=DMARC1; p=reject"]},
        "arc._domainkey.lists.test": {"TXT": [mailauth.key_record("arc")]},
        "arc._domainkey.relay.test": {"TXT": [mailauth.key_record("arc")]},
        "arc._domainkey.flaky.test": "SERVFAIL",
    }
    with DnsServer(zone) as server:
        yield server


@pytest.fixture
def resolver(dns_server):
    return mailauth.resolver(dns_server)


def original() -> bytes:
    return mailauth.sign(mailauth.message("ceo@example.com", subject="Report"), "example.com")


def test_unsealed_message_is_none(resolver):
    """A message without ARC sets: arc=none."""
    assert verify_chain(original(), resolver.dkim_txt).result == "none"


def test_valid_chain_passes(resolver):
    """One ARC set from a forwarder whose key is published: arc=pass, the sealer's domain named."""
    result = verify_chain(mailauth.arc_seal(original(), "lists.test", "mx.lists.test"), resolver.dkim_txt)
    assert (result.result, result.instances, result.domain) == ("pass", 1, "lists.test")


def test_two_hop_chain_passes(resolver):
    """Two sealers in turn (i=1, i=2) validate (RFC 8617 5.2)."""
    raw = mailauth.arc_seal(original(), "lists.test", "mx.lists.test")
    raw = mailauth.arc_seal(raw, "relay.test", "mx.relay.test", results="arc=pass")
    result = verify_chain(raw, resolver.dkim_txt)
    assert (result.result, result.instances, result.domain) == ("pass", 2, "relay.test")


def test_body_changed_after_sealing_fails(resolver):
    """A change after the newest seal breaks its ARC-Message-Signature: arc=fail."""
    raw = mailauth.arc_seal(original(), "lists.test", "mx.lists.test")
    assert verify_chain(raw.replace(b"Hi there.", b"Hi there!"), resolver.dkim_txt).result == "fail"


def test_tampered_seal_fails(resolver):
    """An ARC-Seal whose cv= was rewritten no longer verifies: arc=fail."""
    raw = mailauth.arc_seal(original(), "lists.test", "mx.lists.test")
    raw = raw.replace(b"cv=none", b"cv=pass", 1)
    assert verify_chain(raw, resolver.dkim_txt).result == "fail"


def test_unknown_sealer_key_fails(resolver):
    """A sealer without a published key cannot be validated: arc=fail."""
    raw = mailauth.arc_seal(original(), "nokey.test", "mx.nokey.test")
    assert verify_chain(raw, resolver.dkim_txt).result == "fail"


def test_sealer_key_servfail_is_temperror(resolver):
    """A SERVFAIL on the sealer's key is temperror, not fail."""
    raw = mailauth.arc_seal(original(), "flaky.test", "mx.flaky.test")
    assert verify_chain(raw, resolver.dkim_txt).result == "temperror"


def test_forwarded_message_authentication_results(resolver):
    """Forwarded with an edited subject: DKIM fails, ARC passes, both in our one A-R field."""
    raw = original().replace(b"Subject: Report", b"Subject: [list] Report")
    raw = mailauth.arc_seal(raw, "lists.test", "mx.lists.test")
    found = auth.evaluate(resolver, "127.0.0.1", "mx.lists.test", "bounce@lists.test", raw)
    value = auth.header_value("mx.example.test", found)
    assert "dkim=fail header.d=example.com" in value
    assert "arc=pass (i=1)" in value
    assert found.arc.result == "pass" and found.dmarc.result == "fail"


def _check(dns_server, trusted=""):
    from types import SimpleNamespace

    from twisted.internet import defer

    from mailserverd.checks import base
    settings = SimpleNamespace(server=SimpleNamespace(hostname="mx.example.test"),
                               dns=SimpleNamespace(nameservers=(dns_server.address,)))
    return auth.AuthCheck(base.CheckContext(settings=settings), arc_trusted=trusted,
                          run=lambda fn, *args: defer.maybeDeferred(fn, *args))


def _body(check, raw):
    from mailserverd.checks import base
    session = base.Session("s", "smtp", "192.0.2.9", 1, "mx.example.test", helo="mx.lists.test")
    envelope = base.Envelope("E", "bounce@lists.test", None)
    outcome = []
    check.body(session, envelope, raw).addBoth(outcome.append)
    return outcome[0]


def test_trusted_arc_sealer_lifts_a_dmarc_reject(dns_server):
    """A list that broke example.com's DKIM (p=reject) but sealed a valid ARC chain: refused unless the
    sealer is in arc_trusted, then delivered with the override in the A-R comment (RFC 7489 7.2)."""
    raw = original().replace(b"Subject: Report", b"Subject: [list] Report")
    raw = mailauth.arc_seal(raw, "lists.test", "mx.lists.test")
    assert _body(_check(dns_server), raw).rejected
    verdict = _body(_check(dns_server, "other.test, Lists.Test"), raw)
    assert verdict.action == "accept"
    value = dict(verdict.headers)["Authentication-Results"]
    assert "dmarc=fail (p=reject dis=none override=trusted_forwarder lists.test)" in value
    broken = raw.replace(b"Hi there.", b"Hi there!")  # the chain no longer validates: no override
    assert _body(_check(dns_server, "lists.test"), broken).rejected
