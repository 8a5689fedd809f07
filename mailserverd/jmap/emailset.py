"""Email/set (RFC 8621 4.6): keyword and mailbox changes, and destroy.

An update's keywords (whole or patched, "keywords/$seen") become the flags
of every mailbox holding the Email; its mailboxIds become COPY, MOVE and
EXPUNGE of memberships (a move where one mailbox replaces another, so the
spam filter's Junk training sees it as IMAP's would). Adds run before
removals, so an Email is never left in no mailbox on the way. Destroy
expunges every membership. Creations are built by emailcreate.py.
"""

from __future__ import annotations

import re

from ..store import jmapreads
from ..store.api import StoreError
from . import state
from .api import MethodError
from .core import check_account, check_known, parse_id

SYSTEM = {"\\Seen": "$seen", "\\Answered": "$answered", "\\Flagged": "$flagged", "\\Draft": "$draft"}
FLAG_OF = {keyword: flag for flag, keyword in SYSTEM.items()}
_KEYWORD = re.compile(r"^[\x21-\x7e]{1,255}$")
_NOT_IN_KEYWORD = set('(){]%*"\\')


def keywords_of(flags) -> dict:
    out = {}
    for flag in flags:
        if flag in SYSTEM:
            out[SYSTEM[flag]] = True
        elif not flag.startswith("\\"):
            out[flag.lower()] = True
    return out


def union_keywords(item: dict) -> dict:
    out = {}
    for _uid, flags in item["mailboxes"].values():
        out.update(keywords_of(flags))
    return out


class SetError(Exception):
    def __init__(self, kind: str, description: str | None = None, properties=None):
        super().__init__(kind)
        self.error = {"type": kind}
        if description:
            self.error["description"] = description
        if properties:
            self.error["properties"] = list(properties)


def _valid_keyword(keyword) -> bool:
    return isinstance(keyword, str) and bool(_KEYWORD.match(keyword)) and not set(keyword) & _NOT_IN_KEYWORD


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def plan(ctx, item: dict, patch: dict, mailbox_names: dict) -> tuple:
    """(keyword set or None, mailbox id set or None) an update asks for."""
    keywords = mailboxes = None
    for key, value in patch.items():
        head, _, rest = key.partition("/")
        if head == "keywords" and not rest:
            if not isinstance(value, dict) or not all(
                    v is True and _valid_keyword(k) for k, v in value.items()):
                raise SetError("invalidProperties", "keywords maps valid keywords to true", ["keywords"])
            if any(k.startswith("keywords/") for k in patch):
                raise SetError("invalidPatch", "keywords and keywords/... together")
            keywords = {k.lower() for k in value}
        elif head == "keywords":
            keyword = _unescape(rest)
            if not _valid_keyword(keyword) or value not in (True, None):
                raise SetError("invalidPatch", f"bad patch {key}")
            if keywords is None:
                keywords = set(union_keywords(item))
            (keywords.add if value else keywords.discard)(keyword.lower())
        elif head == "mailboxIds" and not rest:
            if not isinstance(value, dict) or not all(v is True for v in value.values()):
                raise SetError("invalidProperties", "mailboxIds maps mailbox ids to true", ["mailboxIds"])
            if any(k.startswith("mailboxIds/") for k in patch):
                raise SetError("invalidPatch", "mailboxIds and mailboxIds/... together")
            mailboxes = {_mailbox(ctx, k, mailbox_names) for k in value}
        elif head == "mailboxIds":
            if value not in (True, None):
                raise SetError("invalidPatch", f"bad patch {key}")
            if mailboxes is None:
                mailboxes = set(item["mailboxes"])
            number = _mailbox(ctx, _unescape(rest), mailbox_names)
            (mailboxes.add if value else mailboxes.discard)(number)
        else:
            raise SetError("invalidProperties", f"{key} cannot be changed", [key])
    if mailboxes is not None and not mailboxes:
        raise SetError("invalidProperties", "an Email is in at least one mailbox", ["mailboxIds"])
    return keywords, mailboxes


def _mailbox(ctx, value: str, names: dict) -> int:
    """A mailbox id (or "#cid") of mailboxIds; an unknown one fails this creation or
    update only (RFC 8620 5.3), never the method: earlier creations stand."""
    number = parse_id(_created(ctx, value), "m")
    if number not in names:
        raise SetError("invalidProperties", f"no mailbox {value}", ["mailboxIds"])
    return number


def flags_for(keywords: set, old: frozenset) -> frozenset:
    """IMAP flags for a keyword set; keywords keep the spelling IMAP gave them; \\Deleted stays."""
    spelled = {flag.lower(): flag for flag in old if not flag.startswith("\\")}
    flags = {FLAG_OF.get(k) or spelled.get(k, k) for k in keywords}
    if "\\Deleted" in old:
        flags.add("\\Deleted")
    return frozenset(flags)


