"""EmailSubmission (RFC 8621 7): /get, /changes, /query and /set.

A creation sends the Email at once through the same path as SMTP submission
(smtp/server.py start_transaction and add_recipient, smtp/delivery.py
deliver_message, with the submission listener's per-account rate limit):
the envelope's mailFrom and every From: address must be the account's
(forbiddenMailFrom / forbiddenFrom), local recipients are delivered through
the check chain, remote ones go to the durable outbound queue (where DKIM
signing happens); Bcc header fields are removed from what is sent (7.5).
Nothing is held for undo: undoStatus is always "final" and maxDelayedSend is
0, so an update to "canceled" is cannotUnsend. deliveryStatus is the outcome
at submission time ("yes" for local recipients, "queued" for remote ones).
The Sent copy is the client's to ask for: onSuccessUpdateEmail (or
onSuccessDestroyEmail) runs Email/set after the sends, answered as an
implicit Email/set response (7.5).
"""

from __future__ import annotations

import datetime
import email.utils
import json
import re

from ..checks.base import Session
from ..mime.headers import iter_fields, split_header
from ..smtp import replies
from ..smtp.addresses import owns_address
from ..smtp.delivery import deliver_message, new_id
from ..smtp.server import add_recipient, start_transaction
from ..smtp.syntax import CommandError, mail_params, parse_path, rcpt_params
from ..store import submissions as rows_
from ..store.api import StoreError
from . import identity
from .api import SUBMISSION, MethodError, method
from .core import (check_account, check_known, get_ids, get_properties, max_changes, parse_id, query_window,
                   resolve_creation, since_state, window)
from .email import thread_id_of
from .emailset import SetError, set_emails
from .filters import matches, parse_filter, parse_sort
from .state import check_if_in_state

PROPERTIES = ("id", "identityId", "emailId", "threadId", "envelope", "sendAt", "undoStatus",
              "deliveryStatus", "dsnBlobIds", "mdnBlobIds")
FILTERS = {"identityIds": (list,), "emailIds": (list,), "threadIds": (list,), "undoStatus": (str,),
           "before": (str,), "after": (str,)}
_WHITESPACE = re.compile(r"\s+")
_BCC = re.compile(rb"(?im)^bcc[ \t]*:.*(?:\r?\n[ \t].*)*\r?\n")


def _engine(ctx):
    return ctx.store.store.directory_engine


