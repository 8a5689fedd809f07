"""IMAP ENVELOPE and BODYSTRUCTURE from raw message bytes (RFC 9051 7.5.2).

parse_tree() splits a message into its MIME entities without recursion:
each multipart body is cut at its boundary delimiter lines (RFC 2046
5.1.1; the CRLF before a delimiter belongs to the delimiter), and each
message/rfc822 body is parsed as a message (RFC 2046 5.2.1). Entities deeper
than max_depth, or beyond max_parts, are left opaque (application/
octet-stream), so a hostile message costs bounded work.

The output follows Dovecot where RFCs leave room, so clients see what they
are used to: text parts without a charset get ("charset" "us-ascii"),
Content-* values keep their spelling, a multipart with no parts shows one
empty text/plain part, RFC 2231 parameters are merged but left encoded,
Subject and display names have whitespace runs collapsed, missing address
parts read MISSING_MAILBOX / MISSING_DOMAIN.

envelope() and bodystructure() return wire bytes (cache them: they never
change for a message); envelope_value() and bodystructure_value() return
the nested Python values (bytes, int, None, tuples) they are rendered from.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from mailserverd.imap.responses import Concat, render

from .imapaddress import parse_addresses
from .imapheader import (Field, canonical, for_humans, header_fields, parse_content_type,
                         parse_disposition, parse_language, parse_token, unfold)

DEFAULT_MAX_DEPTH = 100
DEFAULT_MAX_PARTS = 10000
DEFAULT_CHARSET = (b"charset", b"us-ascii")
ENVELOPE_FIELDS = (b"date", b"subject", b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc",
                   b"in-reply-to", b"message-id")
_ADDRESS_FIELDS = frozenset({b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc"})


@dataclasses.dataclass
class Entity:
    """One MIME entity. Offsets index the canonical message: the header is
    raw[header_start:body_start] (with its blank line), the body
    raw[body_start:end]."""

    header_start: int
    body_start: int
    end: int
    fields: list
    media_type: bytes  # as written, e.g. b"Text"; b"text" by default
    subtype: bytes
    params: list  # [(name, value)]
    depth: int
    header_end: int = 0  # end of the fields; body_start > header_end iff a blank line ends them
    is_multipart: bool = False
    is_message: bool = False  # message/rfc822 with its encapsulated message parsed
    children: list = dataclasses.field(default_factory=list)
    message: Optional["Entity"] = None
    parent: Optional["Entity"] = dataclasses.field(default=None, repr=False, compare=False)
    _first: Optional[dict] = dataclasses.field(default=None, repr=False, compare=False)

    def field(self, name: bytes) -> Optional[Field]:
        """The first field with this (lower-case) name."""
        if self._first is None:
            self._first = {}
            for candidate in reversed(self.fields):
                self._first[candidate.lower] = candidate
        return self._first.get(name)

    @property
    def transfer_encoding(self) -> Optional[bytes]:
        found = self.field(b"content-transfer-encoding")
        return parse_token(found.value) if found is not None else None


def parse_tree(raw: bytes, max_depth: int = DEFAULT_MAX_DEPTH,
               max_parts: int = DEFAULT_MAX_PARTS) -> Entity:
    """The entity tree of a canonical message (see imapheader.canonical)."""
    root = _entity(raw, 0, len(raw), 0, digest_parent=False, opaque=False)
    pending = [root]
    parts = 1
    while pending:
        entity = pending.pop()
        if entity.is_multipart:
            boundary = _param(entity.params, b"boundary")
            digest = entity.subtype.lower() == b"digest"
            regions, open_ended = _split(raw, entity.body_start, entity.end, boundary)
            for start, end in regions:
                parts += 1
                opaque = entity.depth + 1 > max_depth or parts > max_parts
                child = _entity(raw, start, end, entity.depth + 1, digest, opaque)
                child.parent = entity
                entity.children.append(child)
                pending.append(child)
            if open_ended and raw.startswith(b"\r\n", entity.end):
                _grow(entity, entity.end + 2)
        elif entity.is_message:
            parts += 1
            if entity.depth + 1 > max_depth or parts > max_parts:
                _make_opaque(entity)
                continue
            message = _entity(raw, entity.body_start, entity.end, entity.depth + 1,
                              digest_parent=False, opaque=False)
            message.parent = entity
            entity.message = message
            pending.append(message)
            if (message.header_start < message.header_end == message.end
                    and raw.startswith(b"\r\n", message.end)):
                # A header that runs into the next boundary: Dovecot gives the
                # CRLF before the boundary to the message/rfc822 part, not to the
                # header (nor to the boundary, as RFC 2046 would).
                _grow(entity, entity.end + 2)
    return root


def _grow(entity: Entity, new_end: int) -> None:
    """Let an entity take the CRLF after it, with every enclosing entity that
    ended at the same place. RFC 2046 leaves it ambiguous whom a CRLF between a
    complete last line and the next delimiter belongs to ("--inner--CRLF--outer");
    Dovecot gives it to the inner part, and clients (and imaptest) compare
    sizes with Dovecot's."""
    old_end = entity.end
    node: Optional[Entity] = entity
    while node is not None and node.end == old_end:
        node.end = new_end
        node = node.parent


