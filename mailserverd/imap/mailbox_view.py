"""One session's view of its selected mailbox: sequence numbers and pending updates.

RFC 3501 2.3.1.2: message sequence numbers are per session and change only
when this session is told of an expunge. The view keeps the UIDs in order,
and diff() compares a fresh listing from the store with what the client
knows, producing the untagged EXPUNGE / EXISTS / FETCH FLAGS it must be sent.
"""

from __future__ import annotations

from typing import Iterable

from ..store.api import MessageRef
from . import responses


class MailboxView:
    def __init__(self, mailbox, refs: Iterable[MessageRef], read_only: bool):
        self.mailbox = mailbox
        self.read_only = read_only
        self.refs: list[MessageRef] = list(refs)

    @property
    def exists(self) -> int:
        return len(self.refs)

    def uids(self) -> list[int]:
        return [ref.uid for ref in self.refs]

    def by_sequence(self, sequence_set) -> list[tuple[int, MessageRef]]:
        """(sequence number, ref) pairs a sequence set names, in order."""
        chosen = set(sequence_set.select(range(1, len(self.refs) + 1), len(self.refs)))
        return [(number, self.refs[number - 1]) for number in sorted(chosen)]

    def by_uid(self, uid_set) -> list[tuple[int, MessageRef]]:
        """RFC 3501 6.4.8: a UID set names only the UIDs that exist; "*" is the largest."""
        largest = self.refs[-1].uid if self.refs else 0
        wanted = set(uid_set.select(self.uids(), largest))
        return [(index + 1, ref) for index, ref in enumerate(self.refs) if ref.uid in wanted]

    def replace(self, ref: MessageRef) -> None:
        for index, old in enumerate(self.refs):
            if old.uid == ref.uid:
                self.refs[index] = ref
                return

    def diff(self, fresh: list[MessageRef], allow_expunge: bool) -> list[bytes]:
        """Untagged responses bringing the client to `fresh`.

        Without allow_expunge (RFC 3501 7.4.1: not during FETCH, STORE or
        SEARCH) vanished messages stay in the view, and new ones are not
        announced either, since EXISTS must stay consistent with the numbers.
        """
        out: list[bytes] = []
        fresh_by_uid = {ref.uid: ref for ref in fresh}
        if allow_expunge:
            index = 0
            while index < len(self.refs):
                if self.refs[index].uid not in fresh_by_uid:
                    out.append(responses.expunge(index + 1))
                    del self.refs[index]
                else:
                    index += 1
        for number, ref in enumerate(self.refs, start=1):
            now = fresh_by_uid.get(ref.uid)
            if now is not None and now.flags != ref.flags:
                self.refs[number - 1] = now
                out.append(responses.fetch_response(number, [
                    ("FLAGS", [responses.Atom(flag) for flag in sorted(now.flags)])]))
        if allow_expunge:
            known = {ref.uid for ref in self.refs}
            added = [ref for ref in fresh if ref.uid not in known]
            if added:
                self.refs.extend(added)
                self.refs.sort(key=lambda ref: ref.uid)
                out.append(responses.exists(len(self.refs)))
        return out
