"""Header fields and MIME header values, as IMAP FETCH needs them.

Everything works on bytes in canonical form (CRLF line ends, see
canonical()), because IMAP sizes, sections and BODYSTRUCTURE describe the
message exactly as the server sends it. Structured values are read with a
small tolerant lexer (RFC 2045 5.1, RFC 5322 3.2) that never recurses:
comments nest by counting.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

from mailserverd.imap.responses import LiteralString

_WSP = b" \t"
# RFC 2045 5.1 tspecials, plus SP and CTLs: what ends a token.
_TOKEN = re.compile(rb'[^\x00-\x20\x7f()<>@,;:\\"/\[\]?=]+')
# RFC 5322 3.2.3 atext (and 8-bit, which real mail carries).
_ATOM = re.compile(rb"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\xff]+")
_UNQUOTED_VALUE = re.compile(rb'[^;\x00-\x20\x7f"]+')
_QUOTED_PAIR = re.compile(rb"\\(.)", re.S)
_FOLD = re.compile(rb"\r\n(?=[ \t])")
_HUMAN_SPACE = re.compile(rb"[ \t\r\n]+")
_NEEDS_LITERAL = re.compile(rb'["\\\x80-\xff]')
_RFC2231_NAME = re.compile(rb"(.+?)\*(?:([0-9]{1,3})\*?|)\Z", re.S)


def canonical(raw: bytes) -> bytes:
    """The message with every bare LF turned into CRLF (as IMAP sizes assume)."""
    if raw.count(b"\n") == raw.count(b"\r\n"):
        return raw
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@dataclasses.dataclass(frozen=True)
class Field:
    """One header field: name as written (None for a line without ":"), its
    lower-case form (b"" for none), the raw value (after the colon, folding
    CRLFs kept) and its offsets in the message."""

    name: Optional[bytes]
    lower: bytes
    value: bytes
    start: int
    end: int  # just after the field's last CRLF


def header_fields(raw: bytes, start: int, end: int) -> list[Field]:
    """The fields of the header in raw[start:end] (which ends at or before the blank line)."""
    fields: list[Field] = []
    pos = start
    current: Optional[list] = None  # [name, value_start, field_start]
    while pos < end:
        line_end = raw.find(b"\r\n", pos, end)
        next_pos = end if line_end < 0 else line_end + 2
        if raw[pos:pos + 1] in (b" ", b"\t") and current is not None:
            pos = next_pos  # RFC 5322 2.2.3: a continuation line
            continue
        if current is not None:
            fields.append(_field(raw, current, pos))
        colon = raw.find(b":", pos, next_pos)
        if colon < 0:
            current = [None, next_pos, pos]
        else:
            current = [raw[pos:colon].rstrip(_WSP), colon + 1, pos]
        pos = next_pos
    if current is not None:
        fields.append(_field(raw, current, end))
    return fields


def _field(raw: bytes, current: list, end: int) -> Field:
    name, value_start, field_start = current
    value_end = end - 2 if raw[end - 2:end] == b"\r\n" and end - 2 >= value_start else end
    return Field(name, name.lower() if name is not None else b"", raw[value_start:value_end],
                 field_start, end)


def unfold(value: bytes) -> bytes:
    """RFC 5322 2.2.3 unfolding. Blanks after the colon are dropped; the rest,
    trailing blanks and the indent of a value that starts on a continuation
    line included, is kept (as Dovecot sends it)."""
    return _FOLD.sub(b"", value.lstrip(b" \t"))


def for_humans(value: bytes) -> bytes:
    """Subject and display names as Dovecot shows them: CR, LF and TAB become
    spaces, runs of spaces one space, no blanks at either end, NUL becomes 0x80.
    When that changed anything, or the text has '"', '\\' or 8-bit octets, the
    result is a LiteralString, so it is sent verbatim rather than escaped."""
    cleaned = _HUMAN_SPACE.sub(b" ", value.replace(b"\x00", b"\x80")).strip(b" ")
    if cleaned != value or _NEEDS_LITERAL.search(value):
        return LiteralString(cleaned) if cleaned else b""
    return cleaned


class ValueLexer:
    """A cursor over one structured header value."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.last_comment: Optional[bytes] = None

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self) -> bytes:
        return self.data[self.pos:self.pos + 1]

    def skip_cfws(self) -> None:
        """Skip whitespace and comments (RFC 5322 3.2.2), keeping the last comment."""
        data, length = self.data, len(self.data)
        while self.pos < length:
            char = data[self.pos]
            if char in b" \t\r\n":
                self.pos += 1
            elif char == 0x28:  # "("
                self.last_comment = self._comment()
            else:
                return

    def _comment(self) -> bytes:
        data, length = self.data, len(self.data)
        depth = 0
        start = self.pos + 1
        while self.pos < length:
            char = data[self.pos]
            if char == 0x5C:  # quoted-pair
                self.pos += 2
                continue
            if char == 0x28:
                depth += 1
            elif char == 0x29:
                depth -= 1
                if depth == 0:
                    self.pos += 1
                    return _QUOTED_PAIR.sub(rb"\1", data[start:self.pos - 1])
            self.pos += 1
        return _QUOTED_PAIR.sub(rb"\1", data[start:])

    def match(self, pattern: re.Pattern) -> Optional[bytes]:
        found = pattern.match(self.data, self.pos)
        if found is None:
            return None
        self.pos = found.end()
        return found.group()

    def token(self) -> Optional[bytes]:
        return self.match(_TOKEN)

    def atom(self) -> Optional[bytes]:
        return self.match(_ATOM)

    def accept(self, char: bytes) -> bool:
        if self.data[self.pos:self.pos + 1] == char:
            self.pos += 1
            return True
        return False

    def quoted_string(self) -> Optional[bytes]:
        """Called at '"'; returns the unescaped content, None if it never closes."""
        data, length = self.data, len(self.data)
        self.pos += 1
        start = self.pos
        while self.pos < length:
            char = data[self.pos]
            if char == 0x5C:
                self.pos += 2
                continue
            if char == 0x22:
                self.pos += 1
                return _QUOTED_PAIR.sub(rb"\1", data[start:self.pos - 1])
            self.pos += 1
        self.pos = length
        return None

    def skip_past(self, char: int) -> bool:
        """Move past the next `char` outside quoted strings; False at the end."""
        data, length = self.data, len(self.data)
        while self.pos < length:
            current = data[self.pos]
            if current == 0x22:
                self.quoted_string()
                continue
            self.pos += 1
            if current == char:
                return True
        return False


