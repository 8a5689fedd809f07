"""BODY[section]<partial> and BINARY[section] (RFC 9051 6.4.5, RFC 3516).

    message = IMAPMessage(raw)                      # parse once per message
    message.section((1, 2), "HEADER")               # BODY[1.2.HEADER]
    message.section((), "HEADER.FIELDS", ("From",)) # BODY[HEADER.FIELDS (From)]
    section(raw, "1.2.HEADER", partial=(0, 100))    # the same from a spec string

Part numbers follow RFC 9051 6.4.5: a non-multipart message has only part
1 (its body); the parts of a message/rfc822 part continue its number
(1.2 is part 2 of the message in part 1). As in Dovecot, a final "1"
below a non-multipart part names that part again (BODY[2.1] = BODY[2]).
HEADER, TEXT and HEADER.FIELDS apply to the message itself or to a
message/rfc822 part; MIME to a part.
A section that does not exist is an empty string, which is what Dovecot
answers (RFC 9051 leaves it open; clients cope with "" better than NIL).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Optional, Sequence

from mailserverd.imap.responses import render

from .imapheader import canonical
from .imapstructure import (DEFAULT_MAX_DEPTH, DEFAULT_MAX_PARTS, Entity, bodystructure_value,
                            envelope_value, parse_tree)

MAX_PART_NUMBERS = 32
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_SPEC = re.compile(r"((?:[1-9][0-9]{0,9})(?:\.[1-9][0-9]{0,9})*)?(?:\.?(HEADER\.FIELDS\.NOT|"
                   r"HEADER\.FIELDS|HEADER|TEXT|MIME))?(?:\s*\((.*)\))?\Z", re.I | re.S)


class UnknownTransferEncoding(ValueError):
    """BINARY of a part whose encoding we cannot decode: NO [UNKNOWN-CTE] (RFC 3516 4.3)."""


class IMAPMessage:
    """One message, canonicalised (CRLF) and parsed once for many FETCH items."""

    def __init__(self, raw: bytes, max_depth: int = DEFAULT_MAX_DEPTH,
                 max_parts: int = DEFAULT_MAX_PARTS):
        self.raw = canonical(raw)
        self.tree = parse_tree(self.raw, max_depth, max_parts)

    @property
    def size(self) -> int:
        """RFC822.SIZE: octets of the message as BODY[] sends it."""
        return len(self.raw)

    def envelope(self) -> bytes:
        return render(envelope_value(self.tree))

    def bodystructure(self, extensible: bool = True) -> bytes:
        return render(bodystructure_value(self.raw, self.tree, extensible))

    # -- navigation --------------------------------------------------------

    def part(self, numbers: Sequence[int]) -> Optional[Entity]:
        """The entity a part number names, or None (RFC 9051 6.4.5)."""
        if len(numbers) > MAX_PART_NUMBERS:
            return None
        node = self.tree
        for index, number in enumerate(numbers):
            more = index + 1 < len(numbers)
            if node.is_multipart:
                if not 1 <= number <= len(node.children):
                    return None
                node = node.children[number - 1]
            elif number != 1 or (more and not node.is_message):
                return None  # a non-multipart entity has only part 1: itself
            if more and node.is_message and node.message is not None:
                node = node.message  # the numbering continues inside message/rfc822
        return node

    def _message_of(self, numbers: Sequence[int]) -> Optional[Entity]:
        """The message HEADER/TEXT refer to: the whole message, or a message/rfc822 part's."""
        if not numbers:
            return self.tree
        node = self.part(numbers)
        if node is None or not node.is_message:
            return None
        return node.message

    # -- sections ------------------------------------------------------------

    def section(self, numbers: Sequence[int] = (), text: Optional[str] = None,
                fields: Sequence[str] = (), partial: Optional[tuple] = None) -> bytes:
        """BODY[numbers.text (fields)]<partial>; b"" if the section does not exist."""
        data = self._section(tuple(numbers), text.upper() if text else None, fields) or b""
        if partial is None:
            return data
        start, count = partial
        return data[start:start + count]

    def _section(self, numbers: tuple, text: Optional[str], fields: Sequence[str]
                 ) -> Optional[bytes]:
        raw = self.raw
        if text is None:
            if not numbers:
                return raw
            node = self.part(numbers)
            return None if node is None else raw[node.body_start:node.end]
        if text == "MIME":
            node = self.part(numbers) if numbers else None
            return None if node is None else raw[node.header_start:node.body_start]
        message = self._message_of(numbers)
        if message is None:
            return None
        if text == "TEXT":
            return raw[message.body_start:message.end]
        header = raw[message.header_start:message.body_start]
        if text == "HEADER":
            return header
        if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            wanted = {name.lower().encode("ascii", "replace") for name in fields}
            keep = text == "HEADER.FIELDS"
            chosen = [raw[field.start:field.end] for field in message.fields
                      if (field.lower in wanted) == keep and (field.name is not None or not keep)]
            if keep and chosen and not chosen[-1].endswith(b"\r\n"):
                chosen[-1] += b"\r\n"  # a last field without line end, as Dovecot sends it
            blank_line = b"\r\n" if message.body_start > message.header_end else b""
            return b"".join(chosen) + blank_line
        return None

    def binary(self, numbers: Sequence[int] = (), partial: Optional[tuple] = None
               ) -> Optional[bytes]:
        """BINARY[numbers]<partial> (RFC 3516 4.2): the part with its
        Content-Transfer-Encoding removed; raises UnknownTransferEncoding."""
        if not numbers:
            data: Optional[bytes] = self.raw
        else:
            node = self.part(numbers)
            if node is None:
                return None
            data = self.raw[node.body_start:node.end]
            if not (node.is_multipart or node.is_message):
                data = decode_transfer_encoding(data, node.transfer_encoding)
        if partial is not None:
            start, count = partial
            data = data[start:start + count]
        return data

    def binary_size(self, numbers: Sequence[int] = ()) -> Optional[int]:
        """BINARY.SIZE[numbers] (RFC 3516 4.2)."""
        data = self.binary(numbers)
        return None if data is None else len(data)


