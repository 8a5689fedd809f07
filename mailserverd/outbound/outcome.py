"""What one delivery attempt means: final or retried recipients, bounce kinds, DSNs.

Pure decisions over a claimed delivery and the transport's per-recipient
results; the worker does the I/O. RFC 3461 4.1 NOTIFY decides who hears of
a failure (default: FAILURE) or a success; a null sender never gets a DSN
(RFC 5321 4.5.5, RFC 3464 2).
"""

from __future__ import annotations

import dataclasses

from . import schedule
from .queue import COMPLAINT, HARD, SOFT, Claimed

EXPIRED_STATUS = "4.4.7"  # RFC 3463 3.5: delivery time expired


@dataclasses.dataclass(frozen=True)
class Decision:
    """The results to record (deferred ones past the lifetime turned into failures), when to
    retry, what to count, and which results the sender asked to be told about."""

    results: tuple
    retry_at: float | None
    bounces: tuple  # (address, kind, code, enhanced, text)
    notify: tuple  # results for the DSN (empty: no DSN)
    last_error: str


def _result_type():
    from .types import RecipientResult
    return RecipientResult


def align(claimed: Claimed, results) -> list:
    """One result per pending recipient, in queue order; a recipient the transport did not
    answer for is deferred (never silently dropped)."""
    RecipientResult = _result_type()
    by_address = {}
    for result in results or ():
        by_address.setdefault(result.recipient.lower(), result)
    aligned = []
    for recipient in claimed.recipients:
        result = by_address.get(recipient.address.lower())
        if result is None:
            result = RecipientResult(recipient=recipient.address, status="deferred", code=0, enhanced="4.3.0",
                                     text="no result from the delivery attempt")
        elif result.recipient != recipient.address:
            result = dataclasses.replace(result, recipient=recipient.address)
        aligned.append(result)
    return aligned


def expired_result(result):
    """A deferred recipient whose lifetime ran out becomes a failure saying so."""
    last = f"{result.code} {result.enhanced} {result.text}".strip() if result.code else result.text
    text = "delivery time expired; the last attempt said: " + (last or "no answer")
    return dataclasses.replace(result, status="failed", enhanced=EXPIRED_STATUS, text=text[:2000])


def describe(result) -> str:
    host = f" ({result.remote_host})" if result.remote_host else ""
    code = f"{result.code} " if result.code else ""
    enhanced = f"{result.enhanced} " if result.enhanced else ""
    return f"{result.recipient}: {code}{enhanced}{result.text}{host}"


def decide(claimed: Claimed, results, now: float, classify, should_notify) -> Decision:
    """classify(result) -> "hard"|"soft"|"complaint"|"ok"; should_notify(notify, status) -> bool."""
    lifetime = claimed.expires_at - claimed.created_at
    retry_at = schedule.next_attempt_at(claimed.created_at, claimed.attempts + 1, now, lifetime)
    notify_of = {recipient.address: recipient.notify for recipient in claimed.recipients}
    final, bounces, notify, errors = [], [], [], []
    for result in align(claimed, results):
        kind = None
        if result.status == "deferred":
            errors.append(describe(result))
            if retry_at is None:
                result = expired_result(result)
                kind = SOFT  # never accepted nor refused for good: not evidence the address is dead
        elif result.status == "failed":
            errors.append(describe(result))
            kind = classify(result)
            if kind not in (HARD, SOFT, COMPLAINT):
                kind = SOFT
        final.append(result)
        if kind is not None:
            bounces.append((result.recipient, kind, result.code, result.enhanced, result.text))
        if result.status != "deferred" and claimed.sender and should_notify(notify_of.get(result.recipient),
                                                                           result.status):
            notify.append(result)
    return Decision(results=tuple(final), retry_at=retry_at, bounces=tuple(bounces), notify=tuple(notify),
                    last_error="; ".join(errors))


def orcpts(claimed: Claimed) -> dict[str, str]:
    """recipient -> ORCPT "addr-type;address" for the DSN's Original-Recipient fields."""
    return {recipient.address: recipient.orcpt for recipient in claimed.recipients if recipient.orcpt}
