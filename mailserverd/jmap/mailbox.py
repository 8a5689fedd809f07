"""Mailbox/get, /changes, /query and /set (RFC 8621 2).

A JMAP Mailbox is a store mailbox; its "/"-separated name gives name and
parentId (the parent is the nearest existing ancestor; without one the
mailbox is top-level and keeps its full name). role comes from the RFC 6154
special-use attribute (RFC 8621 2 and the RFC 8457 registry), INBOX's is
"inbox". totalThreads counts the distinct Threads (store conversations) of
its Emails; unreadThreads those with an unread Email in this mailbox (RFC
8621 2 also counts unread Emails of the Thread elsewhere; counting only this
mailbox keeps the counts changing exactly when the mailbox's Emails do).
"""

from __future__ import annotations

from ..store import jmapreads
from ..store.api import MailboxExists, NoSuchMailbox, StoreError
from . import state
from .api import MethodError, method
from .core import (check_account, check_known, get_ids, get_properties, max_changes, parse_id,
                   query_window, since_state, window)
from .filters import matches, parse_filter, parse_sort

PROPERTIES = ("id", "name", "parentId", "role", "sortOrder", "totalEmails", "unreadEmails",
              "totalThreads", "unreadThreads", "myRights", "isSubscribed")
ROLES = ("archive", "drafts", "junk", "sent", "trash")  # creatable: the RFC 6154 uses the store keeps
COUNTS = ["totalEmails", "unreadEmails", "totalThreads", "unreadThreads"]
MAX_NAME = 255


def mailbox_id(number: int) -> str:
    return f"m{number}"


def role_of(row) -> str | None:
    if row["name"] == "INBOX":
        return "inbox"
    if row["special_use"]:
        return row["special_use"].lstrip("\\").lower()
    return None


def rights(row) -> dict:
    inbox = row["name"] == "INBOX"
    return {"mayReadItems": True, "mayAddItems": True, "mayRemoveItems": True, "maySetSeen": True,
            "maySetKeywords": True, "mayCreateChild": True, "mayRename": not inbox,
            "mayDelete": not inbox, "maySubmit": False}


def to_jmap(row, by_name: dict) -> dict:
    parent, name = None, row["name"]
    path = row["name"].split("/")
    for cut in range(len(path) - 1, 0, -1):
        ancestor = by_name.get("/".join(path[:cut]))
        if ancestor is not None:
            parent, name = mailbox_id(ancestor["id"]), "/".join(path[cut:])
            break
    return {"id": mailbox_id(row["id"]), "name": name, "parentId": parent, "role": role_of(row),
            "sortOrder": 0, "totalEmails": row["total"], "unreadEmails": row["unread"],
            "totalThreads": row.get("threads", row["total"]),
            "unreadThreads": row.get("unread_threads", row["unread"]), "myRights": rights(row),
            "isSubscribed": row["subscribed"]}


async def load(ctx) -> tuple[list[dict], dict]:
    """(JMAP mailboxes, store rows by full name)."""
    rows = await ctx.store.run_read(jmapreads.mailboxes, ctx.account)
    by_name = {row["name"]: row for row in rows}
    return [to_jmap(row, by_name) for row in rows], by_name


@method("Mailbox/get")
async def get(ctx, args):
    check_account(ctx, args)
    check_known(args, {"ids", "properties"})
    ids = get_ids(ctx, args)
    props = get_properties(args, PROPERTIES, PROPERTIES)
    now = (await state.current(ctx))["Mailbox"]
    boxes, _ = await load(ctx)
    by_id = {box["id"]: box for box in boxes}
    wanted = list(by_id) if ids is None else list(dict.fromkeys(ids))
    found = [{p: by_id[i][p] for p in props} for i in wanted if i in by_id]
    return {"accountId": ctx.account_id, "state": now, "list": found,
            "notFound": [i for i in wanted if i not in by_id]}


