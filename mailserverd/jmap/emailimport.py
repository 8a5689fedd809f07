"""Email/import (RFC 8621 4.8): a blob (an upload, or a stored message) becomes
an Email in the given mailboxes, with keywords and receivedAt.

The message goes through the store's delivery path (durable before the
answer) into the first mailbox; the others get copies of that membership, so
it is one Email. The same message limits as SMTP apply (size, header size,
MIME depth: mime.limits); a message that breaks one is invalidEmail.
"""

from __future__ import annotations

import datetime

from ..mime.limits import check_limits
from ..mime.structure import MessageTooComplex
from ..store import jmapreads
from ..store.api import DeliveryTarget, StoreError
from . import blobs, state
from .api import MethodError, method
from .core import check_account, check_known
from .emailset import SetError, flags_for, plan


def _received_at(value) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise SetError("invalidProperties", "receivedAt is a UTCDate", ["receivedAt"])
    try:
        moment = datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise SetError("invalidProperties", "receivedAt is a UTCDate", ["receivedAt"])
    return moment.replace(tzinfo=datetime.timezone.utc).timestamp()


async def _import_one(ctx, spec: dict, names: dict) -> dict:
    unknown = sorted(set(spec) - {"blobId", "mailboxIds", "keywords", "receivedAt"})
    if unknown:
        raise SetError("invalidProperties", f"unknown property {unknown[0]}", unknown)
    if not isinstance(spec.get("blobId"), str) or "mailboxIds" not in spec:
        raise SetError("invalidProperties", "blobId and mailboxIds are required", ["blobId", "mailboxIds"])
    empty = {"mailboxes": {}}
    keywords, mailboxes = plan(ctx, empty, {"keywords": spec.get("keywords", {}),
                                            "mailboxIds": spec["mailboxIds"]}, names)
    received_at = _received_at(spec.get("receivedAt"))
    data = await blobs.read(ctx.store, ctx.uploads, ctx.account, spec["blobId"])
    if data is None:
        raise SetError("blobNotFound", "no such blob", None)
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
    return {"id": f"e{number}", "blobId": blobs.message_blob_id(number), "threadId": f"t{number}",
            "size": refs[0].size}


@method("Email/import")
async def import_(ctx, args):
    check_account(ctx, args)
    check_known(args, {"ifInState", "emails"})
    emails = args.get("emails")
    if not isinstance(emails, dict) or not all(isinstance(v, dict) for v in emails.values()):
        raise MethodError("invalidArguments", "emails maps creation ids to EmailImport objects")
    if len(emails) > ctx.limits["maxObjectsInSet"]:
        raise MethodError("requestTooLarge", f"more than {ctx.limits['maxObjectsInSet']} emails")
    old = (await state.current(ctx))["Email"]
    state.check_if_in_state(args, old)
    names = {row["id"]: row["name"] for row in await ctx.store.run_read(jmapreads.mailboxes, ctx.account)}
    created, not_created = {}, {}
    for cid, spec in emails.items():
        try:
            created[cid] = await _import_one(ctx, spec, names)
            ctx.created_ids[cid] = created[cid]["id"]
        except SetError as exc:
            not_created[cid] = exc.error
    return {"accountId": ctx.account_id, "oldState": old, "newState": (await state.current(ctx))["Email"],
            "created": created or None, "notCreated": not_created or None}
