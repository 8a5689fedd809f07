"""Email/get, /changes, /query and /set (RFC 8621 4).

An Email is a message row; each mailbox holding it is one membership
(an IMAP COPY adds one). IMAP flags are kept per membership: keywords shown
are the union over the Email's mailboxes, and a keyword change is written to
every membership, so IMAP sees it in each mailbox. \\Deleted is IMAP-only
and kept as it was. Writes go through the store's grouped writes (flags,
copy, move, expunge), each durable before the answer.
"""

from __future__ import annotations

import email.utils
import functools

from ..imap.sort import base_subject
from ..store import jmapreads
from . import headercache, state
from .api import MethodError, method
from .blobs import message_blob_id
from .core import (check_account, check_known, get_ids, max_changes, parse_id, query_window,
                   parse_utc_date, since_state, unsigned, window)
from .emailparse import (body_part, body_value, classify, header_property, header_value, top_header,
                         tree, utc_date)
from .emailset import set_emails, union_keywords
from .filters import matches, parse_filter, parse_sort
from .textfilter import check_header, text_sets

METADATA = ("id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt")
HEADER_PROPS = {"messageId": ("Message-ID", "asMessageIds"), "inReplyTo": ("In-Reply-To", "asMessageIds"),
                "references": ("References", "asMessageIds"), "sender": ("Sender", "asAddresses"),
                "from": ("From", "asAddresses"), "to": ("To", "asAddresses"), "cc": ("Cc", "asAddresses"),
                "bcc": ("Bcc", "asAddresses"), "replyTo": ("Reply-To", "asAddresses"),
                "subject": ("Subject", "asText"), "sentAt": ("Date", "asDate")}
BODY = ("headers", "bodyStructure", "bodyValues", "textBody", "htmlBody", "attachments")
PROPERTIES = METADATA + tuple(HEADER_PROPS) + ("hasAttachment", "preview") + BODY
DEFAULT = tuple(p for p in PROPERTIES if p not in ("headers", "bodyStructure"))
BODY_PROPERTIES = ("partId", "blobId", "size", "headers", "name", "type", "charset", "disposition",
                   "cid", "language", "location", "subParts")
DEFAULT_BODY = ("partId", "blobId", "size", "name", "type", "charset", "disposition", "cid",
                "language", "location")
KEYWORD_SORTS = ("hasKeyword", "allInThreadHaveKeyword", "someInThreadHaveKeyword")
SORT_PROPERTIES = ("receivedAt", "size", "from", "to", "subject", "sentAt") + KEYWORD_SORTS  # RFC 8621 4.4.2


def email_id(number: int) -> str:
    return f"e{number}"


def thread_of(item: dict, number: int) -> str:
    """Email threadId: the store's conversation id (RFC 8621 3); the message's own id for
    mail stored before threading (thread_id NULL)."""
    return f"t{item.get('thread_id') or number}"


async def thread_id_of(ctx, number: int) -> str:
    found = await ctx.store.run_read(jmapreads.emails, ctx.account, [number])
    return thread_of(found.get(number, {}), number)


def _header_prop(prop: str) -> bool:
    return header_property(prop) is not None


def checked_properties(args, name, known, default):
    props = args.get(name)
    if props is None:
        return list(default)
    if not isinstance(props, list) or not all(isinstance(p, str) for p in props):
        raise MethodError("invalidArguments", f"{name} must be null or an array of strings")
    for prop in props:
        if prop not in known and not _header_prop(prop):
            raise MethodError("invalidArguments", f"unknown property {prop}")
    return list(dict.fromkeys(props))


def body_arguments(args) -> tuple[list, dict, int]:
    """bodyProperties, the fetch*BodyValues flags and maxBodyValueBytes (RFC 8621 4.2)."""
    body_props = checked_properties(args, "bodyProperties", BODY_PROPERTIES, DEFAULT_BODY)
    fetch = {}
    for name in ("fetchTextBodyValues", "fetchHTMLBodyValues", "fetchAllBodyValues"):
        fetch[name] = args.get(name, False)
        if not isinstance(fetch[name], bool):
            raise MethodError("invalidArguments", f"{name} is a boolean")
    return body_props, fetch, unsigned(args, "maxBodyValueBytes", 0)


