"""State strings (RFC 8620 1.6, 5.1) from the store's change log.

Every write to an account takes the next number of its modseq sequence and
logs a change row (store/schema.py changes). The Email (and Thread) state is
the modseq of the account's last Email change; the Mailbox state is the
account's modseq, since any Email change may change a mailbox's counts.
States are decimal strings; a /changes with a state this server never gave
(or one from the future) is cannotCalculateChanges. The log is never
truncated while the account exists, so every state it gave can be answered.
"""

from __future__ import annotations

from ..store import jmapreads
from .api import MethodError

TYPES = ("Mailbox", "Email", "Thread")


async def current(ctx, fresh: bool = False) -> dict[str, str]:
    """{"Mailbox": ..., "Email": ..., "Thread": ...}. Read once per request and reused
    by its later read methods (a state read before the data it goes with is safe: a
    change in between is reported again by /changes); methods that write pass fresh."""
    if fresh or ctx.states is None:
        ctx.states = strings(await ctx.store.run_read(jmapreads.states, ctx.account))
    return ctx.states


async def read(ctx, fn, *args):
    """(states as current() gives them, fn(mail, account, *args)) with one trip to the
    store's read pool when the states were not read yet in this request: they are
    read first, then the data, as current() followed by run_read would."""
    if ctx.states is not None:
        return ctx.states, await ctx.store.run_read(fn, ctx.account, *args)
    found, result = await ctx.store.run_read(jmapreads.with_states, ctx.account, fn, *args)
    ctx.states = strings(found)
    return ctx.states, result


def strings(found: dict) -> dict[str, str]:
    return {"Mailbox": str(found["all"]), "Email": str(found["Email"]), "Thread": str(found["Email"])}


def parse(value: str, now: str) -> int:
    """The modseq a client's state stands for; cannotCalculateChanges if it never was one."""
    if not value.isdigit() or len(value) > 18 or int(value) > int(now):
        raise MethodError("cannotCalculateChanges", "this state was not given by this server")
    return int(value)


def check_if_in_state(args, now: str) -> None:
    """RFC 8620 5.3: ifInState that is not the current state is stateMismatch."""
    wanted = args.get("ifInState")
    if wanted is None:
        return
    if not isinstance(wanted, str):
        raise MethodError("invalidArguments", "ifInState must be null or a string")
    if wanted != now:
        raise MethodError("stateMismatch", "the state is no longer ifInState")
