"""DNS for the authentication checks (SPF, DKIM, DMARC, ARC): dnspython with a TTL cache.

`CachingResolver.query(name, rdtype)` is BLOCKING: call it from a worker
thread (check.auth runs all of its lookups on its own bounded thread pool),
never from the reactor thread. It returns the records (an empty tuple for
NXDOMAIN or NODATA, which differ only in `Answer.nxdomain`) or raises
TempDnsError for a temporary failure (SERVFAIL, timeout, no name server
answered), which the checks turn into "temperror", never into a bounce.

Answers are cached for their TTL (capped at MAX_TTL); negative answers for
NEGATIVE_TTL (RFC 2308 5), temporary failures for TEMP_ERROR_TTL (RFC 2308
7.1 allows up to five minutes), so a dead name server costs one timeout per
name per half minute, not one per message. The clock is injectable.

The adapters `spf_lookup` (pyspf's DNSLookup convention) and `dkim_txt`
(dkimpy's dnsfunc convention) put the three libraries on this one cache.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from ..outbound.resolver import build_dns_resolver

MAX_TTL = 3600.0
NEGATIVE_TTL = 300.0  # no SOA minimum to hand: RFC 2308 5 suggests 1-3 hours; we stay short
TEMP_ERROR_TTL = 30.0
DEFAULT_TIMEOUT = 5.0  # seconds for one query, retries included
MAX_ENTRIES = 20000
SUPPORTED = ("A", "AAAA", "MX", "PTR", "TXT")


class TempDnsError(Exception):
    """A temporary DNS failure (SERVFAIL, timeout, unreachable name servers)."""


class BudgetSpent(TempDnsError):
    """The calling thread's time budget (CachingResolver.budget) is used up; not cached."""


_budget = threading.local()


@dataclass(frozen=True)
class Answer:
    records: tuple  # dnspython rdata objects
    nxdomain: bool = False


def _clock_function(clock) -> Callable[[], float]:
    if clock is None:
        return time.monotonic
    if hasattr(clock, "seconds"):  # a reactor or twisted.internet.task.Clock
        return clock.seconds
    return clock


