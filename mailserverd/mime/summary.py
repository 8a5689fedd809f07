"""The header cache and preview the store keeps beside each message.

summarize() never raises and does bounded work: it reads at most
MAX_HEADER_SIZE bytes of the top-level header, walks the MIME structure once
with the non-recursive scanner (mime.structure), and decodes at most
PREVIEW_PLAIN_BYTES / PREVIEW_HTML_BYTES of one body part. Each field falls
back on its own: a broken Date leaves date None but the subject intact.
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import re
from typing import Optional

from .headers import decode_bytes, decode_words, first_fields, split_header
from .limits import MAX_COMMENT_DEPTH, comment_depth
from .structure import (DEFAULT_MAX_HEADER_SIZE, DEFAULT_MAX_MIME_DEPTH, DEFAULT_MAX_PARTS,
                        MessageTooComplex, Part, iter_parts)
from .text import clean_text, collapse_whitespace, part_text

MAX_HEADER_SIZE = DEFAULT_MAX_HEADER_SIZE
PREVIEW_CHARS = 256
PREVIEW_PLAIN_BYTES = 8 * 1024  # decoded bytes of a text/plain part read for the preview
PREVIEW_HTML_BYTES = 64 * 1024  # HTML spends bytes on markup and style before any text
MAX_ADDRESS_TEXT = 1000  # characters kept of an address list
MAX_ADDRESS_FIELD = 16 * 1024  # bytes of an address field parsed
MAX_SUBJECT = 1000
MAX_MSG_ID = 250
MAX_REFERENCES = 100

_SUMMARY_FIELDS = frozenset({"from", "to", "cc", "bcc", "subject", "message-id", "in-reply-to",
                             "references", "date"})
_MSG_ID = re.compile(rb"<[^<>\s]{1,%d}>" % (MAX_MSG_ID - 2))
_BARE_ID = re.compile(rb"[^<>\s,;\"()]{1,%d}@[^<>\s,;\"()]{1,%d}" % (MAX_MSG_ID // 2, MAX_MSG_ID // 2))

# Parts that carry a signature or the body itself in another form, never an attachment.
_NOT_ATTACHMENTS = frozenset({
    "application/pgp-signature", "application/pkcs7-signature", "application/x-pkcs7-signature",
    "application/pgp-encrypted", "application/pkcs7-mime", "application/x-pkcs7-mime",
    "message/delivery-status", "message/disposition-notification", "text/rfc822-headers",
})


@dataclasses.dataclass(frozen=True)
class MessageSummary:
    """What lists, search and threading need without reading the body again.

    Strings are "" when the message has no such field; message ids keep their
    angle brackets ("<id@host>", RFC 5322 3.6.4). Every string is free of control
    characters and lone surrogates, so any database accepts it.
    """

    from_: str = ""
    to: str = ""
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    message_id: str = ""
    in_reply_to: str = ""
    references: list = dataclasses.field(default_factory=list)
    date: Optional[datetime.datetime] = None  # timezone-aware; None if absent or unparseable
    preview: str = ""
    has_attachment: bool = False


def summarize(raw: bytes) -> MessageSummary:
    """Summarize a raw RFC 5322 message (CRLF or LF). Never raises."""
    try:
        header, _body_offset = split_header(raw[:MAX_HEADER_SIZE])
        fields = first_fields(header, _SUMMARY_FIELDS)
    except Exception:
        fields = {}
    preview, has_attachment = _safe(lambda: _body_summary(raw), ("", False))
    return MessageSummary(
        from_=_safe(lambda: addresses_text(fields.get("from")), ""),
        to=_safe(lambda: addresses_text(fields.get("to")), ""),
        cc=_safe(lambda: addresses_text(fields.get("cc")), ""),
        bcc=_safe(lambda: addresses_text(fields.get("bcc")), ""),
        subject=_safe(lambda: unstructured_text(fields.get("subject"), MAX_SUBJECT), ""),
        message_id=_safe(lambda: (message_ids(fields.get("message-id"), 1) or [""])[0], ""),
        in_reply_to=_safe(lambda: (message_ids(fields.get("in-reply-to"), 1) or [""])[0], ""),
        references=_safe(lambda: message_ids(fields.get("references"), MAX_REFERENCES), []),
        date=_safe(lambda: parse_date(fields.get("date")), None),
        preview=preview,
        has_attachment=has_attachment,
    )


def _safe(compute, fallback):
    try:
        return compute()
    except Exception:  # garbage in one field must not cost the others
        return fallback


def unstructured_text(value: Optional[bytes], limit: int) -> str:
    """An unstructured field (Subject) decoded (RFC 2047), on one line, at most `limit` chars."""
    if not value:
        return ""
    return collapse_whitespace(decode_words(value[: limit * 12]), limit)


def addresses_text(value: Optional[bytes]) -> str:
    """An address list as short display text: "Name <addr>, addr2"; names RFC 2047 decoded."""
    if not value:
        return ""
    value = value[:MAX_ADDRESS_FIELD]
    if value.count(b"(") > MAX_COMMENT_DEPTH and comment_depth(value) > MAX_COMMENT_DEPTH:
        return collapse_whitespace(decode_words(value), MAX_ADDRESS_TEXT)  # too deep to parse
    # latin-1 maps bytes to code points one to one, so names and addresses can be
    # turned back into their original bytes for RFC 2047 and charset decoding.
    pairs = email.utils.getaddresses([value.decode("latin-1")])
    shown: list[str] = []
    length = 0
    for name, address in pairs:
        name = collapse_whitespace(decode_words(name.encode("latin-1", "replace")), 200)
        address = clean_text(decode_bytes(address.encode("latin-1", "replace"))).strip()[:320]
        if not address and not name:
            continue
        item = f"{name} <{address}>" if name and address else (address or name)
        if length + len(item) + 2 > MAX_ADDRESS_TEXT:
            shown.append("…")
            break
        shown.append(item)
        length += len(item) + 2
    if not shown:
        return collapse_whitespace(decode_words(value), MAX_ADDRESS_TEXT)
    return ", ".join(shown)


def message_ids(value: Optional[bytes], limit: int) -> list[str]:
    """msg-id values of Message-ID / In-Reply-To / References (RFC 5322 3.6.4).

    Ids without angle brackets (seen in old mail) are accepted if they contain "@".
    Past `limit`, the first id (the thread root) and the last limit - 1 are kept.
    """
    if not value:
        return []
    found = _MSG_ID.findall(value)
    if not found:
        found = [b"<" + bare + b">" for bare in _BARE_ID.findall(value)]
    if len(found) > limit:
        found = found[:1] + found[len(found) - limit + 1:] if limit > 1 else found[:1]
    return [clean_text(decode_bytes(item)) for item in found]


def parse_date(value: Optional[bytes]) -> Optional[datetime.datetime]:
    """The Date field as an aware datetime (RFC 5322 3.3); no zone or "-0000" means UTC."""
    if not value:
        return None
    parsed = email.utils.parsedate_tz(value[:200].decode("ascii", "replace"))
    if parsed is None:
        return None
    year, month, day, hour, minute, second = parsed[:6]
    offset = parsed[9] or 0
    zone = datetime.timezone.utc
    if offset and abs(offset) < 24 * 3600:
        zone = datetime.timezone(datetime.timedelta(seconds=offset))
    return datetime.datetime(year, month, day, hour, minute, min(second, 59), tzinfo=zone)


def _body_summary(raw: bytes) -> tuple[str, bool]:
    preview = ""
    has_attachment = False
    try:
        for part in iter_parts(raw, max_header_size=MAX_HEADER_SIZE,
                               max_mime_depth=DEFAULT_MAX_MIME_DEPTH, max_parts=DEFAULT_MAX_PARTS):
            if part.is_multipart:
                continue
            has_attachment = has_attachment or is_attachment(part)
            if not preview and _is_body_text(part):
                preview = _safe(lambda: _preview_of(raw, part), "")
            if preview and has_attachment:
                break
    except MessageTooComplex:
        pass  # keep what the parts read so far gave
    return preview, has_attachment


def _is_body_text(part: Part) -> bool:
    return (part.content_type in ("text/plain", "text/html") and part.disposition != "attachment"
            and not any(ancestor.startswith("message/") for ancestor in part.ancestors))


def _preview_of(raw: bytes, part: Part) -> str:
    is_html = part.content_type == "text/html"
    cap = PREVIEW_HTML_BYTES if is_html else PREVIEW_PLAIN_BYTES
    # Transfer-encoded text is at most ~3x longer than what it decodes to.
    body = raw[part.body_start:min(part.body_end, part.body_start + cap * 3 + 1024)]
    text = part_text(body, part.transfer_encoding, part.params.get("charset"), is_html, cap)
    return collapse_whitespace(text, PREVIEW_CHARS)


def is_attachment(part: Part) -> bool:
    """Whether a leaf part is something a user would call an attachment.

    Signatures and report parts never are (S/MIME signatures often say
    "attachment"); otherwise an explicit "attachment" disposition (RFC 2183 2.2)
    is; an encapsulated message is; inside multipart/related (RFC 2387)
    resources belong to the HTML body; otherwise a named part, or any non-text
    part, is. Parts inside an encapsulated message count through it.
    """
    if any(ancestor.startswith("message/") for ancestor in part.ancestors):
        return False
    if part.content_type in _NOT_ATTACHMENTS:
        return False
    if part.disposition == "attachment":
        return True
    if part.content_type in ("message/rfc822", "message/global"):
        return True
    if part.ancestors and part.ancestors[-1] == "multipart/related":
        return False
    named = bool(part.disposition_params.get("filename") or part.params.get("name"))
    if part.content_type.startswith("text/") or part.content_type.startswith("multipart/"):
        return named and part.disposition != "inline"
    if part.content_type.startswith("message/"):
        return False
    return True
