"""Per-IP connection counts and message rates, with an injected clock.

A limit of 0 means unlimited. Clients in [smtp] trusted_networks (default:
loopback) are exempt from both, as Postfix exempts $mynetworks from its
client event limits (smtpd_client_event_limit_exceptions): a local relay,
a mailing-list host or a benchmark on the same network is not throttled.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

MAX_KEYS = 100_000  # bound memory under a spray of source addresses


class TrustedNetworks:
    """Membership test for client IPs; IPv4-mapped IPv6 (::ffff:a.b.c.d) counts as IPv4."""

    def __init__(self, networks: Iterable = ()):
        self.networks = tuple(ipaddress.ip_network(net, strict=False) if isinstance(net, str) else net
                              for net in networks)
        self._cache: dict[str, bool] = {}

    def __contains__(self, ip: str) -> bool:
        hit = self._cache.get(ip)
        if hit is None:
            hit = self._lookup(ip)
            if len(self._cache) >= MAX_KEYS:
                self._cache.clear()
            self._cache[ip] = hit
        return hit

    def _lookup(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip.split("%")[0])
        except ValueError:
            return False  # "unknown", a UNIX socket: not trusted
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self.networks if net.version == address.version)


NOBODY = TrustedNetworks()


class ConnectionLimiter:
    """Concurrent connections per client IP (limits.max_connections_per_ip)."""

    def __init__(self, limit: int, trusted: TrustedNetworks = NOBODY):
        self.limit = limit
        self.trusted = trusted
        self._open: dict[str, int] = {}

    def acquire(self, ip: str) -> bool:
        """Count a new connection; False (and nothing counted) if the IP is at its limit.
        A trusted IP is always admitted (and still counted, so release() matches)."""
        count = self._open.get(ip, 0)
        if ip in self.trusted:
            self._open[ip] = count + 1
            return True
        if self.limit and count >= self.limit:
            return False
        self._open[ip] = count + 1
        return True

    def release(self, ip: str) -> None:
        count = self._open.get(ip, 0) - 1
        if count > 0:
            self._open[ip] = count
        else:
            self._open.pop(ip, None)

    def count(self, ip: str) -> int:
        return self._open.get(ip, 0)


class RateLimiter:
    """A token bucket per key: `rate` events per `period` seconds, bursts up to `rate`."""

    def __init__(self, rate: int, period: float, clock, trusted: TrustedNetworks = NOBODY):
        self.rate = rate
        self.period = period
        self.clock = clock
        self.trusted = trusted
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill time)

    def allow(self, key: str) -> bool:
        """Take one token for `key`; False if none is left (the event is not counted).
        A key in `trusted` (a client IP) is always allowed and takes no token."""
        if not self.rate or key in self.trusted:
            return True
        now = self.clock.seconds()
        tokens, last = self._buckets.get(key, (float(self.rate), now))
        tokens = min(float(self.rate), tokens + (now - last) * self.rate / self.period)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        if len(self._buckets) >= MAX_KEYS and key not in self._buckets:
            self._forget_full(now)
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled completely: forgetting them changes nothing."""
        refill = self.period / self.rate
        self._buckets = {key: (tokens, last) for key, (tokens, last) in self._buckets.items()
                         if tokens + (now - last) / refill < self.rate}
