"""Email/import (RFC 8621 4.8): a blob (an upload, or a stored message) becomes
an Email in the given mailboxes, with keywords and receivedAt. Email/parse
(RFC 8621 4.9): a blob read as an Email without storing it.

The message goes through the store's delivery path (durable before the
answer) into the first mailbox; the others get copies of that membership, so
it is one Email. The same message limits as SMTP apply (size, header size,
MIME depth: mime.limits); a message that breaks one is invalidEmail.
"""

from __future__ import annotations

from ..mime.limits import check_limits
from ..mime.structure import MessageTooComplex
from ..mime.summary import summarize
from ..store import jmapreads
from ..store.api import DeliveryTarget, StoreError
from . import blobs, state
from .api import MethodError, method
from .core import check_account, check_known, parse_utc_date
from .email import PROPERTIES, body_arguments, checked_properties, render, thread_id_of
from .emailparse import top_header
from .emailset import SetError, flags_for, plan


def received_at_of(value) -> float | None:
    if value is None:
        return None
    moment = parse_utc_date(value)
    if moment is None:
        raise SetError("invalidProperties", "receivedAt is a UTCDate", ["receivedAt"])
    return moment


async def _import_one(ctx, spec: dict, names: dict) -> dict:
    unknown = sorted(set(spec) - {"blobId", "mailboxIds", "keywords", "receivedAt"})
    if unknown:
        raise SetError("invalidProperties", f"unknown property {unknown[0]}", unknown)
    if not isinstance(spec.get("blobId"), str) or "mailboxIds" not in spec:
        raise SetError("invalidProperties", "blobId and mailboxIds are required", ["blobId", "mailboxIds"])
    empty = {"mailboxes": {}}
    keywords, mailboxes = plan(ctx, empty, {"keywords": spec.get("keywords", {}),
                                            "mailboxIds": spec["mailboxIds"]}, names)
    received_at = received_at_of(spec.get("receivedAt"))
    data = await blobs.read(ctx.store, ctx.uploads, ctx.account, spec["blobId"])
    if data is None:
        raise SetError("blobNotFound", "no such blob", None)
    if not looks_like_message(data):
        raise SetError("invalidEmail", "the blob has no RFC 5322 header fields")
    return await store_message(ctx, data, keywords, mailboxes, received_at, names)


def looks_like_message(data: bytes) -> bool:
    """RFC 8621 4.8/4.9: a blob is an Email only if it starts with RFC 5322 header
    fields (an empty blob or arbitrary bytes is invalidEmail / notParsable)."""
    return bool(top_header(data))


async def store_message(ctx, data: bytes, keywords: set, mailboxes: set, received_at, names: dict) -> dict:
    """Deliver a message durably into the first mailbox and copy it to the others:
    the created-Email answer (id, blobId, threadId, size) or a SetError."""
    if len(data) > ctx.limits["maxSizeUpload"]:
        raise SetError("tooLarge", f"messages are at most {ctx.limits['maxSizeUpload']} octets")
    try:
        check_limits(data)
    except MessageTooComplex as exc:
        raise SetError("invalidEmail", exc.reason)
    first, *others = sorted(mailboxes)
    flags = flags_for(keywords, frozenset())
    target = DeliveryTarget(account=ctx.account, mailbox=names[first], flags=flags)
    try:
        refs = await ctx.store.deliver(data, [target], received_at)
        for other in others:
            await ctx.store.copy_messages(ctx.account, first, [refs[0].uid], names[other])
    except StoreError as exc:
        raise SetError("overQuota" if "quota" in str(exc) else "forbidden", str(exc))
    number = refs[0].message_id
    return {"id": f"e{number}", "blobId": blobs.message_blob_id(number),
            "threadId": await thread_id_of(ctx, number), "size": refs[0].size}


