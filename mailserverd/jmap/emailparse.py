"""A stored message as RFC 8621 4.1 sees it: header fields in their parsed
forms (4.1.2), the body structure (4.1.4) with textBody/htmlBody/attachments
by the RFC's algorithm, and body values.

The MIME tree comes from mime.structure.iter_parts, which is bounded and
never recurses; a message/rfc822 part is a leaf here (RFC 8621 4.1.4).
"""

from __future__ import annotations

import datetime
import email.utils
import re
from typing import Optional

from ..mime.headers import FIELD_PATTERN, decode_bytes, decode_words, split_header
from ..mime.structure import MessageTooComplex, iter_parts
from ..mime.summary import parse_date
from ..mime.text import decode_transfer

FORMS = ("asRaw", "asText", "asAddresses", "asGroupedAddresses", "asMessageIds", "asDate", "asURLs")
MAX_VALUE_BYTES = 10 * 1024 * 1024  # decoded octets of one part read for bodyValues / download
_MSG_ID = re.compile(rb"<([^<>\s]+)>")
_URL = re.compile(rb"<([^<>\s]+)>")


# -- header fields ---------------------------------------------------------------------

def fields(header: bytes) -> list[tuple[str, bytes]]:
    """(name as written, raw value after the colon) of each field, in order."""
    return [(m.group(1).decode("ascii"), m.group(2)) for m in FIELD_PATTERN.finditer(header)]


def _unfolded(raw: bytes) -> bytes:
    return re.sub(rb"\r?\n(?=[ \t])", b"", raw)