@method("Mailbox/changes")
async def changes(ctx, args):
    check_account(ctx, args)
    check_known(args, {"sinceState", "maxChanges"})
    since, most = since_state(args), max_changes(args)
    now = (await state.current(ctx))["Mailbox"]
    up_to, more, created, updated, counts_only, destroyed = await ctx.store.run_read(
        jmapreads.mailbox_changes, ctx.account, state.parse(since, now), most)
    return {"accountId": ctx.account_id, "oldState": since, "newState": str(up_to),
            "hasMoreChanges": more, "created": [mailbox_id(i) for i in created],
            "updated": [mailbox_id(i) for i in updated + counts_only],
            "destroyed": [mailbox_id(i) for i in destroyed],
            "updatedProperties": COUNTS if counts_only and not updated else None}


# -- query ------------------------------------------------------------------------------

FILTERS = {"parentId": (str, type(None)), "name": (str,), "role": (str, type(None)),
           "hasAnyRole": (bool,), "isSubscribed": (bool,)}


def _condition(box: dict, condition: dict) -> bool:
    for key, value in condition.items():
        if key == "parentId" and box["parentId"] != value:
            return False
        if key == "name" and value.casefold() not in box["name"].casefold():
            return False
        if key == "role" and box["role"] != value:
            return False
        if key == "hasAnyRole" and (box["role"] is not None) != value:
            return False
        if key == "isSubscribed" and box["isSubscribed"] != value:
            return False
    return True


@method("Mailbox/query")
async def query(ctx, args):
    check_account(ctx, args)
    check_known(args, {"filter", "sort", "position", "anchor", "anchorOffset", "limit",
                       "calculateTotal", "sortAsTree", "filterAsTree"})
    condition = parse_filter(args.get("filter"), FILTERS)
    sort = parse_sort(args.get("sort"), ("name", "sortOrder"))
    position, anchor, offset, limit, total = query_window(args)
    as_tree, filter_tree = args.get("sortAsTree", False), args.get("filterAsTree", False)
    if not isinstance(as_tree, bool) or not isinstance(filter_tree, bool):
        raise MethodError("invalidArguments", "sortAsTree and filterAsTree are booleans")
    now = (await state.current(ctx))["Mailbox"]
    boxes, _ = await load(ctx)
    for prop, ascending in reversed(sort):  # stable sorts, last key first
        key = (lambda b: b["name"].casefold()) if prop == "name" else (lambda b: b["sortOrder"])
        boxes.sort(key=key, reverse=not ascending)
    hits = {b["id"] for b in boxes if matches(condition, lambda c, b=b: _condition(b, c))}
    if filter_tree:  # RFC 8621 2.3: a mailbox matches only if its ancestors do
        by_id = {b["id"]: b for b in boxes}

        def ancestors_match(box):
            parent = box["parentId"]
            while parent is not None:
                if parent not in hits:
                    return False
                parent = by_id[parent]["parentId"]
            return True
        hits = {i for i in hits if ancestors_match(by_id[i])}
    if as_tree:  # parents before children, siblings in sort order
        children: dict = {}
        for box in boxes:
            children.setdefault(box["parentId"], []).append(box)
        ordered, stack = [], list(reversed(children.get(None, [])))
        while stack:
            box = stack.pop()
            ordered.append(box)
            stack.extend(reversed(children.get(box["id"], [])))
        boxes = ordered
    ids = [b["id"] for b in boxes if b["id"] in hits]
    page, start = window(ids, position, anchor, offset, limit)
    answer = {"accountId": ctx.account_id, "queryState": now, "canCalculateChanges": True,
              "position": start, "ids": page}  # Mailbox/queryChanges: querychanges.py
    if total:
        answer["total"] = len(ids)
    if limit is not None:
        answer["limit"] = limit
    return answer


# -- set --------------------------------------------------------------------------------

def _bad(description: str, *props) -> dict:
    error = {"type": "invalidProperties", "description": description}
    if props:
        error["properties"] = list(props)
    return error


