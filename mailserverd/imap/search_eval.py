"""Evaluating SEARCH programs (RFC 3501 6.4.4 / RFC 9051 6.4.4, RFC 5032 OLDER/
YOUNGER, RFC 5182 "$", RFC 7162 3.1.5 MODSEQ) against one message's facts.

Pure code: the session reads what is needed from the store and builds one
MessageFacts per message. Text keys are case-insensitive substring matches
(str.casefold) after RFC 2047 decoding of headers and transfer/charset
decoding of text parts. At most MAX_TEXT characters (4 MiB) of a message's
decoded body text are searched, so one huge message costs bounded time and
memory. Nesting of AND/OR/NOT is bounded by the parser (search.MAX_SEARCH_DEPTH)
and checked again here (MAX_EVAL_DEPTH) for trees built by other code.
"""

from __future__ import annotations

import bisect
import datetime
from typing import Callable, Optional, Union

from ..mime.headers import decode_bytes, decode_words, iter_fields, split_header
from ..mime.imapaddress import parse_addresses
from ..mime.structure import MessageTooComplex, iter_parts
from ..mime.summary import parse_date
from ..mime.text import collapse_whitespace, decode_transfer, html_to_text
from ..store.api import MessageRef
from .search import MAX_SEARCH_DEPTH, SearchKey
from .sequence import SequenceSet

MAX_TEXT = 4 * 1024 * 1024  # characters of decoded body text searched per message
MAX_EVAL_DEPTH = MAX_SEARCH_DEPTH + 2  # the top-level AND adds one level
RAW_KEYS = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO", "HEADER",
                      "SENTBEFORE", "SENTON", "SENTSINCE"})
ADDRESS_KEYS = frozenset({"BCC", "CC", "FROM", "TO"})
FLAG_OF = {"ANSWERED": "\\Answered", "DELETED": "\\Deleted", "DRAFT": "\\Draft",
           "FLAGGED": "\\Flagged", "SEEN": "\\Seen"}


class MessageFacts:
    """What a search may look at for one message; parsed pieces are cached.

    raw is the message's bytes, or a zero-argument callable returning them
    (called at most once, and only when a key needs headers or body). now is
    the current unix time, for OLDER/YOUNGER.
    """

    def __init__(self, seq: int, ref: MessageRef, recent: bool = False,
                 raw: Union[bytes, Callable[[], bytes]] = b"", now: float = 0.0,
                 known: Optional[dict] = None):
        self.known = known or {}  # {id(text key): bool} settled by the index (search/query.py)
        self.seq = seq
        self.ref = ref
        self.recent = recent
        self.now = now
        self._raw = raw
        self._headers: Optional[list[tuple[str, str]]] = None
        self._header_text: Optional[str] = None
        self._body_text: Optional[str] = None
        self._lower_flags: Optional[frozenset] = None
        self._addresses: dict[str, list[str]] = {}

    def raw(self) -> bytes:
        if callable(self._raw):
            self._raw = self._raw() or b""
        return self._raw

    def fields(self) -> list[tuple[str, str]]:
        """(lower-case name, RFC 2047-decoded value as written) for every header field."""
        if self._headers is None:
            header, _ = split_header(self.raw())
            self._headers = [(name, decode_words(value)) for name, value in iter_fields(header)]
        return self._headers

    def header_values(self, name: str) -> list[str]:
        """Case-folded decoded values of every `name` field."""
        return [value.casefold() for field, value in self.fields() if field == name]

    def address_texts(self, name: str) -> list[str]:
        """Case-folded texts an address key may match: each field as written
        (decoded) and each address as "name <mailbox@host>", parsed as ENVELOPE
        parses it, so "user@host" finds <user (comment)@ host> as well."""
        if name in self._addresses:
            return self._addresses[name]
        texts = self._addresses[name] = []
        header, _ = split_header(self.raw())
        for field, value in iter_fields(header):
            if field != name:
                continue
            texts.append(decode_words(value).casefold())
            for display, _route, mailbox, host in parse_addresses(value) or ():
                if mailbox is None:
                    continue
                address = decode_bytes(mailbox) + ("@" + decode_bytes(host) if host else "")
                shown = decode_words(display) if display else ""
                texts.append(("%s <%s>" % (shown, address)).strip().casefold())
        return texts

    def header_text(self) -> str:
        """The header section as "Name: value" lines, decoded and case-folded (for TEXT)."""
        if self._header_text is None:
            self._header_text = "\n".join(
                "%s: %s" % (name, value) for name, value in self.fields()).casefold()
        return self._header_text

    def body_text(self) -> str:
        """Decoded text of the body's text parts, case-folded, at most MAX_TEXT characters."""
        if self._body_text is None:
            self._body_text = decoded_body_text(self.raw(), MAX_TEXT).casefold()
        return self._body_text

    def sent_date(self) -> Optional[datetime.date]:
        """The Date: field's calendar date in its own zone (RFC 3501 6.4.4: "disregarding
        time and timezone"); None when absent or unparseable."""
        header, _ = split_header(self.raw())
        for field, value in iter_fields(header):
            if field == "date":
                try:
                    parsed = parse_date(value)
                except (ValueError, OverflowError, TypeError, IndexError):
                    return None
                return parsed.date() if parsed is not None else None
        return None

    def lower_flags(self) -> frozenset:
        if self._lower_flags is None:
            self._lower_flags = frozenset(flag.lower() for flag in self.ref.flags)
        return self._lower_flags