@method("Email/import")
async def import_(ctx, args):
    check_account(ctx, args)
    check_known(args, {"ifInState", "emails"})
    emails = args.get("emails")
    if not isinstance(emails, dict) or not all(isinstance(v, dict) for v in emails.values()):
        raise MethodError("invalidArguments", "emails maps creation ids to EmailImport objects")
    if len(emails) > ctx.limits["maxObjectsInSet"]:
        raise MethodError("requestTooLarge", f"more than {ctx.limits['maxObjectsInSet']} emails")
    old = (await state.current(ctx, fresh=True))["Email"]
    state.check_if_in_state(args, old)
    names = {row["id"]: row["name"] for row in await ctx.store.run_read(jmapreads.mailboxes, ctx.account)}
    created, not_created = {}, {}
    for cid, spec in emails.items():
        try:
            created[cid] = await _import_one(ctx, spec, names)
            ctx.created_ids[cid] = created[cid]["id"]
        except SetError as exc:
            not_created[cid] = exc.error
    new = (await state.current(ctx, fresh=True))["Email"]
    return {"accountId": ctx.account_id, "oldState": old, "newState": new,
            "created": created or None, "notCreated": not_created or None}


PARSE_DEFAULT = ("messageId", "inReplyTo", "references", "sender", "from", "to", "cc", "bcc", "replyTo",
                 "subject", "sentAt", "hasAttachment", "preview", "bodyValues", "textBody", "htmlBody",
                 "attachments")
NOT_PARSED = ("id", "mailboxIds", "keywords", "receivedAt", "threadId")  # null: the blob is no Email


@method("Email/parse")
async def parse(ctx, args):
    check_account(ctx, args)
    check_known(args, {"blobIds", "properties", "bodyProperties", "fetchTextBodyValues",
                       "fetchHTMLBodyValues", "fetchAllBodyValues", "maxBodyValueBytes"})
    blob_ids = args.get("blobIds")
    if not isinstance(blob_ids, list) or not all(isinstance(b, str) for b in blob_ids):
        raise MethodError("invalidArguments", "blobIds is an array of blob ids")
    if len(blob_ids) > ctx.limits["maxObjectsInGet"]:
        raise MethodError("requestTooLarge", f"more than {ctx.limits['maxObjectsInGet']} blobs")
    props = checked_properties(args, "properties", PROPERTIES, PARSE_DEFAULT)
    body_props, fetch, max_bytes = body_arguments(args)
    parsed, not_parsable, not_found = {}, [], []
    for blob_id in dict.fromkeys(blob_ids):
        data = await blobs.read(ctx.store, ctx.uploads, ctx.account, blob_id)
        if data is None:
            not_found.append(blob_id)
            continue
        try:
            check_limits(data)
        except MessageTooComplex:
            not_parsable.append(blob_id)
            continue
        if not looks_like_message(data):
            not_parsable.append(blob_id)
            continue
        summary = summarize(data)
        item = {"id": 0, "mailboxes": {}, "size": len(data), "received_at": 0,
                "has_attachment": summary.has_attachment, "preview": summary.preview}
        shown = [p for p in props if p not in NOT_PARSED and p != "blobId"]
        # parts of a whole blob download as "<blob>.<part>"; parts of a part have no blob id yet
        blob_of = (lambda _n, part, base=blob_id: f"{base}.{part}") if "." not in blob_id else \
            (lambda _n, _part: None)
        email = render(item, data, shown, body_props, fetch, max_bytes, blob_of=blob_of)
        email.update({p: None for p in props if p in NOT_PARSED})
        if "blobId" in props:
            email["blobId"] = blob_id
        parsed[blob_id] = email
    return {"accountId": ctx.account_id, "parsed": parsed or None,
            "notParsable": not_parsable or None, "notFound": not_found or None}


@method("Email/copy")
async def copy(ctx, args):
    """RFC 8621 4.7 copies between accounts. An account here reaches only itself, and
    RFC 8620 5.4 requires fromAccountId to differ from accountId: so a copy from this
    account is invalidArguments and from any other fromAccountNotFound (to move or copy
    within the account, Email/set changes mailboxIds)."""
    check_account(ctx, args)
    check_known(args, {"fromAccountId", "ifFromInState", "ifInState", "create", "onSuccessDestroyOriginal",
                       "destroyFromIfInState"})
    source = args.get("fromAccountId")
    if not isinstance(source, str) or not isinstance(args.get("create"), dict):
        raise MethodError("invalidArguments", "fromAccountId and create are required")
    if source == ctx.account_id:
        raise MethodError("invalidArguments", "fromAccountId must differ from accountId (RFC 8620 5.4)")
    raise MethodError("fromAccountNotFound", "no such account")