@method("Email/get")
async def get(ctx, args):
    check_account(ctx, args)
    check_known(args, {"ids", "properties", "bodyProperties", "fetchTextBodyValues",
                       "fetchHTMLBodyValues", "fetchAllBodyValues", "maxBodyValueBytes"})
    ids = get_ids(ctx, args)
    props = ["id"] + [p for p in checked_properties(args, "properties", PROPERTIES, DEFAULT) if p != "id"]
    body_props, fetch, max_bytes = body_arguments(args)
    mode, cached = _get_mode(props)
    raws, headers = {}, {}
    if ids is None:
        states, found = await state.read(ctx, jmapreads.emails, None)
        if len(found) > ctx.limits["maxObjectsInGet"]:
            raise MethodError("requestTooLarge", "too many emails for ids: null; pass ids")
        wanted = [email_id(n) for n in sorted(found)]
        if mode != "none" and found:
            _found, raws, headers = await ctx.store.run_read(headercache.read_for_get, ctx.account,
                                                             list(found), mode, cached, HEADER_PROPS)
    else:
        wanted = list(dict.fromkeys(ids))
        numbers = [n for n in (parse_id(i, "e") for i in wanted) if n is not None]
        ahead, ctx.prefetched = ctx.prefetched, None
        if ahead is not None and ahead[1:3] == (numbers, (mode, cached)):  # read by the Email/query before
            states, (found, raws, headers) = await state.current(ctx), ahead[3]
        elif numbers:  # the state, the rows and the messages in one trip to the read pool
            states, (found, raws, headers) = await state.read(ctx, headercache.read_for_get, numbers,
                                                              mode, cached, HEADER_PROPS)
        else:
            states, found = await state.current(ctx), {}
    now = states["Email"]
    listed, not_found = [], []
    for jid in wanted:
        number = parse_id(jid, "e")
        if number not in found or (mode == "raw" and number not in raws) \
                or (mode == "headers" and number not in headers):
            not_found.append(jid)
            continue
        listed.append(render(found[number], raws.get(number), props, body_props, fetch, max_bytes,
                             headers=headers.get(number)))
    return {"accountId": ctx.account_id, "state": now, "list": listed, "notFound": not_found}


_received_date = functools.lru_cache(maxsize=65536)(utc_date)  # the same few dates, over and over


def _get_mode(props) -> tuple[str, list]:
    """How Email/get reads: "raw" (the message itself: body and header:... properties),
    "headers" (the usual header properties, headercache) or "none"; and those
    header properties."""
    cached = [p for p in props if p in HEADER_PROPS]
    mode = "raw" if any(p in BODY or _header_prop(p) for p in props) else "headers" if cached else "none"
    return mode, cached


def _read_ahead(ctx):
    """(mode, header properties) of the Email/get right after this Email/query that
    takes its ids by reference to /ids (RFC 8620 3.7): the query then reads them in
    the same trip to the read pool (api.Context.prefetched). None otherwise."""
    upcoming = ctx.next_call
    if not upcoming or upcoming[0] != "Email/get" or "ids" in upcoming[1]:
        return None
    if upcoming[1].get("#ids") != {"resultOf": ctx.call_id, "name": "Email/query", "path": "/ids"}:
        return None
    try:
        props = checked_properties(upcoming[1], "properties", PROPERTIES, DEFAULT)
    except MethodError:
        return None
    return _get_mode(["id"] + [p for p in props if p != "id"])


def render(item, raw, props, body_props, fetch, max_bytes, blob_of=message_blob_id, headers=None) -> dict:
    """An Email object (RFC 8621 4.1) of props; the HEADER_PROPS from headers
    ({prop: value}, headercache) when given, else parsed from raw."""
    number = item["id"]
    out = {}
    header = top_header(raw) if raw is not None else []
    root = tree(raw) if raw is not None and any(p in BODY for p in props) else None
    parts = classify(root) if root is not None else ([], [], [])
    for prop in props:
        simple = _SIMPLE.get(prop)
        if simple is not None:
            out[prop] = simple(item, number)
        elif prop in HEADER_PROPS:
            out[prop] = (headercache.copied(headers[prop]) if headers is not None
                         else header_value(header, *HEADER_PROPS[prop], False))
        elif prop == "headers":
            out[prop] = [{"name": n, "value": v.decode("utf-8", "replace")} for n, v in header]
        elif prop == "bodyStructure":
            out[prop] = body_part(raw, root, number, body_props, blob_of, True) if root else None
        elif prop in ("textBody", "htmlBody", "attachments"):
            index = ("textBody", "htmlBody", "attachments").index(prop)
            out[prop] = [body_part(raw, node, number, body_props, blob_of) for node in parts[index]]
        elif prop == "bodyValues":
            out[prop] = _values(raw, parts, fetch, max_bytes)
        else:
            out[prop] = header_value(header, *header_property(prop))
    return out


