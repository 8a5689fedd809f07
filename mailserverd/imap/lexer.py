"""Token readers over one complete, framed IMAP command (RFC 9051 9 grammar).

The framer (framing.py) has already checked every literal's size and
collected its octets, so a command here is plain bytes in wire form:
`A1 LOGIN {5}\\r\\nalice "pw"`. Reader methods consume one grammar element
each and raise ParseFailure with a client-safe reason on the first error.
"""

from __future__ import annotations

import datetime
import re
from typing import Optional

from .sequence import MAX_NUMBER, MAX_RANGES, SequenceSet

MAX_NUMBER64 = 2 ** 63 - 1  # RFC 7162 3.1.1: mod-sequence-value is 63 bits

# RFC 9051 9: ATOM-CHAR is any CHAR except atom-specials.
_ATOM = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\\]\x80-\xff]+')
_ASTRING_ATOM = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\\x80-\xff]+')  # "]" allowed
_LIST_MAILBOX = re.compile(rb'[^(){ \x00-\x1f\x7f"\\\x80-\xff]+')  # "%", "*" and "]" allowed
_TAG = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\+\x80-\xff]+')
_QUOTED = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_QUOTED_PAIR = re.compile(rb'\\(["\\])')
_LITERAL = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}\r\n")
_NUMBER = re.compile(rb"[0-9]+")
_SEQ_NUMBER = re.compile(rb"[0-9]+|\*")
_DATE = re.compile(rb'([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})')
_DATE_TIME = re.compile(rb'"([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) '
                        rb'([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"')
_MONTHS = {name: index for index, name in enumerate(
    (b"JAN", b"FEB", b"MAR", b"APR", b"MAY", b"JUN",
     b"JUL", b"AUG", b"SEP", b"OCT", b"NOV", b"DEC"), start=1)}


class ParseFailure(Exception):
    """The command is malformed or refused while parsing.

    status is "BAD" (syntax) or "NO" (well-formed but refused, e.g. a mailbox
    name we never accept); code is an optional response code without brackets.
    """

    def __init__(self, text: str, status: str = "BAD", code: Optional[str] = None):
        super().__init__(text)
        self.text = text
        self.status = status
        self.code = code


