"""Modified UTF-7 mailbox names (RFC 3501 5.1.3) and mailbox-name validation.

Inside the server a mailbox name is a str with "/" as the hierarchy
separator; on the wire it is modified UTF-7 unless the client enabled
UTF8=ACCEPT (RFC 6855 3). decode() is strict: every name has exactly one
valid encoding, so two spellings can never reach the same mailbox.
"""

from __future__ import annotations

import binascii
import re

HIERARCHY_SEPARATOR = "/"
MAX_MAILBOX_OCTETS = 1000  # UTF-8 octets of a whole name
MAX_MAILBOX_LEVELS = 64

_B64_CHARS = re.compile(rb"[A-Za-z0-9+,]*")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


class MUTF7Error(ValueError):
    """Bytes that are not valid modified UTF-7."""


class InvalidMailboxName(ValueError):
    """A mailbox name the server refuses; str(exc) is safe to show a client."""


def _is_direct(char: str) -> bool:
    # RFC 3501 5.1.3: printable US-ASCII except "&" represent themselves.
    return "\x20" <= char <= "\x7e"


def encode(name: str) -> bytes:
    """Encode a mailbox name for the wire (RFC 3501 5.1.3)."""
    out = bytearray()
    pending: list[str] = []

    def flush() -> None:
        if pending:
            utf16 = "".join(pending).encode("utf-16-be")
            b64 = binascii.b2a_base64(utf16, newline=False).rstrip(b"=")
            out.extend(b"&" + b64.replace(b"/", b",") + b"-")
            pending.clear()

    for char in name:
        if _is_direct(char):
            flush()
            out.extend(b"&-" if char == "&" else char.encode("ascii"))
        else:
            pending.append(char)
    flush()
    return bytes(out)


def decode(data: bytes) -> str:
    """Decode a wire mailbox name strictly; raise MUTF7Error if malformed."""
    out: list[str] = []
    pos, length = 0, len(data)
    previous_was_encoded = False
    while pos < length:
        byte = data[pos]
        if not 0x20 <= byte <= 0x7E:
            raise MUTF7Error("mailbox name has a byte outside printable US-ASCII")
        if byte != 0x26:  # "&"
            out.append(chr(byte))
            pos += 1
            previous_was_encoded = False
            continue
        end = data.find(b"-", pos + 1)
        if end < 0:
            raise MUTF7Error("unterminated &...- sequence")
        chunk = data[pos + 1:end]
        pos = end + 1
        if not chunk:
            out.append("&")
            previous_was_encoded = False
            continue
        if previous_was_encoded:
            raise MUTF7Error("adjacent encoded sequences must be merged")
        out.append(_decode_chunk(chunk))
        previous_was_encoded = True
    return "".join(out)


def _decode_chunk(chunk: bytes) -> str:
    if _B64_CHARS.fullmatch(chunk) is None:
        raise MUTF7Error("invalid character in modified base64")
    bits = len(chunk) * 6
    if bits % 16 >= 6:  # a whole spare sextet: not the shortest encoding
        raise MUTF7Error("modified base64 has trailing characters")
    padded = chunk.replace(b",", b"/") + b"=" * (-len(chunk) % 4)
    try:
        raw = binascii.a2b_base64(padded, strict_mode=True)
    except binascii.Error:
        raise MUTF7Error("invalid modified base64") from None
    # Leftover bits beyond the last UTF-16 unit must be zero.
    if binascii.b2a_base64(raw, newline=False).rstrip(b"=") != chunk.replace(b",", b"/"):
        raise MUTF7Error("non-zero padding bits in modified base64")
    if len(raw) % 2:
        raise MUTF7Error("modified base64 is not whole UTF-16 units")
    try:
        text = raw.decode("utf-16-be")
    except UnicodeDecodeError:
        raise MUTF7Error("unpaired UTF-16 surrogate") from None
    if any(_is_direct(char) for char in text):
        raise MUTF7Error("printable US-ASCII must not be base64-encoded")
    return text


def normalize_mailbox_name(name: str) -> str:
    """Validate a mailbox name and return its canonical form.

    Refuses empty names, names over MAX_MAILBOX_OCTETS, control characters,
    the wildcards "*" and "%", empty hierarchy levels ("a//b", "/a", "a/"),
    and "." or ".." levels. INBOX is case-insensitive (RFC 3501 5.1), so a
    first level spelled any way is returned as "INBOX".
    """
    if not name:
        raise InvalidMailboxName("empty mailbox name")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_MAILBOX_OCTETS:
        raise InvalidMailboxName("mailbox name too long")
    if _CONTROL.search(name):
        raise InvalidMailboxName("control character in mailbox name")
    if any(0xD800 <= ord(char) <= 0xDFFF for char in name):
        raise InvalidMailboxName("invalid character in mailbox name")
    if "*" in name or "%" in name:
        raise InvalidMailboxName("wildcard character in mailbox name")
    levels = name.split(HIERARCHY_SEPARATOR)
    if len(levels) > MAX_MAILBOX_LEVELS:
        raise InvalidMailboxName("mailbox hierarchy too deep")
    for level in levels:
        if not level:
            raise InvalidMailboxName("empty hierarchy level in mailbox name")
        if level in (".", ".."):
            raise InvalidMailboxName("'.' or '..' in mailbox name")
    if levels[0].upper() == "INBOX":
        levels[0] = "INBOX"
    return HIERARCHY_SEPARATOR.join(levels)


def normalize_pattern(pattern: str) -> str:
    """A LIST pattern or reference (RFC 3501 6.3.8): INBOX made case-insensitive,
    control characters refused; wildcards and empty levels are allowed."""
    if len(pattern.encode("utf-8", "surrogatepass")) > MAX_MAILBOX_OCTETS:
        raise InvalidMailboxName("mailbox pattern too long")
    if _CONTROL.search(pattern):
        raise InvalidMailboxName("control character in mailbox pattern")
    head, sep, tail = pattern.partition(HIERARCHY_SEPARATOR)
    if head.upper() == "INBOX":
        return "INBOX" + sep + tail
    return pattern
