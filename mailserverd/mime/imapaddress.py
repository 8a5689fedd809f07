"""Address lists (RFC 5322 3.4) as IMAP ENVELOPE address structures (RFC 9051 7.5.2).

Each address becomes (name, adl, mailbox, host), bytes or None. A group
(RFC 5322 3.4) is (None, None, group-name, None) ... (None, None, None,
None). Broken input never raises. Where the RFCs say nothing about broken
input we do what Dovecot does, since clients are tuned to it: a missing
local part reads MISSING_MAILBOX, a missing domain MISSING_DOMAIN, an
unclosed angle address SYNTAX_ERROR; text with no address at all is a
display name; parsing stops at the first thing that is not "," after an
address; "user@host (Real Name)" takes its name from the comment.

The cursor methods return, like an RFC 822 tokenizer: a negative number
on a syntax error, 0 when the input is used up, 1 when more follows.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

from .imapheader import for_humans

MISSING_MAILBOX = b"MISSING_MAILBOX"
MISSING_DOMAIN = b"MISSING_DOMAIN"
SYNTAX_ERROR = b"SYNTAX_ERROR"
MAX_ADDRESSES = 10000  # per field; more are not parsed

_ATEXT = re.compile(rb"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\xff]+")
_ATEXT_OR_DOT = re.compile(rb"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\xff.]+")
_BLANKS = re.compile(rb"[ \t\r\n]+")
_QUOTED_PAIR = re.compile(rb"\\(.)", re.S)
_FOLD = re.compile(rb"\r?\n(?=[ \t])")


@dataclasses.dataclass
class _Address:
    name: Optional[bytes] = None
    route: Optional[bytes] = None
    mailbox: Optional[bytes] = None
    domain: Optional[bytes] = None
    invalid: bool = False


class _Cursor:
    """RFC 5322 lexical scanning over one field value."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.last_comment = b""

    def more(self) -> bool:
        return self.pos < len(self.data)

    def char(self) -> bytes:
        return self.data[self.pos:self.pos + 1]

    def skip_cfws(self) -> int:
        """Skip blanks and comments (RFC 5322 3.2.2); -1 on an unclosed comment."""
        data, length = self.data, len(self.data)
        while self.pos < length:
            blanks = _BLANKS.match(data, self.pos)
            if blanks is not None:
                self.pos = blanks.end()
                continue
            if data[self.pos] != 0x28:  # "("
                return 1
            depth, start = 0, self.pos + 1
            while self.pos < length:
                char = data[self.pos]
                if char == 0x5C:
                    self.pos += 2
                    continue
                self.pos += 1
                if char == 0x28:
                    depth += 1
                elif char == 0x29:
                    depth -= 1
                    if depth == 0:
                        break
            if depth:
                return -1
            self.last_comment = _QUOTED_PAIR.sub(rb"\1", data[start:self.pos - 1])
        return 0

    def atom(self, pattern: re.Pattern = _ATEXT) -> tuple[int, bytes]:
        found = pattern.match(self.data, self.pos)
        if found is None:
            return -1, b""
        self.pos = found.end()
        return self.skip_cfws(), found.group()

    def quoted_string(self) -> tuple[int, bytes]:
        """At '"': the unescaped, unfolded content; -1 if it never closes."""
        data, length = self.data, len(self.data)
        start = self.pos + 1
        self.pos = start
        while self.pos < length:
            char = data[self.pos]
            if char == 0x5C:
                self.pos += 2
            elif char == 0x22:
                content = _QUOTED_PAIR.sub(rb"\1", _FOLD.sub(b"", data[start:self.pos]))
                self.pos += 1
                return self.skip_cfws(), content
            else:
                self.pos += 1
        self.pos = length
        return -1, b""

    def dot_atom(self, strict: bool) -> tuple[int, bytes]:
        """dot-atom (RFC 5322 3.2.3). Not strict: stray dots are kept, as local
        parts in real mail have them ("a..b", "a.")."""
        if not strict:
            return self._loose_dot_atom()
        ret, text = self.atom()
        if ret < 0:
            return -1, b""
        while ret > 0 and self.char() == b".":
            self.pos += 1
            if self.skip_cfws() <= 0:
                return -1, text  # a trailing dot
            ret, more = self.atom()
            if ret < 0:
                return -1, text
            text += b"." + more
        return ret, text

    def _loose_dot_atom(self) -> tuple[int, bytes]:
        text = b""
        ret = -1
        while True:
            while self.char() == b".":
                text += b"."
                self.pos += 1
                if not self.more():
                    return 0, text  # "@domain" missing, the local part itself is fine
                ret = 1
            if self.char() == b"@":
                return ret, text
            ret, word = self.atom()
            text += word
            if not (ret > 0 and self.char() == b"."):
                return ret, text

    def phrase(self) -> tuple[int, bytes]:
        """phrase = 1*word / obs-phrase (RFC 5322 3.2.5, 4.1); words joined by one space."""
        if not self.more():
            return 0, b""
        if self.char() == b".":
            return -1, b""
        words: list[bytes] = []
        while True:
            if self.char() == b'"':
                ret, word = self.quoted_string()
            elif _ATEXT_OR_DOT.match(self.data, self.pos):
                ret, word = self.atom(_ATEXT_OR_DOT)
            else:
                return 1, b" ".join(words)  # e.g. "<addr>" with no display name
            if ret < 0:
                return ret, b" ".join(words)
            words.append(word)
            if ret == 0:
                return 0, b" ".join(words)
            if not (_ATEXT_OR_DOT.match(self.data, self.pos) or self.char() == b'"'):
                return 1, b" ".join(words)

    def domain(self) -> tuple[int, bytes]:
        """At "@": domain = dot-atom / domain-literal (RFC 5322 3.4.1)."""
        self.pos += 1
        if self.skip_cfws() <= 0:
            return -1, b""
        if self.char() != b"[":
            return self.dot_atom(strict=True)
        end = self.data.find(b"]", self.pos)
        if end < 0:
            return -1, b""
        literal = _BLANKS.sub(b"", self.data[self.pos:end + 1])
        self.pos = end + 1
        return self.skip_cfws(), literal