_SIMPLE = {  # the properties render() answers from the row alone (RFC 8621 4.1.1, 4.1.4)
    "id": lambda item, number: email_id(number),
    "blobId": lambda item, number: message_blob_id(number),
    "threadId": thread_of,
    "mailboxIds": lambda item, number: {f"m{m}": True for m in sorted(item["mailboxes"])},
    "keywords": lambda item, number: union_keywords(item),
    "size": lambda item, number: item["size"],
    "receivedAt": lambda item, number: _received_date(item["received_at"]),
    "hasAttachment": lambda item, number: bool(item["has_attachment"]),
    "preview": lambda item, number: item["preview"] or "",
}


def _values(raw, parts, fetch, max_bytes) -> dict:
    text, html, attachments = parts
    chosen = []
    if fetch["fetchTextBodyValues"] or fetch["fetchAllBodyValues"]:
        chosen.extend(text)
    if fetch["fetchHTMLBodyValues"] or fetch["fetchAllBodyValues"]:
        chosen.extend(html)
    if fetch["fetchAllBodyValues"]:
        chosen.extend(attachments)
    return {node.part_id: body_value(raw, node, max_bytes) for node in chosen
            if node.part.content_type.startswith("text/")}


@method("Email/changes")
async def changes(ctx, args):
    check_account(ctx, args)
    check_known(args, {"sinceState", "maxChanges"})
    since, most = since_state(args), max_changes(args)
    now = (await state.current(ctx))["Email"]
    up_to, more, created, updated, destroyed = await ctx.store.run_read(
        jmapreads.email_changes, ctx.account, state.parse(since, now), most)
    return {"accountId": ctx.account_id, "oldState": since, "newState": str(up_to),
            "hasMoreChanges": more, "created": [email_id(i) for i in created],
            "updated": [email_id(i) for i in updated], "destroyed": [email_id(i) for i in destroyed]}


# -- query ------------------------------------------------------------------------------

LIST = (list,)
FILTERS = {"inMailbox": (str,), "inMailboxOtherThan": LIST, "before": (str,), "after": (str,),
           "minSize": (int,), "maxSize": (int,), "hasKeyword": (str,), "notKeyword": (str,),
           "allInThreadHaveKeyword": (str,), "someInThreadHaveKeyword": (str,),
           "noneInThreadHaveKeyword": (str,), "hasAttachment": (bool,), "text": (str,),
           "from": (str,), "to": (str,), "cc": (str,), "bcc": (str,), "subject": (str,),
           "body": (str,), "header": LIST}


def _utc(value: str) -> float:
    moment = parse_utc_date(value)
    if moment is None:
        raise MethodError("invalidArguments", f"{value!r} is not a UTCDate")
    return moment


def _test(item: dict, condition: dict) -> bool:
    boxes = item["mailboxes"]
    keywords = union_keywords(item)
    for key, value in condition.items():
        if key == "inMailbox" and parse_id(value, "m") not in boxes:
            return False
        if key == "inMailboxOtherThan":
            excluded = {parse_id(v, "m") for v in value}
            if not set(boxes) - excluded:
                return False
        if key == "before" and not item["received_at"] < _utc(value):
            return False
        if key == "after" and not item["received_at"] >= _utc(value):
            return False
        if key == "minSize" and item["size"] < value:
            return False
        if key == "maxSize" and item["size"] >= value:
            return False
        if key == "hasKeyword" and value.lower() not in keywords:
            return False
        if key == "notKeyword" and value.lower() in keywords:
            return False
        # RFC 8621 4.4.1: the thread conditions look at every Email of the Thread
        if key == "allInThreadHaveKeyword" and value.lower() not in item.get("thread_all", keywords):
            return False
        if key == "someInThreadHaveKeyword" and value.lower() not in item.get("thread_some", keywords):
            return False
        if key == "noneInThreadHaveKeyword" and value.lower() in item.get("thread_some", keywords):
            return False
        if key == "hasAttachment" and bool(item["has_attachment"]) != value:
            return False
    return True  # text conditions: textfilter.text_sets


