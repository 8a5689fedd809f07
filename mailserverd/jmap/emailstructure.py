"""Email/set create with bodyStructure (RFC 8621 4.6): the MIME tree a client gives
as EmailBodyPart objects, built with the email package.

A multipart/* part has subParts and nothing to read; every other part is a leaf
whose content is a bodyValues entry (partId; text/* only, sent as UTF-8) or the
bytes of a blob (blobId: an upload or a stored message or part). type, charset
(blob text parts), disposition, name, cid, language and location become the
part's headers, and header:* properties more of them (headerset.py; not the Content-*
fields those properties make); headers is not accepted (invalidProperties), nor is
size (the server computes it). At most MAX_DEPTH levels and MAX_PARTS parts.
"""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage, MIMEPart

from . import blobs, headerset
from .emailset import SetError

MAX_DEPTH = 10
MAX_PARTS = 100
TEXT_PROPERTIES = ("partId", "blobId", "type", "charset", "disposition", "cid", "language", "location", "name")
PART_PROPERTIES = {*TEXT_PROPERTIES, "subParts"}
_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]{1,64}/[a-z0-9!#$&^_.+-]{1,64}")
_TOKEN = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,64}")
PART_REFUSED = ("content-type", "content-transfer-encoding", "content-disposition", "content-id",
                "content-language", "content-location", "mime-version")  # made from the part's properties
_ROOT_HEADERS = ("MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Content-Disposition",
                 "Content-ID", "Content-Language", "Content-Location")


def _bad(description: str) -> SetError:
    return SetError("invalidProperties", f"bodyStructure: {description}", ["bodyStructure"])


async def build(ctx, spec, values: dict) -> EmailMessage:
    """The message root of a bodyStructure; the caller adds From, Subject and the rest."""
    root = EmailMessage(policy=policy.SMTP)
    await _fill(ctx, root, spec, values, 0, [0])
    if "MIME-Version" not in root:
        root["MIME-Version"] = "1.0"
    return root


def finish(root: EmailMessage) -> EmailMessage:
    """The MIME header fields moved after the ones the caller added (From, Subject, ...),
    where mail usually has them."""
    for name in _ROOT_HEADERS:
        value = root[name]
        if value is not None:
            del root[name]
            root[name] = value
    return root


async def _fill(ctx, part, spec, values: dict, depth: int, count: list) -> None:
    count[0] += 1
    if depth > MAX_DEPTH or count[0] > MAX_PARTS:
        raise _bad(f"at most {MAX_DEPTH} levels and {MAX_PARTS} parts")
    if not isinstance(spec, dict):
        raise _bad("a part is an EmailBodyPart object")
    unknown = sorted(p for p in set(spec) - PART_PROPERTIES if not p.startswith("header:"))
    if unknown:
        raise _bad(f"cannot set {unknown[0]} on a part")
    written = headerset.fields(spec, {}, refused=PART_REFUSED)
    await _content(ctx, part, spec, values, depth, count)
    headerset.add(part, written)


async def _content(ctx, part, spec, values: dict, depth: int, count: list) -> None:
    for key in TEXT_PROPERTIES:
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise _bad(f"{key} is a string")
    sub_parts = spec.get("subParts")
    kind = (spec.get("type") or ("multipart/mixed" if sub_parts is not None else "text/plain")).lower()
    if not _TYPE.fullmatch(kind):
        raise _bad(f"{kind!r} is not a media type")
    maintype, subtype = kind.split("/")
    if maintype == "multipart":
        if not isinstance(sub_parts, list) or not sub_parts or spec.get("partId") or spec.get("blobId"):
            raise _bad("a multipart part has subParts, and no partId or blobId")
        part["Content-Type"] = kind
        for child_spec in sub_parts:
            child = MIMEPart(policy=policy.SMTP)
            await _fill(ctx, child, child_spec, values, depth + 1, count)
            part.attach(child)
        return
    if sub_parts is not None:
        raise _bad("only multipart parts have subParts")
    if (spec.get("partId") is None) == (spec.get("blobId") is None):
        raise _bad("a part has a partId or a blobId")
    disposition = spec.get("disposition")
    if disposition is not None and not _TOKEN.fullmatch(disposition):
        raise _bad("disposition is a token such as attachment or inline")
    cid = spec.get("cid")
    if cid is not None and (not cid or any(c in cid for c in "<> \t\r\n")):
        raise _bad("cid is a Content-ID without angle brackets")
    options = {"disposition": disposition, "filename": spec.get("name"),
               "cid": f"<{cid}>" if cid else None}
    if spec.get("partId") is not None:
        if maintype != "text":
            raise _bad("a part with a partId is text/*")
        value = values.get(spec["partId"])
        if not isinstance(value, dict) or not isinstance(value.get("value"), str) \
                or value.get("isEncodingProblem") or value.get("isTruncated"):
            raise _bad(f"the bodyValues entry of partId {spec['partId']!r} is missing or flagged")
        part.set_content(value["value"], subtype=subtype, **options)
    else:
        data = await blobs.read(ctx.store, ctx.uploads, ctx.account, spec["blobId"])
        if data is None:
            error = SetError("blobNotFound", "a part's blob does not exist")
            error.error["notFound"] = [spec["blobId"]]
            raise error
        # RFC 2046 5.2.1: message/* is never base64 encoded
        cte = "8bit" if maintype == "message" else "base64"
        part.set_content(data, maintype=maintype, subtype=subtype, cte=cte, **options)
        charset = spec.get("charset")
        if maintype == "text" and charset:
            if not _TOKEN.fullmatch(charset):
                raise _bad("charset is a charset name")
            part.set_param("charset", charset)
    for prop, field in (("language", "Content-Language"), ("location", "Content-Location")):
        text = spec.get(prop)
        if text is not None:
            if not text.isprintable() or not text.isascii():
                raise _bad(f"{prop} is printable ASCII")
            part[field] = text
