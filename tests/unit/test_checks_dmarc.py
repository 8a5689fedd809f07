"""DMARC (mailserverd/checks/dmarc.py) and check.auth's verdicts, against a loopback DNS server."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from twisted.internet import defer

from mailserverd.checks import base, load_check
from mailserverd.checks.auth import AuthCheck
from mailserverd.checks.dmarc import aligned, organizational_domain, parse_record
from tests.support import mailauth
from tests.support.dnsserver import DnsServer

ZONE = {
    "bank.test": {"TXT": ["v=spf1 ip4:127.0.0.10 -all"]},
    "_dmarc.bank.test": {"TXT": ["v=DMARC1; p=reject; rua=mailto:d@bank.test"]},
    "sel._domainkey.bank.test": {"TXT": [mailauth.key_record("a")]},
    "shop.test": {"TXT": ["v=spf1 -all"]},
    "_dmarc.shop.test": {"TXT": ["v=DMARC1; p=quarantine"]},
    "parent.test": {"TXT": ["v=spf1 -all"]},
    "_dmarc.parent.test": {"TXT": ["v=DMARC1; p=none; sp=reject"]},
    "sampled.test": {"TXT": ["v=spf1 -all"]},
    "_dmarc.sampled.test": {"TXT": ["v=DMARC1; p=reject; pct=0"]},
    "strict.test": {"TXT": ["v=spf1 ip4:127.0.0.10 -all"]},
    "mail.strict.test": {"TXT": ["v=spf1 ip4:127.0.0.10 -all"]},
    "_dmarc.strict.test": {"TXT": ["v=DMARC1; p=reject; aspf=s"]},
    "_dmarc.flaky.test": "SERVFAIL",
}


@pytest.fixture(scope="module")
def dns_server():
    with DnsServer(ZONE) as server:
        yield server


def make_check(dns_server, rng=None):
    settings = SimpleNamespace(server=SimpleNamespace(hostname="mx.example.test"),
                               dns=SimpleNamespace(nameservers=(dns_server.address,)))
    return AuthCheck(base.CheckContext(settings=settings), dns_timeout="2", rng=rng or random.Random(1),
                     run=lambda fn, *args: defer.maybeDeferred(fn, *args))


def run_body(check, raw, mail_from, ip="192.0.2.50", mode="smtp", account=None):
    session = base.Session("s1", mode, ip, 40000, "mx.example.test", helo="client.test", account=account)
    envelope = base.Envelope("E1", mail_from, None)
    outcome = []
    defer.maybeDeferred(check.body, session, envelope, raw).addBoth(outcome.append)
    verdict, = outcome
    if isinstance(verdict, Exception):
        raise verdict
    return verdict, envelope


def ar(verdict) -> str:
    values = [value for name, value in verdict.headers if name == "Authentication-Results"]
    assert len(values) == 1
    return values[0]


def test_organizational_domain_uses_the_public_suffix_list():
    """RFC 7489 3.2: the registered domain under a public suffix (offline list); unknown TLDs are one label."""
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert organizational_domain("mail.sub.bank.test") == "bank.test"
    assert organizational_domain("co.uk") == "co.uk"


def test_alignment_relaxed_and_strict():
    """Relaxed alignment accepts the same organizational domain, strict only the same domain (RFC 7489 3.1)."""
    assert aligned("mail.bank.test", "bank.test", "r")
    assert not aligned("mail.bank.test", "bank.test", "s")
    assert aligned("bank.test", "BANK.test", "s")
    assert not aligned("evil.test", "bank.test", "r")


def test_record_parsing():
    """v=DMARC1 must come first; p= is required; sp defaults to p; pct is clamped (RFC 7489 6.3, 6.4)."""
    record = parse_record("v=DMARC1; p=quarantine; pct=150; adkim=s")
    assert (record.policy, record.subdomain_policy, record.pct, record.adkim, record.aspf) == (
        "quarantine", "quarantine", 100, "s", "r")
    assert parse_record("p=reject; v=DMARC1") is None
    assert parse_record("v=DMARC1; p=bogus") is None
    assert parse_record("v=DMARC1; p=bogus; rua=mailto:x@y.test").policy == "none"


def test_aligned_dkim_pass_passes_and_is_recorded(dns_server):
    """A DKIM pass for the From domain gives dmarc=pass; envelope.data["auth"] carries the results."""
    raw = mailauth.sign(mailauth.message("ceo@bank.test"), "bank.test")
    verdict, envelope = run_body(make_check(dns_server), raw, "bounce@elsewhere.test")
    assert verdict.action == "accept"
    assert "dmarc=pass (p=reject dis=none) header.from=bank.test" in ar(verdict)
    results = envelope.data["auth"]
    assert results.aligned and results.dmarc.dkim_aligned and results.from_domain == "bank.test"


def test_aligned_spf_pass_passes(dns_server):
    """An SPF pass for a MAIL FROM in the From domain is enough (RFC 7489 4.2)."""
    verdict, envelope = run_body(make_check(dns_server), mailauth.message("ceo@bank.test"), "x@bank.test",
                                 ip="127.0.0.10")
    assert "spf=pass smtp.mailfrom=x@bank.test" in ar(verdict) and "dmarc=pass" in ar(verdict)
    assert envelope.data["auth"].dmarc.spf_aligned


def test_spoofed_from_with_p_reject_is_refused(dns_server):
    """p=reject and no aligned pass: 550 5.7.1 at the end of DATA (RFC 7489 6.7)."""
    verdict, envelope = run_body(make_check(dns_server), mailauth.message("ceo@bank.test"), "x@evil.test")
    assert (verdict.action, verdict.code, verdict.enhanced) == ("reject", 550, "5.7.1")
    assert envelope.data["auth"].dmarc.result == "fail"


def test_p_quarantine_goes_to_junk(dns_server):
    """p=quarantine and no aligned pass: quarantined (Junk), with the A-R header."""
    verdict, _ = run_body(make_check(dns_server), mailauth.message("news@shop.test"), "x@evil.test")
    assert verdict.action == "quarantine"
    assert "dmarc=fail (p=quarantine dis=quarantine) header.from=shop.test" in ar(verdict)


def test_subdomain_policy_comes_from_sp(dns_server):
    """No record at the From domain: the organizational domain's sp= applies (RFC 7489 6.6.3)."""
    verdict, _ = run_body(make_check(dns_server), mailauth.message("a@mail.parent.test"), "x@evil.test")
    assert verdict.action == "reject"
    verdict, _ = run_body(make_check(dns_server), mailauth.message("a@parent.test"), "x@evil.test")
    assert verdict.action == "accept" and "dmarc=fail (p=none dis=none)" in ar(verdict)


