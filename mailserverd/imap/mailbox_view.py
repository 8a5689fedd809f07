"""One session's view of its selected mailbox: sequence numbers and pending updates.

RFC 3501 2.3.1.2: message sequence numbers are per session and change only
when this session is told of an expunge. The view keeps the messages in UID
order, and sync() applies what the store's change feed reports since the
view's position, producing the untagged EXPUNGE (or VANISHED) / EXISTS / RECENT
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
                 recent_registry: RecentRegistry = RECENT, synced_modseq: int | None = None):
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
        # The change-log position this view reflects (account-wide modseq).
        self.synced_modseq = synced_modseq if synced_modseq is not None else self.highest_modseq

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

    def sync(self, highest: int, changed: list[MessageRef], vanished: list[int],
             allow_expunge: bool, *, condstore: bool = False, qresync: bool = False) -> list[bytes]:
        """Untagged responses for what the store says changed after synced_modseq:
        `changed` refs (flags, or new messages) and `vanished` UIDs.

        Without allow_expunge (RFC 3501 7.4.1: not during FETCH, STORE or
        SEARCH) expunges and new messages are held back, since EXISTS must
        stay consistent with the numbers; synced_modseq then stays put so a
        later call sees them again. With QRESYNC enabled expunges are
        reported as VANISHED (RFC 7162 3.2.10).
        """
        out: list[bytes] = []
        held = False
        added_keywords = _keywords(changed, self.keywords)
        if added_keywords:
            # A keyword must be in FLAGS before a FETCH shows it (RFC 3501 7.2.6).
            self.keywords.extend(added_keywords)
            out.append(responses.flags_response(SYSTEM_FLAGS + tuple(self.keywords)))
        gone = [uid for uid in sorted(set(vanished)) if self.number_of(uid) is not None]
        if gone and allow_expunge:
            if qresync:
                out.append(responses.vanished(gone))
                self.remove_uids(gone)
            else:
                out.extend(responses.expunge(number) for number in self.remove_uids(gone))
        elif gone:
            held = True
        largest = self.largest_uid
        added = []
        for ref in sorted(changed, key=lambda r: r.uid):
            if ref.uid > largest:
                added.append(ref)
                continue
            number = self.number_of(ref.uid)
            if number is None:
                continue
            old = self.refs[number - 1]
            if old.modseq >= ref.modseq:
                continue
            self.refs[number - 1] = ref
            self.highest_modseq = max(self.highest_modseq, ref.modseq)
            if old.flags != ref.flags:
                items = [("FLAGS", self.flags_of(ref))]
                if qresync:
                    items.insert(0, ("UID", ref.uid))  # RFC 7162 3.2.4
                if condstore:
                    items.append(("MODSEQ", [ref.modseq]))  # RFC 7162 3.1.4
                out.append(responses.fetch_response(number, items))
        if added and allow_expunge:
            self.refs.extend(added)
            self._uids.extend(ref.uid for ref in added)
            self.highest_modseq = max([self.highest_modseq] + [ref.modseq for ref in added])
            out.append(responses.exists(len(self.refs)))
            new_uids = [ref.uid for ref in added]
            self.recent |= (self._registry.unclaimed(self._recent_key, new_uids) if self.read_only
                            else self._registry.claim(self._recent_key, new_uids))
            out.append(responses.recent(len(self.recent)))
        elif added:
            held = True
        if not held:
            self.synced_modseq = max(self.synced_modseq, highest)
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
