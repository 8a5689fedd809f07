"""DMARC (RFC 7489): policy discovery, identifier alignment, and the disposition.

`evaluate(from_domain, spf, dkim, txt, rng)` returns a DmarcResult:

    result      pass, fail, none (no policy), temperror, permerror (RFC 7489 11.2)
    policy      the requested policy that applies: p=, or sp= for a subdomain
                when the record was found at the organizational domain (6.6.3)
    disposition what to do: "none", "quarantine" or "reject"; pct= sampling
                (6.6.4) may lower it one step (reject -> quarantine -> none)

Organizational domains (3.2) come from the Public Suffix List bundled in the
`publicsuffixlist` package (offline; loaded once per process). `txt(name)` is
CachingResolver.txt (raises TempDnsError); `rng` has random() in [0, 1).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from .dkimverify import DkimResult
from .dns import TempDnsError
from .spf import SpfResult

POLICIES = ("none", "quarantine", "reject")
_LOWER = {"reject": "quarantine", "quarantine": "none", "none": "none"}

_psl = None
_psl_lock = threading.Lock()


def _suffix_list():
    global _psl
    with _psl_lock:
        if _psl is None:
            from publicsuffixlist import PublicSuffixList
            _psl = PublicSuffixList()
        return _psl


def organizational_domain(domain: str) -> str:
    """RFC 7489 3.2: the public suffix plus one label (the domain itself if it is a suffix)."""
    domain = domain.lower().rstrip(".")
    try:
        return _suffix_list().privatesuffix(domain) or domain
    except Exception:  # publicsuffixlist on odd input (e.g. empty labels)
        return domain


def aligned(identifier: str, from_domain: str, mode: str) -> bool:
    """RFC 7489 3.1: strict = the same domain; relaxed = the same organizational domain."""
    identifier, from_domain = identifier.lower().rstrip("."), from_domain.lower().rstrip(".")
    if not identifier or not from_domain:
        return False
    if mode == "s":
        return identifier == from_domain
    return organizational_domain(identifier) == organizational_domain(from_domain)


@dataclass(frozen=True)
class DmarcRecord:
    policy: str
    subdomain_policy: str
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"


def parse_record(text: str) -> Optional[DmarcRecord]:
    """RFC 7489 6.3 / 6.4; None when the record is not a usable DMARC record."""
    tags = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if not sep:
            if part.strip():
                return None  # RFC 7489 6.4: every tag is name=value
            continue
        tags.setdefault(name.strip().lower(), value.strip())
    if tags.get("v") != "DMARC1" or not text.lstrip().startswith("v="):  # v= comes first (6.4)
        return None
    policy = tags.get("p", "").lower()
    if policy not in POLICIES:
        if "rua" in tags:  # 6.6.3: a bad p= with a valid rua= is p=none
            policy = "none"
        else:
            return None
    subdomain = tags.get("sp", "").lower()
    if subdomain not in POLICIES:
        subdomain = policy  # 6.3: sp defaults to p (an invalid one is ignored)
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError:
        pct = 100
    pct = min(max(pct, 0), 100)
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    return DmarcRecord(policy, subdomain, pct, adkim if adkim in ("r", "s") else "r",
                       aspf if aspf in ("r", "s") else "r")


@dataclass(frozen=True)
class DmarcResult:
    result: str
    from_domain: str = ""
    policy: str = "none"
    disposition: str = "none"
    record_domain: str = ""  # where the policy record was found
    spf_aligned: bool = False
    dkim_aligned: bool = False
    reason: str = ""


def find_record(from_domain: str, txt: Callable) -> tuple[Optional[DmarcRecord], str]:
    """RFC 7489 6.6.3: _dmarc.<From domain>, else _dmarc.<organizational domain>.

    Returns (record, where found); raises TempDnsError.
    """
    candidates = [from_domain]
    org = organizational_domain(from_domain)
    if org != from_domain:
        candidates.append(org)
    for domain in candidates:
        records = [text.decode("utf-8", "replace") for text in txt(f"_dmarc.{domain}")]
        records = [text for text in records if text.lstrip().lower().startswith("v=dmarc1")]
        if len(records) != 1:  # none, or several: no policy here (6.6.3 step 2)
            continue
        record = parse_record(records[0])
        if record is not None:
            return record, domain
    return None, ""


def evaluate(from_domain: str, spf: Optional[SpfResult], dkim: Iterable[DkimResult], txt: Callable,
             rng: Optional[random.Random] = None) -> DmarcResult:
    """The DMARC result and disposition for a message whose From: domain is `from_domain`."""
    from_domain = (from_domain or "").lower().rstrip(".")
    if not from_domain:
        return DmarcResult("none", reason="no From: domain")
    try:
        record, where = find_record(from_domain, txt)
    except TempDnsError as exc:
        return DmarcResult("temperror", from_domain, reason=str(exc))  # 6.6.3 step 1: try later
    if record is None:
        return DmarcResult("none", from_domain, reason="no DMARC record")
    # 6.6.3 step 3: sp= when the record came from the organizational domain
    policy = record.subdomain_policy if where != from_domain else record.policy
    # 3.1.2: SPF's authenticated domain is MAIL FROM's (or HELO's for the null reverse-path)
    spf_ok = bool(spf and spf.result == "pass" and aligned(spf.domain, from_domain, record.aspf))
    dkim_ok = any(result.result == "pass" and aligned(result.domain, from_domain, record.adkim)
                  for result in dkim)
    if spf_ok or dkim_ok:  # 4.2: one aligned pass is enough
        return DmarcResult("pass", from_domain, policy, "none", where, spf_ok, dkim_ok)
    disposition = policy
    if record.pct < 100 and (rng or random).random() * 100 >= record.pct:
        disposition = _LOWER[policy]  # 6.6.4: outside the sample, the next policy down
    return DmarcResult("fail", from_domain, policy, disposition, where, False, False,
                       reason="no aligned SPF or DKIM pass")