def calculable(args, condition, sort) -> bool:
    """Whether /queryChanges (querychanges.py) can follow this query: not when whether
    or where an Email is listed hangs on other Emails of its Thread (collapseThreads,
    thread conditions) or on keywords through the sort."""
    return not args.get("collapseThreads", False) and not _thread_dependent(condition) \
        and not _mutable_sort(sort)


THREAD_CONDITIONS = ("allInThreadHaveKeyword", "someInThreadHaveKeyword", "noneInThreadHaveKeyword")


def _thread_dependent(tree) -> bool:
    """Whether a parsed filter has a condition on other Emails of the Thread."""
    if tree is None:
        return False
    if isinstance(tree, tuple):
        return any(_thread_dependent(child) for child in tree[1])
    return any(key in tree for key in THREAD_CONDITIONS)


def _first_address(text) -> str:
    """RFC 8621 4.4.2 from/to: the name of the first address, or its email if it has
    no name; "" if there is none."""
    for name, address in email.utils.getaddresses([text or ""]):
        if name or address:
            return (name or address).casefold()
    return ""


def _sort_key(prop):
    if prop == "receivedAt":
        return lambda item: item["received_at"]
    if prop == "size":
        return lambda item: item["size"]
    if prop == "sentAt":
        return lambda item: item["sent_at"] or 0
    if prop in ("from", "to"):
        column = "from_addr" if prop == "from" else "to_addr"
        return lambda item: _first_address(item[column])
    if " " in prop:  # RFC 8621 4.4.2 keyword sorts: Emails without the keyword first, ascending
        kind, keyword = prop.split(" ", 1)
        if kind == "hasKeyword":
            return lambda item: keyword in union_keywords(item)
        field = "thread_all" if kind == "allInThreadHaveKeyword" else "thread_some"
        return lambda item: keyword in item[field]
    # RFC 8621 4.4.2: subject sorts by the RFC 5256 2.1 base subject ("Re: x" with "x")
    return lambda item: _base_subject(item["subject"] or "")


_base_subject = functools.lru_cache(maxsize=65536)(lambda subject: base_subject(subject).casefold())


def _mutable_sort(sort) -> bool:
    """Whether a sort reads keywords, which change: /queryChanges cannot follow it."""
    return any(" " in prop for prop, _ascending in sort)


def query_arguments(args) -> tuple:
    """(filter tree, sort) of an Email/query or /queryChanges, checked."""
    condition = parse_filter(args.get("filter"), FILTERS)
    _validate_values(condition)
    if not isinstance(args.get("collapseThreads", False), bool):
        raise MethodError("invalidArguments", "collapseThreads is a boolean")
    return condition, parse_sort(args.get("sort"), SORT_PROPERTIES, KEYWORD_SORTS)


def _thread_keywords(found: dict) -> None:
    """Give each of the account's emails (found: all of them) "thread_all" and
    "thread_some": the keywords every / some Email of its Thread has."""
    every, some = {}, {}
    for item in found.values():
        thread, keywords = item["thread_id"] or item["id"], set(union_keywords(item))
        every[thread] = every[thread] & keywords if thread in every else keywords
        some.setdefault(thread, set()).update(keywords)
    for item in found.values():
        thread = item["thread_id"] or item["id"]
        item["thread_all"], item["thread_some"] = every[thread], some[thread]


async def collapse(ctx, ids: list[str]) -> list[str]:
    """collapseThreads (RFC 8621 4.4): only the first Email of each Thread, in query order."""
    thread = await ctx.store.run_read(jmapreads.thread_of, ctx.account, [parse_id(i, "e") for i in ids])
    seen, kept = set(), []
    for jid in ids:
        key = thread.get(parse_id(jid, "e"))
        if key not in seen:
            seen.add(key)
            kept.append(jid)
    return kept


async def all_ids(ctx, condition, sort) -> list[str]:
    """Every matching Email id in query order (ties: ascending id)."""
    simple = _sql_filter(condition)
    if simple is not False and len(sort) <= 1 and (not sort or sort[0][0] in SQL_SORT):
        column, ascending = (SQL_SORT[sort[0][0]], sort[0][1]) if sort else ("id", True)
        ids, _count = await ctx.store.run_read(jmapreads.mailbox_page, ctx.account, simple[0], column,
                                               ascending, 0, None, False, simple[1])
        return [email_id(i) for i in ids]
    found = await ctx.store.run_read(jmapreads.emails, ctx.account, None)
    _thread_keywords(found)
    texts = await text_sets(ctx, condition, found, _test)  # filtered before any paging

    def test(item, c):
        return _test(item, c) and (id(c) not in texts or item["id"] in texts[id(c)])
    items = sorted(found.values(), key=lambda item: item["id"])  # ties: oldest id first
    for prop, ascending in reversed(sort):
        items.sort(key=_sort_key(prop), reverse=not ascending)
    return [email_id(item["id"]) for item in items if matches(condition, lambda c, i=item: test(i, c))]