def decode_transfer_encoding(data: bytes, encoding: Optional[bytes]) -> bytes:
    """Undo a Content-Transfer-Encoding (RFC 2045 6)."""
    name = (encoding or b"7bit").lower()
    if name in (b"7bit", b"8bit", b"binary"):
        return data
    if name == b"base64":
        # RFC 2045 6.8: characters outside the alphabet are ignored.
        cleaned = _NOT_BASE64.sub(b"", data)
        if len(cleaned) % 4 == 1:  # a lone trailing sextet carries no whole octet
            cleaned = cleaned[:-1]
        try:
            return base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))
        except binascii.Error:
            return b""
    if name == b"quoted-printable":
        return binascii.a2b_qp(data)
    raise UnknownTransferEncoding(name.decode("ascii", "replace"))


def parse_spec(spec: str) -> tuple[tuple, Optional[str], tuple]:
    """"1.2.HEADER.FIELDS (From To)" -> ((1, 2), "HEADER.FIELDS", ("From", "To"))."""
    match = _SPEC.match(spec.strip())
    if match is None:
        raise ValueError("invalid section: " + spec[:80])
    numbers = tuple(int(n) for n in match.group(1).split(".")) if match.group(1) else ()
    text = match.group(2).upper() if match.group(2) else None
    fields = tuple(match.group(3).split()) if match.group(3) is not None else ()
    if (text or "").startswith("HEADER.FIELDS") != bool(fields) or (text == "MIME" and
                                                                    not numbers):
        raise ValueError("invalid section: " + spec[:80])
    return numbers, text, fields


def section(raw: bytes, spec: str = "", partial: Optional[tuple] = None) -> bytes:
    """BODY[spec]<partial> of a message, e.g. section(raw, "1.2.HEADER")."""
    numbers, text, fields = parse_spec(spec)
    return IMAPMessage(raw).section(numbers, text, fields, partial)