def _unfold_value(value: bytes) -> bytes:
    """RFC 5322 2.2.3: unfolding removes the CRLF before folding white space,
    also inside quoted strings such as a folded boundary parameter."""
    return value.replace(b"\r\n", b"").replace(b"\n", b"")


def parse_content_type(value: bytes) -> Optional[tuple[bytes, bytes, list]]:
    """RFC 2045 5.1: (type, subtype, params) as written, or None if unusable
    (RFC 2045 5.2: then the default applies)."""
    lexer = ValueLexer(_unfold_value(value))
    lexer.skip_cfws()
    media_type = lexer.token()
    lexer.skip_cfws()
    if not media_type or not lexer.accept(b"/"):
        return None
    lexer.skip_cfws()
    subtype = lexer.token()
    if not subtype:
        return None
    return media_type, subtype, _parameters(lexer)


def parse_disposition(value: bytes) -> Optional[tuple[bytes, list]]:
    """RFC 2183 2: (disposition-type, params) or None."""
    lexer = ValueLexer(_unfold_value(value))
    lexer.skip_cfws()
    disposition = lexer.token()
    if not disposition:
        return None
    return disposition, _parameters(lexer)


def parse_token(value: bytes) -> Optional[bytes]:
    """A lone token such as Content-Transfer-Encoding (RFC 2045 6.1)."""
    lexer = ValueLexer(value)
    lexer.skip_cfws()
    token = lexer.token()
    lexer.skip_cfws()
    return token if token and lexer.at_end() else None


def parse_language(value: bytes) -> list[bytes]:
    """Content-Language (RFC 3282 2): a comma-separated list of language tags."""
    lexer = ValueLexer(value)
    languages = []
    lexer.skip_cfws()
    while True:
        tag = lexer.atom()
        if not tag:
            break
        languages.append(tag)
        lexer.skip_cfws()
        if not lexer.accept(b","):
            break
        lexer.skip_cfws()
    return languages


def _parameters(lexer: ValueLexer) -> list[tuple[bytes, bytes]]:
    """*(";" attribute "=" value), tolerant of junk between parameters, then
    RFC 2231 continuations merged the way Dovecot shows them to clients."""
    plain: list[tuple[bytes, bytes]] = []
    extended: list[tuple[bytes, int, bool, bytes]] = []
    while lexer.skip_past(0x3B):  # ";"
        lexer.skip_cfws()
        name = lexer.token()
        if not name:
            continue
        lexer.skip_cfws()
        if not lexer.accept(b"="):
            continue
        lexer.skip_cfws()
        if lexer.peek() == b'"':
            value = lexer.quoted_string()
            if value is None:  # unterminated: dropped, as Dovecot does
                continue
        else:
            value = lexer.match(_UNQUOTED_VALUE) or b""
        split = _RFC2231_NAME.match(name)
        if split is None:
            plain.append((name, value))
        else:
            index = int(split.group(2)) if split.group(2) is not None else 0
            is_extended = name.endswith(b"*")
            extended.append((split.group(1), index, is_extended, value))
    return plain + _merge_rfc2231(extended)


def _merge_rfc2231(pieces: list[tuple[bytes, int, bool, bytes]]) -> list[tuple[bytes, bytes]]:
    """RFC 2231 3-4: name*0*=..., name*1=... become one parameter; it keeps
    the "name*" form (still charset'lang'%XX-encoded) when any piece was encoded."""
    merged: list[tuple[bytes, bytes]] = []
    pieces = sorted(pieces, key=lambda piece: (piece[0], piece[1]))
    index = 0
    while index < len(pieces):
        name = pieces[index][0]
        group = []
        while index < len(pieces) and pieces[index][0].lower() == name.lower():
            group.append(pieces[index])
            index += 1
        if [piece[1] for piece in group] != list(range(len(group))):
            for base, number, is_extended, value in group:  # gaps: leave them as they are
                merged.append((b"%s*%d%s" % (base, number, b"*" if is_extended else b""), value))
            continue
        any_extended = any(piece[2] for piece in group)
        value = b"''" if any_extended and not group[0][2] else b""
        for _, _, is_extended, piece_value in group:
            value += piece_value.replace(b"%", b"%25") if any_extended and not is_extended \
                else piece_value
        merged.append((name + b"*" if any_extended else name, value))
    return merged