def needs_raw(program: SearchKey) -> bool:
    """Whether evaluating `program` reads headers or body (else refs suffice)."""
    return _any(program, lambda key: key.op in RAW_KEYS)


def uses_modseq(program: SearchKey) -> bool:
    """RFC 7162 3.1.5: a MODSEQ key makes SEARCH report the highest mod-sequence."""
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
             saved=None) -> bool:
    """Whether the message satisfies `program`.

    max_uid / max_seq are what "*" means in UID and sequence sets (the
    mailbox's highest UID and message count). saved is the SEARCHRES result
    (RFC 5182) as UIDs: an ascending list (as SEARCH produces) or a set; None
    means nothing is saved, so "$" matches nothing. ValueError for a key this
    module does not know or a tree nested deeper than MAX_EVAL_DEPTH.
    """
    return _Evaluator(facts, max_uid, max_seq, saved).match(program, 0)


class _Evaluator:
    __slots__ = ("facts", "max_uid", "max_seq", "saved")

    def __init__(self, facts: MessageFacts, max_uid: int, max_seq: int, saved):
        self.facts = facts
        self.max_uid = max_uid
        self.max_seq = max_seq
        self.saved = saved

    def match(self, key: SearchKey, depth: int) -> bool:
        op, args, facts = key.op, key.args, self.facts
        ref = facts.ref
        if op in ("AND", "OR", "NOT"):
            if depth >= MAX_EVAL_DEPTH:
                raise ValueError("search program nested too deeply")
            if op == "AND":
                return all(self.match(sub, depth + 1) for sub in args)
            if op == "OR":
                return self.match(args[0], depth + 1) or self.match(args[1], depth + 1)
            return not self.match(args[0], depth + 1)
        if op == "ALL":
            return True
        if op in FLAG_OF:
            return FLAG_OF[op] in ref.flags
        if op.startswith("UN") and op[2:] in FLAG_OF:
            return FLAG_OF[op[2:]] not in ref.flags
        if op == "RECENT":
            return facts.recent
        if op == "NEW":  # RFC 3501 6.4.4: RECENT UNSEEN
            return facts.recent and "\\Seen" not in ref.flags
        if op == "OLD":  # RFC 3501 6.4.4: NOT RECENT
            return not facts.recent
        if op == "KEYWORD":  # keywords compare case-insensitively, as flags do
            return args[0].lower() in facts.lower_flags()
        if op == "UNKEYWORD":
            return args[0].lower() not in facts.lower_flags()
        if op == "SEQ":
            return self._in_set(args[0], facts.seq, self.max_seq)
        if op == "UID":
            return self._in_set(args[0], ref.uid, self.max_uid)
        if op == "LARGER":
            return ref.size > args[0]
        if op == "SMALLER":
            return ref.size < args[0]
        if op == "MODSEQ":
            # RFC 7162 3.1.5: per-flag mod-sequences are not kept, so an entry
            # name is answered with the message's own mod-sequence (allowed: 3.1.5
            # lets a server treat every entry as changed with the message).
            return ref.modseq >= args[0]
        if op in ("OLDER", "YOUNGER"):
            # RFC 5032 3: internal date more than `n` seconds ago / within the last
            # `n` seconds (ends included), so OLDER n is NOT YOUNGER n.
            age = facts.now - ref.received_at
            return age > args[0] if op == "OLDER" else age <= args[0]
        if op in ("BEFORE", "ON", "SINCE"):
            # RFC 3501 6.4.4: the internal date, disregarding time and zone; the date
            # is taken in UTC, the zone INTERNALDATE is shown in (responses.date_time).
            day = datetime.datetime.fromtimestamp(ref.received_at, datetime.timezone.utc).date()
            return _compare_date(op, day, args[0])
        if op in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            day = facts.sent_date()
            return day is not None and _compare_date(op[4:], day, args[0])
        if facts.known and id(key) in facts.known:
            return facts.known[id(key)]
        if op == "SUBJECT":
            needle = args[0].casefold()
            return any(needle in value for value in facts.header_values("subject"))
        if op in ADDRESS_KEYS:
            needle = args[0].casefold()
            return any(needle in value for value in facts.address_texts(op.lower()))
        if op == "HEADER":
            # RFC 3501 6.4.4: an empty string matches every message that has the field.
            name, needle = args[0].lower(), args[1].casefold()
            return any(needle in value for value in facts.header_values(name))
        if op == "BODY":
            return args[0].casefold() in facts.body_text()
        if op == "TEXT":
            needle = args[0].casefold()
            return needle in facts.header_text() or needle in facts.body_text()
        raise ValueError("unknown search key " + op)

    def _in_set(self, sequence_set: SequenceSet, number: int, largest: int) -> bool:
        if sequence_set.saved:  # RFC 5182 2.1: "$" is the saved result, kept as UIDs
            return _saved_contains(self.saved, self.facts.ref.uid)
        spans = _resolved(sequence_set, largest)
        index = bisect.bisect_right(spans, (number, float("inf"))) - 1
        return index >= 0 and spans[index][0] <= number <= spans[index][1]


