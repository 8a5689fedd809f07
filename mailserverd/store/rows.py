"""Conversions between membership rows and MessageRef flags, shared by the
delivery/flag code (mail.py) and the mailbox operations (mailbox_ops.py)."""

from __future__ import annotations

from typing import Iterable

from .api import MessageRef

# RFC 3501 2.3.2 system flags stored as boolean columns; keywords go in one text column.
FLAG_COLUMNS = {"\\Seen": "seen", "\\Answered": "answered", "\\Flagged": "flagged",
                "\\Deleted": "deleted", "\\Draft": "draft"}
_FLAG_COLUMN_BY_LOWER = {flag.lower(): column for flag, column in FLAG_COLUMNS.items()}


def flag_columns(flags: Iterable[str]) -> tuple[dict, set]:
    """Column values and the keyword set for a set of flags."""
    columns = {column: False for column in FLAG_COLUMNS.values()}
    keywords = set()
    for flag in flags:
        column = _FLAG_COLUMN_BY_LOWER.get(flag.lower())  # RFC 3501 2.3.2: flags are case-insensitive
        if column:
            columns[column] = True
        elif not flag.startswith("\\"):
            keywords.add(flag)
    return columns, keywords


def ref_of(row) -> MessageRef:
    """A MessageRef from a mailbox_messages row joined with messages.size/received_at."""
    flags = {flag for flag, column in FLAG_COLUMNS.items() if getattr(row, column)}
    flags.update(k for k in row.keywords.split(" ") if k)
    return MessageRef(mailbox_id=row.mailbox_id, uid=row.uid, message_id=row.message_id,
                      size=row.size, flags=frozenset(flags), modseq=row.modseq,
                      received_at=row.received_at)


__all__ = ["FLAG_COLUMNS", "flag_columns", "ref_of"]
