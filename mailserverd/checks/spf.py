"""SPF (RFC 7208) with pyspf, resolving through our caching resolver.

`check_host(ip, sender, helo, lookup)` evaluates one identity and returns an
SpfResult. `lookup` is a function with pyspf's DNSLookup signature
(`CachingResolver.spf_lookup`, or a test zone); it is installed for the
calling thread only, so concurrent checks on the thread pool each use their
own. pyspf enforces RFC 7208 4.6.4: 10 DNS-querying terms, 10 MX or PTR
names, 2 void lookups (permerror past them), and 20 s for the whole check.
A temporary DNS failure gives "temperror" (RFC 7208 2.6.6), never a bounce.

Identities (RFC 7208 2.3, 2.4): the HELO name, and MAIL FROM; with a null
reverse-path MAIL FROM is postmaster@HELO.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"spf$")  # pyspf 2.0.14 spf.py:131
import spf as pyspf  # noqa: E402  (pyspf, not this module: absolute import)

RESULTS = ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror")  # RFC 7208 2.6
QUERY_TIME = pyspf.MAX_PER_LOOKUP_TIME  # RFC 7208 4.6.4: at least 20 s for the whole evaluation

_local = threading.local()
_library_lookup = pyspf.DNSLookup


def _dispatch(name, qtype, strict=True, timeout=None):
    lookup = getattr(_local, "lookup", None)
    if lookup is None:  # pyspf used by someone else in this process: its own resolver
        return _library_lookup(name, qtype, strict, timeout)
    return lookup(name, qtype)


pyspf.DNSLookup = _dispatch  # pyspf calls the module-level DNSLookup for every query


@dataclass(frozen=True)
class SpfResult:
    result: str  # one of RESULTS
    identity: str  # "mailfrom" or "helo"
    sender: str  # the address checked (postmaster@helo for HELO / null reverse-path)
    domain: str  # the domain SPF authenticated or failed (RFC 7489 3.1.2 uses it for alignment)
    reason: str = ""


def check_host(ip: str, sender: str, helo: str, lookup: Callable, identity: str = "mailfrom",
               query_time: float = QUERY_TIME) -> SpfResult:
    """RFC 7208 4: evaluate `sender` (or postmaster@helo when empty) for client `ip`. Blocking."""
    helo = (helo or "").strip()
    if not sender:
        sender = f"postmaster@{helo}" if helo else ""
    domain = sender.rpartition("@")[2].lower().rstrip(".")
    if not domain or not ip:
        return SpfResult("none", identity, sender, domain, "no domain to check")  # RFC 7208 4.3
    previous = getattr(_local, "lookup", None)
    _local.lookup = lookup
    try:
        query = pyspf.query(i=ip, s=sender, h=helo or domain, strict=True, querytime=query_time)
        result, _code, explanation = query.check()
    except Exception as exc:  # pyspf turns DNS trouble into results; anything else is ours
        return SpfResult("temperror", identity, sender, domain, f"{exc.__class__.__name__}: {exc}")
    finally:
        _local.lookup = previous
    result = {"error": "temperror", "unknown": "permerror", "ambiguous": "neutral"}.get(result, result)
    if result not in RESULTS:
        result = "permerror"
    return SpfResult(result, identity, sender, domain, str(explanation or "")[:200])


def check_helo(ip: str, helo: Optional[str], lookup: Callable) -> SpfResult:
    """RFC 7208 2.3: the HELO identity, when HELO gave a domain name (not an address literal)."""
    helo = (helo or "").strip()
    if not helo or helo.startswith("[") or "." not in helo:
        return SpfResult("none", "helo", "", "", "no HELO domain")  # A-R then names no smtp.helo
    return check_host(ip, f"postmaster@{helo}", helo, lookup, identity="helo")


def check_mail_from(ip: str, mail_from: str, helo: Optional[str], lookup: Callable) -> SpfResult:
    """RFC 7208 2.4: the MAIL FROM identity (postmaster@HELO for the null reverse-path)."""
    return check_host(ip, mail_from, helo or "", lookup, identity="mailfrom")
