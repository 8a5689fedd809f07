"""Bounded parsing of RFC 5322 header sections: fields, MIME parameters, RFC 2047 words.

Everything here works on raw bytes (CRLF or LF line endings), never raises on
malformed input and never uses the email package, so it is safe on messages
that have not yet passed mime.limits.check_limits.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import urllib.parse
from typing import Iterator

# RFC 5322 3.6.8: field-name = 1*ftext (printable US-ASCII except ":"); RFC 5322 4.5.3
# obs-optional allows white space before the colon.
# Line ends may be CRLF, LF or a bare CR, as the email package accepts all three.
FIELD_PATTERN = re.compile(rb"(?:^|(?<=\r))([\x21-\x39\x3b-\x7e]+)[ \t]*:"
                           rb"([^\r\n]*(?:(?:\r\n|\r|\n)[ \t][^\r\n]*)*)", re.M)
_FOLD = re.compile(rb"(?:\r\n|\r|\n)(?=[ \t])")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")

MAX_PARAMS = 100  # parameters read from one Content-Type / Content-Disposition value


def split_header(raw: bytes) -> tuple[bytes, int]:
    """Split a message at the empty line that ends its header section (RFC 5322 2.1).

    Returns (header_bytes, body_offset): header_bytes ends with the last header
    line's line break and excludes the empty line; body_offset is where the body
    starts. A message without an empty line is all header (body_offset == len(raw)).
    """
    if raw.startswith(b"\r\n"):
        return b"", 2
    if raw.startswith(b"\n"):
        return b"", 1
    match = _BLANK_LINE.search(raw)
    if match is None:
        return raw, len(raw)
    end_of_header = match.start() + (2 if raw[match.start()] == 0x0D else 1)
    return raw[:end_of_header], match.end()


def iter_fields(header: bytes) -> Iterator[tuple[str, bytes]]:
    """(lower-case field name, unfolded value) for each field; garbage lines are skipped."""
    for match in FIELD_PATTERN.finditer(header):
        yield match.group(1).decode("ascii").lower(), _unfold(match.group(2))


def first_fields(header: bytes, names: frozenset[str] | set[str] | None = None) -> dict[str, bytes]:
    """The first occurrence of each field (only those in `names` when given), unfolded."""
    found: dict[str, bytes] = {}
    for match in FIELD_PATTERN.finditer(header):
        name = match.group(1).decode("ascii").lower()
        if (names is None or name in names) and name not in found:
            found[name] = _unfold(match.group(2))
    return found


def _unfold(value: bytes) -> bytes:
    """RFC 5322 2.2.3: unfolding removes each CRLF that precedes white space."""
    if b"\n" in value or b"\r" in value:
        value = _FOLD.sub(b"", value)
    return value.strip(b" \t\r")


# --- charsets ---------------------------------------------------------------

# Labels seen in real mail that Python's codec registry lacks or gets wrong.
# Latin-1 and US-ASCII labels are read as their superset windows-1252 / UTF-8
# (as browsers do, WHATWG Encoding Standard), because mislabelled 8-bit text is common.
_CHARSET_ALIASES = {
    "ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "x-gbk": "gb18030", "gbk": "gb18030",
    "gb2312": "gb18030", "iso-8859-8-i": "iso-8859-8", "iso-8859-6-i": "iso-8859-6",
    "unicode-1-1-utf-7": "utf-7", "x-unicode-2-0-utf-7": "utf-7", "iso-8859-1": "cp1252",
    "latin1": "cp1252", "latin-1": "cp1252", "us-ascii": "", "ascii": "", "x-unknown": "",
    "unknown-8bit": "", "unknown": "", "x-user-defined": "", "default": "", "": "",
}


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Decode text in `charset`; unknown or absent charsets try UTF-8, then windows-1252.

    Never raises: undecodable bytes become U+FFFD.
    """
    codec = _codec_for(charset)
    if codec:
        try:
            return data.decode(codec, "replace")
        except Exception:  # some CJK codecs raise on malformed state despite "replace"
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _codec_for(charset: str | None) -> str:
    if not charset:
        return ""
    label = charset.strip().strip('"').lower().split("*", 1)[0]  # RFC 2231 5: charset*language
    label = _CHARSET_ALIASES.get(label, label)
    if not label:
        return ""
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return ""
    # Only text encodings: "base64", "zlib" and friends are bytes-to-bytes codecs.
    return info.name if getattr(info, "_is_text_encoding", True) else ""


# --- RFC 2047 encoded words ----------------------------------------------------

_ENCODED_WORD = re.compile(rb"=\?([^?\s]{1,64})\?([QqBb])\?([^?\s]*)\?=")
_QP_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")
_WSP_ONLY = re.compile(rb"[ \t\r\n]*")