def as_raw(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def as_text(raw: bytes) -> str:
    """RFC 8621 4.1.2.2: unfolded, RFC 2047 decoded, trimmed."""
    return decode_words(_unfolded(raw).strip(b" \t\r\n")).strip()


def as_addresses(raw: bytes) -> list[dict]:
    """RFC 8621 4.1.2.3 EmailAddress list; groups are flattened."""
    text = _unfolded(raw)[:65536].decode("latin-1")
    out = []
    for name, address in email.utils.getaddresses([text]):
        name = decode_words(name.encode("latin-1", "replace")).strip() or None
        address = decode_bytes(address.encode("latin-1", "replace")).strip()
        if not address and not name:
            continue
        out.append({"name": name, "email": address or ""})
    return out


def _group_spans(text: str) -> list[tuple[Optional[str], str]]:
    """(group display name or None, the text of its members) of an address-list, in
    order: "name: members;" groups and the ungrouped addresses between them (RFC 5322
    3.4). Quotes, comments and angle addresses hide ":" and ";"."""
    spans, start, group, depth, quoted, angle, index = [], 0, None, 0, False, False, 0
    while index < len(text):
        char = text[index]
        if quoted:
            if char == "\\":
                index += 1  # a quoted-pair
            elif char == '"':
                quoted = False
        elif depth:
            depth += {"(": 1, ")": -1}.get(char, 0)
            index += char == "\\"
        elif char == '"':
            quoted = True
        elif char == "(":
            depth = 1
        elif char in "<>":
            angle = char == "<"
        elif char == ":" and not angle and group is None:
            head = text[start:index]
            cut = head.rfind(",") + 1  # addresses before the group name stay ungrouped
            spans.append((None, head[:cut]))
            group, start = head[cut:], index + 1
        elif char == ";" and not angle and group is not None:
            spans.append((group, text[start:index]))
            group, start = None, index + 1
        index += 1
    spans.append((group, text[start:]))
    return spans


def as_grouped_addresses(raw: bytes) -> list[dict]:
    """RFC 8621 4.1.2.4 EmailAddressGroup list: each group with its name and members;
    consecutive addresses outside any group make one group whose name is null."""
    text = _unfolded(raw)[:65536].decode("latin-1")
    out: list[dict] = []
    for name, members in _group_spans(text):
        addresses = as_addresses(members.encode("latin-1"))
        if name is None:
            if not addresses:
                continue
            if out and out[-1]["name"] is None:
                out[-1]["addresses"].extend(addresses)
                continue
        else:
            name = decode_words(name.strip().encode("latin-1")).strip().strip('"') or None
        out.append({"name": name, "addresses": addresses})
    return out


def as_message_ids(raw: bytes) -> Optional[list[str]]:
    found = [decode_bytes(m) for m in _MSG_ID.findall(_unfolded(raw))]
    return found or None


def as_date(raw: bytes) -> Optional[str]:
    parsed = parse_date(_unfolded(raw).strip())
    return None if parsed is None else parsed.isoformat()


def as_urls(raw: bytes) -> Optional[list[str]]:
    found = [decode_bytes(m) for m in _URL.findall(_unfolded(raw))]
    return found or None


PARSERS = {"asRaw": as_raw, "asText": as_text, "asAddresses": as_addresses,
           "asGroupedAddresses": as_grouped_addresses,
           "asMessageIds": as_message_ids, "asDate": as_date, "asURLs": as_urls}


ADDRESS = {"from", "sender", "reply-to", "to", "cc", "bcc", "resent-from", "resent-sender",
           "resent-reply-to", "resent-to", "resent-cc", "resent-bcc"}
MESSAGE_IDS = {"message-id", "in-reply-to", "references", "resent-message-id"}
DATES = {"date", "resent-date"}
URLS = {"list-help", "list-unsubscribe", "list-subscribe", "list-post", "list-owner", "list-archive"}
TEXT = {"subject", "comments", "keywords", "list-id"}
OTHER_KNOWN = {"return-path", "received"}  # RFC 5322 fields with asRaw only
FORM_FIELDS = {"asAddresses": ADDRESS, "asGroupedAddresses": ADDRESS, "asMessageIds": MESSAGE_IDS,
               "asDate": DATES, "asURLs": URLS, "asText": TEXT}
KNOWN = (ADDRESS | MESSAGE_IDS | DATES | URLS | TEXT | OTHER_KNOWN) - {"list-id"}  # RFC 5322 and 2369


def form_allowed(field: str, form: str) -> bool:
    """RFC 8621 4.1.2.*: asRaw for any field; the other forms for the fields their
    section lists and for any field RFC 5322 and RFC 2369 do not define."""
    name = field.lower()
    return form == "asRaw" or name in FORM_FIELDS[form] or name not in KNOWN



def header_property(name: str):
    """(field name, form, all) of "header:Name[:asForm][:all]", or None if malformed
    or a form the field does not have."""
    pieces = name.split(":")
    if len(pieces) < 2 or pieces[0] != "header" or not pieces[1] or len(pieces) > 4:
        return None
    field, rest = pieces[1], pieces[2:]
    every = bool(rest) and rest[-1] == "all"
    if every:
        rest = rest[:-1]
    form = rest[0] if rest else "asRaw"
    if len(rest) > 1 or form not in FORMS or not re.fullmatch(r"[\x21-\x39\x3b-\x7e]+", field) \
            or not form_allowed(field, form):  # RFC 8621 4.1.3: a forbidden form is invalidArguments
        return None
    return field, form, every


def header_value(field_list, field: str, form: str, every: bool):
    """RFC 8621 4.1.3: the last instance (or all of them) in the given form."""
    parse = PARSERS[form]
    values = [parse(raw) for name, raw in field_list if name.lower() == field.lower()]
    if every:
        return values
    return values[-1] if values else None


# -- body structure --------------------------------------------------------------------

class Node:
    __slots__ = ("part", "children", "part_id", "headers")

    def __init__(self, part, children):
        self.part, self.children, self.part_id, self.headers = part, children, None, []


def tree(raw: bytes) -> Optional[Node]:
    """The MIME tree (message/rfc822 parts are leaves), partIds "1", "2", ... in
    document order on the non-multipart parts; None if the message is too complex."""
    pending: dict[int, list[Node]] = {}
    leaves = []
    try:
        for part in iter_parts(raw):
            if any(a.startswith("message/") for a in part.ancestors):
                continue
            node = Node(part, pending.pop(part.depth + 1, []) if part.is_multipart else [])
            node.headers = fields(raw[part.header_start:part.body_start])
            if not part.is_multipart:
                leaves.append(node)
            pending.setdefault(part.depth, []).append(node)
    except MessageTooComplex:
        return None
    for number, node in enumerate(leaves, 1):
        node.part_id = str(number)
    roots = pending.get(0, [])
    return roots[0] if roots else None


def _find(node: Node, part_id: str) -> Optional[Node]:
    stack = [node]
    while stack:
        current = stack.pop()
        if current.part_id == part_id:
            return current
        stack.extend(current.children)
    return None


def content_bytes(raw: bytes, node: Node, limit: int = MAX_VALUE_BYTES) -> bytes:
    part = node.part
    return decode_transfer(raw[part.body_start:part.body_end], part.transfer_encoding, limit)


def part_content(raw: bytes, part_id: str) -> Optional[bytes]:
    """The decoded octets of one part, by partId (for blob download)."""
    root = tree(raw)
    node = _find(root, part_id) if root is not None else None
    return None if node is None else content_bytes(raw, node)


def _name(part) -> Optional[str]:
    value = part.disposition_params.get("filename") or part.params.get("name")
    return decode_words(value.encode("utf-8", "replace")) if value else None


def body_part(raw: bytes, node: Node, message_id: int, props: list, blob_id, tree: bool = False) -> dict:
    """An EmailBodyPart (RFC 8621 4.1.4) with the requested properties; in a
    bodyStructure (tree) a multipart always has its subParts."""
    part = node.part
    out = {}
    if tree and part.is_multipart and "subParts" not in props:
        props = list(props) + ["subParts"]
    for prop in props:
        if prop == "partId":
            out[prop] = node.part_id
        elif prop == "blobId":
            out[prop] = None if node.part_id is None else blob_id(message_id, node.part_id)
        elif prop == "size":
            out[prop] = 0 if part.is_multipart else len(content_bytes(raw, node))
        elif prop == "headers":
            out[prop] = [{"name": n, "value": as_raw(v)} for n, v in node.headers]
        elif prop == "name":
            out[prop] = _name(part)
        elif prop == "type":
            out[prop] = part.content_type
        elif prop == "charset":
            charset = part.params.get("charset")
            out[prop] = charset or ("us-ascii" if part.content_type.startswith("text/") else None)
        elif prop == "disposition":
            out[prop] = part.disposition or None
        elif prop == "cid":
            ids = header_value(node.headers, "Content-ID", "asMessageIds", False)
            out[prop] = ids[0] if ids else None
        elif prop == "language":
            value = header_value(node.headers, "Content-Language", "asText", False)
            out[prop] = [v.strip() for v in value.split(",") if v.strip()] if value else None
        elif prop == "location":
            out[prop] = header_value(node.headers, "Content-Location", "asText", False)
        elif prop == "subParts":
            out[prop] = [body_part(raw, child, message_id, props, blob_id, tree) for child in node.children] \
                if part.is_multipart else None
        else:  # header:Name:form[:all]
            field, form, every = header_property(prop)
            out[prop] = header_value(node.headers, field, form, every)
    return out


def _inline_media(kind: str) -> bool:
    return kind.startswith(("image/", "audio/", "video/"))


def classify(root: Node) -> tuple[list, list, list]:
    """textBody, htmlBody, attachments: the algorithm of RFC 8621 4.1.4."""
    text, html, attachments = [], [], []

    def walk(parts, multipart_type, in_alternative, html_body, text_body):
        text_len = len(text_body) if text_body is not None else -1
        html_len = len(html_body) if html_body is not None else -1
        for index, node in enumerate(parts):
            part = node.part
            kind = part.content_type
            inline = (part.disposition != "attachment"
                      and (kind in ("text/plain", "text/html") or _inline_media(kind))
                      and (index == 0 or (multipart_type != "related"
                                          and (_inline_media(kind) or not _name(part)))))
            if part.is_multipart:
                sub = kind.split("/", 1)[1]
                walk(node.children, sub, in_alternative or sub == "alternative", html_body, text_body)
            elif inline:
                if multipart_type == "alternative":
                    if kind == "text/plain":
                        text_body.append(node)
                    elif kind == "text/html":
                        html_body.append(node)
                    else:
                        attachments.append(node)
                    continue
                if in_alternative:
                    if kind == "text/plain":
                        html_body = None
                    if kind == "text/html":
                        text_body = None
                if text_body is not None:
                    text_body.append(node)
                if html_body is not None:
                    html_body.append(node)
                if (text_body is None or html_body is None) and _inline_media(kind):
                    attachments.append(node)
            else:
                attachments.append(node)
        if multipart_type == "alternative" and text_body is not None and html_body is not None:
            if text_len == len(text_body) and html_len != len(html_body):
                text_body.extend(html_body[html_len:])
            if html_len == len(html_body) and text_len != len(text_body):
                html_body.extend(text_body[text_len:])

    walk([root], "mixed", False, html, text)
    return text, html, attachments


def body_value(raw: bytes, node: Node, max_bytes: int) -> dict:
    """An EmailBodyValue (RFC 8621 4.1.4): decoded text, truncated to max_bytes
    UTF-8 octets (0 = no limit) without splitting a character."""
    part = node.part
    data = content_bytes(raw, node)
    charset = part.params.get("charset")
    problem = False
    try:
        value = data.decode(_python_codec(charset))
    except (LookupError, UnicodeDecodeError):
        problem = True
        value = decode_bytes(data, charset)
    value = value.replace("\r\n", "\n")  # RFC 8621 4.1.4: CRLF becomes LF
    truncated = False
    if max_bytes and len(value.encode("utf-8")) > max_bytes:
        value = value.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")
        truncated = True
        if part.content_type == "text/html" and value.rfind("<") > value.rfind(">"):
            value = value[:value.rfind("<")]  # RFC 8621 4.2: not inside an HTML tag
    return {"value": value, "isEncodingProblem": problem, "isTruncated": truncated}


def _python_codec(charset: Optional[str]) -> str:
    charset = (charset or "us-ascii").lower()
    return "utf-8" if charset in ("us-ascii", "ascii", "utf8") else charset


def top_header(raw: bytes) -> list[tuple[str, bytes]]:
    return fields(split_header(raw)[0])


def utc_date(timestamp: float) -> str:
    """RFC 8620 1.4 UTCDate."""
    moment = datetime.datetime.fromtimestamp(int(timestamp), datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
