"""Email/queryChanges and Mailbox/queryChanges (RFC 8620 5.6), from the change log.

Email: the sort keys it follows (receivedAt, size, from, to, subject, sentAt)
are immutable and ties break by id (keyword sorts, thread conditions and
collapseThreads: cannotCalculateChanges, as Email/query's canCalculateChanges
said), so Emails that did not change since sinceQueryState keep their
relative order. The answer removes every Email created, updated
or destroyed since then (the client may not have had some: 5.6 allows
that) and adds back those now in the results, at their index. The filter may
use mutable properties (keywords, mailboxes): any such change is an Email
"updated" in the log, so it is removed and re-added like the rest.

Mailbox: names and parents change, and a rename moves a whole subtree in a
sortAsTree result, so the answer removes every mailbox that exists or was
destroyed since sinceQueryState and adds the whole current result. Mailbox
lists are short; the answer is exact.
"""

from __future__ import annotations

from ..store import jmapreads
from . import state
from .api import MethodError, method
from .core import check_account, check_known, max_changes
from .email import all_ids, calculable, query_arguments


def _since(args) -> str:
    value = args.get("sinceQueryState")
    if not isinstance(value, str):
        raise MethodError("invalidArguments", "sinceQueryState must be a string")
    return value


def _answer(ctx, args, old, now, removed, added, total, most):
    if most is not None and len(removed) + len(added) > most:
        raise MethodError("tooManyChanges", f"more than maxChanges ({most}) changes")
    answer = {"accountId": ctx.account_id, "oldQueryState": old, "newQueryState": now,
              "removed": removed, "added": added}
    calculate = args.get("calculateTotal", False)
    if not isinstance(calculate, bool):
        raise MethodError("invalidArguments", "calculateTotal is a boolean")
    if calculate:
        answer["total"] = total
    return answer


@method("Email/queryChanges")
async def email_query_changes(ctx, args):
    check_account(ctx, args)
    check_known(args, {"filter", "sort", "sinceQueryState", "maxChanges", "upToId", "calculateTotal",
                       "collapseThreads"})
    condition, sort = query_arguments(args)
    old, most = _since(args), max_changes(args)
    if args.get("upToId") is not None and not isinstance(args["upToId"], str):
        raise MethodError("invalidArguments", "upToId must be null or an id")
    if not calculable(args, condition, sort):  # Email/query answered canCalculateChanges false
        raise MethodError("cannotCalculateChanges", "collapseThreads, a thread condition or a keyword sort")
    now = (await state.current(ctx))["Email"]  # before the reads: a later change is reported again
    _up_to, _more, created, updated, destroyed = await ctx.store.run_read(
        jmapreads.email_changes, ctx.account, state.parse(old, now), None)
    changed = [f"e{n}" for n in created + updated + destroyed]
    current = await all_ids(ctx, condition, sort)
    wanted = set(changed)
    added = [{"id": jid, "index": index} for index, jid in enumerate(current) if jid in wanted]
    return _answer(ctx, args, old, now, changed, added, len(current), most)


@method("Mailbox/queryChanges")
async def mailbox_query_changes(ctx, args):
    from .mailbox import query as mailbox_query  # the same filter, sort and tree rules
    check_account(ctx, args)
    check_known(args, {"filter", "sort", "sinceQueryState", "maxChanges", "upToId", "calculateTotal",
                       "sortAsTree", "filterAsTree"})
    old, most = _since(args), max_changes(args)
    now = (await state.current(ctx))["Mailbox"]
    since = state.parse(old, now)
    _up_to, _more, created, updated, _counts, destroyed = await ctx.store.run_read(
        jmapreads.mailbox_changes, ctx.account, since, None)
    query_args = {k: v for k, v in args.items() if k in ("accountId", "filter", "sort", "sortAsTree",
                                                          "filterAsTree")}
    result = await mailbox_query(ctx, query_args)
    existing = [box["id"] for box in (await ctx.store.run_read(jmapreads.mailboxes, ctx.account))]
    removed = [f"m{n}" for n in existing] + [f"m{n}" for n in destroyed]
    added = [{"id": jid, "index": index} for index, jid in enumerate(result["ids"])]
    if not (created or updated or destroyed):  # only message counts moved: no query sees those
        removed, added = [], []  # (else maxChanges would be tooManyChanges for no change at all)
    return _answer(ctx, args, old, now, removed, added, len(result["ids"]), most)
