"""A POP3 session's view of the maildrop (RFC 1939 5-6): a numbered snapshot of
INBOX taken at login, with deletion marks that only QUIT turns into expunges."""

from __future__ import annotations

import dataclasses
from typing import Iterable


class NoSuchMessage(Exception):
    """The message number names nothing (out of range or marked deleted); str() is the reply text."""


@dataclasses.dataclass(frozen=True)
class Entry:
    number: int  # 1-based message number, fixed for the session (RFC 1939 5)
    uid: int  # IMAP UID in INBOX
    message_id: int  # the store's message row
    size: int  # octets (RFC 1939 5: a line end counts as 2)
    unique_id: str  # RFC 1939 7 UIDL


def unique_id(uidvalidity: int, uid: int) -> str:
    """RFC 1939 7: 1-70 characters 0x21-0x7E, never reused for another message.

    UIDVALIDITY and UID together name one INBOX membership forever (RFC 3501
    2.3.1.1), across sessions, restarts and IMAP activity.
    """
    return f"{uidvalidity}-{uid}"


class Maildrop:
    def __init__(self, uidvalidity: int, messages: Iterable[tuple[int, int, int]]):
        """messages: (uid, message_id, size) in UID order, as store.list_messages gives them."""
        self.uidvalidity = uidvalidity
        self.entries = [Entry(number, uid, message_id, size, unique_id(uidvalidity, uid))
                        for number, (uid, message_id, size) in enumerate(messages, start=1)]
        self.deleted: set[int] = set()

    @classmethod
    def from_store(cls, mailbox, refs) -> "Maildrop":
        return cls(mailbox.uidvalidity, ((ref.uid, ref.message_id, ref.size) for ref in refs))

    def get(self, number: int) -> Entry:
        """The live entry numbered `number`; NoSuchMessage if absent or marked deleted."""
        if not 1 <= number <= len(self.entries):
            raise NoSuchMessage(f"No such message (maildrop has {len(self.entries)})")
        if number in self.deleted:
            raise NoSuchMessage(f"Message {number} already deleted")
        return self.entries[number - 1]

    def live(self) -> list[Entry]:
        return [entry for entry in self.entries if entry.number not in self.deleted]

    def stat(self) -> tuple[int, int]:
        """(count, octets) of the messages not marked deleted (RFC 1939 5 STAT)."""
        live = self.live()
        return len(live), sum(entry.size for entry in live)

    def delete(self, number: int) -> None:
        self.get(number)
        self.deleted.add(number)

    def reset(self) -> None:
        """RFC 1939 5 RSET: unmark every message."""
        self.deleted.clear()

    def deleted_uids(self) -> tuple[int, ...]:
        return tuple(self.entries[number - 1].uid for number in sorted(self.deleted))
