"""Thread/get and Thread/changes (RFC 8621 3).

The store does not group messages into threads yet (messages.thread_id is
never set), so every Email is alone in its Thread "t<id>": a Thread exists
while its Email does, and its emailIds never change.
"""

from __future__ import annotations

from ..store import jmapreads
from . import state
from .api import method
from .core import check_account, check_known, get_ids, get_properties, max_changes, parse_id, since_state


@method("Thread/get")
async def get(ctx, args):
    check_account(ctx, args)
    check_known(args, {"ids", "properties"})
    ids = get_ids(ctx, args)
    props = get_properties(args, ("id", "emailIds"), ("id", "emailIds"))
    now = (await state.current(ctx))["Thread"]
    if ids is None:
        found = await ctx.store.run_read(jmapreads.emails, ctx.account, None)
        ids = [f"t{n}" for n in sorted(found)]
    else:
        ids = list(dict.fromkeys(ids))
        numbers = [n for n in (parse_id(i, "t") for i in ids) if n is not None]
        found = await ctx.store.run_read(jmapreads.emails, ctx.account, numbers) if numbers else {}
    listed = []
    for jid in ids:
        number = parse_id(jid, "t")
        if number in found:
            thread = {"id": jid, "emailIds": [f"e{number}"]}
            listed.append({p: thread[p] for p in props})
    return {"accountId": ctx.account_id, "state": now, "list": listed,
            "notFound": [i for i in ids if parse_id(i, "t") not in found]}


@method("Thread/changes")
async def changes(ctx, args):
    check_account(ctx, args)
    check_known(args, {"sinceState", "maxChanges"})
    since, most = since_state(args), max_changes(args)
    now = (await state.current(ctx))["Thread"]
    up_to, more, created, _updated, destroyed = await ctx.store.run_read(
        jmapreads.email_changes, ctx.account, state.parse(since, now), most)
    return {"accountId": ctx.account_id, "oldState": since, "newState": str(up_to),
            "hasMoreChanges": more, "created": [f"t{i}" for i in created], "updated": [],
            "destroyed": [f"t{i}" for i in destroyed]}
