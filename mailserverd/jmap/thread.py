"""Thread/get and Thread/changes (RFC 8621 3).

A Thread is a conversation the store assigns at delivery and import
(messages.thread_id, store/threads.py, JWZ): Thread "t<thread id>" holds
every live Email of the account with that thread id, oldest receivedAt
first; mail stored before threading (thread_id NULL) is alone in
"t<its id>". Thread changes are derived from the Email change log
(store/jmapreads.thread_changes); they may over-report updates, which
RFC 8620 5.2 allows, and are cannotCalculateChanges when a destroyed
Email's Thread can no longer be told (the client then resyncs).
"""

from __future__ import annotations

from ..store import jmapreads
from . import state
from .api import MethodError, method
from .core import check_account, check_known, get_ids, get_properties, max_changes, parse_id, since_state


@method("Thread/get")
async def get(ctx, args):
    check_account(ctx, args)
    check_known(args, {"ids", "properties"})
    ids = get_ids(ctx, args)
    props = get_properties(args, ("id", "emailIds"), ("id", "emailIds"))
    now = (await state.current(ctx))["Thread"]
    if ids is None:
        found = await ctx.store.run_read(jmapreads.threads, ctx.account, None)
        ids = [f"t{n}" for n in sorted(found)]
    else:
        ids = list(dict.fromkeys(ids))
        numbers = [n for n in (parse_id(i, "t") for i in ids) if n is not None]
        found = await ctx.store.run_read(jmapreads.threads, ctx.account, numbers) if numbers else {}
    listed = []
    for jid in ids:
        number = parse_id(jid, "t")
        if number in found:
            thread = {"id": jid, "emailIds": [f"e{m}" for m in found[number]]}
            listed.append({p: thread[p] for p in props})
    return {"accountId": ctx.account_id, "state": now, "list": listed,
            "notFound": [i for i in ids if parse_id(i, "t") not in found]}


@method("Thread/changes")
async def changes(ctx, args):
    check_account(ctx, args)
    check_known(args, {"sinceState", "maxChanges"})
    since, most = since_state(args), max_changes(args)
    now = (await state.current(ctx))["Thread"]
    found = await ctx.store.run_read(jmapreads.thread_changes, ctx.account, state.parse(since, now), most)
    if found is None:
        raise MethodError("cannotCalculateChanges", "a destroyed Email's Thread is no longer known")
    up_to, more, created, updated, destroyed = found
    return {"accountId": ctx.account_id, "oldState": since, "newState": str(up_to),
            "hasMoreChanges": more, "created": [f"t{i}" for i in created],
            "updated": [f"t{i}" for i in updated], "destroyed": [f"t{i}" for i in destroyed]}