def _entity(raw: bytes, start: int, end: int, depth: int, digest_parent: bool,
            opaque: bool) -> Entity:
    if raw.startswith(b"\r\n", start) or start >= end:
        header_end = body_start = min(start + 2, end)
        fields: list = []
    else:
        blank = raw.find(b"\r\n\r\n", start, end)
        if blank >= 0:
            header_end, body_start = blank + 2, blank + 4
        else:
            header_end = body_start = end
        fields = header_fields(raw, start, header_end)
    entity = Entity(start, body_start, end, fields, b"text", b"plain", [], depth, header_end)
    content_type = entity.field(b"content-type")
    parsed = parse_content_type(content_type.value) if content_type is not None else None
    if parsed is not None:
        entity.media_type, entity.subtype, entity.params = parsed
    elif digest_parent:  # RFC 2046 5.1.5: parts of a digest default to message/rfc822
        entity.media_type, entity.subtype = b"message", b"rfc822"
    media_type = entity.media_type.lower()
    if media_type == b"multipart":
        entity.is_multipart = True
    elif media_type == b"message" and entity.subtype.lower() == b"rfc822":
        # RFC 3501 9 body-type-msg: always with envelope and body, whatever its
        # (invalid, RFC 2046 5.2.1) encoding; message/global stays a basic type
        # for IMAP4rev1 clients, as in Dovecot 2.3.
        entity.is_message = True
    if opaque and (entity.is_multipart or entity.is_message):
        _make_opaque(entity)
    return entity


def _make_opaque(entity: Entity) -> None:
    entity.media_type, entity.subtype, entity.params = b"application", b"octet-stream", []
    entity.is_multipart = entity.is_message = False


def _param(params: list, name: bytes) -> Optional[bytes]:
    for key, value in params:
        if key.lower() == name:
            return value
    return None


def _split(raw: bytes, start: int, end: int, boundary: Optional[bytes]
           ) -> tuple[list[tuple[int, int]], bool]:
    """Body-part regions of a multipart body (RFC 2046 5.1.1), and whether the
    last delimiter line runs to the end of the body. A delimiter line is
    "--boundary" then optional whitespace; "--boundary--" closes. Without a
    close delimiter the last part runs to the end."""
    if not boundary:
        return [], False
    delimiter = b"--" + boundary
    regions: list[tuple[int, int]] = []
    part_start: Optional[int] = None
    search = start
    while True:
        if search == start and raw.startswith(delimiter, start):
            found = start
        else:
            found = raw.find(b"\r\n" + delimiter, search, end)
            if found < 0:
                break
            found += 2
        after = found + len(delimiter)
        line_end = raw.find(b"\r\n", after, end)
        next_line = end if line_end < 0 else line_end + 2
        rest = raw[after:end if line_end < 0 else line_end]
        closing = rest.startswith(b"--")
        if not closing and rest.strip(b" \t"):
            search = after  # "--boundaryX": another boundary sharing our prefix
            continue
        if part_start is not None:
            regions.append((part_start, max(part_start, found - 2)))
        if closing:
            return regions, line_end < 0
        part_start = next_line
        if line_end < 0:
            regions.append((end, end))  # a delimiter on the last line opens an empty part
            return regions, True
        search = next_line - 2
    if part_start is not None:
        regions.append((part_start, end))
    return regions, False


# -- ENVELOPE ------------------------------------------------------------------

def envelope_value(entity: Entity) -> tuple:
    """(date subject from sender reply-to to cc bcc in-reply-to message-id).

    RFC 9051 7.5.2: sender and reply-to default to from. As in Dovecot, a
    repeated address field adds its addresses; for the others the last wins."""
    found: dict[bytes, bytes] = {}
    addresses: dict[bytes, tuple] = {}
    for field in entity.fields:
        if field.lower in _ADDRESS_FIELDS:
            addresses[field.lower] = addresses.get(field.lower, ()) + (
                parse_addresses(field.value) or ())
        elif field.lower in ENVELOPE_FIELDS:
            found[field.lower] = field.value
    values = []
    for name in ENVELOPE_FIELDS:
        value = found.get(name)
        if name in _ADDRESS_FIELDS:
            # RFC 9051 9: env-from = "(" 1*address ")": addresses side by side
            found_addresses = addresses.get(name)
            values.append((Concat(found_addresses),) if found_addresses else None)
        elif value is None:
            values.append(None)
        elif name == b"subject":
            values.append(for_humans(value.lstrip(b" \t")))
        else:
            values.append(unfold(value))
    if values[3] is None:
        values[3] = values[2]
    if values[4] is None:
        values[4] = values[2]
    return tuple(values)


