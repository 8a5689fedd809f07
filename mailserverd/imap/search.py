"""SEARCH keys (RFC 9051 6.4.4 and 9 "search-key") as a typed tree.

Nesting through "(", NOT and OR is capped at MAX_SEARCH_DEPTH, so the
recursive descent below can never come near the interpreter's recursion
limit, whatever the client sends.
"""

from __future__ import annotations

import codecs
import dataclasses
from typing import Optional

from .lexer import ParseFailure, Reader

MAX_SEARCH_DEPTH = 32
MAX_SEARCH_KEYS = 1000  # keys in the whole program

FLAG_KEYS = frozenset({
    "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
    "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN",
})
STRING_KEYS = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
DATE_KEYS = frozenset({"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"})
SIZE_KEYS = frozenset({"LARGER", "SMALLER"})
WITHIN_KEYS = frozenset({"OLDER", "YOUNGER"})  # RFC 5032 3: seconds
KEYWORD_KEYS = frozenset({"KEYWORD", "UNKEYWORD"})
RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})  # RFC 4731 3.1, RFC 5182 2.1
SUPPORTED_CHARSETS = ("UTF-8", "US-ASCII")  # what NO [BADCHARSET (...)] lists


@dataclasses.dataclass(frozen=True)
class SearchKey:
    """One search key.

    op is the key word upper-cased, or "AND" (a parenthesised list or the
    top-level program), "SEQ" (a bare sequence set). args by op:
      FLAG_KEYS: ();  STRING_KEYS: (text,);  DATE_KEYS: (datetime.date,);
      SIZE_KEYS / WITHIN_KEYS: (int,);  KEYWORD_KEYS: (keyword,);
      HEADER: (field-name, text);  UID / SEQ: (SequenceSet,);
      MODSEQ: (modseq, entry-name or None, entry-type or None) (RFC 7162 3.1.5);
      NOT: (key,);  OR: (key, key);  AND: (key, ...).
    """

    op: str
    args: tuple = ()


class _Budget:
    def __init__(self) -> None:
        self.keys = 0

    def spend(self) -> None:
        self.keys += 1
        if self.keys > MAX_SEARCH_KEYS:
            raise ParseFailure("too many search keys")


def parse_search_returns(reader: Reader) -> Optional[tuple]:
    """search-return-opts = SP "RETURN" SP "(" [opt *(SP opt)] ")" (RFC 4731 3.1).
    Called with the reader at "RETURN"; returns the options upper-cased."""
    reader.expect(b"RETURN")
    reader.sp()
    reader.expect(b"(")
    options: list[str] = []
    if not reader.accept(b")"):
        while True:
            option = reader.atom_upper()
            if option not in RETURN_OPTIONS:
                raise ParseFailure("unknown search return option " + option[:40])
            if option not in options:
                options.append(option)
            if reader.accept(b")"):
                break
            reader.sp()
    return tuple(options)


def charset_decoder(name: str) -> str:
    """The Python codec for a SEARCH CHARSET, or ParseFailure NO [BADCHARSET] (RFC 9051 6.4.4)."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        info = None
    if info is None or not getattr(info, "_is_text_encoding", True):
        raise ParseFailure("unsupported charset", status="NO",
                           code="BADCHARSET (" + " ".join(SUPPORTED_CHARSETS) + ")")
    return info.name


def parse_search_program(reader: Reader, charset: Optional[str]) -> SearchKey:
    """search-program: one or more keys, ANDed (RFC 9051 6.4.4)."""
    codec = charset_decoder(charset) if charset else "utf-8"
    budget = _Budget()
    keys = [_key(reader, codec, 0, budget)]
    while reader.maybe_sp():
        keys.append(_key(reader, codec, 0, budget))
    return keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))


def _text(reader: Reader, codec: str) -> str:
    raw = reader.astring()
    try:
        return raw.decode(codec)
    except (UnicodeError, ValueError):  # some codecs raise plain UnicodeError
        raise ParseFailure("search string is not valid in its charset", status="NO",
                           code="BADCHARSET (" + " ".join(SUPPORTED_CHARSETS) + ")") from None


def _key(reader: Reader, codec: str, depth: int, budget: _Budget) -> SearchKey:
    if depth >= MAX_SEARCH_DEPTH:
        raise ParseFailure("search keys nested too deeply")
    budget.spend()
    first = reader.peek()
    if first == b"(":
        reader.pos += 1
        keys = [_key(reader, codec, depth + 1, budget)]
        while not reader.accept(b")"):
            reader.sp()
            keys.append(_key(reader, codec, depth + 1, budget))
        return SearchKey("AND", tuple(keys))
    if first.isdigit() or first in (b"*", b"$"):
        return SearchKey("SEQ", (reader.sequence_set(),))
    op = reader.atom_upper()
    if op in FLAG_KEYS:
        return SearchKey(op)
    reader.sp()
    if op in STRING_KEYS:
        return SearchKey(op, (_text(reader, codec),))
    if op in DATE_KEYS:
        return SearchKey(op, (reader.date(),))
    if op in SIZE_KEYS:
        return SearchKey(op, (reader.number64(),))
    if op in WITHIN_KEYS:
        return SearchKey(op, (reader.nz_number(),))
    if op in KEYWORD_KEYS:
        return SearchKey(op, (reader.atom(),))
    if op == "HEADER":
        field = reader.astring()
        if not field or any(byte <= 0x20 or byte >= 0x7F or byte == 0x3A for byte in field):
            raise ParseFailure("invalid header field name")
        reader.sp()
        return SearchKey(op, (field.decode("ascii"), _text(reader, codec)))
    if op == "UID":
        return SearchKey(op, (reader.sequence_set(),))
    if op == "NOT":
        return SearchKey(op, (_key(reader, codec, depth + 1, budget),))
    if op == "OR":
        left = _key(reader, codec, depth + 1, budget)
        reader.sp()
        return SearchKey(op, (left, _key(reader, codec, depth + 1, budget)))
    if op == "MODSEQ":  # RFC 7162 3.1.5: MODSEQ [SP entry-name SP entry-type-req] SP modseq
        entry_name = entry_type = None
        if reader.peek() == b'"':
            entry_name = reader.quoted().decode("utf-8", "replace")
            reader.sp()
            entry_type = reader.atom().lower()
            if entry_type not in ("priv", "shared", "all"):
                raise ParseFailure("invalid MODSEQ entry type")
            reader.sp()
        return SearchKey(op, (reader.number64(), entry_name, entry_type))
    raise ParseFailure("unknown search key " + op[:40])
