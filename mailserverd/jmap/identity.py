"""Identities (RFC 8621 6): Identity/get, /changes and /set.

An account has an Identity for each address it may send from: its own
address and the aliases that deliver only to it (the rule SMTP submission
applies to MAIL FROM and From:, smtp/addresses.py owns_address). /set may
create more Identities only for such addresses (forbiddenFrom otherwise,
6.3); email is immutable; the Identity of the account's own address has
mayDelete false. Rows, tombstones and the state live in store/identities.py.
"""

from __future__ import annotations

from ..smtp.addresses import owns_address
from ..store import identities as rows_
from .api import SUBMISSION, MethodError, method
from .core import (check_account, check_known, get_ids, get_properties, max_changes, parse_id,
                   resolve_creation, since_state)
from .emailset import SetError
from .state import check_if_in_state

PROPERTIES = ("id", "name", "email", "replyTo", "bcc", "textSignature", "htmlSignature", "mayDelete")
SETTABLE = ("name", "replyTo", "bcc", "textSignature", "htmlSignature")
MAX_TEXT = 64 * 1024  # a name or signature longer than this is refused (invalidProperties)


def _engine(ctx):
    return ctx.store.store.directory_engine


async def current_rows(ctx) -> tuple[list, frozenset]:
    """(every row of the account, tombstones included; the addresses it may send from),
    after bringing the rows in line with those addresses."""
    allowed = frozenset(a.lower() for a in await ctx.store.sender_addresses(ctx.account))
    found = await ctx.store.run_read(rows_.rows, _engine(ctx), ctx.account.id)
    if rows_.needs_sync(found, ctx.account.address, allowed):
        await ctx.store.run_write(rows_.sync, _engine(ctx), ctx.account.id, ctx.account.address, allowed)
        found = await ctx.store.run_read(rows_.rows, _engine(ctx), ctx.account.id)
    return found, allowed


async def live_identities(ctx) -> dict[str, dict]:
    """{identity id: Identity object} of the account (EmailSubmission and the REST API use it)."""
    found, _allowed = await current_rows(ctx)
    return {f"i{row.id}": rows_.as_object(row) for row in found if not row.destroyed}


@method("Identity/get", SUBMISSION)
async def get(ctx, args):
    check_account(ctx, args)
    check_known(args, {"ids", "properties"})
    ids = get_ids(ctx, args)
    props = get_properties(args, PROPERTIES, PROPERTIES)
    found, _allowed = await current_rows(ctx)
    live = {f"i{row.id}": rows_.as_object(row) for row in found if not row.destroyed}
    wanted = list(live) if ids is None else list(dict.fromkeys(ids))
    return {"accountId": ctx.account_id, "state": str(rows_.state_of(found)),
            "list": [{p: live[i][p] for p in props} for i in wanted if i in live],
            "notFound": [i for i in wanted if i not in live]}


def changes_since(found: list, since: int, most: int | None, prefix: str = "i") -> tuple:
    """(new state, has more, created, updated, destroyed) of rows changed after `since`
    (RFC 8620 5.2), ids as prefix + row id. A page ends between two modseqs, never inside one."""
    changed = sorted((row for row in found if row.modseq > since), key=lambda row: row.modseq)
    newest = rows_.state_of(found)
    more = False
    if most is not None and len(changed) > most:
        cut = changed[most].modseq
        changed = [row for row in changed if row.modseq < cut]
        if not changed:
            raise MethodError("cannotCalculateChanges", f"one change holds more than maxChanges ({most})")
        newest, more = changed[-1].modseq, True
    created, updated, destroyed = [], [], []
    for row in changed:
        new = row.created_modseq > since
        if new and row.destroyed:
            continue  # created and destroyed since: never seen by the client
        (created if new else destroyed if row.destroyed else updated).append(f"{prefix}{row.id}")
    return newest, more, created, updated, destroyed


@method("Identity/changes", SUBMISSION)
async def changes(ctx, args):
    check_account(ctx, args)
    check_known(args, {"sinceState", "maxChanges"})
    since = since_state(args)
    most = max_changes(args)
    found, _allowed = await current_rows(ctx)
    return changes_answer(ctx, found, since, most, "i")


def changes_answer(ctx, found: list, since: str, most, prefix: str) -> dict:
    """The /changes response over rows with modseq, created_modseq and destroyed."""
    now = rows_.state_of(found)
    if not since.isdigit() or len(since) > 18 or int(since) > now:
        raise MethodError("cannotCalculateChanges", "this state was not given by this server")
    newest, more, created, updated, destroyed = changes_since(found, int(since), most, prefix)
    return {"accountId": ctx.account_id, "oldState": since, "newState": str(newest),
            "hasMoreChanges": more, "created": created, "updated": updated, "destroyed": destroyed}


