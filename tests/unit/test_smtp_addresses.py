"""Relay decisions at RCPT and the per-IP / per-account limiters (injected clock)."""

from __future__ import annotations

import pytest
from twisted.internet import defer, task

from mailserverd.smtp import replies
from mailserverd.smtp.addresses import decide_recipient, is_relay_trick, owns_address
from mailserverd.smtp.ratelimit import ConnectionLimiter, RateLimiter
from mailserverd.smtp.syntax import Path, parse_path
from mailserverd.store.api import Account

ALICE = Account(id=1, address="alice@local.test", shard=0)
BOB = Account(id=2, address="bob@local.test", shard=0)


class DirectoryDouble:
    """The two AsyncStore directory calls decide_recipient makes, answered from dicts."""

    def __init__(self):
        self.domains = {"local.test", "mx.local.test"}
        self.addresses = {"alice@local.test": [ALICE], "team@local.test": [ALICE, BOB],
                          "postmaster@local.test": [BOB]}
        self.asked = []

    def is_local_domain(self, domain):
        return defer.succeed(domain in self.domains)

    def resolve_recipient(self, address):
        self.asked.append(address)
        return defer.succeed(list(self.addresses.get(address.lower(), [])))


def decide(text, submission=False, store=None):
    store = store or DirectoryDouble()
    path = parse_path(text, allow_at_in_local=True)
    box = []
    decide_recipient(store, path, "mx.local.test", submission).addBoth(box.append)
    return box[0]


@pytest.mark.parametrize("text", [
    "<a%b@local.test>", "<b!a@local.test>", '<"a@b"@local.test>', "<a@b@local.test>",
    "<alice@[192.0.2.1]>", "<@remote.test:alice@local.test>", "<@local.test:a@remote.test>",
    "<a@remote.test>", '<"a%remote.test"@local.test>',
])
def test_relay_tricks_are_refused_on_the_mx(text):
    """Percent hack, bang path, quoted or doubled @, literals, foreign routes and remote domains: 554 5.7.1."""
    store = DirectoryDouble()
    assert decide(text, store=store).reply == replies.RELAY_DENIED
    assert store.asked == []  # refused before any user lookup


def test_local_recipient_resolves_to_accounts():
    """A local user is accepted with the accounts it reaches (aliases expand to several)."""
    single = decide("<Alice@LOCAL.test>")
    team = decide("<team@local.test>")
    assert single.reply == replies.RECIPIENT_OK and single.accounts == (ALICE,)
    assert team.accounts == (ALICE, BOB)


def test_route_through_local_domain_is_ignored():
    """A source route through our own domain is ignored (RFC 5321 C) and the mailbox delivered."""
    assert decide("<@local.test:alice@local.test>").accounts == (ALICE,)


def test_unknown_local_user_gets_550_5_1_1():
    """A local domain without that user or alias (and no catch-all) gets 550 5.1.1."""
    assert decide("<nobody@local.test>").reply == replies.UNKNOWN_USER


def test_remote_recipient_on_submission_is_a_temporary_refusal():
    """Submission refuses remote recipients with 451 4.3.2 until the outbound queue exists."""
    decision = decide("<friend@remote.test>", submission=True)
    assert decision.reply == replies.REMOTE_NOT_AVAILABLE and decision.reply.code == 451


def test_bare_postmaster_reaches_the_postmaster_of_our_domain():
    """<Postmaster> without a domain goes to postmaster@ our host name, else its parent domain."""
    box = []
    decide_recipient(DirectoryDouble(), Path("postmaster", ""), "mx.local.test", False).addBoth(box.append)
    assert box[0].accounts == (BOB,) and box[0].address == "postmaster@local.test"


def test_is_relay_trick_accepts_plain_local_parts():
    """Ordinary local parts (dots, plus, hyphen) are not tricks."""
    assert not is_relay_trick(parse_path("<first.last+tag-x@local.test>"))


def test_owns_address_is_case_insensitive():
    """Sender ownership compares addresses without regard to case."""
    assert owns_address(frozenset({"alice@local.test"}), "Alice@Local.Test")
    assert not owns_address(frozenset({"alice@local.test"}), "bob@local.test")


# -- limiters --------------------------------------------------------------------

def test_connection_limiter_counts_per_ip_and_releases():
    """At the limit a new connection from the same IP is refused; other IPs and released slots are fine."""
    limiter = ConnectionLimiter(2)
    assert limiter.acquire("192.0.2.1") and limiter.acquire("192.0.2.1")
    assert not limiter.acquire("192.0.2.1")
    assert limiter.acquire("192.0.2.2")
    limiter.release("192.0.2.1")
    assert limiter.acquire("192.0.2.1")
    assert limiter.count("192.0.2.1") == 2


def test_rate_limiter_allows_rate_per_period_then_refills_with_the_clock():
    """rate events per period pass, the next is refused, and time refills the bucket."""
    clock = task.Clock()
    limiter = RateLimiter(rate=3, period=60.0, clock=clock)
    assert [limiter.allow("ip") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("other")
    clock.advance(20.0)  # one token back
    assert limiter.allow("ip") and not limiter.allow("ip")


def test_zero_limits_mean_unlimited():
    """A limit of 0 never refuses."""
    clock = task.Clock()
    assert all(RateLimiter(0, 60.0, clock).allow("k") for _ in range(1000))
    limiter = ConnectionLimiter(0)
    assert all(limiter.acquire("ip") for _ in range(1000))


def test_rate_limiter_memory_stays_bounded(monkeypatch):
    """Past MAX_KEYS buckets, fully refilled ones are forgotten."""
    from mailserverd.smtp import ratelimit
    monkeypatch.setattr(ratelimit, "MAX_KEYS", 100)
    clock = task.Clock()
    limiter = RateLimiter(rate=2, period=1.0, clock=clock)
    for n in range(1000):
        limiter.allow(f"ip{n}")
        clock.advance(0.1)
    assert len(limiter._buckets) <= 100
