"""MX routing (outbound/resolver.py) against a real DNS server on loopback (tests/support/dnsserver.py)."""

from __future__ import annotations

import random

import pytest

from mailserverd.outbound.resolver import MAX_MX_HOSTS, MailHost, MxResolver
from mailserverd.outbound.types import RouteError, TemporaryRouteError
from tests.support.dnsserver import DnsServer

ZONE = {
    "remote.test": {"MX": [(20, "mx2.remote.test"), (10, "mx1.remote.test")], "TXT": ["v=spf1 mx -all"]},
    "mx1.remote.test": {"A": ["127.0.0.2"]},
    "mx2.remote.test": {"A": ["127.0.0.3"], "AAAA": ["::1"]},
    "equal.test": {"MX": [(10, "a.equal.test"), (10, "b.equal.test"), (10, "c.equal.test"),
                          (5, "best.equal.test")]},
    "a.equal.test": {"A": ["127.0.1.1"]},
    "b.equal.test": {"A": ["127.0.1.2"]},
    "c.equal.test": {"A": ["127.0.1.3"]},
    "best.equal.test": {"A": ["127.0.1.4"]},
    "plain.test": {"A": ["127.0.0.4"], "AAAA": ["::1"]},
    "nullmx.test": {"MX": [(0, ".")]},
    "nothing.test": {"TXT": ["no mail here"]},
    "alias.test": {"CNAME": "remote.test"},
    "cname-mx.test": {"MX": [(10, "mxalias.cname-mx.test")]},
    "mxalias.cname-mx.test": {"CNAME": "mx1.remote.test"},
    "broken.test": "SERVFAIL",
    "silent.test": "TIMEOUT",
    "lame.test": {"MX": [(10, "gone.lame.test"), (20, "mx1.remote.test")]},
    "alllame.test": {"MX": [(10, "gone.alllame.test")]},
    "flaky.test": {"MX": [(10, "broken.test")]},
    "many.test": {"MX": [(i, f"h{i}.many.test") for i in range(15)]},
    "loop.test": {"MX": [(10, "mx.example.test"), (5, "mx1.remote.test"), (20, "mx2.remote.test")]},
    "onlyme.test": {"MX": [(10, "mx.example.test")]},
    **{f"h{i}.many.test": {"A": [f"127.0.2.{i}", f"127.0.3.{i}"]} for i in range(15)},
    "mx.example.test": {"A": ["127.0.0.1"]},
}


@pytest.fixture(scope="module")
def dns_server():
    with DnsServer(ZONE) as server:
        yield server


@pytest.fixture
def resolver(dns_server):
    return MxResolver(nameservers=[dns_server.address], timeout=1.0, local_names=["mx.example.test"],
                      rng=random.Random(7))


def test_mx_hosts_come_in_preference_order(resolver):
    """MX records are tried lowest preference first, with their addresses (RFC 5321 5.1)."""
    assert resolver.lookup("remote.test") == [MailHost("mx1.remote.test", 10, ("127.0.0.2",)),
                                              MailHost("mx2.remote.test", 20, ("127.0.0.3", "::1"))]


def test_equal_preferences_are_shuffled(dns_server):
    """Hosts of equal preference come in random order; the better preference still comes first."""
    orders = set()
    for seed in range(12):
        hosts = MxResolver(nameservers=[dns_server.address], timeout=1.0, rng=random.Random(seed)).lookup("equal.test")
        assert hosts[0].name == "best.equal.test"
        orders.add(tuple(host.name for host in hosts[1:]))
    assert len(orders) > 1


def test_no_mx_falls_back_to_the_domains_addresses(resolver):
    """Without MX records the domain's own A/AAAA records are the host (RFC 5321 5.1 implicit MX)."""
    assert resolver.lookup("plain.test") == [MailHost("plain.test", 0, ("127.0.0.4", "::1"))]


def test_null_mx_is_a_permanent_556(resolver):
    """A null MX ("0 .") means the domain accepts no mail: 556 5.1.10 (RFC 7505 3.2)."""
    with pytest.raises(RouteError) as caught:
        resolver.lookup("nullmx.test")
    assert (caught.value.code, caught.value.enhanced) == (556, "5.1.10")


def test_nxdomain_is_a_permanent_550_512(resolver):
    """A domain that does not exist bounces with 550 5.1.2."""
    with pytest.raises(RouteError) as caught:
        resolver.lookup("does-not-exist.test")
    assert (caught.value.code, caught.value.enhanced) == (550, "5.1.2")