def _addresses(value, prop: str):
    """null or EmailAddress[] (RFC 8621 4.1.2.3): {"name": String|null, "email": String}."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 100:
        raise SetError("invalidProperties", f"{prop} is null or a list of EmailAddress", [prop])
    out = []
    for item in value:
        if (not isinstance(item, dict) or set(item) - {"name", "email"}
                or not isinstance(item.get("email"), str)
                or "@" not in item["email"] or not isinstance(item.get("name"), (str, type(None)))):
            raise SetError("invalidProperties", f"{prop} holds EmailAddress objects", [prop])
        out.append({"name": item.get("name"), "email": item["email"]})
    return out


def _settable(values: dict) -> dict:
    props = {}
    for prop, value in values.items():
        if prop in ("replyTo", "bcc"):
            props[prop] = _addresses(value, prop)
        elif prop in SETTABLE:
            if not isinstance(value, str) or len(value) > MAX_TEXT:
                raise SetError("invalidProperties", f"{prop} is a string of at most {MAX_TEXT} characters",
                               [prop])
            props[prop] = value
        elif prop in ("email", "id", "mayDelete"):
            raise SetError("invalidProperties", f"{prop} cannot be changed", [prop])
        else:
            raise SetError("invalidProperties", f"unknown property {prop}", [prop])
    return props


def _creation(spec, allowed: frozenset) -> tuple[str, dict]:
    if not isinstance(spec, dict):
        raise SetError("invalidProperties", "an Identity creation is an object")
    email = spec.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise SetError("invalidProperties", "email is the address to send from", ["email"])
    if not owns_address(allowed, email):
        raise SetError("forbiddenFrom", f"this account may not send from {email}")
    return email.lower(), _settable({k: v for k, v in spec.items() if k != "email"})


@method("Identity/set", SUBMISSION)
async def set_identities(ctx, args):
    check_account(ctx, args)
    check_known(args, {"ifInState", "create", "update", "destroy"})
    create, update, destroy = args.get("create") or {}, args.get("update") or {}, args.get("destroy") or []
    if (not isinstance(create, dict) or not isinstance(update, dict) or not isinstance(destroy, list)
            or not all(isinstance(i, str) for i in destroy)):
        raise MethodError("invalidArguments", "create and update map ids to objects; destroy is a list")
    if len(create) + len(update) + len(destroy) > ctx.limits["maxObjectsInSet"]:
        raise MethodError("requestTooLarge", f"more than {ctx.limits['maxObjectsInSet']} objects")
    found, allowed = await current_rows(ctx)
    old = str(rows_.state_of(found))
    check_if_in_state(args, old)
    answer = {"accountId": ctx.account_id, "oldState": old, "created": {}, "updated": {}, "destroyed": [],
              "notCreated": {}, "notUpdated": {}, "notDestroyed": {}}
    creates, updates, destroys = [], [], []
    for cid, spec in create.items():
        try:
            creates.append((cid, *_creation(spec, allowed)))
        except SetError as exc:
            answer["notCreated"][cid] = exc.error
    update_names, destroy_names = {}, {}
    for jid, patch in update.items():
        number = parse_id(resolve_creation(ctx, jid), "i")
        try:
            if number is None:
                raise SetError("notFound")
            if not isinstance(patch, dict):
                raise SetError("invalidPatch", "a patch is an object")
            updates.append((number, _settable(patch)))
            update_names[number] = jid
        except SetError as exc:
            answer["notUpdated"][jid] = exc.error
    for jid in destroy:
        number = parse_id(resolve_creation(ctx, jid), "i")
        if number is None:
            answer["notDestroyed"][jid] = {"type": "notFound"}
        else:
            destroys.append(number)
            destroy_names[number] = jid
    if creates or updates or destroys:
        done = await ctx.store.run_write(rows_.apply, _engine(ctx), ctx.account.id, creates, updates,
                                         destroys)
        for cid, row in done["created"].items():
            answer["created"][cid] = {"id": f"i{row.id}", "mayDelete": True}
            ctx.created_ids[cid] = f"i{row.id}"
        answer["updated"] = {update_names[n]: None for n in done["updated"]}
        answer["destroyed"] = [destroy_names[n] for n in done["destroyed"]]
        for number in done["notUpdated"]:
            answer["notUpdated"][update_names[number]] = {"type": "notFound"}
        for number in done["notDestroyed"]:
            answer["notDestroyed"][destroy_names[number]] = {"type": "notFound"}
        for number in done["forbidden"]:
            answer["notDestroyed"][destroy_names[number]] = {"type": "forbidden",
                                                     "description": "the account's own address stays"}
    found = await ctx.store.run_read(rows_.rows, _engine(ctx), ctx.account.id)
    answer["newState"] = str(rows_.state_of(found))
    for key in ("created", "updated", "destroyed", "notCreated", "notUpdated", "notDestroyed"):
        if not answer[key]:
            answer[key] = None
    return answer