class Reader:
    """A cursor over one command's bytes."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data = data
        self.pos = pos

    # -- position -------------------------------------------------------

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self, length: int = 1) -> bytes:
        return self.data[self.pos:self.pos + length]

    def peek_upper(self, word: bytes) -> bool:
        """Does the input continue with `word` (case-insensitive)?"""
        return self.data[self.pos:self.pos + len(word)].upper() == word

    def end(self) -> None:
        if not self.at_end():
            raise ParseFailure("unexpected characters at end of command")

    def sp(self) -> None:
        if self.data[self.pos:self.pos + 1] != b" ":
            raise ParseFailure("expected a space")
        self.pos += 1

    def maybe_sp(self) -> bool:
        if self.data[self.pos:self.pos + 1] == b" ":
            self.pos += 1
            return True
        return False

    def expect(self, token: bytes) -> None:
        if self.data[self.pos:self.pos + len(token)].upper() != token:
            raise ParseFailure("expected " + token.decode("ascii"))
        self.pos += len(token)

    def accept(self, token: bytes) -> bool:
        if self.data[self.pos:self.pos + len(token)].upper() == token:
            self.pos += len(token)
            return True
        return False

    def match_pattern(self, pattern: re.Pattern, what: str) -> re.Match:
        match = pattern.match(self.data, self.pos)
        if match is None:
            raise ParseFailure("expected " + what)
        self.pos = match.end()
        return match

    # -- atoms and strings ----------------------------------------------

    def tag(self) -> str:
        return self.match_pattern(_TAG, "a tag").group().decode("ascii")

    def atom(self) -> str:
        return self.match_pattern(_ATOM, "an atom").group().decode("ascii")

    def atom_upper(self) -> str:
        return self.atom().upper()

    def quoted(self) -> bytes:
        match = self.match_pattern(_QUOTED, "a quoted string")
        return _QUOTED_PAIR.sub(rb"\1", match.group(1))

    def literal(self, allow_binary: bool = False) -> bytes:
        match = self.match_pattern(_LITERAL, "a literal")
        if match.group(1) and not allow_binary:
            raise ParseFailure("literal8 not allowed here")
        size = int(match.group(2))
        start = self.pos
        if start + size > len(self.data):
            raise ParseFailure("literal shorter than announced")
        self.pos = start + size
        return self.data[start:self.pos]

    def _at_literal(self) -> bool:
        """"{" starts a literal, "~{" a literal8 (RFC 3516); a lone "~" is an atom char."""
        return self.data[self.pos:self.pos + 1] == b"{" or self.data[self.pos:self.pos + 2] == b"~{"

    def is_literal(self) -> bool:
        return _LITERAL.match(self.data, self.pos) is not None

    def string(self) -> bytes:
        first = self.peek()
        if first == b'"':
            return self.quoted()
        if self._at_literal():
            return self.literal()
        raise ParseFailure("expected a string")

    def astring(self) -> bytes:
        first = self.peek()
        if first == b'"' or self._at_literal():
            return self.string()
        return self.match_pattern(_ASTRING_ATOM, "an astring").group()

    def nstring(self) -> Optional[bytes]:
        if self.peek_upper(b"NIL") and not _ASTRING_ATOM.match(self.data, self.pos + 3):
            self.pos += 3
            return None
        return self.string()

    def list_mailbox(self) -> bytes:
        first = self.peek()
        if first == b'"' or self._at_literal():
            return self.string()
        return self.match_pattern(_LIST_MAILBOX, "a mailbox pattern").group()

    # -- numbers ----------------------------------------------------------

    def number(self, limit: int = MAX_NUMBER) -> int:
        digits = self.match_pattern(_NUMBER, "a number").group()
        if len(digits) > 20 or int(digits) > limit:
            raise ParseFailure("number out of range")
        return int(digits)

    def nz_number(self, limit: int = MAX_NUMBER) -> int:
        value = self.number(limit)
        if value == 0:
            raise ParseFailure("zero is not allowed here")
        return value

    def number64(self) -> int:
        return self.number(MAX_NUMBER64)

    # -- structured tokens ----------------------------------------------

    def flag(self) -> str:
        """flag = "\\Answered" / ... / flag-keyword / flag-extension (RFC 9051 9)."""
        if self.peek() == b"\\":
            self.pos += 1
            name = self.atom()
            system = {"ANSWERED": "\\Answered", "FLAGGED": "\\Flagged", "DELETED": "\\Deleted",
                      "SEEN": "\\Seen", "DRAFT": "\\Draft"}.get(name.upper())
            return system or "\\" + name
        return self.atom()

    def flag_list(self) -> tuple:
        """flag-list = "(" [flag *(SP flag)] ")"."""
        self.expect(b"(")
        flags = []
        if not self.accept(b")"):
            while True:
                flags.append(self.flag())
                if self.accept(b")"):
                    break
                self.sp()
        return tuple(flags)

    def sequence_set(self, allow_saved: bool = True) -> SequenceSet:
        """sequence-set = (seq-number / seq-range) ["," sequence-set]; or "$" (RFC 5182)."""
        if self.peek() == b"$":
            if not allow_saved:
                raise ParseFailure("$ not allowed here")
            self.pos += 1
            return SequenceSet(saved=True)
        ranges = []
        while True:
            first = self._seq_number()
            last = first
            if self.accept(b":"):
                last = self._seq_number()
            ranges.append((first, last))
            if len(ranges) > MAX_RANGES:
                raise ParseFailure("too many ranges in sequence set")
            if not self.accept(b","):
                return SequenceSet(tuple(ranges))

    def _seq_number(self) -> Optional[int]:
        token = self.match_pattern(_SEQ_NUMBER, "a sequence number").group()
        if token == b"*":
            return None
        if len(token) > 10 or not 0 < int(token) <= MAX_NUMBER:
            raise ParseFailure("invalid sequence number")
        return int(token)

    def date(self) -> datetime.date:
        """date = date-text / DQUOTE date-text DQUOTE (RFC 9051 9)."""
        quoted = self.accept(b'"')
        match = self.match_pattern(_DATE, "a date (dd-Mon-yyyy)")
        if quoted:
            self.expect(b'"')
        month = _MONTHS.get(match.group(2).upper())
        try:
            return datetime.date(int(match.group(3)), month or 0, int(match.group(1)))
        except ValueError:
            raise ParseFailure("invalid date") from None

    def date_time(self) -> datetime.datetime:
        """date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE."""
        match = self.match_pattern(_DATE_TIME, "a date-time")
        day, month, year, hour, minute, second, sign, zone_h, zone_m = match.groups()
        try:
            offset = datetime.timedelta(hours=int(zone_h), minutes=int(zone_m))
            if offset >= datetime.timedelta(hours=24):
                raise ValueError
            zone = datetime.timezone(-offset if sign == b"-" else offset)
            return datetime.datetime(int(year), _MONTHS.get(month.upper()) or 0, int(day.strip()),
                                     int(hour), int(minute), int(second), tzinfo=zone)
        except ValueError:
            raise ParseFailure("invalid date-time") from None
