"""DNSBL lookups (mailserverd/spam/dnsbl.py) over real DNS: a twisted.names server on
loopback answers for a test zone, reached through checks/dns.CachingResolver as
`[dns] nameservers` would configure it (RFC 5782)."""

from __future__ import annotations

import pytest

from mailserverd.checks.dns import CachingResolver
from mailserverd.spam.dnsbl import lookup
from tests.support.dnsserver import DnsServer

ZONE = {
    "9.8.8.8.bl.test": {"A": ["127.0.0.2"], "TXT": ["listed: see https://bl.test/8.8.8.9"]},
    "10.8.8.8.bl.test": {"A": ["127.255.255.254"]},  # the operator's "query refused" code
    "11.8.8.8.bl.test": {"A": ["192.0.2.1"]},  # not in 127/8: not a listing
    "9.8.8.8.down.test": "SERVFAIL",
}


@pytest.fixture(scope="module")
def resolver():
    with DnsServer(ZONE) as server:
        yield CachingResolver([server.address], timeout=2.0)


def test_a_listed_address_is_found_in_its_zone(resolver):
    """8.8.8.9 is listed in bl.test (127.0.0.2 at 9.8.8.8.bl.test); another zone misses."""
    hits, failures = lookup(resolver, "8.8.8.9", ["bl.test", "other.test"])
    assert hits == [("bl.test", "127.0.0.2")] and failures == []


def test_error_codes_and_answers_outside_127_are_not_listings(resolver):
    """127.255.255.254 (query refused) and 192.0.2.1 answers list nobody; NXDOMAIN neither."""
    for ip in ("8.8.8.10", "8.8.8.11", "8.8.8.12"):
        assert lookup(resolver, ip, ["bl.test"]) == ([], [])


def test_a_failing_list_is_reported_not_counted(resolver):
    """SERVFAIL from a list is a temporary failure: no hit, the zone named in failures."""
    hits, failures = lookup(resolver, "8.8.8.9", ["down.test", "bl.test"])
    assert hits == [("bl.test", "127.0.0.2")] and failures == ["down.test"]


def test_loopback_and_private_clients_are_never_looked_up(resolver):
    """127.0.0.1, 10.x and 192.168.x clients cost no query at all."""
    before = resolver.queries
    for ip in ("127.0.0.1", "10.1.2.3", "192.168.1.1", "::1"):
        assert lookup(resolver, ip, ["bl.test"]) == ([], [])
    assert resolver.queries == before
