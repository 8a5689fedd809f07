"""Core/echo (RFC 8620 4) and the argument checks every standard method shares
(/get 5.1, /changes 5.2, /set 5.3, /query 5.5)."""

from __future__ import annotations

import calendar
import re

from .api import CORE, MethodError, method

UNSIGNED_MAX = 2 ** 53 - 1
_UTC_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?Z")


@method("Core/echo", CORE)
async def echo(ctx, args):
    """RFC 8620 4.1: the arguments, unchanged."""
    return args


def check_account(ctx, args) -> None:
    """accountId must be the authenticated account's (others: accountNotFound)."""
    value = args.get("accountId")
    if not isinstance(value, str):
        raise MethodError("invalidArguments", "accountId must be a string")
    if value != ctx.account_id:
        raise MethodError("accountNotFound", "no such account")


def parse_utc_date(value) -> float | None:
    """Unix time of an RFC 8620 1.4 UTCDate ("2014-10-30T06:12:00Z"), None for anything else.
    A time-secfrac is accepted, also the ".000" of JavaScript's toISOString() (jmap-jam users
    send that), and dropped: the store keeps whole seconds."""
    match = _UTC_DATE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1] and hour < 24
            and minute < 60 and second < 60):
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second)))


def check_known(args, known: set) -> None:
    unknown = sorted(set(args) - known - {"accountId"})
    if unknown:
        raise MethodError("invalidArguments", f"unknown argument {unknown[0]}")


def parse_id(value, prefix: str):
    """The row id inside a JMAP id like "e123", or None for anything else (notFound)."""
    if (isinstance(value, str) and value.startswith(prefix) and value[1:].isdigit()
            and len(value) < 20 and value[1] != "0"):
        return int(value[1:])
    return None


def resolve_creation(ctx, value):
    """An id, or "#creationId" (RFC 8620 5.3) replaced by the id it created."""
    if isinstance(value, str) and value.startswith("#"):
        if value[1:] in ctx.created_ids:
            return ctx.created_ids[value[1:]]
        raise MethodError("invalidArguments", f"unknown creation id {value}")
    return value


def get_ids(ctx, args):
    """ids of a /get: None (all) or a list of strings, at most maxObjectsInGet."""
    ids = args.get("ids")
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise MethodError("invalidArguments", "ids must be null or an array of ids")
    if len(ids) > ctx.limits["maxObjectsInGet"]:
        raise MethodError("requestTooLarge", f"more than {ctx.limits['maxObjectsInGet']} ids")
    return [resolve_creation(ctx, i) for i in ids]


def get_properties(args, known: tuple, default: tuple, extra=None) -> list:
    """properties of a /get; "id" is always returned (RFC 8620 5.1)."""
    props = args.get("properties")
    if props is None:
        props = list(default)
    elif not isinstance(props, list) or not all(isinstance(p, str) for p in props):
        raise MethodError("invalidArguments", "properties must be null or an array of strings")
    for prop in props:
        if prop not in known and not (extra and extra(prop)):
            raise MethodError("invalidArguments", f"unknown property {prop}")
    return ["id"] + [p for p in dict.fromkeys(props) if p != "id"]


def unsigned(args, name: str, default=None, minimum: int = 0):
    value = args.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= UNSIGNED_MAX:
        raise MethodError("invalidArguments", f"{name} must be an integer >= {minimum}")
    return value


def since_state(args) -> str:
    value = args.get("sinceState")
    if not isinstance(value, str):
        raise MethodError("invalidArguments", "sinceState must be a string")
    return value


def max_changes(args):
    return unsigned(args, "maxChanges", None, minimum=1)


def query_window(args):
    """(position, anchor, anchorOffset, limit, calculateTotal) of a /query (RFC 8620 5.5)."""
    position = args.get("position", 0)
    if not isinstance(position, int) or isinstance(position, bool) or abs(position) > UNSIGNED_MAX:
        raise MethodError("invalidArguments", "position must be an integer")
    anchor = args.get("anchor")
    if anchor is not None and not isinstance(anchor, str):
        raise MethodError("invalidArguments", "anchor must be null or an id")
    offset = args.get("anchorOffset", 0)
    if not isinstance(offset, int) or isinstance(offset, bool) or abs(offset) > UNSIGNED_MAX:
        raise MethodError("invalidArguments", "anchorOffset must be an integer")
    limit = unsigned(args, "limit", None)
    total = args.get("calculateTotal", False)
    if not isinstance(total, bool):
        raise MethodError("invalidArguments", "calculateTotal must be a boolean")
    return position, anchor, offset, limit, total


def window(ids: list, position: int, anchor, offset: int, limit):
    """The slice of a sorted id list a /query returns, and its position (RFC 8620 5.5)."""
    if anchor is not None:
        try:
            index = ids.index(anchor)
        except ValueError:
            raise MethodError("anchorNotFound", "the anchor is not in the results")
        start = max(0, index + offset)
    elif position < 0:
        start = max(0, len(ids) + position)
    else:
        start = position
    end = len(ids) if limit is None else start + limit
    return ids[start:end], start  # past the end: no ids, the position asked (RFC 8620 5.5)