def test_no_mx_and_no_address_is_permanent(resolver):
    """A domain with neither MX nor address records cannot receive mail: 550 5.1.2."""
    with pytest.raises(RouteError) as caught:
        resolver.lookup("nothing.test")
    assert caught.value.code == 550


def test_servfail_is_temporary(resolver):
    """SERVFAIL defers the mail (451 4.4.3) rather than bouncing it."""
    with pytest.raises(TemporaryRouteError) as caught:
        resolver.lookup("broken.test")
    assert (caught.value.code, caught.value.enhanced) == (451, "4.4.3")


def test_timeout_is_temporary(dns_server):
    """A name server that never answers defers the mail, within the configured timeout."""
    quick = MxResolver(nameservers=[dns_server.address], timeout=0.3)
    with pytest.raises(TemporaryRouteError):
        quick.lookup("silent.test")


def test_cname_domain_is_followed(resolver):
    """An MX query for an alias answers with the canonical name's MX records."""
    assert [host.name for host in resolver.lookup("alias.test")] == ["mx1.remote.test", "mx2.remote.test"]


def test_mx_host_behind_a_cname_resolves(resolver):
    """An MX host name that is a CNAME still yields the target's addresses."""
    assert resolver.lookup("cname-mx.test") == [MailHost("mxalias.cname-mx.test", 10, ("127.0.0.2",))]


def test_mx_host_without_address_is_skipped(resolver):
    """An MX host whose name does not exist is left out; the others remain."""
    assert [host.name for host in resolver.lookup("lame.test")] == ["mx1.remote.test"]


def test_all_mx_hosts_without_address_is_permanent(resolver):
    """When no MX host has an address, delivery is impossible: 550 5.4.4."""
    with pytest.raises(RouteError) as caught:
        resolver.lookup("alllame.test")
    assert caught.value.enhanced == "5.4.4"


def test_mx_host_lookup_servfail_is_temporary(resolver):
    """When the only MX host cannot be resolved for now, the mail is deferred."""
    with pytest.raises(TemporaryRouteError):
        resolver.lookup("flaky.test")


def test_hosts_and_addresses_are_bounded(resolver):
    """At most MAX_MX_HOSTS hosts and 20 addresses in all, however many the domain lists."""
    hosts = resolver.lookup("many.test")
    assert len(hosts) <= MAX_MX_HOSTS
    assert sum(len(host.addresses) for host in hosts) <= 20
    assert [host.preference for host in hosts] == sorted(host.preference for host in hosts)


def test_hosts_not_better_than_ourselves_are_dropped(resolver):
    """When we are an MX of the domain, only more preferred hosts are used (RFC 5321 5.1)."""
    assert [host.name for host in resolver.lookup("loop.test")] == ["mx1.remote.test"]


def test_being_the_best_mx_is_a_loop(resolver):
    """When we are the best MX of the domain, the mail loops back: 554 5.4.6."""
    with pytest.raises(RouteError) as caught:
        resolver.lookup("onlyme.test")
    assert caught.value.enhanced == "5.4.6"


def test_address_literal_needs_no_dns(resolver):
    """A [192.0.2.1] domain is delivered to that address without a lookup (RFC 5321 4.1.3)."""
    assert resolver.lookup("[127.0.0.5]") == [MailHost("[127.0.0.5]", 0, ("127.0.0.5",))]


def test_invalid_domain_is_permanent(resolver):
    """A syntactically impossible domain bounces instead of being retried for days."""
    with pytest.raises(RouteError):
        resolver.lookup("a" * 70 + ".test")


def test_zone_changes_are_seen(dns_server, resolver):
    """The test server's zone can be replaced while it runs (used for deferral-then-delivery tests)."""
    dns_server.set_zone({**ZONE, "new.test": {"A": ["127.0.0.9"]}})
    try:
        assert resolver.lookup("new.test")[0].addresses == ("127.0.0.9",)
    finally:
        dns_server.set_zone(ZONE)



def test_answers_are_cached_for_their_ttl(dns_server, monkeypatch):
    """The resolver the transport builds keeps answers for their TTL: a second route of the
    same domain sends no DNS query."""
    import dns.query

    resolver = MxResolver(nameservers=[dns_server.address], timeout=1.0)
    sent = []
    real_udp = dns.query.udp
    monkeypatch.setattr(dns.query, "udp", lambda *a, **kw: sent.append(1) or real_udp(*a, **kw))
    first = resolver.lookup("remote.test")
    assert sent, "the first lookup asks the server"
    asked = len(sent)
    assert resolver.lookup("remote.test") == first
    assert len(sent) == asked
