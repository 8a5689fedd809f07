"""One session's view of its selected mailbox: sequence numbers and pending updates.

RFC 3501 2.3.1.2: message sequence numbers are per session and change only
when this session is told of an expunge. The view keeps the messages in UID
order, and sync() compares a fresh listing from the store with what the
client knows, producing the untagged EXPUNGE (or VANISHED) / EXISTS / RECENT
/ FETCH it must be sent.
"""

from __future__ import annotations

import bisect
import threading
from typing import Iterable

from ..store.api import SYSTEM_FLAGS, MessageRef
from . import responses


class RecentRegistry:
    """RFC 3501 2.3.2 \\Recent: a message is recent in exactly one session, the
    first read-write session that sees it. Kept per process: after a restart
    messages nobody has seen yet are recent again, which the RFC allows."""

    def __init__(self) -> None:
        self._claimed: dict[tuple, int] = {}
        self._lock = threading.Lock()

    def claim(self, mailbox_id: tuple, uids: Iterable[int]) -> set[int]:
        """Mark the new UIDs as seen by a session; returns those that are recent for it."""
        with self._lock:
            highest = self._claimed.get(mailbox_id, 0)
            mine = {uid for uid in uids if uid > highest}
            if mine:
                self._claimed[mailbox_id] = max(mine)
            return mine

    def unclaimed(self, mailbox_id: tuple, uids: Iterable[int]) -> set[int]:
        """The UIDs no read-write session has seen yet (EXAMINE, STATUS RECENT)."""
        with self._lock:
            highest = self._claimed.get(mailbox_id, 0)
        return {uid for uid in uids if uid > highest}

    def count_unclaimed(self, mailbox_id: tuple, uids: Iterable[int]) -> int:
        return len(self.unclaimed(mailbox_id, uids))


RECENT = RecentRegistry()


def recent_key(mailbox) -> tuple:
    """Row ids can be reused after a DELETE; the UIDVALIDITY tells the mailboxes apart."""
    return (mailbox.id, mailbox.uidvalidity)


