"""SORT (RFC 5256 3) and DISPLAYFROM/DISPLAYTO (RFC 5957 3): keys from a
message's header section, the base-subject algorithm (RFC 5256 2.1), and
stable ordering with the sequence number as the final tie-break.

Strings compare under i;ascii-casemap (RFC 5256 2.1, RFC 4790 9.2): ASCII
letters upper-cased, everything else as is. Python compares str by code
point, which orders like the UTF-8 octets the collation is defined on.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

from ..mime.headers import decode_bytes, decode_words, first_fields, split_header
from ..mime.imapaddress import parse_addresses
from ..mime.summary import parse_date
from ..store.api import MessageRef

SORT_FIELDS = frozenset({"date", "subject", "from", "to", "cc", "message-id", "in-reply-to",
                         "references"})
SORT_KEYS = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO",
                       "DISPLAYFROM", "DISPLAYTO"})
_WSP_RUN = re.compile(r"[ \t\r\n]+")
_ASCII_UPPER = {code: code - 32 for code in range(ord("a"), ord("z") + 1)}
_ASCII_LOWER = {code: code + 32 for code in range(ord("A"), ord("Z") + 1)}


def ascii_casemap(text: str) -> str:
    """i;ascii-casemap (RFC 4790 9.2): a-z to A-Z, nothing else changes."""
    return text.translate(_ASCII_UPPER)


class SortFacts:
    """One message as SORT and THREAD see it: its number, ref and the first
    occurrence of each SORT_FIELDS header field (raw, unfolded bytes)."""

    __slots__ = ("seq", "ref", "fields", "_subject", "_date")

    def __init__(self, seq: int, ref: MessageRef, fields: dict[str, bytes]):
        self.seq = seq
        self.ref = ref
        self.fields = fields
        self._subject: Optional[tuple[str, bool]] = None
        self._date: Optional[float] = None

    @classmethod
    def from_raw(cls, seq: int, ref: MessageRef, header_block: bytes) -> "SortFacts":
        """From the message's header section, or the whole message (cut at
        its first empty line, CRLF or LF, so body lines are never read as fields)."""
        header, _ = split_header(header_block)
        return cls(seq, ref, first_fields(header, SORT_FIELDS))

    def text(self, name: str) -> str:
        """A field RFC 2047-decoded, "" when absent."""
        value = self.fields.get(name)
        return decode_words(value) if value else ""

    def _subject_info(self) -> tuple[str, bool]:
        if self._subject is None:
            base, reply = subject_info(self.text("subject"))
            self._subject = (ascii_casemap(base), reply)
        return self._subject

    @property
    def base_subject(self) -> str:
        """The base subject (RFC 5256 2.1) in i;ascii-casemap form, for comparing."""
        return self._subject_info()[0]

    @property
    def is_reply_or_forward(self) -> bool:
        """RFC 5256 2.1: extracting the base subject removed a re/fwd leader,
        a "(fwd)" trailer or a "[fwd: ]" wrapper."""
        return self._subject_info()[1]

    def sent_date(self) -> float:
        """RFC 5256 2.2: the Date: field as UTC unix time, else the internal date."""
        if self._date is None:
            self._date = self.ref.received_at
            value = self.fields.get("date")
            if value:
                try:
                    parsed = parse_date(value)
                    if parsed is not None:
                        self._date = parsed.timestamp()
                except (ValueError, OverflowError, TypeError, IndexError):
                    pass
        return self._date


def base_subject(subject: str) -> str:
    """RFC 5256 2.1 base subject of an already RFC 2047-decoded subject (case kept)."""
    return subject_info(subject)[0]


def subject_info(subject: str) -> tuple[str, bool]:
    """(base subject, whether the message is a reply or forward), RFC 5256 2.1.

    Works on indexes into the text so that thousands of "Re:" or "[tag]"
    prefixes cost linear time.
    """
    # (1) tabs and line breaks to spaces, runs of spaces to one space.
    text = _WSP_RUN.sub(" ", subject)
    low = text.translate(_ASCII_LOWER)  # one to one, so indexes stay aligned
    start, end = 0, len(text)
    reply = False
    while True:
        # (2) subj-trailer = "(fwd)" / WSP, repeatedly.
        while end > start:
            if low[end - 1] in " \t":
                end -= 1
            elif low.endswith("(fwd)", start, end):
                end -= 5
                reply = True
            else:
                break
        # (3)-(5) leaders and blobs, until neither matches.
        start, stripped = _strip_leaders(low, start, end)
        reply = reply or stripped
        # (6) "[fwd:" ... "]" wraps a forwarded subject: unwrap, repeat from (2).
        if low.startswith("[fwd:", start, end) and end - start >= 6 and low[end - 1] == "]":
            start, end = start + 5, end - 1
            reply = True
            continue
        return text[start:end], reply


def _strip_leaders(low: str, start: int, end: int) -> tuple[int, bool]:
    """Steps (3)-(5): where the text starts once leaders and removable blobs
    are gone, and whether a re/fwd leader was among them."""
    reply = False
    while start < end:
        if low[start] in " \t":  # subj-leader = ... / WSP
            start += 1
            continue
        # (3) subj-leader = *subj-blob subj-refwd
        blob_ends = []
        position = start
        while True:
            after = _blob_end(low, position, end)
            if after < 0:
                break
            blob_ends.append(after)
            position = after
        after = _refwd_end(low, position, end)
        if after >= 0:
            start, reply = after, True
            continue
        # (4) a leading blob goes when text remains after it. Step (3) keeps
        # failing at the end of this run of blobs, so (4) removes the whole run,
        # keeping only a last blob that would otherwise leave nothing.
        if blob_ends:
            if position < end:
                start = position
            elif len(blob_ends) >= 2:
                start = blob_ends[-2]
        break
    return start, reply


def _blob_end(low: str, position: int, end: int) -> int:
    """subj-blob = "[" *BLOBCHAR "]" *WSP: the index after it, or -1."""
    if position >= end or low[position] != "[":
        return -1
    close = low.find("]", position + 1, end)
    if close < 0:
        return -1
    reopen = low.find("[", position + 1, close)
    if reopen >= 0:
        return -1
    position = close + 1
    while position < end and low[position] in " \t":
        position += 1
    return position


def _refwd_end(low: str, position: int, end: int) -> int:
    """subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":": the index after it, or -1."""
    if low.startswith("re", position, end):
        position += 2
    elif low.startswith("fwd", position, end):
        position += 3
    elif low.startswith("fw", position, end):
        position += 2
    else:
        return -1
    while position < end and low[position] in " \t":
        position += 1
    after_blob = _blob_end(low, position, end)
    if after_blob >= 0:
        position = after_blob
    if position < end and low[position] == ":":
        return position + 1
    return -1


def _first_address(value: Optional[bytes]) -> Optional[tuple]:
    if not value:
        return None
    addresses = parse_addresses(value)
    return addresses[0] if addresses else None


def first_mailbox(value: Optional[bytes]) -> str:
    """RFC 5256 3 FROM/TO/CC: the addr-mailbox (local part) of the first
    address, as ENVELOPE shows it; a group's first "address" is its name."""
    address = _first_address(value)
    if address is None or address[2] is None:
        return ""
    return ascii_casemap(decode_bytes(address[2]))