async def apply(ctx, number: int, item: dict, keywords, mailboxes, names: dict) -> None:
    account, store = ctx.account, ctx.store
    boxes = dict(item["mailboxes"])
    if mailboxes is not None:
        add = [m for m in sorted(mailboxes) if m not in boxes]
        remove = [m for m in sorted(boxes) if m not in mailboxes]
        for dest in add:
            if remove:
                source = remove.pop(0)
                await store.move_messages(account, source, [boxes[source][0]], names[dest])
            else:
                source = min(boxes)
                await store.copy_messages(account, source, [boxes[source][0]], names[dest])
        for source in remove:
            await store.expunge(account, source, [boxes[source][0]])
    if keywords is not None:
        fresh = await store.run_read(jmapreads.emails, account, [number])
        for mailbox_id, (uid, flags) in fresh.get(number, {"mailboxes": {}})["mailboxes"].items():
            new = flags_for(keywords, flags)
            if new != flags:
                await store.store_flags(account, mailbox_id, [uid], sorted(new), "replace")


def _created(ctx, value: str) -> str:
    """RFC 8620 5.3 (erratum 6607): an update or destroy may name an Email this request
    created as "#cid". The answer's updated/destroyed/notUpdated/notDestroyed then
    name it by the id it resolved to, as Cyrus does (a client already knows that
    id from "created"); an unknown "#cid" stays as given, notFound."""
    if value.startswith("#"):
        return ctx.created_ids.get(value[1:], value)
    return value


async def set_emails(ctx, args):
    check_account(ctx, args)
    check_known(args, {"ifInState", "create", "update", "destroy"})
    create, update, destroy = args.get("create") or {}, args.get("update") or {}, args.get("destroy") or []
    if (not isinstance(create, dict) or not isinstance(update, dict) or not isinstance(destroy, list)
            or not all(isinstance(v, dict) for v in update.values())
            or not all(isinstance(i, str) for i in destroy)):
        raise MethodError("invalidArguments", "create and update map ids to objects; destroy is a list")
    if len(create) + len(update) + len(destroy) > ctx.limits["maxObjectsInSet"]:
        raise MethodError("requestTooLarge", f"more than {ctx.limits['maxObjectsInSet']} objects")
    old = (await state.current(ctx, fresh=True))["Email"]
    state.check_if_in_state(args, old)
    answer = {"accountId": ctx.account_id, "oldState": old, "created": {}, "updated": {},
              "destroyed": [], "notCreated": {}, "notUpdated": {}, "notDestroyed": {}}
    names = {row["id"]: row["name"] for row in await ctx.store.run_read(jmapreads.mailboxes, ctx.account)}
    from .emailcreate import create as create_email  # emailcreate builds on this module
    for cid, spec in create.items():
        try:
            if not isinstance(spec, dict):
                raise SetError("invalidProperties", "an Email creation is an object")
            answer["created"][cid] = await create_email(ctx, spec, names)
            ctx.created_ids[cid] = answer["created"][cid]["id"]
        except SetError as exc:
            answer["notCreated"][cid] = exc.error
    update = {_created(ctx, jid): patch for jid, patch in update.items()}
    destroy = list(dict.fromkeys(_created(ctx, jid) for jid in destroy))
    numbers = {jid: parse_id(jid, "e") for jid in list(update) + destroy}
    items = await ctx.store.run_read(jmapreads.emails, ctx.account,
                                     [n for n in numbers.values() if n is not None])
    for jid, patch in update.items():
        number = numbers[jid]
        try:
            if number not in items:
                raise SetError("notFound")
            keywords, mailboxes = plan(ctx, items[number], patch, names)
            await apply(ctx, number, items[number], keywords, mailboxes, names)
            answer["updated"][jid] = None
        except SetError as exc:
            answer["notUpdated"][jid] = exc.error
        except StoreError as exc:  # e.g. OverQuota on a copy
            answer["notUpdated"][jid] = {"type": "overQuota" if "quota" in str(exc) else "forbidden",
                                         "description": str(exc)}
    for jid in destroy:
        number = numbers[jid]
        current = await ctx.store.run_read(jmapreads.emails, ctx.account, [number]) if number else {}
        if number not in current:
            answer["notDestroyed"][jid] = {"type": "notFound"}
            continue
        for mailbox_id, (uid, _flags) in current[number]["mailboxes"].items():
            await ctx.store.expunge(ctx.account, mailbox_id, [uid])
        answer["destroyed"].append(jid)
    answer["newState"] = (await state.current(ctx, fresh=True))["Email"]
    for key in ("created", "updated", "destroyed", "notCreated", "notUpdated", "notDestroyed"):
        if not answer[key]:
            answer[key] = None
    return answer
