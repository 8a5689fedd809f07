"""Addresses an account has written to: the To and Cc of the newest messages in its
Sent mailbox (special use \\Sent, RFC 6154), through the store interface.

check.spam never sends mail from such a known correspondent to Junk on the
classifier's word alone (it stays in INBOX as unsure): a filing error there is
the costliest kind. A forged From: is caught by check.auth (DMARC) instead,
and a DMARC failure cancels the exemption. Answers are cached per account for
TTL seconds, so the Sent mailbox is read at most once per account per TTL.
"""

from __future__ import annotations

import email.utils
from typing import Callable

from twisted.internet import defer

SENT = "\\Sent"
TTL = 600.0
MAX_MESSAGES = 2000  # the newest Sent messages read
MAX_ACCOUNTS = 10000  # accounts cached


class Correspondents:
    def __init__(self, store, clock: Callable[[], float], ttl: float = TTL, max_messages: int = MAX_MESSAGES):
        self.store = store
        self.clock = clock
        self.ttl = ttl
        self.max_messages = max_messages
        self._cache: dict[int, tuple[float, frozenset]] = {}

    def known(self, account) -> defer.Deferred:
        """Deferred[frozenset[str]]: lower-case addresses the account wrote to ({} on error)."""
        hit = self._cache.get(account.id)
        now = self.clock()
        if hit is not None and hit[0] > now:
            return defer.succeed(hit[1])
        d = self._read(account)

        def remember(addresses):
            if len(self._cache) >= MAX_ACCOUNTS:
                self._cache.clear()
            self._cache[account.id] = (now + self.ttl, addresses)
            return addresses
        d.addCallback(remember)
        d.addErrback(lambda _failure: frozenset())  # no Sent mailbox, a store error: no exemption
        return d

    @defer.inlineCallbacks
    def _read(self, account):
        boxes = yield self.store.list_mailboxes(account)
        sent = next((box for box in boxes if box.special_use == SENT), None)
        if sent is None or not sent.exists:
            return frozenset()
        refs = yield self.store.list_messages(account, sent.id)
        ids = [ref.message_id for ref in refs[-self.max_messages:]]
        summaries = yield self.store.message_summaries(account, ids)
        found = set()
        for summary in summaries.values():
            text = ", ".join(summary.get(field) or "" for field in ("to_addr", "cc_addr"))
            for _name, address in email.utils.getaddresses([text]):
                if "@" in address:
                    found.add(address.strip().lower())
        return frozenset(found)


def sender_address(message: bytes) -> str:
    """The (first) From: address of a message, lower case, or ""."""
    from ..mime.headers import decode_bytes, iter_fields, split_header

    header, _ = split_header(message)
    for name, value in iter_fields(header):
        if name == "from":
            pairs = email.utils.getaddresses([" ".join(decode_bytes(value).split())])
            return pairs[0][1].strip().lower() if pairs else ""
    return ""
