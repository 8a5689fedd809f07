"""DKIM verification (RFC 6376 6) of EVERY signature of a message, with dkimpy.

`verify_all(message, dnsfunc)` returns one DkimResult per DKIM-Signature
field, top first (at most MAX_SIGNATURES; RFC 6376 6.1 lets a verifier bound
the work). Results as RFC 8601 2.7.1 names them:

    pass       the signature verified
    fail       the signature or the body hash did not verify (RFC 6376 3.7)
    neutral    the signature field is malformed (RFC 6376 6.1.1 PERMFAIL)
    permerror  no usable key in DNS (RFC 6376 6.1.2), or a key under 1024 bits
    temperror  the key lookup failed temporarily (RFC 6376 6.1.2 TEMPFAIL)

`dnsfunc` is dkimpy's convention (name, timeout=...) -> bytes | None; raising
TempDnsError from it marks the signature temperror.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value

from .dns import TempDnsError

MAX_SIGNATURES = 10
_SIGNATURE_NAME = re.compile(rb"dkim-signature", re.I)
MIN_KEY_BITS = 1024  # RFC 8301 3.2

_quiet = logging.getLogger("mailserverd.checks.dkimpy")  # dkimpy logs every failure at ERROR
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False
_quiet.disabled = True  # the result says what failed; check.auth logs what matters


@dataclass(frozen=True)
class DkimResult:
    result: str
    domain: str = ""  # d=, the signing domain (RFC 8601 header.d)
    selector: str = ""  # s= (header.s)
    b: str = ""  # the first 8 characters of b= (header.b, RFC 6008)
    identity: str = ""  # i= (header.i)
    algorithm: str = ""  # a= (header.a)
    reason: str = ""


def _text(value) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value or "")


def _fields(raw: bytes) -> dict:
    try:
        return parse_tag_value(raw)
    except (InvalidTagValueList, ValueError, TypeError):
        return {}


def verify_all(message: bytes, dnsfunc: Callable) -> list[DkimResult]:
    """One DkimResult per DKIM-Signature (top first, bounded). Blocking (DNS)."""
    if _SIGNATURE_NAME.search(message) is None:
        return []  # unsigned (most mail): no need for dkimpy to parse the message at all
    try:
        verifier = dkim.DKIM(message, logger=_quiet, minkey=MIN_KEY_BITS)
    except Exception as exc:  # dkimpy's parser on hostile input
        if b"dkim-signature" not in message.lower():
            return []
        return [DkimResult("neutral", reason=f"unparsable message: {exc.__class__.__name__}")]
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    results = []
    for index, raw in enumerate(signatures[:MAX_SIGNATURES]):
        fields = _fields(raw)
        base = dict(domain=_text(fields.get(b"d")).lower(), selector=_text(fields.get(b"s")),
                    b=re.sub(r"\s+", "", _text(fields.get(b"b")))[:8], identity=_text(fields.get(b"i")),
                    algorithm=_text(fields.get(b"a")))
        key_missing = []

        def lookup(name, timeout=5, _missing=key_missing):
            record = dnsfunc(name, timeout=timeout)
            try:
                dkim.evaluate_pk(name, record)
            except Exception as exc:  # RFC 6376 6.1.2: no key, or not a usable one (e.g. bad base64)
                _missing.append(str(exc))
            return record

        try:
            valid = verifier.verify(idx=index, dnsfunc=lookup)
        except TempDnsError as exc:
            results.append(DkimResult("temperror", reason=f"key lookup: {exc}", **base))
            continue
        except dkim.KeyFormatError as exc:  # e.g. a key under MIN_KEY_BITS (RFC 8301 3.2)
            results.append(DkimResult("permerror", reason=f"unusable key: {exc}", **base))
            continue
        except dkim.ValidationError as exc:
            if "body hash mismatch" in str(exc):  # RFC 6376 3.7: the body was changed
                results.append(DkimResult("fail", reason="body hash did not verify", **base))
            else:  # missing tags, expired (x=), i= outside d= (RFC 6376 6.1.1)
                results.append(DkimResult("neutral", reason=f"bad signature field: {exc}", **base))
            continue
        except dkim.DKIMException as exc:
            results.append(DkimResult("neutral", reason=f"bad signature field: {exc}", **base))
            continue
        except Exception as exc:  # dkimpy on hostile input (e.g. bad base64): a malformed signature
            results.append(DkimResult("neutral", reason=f"{exc.__class__.__name__}: {exc}", **base))
            continue
        if valid:
            results.append(DkimResult("pass", **base))
        elif key_missing:
            results.append(DkimResult("permerror", reason=f"no usable key: {key_missing[0]}"[:200], **base))
        else:
            results.append(DkimResult("fail", reason="signature did not verify", **base))
    return results
