"""SPF (mailserverd/checks/spf.py) against a real DNS server on loopback, and pyspf's RFC 7208 suite."""

from __future__ import annotations

import pathlib
import socket

import pytest

from mailserverd.checks import spf
from mailserverd.checks.dns import CachingResolver, TempDnsError
from tests.support.dnsserver import DnsServer

ZONE = {
    "pass.test": {"TXT": ["v=spf1 ip4:127.0.0.0/24 -all"]},
    "soft.test": {"TXT": ["v=spf1 ~all"]},
    "mx.test": {"TXT": ["v=spf1 mx -all"], "MX": [(10, "mail.mx.test")]},
    "mail.mx.test": {"A": ["127.0.0.9"]},
    "include.test": {"TXT": ["v=spf1 include:pass.test -all"]},
    "helo.test": {"TXT": ["v=spf1 a -all"], "A": ["127.0.0.5"]},
    "split.test": {"TXT": ["v=spf1 " + " ".join(f"ip4:10.0.{i}.1" for i in range(60)) + " ip4:127.0.0.7 -all"]},
    "broken-include.test": {"TXT": ["v=spf1 include:servfail.test -all"]},
    "servfail.test": "SERVFAIL",
    "twice.test": {"TXT": ["v=spf1 -all", "v=spf1 +all"]},
    # RFC 7208 4.6.4: eleven DNS-querying terms
    "limit.test": {"TXT": ["v=spf1 " + " ".join(f"a:h{i}.limit.test" for i in range(11)) + " -all"]},
    **{f"h{i}.limit.test": {"A": ["192.0.2.1"]} for i in range(11)},
    # RFC 7208 4.6.4: more than two void lookups
    "void.test": {"TXT": ["v=spf1 a:n1.void.test a:n2.void.test a:n3.void.test ip4:127.0.0.1 -all"]},
    "loop.test": {"TXT": ["v=spf1 include:loop.test -all"]},
}


@pytest.fixture(scope="module")
def dns_server():
    with DnsServer(ZONE) as server:
        yield server


@pytest.fixture
def resolver(dns_server):
    return CachingResolver([dns_server.address], timeout=2.0)


def check(resolver, ip, sender, helo="client.test"):
    return spf.check_mail_from(ip, sender, helo, resolver.spf_lookup)


def test_pass_fail_and_softfail(resolver):
    """ip4 match passes, -all fails, ~all softfails (RFC 7208 2.6, 5.6)."""
    assert check(resolver, "127.0.0.3", "a@pass.test").result == "pass"
    assert check(resolver, "192.0.2.3", "a@pass.test").result == "fail"
    assert check(resolver, "192.0.2.3", "a@soft.test").result == "softfail"


def test_mx_include_and_long_txt_records(resolver):
    """mx and include: resolve through our resolver; a record over 255 octets is joined (RFC 7208 3.3)."""
    assert check(resolver, "127.0.0.9", "a@mx.test").result == "pass"
    assert check(resolver, "127.0.0.2", "a@include.test").result == "pass"
    assert check(resolver, "127.0.0.7", "a@split.test").result == "pass"


def test_no_record_is_none_and_the_domain_is_kept(resolver):
    """A domain without an SPF record gives none (RFC 7208 4.5); the result names the domain checked."""
    result = check(resolver, "127.0.0.1", "someone@nowhere.test")
    assert (result.result, result.domain, result.identity) == ("none", "nowhere.test", "mailfrom")


def test_two_records_are_a_permerror(resolver):
    """Two v=spf1 records for one domain are a permerror (RFC 7208 4.5)."""
    assert check(resolver, "127.0.0.1", "a@twice.test").result == "permerror"


def test_helo_identity_and_null_reverse_path(resolver):
    """HELO is checked as postmaster@HELO (RFC 7208 2.3); so is MAIL FROM:<> (2.4); literals give none."""
    helo = spf.check_helo("127.0.0.5", "helo.test", resolver.spf_lookup)
    assert (helo.result, helo.identity, helo.sender) == ("pass", "helo", "postmaster@helo.test")
    assert spf.check_mail_from("127.0.0.6", "", "helo.test", resolver.spf_lookup).result == "fail"
    assert spf.check_helo("127.0.0.5", "[127.0.0.5]", resolver.spf_lookup).result == "none"


def test_servfail_is_a_temperror(resolver):
    """A SERVFAIL while evaluating (here inside include:) is temperror, never fail (RFC 7208 2.6.6, 5.2)."""
    assert check(resolver, "127.0.0.1", "a@servfail.test").result == "temperror"
    assert check(resolver, "127.0.0.1", "a@broken-include.test").result == "temperror"