class CachingResolver:
    """Thread-safe TTL cache in front of a dnspython resolver for [dns] nameservers."""

    _offline = False  # a cache_only() view: never asks the network
    missed = False  # set on such a view when a query was not in the cache

    def __init__(self, nameservers=(), timeout: float = DEFAULT_TIMEOUT, clock=None,
                 dns_resolver: Optional[dns.resolver.Resolver] = None, max_entries: int = MAX_ENTRIES):
        self.resolver = dns_resolver or build_dns_resolver(nameservers, timeout)
        self.now = _clock_function(clock)
        self.max_entries = max_entries
        self._cache: dict[tuple[str, str], tuple[float, object]] = {}
        self._lock = threading.Lock()
        self.queries = 0  # lookups that went to the network (for tests and metrics)

    def query(self, name: str, rdtype: str) -> Answer:
        """The records of `rdtype` at `name`; raises TempDnsError. Blocking."""
        key = (name.lower().rstrip("."), rdtype.upper())
        now = self.now()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            if isinstance(cached[1], TempDnsError):
                raise cached[1]
            return cached[1]
        if self._offline:
            self.missed = True
            raise TempDnsError(f"{name}/{rdtype}: not in the cache")
        try:
            answer, ttl = self._resolve(*key)
        except BudgetSpent:
            raise
        except TempDnsError as exc:
            self._store(key, now + TEMP_ERROR_TTL, exc)
            raise
        self._store(key, now + ttl, answer)
        return answer

    def cache_only(self) -> "CachingResolver":
        """A view of this resolver (the same cache) that never goes to the network: a
        query the cache cannot answer sets the view's `missed` and fails as temporary.
        Non-blocking, so usable on the reactor thread for a speculative evaluation whose
        result counts only when nothing was missed."""
        view = copy.copy(self)
        view._offline = True
        view.missed = False
        return view

    def is_cached(self, name: str, rdtype: str) -> bool:
        """Whether query(name, rdtype) would be answered from the cache now."""
        key = (name.lower().rstrip("."), rdtype.upper())
        cached = self._cache.get(key)
        return cached is not None and cached[0] > self.now()

    @staticmethod
    @contextlib.contextmanager
    def budget(seconds: float):
        """Bound the network time of every query made by this thread inside the block.

        Past the budget a query raises BudgetSpent at once: one message's checks
        never wait more than `seconds` for DNS in all, whatever pyspf or dkimpy ask.
        """
        previous = getattr(_budget, "deadline", None)
        _budget.deadline = time.monotonic() + seconds
        try:
            yield
        finally:
            _budget.deadline = previous

    def _store(self, key, expires: float, value) -> None:
        with self._lock:
            if len(self._cache) >= self.max_entries and key not in self._cache:
                now = self.now()
                for stale in [k for k, (when, _) in self._cache.items() if when <= now]:
                    del self._cache[stale]
                while len(self._cache) >= self.max_entries:
                    del self._cache[next(iter(self._cache))]  # the oldest entry
            self._cache[key] = (expires, value)

    def _resolve(self, name: str, rdtype: str) -> tuple[Answer, float]:
        try:
            qname = dns.name.from_text(name)
        except (dns.exception.DNSException, UnicodeError, ValueError):
            return Answer((), nxdomain=True), NEGATIVE_TTL  # no such name can exist
        lifetime = self.resolver.lifetime
        deadline = getattr(_budget, "deadline", None)
        if deadline is not None:
            lifetime = min(lifetime, deadline - time.monotonic())
            if lifetime <= 0:
                raise BudgetSpent(f"{name}/{rdtype}: DNS time budget spent")
        self.queries += 1
        try:
            answer = self.resolver.resolve(qname, rdtype, search=False, raise_on_no_answer=False,
                                           lifetime=lifetime)
        except (dns.resolver.NXDOMAIN, dns.resolver.YXDOMAIN):
            return Answer((), nxdomain=True), NEGATIVE_TTL
        except dns.exception.Timeout as exc:
            raise TempDnsError(f"{name}/{rdtype}: timeout") from exc
        except dns.resolver.NoNameservers as exc:  # SERVFAIL or REFUSED from every server
            raise TempDnsError(f"{name}/{rdtype}: no name server answered") from exc
        except dns.exception.DNSException as exc:
            raise TempDnsError(f"{name}/{rdtype}: {exc.__class__.__name__}") from exc
        except OSError as exc:  # e.g. the network is unreachable
            raise TempDnsError(f"{name}/{rdtype}: {exc}") from exc
        if answer.rrset is None:
            return Answer(()), NEGATIVE_TTL
        return Answer(tuple(answer.rrset)), float(min(max(answer.rrset.ttl, 0), MAX_TTL))

    # -- adapters ------------------------------------------------------------------

    def txt(self, name: str) -> list[bytes]:
        """Each TXT record at `name` with its strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
        return [b"".join(record.strings) for record in self.query(name, "TXT").records]

    def spf_lookup(self, name: str, qtype: str, strict: bool = True, timeout=None) -> list:
        """pyspf's DNSLookup: [((name, qtype), value), ...]; raises spf.TempError."""
        import spf
        qtype = qtype.upper()
        if qtype not in SUPPORTED:
            return []  # the obsolete SPF RR type (RFC 7208 3.1) and anything else: never asked
        try:
            records = self.query(name, qtype).records
        except TempDnsError as exc:
            raise spf.TempError(f"DNS {exc}") from None
        found = []
        for record in records:
            if qtype in ("A", "AAAA"):
                value = record.address
            elif qtype == "MX":
                value = (record.preference, record.exchange.to_text(omit_final_dot=True))
            elif qtype == "PTR":
                value = record.target.to_text(omit_final_dot=True)
            else:
                value = tuple(record.strings)
            found.append(((name, qtype), value))
        return found

    def dkim_txt(self, name, timeout: float = DEFAULT_TIMEOUT) -> Optional[bytes]:
        """dkimpy's dnsfunc: the key record at `name` (bytes), None if there is none."""
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        records = self.txt(name)
        for record in records:  # RFC 6376 3.6.2.2: one key record; prefer the one that says so
            if record.lstrip().startswith(b"v=DKIM1"):
                return record
        return records[0] if records else None