def _name(value) -> str:
    if (not isinstance(value, str) or not value or len(value.encode()) > MAX_NAME or "/" in value
            or any(ord(ch) < 0x20 or ch in "\x7f*%" for ch in value)):
        raise _SetError(_bad("name must be 1 to 255 octets without / * % or controls", "name"))
    return value


class _SetError(Exception):
    def __init__(self, error: dict):
        super().__init__(error.get("type"))
        self.error = error


def _full_name(ctx, parent, name, by_id_name) -> str:
    if parent is None:
        return name
    # an unknown "#cid" is this creation's error, not the method's (RFC 8620 5.3)
    number = parse_id(_own_id(ctx, parent), "m") if isinstance(parent, str) else None
    if number is None or number not in by_id_name:
        raise _SetError(_bad("parentId is not a mailbox", "parentId"))
    return by_id_name[number] + "/" + name


def _check_set_args(ctx, args) -> tuple[dict, dict, list]:
    check_account(ctx, args)
    check_known(args, {"ifInState", "create", "update", "destroy", "onDestroyRemoveEmails"})
    create, update, destroy = args.get("create") or {}, args.get("update") or {}, args.get("destroy") or []
    if (not isinstance(create, dict) or not isinstance(update, dict) or not isinstance(destroy, list)
            or not all(isinstance(v, dict) for v in list(create.values()) + list(update.values()))
            or not all(isinstance(i, str) for i in destroy)):
        raise MethodError("invalidArguments", "create and update map ids to objects; destroy is a list")
    if len(create) + len(update) + len(destroy) > ctx.limits["maxObjectsInSet"]:
        raise MethodError("requestTooLarge", f"more than {ctx.limits['maxObjectsInSet']} objects")
    if not isinstance(args.get("onDestroyRemoveEmails", False), bool):
        raise MethodError("invalidArguments", "onDestroyRemoveEmails is a boolean")
    return create, update, destroy


async def _rows(ctx) -> dict:
    return {row["id"]: row for row in await ctx.store.run_read(jmapreads.mailboxes, ctx.account)}


@method("Mailbox/set")
async def set_(ctx, args):
    create, update, destroy = _check_set_args(ctx, args)
    old = (await state.current(ctx, fresh=True))["Mailbox"]
    state.check_if_in_state(args, old)
    answer = {"accountId": ctx.account_id, "oldState": old, "created": {}, "updated": {},
              "destroyed": [], "notCreated": {}, "notUpdated": {}, "notDestroyed": {}}
    for cid, props in create.items():
        try:
            answer["created"][cid] = await _create(ctx, props)
            ctx.created_ids[cid] = answer["created"][cid]["id"]
        except _SetError as exc:
            answer["notCreated"][cid] = exc.error
    # RFC 8620 5.3: "#cid" keys answer under the id they resolved to (see emailset._created)
    update = {_own_id(ctx, jid): props for jid, props in update.items()}
    destroy = list(dict.fromkeys(_own_id(ctx, jid) for jid in destroy))
    for jid, props in update.items():
        try:
            await _update(ctx, jid, props)
            answer["updated"][jid] = None
        except _SetError as exc:
            answer["notUpdated"][jid] = exc.error
    for jid in destroy:
        try:
            await _destroy(ctx, jid, args.get("onDestroyRemoveEmails", False))
            answer["destroyed"].append(jid)
        except _SetError as exc:
            answer["notDestroyed"][jid] = exc.error
    answer["newState"] = (await state.current(ctx, fresh=True))["Mailbox"]
    for key in ("created", "updated", "destroyed", "notCreated", "notUpdated", "notDestroyed"):
        if not answer[key]:
            answer[key] = None
    return answer


