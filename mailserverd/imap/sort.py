"""SORT (RFC 5256 3) and DISPLAYFROM/DISPLAYTO (RFC 5957): keys from a message's
header block, the base-subject algorithm (RFC 5256 2.1), stable ordering with
the sequence number as the final tie-break."""

from __future__ import annotations

import email.utils
import re

from ..mime.headers import decode_words, first_fields
from ..store.api import MessageRef

SORT_FIELDS = frozenset({"date", "subject", "from", "to", "cc", "message-id", "in-reply-to",
                         "references"})
_WSP = re.compile(r"[ \t\r\n]+")
_BLOB = r"\[[^\[\]]*\]"
_LEADER = re.compile(r"^(?:(?:re|fwd?)[ \t]*(?:" + _BLOB + r"[ \t]*)*:[ \t]*|" + _BLOB + r"[ \t]*)",
                     re.I)
_TRAILER = re.compile(r"(?:[ \t]|\(fwd\))+$", re.I)


class SortFacts:
    """One message as SORT and THREAD see it."""

    __slots__ = ("seq", "ref", "fields", "_base")

    def __init__(self, seq: int, ref: MessageRef, fields: dict[str, bytes]):
        self.seq = seq
        self.ref = ref
        self.fields = fields
        self._base = None

    @classmethod
    def from_raw(cls, seq: int, ref: MessageRef, header_block: bytes) -> "SortFacts":
        return cls(seq, ref, first_fields(header_block, SORT_FIELDS))

    def text(self, name: str) -> str:
        value = self.fields.get(name)
        return decode_words(value) if value else ""

    @property
    def base_subject(self) -> str:
        if self._base is None:
            # Compared with i;ascii-casemap (RFC 5256 2.1, RFC 4790 9.2): upper case.
            self._base = base_subject(self.text("subject")).upper()
        return self._base

    def sent_date(self) -> float:
        """RFC 5256 3: the Date: header, else the internal date."""
        value = self.fields.get("date")
        if value:
            try:
                return email.utils.parsedate_to_datetime(value.decode("latin-1")).timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                pass
        return self.ref.received_at


def base_subject(subject: str) -> str:
    """RFC 5256 2.1: strip re:/fw:/fwd: leaders, [blob]s, (fwd) trailers and
    [fwd: ...] wrappers, repeatedly, then normalise white space."""
    text = _WSP.sub(" ", subject).strip()
    while True:
        while True:  # (2) trailers
            stripped = _TRAILER.sub("", text)
            if stripped == text:
                break
            text = stripped
        while True:  # (3)-(5) leaders and blobs, keeping a blob that is all that is left
            match = _LEADER.match(text)
            if not match:
                break
            rest = text[match.end():]
            if not rest and match.group(0).startswith("["):
                break
            text = rest
        if text.lower().startswith("[fwd:") and text.endswith("]"):  # (6)
            text = text[5:-1].strip()
            continue
        return text


_GROUP_START = re.compile(r'^\s*([^:<>"@,()]+):')


def _first_mailbox(value: str) -> str:
    """RFC 5256 3: the local part of the first address; a group counts by its
    name, as its ENVELOPE start marker (NIL NIL "name" NIL) does."""
    group = _GROUP_START.match(value)
    if group:
        return group.group(1).strip().upper()
    addresses = email.utils.getaddresses([value])
    if not addresses:
        return ""
    return addresses[0][1].split("@")[0].upper()


def _display(value: str) -> str:
    """RFC 5957 3: the display name of the first address, else its addr-spec."""
    addresses = email.utils.getaddresses([value])
    if not addresses:
        return ""
    name, address = addresses[0]
    return (name or address).upper()


def sort_key(key: str, facts: SortFacts):
    if key == "ARRIVAL":
        return facts.ref.received_at
    if key == "DATE":
        return facts.sent_date()
    if key == "SIZE":
        return facts.ref.size
    if key == "SUBJECT":
        return facts.base_subject
    if key in ("FROM", "TO", "CC"):
        return _first_mailbox(facts.text(key.lower()))
    if key in ("DISPLAYFROM", "DISPLAYTO"):
        return _display(facts.text(key[7:].lower()))
    raise ValueError("unknown sort key " + key)


def sort_messages(criteria, facts_list: list[SortFacts]) -> list[SortFacts]:
    """Order by the criteria ((reverse, key) pairs), ties by sequence number (RFC 5256 3)."""
    ordered = sorted(facts_list, key=lambda facts: facts.seq)
    for reverse, key in reversed(list(criteria)):
        ordered.sort(key=lambda facts: sort_key(key, facts), reverse=reverse)
    return ordered
