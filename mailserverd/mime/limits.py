"""Limits a message must meet before Python's email package may parse it.

Measured (FACTS.md and mime tests): 1,000 nested MIME levels raise
RecursionError in the email package; so do about 1,000 nested comments in a
Content-Type or address field (email._header_value_parser.get_comment
recurses), even inside email.message_from_bytes itself; 20,000 addresses in
one To: take 10 s in `.addresses`; 20,000 Content-Type parameters take 15 s.
check_limits() rejects all of these in one pass without recursion, in time
roughly proportional to the message size.
"""

from __future__ import annotations

import re

from .headers import FIELD_PATTERN
from .structure import (DEFAULT_MAX_HEADER_SIZE, DEFAULT_MAX_MIME_DEPTH, DEFAULT_MAX_PARTS,
                        MessageTooComplex, iter_parts)

__all__ = ["MessageTooComplex", "check_limits", "count_addresses", "comment_depth",
           "DEFAULT_MAX_ADDRESSES", "MAX_COMMENT_DEPTH", "MAX_PARAMETERS",
           "MAX_PARAMETER_SEPARATORS"]

DEFAULT_MAX_ADDRESSES = 1000
MAX_COMMENT_DEPTH = 50  # far beyond real mail, far below the interpreter's recursion limit
# Per Content-Type / Content-Disposition field. Parameters cost the email package
# quadratic time: 1,000 take 0.2 s (0.45 s as RFC 2231 sections), 20,000 empty
# ones (";;;") 15 s. Spam with 750 empty ones exists, so ";" gets a looser cap;
# "=" is counted twice per parameter to allow for encoded words and base64.
MAX_PARAMETERS = 100
MAX_PARAMETER_SEPARATORS = 1000

# RFC 5322 3.6.2, 3.6.3, 3.6.6: fields holding address lists.
ADDRESS_FIELDS = frozenset({
    "from", "sender", "reply-to", "to", "cc", "bcc", "resent-from", "resent-sender",
    "resent-to", "resent-cc", "resent-bcc", "disposition-notification-to", "return-path",
})
# Fields the email package (policy.default) parses with its recursive structured parser.
_STRUCTURED_FIELDS = ADDRESS_FIELDS | {
    "content-type", "content-disposition", "content-transfer-encoding", "mime-version",
    "message-id", "in-reply-to", "references", "date", "resent-date", "resent-message-id",
    "content-id",
}
_PARAMETER_FIELDS = frozenset({"content-type", "content-disposition"})

_QUOTED_OR_COMMENT_CHARS = re.compile(rb'["()\\]')
_MEMBER_SEPARATOR = re.compile(rb"[,;]")


def check_limits(raw: bytes, max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
                 max_mime_depth: int = DEFAULT_MAX_MIME_DEPTH,
                 max_addresses: int = DEFAULT_MAX_ADDRESSES,
                 max_parts: int = DEFAULT_MAX_PARTS) -> None:
    """Raise MessageTooComplex(reason) if `raw` is unsafe to hand to the email package.

    Checked for the message and every part and encapsulated message in it:
    each header section <= max_header_size bytes; MIME nesting <= max_mime_depth
    (the message itself is level 0); at most max_parts entities; at most
    max_addresses addresses across the address fields of any one header section;
    comment nesting <= MAX_COMMENT_DEPTH and at most MAX_PARAMETERS MIME
    parameters in any structured field.
    """

    def check_header(header: bytes) -> None:
        addresses = 0
        for match in FIELD_PATTERN.finditer(header):
            name = match.group(1).lower().decode("ascii")
            if name not in _STRUCTURED_FIELDS:
                continue
            value = match.group(2)
            if value.count(b"(") > MAX_COMMENT_DEPTH and comment_depth(value) > MAX_COMMENT_DEPTH:
                raise MessageTooComplex(f"comments nested deeper than {MAX_COMMENT_DEPTH} in {name}")
            if name in _PARAMETER_FIELDS and (value.count(b";") > MAX_PARAMETER_SEPARATORS
                                              or value.count(b"=") > 2 * MAX_PARAMETERS):
                raise MessageTooComplex(f"more than {MAX_PARAMETERS} parameters in {name}")
            if name in ADDRESS_FIELDS:
                addresses += count_addresses(value)
                if addresses > max_addresses:
                    raise MessageTooComplex(f"more than {max_addresses} addresses in a header")

    # as_email_package: nesting is measured on the very structure the email package
    # would recurse into, its own reading of each Content-Type field included.
    for _part in iter_parts(raw, max_header_size=max_header_size, max_mime_depth=max_mime_depth,
                            max_parts=max_parts, header_hook=check_header, as_email_package=True):
        pass


def count_addresses(value: bytes) -> int:
    """How many members an address field lists (RFC 5322 3.4): commas outside quoted
    strings, comments and angle brackets separate them; a group's name (RFC 5322
    3.4 group) and empty members are not counted."""
    if not _QUOTED_OR_COMMENT_CHARS.search(value):
        # The common case, split in C: "," separates members, ";" ends a group.
        return sum(1 for member in _MEMBER_SEPARATOR.split(value)
                   if member.rpartition(b":")[2].strip())
    members, current_has_text = 0, False
    depth, quoted, escaped, angle = 0, False, False, False
    for byte in value:
        if escaped:
            escaped = False
            continue
        if byte == 0x5C:  # backslash: quoted-pair (RFC 5322 3.2.1)
            escaped = quoted or depth > 0
        elif quoted:
            if byte == 0x22:
                quoted = False
        elif depth:
            if byte == 0x28:
                depth += 1
            elif byte == 0x29:
                depth -= 1
        elif byte == 0x22:
            quoted = current_has_text = True
        elif byte == 0x28:
            depth = 1
        elif byte == 0x3C:
            angle = current_has_text = True
        elif byte == 0x3E:
            angle = False
        elif byte in (0x2C, 0x3B) and not angle:  # "," or ";" (end of a group)
            members += current_has_text
            current_has_text = False
        elif byte == 0x3A and not angle:  # "name:" starts a group; the name is no member
            current_has_text = False
        elif byte not in (0x20, 0x09, 0x0D, 0x0A):
            current_has_text = True
    return members + current_has_text


def comment_depth(value: bytes) -> int:
    """An upper bound on the comment nesting (RFC 5322 3.2.2) any parser can find in
    `value`: every "(" opens, even inside quotes or after a backslash; a ")" closes
    unless a backslash escapes it (a quoted-pair inside a comment). No recursion."""
    deepest = depth = 0
    escaped = False
    for byte in value:
        if escaped:
            escaped = False
            if byte != 0x28:
                continue
        if byte == 0x5C:
            escaped = True
        elif byte == 0x28:
            depth += 1
            deepest = max(deepest, depth)
        elif byte == 0x29 and depth:
            depth -= 1
    return deepest
