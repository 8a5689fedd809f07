"""Per-IP connection counts and message rates, with an injected clock.

A limit of 0 means unlimited (benchmarks and trusted relays set that).
"""

from __future__ import annotations

MAX_KEYS = 100_000  # bound memory under a spray of source addresses


class ConnectionLimiter:
    """Concurrent connections per client IP (limits.max_connections_per_ip)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, ip: str) -> bool:
        """Count a new connection; False (and nothing counted) if the IP is at its limit."""
        count = self._open.get(ip, 0)
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

    def __init__(self, rate: int, period: float, clock):
        self.rate = rate
        self.period = period
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill time)

    def allow(self, key: str) -> bool:
        """Take one token for `key`; False if none is left (the event is not counted)."""
        if not self.rate:
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