def _saved_contains(saved, uid: int) -> bool:
    if saved is None:
        return False
    if isinstance(saved, (set, frozenset)):
        return uid in saved
    index = bisect.bisect_left(saved, uid)  # ascending: O(log n) per message
    return index < len(saved) and saved[index] == uid


# The last few sequence sets resolved, by identity: a search evaluates the same
# set once per message, and resolving sorts up to sequence.MAX_RANGES ranges.
# Each entry holds the set itself, so its id cannot be reused while cached.
_RESOLVED: dict[int, tuple[SequenceSet, int, list]] = {}
_RESOLVED_SLOTS = 16


def _resolved(sequence_set: SequenceSet, largest: int) -> list[tuple[int, int]]:
    entry = _RESOLVED.get(id(sequence_set))
    if entry is not None and entry[0] is sequence_set and entry[1] == largest:
        return entry[2]
    spans = sequence_set.resolve(largest)
    if len(_RESOLVED) >= _RESOLVED_SLOTS:
        _RESOLVED.pop(next(iter(_RESOLVED)))
    _RESOLVED[id(sequence_set)] = (sequence_set, largest, spans)
    return spans


def _compare_date(op: str, day: datetime.date, limit: datetime.date) -> bool:
    if op == "BEFORE":
        return day < limit
    if op == "ON":
        return day == limit
    return day >= limit  # SINCE