class _Parser:
    def __init__(self, value: bytes):
        self.cursor = _Cursor(value)
        self.addr = _Address()
        self.out: list[tuple] = []

    def emit(self) -> None:
        address = self.addr
        self.out.append((for_humans(address.name) if address.name is not None else None,
                         address.route, address.mailbox, address.domain))
        self.addr = _Address()

    def emit_filled(self) -> None:
        if self.addr.mailbox is None:
            self.addr.mailbox = MISSING_MAILBOX
        if not self.addr.domain:
            self.addr.domain = MISSING_DOMAIN
        self.emit()

    def route(self) -> int:
        """obs-route's domain list (RFC 5322 4.4): "@a,@b" before ":"."""
        cursor = self.cursor
        hops: list[bytes] = []
        while cursor.more() and cursor.char() == b"@":
            ret, domain = cursor.domain()
            if ret <= 0:
                return ret
            hops.append(b"@" + domain)
            while cursor.skip_cfws() > 0 and cursor.char() == b",":
                cursor.pos += 1
        if not cursor.more():
            return 0
        self.addr.route = b",".join(hops)
        return 1

    def angle_address(self) -> int:
        """angle-addr = "<" [route ":"] local-part "@" domain ">" (RFC 5322 3.4)."""
        cursor = self.cursor
        cursor.pos += 1
        if cursor.skip_cfws() <= 0:
            return -1
        if cursor.char() == b"@":
            if self.route() > 0 and cursor.char() == b":":
                cursor.pos += 1
            else:
                self.addr.route = b"INVALID_ROUTE"
                if not cursor.more():
                    return -1
            if cursor.skip_cfws() <= 0:
                return -1
        if cursor.char() != b">":  # "<>" is no address; it reads MISSING_*
            if self.local_part() <= 0:
                return -1
            if cursor.char() == b"@":
                ret, domain = cursor.domain()
                if ret < 0:
                    return -1
                self.addr.domain = domain
                if ret == 0:
                    return -1
        if cursor.char() != b">":
            return -1
        cursor.pos += 1
        return cursor.skip_cfws()

    def local_part(self) -> int:
        cursor = self.cursor
        if cursor.char() == b'"':
            ret, text = cursor.quoted_string()
        else:
            ret, text = cursor.dot_atom(strict=False)
        if ret < 0:
            return -1
        self.addr.mailbox = text
        return ret

    def name_address(self) -> int:
        """name-addr = [display-name] angle-addr."""
        ret, name = self.cursor.phrase()
        if ret <= 0 or self.cursor.char() != b"<":
            return -1
        self.addr.name = name or None
        if self.angle_address() < 0:
            self.addr.domain = SYNTAX_ERROR
            self.addr.invalid = True
        return 1 if self.cursor.more() else 0

    def addr_spec(self) -> int:
        """addr-spec = local-part "@" domain, with the fallbacks for broken input."""
        cursor = self.cursor
        cursor.last_comment = b""
        quoted = cursor.char() == b'"'
        ret = self.local_part()
        if ret <= 0:
            self.addr.invalid = True
        domain_ret = None
        if ret != 0 and cursor.more() and cursor.char() == b"@":
            domain_ret, domain = cursor.domain()
            if domain_ret >= 0:
                self.addr.domain = domain
            if domain_ret <= 0:
                ret = domain_ret
        if cursor.last_comment:
            self.addr.name = cursor.last_comment
        elif domain_ret is None:
            # No "@domain" and no comment: a lone word is a mailbox, more
            # words make the whole text a display name.
            ret_phrase, rest = cursor.phrase()
            if rest:
                self.addr.name = (self.addr.mailbox or b"") + b" " + rest
                self.addr.mailbox = None
            elif not quoted:
                self.addr.domain = b""
            self.addr.invalid = True
            ret = -1
        return ret

    def mailbox(self) -> int:
        """mailbox = name-addr / addr-spec."""
        start = self.cursor.pos
        ret = self.name_address()
        if ret < 0:
            self.cursor.pos = start
            self.addr = _Address()
            ret = self.addr_spec()
            address = self.addr
            if (address.invalid and address.name is None and address.mailbox is not None
                    and address.domain is None):
                address.name, address.mailbox = address.mailbox, None
        self.emit_filled()
        return ret

    def group(self) -> int:
        """group = display-name ":" [group-list] ";" [CFWS] (RFC 5322 3.4)."""
        cursor = self.cursor
        ret, name = cursor.phrase()
        if ret <= 0 or cursor.char() != b":":
            return -1
        cursor.pos += 1
        ret = cursor.skip_cfws()
        self.out.append((None, None, name, None))
        if ret > 0 and cursor.char() != b";":
            while len(self.out) < MAX_ADDRESSES:
                self.mailbox()
                if not cursor.more() or cursor.char() != b",":
                    break
                cursor.pos += 1
                if cursor.skip_cfws() <= 0:
                    ret = -1
                    break
        if ret >= 0:
            if cursor.more() and cursor.char() == b";":
                cursor.pos += 1
                ret = cursor.skip_cfws()
            else:
                ret = -1
        self.out.append((None, None, None, None))
        return 0 if ret == 0 else 1

    def address_list(self) -> list[tuple]:
        cursor = self.cursor
        if cursor.skip_cfws() <= 0:
            return []
        while len(self.out) < MAX_ADDRESSES:
            start = cursor.pos
            ret = self.group()
            if ret < 0:
                cursor.pos = start
                self.addr = _Address()
                ret = self.mailbox()
            if ret == 0 or not cursor.more() or cursor.char() != b",":
                break
            cursor.pos += 1
            ret = cursor.skip_cfws()
            if ret <= 0:
                if ret < 0:  # ends with garbage
                    self.emit_filled()
                break
        return self.out


def parse_addresses(value: bytes) -> Optional[tuple]:
    """An address field's value as ENVELOPE address structures; None if it holds none."""
    parsed = _Parser(value).address_list()
    return tuple(parsed) if parsed else None