def decode_words(value: bytes) -> str:
    """Decode RFC 2047 encoded words in an unstructured header value to str.

    RFC 2047 6.2: white space between adjacent encoded words is dropped; the
    bytes of adjacent words in one charset are joined before decoding, so a
    multi-byte character split across two words survives. Text outside encoded
    words is read as UTF-8 (RFC 6532) with a windows-1252 fallback.
    """
    pieces: list[str] = []
    position = 0
    run_charset: str | None = None
    run = bytearray()

    def flush_run() -> None:
        nonlocal run_charset
        if run_charset is not None:
            pieces.append(decode_bytes(bytes(run), run_charset))
            run.clear()
            run_charset = None

    for match in _ENCODED_WORD.finditer(value):
        between = value[position:match.start()]
        if between and not (run_charset is not None and _WSP_ONLY.fullmatch(between)):
            flush_run()
            pieces.append(decode_bytes(between))
        charset = match.group(1).decode("ascii", "replace")
        decoded = _decode_word(match.group(2), match.group(3))
        if run_charset is not None and charset.lower() != run_charset.lower():
            flush_run()
        run_charset = charset
        run += decoded
        position = match.end()
    flush_run()
    if position < len(value):
        pieces.append(decode_bytes(value[position:]))
    return "".join(pieces)


def _decode_word(encoding: bytes, text: bytes) -> bytes:
    if encoding in b"Bb":
        text = text.rstrip(b"=")
        text = text[: len(text) - len(text) % 4] if len(text) % 4 == 1 else text
        try:
            return base64.b64decode(text + b"=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            return b""
    # RFC 2047 4.2: "_" is space, "=XX" a hex octet.
    return _QP_HEX.sub(lambda m: bytes((int(m.group(1), 16),)), text.replace(b"_", b" "))


# --- MIME parameters (RFC 2045 5.1, RFC 2183 2, RFC 2231) ----------------------

def parse_content_type(value: bytes | None, default: str = "text/plain") -> tuple[str, dict[str, str]]:
    """("type/subtype" lower case, parameters) of a Content-Type value.

    RFC 2045 5.2: a missing or syntactically invalid type means `default`
    (text/plain, or message/rfc822 inside multipart/digest, RFC 2046 5.1.5).
    """
    if not value:
        return default, {}
    head, params = _split_value(value)
    mime_type = head.lower()
    maintype, slash, subtype = mime_type.partition("/")
    if not slash or not _is_token(maintype) or not _is_token(subtype):
        return default, params
    return mime_type, params


def parse_disposition(value: bytes | None) -> tuple[str, dict[str, str]]:
    """(disposition type lower case, parameters) of a Content-Disposition value (RFC 2183)."""
    if not value:
        return "", {}
    head, params = _split_value(value)
    return head.lower(), params


_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")


def _is_token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


def _split_value(value: bytes) -> tuple[str, dict[str, str]]:
    text = decode_bytes(value)
    items = _split_semicolons(text)
    head = _strip_comments(items[0]).strip() if items else ""
    simple: dict[str, str] = {}
    extended: dict[str, dict[int, tuple[str, bool]]] = {}
    for item in items[1:1 + MAX_PARAMS]:
        name, eq, raw_value = item.partition("=")
        name = _strip_comments(name).strip().lower()
        if not eq or not name:
            continue
        param_value = _unquote(raw_value.strip())
        # RFC 2231 3 and 4: name*N for continuations, a trailing "*" for charset'lang'%XX.
        base, star, rest = name.partition("*")
        if not star:
            simple.setdefault(name, param_value)
            continue
        encoded = rest.endswith("*") or rest == ""
        section = rest.rstrip("*")
        index = int(section) if section.isdigit() and len(section) < 4 else 0
        extended.setdefault(base, {}).setdefault(index, (param_value, encoded))
    for base, sections in extended.items():
        simple[base] = _join_rfc2231(sections)
    return head, simple


def _join_rfc2231(sections: dict[int, tuple[str, bool]]) -> str:
    charset = ""
    chunks: list[bytes] = []
    for index in sorted(sections):
        text, encoded = sections[index]
        if encoded:
            if index == 0 and text.count("'") >= 2:
                charset, _language, text = text.split("'", 2)
            chunks.append(urllib.parse.unquote_to_bytes(text))
        else:
            chunks.append(text.encode("utf-8", "replace"))
    return decode_bytes(b"".join(chunks), charset or "utf-8")


def _split_semicolons(text: str) -> list[str]:
    """Split at ";" outside quoted strings; quoted-pairs are honoured."""
    if '"' not in text:
        return text.split(";")
    items, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return items


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text.endswith('"'):
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    if text.startswith('"'):  # unterminated quote: keep what is there
        return text[1:]
    return _strip_comments(text).strip()


def _strip_comments(text: str) -> str:
    """Remove RFC 5322 3.2.2 comments (nesting tracked with a counter, not recursion)."""
    if "(" not in text:
        return text
    out, depth = [], 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif not depth:
            out.append(char)
    return "".join(out)