def decoded_body_text(raw: bytes, limit: int) -> str:
    """The searchable text of a message body, at most `limit` characters.

    Every text/* leaf part, transfer-decoded (RFC 2045 6.7, 6.8) and read in
    its declared charset (unknown charsets: UTF-8, then windows-1252); HTML
    also as visible text so phrases split by tags are found; the header of
    every encapsulated message (RFC 2046 5.2.1), decoded, since it is body
    text of the outer message. A message too complex to walk (mime.structure
    limits) is searched as its raw body read as text.
    """
    pieces: list[str] = []
    budget = limit
    try:
        for part in iter_parts(raw):
            if budget <= 0:
                break
            if part.ancestors and part.ancestors[-1].startswith("message/") \
                    and part.header_start < part.body_start:
                header = raw[part.header_start:part.body_start]
                text = "\n".join("%s: %s" % (name, decode_words(value))
                                 for name, value in iter_fields(header))
                pieces.append(text[:budget])
                budget -= len(pieces[-1])
            if part.is_multipart or not part.content_type.startswith("text/") or budget <= 0:
                continue
            body = raw[part.body_start:min(part.body_end, part.body_start + budget * 4 + 1024)]
            text = decode_bytes(decode_transfer(body, part.transfer_encoding, budget),
                                part.params.get("charset"))
            if part.content_type == "text/html":
                text = text + "\n" + collapse_whitespace(html_to_text(text), budget)
            pieces.append(text[:budget])
            budget -= len(pieces[-1])
    except MessageTooComplex:
        _, body_start = split_header(raw)
        return decode_bytes(raw[body_start:body_start + limit])[:limit]
    return "\n".join(pieces)[:limit]


SEARCH_BATCH = 200  # message bodies held in memory at once while searching


def _raw_keys(program: SearchKey) -> list:
    keys, stack = [], [program]
    while stack:
        key = stack.pop()
        if key.op in RAW_KEYS:
            keys.append(key)
        elif key.op in ("AND", "OR", "NOT"):
            stack.extend(key.args)
    return keys


def match_view(store, account, view, program: SearchKey, now: float, saved):
    """Deferred (number, ref) pairs of the mailbox view that satisfy `program`.

    The full-text index (mailserverd.search, issue 12) narrows the messages
    to candidates and settles text keys it can prove either way; every other
    key, and every key it cannot settle, is evaluated on the message itself.
    So the answer is the exhaustive scan's (RFC 3501 6.4.4 substring
    semantics), and a message is read only when some key needs it.
    """
    from twisted.internet import defer

    from ..search.query import narrowing

    @defer.inlineCallbacks
    def run():
        pairs = list(enumerate(view.refs, 1))
        found = yield narrowing(store, account, program)
        if found is not None and found.candidates is not None:
            pairs = [pair for pair in pairs if pair[1].message_id in found.candidates]
        raw_keys = _raw_keys(program)
        matches = []
        for start in range(0, len(pairs), SEARCH_BATCH):
            batch = pairs[start:start + SEARCH_BATCH]
            known = {ref.message_id: found.known(ref.message_id) if found is not None else {}
                     for _, ref in batch}
            wanted = [ref.message_id for _, ref in batch
                      if any(id(key) not in known[ref.message_id] for key in raw_keys)]
            raws = (yield store.read_messages(account, wanted)) if wanted else {}
            for number, ref in batch:
                facts = MessageFacts(seq=number, ref=ref, recent=ref.uid in view.recent,
                                     raw=raws.get(ref.message_id, b""), now=now,
                                     known=known[ref.message_id])
                if evaluate(program, facts, max_uid=view.largest_uid, max_seq=view.exists, saved=saved):
                    matches.append((number, ref))
        return matches
    return run()
