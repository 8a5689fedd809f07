"""VacationResponse (RFC 8621 8, urn:ietf:params:jmap:vacationresponse):
VacationResponse/get and /set of the account's one "singleton".

The replies themselves are sent from the delivery path (mailserverd/vacation.py).
"""

from __future__ import annotations

import datetime

from ..store import vacation as rows_
from .api import VACATION, MethodError, method
from .core import check_account, check_known, get_ids, get_properties, parse_utc_date
from .emailset import SetError
from .state import check_if_in_state

SINGLETON = "singleton"
PROPERTIES = ("id", "isEnabled", "fromDate", "toDate", "subject", "textBody", "htmlBody")
MAX_TEXT = 64 * 1024


def _engine(ctx):
    return ctx.store.store.directory_engine


def utc_date(when) -> str | None:
    if when is None:
        return None
    return datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_date(value, prop: str):
    """A UTCDate (RFC 8620 1.4) as unix time, or None."""
    if value is None:
        return None
    moment = parse_utc_date(value)
    if moment is None:
        raise SetError("invalidProperties", f"{prop} is null or a UTCDate (YYYY-MM-DDTHH:MM:SSZ)", [prop])
    return moment


def as_object(row) -> dict:
    if row is None:
        return {"id": SINGLETON, "isEnabled": False, "fromDate": None, "toDate": None, "subject": None,
                "textBody": None, "htmlBody": None}
    return {"id": SINGLETON, "isEnabled": bool(row.is_enabled), "fromDate": utc_date(row.from_date),
            "toDate": utc_date(row.to_date), "subject": row.subject, "textBody": row.text_body,
            "htmlBody": row.html_body}


async def _row(ctx):
    return await ctx.store.run_read(rows_.get, _engine(ctx), ctx.account.id)


@method("VacationResponse/get", VACATION)
async def get(ctx, args):
    check_account(ctx, args)
    check_known(args, {"ids", "properties"})
    ids = get_ids(ctx, args)
    props = get_properties(args, PROPERTIES, PROPERTIES)
    row = await _row(ctx)
    item = as_object(row)
    wanted = [SINGLETON] if ids is None else list(dict.fromkeys(ids))
    return {"accountId": ctx.account_id, "state": str(row.modseq if row else 0),
            "list": [{p: item[p] for p in props} for i in wanted if i == SINGLETON],
            "notFound": [i for i in wanted if i != SINGLETON]}


def _values(patch) -> dict:
    if not isinstance(patch, dict):
        raise SetError("invalidPatch", "a patch is an object")
    values = {}
    for prop, value in patch.items():
        if prop == "isEnabled":
            if not isinstance(value, bool):
                raise SetError("invalidProperties", "isEnabled is a boolean", [prop])
            values["is_enabled"] = value
        elif prop in ("fromDate", "toDate"):
            values[rows_.COLUMNS[prop]] = parse_date(value, prop)
        elif prop in ("subject", "textBody", "htmlBody"):
            if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT
                                      or (prop == "subject" and any(c in value for c in "\r\n"))):
                raise SetError("invalidProperties", f"{prop} is null or a string", [prop])
            values[rows_.COLUMNS[prop]] = value
        elif prop == "id":
            if value != SINGLETON:
                raise SetError("invalidProperties", "id is singleton", [prop])
        else:
            raise SetError("invalidProperties", f"unknown property {prop}", [prop])
    return values


@method("VacationResponse/set", VACATION)
async def set_vacation(ctx, args):
    """RFC 8621 8.2: only an update of "singleton"; create and destroy are singleton errors."""
    check_account(ctx, args)
    check_known(args, {"ifInState", "create", "update", "destroy"})
    create, update, destroy = args.get("create") or {}, args.get("update") or {}, args.get("destroy") or []
    if not isinstance(create, dict) or not isinstance(update, dict) or not isinstance(destroy, list):
        raise MethodError("invalidArguments", "create and update map ids to objects; destroy is a list")
    row = await _row(ctx)
    old = str(row.modseq if row else 0)
    check_if_in_state(args, old)
    answer = {"accountId": ctx.account_id, "oldState": old, "newState": old, "created": None, "updated": None,
              "destroyed": None, "notCreated": None, "notUpdated": None, "notDestroyed": None}
    if create:
        answer["notCreated"] = {cid: {"type": "singleton"} for cid in create}
    if destroy:
        answer["notDestroyed"] = {str(i): {"type": "singleton"} for i in destroy}
    for jid, patch in update.items():
        try:
            if jid != SINGLETON:
                raise SetError("notFound")
            values = _values(patch)
            if values:
                answer["newState"] = str(await ctx.store.run_write(rows_.put, _engine(ctx), ctx.account.id,
                                                                   values))
            answer["updated"] = {SINGLETON: None}
        except SetError as exc:
            answer["notUpdated"] = dict(answer["notUpdated"] or {}, **{jid: exc.error})
    return answer
