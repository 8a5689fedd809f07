"""The retry schedule of the outbound queue: pure functions of attempts and time.

RFC 5321 4.5.4.1: retry no sooner than 30 minutes apart is the guidance for
the steady state, giving up after 4-5 days. Early retries come faster
(1, 5, 15 minutes) because most temporary failures (greylisting, a
restarting MX) clear quickly; after 4 hours every retry is 4 hours apart.
"""

from __future__ import annotations

MINUTE = 60.0
HOUR = 3600.0
# Delay after the 1st, 2nd, ... failed attempt; the last one repeats.
BACKOFF = (1 * MINUTE, 5 * MINUTE, 15 * MINUTE, 30 * MINUTE, 1 * HOUR, 2 * HOUR, 4 * HOUR)


def backoff_delay(attempts: int) -> float:
    """Seconds to wait after `attempts` failed attempts (attempts >= 1)."""
    if attempts < 1:
        return 0.0
    return BACKOFF[min(attempts, len(BACKOFF)) - 1]


def is_expired(created_at: float, now: float, lifetime: float) -> bool:
    """True once a message has been queued for its whole lifetime (then it bounces)."""
    return now >= created_at + lifetime


def next_attempt_at(created_at: float, attempts: int, now: float, lifetime: float) -> float | None:
    """When to try again after the `attempts`-th failed attempt at `now`; None = give up.

    The last retry is moved to the expiry instant rather than past it, so a
    message gets one final attempt at the end of its lifetime before it bounces.
    """
    if is_expired(created_at, now, lifetime):
        return None
    return min(now + backoff_delay(attempts), created_at + lifetime)


def schedule(created_at: float, lifetime: float) -> list[float]:
    """Every attempt time of a message that never succeeds (first at created_at)."""
    times = [created_at]
    attempts = 1
    while True:
        following = next_attempt_at(created_at, attempts, times[-1], lifetime)
        if following is None:
            return times
        times.append(following)
        attempts += 1
