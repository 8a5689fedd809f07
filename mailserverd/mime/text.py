"""Body text for previews: bounded transfer decoding, charsets, HTML to plain text.

Every function takes a cap and never raises on malformed input; the work done
is linear in the capped input (no regular expressions that can backtrack).
"""

from __future__ import annotations

import binascii
import html
import re

from .headers import decode_bytes

_BASE64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_WHITESPACE = re.compile(r"\s+")
# Elements whose content is never shown (HTML Living Standard 15.3.1 "display: none").
_HIDDEN_ELEMENTS = ("script", "style", "head", "title", "template", "noscript")
_ASCII_LOWER = {code: code + 32 for code in range(ord("A"), ord("Z") + 1)}


def decode_transfer(body: bytes, encoding: str, max_output: int) -> bytes:
    """Undo a Content-Transfer-Encoding (RFC 2045 6) on a prefix of `body`,
    giving at most about `max_output` bytes. Unknown encodings pass through."""
    if encoding == "base64":
        # RFC 2045 6.8: characters outside the alphabet are ignored; padding is
        # dropped and put back, so a prefix cut anywhere still decodes.
        encoded = _BASE64_JUNK.sub(b"", body[: max_output * 4 // 3 * 2 + 4])
        encoded = encoded[: (max_output // 3 + 1) * 4]
        if len(encoded) % 4 == 1:
            encoded = encoded[:-1]
        encoded += b"=" * (-len(encoded) % 4)
        try:
            return binascii.a2b_base64(encoded)
        except (binascii.Error, ValueError):
            return b""
    if encoding == "quoted-printable":
        chunk = body[: max_output * 3]
        if len(chunk) < len(body):  # do not cut an "=XX" escape or a soft break in half
            cut = chunk.rfind(b"\n")
            chunk = chunk[: cut + 1] if cut > 0 else chunk
        try:
            return binascii.a2b_qp(chunk)[:max_output]
        except (binascii.Error, ValueError):
            return chunk[:max_output]
    return body[:max_output]


def html_to_text(markup: str) -> str:
    """Visible text of an HTML fragment: tags, comments and hidden elements dropped,
    character references decoded. Linear: a scan with str.find, no backtracking."""
    lower = markup.translate(_ASCII_LOWER)  # same length as markup, unlike str.lower()
    pieces: list[str] = []
    position, end = 0, len(markup)
    while position < end:
        tag = markup.find("<", position)
        if tag < 0:
            pieces.append(markup[position:])
            break
        pieces.append(markup[position:tag])
        if markup.startswith("<!--", tag):
            close = markup.find("-->", tag + 4)
            position = end if close < 0 else close + 3
            continue
        close = markup.find(">", tag + 1)
        if close < 0:
            break
        name = _tag_name(lower, tag + 1, close)
        position = close + 1
        if name in _HIDDEN_ELEMENTS:
            closing = lower.find("</" + name, position)
            if closing < 0:
                break
            after = lower.find(">", closing)
            position = end if after < 0 else after + 1
        pieces.append(" ")  # tags separate words (<br>, <p>, <td>)
    return html.unescape("".join(pieces))


def _tag_name(lower: str, start: int, close: int) -> str:
    index = start
    while index < close and (lower[index].isalnum() or lower[index] in "-_:"):
        index += 1
    return lower[start:index]


def collapse_whitespace(text: str, limit: int) -> str:
    """Runs of white space as one space, controls dropped, at most `limit` characters."""
    words = _WHITESPACE.sub(" ", text[: limit * 8]).strip()
    return clean_text(words)[:limit].rstrip()


_CONTROLS = {code: None for code in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)}
_CONTROLS.update({0x09: " ", 0x0A: " ", 0x0D: " "})


def clean_text(text: str) -> str:
    """Text safe for any database column: no C0 controls (PostgreSQL rejects NUL),
    no lone surrogates (UTF-8 cannot encode them)."""
    text = text.translate(_CONTROLS)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def part_text(body: bytes, encoding: str, charset: str | None, is_html: bool,
              max_bytes: int) -> str:
    """Decoded text of one text/* body part, from at most `max_bytes` decoded bytes."""
    data = decode_transfer(body, encoding, max_bytes)
    text = decode_bytes(data, charset)
    return html_to_text(text) if is_html else text