def utc_date(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_object(row) -> dict:
    return {"id": f"s{row.id}", "identityId": f"i{row.identity_id}", "emailId": f"e{row.email_id}",
            "threadId": f"t{row.thread_id}", "envelope": json.loads(row.envelope),
            "sendAt": utc_date(row.send_at),
            "undoStatus": row.undo_status, "deliveryStatus": json.loads(row.delivery_status),
            "dsnBlobIds": [], "mdnBlobIds": []}


async def _rows(ctx) -> list:
    return await ctx.store.run_read(rows_.rows, _engine(ctx), ctx.account.id)


@method("EmailSubmission/get", SUBMISSION)
async def get(ctx, args):
    check_account(ctx, args)
    check_known(args, {"ids", "properties"})
    ids = get_ids(ctx, args)
    props = get_properties(args, PROPERTIES, PROPERTIES)
    found = await _rows(ctx)
    live = {f"s{row.id}": as_object(row) for row in found if not row.destroyed}
    wanted = list(live) if ids is None else list(dict.fromkeys(ids))
    return {"accountId": ctx.account_id, "state": str(rows_and_state(found)),
            "list": [{p: live[i][p] for p in props} for i in wanted if i in live],
            "notFound": [i for i in wanted if i not in live]}


def rows_and_state(found: list) -> int:
    return max((row.modseq for row in found), default=0)


@method("EmailSubmission/changes", SUBMISSION)
async def changes(ctx, args):
    check_account(ctx, args)
    check_known(args, {"sinceState", "maxChanges"})
    since = since_state(args)
    most = max_changes(args)
    return identity.changes_answer(ctx, await _rows(ctx), since, most, "s")


def _test(item: dict, condition: dict) -> bool:
    """RFC 8621 7.3 FilterCondition."""
    for key, value in condition.items():
        if key == "identityIds" and item["identityId"] not in value:
            return False
        if key == "emailIds" and item["emailId"] not in value:
            return False
        if key == "threadIds" and item["threadId"] not in value:
            return False
        if key == "undoStatus" and item["undoStatus"] != value:
            return False
        if key == "before" and not item["sendAt"] < value:
            return False
        if key == "after" and not item["sendAt"] >= value:
            return False
    return True


def _query_ids(args, found: list) -> list[str]:
    """The ids of the live records among found matching args' filter, in its sort
    order (ties: creation order)."""
    condition = parse_filter(args.get("filter"), FILTERS)
    sort = parse_sort(args.get("sort"), ("emailId", "threadId", "sentAt"))
    items = [(row, as_object(row)) for row in found if not row.destroyed]
    for prop, ascending in reversed(sort):
        column = {"emailId": "email_id", "threadId": "thread_id", "sentAt": "send_at"}[prop]
        items.sort(key=lambda pair, c=column: getattr(pair[0], c), reverse=not ascending)
    return [item["id"] for _row, item in items if matches(condition, lambda c, i=item: _test(i, c))]


@method("EmailSubmission/query", SUBMISSION)
async def query(ctx, args):
    """RFC 8621 7.3. Sort keys and every filtered property but undoStatus never change,
    and any change to a record (destroy included) gives it a new modseq, so
    /queryChanges is exact: canCalculateChanges is true."""
    check_account(ctx, args)
    check_known(args, {"filter", "sort", "position", "anchor", "anchorOffset", "limit", "calculateTotal"})
    position, anchor, offset, limit, total = query_window(args)
    found = await _rows(ctx)
    ids = _query_ids(args, found)
    page, start = window(ids, position, anchor, offset, limit)
    answer = {"accountId": ctx.account_id, "queryState": str(rows_and_state(found)),
              "canCalculateChanges": True, "position": start, "ids": page}
    if total:
        answer["total"] = len(ids)
    if limit is not None:
        answer["limit"] = limit
    return answer


@method("EmailSubmission/queryChanges", SUBMISSION)
async def query_changes(ctx, args):
    """RFC 8621 7.4, RFC 8620 5.6: every record created, changed or destroyed after
    sinceQueryState (its modseq is larger) is removed, and those of them in the
    current results added back at their index; records are never dropped from the
    log (destroyed ones stay as tombstones), so any state this server gave can be
    answered. upToId is accepted and not used (5.6: an optimisation)."""
    from .querychanges import _answer, _since  # the same answer shape and maxChanges rule
    check_account(ctx, args)
    check_known(args, {"filter", "sort", "sinceQueryState", "maxChanges", "upToId", "calculateTotal"})
    old, most = _since(args), max_changes(args)
    if args.get("upToId") is not None and not isinstance(args["upToId"], str):
        raise MethodError("invalidArguments", "upToId must be null or an id")
    found = await _rows(ctx)
    ids = _query_ids(args, found)
    now = rows_and_state(found)
    if not old.isdigit() or len(old) > 18 or int(old) > now:
        raise MethodError("cannotCalculateChanges", "this state was not given by this server")
    changed = [f"s{row.id}" for row in found if row.modseq > int(old)]
    wanted = set(changed)
    added = [{"id": jid, "index": index} for index, jid in enumerate(ids) if jid in wanted]
    return _answer(ctx, args, old, str(now), changed, added, len(ids), most)


# -- sending ---------------------------------------------------------------------------

def _fail(kind: str, description: str, **extra) -> SetError:
    error = SetError(kind, description)
    error.error.update(extra)
    return error


def header_addresses(message: bytes, names: tuple) -> list[str]:
    header, _ = split_header(message)
    found = []
    for name, value in iter_fields(header):
        if name in names:
            text = _WHITESPACE.sub(" ", value.decode("utf-8", "replace"))
            found.extend(address for _name, address in email.utils.getaddresses([text]) if address)
    return found


def without_bcc(message: bytes) -> bytes:
    """The message without its Bcc header fields (RFC 8621 7.5: removed during delivery)."""
    _header, offset = split_header(message)
    return _BCC.sub(b"", message[:offset]) + message[offset:]


def envelope_of(spec, message: bytes, identity_email: str) -> dict:
    """The Envelope given, checked, or the one RFC 8621 7.5 derives from the message:
    mailFrom from Sender, else From, else the Identity; rcptTo from To, Cc and Bcc."""
    if spec is None:
        senders = header_addresses(message, ("sender",)) or header_addresses(message, ("from",))
        rcpts = list(dict.fromkeys(a.lower() for a in header_addresses(message, ("to", "cc", "bcc"))))
        return {"mailFrom": {"email": senders[0] if senders else identity_email, "parameters": None},
                "rcptTo": [{"email": a, "parameters": None} for a in rcpts]}

    def address(value, where):
        if (not isinstance(value, dict) or set(value) - {"email", "parameters"}
                or not isinstance(value.get("email"), str)
                or not isinstance(value.get("parameters"), (dict, type(None)))):
            raise SetError("invalidProperties", f"{where} is an Address (email, parameters)", ["envelope"])
        return {"email": value["email"], "parameters": value.get("parameters")}
    if (not isinstance(spec, dict) or set(spec) != {"mailFrom", "rcptTo"}
            or not isinstance(spec["rcptTo"], list)):
        raise SetError("invalidProperties", "envelope has mailFrom and rcptTo", ["envelope"])
    return {"mailFrom": address(spec["mailFrom"], "mailFrom"),
            "rcptTo": [address(item, "rcptTo") for item in spec["rcptTo"]]}


def _params(parameters, parse, non_ascii: bool = False, eight_bit: bool = False):
    raw = {str(k).upper(): (None if v is None else str(v)) for k, v in (parameters or {}).items()}
    if non_ascii:
        raw.setdefault("SMTPUTF8", None)
    if eight_bit:
        raw.setdefault("BODY", "8BITMIME")
    try:
        return parse(raw)
    except CommandError as exc:
        raise SetError("invalidProperties", f"envelope parameters: {exc.reply.text}", ["envelope"])


async def send(ctx, envelope: dict, message: bytes) -> tuple[str, dict]:
    """Hand the message to delivery as a submission listener would; (queue id,
    deliveryStatus) or SetError."""
    factory = ctx.submitter
    if factory is None:
        raise SetError("forbiddenToSend", "this server has no submission path configured")
    if len(message) > factory.settings.limits.max_message_size:
        raise _fail("tooLarge", "the message is larger than the server accepts",
                    maxSize=factory.settings.limits.max_message_size)
    rcpts = envelope["rcptTo"]
    if not rcpts:
        raise SetError("noRecipients", "the envelope has no recipients")
    if len(rcpts) > factory.settings.limits.max_recipients:
        raise SetError("tooManyRecipients", f"at most {factory.settings.limits.max_recipients} recipients")
    sender = envelope["mailFrom"]["email"]
    non_ascii = not (sender + "".join(r["email"] for r in rcpts)).isascii()
    try:
        sender = parse_path(f"<{sender}>", utf8=True).address
    except ValueError:
        raise SetError("forbiddenMailFrom", f"{sender!r} is not an address")
    params = _params(envelope["mailFrom"]["parameters"], mail_params, non_ascii, not message.isascii())
    session = Session(id=new_id(), mode="submission", remote_ip=ctx.remote_ip or "127.0.0.1", remote_port=0,
                      hostname=factory.hostname, esmtp=True, account=ctx.account)
    reply, transaction = await start_transaction(factory, session, sender, params)
    if transaction is None:
        kind = "forbiddenMailFrom" if reply == replies.SENDER_NOT_OWNED else "forbiddenToSend"
        raise SetError(kind, reply.text)
    invalid = []
    for rcpt in rcpts:
        try:
            path = parse_path(f"<{rcpt['email']}>", utf8=True)
        except ValueError:
            invalid.append(rcpt["email"])
            continue
        answer = await add_recipient(factory, session, transaction, path,
                                     _params(rcpt["parameters"], rcpt_params))
        if not answer.positive:
            invalid.append(rcpt["email"])
    if invalid:
        raise _fail("invalidRecipients", "recipients refused: " + ", ".join(invalid),
                    invalidRecipients=invalid)
    reply = await deliver_message(factory.delivery, session, transaction, message, sent_copy=False)
    if reply.code != 250:
        kind = "forbiddenFrom" if reply == replies.FROM_NOT_OWNED else \
            "invalidEmail" if reply == replies.MESSAGE_TOO_COMPLEX else "forbiddenToSend"
        raise SetError(kind, f"{reply.code} {reply.enhanced} {reply.text}")
    status = {}
    for recipient in transaction.recipients:
        local = bool(recipient.accounts)
        status[recipient.address] = {
            "smtpReply": "250 2.0.0 OK" if local else f"250 2.0.0 queued as {transaction.id}",
            "delivered": "yes" if local else "queued", "displayed": "unknown"}
    return transaction.id, status


async def create_one(ctx, spec, identities: dict, allowed: frozenset) -> dict:
    if not isinstance(spec, dict):
        raise SetError("invalidProperties", "an EmailSubmission creation is an object")
    unknown = sorted(set(spec) - {"identityId", "emailId", "envelope"})
    if unknown:
        raise SetError("invalidProperties", f"{unknown[0]} cannot be set", unknown)
    identity_id = resolve_creation(ctx, spec.get("identityId"))
    if identity_id not in identities:
        raise SetError("invalidProperties", "identityId names no Identity of this account", ["identityId"])
    email_id = resolve_creation(ctx, spec.get("emailId"))
    number = parse_id(email_id, "e")
    try:
        message = await ctx.store.read_message(ctx.account, number) if number is not None else None
    except StoreError:
        message = None
    if message is None:
        raise SetError("invalidProperties", "emailId names no Email of this account", ["emailId"])
    from_addresses = header_addresses(message, ("from",))
    if not from_addresses or not all(owns_address(allowed, a) for a in from_addresses):
        raise SetError("forbiddenFrom", "the From: header holds an address this account may not send from")
    envelope = envelope_of(spec.get("envelope"), message, identities[identity_id]["email"])
    queue_id, status = await send(ctx, envelope, without_bcc(message))
    now = ctx.reactor.seconds() if ctx.reactor is not None else 0.0
    row_id = await ctx.store.run_write(rows_.record, _engine(ctx), ctx.account.id, int(identity_id[1:]),
                                       number, number, envelope, now, status, queue_id)
    return {"id": f"s{row_id}", "threadId": await thread_id_of(ctx, number), "sendAt": utc_date(now),
            "undoStatus": "final",
            "deliveryStatus": status, "emailId": email_id}


def _on_success(ctx, args, done: dict) -> dict | None:
    """The Email/set arguments of onSuccessUpdateEmail / onSuccessDestroyEmail for the
    submissions that succeeded (done: submission id or "#cid" -> emailId)."""
    update, destroy = args.get("onSuccessUpdateEmail"), args.get("onSuccessDestroyEmail")
    if update is None and destroy is None:
        return None
    emails_update, emails_destroy = {}, []
    for key, patch in (update or {}).items():
        if key in done:
            emails_update[done[key]] = patch
    for key in destroy or []:
        if key in done:
            emails_destroy.append(done[key])
    return {"accountId": ctx.account_id, "update": emails_update, "destroy": emails_destroy}


@method("EmailSubmission/set", SUBMISSION)
async def set_submissions(ctx, args):
    check_account(ctx, args)
    check_known(args, {"ifInState", "create", "update", "destroy", "onSuccessUpdateEmail",
                       "onSuccessDestroyEmail"})
    create, update, destroy = args.get("create") or {}, args.get("update") or {}, args.get("destroy") or []
    if (not isinstance(create, dict) or not isinstance(update, dict) or not isinstance(destroy, list)
            or not all(isinstance(i, str) for i in destroy)
            or not isinstance(args.get("onSuccessUpdateEmail") or {}, dict)
            or not all(isinstance(v, dict) for v in (args.get("onSuccessUpdateEmail") or {}).values())
            or not isinstance(args.get("onSuccessDestroyEmail") or [], list)
            or not all(isinstance(i, str) for i in args.get("onSuccessDestroyEmail") or [])):
        raise MethodError("invalidArguments", "create and update map ids to objects; destroy is a list; "
                          "onSuccessUpdateEmail maps ids to patches, onSuccessDestroyEmail lists ids")
    if len(create) + len(update) + len(destroy) > ctx.limits["maxObjectsInSet"]:
        raise MethodError("requestTooLarge", f"more than {ctx.limits['maxObjectsInSet']} objects")
    found = await _rows(ctx)
    old = str(rows_and_state(found))
    check_if_in_state(args, old)
    answer = {"accountId": ctx.account_id, "oldState": old, "created": {}, "updated": {}, "destroyed": [],
              "notCreated": {}, "notUpdated": {}, "notDestroyed": {}}
    done: dict[str, str] = {}  # "#cid" or submission id -> emailId, for onSuccess...
    if create:
        rows, allowed = await identity.current_rows(ctx)
        identities = {f"i{row.id}": {"email": row.email} for row in rows if not row.destroyed}
        for cid, spec in create.items():
            try:
                created = await create_one(ctx, spec, identities, allowed)
            except SetError as exc:
                answer["notCreated"][cid] = exc.error
                continue
            done["#" + cid] = done[created["id"]] = created.pop("emailId")
            answer["created"][cid] = created
            ctx.created_ids[cid] = created["id"]
    live = {f"s{row.id}": row for row in await _rows(ctx) if not row.destroyed}
    for jid, patch in update.items():
        sid = resolve_creation(ctx, jid)
        if sid not in live:
            answer["notUpdated"][jid] = {"type": "notFound"}
        elif not isinstance(patch, dict) or set(patch) - {"undoStatus"}:
            answer["notUpdated"][jid] = {"type": "invalidProperties", "properties": ["undoStatus"],
                                         "description": "only undoStatus may change"}
        elif patch.get("undoStatus") == "canceled":
            answer["notUpdated"][jid] = {"type": "cannotUnsend",
                                         "description": "the message was sent at once (undoStatus final)"}
        elif patch.get("undoStatus") == "final":
            answer["updated"][jid] = None
            done[jid] = f"e{live[sid].email_id}"
        else:
            answer["notUpdated"][jid] = {"type": "invalidProperties", "properties": ["undoStatus"]}
    wanted = {jid: parse_id(resolve_creation(ctx, jid), "s") for jid in destroy}
    gone = await ctx.store.run_write(rows_.destroy, _engine(ctx), ctx.account.id,
                                     [n for n in wanted.values() if n is not None]) if wanted else []
    for jid, number in wanted.items():
        if number in gone:
            answer["destroyed"].append(jid)
            done[jid] = f"e{live[f's{number}'].email_id}"
        else:
            answer["notDestroyed"][jid] = {"type": "notFound"}
    answer["newState"] = str(rows_and_state(await _rows(ctx)))
    for key in ("created", "updated", "destroyed", "notCreated", "notUpdated", "notDestroyed"):
        if not answer[key]:
            answer[key] = None
    follow = _on_success(ctx, args, done)
    if follow is not None:
        ctx.implicit.append(("Email/set", await set_emails(ctx, follow)))
    return answer
