"""ARC (RFC 8617) chain validation with dkimpy's ARC verifier.

`verify_chain(message, dnsfunc)` returns an ArcResult: "none" (no ARC sets),
"pass" (every set validates and the newest ARC-Message-Signature verifies,
RFC 8617 5.2), or "fail"; "temperror" when a key lookup failed temporarily
(the chain may well be fine). `instances` is the number of ARC sets and
`oldest_pass` the lowest instance whose AMS still verifies (RFC 8617 7.2,
header.oldest-pass), 0 when all do.

Sealing the mail we forward (aliases with remote targets) is
outbound/forward.py's, with dkimpy's arc_sign; its cv= is this result.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable

import dkim

from .dns import TempDnsError

MAX_ARC_SETS = 50  # RFC 8617 4.2.1: instance values run from 1 to 50

_quiet = logging.getLogger("mailserverd.checks.arcpy")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False
_quiet.disabled = True

_ARC_SEAL = re.compile(rb"^arc-seal[ \t]*:", re.I | re.M)


@dataclass(frozen=True)
class ArcResult:
    result: str  # none, pass, fail, temperror
    instances: int = 0
    oldest_pass: int = 0
    domain: str = ""  # d= of the newest ARC-Seal (who handed us the message)
    reason: str = ""


def verify_chain(message: bytes, dnsfunc: Callable) -> ArcResult:
    """RFC 8617 5.2 validation of the message's ARC sets. Blocking (DNS)."""
    end = message.find(b"\r\n\r\n")
    header = message if end < 0 else message[:end + 2]
    count = len(_ARC_SEAL.findall(header))
    if count == 0:
        return ArcResult("none")
    if count > MAX_ARC_SETS:
        return ArcResult("fail", count, reason="more than 50 ARC sets")
    try:
        cv, sets, reason = dkim.arc_verify(message, logger=_quiet, dnsfunc=dnsfunc)
    except TempDnsError as exc:
        return ArcResult("temperror", count, reason=str(exc))
    except Exception as exc:  # dkimpy on hostile input: the chain is not valid
        return ArcResult("fail", count, reason=f"{exc.__class__.__name__}: {exc}")
    domain = ""
    if sets:
        newest = max(sets, key=lambda item: item.get("instance", 0))
        domain = newest.get("as-domain", b"")
        domain = domain.decode("ascii", "replace") if isinstance(domain, bytes) else str(domain)
    if cv == dkim.CV_Pass:
        oldest = 0
        for item in sorted(sets, key=lambda item: item.get("instance", 0)):
            if item.get("ams-valid"):
                oldest = item["instance"]
                break
        return ArcResult("pass", count, 0 if oldest == 1 else oldest, domain.lower(), str(reason))
    if cv == dkim.CV_None:
        return ArcResult("none", count, reason=str(reason))
    return ArcResult("fail", count, domain=domain.lower(), reason=str(reason)[:200])