def test_pct_zero_lowers_reject_to_quarantine(dns_server):
    """pct=0: no message is sampled, so p=reject is applied as quarantine (RFC 7489 6.6.4)."""
    verdict, _ = run_body(make_check(dns_server), mailauth.message("a@sampled.test"), "x@evil.test")
    assert verdict.action == "quarantine"
    assert "dis=quarantine" in ar(verdict)


def test_pct_uses_the_injected_random_source(dns_server):
    """pct=50 applies the policy when the random draw is under 50, else the next policy down."""
    from mailserverd.checks import dmarc
    low = dmarc.evaluate("bank.test", None, [], lambda name: [b"v=DMARC1; p=reject; pct=50"],
                         SimpleNamespace(random=lambda: 0.2))
    high = dmarc.evaluate("bank.test", None, [], lambda name: [b"v=DMARC1; p=reject; pct=50"],
                          SimpleNamespace(random=lambda: 0.7))
    assert (low.disposition, high.disposition) == ("reject", "quarantine")


def test_strict_spf_alignment(dns_server):
    """aspf=s: an SPF pass for a subdomain MAIL FROM does not align; the spoof is refused."""
    verdict, _ = run_body(make_check(dns_server), mailauth.message("a@strict.test"), "x@mail.strict.test",
                          ip="127.0.0.10")
    assert verdict.action == "reject"


def test_policy_lookup_servfail_is_temperror_and_accepted(dns_server):
    """A temporary DNS failure never refuses mail: dmarc=temperror, delivered."""
    verdict, _ = run_body(make_check(dns_server), mailauth.message("a@flaky.test"), "x@evil.test")
    assert verdict.action == "accept" and "dmarc=temperror" in ar(verdict)


def test_no_record_is_none(dns_server):
    """No DMARC record at the domain or its organizational domain: dmarc=none, accepted."""
    verdict, envelope = run_body(make_check(dns_server), mailauth.message("a@nowhere.test"), "a@nowhere.test")
    assert verdict.action == "accept" and "dmarc=none header.from=nowhere.test" in ar(verdict)
    assert not envelope.data["auth"].aligned


