"""DNS block lists (RFC 5782): is the connecting address listed in a zone?

A query for the reversed address under the zone (1.2.0.192.zone for
192.0.2.1; nibbles for IPv6, RFC 5782 2.4) answers an A record in 127/8 when
listed, NXDOMAIN when not. 127.255.255.252-254 are the list operator's error
codes (Spamhaus: query refused, e.g. through a public resolver) and
127.0.0.1 is the RFC 5782 5 test entry of 127.0.0.2 lookups only: neither
is a listing. Blocking (dnspython through checks/dns.CachingResolver): call
from a thread. A temporary DNS failure is "not listed" (never refuse mail
because a list is down), logged by the caller.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Optional

ERROR_CODES = frozenset(("127.255.255.252", "127.255.255.253", "127.255.255.254", "127.255.255.255"))


def reversed_name(ip: str, zone: str) -> Optional[str]:
    """The query name of `ip` under `zone`, or None for an address no list covers
    (loopback, private, link-local: never looked up)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if not address.is_global:
        return None
    if address.version == 4:
        reversed_part = ".".join(reversed(str(address).split(".")))
    else:  # RFC 5782 2.4: 32 nibbles, least significant first
        reversed_part = ".".join(reversed(address.exploded.replace(":", "")))
    return f"{reversed_part}.{zone.strip('.')}"


def lookup(resolver, ip: str, zones: Iterable[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """(hits, zones that failed temporarily)."""
    from ..checks.dns import TempDnsError

    hits: list[tuple[str, str]] = []
    failures: list[str] = []
    for zone in zones:
        name = reversed_name(ip, zone)
        if name is None:
            return [], []
        try:
            answer = resolver.query(name, "A")
        except TempDnsError:
            failures.append(zone)
            continue
        for record in answer.records:
            code = str(getattr(record, "address", record))
            if code.startswith("127.") and code not in ERROR_CODES:
                hits.append((zone, code))
                break
    return hits, failures
