"""Email/set create (RFC 8621 4.6): a new message (a draft, usually) built
from JMAP properties and stored like an import.

Accepted: mailboxIds, keywords, receivedAt, the address fields (from,
sender, to, cc, bcc, replyTo), subject, sentAt, messageId, inReplyTo,
references, textBody and htmlBody (one part each, its text in bodyValues)
and attachments (blobIds of uploads or of stored messages and parts), or
instead of those three a bodyStructure (emailstructure.py), and header:...
properties on the Email and on its parts (headerset.py; not Content-* on the
Email, nor the Content-* fields a part's properties make). The message is
composed with the email package (RFC 2047 words, quoted-printable or base64
as needed, CRLF).
"""

from __future__ import annotations

import datetime
import email.errors
import email.utils
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage

from . import blobs, emailstructure, headerset
from .emailimport import received_at_of, store_message
from .emailparse import header_property
from .emailset import SetError, plan

ADDRESS_FIELDS = {"from": "From", "sender": "Sender", "to": "To", "cc": "Cc", "bcc": "Bcc",
                  "replyTo": "Reply-To"}
ID_FIELDS = {"messageId": "Message-ID", "inReplyTo": "In-Reply-To", "references": "References"}
TAKEN = {"from": "from", "sender": "sender", "to": "to", "cc": "cc", "bcc": "bcc", "reply-to": "replyTo",
         "subject": "subject", "date": "sentAt", "message-id": "messageId", "in-reply-to": "inReplyTo",
         "references": "references"}  # RFC 8621 4.6: a field set by a property and by header:... clashes
ALLOWED = {"mailboxIds", "keywords", "receivedAt", "subject", "sentAt", "textBody", "htmlBody",
           "attachments", "bodyValues", "bodyStructure", *ADDRESS_FIELDS, *ID_FIELDS}


def _bad(description: str, prop: str) -> SetError:
    return SetError("invalidProperties", description, [prop])


def _addresses(value, prop: str) -> list:
    if not isinstance(value, list) or not value:
        raise _bad(f"{prop} is a non-empty list of EmailAddress", prop)
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("email"), str) \
                or not isinstance(item.get("name") or "", str):
            raise _bad(f"{prop} holds EmailAddress objects", prop)
        try:
            out.append(Address(display_name=item.get("name") or "", addr_spec=item["email"]))
        except (ValueError, IndexError, TypeError, email.errors.MessageError):  # HeaderParseError
            raise _bad(f"{item['email']!r} is not an address", prop)
    return out


def _message_ids(value, prop: str) -> str:
    if not isinstance(value, list) or not value or not all(
            isinstance(v, str) and v and not any(c in v for c in "<> \t\r\n") and "@" in v for v in value):
        raise _bad(f"{prop} is a list of message ids without angle brackets", prop)
    return " ".join(f"<{v}>" for v in value)


def _text_of(spec, prop: str, kind: str, values: dict) -> str | None:
    if spec is None:
        return None
    if not isinstance(spec, list) or len(spec) != 1 or not isinstance(spec[0], dict):
        raise _bad(f"{prop} is one body part here", prop)
    part = spec[0]
    others = {p for p in set(part) - {"partId", "type"} if not p.startswith("header:")}
    if part.get("type", kind) != kind or others:
        raise _bad(f"{prop} is a {kind} part with a partId", prop)
    value = values.get(part.get("partId"))
    if not isinstance(value, dict) or not isinstance(value.get("value"), str) \
            or value.get("isEncodingProblem") or value.get("isTruncated"):
        raise _bad(f"the bodyValues entry of {prop} is missing or flagged", "bodyValues")
    return value["value"]


def _sent_at(value) -> datetime.datetime:
    if value is None:
        return datetime.datetime.now(datetime.timezone.utc)
    try:
        moment = datetime.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise _bad("sentAt is an RFC 3339 date with a time zone", "sentAt")
    return moment


