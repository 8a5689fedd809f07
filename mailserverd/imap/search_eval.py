"""Evaluating SEARCH programs (RFC 3501 6.4.4, RFC 5032, RFC 7162 3.1.5)
against one message's facts. Pure code: the session reads what is needed
from the store and builds MessageFacts; recursion is bounded by the parser's
MAX_SEARCH_DEPTH.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import email.utils
from typing import Optional

from ..mime.headers import decode_words, iter_fields, split_header
from ..store.api import MessageRef
from .search import SearchKey

MAX_TEXT = 4 * 1024 * 1024  # decoded text searched per message
RAW_KEYS = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO", "HEADER",
                      "SENTBEFORE", "SENTON", "SENTSINCE"})
FLAG_OF = {"ANSWERED": "\\Answered", "DELETED": "\\Deleted", "DRAFT": "\\Draft",
           "FLAGGED": "\\Flagged", "SEEN": "\\Seen"}


class MessageFacts:
    """What a search may look at for one message; parsed parts are cached."""

    def __init__(self, seq: int, ref: MessageRef, recent: bool = False, raw: bytes = b"",
                 now: float = 0.0):
        self.seq = seq
        self.ref = ref
        self.recent = recent
        self.raw = raw
        self.now = now
        self._headers: Optional[list[tuple[str, str]]] = None
        self._body_text: Optional[str] = None

    def headers(self) -> list[tuple[str, str]]:
        """(lower-case name, decoded value) for every header field."""
        if self._headers is None:
            header, _ = split_header(self.raw)
            self._headers = [(name.lower(), decode_words(value).casefold())
                             for name, value in iter_fields(header)]
        return self._headers

    def header_values(self, name: str) -> list[str]:
        return [value for field, value in self.headers() if field == name]

    def address_texts(self, name: str) -> list[str]:
        """The field as written and as "name <addr>" pairs with comments and
        routes removed, so "user@domain.org" finds <user (c)@ (c) domain.org>."""
        values = self.header_values(name)
        pairs = email.utils.getaddresses(values)
        return values + ["%s <%s>" % (display.strip(), address) for display, address in pairs]

    def body_text(self) -> str:
        """The decoded text of every text/* part, case-folded, at most MAX_TEXT."""
        if self._body_text is None:
            self._body_text = _decoded_text(self.raw).casefold()
        return self._body_text

    def sent_date(self) -> Optional[datetime.date]:
        values = self.header_values("date")
        if not values:
            return None
        try:
            return email.utils.parsedate_to_datetime(values[0]).date()
        except (TypeError, ValueError, IndexError):
            return None


def needs_raw(program: SearchKey) -> bool:
    return _any(program, lambda key: key.op in RAW_KEYS)


def uses_modseq(program: SearchKey) -> bool:
    return _any(program, lambda key: key.op == "MODSEQ")


def _any(program: SearchKey, test) -> bool:
    stack = [program]
    while stack:
        key = stack.pop()
        if test(key):
            return True
        if key.op in ("AND", "OR", "NOT"):
            stack.extend(key.args)
    return False


def evaluate(program: SearchKey, facts: MessageFacts, *, max_uid: int, max_seq: int,
             saved: Optional[list[int]] = None) -> bool:
    return _Evaluator(facts, max_uid, max_seq, saved).match(program)


class _Evaluator:
    def __init__(self, facts: MessageFacts, max_uid: int, max_seq: int, saved):
        self.facts = facts
        self.max_uid = max_uid
        self.max_seq = max_seq
        self.saved = set(saved or ())

    def match(self, key: SearchKey) -> bool:
        op, args, facts = key.op, key.args, self.facts
        ref = facts.ref
        if op == "AND":
            return all(self.match(sub) for sub in args)
        if op == "OR":
            return self.match(args[0]) or self.match(args[1])
        if op == "NOT":
            return not self.match(args[0])
        if op == "ALL":
            return True
        if op in FLAG_OF:
            return FLAG_OF[op] in ref.flags
        if op.startswith("UN") and op[2:] in FLAG_OF:
            return FLAG_OF[op[2:]] not in ref.flags
        if op == "RECENT":
            return facts.recent
        if op == "NEW":
            return facts.recent and "\\Seen" not in ref.flags
        if op == "OLD":
            return not facts.recent
        if op == "KEYWORD":
            return args[0].lower() in {flag.lower() for flag in ref.flags}
        if op == "UNKEYWORD":
            return args[0].lower() not in {flag.lower() for flag in ref.flags}
        if op == "SEQ":
            return self._in_set(args[0], facts.seq, self.max_seq, saved_is_uid=False)
        if op == "UID":
            return self._in_set(args[0], ref.uid, self.max_uid, saved_is_uid=True)
        if op == "LARGER":
            return ref.size > args[0]
        if op == "SMALLER":
            return ref.size < args[0]
        if op == "MODSEQ":
            return ref.modseq >= args[0]
        if op in ("OLDER", "YOUNGER"):  # RFC 5032: seconds before now
            age = facts.now - ref.received_at
            return age >= args[0] if op == "OLDER" else age <= args[0]
        if op in ("BEFORE", "ON", "SINCE"):
            # RFC 3501 6.4.4: the internal date, disregarding time and zone.
            day = datetime.datetime.fromtimestamp(ref.received_at, datetime.timezone.utc).date()
            return _compare_date(op, day, args[0])
        if op in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            day = facts.sent_date()
            return day is not None and _compare_date(op[4:], day, args[0])
        if op == "SUBJECT":
            needle = args[0].casefold()
            return any(needle in value for value in facts.header_values("subject"))
        if op in ("FROM", "TO", "CC", "BCC"):
            needle = args[0].casefold()
            return any(needle in value for value in facts.address_texts(op.lower()))
        if op == "HEADER":
            name, needle = args[0].lower(), args[1].casefold()
            return any(needle in value for value in facts.header_values(name))
        if op == "BODY":
            return args[0].casefold() in facts.body_text()
        if op == "TEXT":
            needle = args[0].casefold()
            return (any(needle in value or needle in name for name, value in facts.headers())
                    or needle in facts.body_text())
        raise ValueError("unknown search key " + op)

    def _in_set(self, sequence_set, number: int, largest: int, saved_is_uid: bool) -> bool:
        if sequence_set.saved:  # RFC 5182: "$" is the saved result (kept as UIDs)
            return self.facts.ref.uid in self.saved
        return sequence_set.contains(number, largest)


def _compare_date(op: str, day: datetime.date, limit: datetime.date) -> bool:
    if op == "BEFORE":
        return day < limit
    if op == "ON":
        return day == limit
    return day >= limit  # SINCE


def _decoded_text(raw: bytes) -> str:
    message = email.message_from_bytes(raw[:MAX_TEXT * 2], policy=email.policy.compat32)
    pieces: list[str] = []
    total = 0
    for part in message.walk():
        if part.get_content_maintype() != "text":
            continue
        payload = part.get_payload(decode=True) or b""
        charset = part.get_content_charset() or "us-ascii"
        try:
            text = payload.decode(charset, "replace")
        except LookupError:
            text = payload.decode("latin-1")
        pieces.append(text)
        total += len(text)
        if total >= MAX_TEXT:
            break
    return "\n".join(pieces)[:MAX_TEXT]