def display_name(value: Optional[bytes]) -> str:
    """RFC 5957 3: the first address's display name, RFC 2047-decoded, else
    its addr-spec (mailbox@host)."""
    address = _first_address(value)
    if address is None:
        return ""
    name, _route, mailbox, host = address
    if name:
        decoded = decode_words(name).strip()
        if decoded:
            return ascii_casemap(decoded)
    if mailbox is None:
        return ""
    spec = decode_bytes(mailbox) + ("@" + decode_bytes(host) if host else "")
    return ascii_casemap(spec)


def sort_key(key: str, facts: SortFacts):
    """The value one sort criterion (RFC 5256 3, upper-case name) orders by."""
    if key == "ARRIVAL":
        return facts.ref.received_at
    if key == "DATE":
        return facts.sent_date()
    if key == "SIZE":
        return facts.ref.size
    if key == "SUBJECT":
        return facts.base_subject
    if key in ("FROM", "TO", "CC"):
        return first_mailbox(facts.fields.get(key.lower()))
    if key in ("DISPLAYFROM", "DISPLAYTO"):
        return display_name(facts.fields.get(key[7:].lower()))
    raise ValueError("unknown sort key " + key)


def sort_messages(criteria: Iterable[tuple[bool, str]], facts_list: list[SortFacts]) -> list[SortFacts]:
    """Order by the criteria, (reverse, key) pairs, most significant first;
    messages equal on all of them keep sequence-number order (RFC 5256 3),
    REVERSE included."""
    ordered = sorted(facts_list, key=lambda facts: facts.seq)
    # Stable sorts from the least significant criterion up; Python keeps equal
    # elements in order under reverse=True too, so ties stay by sequence number.
    for reverse, key in reversed(list(criteria)):
        keys = {id(facts): sort_key(key, facts) for facts in ordered}
        ordered.sort(key=lambda facts: keys[id(facts)], reverse=reverse)
    return ordered