async def compose(ctx, spec: dict) -> bytes:
    """The RFC 5322 message the creation describes."""
    unknown = sorted(p for p in set(spec) - ALLOWED if not p.startswith("header:"))
    if unknown:
        raise SetError("invalidProperties", f"cannot set {unknown[0]} here", unknown)
    written = headerset.fields(spec, TAKEN, refused=("content-", "mime-version"))
    own = {field.lower() for field, _text in written}
    values = spec.get("bodyValues") or {}
    if not isinstance(values, dict):
        raise _bad("bodyValues maps partIds to EmailBodyValue", "bodyValues")
    structure = spec.get("bodyStructure")
    if structure is not None:
        # RFC 8621 4.6: bodyStructure, or textBody/htmlBody/attachments, never both
        if any(spec.get(prop) is not None for prop in ("textBody", "htmlBody", "attachments")):
            raise _bad("bodyStructure replaces textBody, htmlBody and attachments", "bodyStructure")
        # RFC 8621 4.6: the root part sets no field the Email sets (they share one header)
        email_fields = own | {field for field, prop in TAKEN.items() if spec.get(prop) is not None}
        root_fields = {header_property(p)[0].lower() for p in structure
                       if p.startswith("header:") and header_property(p)} if isinstance(structure, dict) else set()
        if email_fields & root_fields:
            raise _bad("the bodyStructure root sets a header field the Email sets", "bodyStructure")
        message = await emailstructure.build(ctx, structure, values)
    else:
        message = EmailMessage(policy=policy.SMTP)
    for prop, field in ADDRESS_FIELDS.items():
        if spec.get(prop) is not None:
            message[field] = _addresses(spec[prop], prop)
    subject = spec.get("subject")
    if subject is not None:
        if not isinstance(subject, str) or any(c in subject for c in "\r\n"):
            raise _bad("subject is one line of text", "subject")
        message["Subject"] = subject
    if "date" not in own:
        message["Date"] = email.utils.format_datetime(_sent_at(spec.get("sentAt")))
    domain = ctx.account.address.rpartition("@")[2]
    if "message-id" not in own:
        message["Message-ID"] = _message_ids(spec["messageId"], "messageId") if spec.get("messageId") \
            else email.utils.make_msgid(domain=domain)
    for prop in ("inReplyTo", "references"):
        if spec.get(prop) is not None:
            message[ID_FIELDS[prop]] = _message_ids(spec[prop], prop)
    headerset.add(message, written)
    if structure is not None:
        return emailstructure.finish(message).as_bytes()
    text = _text_of(spec.get("textBody"), "textBody", "text/plain", values)
    html = _text_of(spec.get("htmlBody"), "htmlBody", "text/html", values)
    if text is not None:
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
    elif html is not None:
        message.set_content(html, subtype="html")
    else:
        message.set_content("")
    part_fields = {kind: headerset.fields(spec[prop][0], {}, refused=emailstructure.PART_REFUSED)
                   for prop, kind in (("textBody", "text/plain"), ("htmlBody", "text/html"))
                   if spec.get(prop) is not None}
    for item in spec.get("attachments") or []:
        await _attach(ctx, message, item)
    for part in message.walk():  # RFC 8621 4.6: header:... of the textBody/htmlBody part on that part
        if part.get_content_type() in part_fields and part.get("Content-Disposition") is None:
            fields = part_fields.pop(part.get_content_type())
            if part is message and own & {field.lower() for field, _text in fields}:
                # one part: its fields are the Email's, and a field twice is a clash (RFC 8621 4.6)
                raise _bad("a header field is set on the Email and on its only part", "textBody")
            headerset.add(part, fields)
    return message.as_bytes()


async def _attach(ctx, message: EmailMessage, item) -> None:
    if not isinstance(item, dict) or not isinstance(item.get("blobId"), str):
        raise _bad("an attachment has a blobId", "attachments")
    data = await blobs.read(ctx.store, ctx.uploads, ctx.account, item["blobId"])
    if data is None:
        error = SetError("blobNotFound", "an attachment's blob does not exist")
        error.error["notFound"] = [item["blobId"]]
        raise error
    kind = blobs.safe_type((item.get("type") or "application/octet-stream").encode()).decode()
    maintype, subtype = kind.split("/")
    name = item.get("name")
    disposition = item.get("disposition") or "attachment"
    if disposition not in ("attachment", "inline") or (name is not None and not isinstance(name, str)):
        raise _bad("an attachment's disposition is attachment or inline, its name a string", "attachments")
    cid = item.get("cid")
    headers = [f"Content-ID: <{cid}>"] if isinstance(cid, str) and cid and "<" not in cid else None
    written = headerset.fields(item, {}, refused=emailstructure.PART_REFUSED)
    message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name,
                           disposition=disposition, headers=headers)
    headerset.add(message.get_payload()[-1], written)


async def create(ctx, spec: dict, names: dict) -> dict:
    """One Email/set creation: the created answer, or a SetError."""
    if "mailboxIds" not in spec:
        raise _bad("mailboxIds is required", "mailboxIds")
    keywords, mailboxes = plan(ctx, {"mailboxes": {}}, {"keywords": spec.get("keywords", {}),
                                                        "mailboxIds": spec["mailboxIds"]}, names)
    received_at = received_at_of(spec.get("receivedAt"))
    try:
        data = await compose(ctx, spec)
    except (ValueError, TypeError, LookupError, email.errors.MessageError) as exc:  # email refused a value
        raise SetError("invalidProperties", f"cannot compose this Email: {exc}")
    return await store_message(ctx, data, keywords, mailboxes, received_at, names)
