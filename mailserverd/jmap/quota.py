"""Quotas (RFC 9425, urn:ietf:params:jmap:quota): Quota/get, /changes, /query
and /queryChanges.

An account with a storage quota (`mailserverctl user quota`) has one Quota,
"q0": octets used by its mail (each copy counts, as the store counts it)
against that hard limit, scope account, for Emails. An unlimited account has
none. The state is "<account modseq>.<quota>": every mail write moves the
first part, an admin quota change the second, so /changes can tell created,
updated and destroyed apart.
"""

from __future__ import annotations

from . import state
from .api import QUOTA, MethodError, method
from .core import (check_account, check_known, get_ids, get_properties, max_changes, query_window,
                   window)
from .filters import matches, parse_filter, parse_sort

QUOTA_ID = "q0"
PROPERTIES = ("id", "resourceType", "used", "hardLimit", "scope", "name", "types", "description")
FILTERS = {"name": (str,), "scope": (str,), "resourceType": (str,), "type": (str,)}


async def _now(ctx) -> tuple[str, int, list]:
    """(state, used octets, [the Quota] or [])."""
    states = await state.current(ctx)
    limit = ctx.account.quota
    current = f"{states['Mailbox']}.{limit}"
    if not limit:
        return current, 0, []
    used = await ctx.store.usage(ctx.account)
    return current, used, [{"id": QUOTA_ID, "resourceType": "octets", "used": used, "hardLimit": limit,
                            "scope": "account", "name": f"{ctx.account.address} storage",
                            "types": ["Email"], "description": "bytes of stored mail, each copy counted"}]


def _parse(value, now: str) -> tuple[int, int]:
    modseq, _, limit = value.partition(".") if isinstance(value, str) else ("", "", "")
    if not (modseq.isdigit() and limit.isdigit()) or int(modseq) > int(now.partition(".")[0]):
        raise MethodError("cannotCalculateChanges", "this state was not given by this server")
    return int(modseq), int(limit)


@method("Quota/get", QUOTA)
async def get(ctx, args):
    check_account(ctx, args)
    check_known(args, {"ids", "properties"})
    ids = get_ids(ctx, args)
    props = get_properties(args, PROPERTIES, PROPERTIES)
    now, _used, quotas = await _now(ctx)
    wanted = [q["id"] for q in quotas] if ids is None else list(dict.fromkeys(ids))
    by_id = {q["id"]: q for q in quotas}
    return {"accountId": ctx.account_id, "state": now,
            "list": [{p: by_id[i][p] for p in props} for i in wanted if i in by_id],
            "notFound": [i for i in wanted if i not in by_id]}


@method("Quota/changes", QUOTA)
async def changes(ctx, args):
    check_account(ctx, args)
    check_known(args, {"sinceState", "maxChanges"})
    since = args.get("sinceState")
    max_changes(args)
    now, _used, quotas = await _now(ctx)
    modseq, old_limit = _parse(since, now)
    created, updated, destroyed = [], [], []
    if quotas and not old_limit:
        created = [QUOTA_ID]
    elif old_limit and not quotas:
        destroyed = [QUOTA_ID]
    elif quotas and since != now:
        updated = [QUOTA_ID]
    return {"accountId": ctx.account_id, "oldState": since, "newState": now, "hasMoreChanges": False,
            "created": created, "updated": updated, "destroyed": destroyed,
            "updatedProperties": ["used"] if updated and old_limit == ctx.account.quota else None}


def _test(quota: dict, condition: dict) -> bool:
    for key, value in condition.items():
        if key == "name" and value.casefold() not in quota["name"].casefold():
            return False
        if key in ("scope", "resourceType") and quota[key] != value:
            return False
        if key == "type" and value not in quota["types"]:
            return False
    return True


async def _query_ids(ctx, args) -> tuple[str, list]:
    condition = parse_filter(args.get("filter"), FILTERS)
    sort = parse_sort(args.get("sort"), ("name", "used"))
    now, _used, quotas = await _now(ctx)
    for prop, ascending in reversed(sort):
        quotas.sort(key=lambda q, p=prop: q[p], reverse=not ascending)
    return now, [q["id"] for q in quotas if matches(condition, lambda c, q=q: _test(q, c))]


@method("Quota/query", QUOTA)
async def query(ctx, args):
    check_account(ctx, args)
    check_known(args, {"filter", "sort", "position", "anchor", "anchorOffset", "limit", "calculateTotal"})
    position, anchor, offset, limit, total = query_window(args)
    now, ids = await _query_ids(ctx, args)
    page, start = window(ids, position, anchor, offset, limit)
    answer = {"accountId": ctx.account_id, "queryState": now, "canCalculateChanges": True,
              "position": start, "ids": page}
    if total:
        answer["total"] = len(ids)
    if limit is not None:
        answer["limit"] = limit
    return answer


@method("Quota/queryChanges", QUOTA)
async def query_changes(ctx, args):
    """The one Quota is removed and added back: exact for a list of at most one."""
    check_account(ctx, args)
    check_known(args, {"filter", "sort", "sinceQueryState", "maxChanges", "upToId", "calculateTotal"})
    since = args.get("sinceQueryState")
    most = max_changes(args)
    now, ids = await _query_ids(ctx, args)
    _parse(since, now)
    added = [{"id": i, "index": n} for n, i in enumerate(ids)]
    if most is not None and 1 + len(added) > most:
        raise MethodError("tooManyChanges", f"more than maxChanges ({most}) changes")
    answer = {"accountId": ctx.account_id, "oldQueryState": since, "newQueryState": now,
              "removed": [QUOTA_ID], "added": added}
    if args.get("calculateTotal") is True:
        answer["total"] = len(ids)
    return answer
