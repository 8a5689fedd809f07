"""Where to deliver mail for a domain: MX lookup with dnspython (RFC 5321 5.1).

`MxResolver.lookup(domain)` is blocking and returns the hosts to try, best
first; `route(domain)` runs it on the reactor's thread pool and returns a
Deferred, so the reactor thread never waits for DNS. Failures carry their
SMTP meaning (outbound/types.py): NXDOMAIN and null MX are permanent
(RouteError), SERVFAIL and timeouts temporary (TemporaryRouteError).
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from twisted.internet.threads import deferToThreadPool

from .types import RouteError, TemporaryRouteError

MAX_MX_HOSTS = 10          # a domain listing more gets its ten best tried
MAX_ADDRESSES_PER_HOST = 4
MAX_ADDRESSES = 20         # over all hosts: bounds the connection attempts of one delivery
DEFAULT_TIMEOUT = 10.0     # seconds for one query, all nameservers and retries included


@dataclass(frozen=True)
class MailHost:
    """One host to try: its name, MX preference and addresses (IPv4 first)."""

    name: str
    preference: int
    addresses: tuple[str, ...]


def build_dns_resolver(nameservers=(), timeout: float = DEFAULT_TIMEOUT) -> dns.resolver.Resolver:
    """A dnspython resolver for [dns] nameservers ((host, port), ...), or the system's when empty."""
    if nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers]
    else:
        try:
            resolver = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            # no /etc/resolv.conf: a local caching resolver is the usual MTA set-up; if there
            # is none, lookups fail as temporary errors and the mail waits in the queue
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = ["127.0.0.1"]
    resolver.lifetime = timeout
    resolver.timeout = min(timeout, 2.0)  # per try: a lost UDP packet is retried quickly
    return resolver