def test_unreachable_name_server_is_a_temperror_quickly():
    """A resolver pointed at a port nobody answers gives temperror after its timeout, not an exception."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()  # bound but never read: queries go unanswered
        resolver = CachingResolver([dead], timeout=0.3)
        result = check(resolver, "127.0.0.1", "a@pass.test")
    assert result.result == "temperror"


def test_more_than_ten_lookups_is_a_permerror(resolver):
    """RFC 7208 4.6.4: the 11th DNS-querying term makes the result permerror."""
    assert check(resolver, "192.0.2.99", "a@limit.test").result == "permerror"


def test_more_than_two_void_lookups_is_a_permerror(resolver):
    """RFC 7208 4.6.4: a third lookup answering NXDOMAIN/no records is a permerror."""
    assert check(resolver, "127.0.0.1", "a@void.test").result == "permerror"


def test_include_loop_is_a_permerror(resolver):
    """A record that includes itself ends in permerror (lookup limit), not a hang."""
    assert check(resolver, "127.0.0.1", "a@loop.test").result == "permerror"


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def seconds(self):
        return self.now


def test_answers_are_cached_for_their_ttl(dns_server):
    """A second check within the TTL (60 s here) asks the server nothing; after it, it asks again."""
    clock = FakeClock()
    resolver = CachingResolver([dns_server.address], timeout=2.0, clock=clock)
    check(resolver, "127.0.0.9", "a@mx.test")
    asked = resolver.queries
    assert asked >= 2
    check(resolver, "127.0.0.9", "a@mx.test")
    assert resolver.queries == asked
    clock.now += 61
    check(resolver, "127.0.0.9", "a@mx.test")
    assert resolver.queries == 2 * asked


def test_temporary_failures_are_cached_briefly(dns_server):
    """A SERVFAIL is remembered for TEMP_ERROR_TTL (RFC 2308 7.1) and raised as TempDnsError, not NXDOMAIN."""
    clock = FakeClock()
    resolver = CachingResolver([dns_server.address], timeout=2.0, clock=clock)
    with pytest.raises(TempDnsError):
        resolver.query("servfail.test", "TXT")
    asked = resolver.queries
    with pytest.raises(TempDnsError):
        resolver.query("servfail.test", "TXT")
    assert resolver.queries == asked
    assert resolver.query("nowhere.test", "TXT").nxdomain


# -- pyspf's RFC 7208 test suite (tests/data/rfc7208-tests.yml, BSD licence beside it) ---------

SUITE = pathlib.Path(__file__).parent.parent / "data" / "rfc7208-tests.yml"


def _suite_cases():
    yaml = pytest.importorskip("yaml", reason="PyYAML (the test extra) reads the RFC 7208 suite")
    cases = []
    with open(SUITE, "rb") as handle:
        for scenario in yaml.safe_load_all(handle):
            zone = {}
            for name, records in scenario["zonedata"].items():
                entries, generated, has_txt = [], [], False
                for record in records:
                    if record == "TIMEOUT":
                        entries.append("TIMEOUT")
                        continue
                    (rtype, value), = record.items()
                    if rtype in ("TXT", "SPF") and isinstance(value, str):
                        value = [value]
                    if rtype == "TXT":
                        has_txt = True
                    elif rtype == "SPF":
                        generated.append(("TXT", value))
                    if value != ["NONE"]:
                        entries.append((rtype, value))
                if not has_txt:
                    entries += generated
                zone[name.lower()] = entries
            for test_id, test in scenario["tests"].items():
                cases.append(pytest.param(zone, test, id=test_id))
    return cases


def _zone_lookup(zone):
    """pyspf's DNSLookup over a suite zone, as pyspf's own test driver emulates it."""
    def lookup(name, qtype, level=0):
        labels = [label for label in name.split(".") if label]
        if any(len(label) > 63 for label in labels):
            raise spf.pyspf.TempError("DNS label too long")
        name = ".".join(labels)
        entries = zone.get(name.lower())
        if entries is None:
            if name.startswith("error."):
                raise spf.pyspf.TempError("DNS timeout")
            return []
        found, timeout = [], True
        for entry in entries:
            if entry == "TIMEOUT":
                if timeout:
                    raise spf.pyspf.TempError("DNS timeout")
                return found
            rtype, value = entry
            if rtype == qtype:
                timeout = False
            if value == "TIMEOUT":
                if rtype == qtype:
                    raise spf.pyspf.TempError("DNS timeout")
                continue
            if rtype == "AAAA":
                value = socket.inet_pton(socket.AF_INET6, value)
            elif rtype in ("TXT", "SPF"):
                value = tuple(part.encode("utf-8") for part in value)
            elif rtype == "MX":
                value = tuple(value)
            found.append(((name, rtype), value))
            if not level and rtype == "CNAME":
                found += lookup(value, qtype, 1)
        return found
    return lookup


@pytest.mark.parametrize("zone,test", _suite_cases())
def test_rfc7208_suite(zone, test):
    """Each case of the RFC 7208 test suite gives one of its accepted results through check_host."""
    result = spf.check_host(test["host"], test.get("mailfrom", ""), test.get("helo", ""), _zone_lookup(zone))
    expected = test["result"]
    expected = [expected] if isinstance(expected, str) else expected
    assert result.result in expected, test.get("description")


def test_time_budget_bounds_a_whole_evaluation():
    """Inside CachingResolver.budget, lookups past the budget fail at once (temperror), uncached."""
    import time

    from mailserverd.checks.dns import BudgetSpent
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        resolver = CachingResolver([probe.getsockname()], timeout=5.0)
        started = time.monotonic()
        with resolver.budget(0.3):
            assert check(resolver, "127.0.0.1", "a@pass.test").result == "temperror"
            with pytest.raises(BudgetSpent):
                resolver.query("other.test", "TXT")
        assert time.monotonic() - started < 2.0