def test_two_from_domains_use_the_strictest(dns_server):
    """A second From: cannot hide a spoofed bank.test (RFC 7489 6.6.1): the strictest policy applies."""
    raw = b"From: a@nowhere.test\r\n" + mailauth.message("ceo@bank.test")
    verdict, _ = run_body(make_check(dns_server), raw, "x@evil.test")
    assert verdict.action == "reject"


def test_submission_and_authenticated_sessions_are_not_checked(dns_server):
    """Authenticated submission is not checked: no verdict, no header."""
    check = make_check(dns_server)
    verdict, _ = run_body(check, mailauth.message("ceo@bank.test"), "x@evil.test", mode="submission")
    assert verdict is None
    verdict, _ = run_body(check, mailauth.message("ceo@bank.test"), "x@evil.test", account=object())
    assert verdict is None


def test_check_auth_is_registered_by_name():
    """"check.auth" loads from the registry and validates its options."""
    assert isinstance(load_check("check.auth", dns_timeout="3"), AuthCheck)
    with pytest.raises(ValueError):
        load_check("check.auth", dns_timeout="0")


def test_config_file_options_reach_check_auth(tmp_path):
    """[check.auth] keys in the configuration file configure the check; [dns] nameservers is its resolver;
    a bad value stops start-up with one line."""
    from mailserverd import config
    from mailserverd.service import build_checks

    path = tmp_path / "m.conf"
    path.write_text("[server]\ndata_dir = data\nhostname = mx.example.test\n[dns]\nnameservers = 127.0.0.1:5353\n"
                    "[checks]\nchain = check.hops, check.auth\n"
                    "[check.auth]\nbudget = 3\narc_trusted = lists.test\n")
    check = build_checks(config.load_settings(str(path)), None, None).checks[1]
    assert (check.budget, check.arc_trusted, check.authserv_id) == (3.0, {"lists.test"}, "mx.example.test")
    assert [(ns.address, ns.port) for ns in check.resolver.resolver.nameservers] == [("127.0.0.1", 5353)]
    path.write_text(path.read_text().replace("budget = 3", "budget = never"))
    with pytest.raises(config.ConfigError):
        build_checks(config.load_settings(str(path)), None, None)


def test_from_domains_reads_every_from_field_and_only_those():
    """Every From field (any case, space before the colon, folded) counts, in order;
    X-From, a folded continuation and the body do not (RFC 7489 6.6.1)."""
    from mailserverd.checks import auth
    message = (b"From: a@one.test\r\nX-From: x@no.test\r\nSubject: s\r\n from: y@no.test\r\n"
               b"FROM : B@Two.test\r\nCc: c@no.test\r\nfrom:\r\n c@three.test,\r\n\td@one.test\r\n"
               b"\r\nFrom: z@no.test\r\n")
    assert auth.from_domains(message) == ["one.test", "two.test", "three.test"]
    header = message[:message.index(b"\r\n\r\n") + 2]
    assert auth.from_domains(message, header) == ["one.test", "two.test", "three.test"]


def test_cached_answers_are_evaluated_in_line_and_misses_in_the_pool(dns_server):
    """Once the SPF and DMARC answers a message needs are cached, check.auth answers
    synchronously (no pool) with the same verdict and header; a message needing an
    uncached answer still goes to the pool, and its speculative pass asked no server."""
    hops = []
    check = make_check(dns_server)
    check._defer = lambda fn, *args: hops.append(fn.__name__) or defer.maybeDeferred(fn, *args)
    raw = mailauth.message("news@shop.test")
    first, _ = run_body(check, raw, "x@evil.test")
    assert hops == ["evaluate"]
    session = base.Session("s1", "smtp", "192.0.2.50", 40000, "mx.example.test", helo="client.test")
    envelope = base.Envelope("E1", "x@evil.test", None)
    again = check.body(session, envelope, raw)
    assert not isinstance(again, defer.Deferred) and hops == ["evaluate"]
    assert again == first and envelope.data["auth"].dmarc.result == "fail"
    queries = check.resolver.queries
    view = check.resolver.cache_only()
    with pytest.raises(Exception):
        view.txt("_dmarc.unseen.test")
    assert view.missed and not check.resolver.missed and check.resolver.queries == queries
    run_body(check, mailauth.message("a@bank.test"), "x@evil.test")
    assert hops == ["evaluate", "evaluate"]