async def _create(ctx, props) -> dict:
    unknown = sorted(set(props) - {"name", "parentId", "role", "isSubscribed", "sortOrder"})
    if unknown:
        raise _SetError(_bad(f"cannot set {unknown[0]}", *unknown))
    rows = await _rows(ctx)
    full = _full_name(ctx, props.get("parentId"), _name(props.get("name")),
                      {i: r["name"] for i, r in rows.items()})
    role = props.get("role")
    if role is not None and (role not in ROLES or any(role_of(r) == role for r in rows.values())):
        raise _SetError(_bad("role is not one this server sets, or another mailbox has it", "role"))
    if props.get("sortOrder", 0) != 0:
        raise _SetError(_bad("sortOrder is always 0 here", "sortOrder"))
    subscribed = props.get("isSubscribed", False)
    if not isinstance(subscribed, bool):
        raise _SetError(_bad("isSubscribed is a boolean", "isSubscribed"))
    try:
        made = await ctx.store.create_mailbox(ctx.account, full, "\\" + role.capitalize() if role else None)
        if subscribed != made.subscribed:
            await ctx.store.set_subscribed(ctx.account, full, subscribed)
    except MailboxExists:
        raise _SetError(_bad("a mailbox with this name exists here", "name"))
    except StoreError as exc:
        raise _SetError(_bad(str(exc), "name"))
    row = dict(id=made.id, name=full, special_use=made.special_use, subscribed=subscribed, total=0, unread=0)
    box = to_jmap(row, {r["name"]: r for r in rows.values()})
    return {k: v for k, v in box.items() if k not in ("name",)}


def _own_id(ctx, jid: str) -> str:
    """RFC 8620 5.3 (erratum 6607): update and destroy may name a Mailbox this request
    created as "#cid" (jmap-jam and Email/set allow it); an unknown one is notFound."""
    return ctx.created_ids.get(jid[1:], jid) if jid.startswith("#") else jid


async def _update(ctx, jid, props) -> None:
    rows = await _rows(ctx)
    number = parse_id(_own_id(ctx, jid), "m")
    if number not in rows:
        raise _SetError({"type": "notFound"})
    row = rows[number]
    current = to_jmap(row, {r["name"]: r for r in rows.values()})
    for key, value in props.items():
        if key in ("role", "sortOrder") and value == current[key]:
            continue
        if key not in ("name", "parentId", "isSubscribed"):
            raise _SetError(_bad(f"cannot change {key}", key))
    if "isSubscribed" in props and not isinstance(props["isSubscribed"], bool):
        raise _SetError(_bad("isSubscribed is a boolean", "isSubscribed"))
    name = _name(props["name"]) if "name" in props else current["name"]
    parent = props["parentId"] if "parentId" in props else current["parentId"]
    by_id_name = {i: r["name"] for i, r in rows.items()}
    full = _full_name(ctx, parent, name, by_id_name)
    if full == row["name"] + "/" + name or full.startswith(row["name"] + "/"):
        raise _SetError(_bad("a mailbox cannot move under itself", "parentId"))
    if full != row["name"]:
        if row["name"] == "INBOX":
            raise _SetError({"type": "forbidden", "description": "INBOX cannot be renamed"})
        try:
            await ctx.store.rename_mailbox(ctx.account, row["name"], full)
        except MailboxExists:
            raise _SetError(_bad("a mailbox with this name exists here", "name"))
        except StoreError as exc:
            raise _SetError(_bad(str(exc), "name"))
    if "isSubscribed" in props and props["isSubscribed"] != row["subscribed"]:
        await ctx.store.set_subscribed(ctx.account, full, props["isSubscribed"])


async def _destroy(ctx, jid, remove_emails: bool) -> None:
    rows = await _rows(ctx)
    number = parse_id(_own_id(ctx, jid), "m")
    if number not in rows:
        raise _SetError({"type": "notFound"})
    row = rows[number]
    if row["name"] == "INBOX":
        raise _SetError({"type": "forbidden", "description": "INBOX cannot be destroyed"})
    if any(r["name"].startswith(row["name"] + "/") for r in rows.values()):
        raise _SetError({"type": "mailboxHasChild"})
    if row["total"] and not remove_emails:
        raise _SetError({"type": "mailboxHasEmail"})
    try:
        await ctx.store.delete_mailbox(ctx.account, row["name"])
    except NoSuchMailbox:
        raise _SetError({"type": "notFound"})