class MailboxView:
    def __init__(self, mailbox, refs: Iterable[MessageRef], read_only: bool,
                 recent_registry: RecentRegistry = RECENT):
        self.mailbox = mailbox
        self.read_only = read_only
        self.refs: list[MessageRef] = list(refs)
        self._uids: list[int] = [ref.uid for ref in self.refs]
        self._registry = recent_registry
        self._recent_key = recent_key(mailbox)
        # RFC 3501 6.3.2: EXAMINE shows \Recent without taking it from others.
        self.recent: set[int] = (recent_registry.unclaimed(self._recent_key, self._uids) if read_only
                                 else recent_registry.claim(self._recent_key, self._uids))
        self.highest_modseq = max([mailbox.highestmodseq] + [ref.modseq for ref in self.refs])
        self.keywords: list[str] = _keywords(self.refs, [])

    @property
    def exists(self) -> int:
        return len(self.refs)

    def uids(self) -> list[int]:
        return self._uids

    @property
    def largest_uid(self) -> int:
        return self._uids[-1] if self._uids else 0

    def flags_of(self, ref: MessageRef) -> list:
        """FLAGS as sent to this session: the stored flags plus \\Recent if it is ours."""
        names = sorted(ref.flags)
        if ref.uid in self.recent:
            names.append("\\Recent")
        return [responses.Atom(flag) for flag in names]

    def by_sequence(self, sequence_set) -> list[tuple[int, MessageRef]]:
        """(sequence number, ref) pairs a sequence set names, in order."""
        count = len(self.refs)
        pairs = []
        for low, high in sequence_set.resolve(count):
            for number in range(max(low, 1), min(high, count) + 1):
                pairs.append((number, self.refs[number - 1]))
        return pairs

    def by_uid(self, uid_set) -> list[tuple[int, MessageRef]]:
        """RFC 3501 6.4.8: a UID set names only the UIDs that exist; "*" is the largest."""
        pairs = []
        for low, high in uid_set.resolve(self.largest_uid):
            start = bisect.bisect_left(self._uids, low)
            stop = bisect.bisect_right(self._uids, high)
            pairs.extend((index + 1, self.refs[index]) for index in range(start, stop))
        return pairs

    def number_of(self, uid: int) -> int | None:
        index = bisect.bisect_left(self._uids, uid)
        if index < len(self._uids) and self._uids[index] == uid:
            return index + 1
        return None

    def replace(self, ref: MessageRef) -> bytes | None:
        """Store a newer ref; returns an untagged FLAGS line if it carries a
        keyword the client has not been told of yet."""
        number = self.number_of(ref.uid)
        if number is None:
            return None
        self.refs[number - 1] = ref
        self.highest_modseq = max(self.highest_modseq, ref.modseq)
        added = _keywords([ref], self.keywords)
        if not added:
            return None
        self.keywords.extend(added)
        return responses.flags_response(SYSTEM_FLAGS + tuple(self.keywords))

    def sync(self, fresh: list[MessageRef], allow_expunge: bool, *, condstore: bool = False,
             qresync: bool = False) -> list[bytes]:
        """Untagged responses bringing the client to `fresh` (ordered by UID).

        Without allow_expunge (RFC 3501 7.4.1: not during FETCH, STORE or
        SEARCH) vanished messages stay in the view, and new ones are not
        announced either, since EXISTS must stay consistent with the numbers.
        With QRESYNC enabled expunges are reported as VANISHED (RFC 7162 3.2.10).
        """
        out: list[bytes] = []
        fresh_by_uid = {ref.uid: ref for ref in fresh}
        added_keywords = _keywords(fresh, self.keywords)
        if added_keywords:
            # A keyword must be in FLAGS before a FETCH shows it (RFC 3501 7.2.6).
            self.keywords.extend(added_keywords)
            out.append(responses.flags_response(SYSTEM_FLAGS + tuple(self.keywords)))
        if allow_expunge:
            gone = [uid for uid in self._uids if uid not in fresh_by_uid]
            if gone:
                if qresync:
                    out.append(responses.vanished(gone))
                else:
                    # Each EXPUNGE renumbers the rest (RFC 3501 7.4.1): the k-th
                    # removal (0-based) of original number n is reported as n - k.
                    gone_set = set(gone)
                    removed = 0
                    for index, uid in enumerate(self._uids):
                        if uid in gone_set:
                            out.append(responses.expunge(index + 1 - removed))
                            removed += 1
                kept = [ref for ref in self.refs if ref.uid in fresh_by_uid]
                self.refs = kept
                self._uids = [ref.uid for ref in kept]
                self.recent -= set(gone)
        for index, ref in enumerate(self.refs):
            now = fresh_by_uid.get(ref.uid)
            if now is None or now.modseq == ref.modseq:
                continue
            self.refs[index] = now
            if now.flags != ref.flags:
                items = [("FLAGS", self.flags_of(now))]
                if qresync:
                    items.insert(0, ("UID", now.uid))  # RFC 7162 3.2.4
                if condstore:
                    items.append(("MODSEQ", [now.modseq]))  # RFC 7162 3.1.4
                out.append(responses.fetch_response(index + 1, items))
        if allow_expunge:
            added = [ref for ref in fresh if ref.uid > self.largest_uid]
            if added:
                self.refs.extend(added)
                self._uids.extend(ref.uid for ref in added)
                out.append(responses.exists(len(self.refs)))
                new_uids = [ref.uid for ref in added]
                self.recent |= (self._registry.unclaimed(self._recent_key, new_uids) if self.read_only
                                else self._registry.claim(self._recent_key, new_uids))
                out.append(responses.recent(len(self.recent)))
        self.highest_modseq = max([self.highest_modseq] + [ref.modseq for ref in fresh])
        return out

    def remove_uids(self, uids: Iterable[int]) -> list[int]:
        """Drop messages this session expunged itself; returns their old sequence
        numbers in the order EXPUNGE responses must carry them."""
        gone = set(uids)
        numbers = []
        removed = 0
        for index, uid in enumerate(self._uids):
            if uid in gone:
                numbers.append(index + 1 - removed)
                removed += 1
        self.refs = [ref for ref in self.refs if ref.uid not in gone]
        self._uids = [ref.uid for ref in self.refs]
        self.recent -= gone
        return numbers


def _keywords(refs: Iterable[MessageRef], known: list[str]) -> list[str]:
    """Keywords used by refs and not in known, in first-seen order."""
    seen = set(known)
    out = []
    for ref in refs:
        for flag in ref.flags:
            if not flag.startswith("\\") and flag not in seen:
                seen.add(flag)
                out.append(flag)
    return sorted(out)