@method("Email/query")
async def query(ctx, args):
    """RFC 8621 4.4. Every sort key is immutable, so /queryChanges can be answered
    from the change log (querychanges.py): canCalculateChanges is true."""
    check_account(ctx, args)
    check_known(args, {"filter", "sort", "position", "anchor", "anchorOffset", "limit",
                       "calculateTotal", "collapseThreads"})
    condition, sort = query_arguments(args)
    position, anchor, offset, limit, total = query_window(args)
    # whether an Email is listed may hang on other Emails of its Thread, which
    # /queryChanges (querychanges.py) does not look at: no changes to calculate
    answer = {"accountId": ctx.account_id, "queryState": None,
              "canCalculateChanges": calculable(args, condition, sort),
              "collapseThreads": args.get("collapseThreads", False)}
    if limit is not None:
        answer["limit"] = limit
    simple = _sql_filter(condition)
    collapsed = args.get("collapseThreads", False)
    if simple is not False and anchor is None and position >= 0 and len(sort) <= 1 \
            and (not sort or sort[0][0] in SQL_SORT) and not collapsed:
        column, ascending = (SQL_SORT[sort[0][0]], sort[0][1]) if sort else ("id", True)
        page = (simple[0], column, ascending, position, limit, total, simple[1])
        ahead = _read_ahead(ctx)
        if ahead is None:
            states, (ids, count) = await state.read(ctx, jmapreads.mailbox_page, *page)
        else:
            states, (ids, count, got) = await state.read(ctx, headercache.page_and_get, page, *ahead,
                                                         HEADER_PROPS)
            ctx.prefetched = (ctx.call_index, ids, ahead, got)
        answer.update(queryState=states["Email"], position=position, ids=[email_id(i) for i in ids])
        if total:
            answer["total"] = count
        return answer
    answer["queryState"] = (await state.current(ctx))["Email"]
    ids = await all_ids(ctx, condition, sort)
    if collapsed:
        ids = await collapse(ctx, ids)
    page, start = window(ids, position, anchor, offset, limit)
    answer.update(position=start, ids=page)
    if total:
        answer["total"] = len(ids)
    return answer


SQL_SORT = {"receivedAt": "received_at", "size": "size", "sentAt": "sent_at"}


FLAG_COLUMNS = {"$seen": "seen", "$flagged": "flagged", "$answered": "answered", "$draft": "draft"}


def _sql_filter(condition):
    """(mailbox row id or None, ((flag column, present), ...)) for a filter SQL can
    run: one condition object of inMailbox and hasKeyword/notKeyword on the system
    keywords; False for any other filter. An inMailbox that is no mailbox id is -1."""
    if condition is None:
        return None, ()
    if not isinstance(condition, dict) or not set(condition) <= {"inMailbox", "hasKeyword", "notKeyword"}:
        return False
    flags = []
    for key, present in (("hasKeyword", True), ("notKeyword", False)):
        if key in condition:
            column = FLAG_COLUMNS.get(condition[key].lower())
            if column is None:
                return False
            flags.append((column, present))
    mailbox = None
    if "inMailbox" in condition:
        number = parse_id(condition["inMailbox"], "m")
        mailbox = -1 if number is None else number
    return mailbox, tuple(flags)


def _validate_values(tree) -> None:
    """Values of the right JSON type but the wrong form (dates, sizes) fail before any work."""
    if tree is None:
        return
    if isinstance(tree, tuple):
        for child in tree[1]:
            _validate_values(child)
        return
    for key in ("before", "after"):
        if key in tree:
            _utc(tree[key])
    for key in ("minSize", "maxSize"):
        if key in tree and (isinstance(tree[key], bool) or tree[key] < 0):
            raise MethodError("invalidArguments", f"{key} is an unsigned integer")
    check_header(tree)
    if "inMailboxOtherThan" in tree and not all(isinstance(v, str) for v in tree["inMailboxOtherThan"]):
        raise MethodError("invalidArguments", "inMailboxOtherThan is a list of ids")


@method("Email/set")
async def set_(ctx, args):
    return await set_emails(ctx, args)

