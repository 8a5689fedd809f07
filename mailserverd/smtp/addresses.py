"""Who we accept mail for: local/relay decisions at RCPT, and sender ownership.

Inbound (the MX) accepts recipients only in local domains and refuses
everything else as relaying (554 5.7.1), including the classic tricks that
made old MTAs relay: the percent hack, bang paths, source routes, quoted or
doubled "@", and address literals. Submission accepts remote recipients for
the outbound queue, except addresses that hard-bounced recently (550 5.1.1);
without an outbound queue it refuses them with a temporary error.
Forwarding is not relaying: an alias the admin made may have remote targets
(forwarded by outbound/forward.py), and a bounce to one of our SRS addresses
goes back to the sender it stands for, only when its hash and age verify.
"""

from __future__ import annotations

import dataclasses

from twisted.internet import defer
from twisted.logger import Logger

from ..outbound.srs import SrsError, is_srs
from ..store.api import Account
from . import replies
from .replies import Reply
from .syntax import Path

# Characters that route mail onwards in some MTAs' local parts: "a%b@local" (percent
# hack), "b!a@local" (UUCP bang path), "a@b@local" and "\"a@b\"@local".
_ROUTING_CHARACTERS = frozenset("%!@")
log = Logger(namespace="mailserverd.smtp")


@dataclasses.dataclass(frozen=True)
class RecipientDecision:
    reply: Reply
    accounts: tuple[Account, ...] = ()
    address: str = ""  # the address that was resolved, for the log and the Received "for"
    forward: tuple[str, ...] = ()  # remote targets of an alias, or the sender an SRS address reverses to


def is_relay_trick(path: Path) -> bool:
    """True for forms that ask us to forward elsewhere, whatever the domain says."""
    if path.is_literal:  # "a@[192.0.2.1]": we never deliver to an address literal
        return True
    return any(char in _ROUTING_CHARACTERS for char in path.local)


def postmaster_candidates(hostname: str) -> list[str]:
    """Where a bare <Postmaster> (RFC 5321 4.1.1.3) goes: our host name, then its parent domain."""
    candidates = [f"postmaster@{hostname}"]
    if hostname.count(".") >= 2:
        candidates.append(f"postmaster@{hostname.split('.', 1)[1]}")
    return candidates


@defer.inlineCallbacks
def decide_recipient(store, path: Path, hostname: str, submission: bool, outbound=None, forwarder=None):
    """Deferred[RecipientDecision] for one RCPT (after syntax checks).

    store: the AsyncStore (is_local_domain, resolve_recipient, resolve_targets).
    outbound: the OutboundService (is_suppressed) or None. A remote recipient
    accepted on submission gets a decision with no accounts. forwarder: the
    outbound.forward.Forwarder, or None: then aliases reach local accounts only
    and SRS addresses are unknown users. With it, an alias's remote targets
    (admin-configured forwards) are in `forward`, and a bounce address of ours
    (SRS) is accepted only with a valid hash and a fresh timestamp.
    """
    if not path.domain:  # a bare <Postmaster>
        for address in postmaster_candidates(hostname):
            accounts = yield store.resolve_recipient(address)
            if accounts:
                return RecipientDecision(replies.RECIPIENT_OK, tuple(accounts), address)
        return RecipientDecision(replies.UNKNOWN_USER)
    if forwarder is not None and not path.is_literal and not path.route and is_srs(path.local):
        local = yield store.is_local_domain(path.domain)
        if local:
            decision = yield _srs_return(store, forwarder, path)
            return decision
    if is_relay_trick(path):
        return RecipientDecision(replies.RELAY_DENIED)
    # RFC 5321 C: a source route is ignored, but a route through a foreign domain is
    # a request to relay, and is refused as one.
    for hop in path.route:
        local = yield store.is_local_domain(hop)
        if not local:
            return RecipientDecision(replies.RELAY_DENIED)
    local = yield store.is_local_domain(path.domain)
    address = f"{path.local}@{path.domain}"
    if not local:
        if not submission:
            return RecipientDecision(replies.RELAY_DENIED)
        if outbound is None:
            return RecipientDecision(replies.REMOTE_NOT_AVAILABLE)
        suppressed = yield outbound.is_suppressed(address)
        if suppressed:
            return RecipientDecision(replies.RECIPIENT_SUPPRESSED, (), address)
        return RecipientDecision(replies.RECIPIENT_OK, (), address)
    if forwarder is not None:
        accounts, remote = yield store.resolve_targets(address)
    else:
        accounts, remote = (yield store.resolve_recipient(address)), []
    if not accounts and not remote:
        return RecipientDecision(replies.UNKNOWN_USER, (), address)
    return RecipientDecision(replies.RECIPIENT_OK, tuple(accounts), address, tuple(remote))


@defer.inlineCallbacks
def _srs_return(store, forwarder, path: Path):
    """A bounce to SRS0=...@ourdomain goes back to the original sender (srs.py), local or
    remote; a forged, tampered or expired address is an unknown user (550 5.1.1)."""
    address = f"{path.local}@{path.domain}"
    try:
        original = forwarder.reverse(path.local)
    except SrsError as exc:
        log.info("smtp: rcpt <{rcpt}> refused: {reason}", rcpt=address, reason=str(exc))
        return RecipientDecision(replies.UNKNOWN_USER, (), address)
    local = yield store.is_local_domain(original.rpartition("@")[2])
    if local:
        accounts = yield store.resolve_recipient(original)
        if not accounts:
            return RecipientDecision(replies.UNKNOWN_USER, (), address)
        return RecipientDecision(replies.RECIPIENT_OK, tuple(accounts), original)
    return RecipientDecision(replies.RECIPIENT_OK, (), address, (original,))


def owns_address(allowed: frozenset[str], address: str) -> bool:
    """Case-insensitive membership of `address` in the account's sender addresses."""
    return address.lower() in {item.lower() for item in allowed}