def _address_literal(domain: str) -> str | None:
    """The address in "[192.0.2.1]" / "[IPv6:2001:db8::1]" (RFC 5321 4.1.3), else None."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner.lower().startswith("ipv6:"):
        inner = inner[5:]
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        raise RouteError(550, "5.1.2", f"invalid address literal {domain}") from None


class MxResolver:
    """MX routing with dnspython; `local_names` are our own host names (loop detection)."""

    def __init__(self, reactor=None, nameservers=(), timeout: float = DEFAULT_TIMEOUT, local_names=(),
                 rng: random.Random | None = None, dns_resolver: dns.resolver.Resolver | None = None):
        self.reactor = reactor
        if dns_resolver is None:
            dns_resolver = build_dns_resolver(nameservers, timeout)
            # answers kept for their TTL (RFC 1035 3.2.1): a burst to one domain costs one
            # MX and one A lookup, not three queries per message (bench/outbound.py profile)
            dns_resolver.cache = dns.resolver.LRUCache(4096)
        self.dns = dns_resolver
        self.local_names = {name.lower().rstrip(".") for name in local_names}
        self.rng = rng or random.Random()

    def route(self, domain: str):
        """Deferred[list[MailHost]], failing with RouteError / TemporaryRouteError."""
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.lookup, domain)

    def route_host(self, host: str):
        """Deferred[list[MailHost]] for one named host (a smarthost): its addresses, no MX."""
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.lookup_host, host)

    # -- blocking -----------------------------------------------------------------------

    def lookup_host(self, host: str) -> list[MailHost]:
        """A relay host's addresses; a relay that cannot be found is our configuration's
        problem, so every failure is temporary (the mail waits for a fix)."""
        try:
            return [MailHost(host, 0, (str(ipaddress.ip_address(host.strip("[]"))),))]
        except ValueError:
            pass
        try:
            name = dns.name.from_text(host)
        except (dns.exception.DNSException, UnicodeError, ValueError):
            raise TemporaryRouteError(f"invalid relay host name {host}") from None
        addresses, temporary = self._addresses(name)
        if not addresses:
            raise TemporaryRouteError(f"relay host {host} has no address" + (f": {temporary}" if temporary else ""))
        return [MailHost(host, 0, addresses)]

    def lookup(self, domain: str) -> list[MailHost]:
        literal = _address_literal(domain)
        if literal is not None:
            return [MailHost(domain, 0, (literal,))]
        try:
            name = dns.name.from_text(domain.rstrip("."))  # U-labels become A-labels (IDNA)
        except (dns.exception.DNSException, UnicodeError, ValueError):
            raise RouteError(550, "5.1.2", f"invalid domain {domain}") from None
        answer = self._query(name, dns.rdatatype.MX, domain)
        if answer is None or answer.rrset is None:
            # RFC 5321 5.1: no MX records: the domain itself is the host (implicit MX)
            addresses, temporary = self._addresses(name)
            if addresses:
                return [MailHost(domain.rstrip(".").lower(), 0, addresses)]
            if temporary:
                raise TemporaryRouteError(f"address lookup for {domain} failed: {temporary}")
            raise RouteError(550, "5.1.2", f"domain {domain} has no MX or address record")
        records = list(answer.rrset)
        # RFC 7505 3: "0 ." says the domain accepts no mail at all
        if any(record.exchange == dns.name.root for record in records):
            raise RouteError.null_mx(domain)
        hosts = self._ordered(records)
        return self._resolve_hosts(domain, hosts)

    def _ordered(self, records) -> list[tuple[int, str]]:
        """(preference, name): lowest preference first, random among equals (RFC 5321 5.1)."""
        keyed = [(record.preference, self.rng.random(), record.exchange.to_text(omit_final_dot=True).lower())
                 for record in records]
        keyed.sort()
        hosts = [(preference, name) for preference, _, name in keyed]
        # RFC 5321 5.1: if we are listed, only hosts more preferred than we are may be used
        ours = [preference for preference, name in hosts if name in self.local_names]
        if ours:
            hosts = [(preference, name) for preference, name in hosts if preference < min(ours)]
        return hosts[:MAX_MX_HOSTS]

    def _resolve_hosts(self, domain: str, hosts: list[tuple[int, str]]) -> list[MailHost]:
        if not hosts:
            raise RouteError(554, "5.4.6", f"mail for {domain} loops back to myself")
        result: list[MailHost] = []
        budget = MAX_ADDRESSES
        temporary = ""
        for preference, host in hosts:
            if budget <= 0:
                break
            try:
                host_name = dns.name.from_text(host)
            except dns.exception.DNSException:
                continue
            addresses, failure = self._addresses(host_name)
            temporary = temporary or failure
            if addresses:
                addresses = addresses[:budget]
                budget -= len(addresses)
                result.append(MailHost(host, preference, addresses))
        if result:
            return result
        if temporary:
            raise TemporaryRouteError(f"no MX host of {domain} could be resolved: {temporary}")
        raise RouteError(550, "5.4.4", f"no MX host of {domain} has an address")

    def _addresses(self, name: dns.name.Name) -> tuple[tuple[str, ...], str]:
        """(addresses, temporary failure text or ""); IPv4 first; NXDOMAIN counts as none."""
        found: list[str] = []
        temporary = ""
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            try:
                answer = self._query(name, rdtype, name.to_text(omit_final_dot=True))
            except RouteError:
                break  # NXDOMAIN: no AAAA either
            except TemporaryRouteError as exc:
                temporary = exc.text
                continue
            if answer is not None and answer.rrset is not None:
                found += [record.address for record in answer.rrset][:MAX_ADDRESSES_PER_HOST]
        return tuple(found[:MAX_ADDRESSES_PER_HOST]), temporary

    def _query(self, name: dns.name.Name, rdtype, shown: str):
        """The answer (rrset None for NODATA); CNAMEs are followed by dnspython."""
        try:
            return self.dns.resolve(name, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            raise RouteError.nxdomain(shown) from None
        except dns.resolver.YXDOMAIN:
            raise RouteError(550, "5.1.2", f"invalid domain {shown}") from None
        except dns.exception.Timeout:
            raise TemporaryRouteError(f"DNS lookup of {shown} timed out") from None
        except dns.resolver.NoNameservers:
            raise TemporaryRouteError(f"DNS lookup of {shown} failed (SERVFAIL)") from None
        except dns.exception.DNSException as exc:
            raise TemporaryRouteError(f"DNS lookup of {shown} failed: {exc.__class__.__name__}") from None