# -- BODYSTRUCTURE -----------------------------------------------------------

def _flat_params(params: list, default_charset: bool) -> Optional[tuple]:
    flat: list = []
    for key, value in params:
        flat += [key, value]
    if default_charset and not any(key.lower() == b"charset" for key, _ in params):
        flat += list(DEFAULT_CHARSET)
    return tuple(flat) if flat else None


def _unfolded(entity: Entity, name: bytes) -> Optional[bytes]:
    found = entity.field(name)
    return unfold(found.value) if found is not None else None


def _extension(entity: Entity) -> tuple:
    """body-fld-dsp, body-fld-lang, body-fld-loc (RFC 9051 9)."""
    disposition = None
    found = entity.field(b"content-disposition")
    parsed = parse_disposition(found.value) if found is not None else None
    if parsed is not None:
        disposition = (parsed[0], _flat_params(parsed[1], False))
    language_field = entity.field(b"content-language")
    languages = parse_language(language_field.value) if language_field is not None else []
    return (disposition, tuple(languages) or None, _unfolded(entity, b"content-location"))


_EMPTY_TEXT = (b"text", b"plain", DEFAULT_CHARSET, None, None, b"7bit", 0, 0)


def bodystructure_value(raw: bytes, entity: Entity, extensible: bool = True) -> tuple:
    """The BODYSTRUCTURE (extensible) or BODY value of `entity`, built bottom-up
    with an explicit stack (depth is bounded by parse_tree, but no recursion
    is needed at all)."""
    built: dict[int, tuple] = {}
    stack: list[tuple[Entity, bool]] = [(entity, False)]
    while stack:
        node, ready = stack.pop()
        if not ready:
            stack.append((node, True))
            stack += [(child, False) for child in node.children]
            if node.message is not None:
                stack.append((node.message, False))
            continue
        built[id(node)] = _structure(raw, node, built, extensible)
    return built[id(entity)]


def _is_plain_7bit(node: Entity) -> bool:
    """text/plain; charset=us-ascii, 7bit, nothing else (any spelling). Dovecot
    writes such a message in one canonical lower-case form; so do we."""
    if node.depth or node.is_multipart or (node.media_type.lower(), node.subtype.lower()) != (
            b"text", b"plain"):
        return False
    if any(key.lower() != b"charset" or value.lower() != b"us-ascii" for key, value in node.params):
        return False
    encoding = node.transfer_encoding
    if encoding is not None and encoding.lower() != b"7bit":
        return False
    return not any(node.field(name) for name in (
        b"content-id", b"content-description", b"content-md5", b"content-disposition",
        b"content-language", b"content-location"))


def _structure(raw: bytes, node: Entity, built: dict, extensible: bool) -> tuple:
    if _is_plain_7bit(node):
        value = _EMPTY_TEXT[:6] + (node.end - node.body_start,
                                   raw.count(b"\n", node.body_start, node.end))
        return value + ((None, None, None, None) if extensible else ())
    if node.is_multipart:
        if node.children:
            bodies = Concat(built[id(child)] for child in node.children)
        else:
            bodies = Concat([_EMPTY_TEXT + ((None, None, None, None) if extensible else ())])
        value: tuple = (bodies, node.subtype)
        if extensible:
            value += (_flat_params(node.params, False),) + _extension(node)
        return value
    is_text = node.media_type.lower() == b"text"
    if node.is_message:
        value = (b"message", b"rfc822")
    else:
        value = (node.media_type, node.subtype)
    value += (
        _flat_params(node.params, is_text),
        _unfolded(node, b"content-id"),
        _unfolded(node, b"content-description"),
        node.transfer_encoding or b"7bit",
        node.end - node.body_start,
    )
    lines = raw.count(b"\n", node.body_start, node.end)
    if is_text:
        value += (lines,)
    elif node.is_message:
        value += (envelope_value(node.message), built[id(node.message)], lines)
    if extensible:
        value += (_unfolded(node, b"content-md5"),) + _extension(node)
    return value


# -- convenience -----------------------------------------------------------

def envelope(raw: bytes) -> bytes:
    """ENVELOPE of a message as wire bytes."""
    raw = canonical(raw)
    return render(envelope_value(parse_tree(raw)))


def bodystructure(raw: bytes, extensible: bool = True) -> bytes:
    """BODYSTRUCTURE (or, with extensible=False, BODY) of a message as wire bytes."""
    raw = canonical(raw)
    return render(bodystructure_value(raw, parse_tree(raw), extensible))
