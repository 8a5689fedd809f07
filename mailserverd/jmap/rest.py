"""The /v1 REST API (../shared/INTERFACE.md "HTTP"): a plain-JSON face of the
JMAP methods, for scripts that do not speak JMAP.

Every route runs JMAP methods (Mailbox/get, Email/query, Email/get, Email/set,
Identity/get, EmailSubmission/set) through api.run_call with the caller's
Context, so the rules, limits and errors are JMAP's; nothing here touches the
store. Authentication is the JMAP resource's (Basic or Bearer). Errors are
{"type", "detail"} with an HTTP status; ids are the JMAP ids ("m3", "e42").

    POST   /v1/messages                send: to, cc, bcc, subject, text, html, attachments
    GET    /v1/folders                 every folder with its counts
    GET    /v1/folders/{id}/messages   ?limit=&page_token=&is_read=  newest first
    GET    /v1/messages/{id}           one message with its text, HTML and attachments
    PATCH  /v1/messages/{id}           {"is_read", "is_flagged", "folder_id" (move), "folder_ids"}
    DELETE /v1/messages/{id}            to Trash; from Trash, for good
    GET    /v1/search?q=               words, from:, to:, cc:, bcc:, subject:, body:, is:unread|read|flagged,
                                       in:FOLDER, has:attachment, before:/after:YYYY-MM-DD
    GET    /v1/openapi.json            this API as OpenAPI 3.0
"""

from __future__ import annotations

import json
import re
import shlex

from . import api
from .api import MethodError

MAX_LIMIT, DEFAULT_LIMIT = 500, 50
SUMMARY = ["id", "threadId", "mailboxIds", "keywords", "size", "receivedAt", "subject", "from", "to",
           "cc", "preview", "hasAttachment"]
FULL = SUMMARY + ["bcc", "replyTo", "sentAt", "messageId", "inReplyTo", "textBody", "htmlBody",
                  "attachments", "bodyValues"]
_MESSAGE = re.compile(rb"^/v1/messages/([A-Za-z0-9_-]{1,40})$")
_FOLDER_MESSAGES = re.compile(rb"^/v1/folders/([A-Za-z0-9_-]{1,40})/messages$")
_PAGE = re.compile(r"^p(\d{1,15})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# SetError and method error types that are the caller's fault but not a bad request
# the routes with their methods; openapi.py documents exactly these (tests/unit/test_rest_openapi.py)
ROUTES = {"/v1/messages": ("POST",), "/v1/folders": ("GET", "HEAD"),
          "/v1/folders/{id}/messages": ("GET", "HEAD"),
          "/v1/messages/{id}": ("GET", "HEAD", "PATCH", "DELETE"), "/v1/search": ("GET", "HEAD")}
SEND_FIELDS = ("from", "to", "cc", "bcc", "subject", "text", "html", "attachments", "in_reply_to")
PATCH_FIELDS = ("is_read", "is_flagged", "folder_id", "folder_ids")
_STATUS = {"notFound": 404, "forbiddenFrom": 403, "forbiddenMailFrom": 403, "forbiddenToSend": 403,
           "forbidden": 403, "tooLarge": 413, "overQuota": 507, "requestTooLarge": 413}


class RestError(Exception):
    def __init__(self, status: int, kind: str, detail: str, **extra):
        super().__init__(detail)
        self.status, self.kind, self.detail, self.extra = status, kind, detail, extra


def _from_set_error(error: dict, what: str) -> RestError:
    extra = {k: v for k, v in error.items() if k not in ("type", "description")}
    return RestError(_STATUS.get(error["type"], 400), error["type"], error.get("description") or what,
                     **extra)


async def call(ctx, name: str, args: dict) -> dict:
    """One JMAP method for the account; a method error becomes a RestError."""
    ctx.using = frozenset(api.CAPABILITIES)
    try:
        _name, result = await api.run_call(ctx, name, dict(args, accountId=ctx.account_id), [])
    except MethodError as exc:
        raise RestError(_STATUS.get(exc.kind, 400), exc.kind, exc.description or exc.kind)
    return result


# -- shapes ----------------------------------------------------------------------------

def _addresses(value) -> list:
    return [{"name": a.get("name"), "email": a.get("email")} for a in value or []]


def summary(email: dict) -> dict:
    """from is the first From address ({name, email}) or null; folder_id the message's folder
    (the first of folder_ids when it is in several)."""
    keywords = email.get("keywords") or {}
    folder_ids = sorted(email.get("mailboxIds") or {})
    return {"id": email["id"], "thread_id": email.get("threadId"),
            "folder_id": folder_ids[0] if folder_ids else None,
            "folder_ids": folder_ids, "is_read": "$seen" in keywords,
            "is_flagged": "$flagged" in keywords, "is_draft": "$draft" in keywords,
            "subject": email.get("subject"), "from": (_addresses(email.get("from")) or [None])[0],
            "to": _addresses(email.get("to")), "cc": _addresses(email.get("cc")),
            "received_at": email.get("receivedAt"), "size": email.get("size"),
            "preview": email.get("preview"), "has_attachment": bool(email.get("hasAttachment"))}


def full(email: dict, account_id: str) -> dict:
    out = summary(email)
    values = email.get("bodyValues") or {}

    def text_of(parts, kind):
        found = [values[p["partId"]]["value"] for p in parts or [] if p.get("type") == kind
                 and p.get("partId") in values]
        return "".join(found) if found else None
    out.update(user_id=account_id, bcc=_addresses(email.get("bcc")),
               reply_to=_addresses(email.get("replyTo")),
               sent_at=email.get("sentAt"), message_id=(email.get("messageId") or [None])[0],
               in_reply_to=email.get("inReplyTo"),
               text=text_of(email.get("textBody"), "text/plain"),
               body=text_of(email.get("textBody"), "text/plain"),
               html=text_of(email.get("htmlBody"), "text/html"),
               attachments=[{"blob_id": a.get("blobId"), "name": a.get("name"), "type": a.get("type"),
                             "size": a.get("size"),
                             "download_path": f"/jmap/download/{account_id}/{a.get('blobId')}/"
                                              f"{a.get('name') or 'attachment'}?type={a.get('type')}"}
                            for a in email.get("attachments") or []])
    return out


def folder(box: dict) -> dict:
    return {"id": box["id"], "name": box["name"], "parent_id": box["parentId"], "role": box["role"],
            "total": box["totalEmails"], "unread": box["unreadEmails"]}


# -- routes ----------------------------------------------------------------------------

def _query_arg(request, name: str) -> str | None:
    values = request.args.get(name.encode())
    return None if not values else values[0].decode("utf-8", "replace")


def _window(request) -> tuple[int, int]:
    limit = _query_arg(request, "limit")
    if limit is None:
        limit = DEFAULT_LIMIT
    elif not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
        raise RestError(400, "invalidArguments", f"limit is an integer from 1 to {MAX_LIMIT}")
    token = _query_arg(request, "page_token")
    if token is not None and not _PAGE.match(token):
        raise RestError(400, "invalidArguments", "page_token is a next_page_token this API gave")
    return int(limit), int(token[1:]) if token else 0


async def _page(ctx, condition, limit: int, position: int) -> dict:
    found = await call(ctx, "Email/query", {"filter": condition, "position": position, "limit": limit,
                                            "sort": [{"property": "receivedAt", "isAscending": False}],
                                            "calculateTotal": True})
    emails = await call(ctx, "Email/get", {"ids": found["ids"], "properties": SUMMARY}) if found["ids"] \
        else {"list": []}
    end = found["position"] + len(found["ids"])
    return {"messages": [summary(e) for e in emails["list"]], "total": found["total"],
            "next_page_token": f"p{end}" if end < found["total"] else None}


async def folders(ctx, request) -> tuple[int, dict]:
    boxes = await call(ctx, "Mailbox/get", {"ids": None})
    return 200, {"folders": [folder(b) for b in boxes["list"]]}


async def folder_messages(ctx, request, folder_id: str) -> tuple[int, dict]:
    boxes = await call(ctx, "Mailbox/get", {"ids": [folder_id], "properties": ["id"]})
    if not boxes["list"]:
        raise RestError(404, "notFound", "no such folder")
    limit, position = _window(request)
    condition = {"inMailbox": folder_id}
    is_read = _query_arg(request, "is_read")
    if is_read is not None:
        if is_read not in ("true", "false"):
            raise RestError(400, "invalidArguments", "is_read is true or false")
        condition["hasKeyword" if is_read == "true" else "notKeyword"] = "$seen"
    return 200, await _page(ctx, condition, limit, position)


async def get_message(ctx, message_id: str) -> tuple[int, dict]:
    found = await call(ctx, "Email/get", {"ids": [message_id], "properties": FULL,
                                          "fetchTextBodyValues": True, "fetchHTMLBodyValues": True})
    if not found["list"]:
        raise RestError(404, "notFound", "no such message")
    return 200, full(found["list"][0], ctx.account_id)


def _set_outcome(result: dict, key: str, message_id: str) -> None:
    for failed in ("notUpdated", "notDestroyed", "notCreated"):
        error = (result.get(failed) or {}).get(key)
        if error is not None:
            raise _from_set_error(error, f"the message {message_id} was not changed")


async def patch_message(ctx, message_id: str, body) -> tuple[int, dict]:
    if (not isinstance(body, dict) or not body
            or set(body) - set(PATCH_FIELDS)):
        raise RestError(400, "invalidArguments", "a PATCH holds is_read, is_flagged, folder_id or folder_ids")
    if "folder_id" in body and "folder_ids" in body:
        raise RestError(400, "invalidArguments", "folder_id (a move) or folder_ids, not both")
    patch = {}
    for name, keyword in (("is_read", "$seen"), ("is_flagged", "$flagged")):
        if name in body:
            if not isinstance(body[name], bool):
                raise RestError(400, "invalidArguments", f"{name} is true or false")
            patch[f"keywords/{keyword}"] = True if body[name] else None
    targets = [body["folder_id"]] if "folder_id" in body else body.get("folder_ids")
    if targets is not None:
        if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
            raise RestError(400, "invalidArguments", "folder_id is a folder id; folder_ids a non-empty list")
        patch["mailboxIds"] = {t: True for t in targets}
    result = await call(ctx, "Email/set", {"update": {message_id: patch}})
    _set_outcome(result, message_id, message_id)
    return await get_message(ctx, message_id)


async def delete_message(ctx, message_id: str) -> tuple[int, dict | None]:
    """A message outside Trash moves to Trash; one in Trash (or an account without
    one) is destroyed for good."""
    found = await call(ctx, "Email/get", {"ids": [message_id], "properties": ["mailboxIds"]})
    if not found["list"]:
        raise RestError(404, "notFound", "no such message")
    boxes = (await call(ctx, "Mailbox/get", {"ids": None, "properties": ["role"]}))["list"]
    trash = next((b["id"] for b in boxes if b["role"] == "trash"), None)
    if trash is None or trash in found["list"][0]["mailboxIds"]:
        result = await call(ctx, "Email/set", {"destroy": [message_id]})
    else:
        result = await call(ctx, "Email/set", {"update": {message_id: {"mailboxIds": {trash: True}}}})
    _set_outcome(result, message_id, message_id)
    return 204, None


def parse_search(q: str) -> dict | None:
    """A JMAP Email/query filter (RFC 8621 4.4.1) of a search string."""
    try:
        words = shlex.split(q)
    except ValueError:
        raise RestError(400, "invalidArguments", "q has an unbalanced quote")
    conditions = []
    for word in words:
        key, sep, value = word.partition(":")
        key = key.lower()
        if sep and key in ("from", "to", "cc", "bcc", "subject", "body") and value:
            conditions.append({key: value})
        elif sep and key == "is" and value.lower() in ("unread", "read", "flagged", "unflagged"):
            value = value.lower()
            keyword = "$flagged" if value.endswith("flagged") else "$seen"
            present = value in ("read", "flagged")
            conditions.append({"hasKeyword" if present else "notKeyword": keyword})
        elif sep and key == "in" and value:
            conditions.append({"inMailbox": value})
        elif sep and key == "has" and value.lower() == "attachment":
            conditions.append({"hasAttachment": True})
        elif sep and key in ("before", "after") and _DATE.match(value):
            conditions.append({key: f"{value}T00:00:00Z"})
        else:
            conditions.append({"text": word})
    if not conditions:
        return None
    return conditions[0] if len(conditions) == 1 else {"operator": "AND", "conditions": conditions}


async def search(ctx, request) -> tuple[int, dict]:
    q = _query_arg(request, "q")
    if q is None:
        raise RestError(400, "invalidArguments", "q is required")
    condition = parse_search(q)
    if condition is not None:
        await _resolve_folders(ctx, condition)
    limit, position = _window(request)
    return 200, await _page(ctx, condition, limit, position)


async def _resolve_folders(ctx, condition) -> None:
    """in:NAME takes a folder id, a role (inbox, sent, ...) or a folder name."""
    items = condition["conditions"] if "operator" in condition else [condition]
    wanted = [c for c in items if "inMailbox" in c]
    if not wanted:
        return
    boxes = (await call(ctx, "Mailbox/get", {"ids": None}))["list"]
    for item in wanted:
        value = item["inMailbox"]
        match = next((b["id"] for b in boxes
                      if value in (b["id"], b["role"]) or value.lower() == b["name"].lower()), None)
        if match is None:
            raise RestError(400, "invalidArguments", f"in:{value} names no folder")
        item["inMailbox"] = match


def _recipients(body: dict, name: str) -> list:
    value = body.get(name) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise RestError(400, "invalidArguments", f"{name} is an address or a list of them")
    out = []
    for item in value:
        if isinstance(item, str):
            out.append({"name": None, "email": item})
        elif isinstance(item, dict) and isinstance(item.get("email"), str):
            out.append({"name": item.get("name"), "email": item["email"]})
        else:
            raise RestError(400, "invalidArguments", f"{name} holds addresses or {{name, email}} objects")
    return out


async def send_message(ctx, body) -> tuple[int, dict]:
    """A draft (Email/set) sent by EmailSubmission/set, moved to Sent on success; a
    refused submission leaves no draft behind."""
    if not isinstance(body, dict):
        raise RestError(400, "invalidArguments", "the body is a JSON object")
    unknown = sorted(set(body) - set(SEND_FIELDS))
    if unknown:
        raise RestError(400, "invalidArguments", f"unknown field {unknown[0]}")
    to, cc, bcc = (_recipients(body, n) for n in ("to", "cc", "bcc"))
    if not (to or cc or bcc):
        raise RestError(400, "noRecipients", "give at least one of to, cc and bcc")
    identities = (await call(ctx, "Identity/get", {"ids": None}))["list"]
    sender = body.get("from") or ctx.account.address
    if not isinstance(sender, str):
        raise RestError(400, "invalidArguments", "from is an address")
    identity = next((i for i in identities if i["email"].lower() == sender.lower()), None)
    if identity is None:
        raise RestError(403, "forbiddenFrom", f"this account may not send from {sender}")
    roles = {b["role"]: b["id"] for b in (await call(ctx, "Mailbox/get", {"ids": None}))["list"] if b["role"]}
    spec = {"mailboxIds": {roles["drafts"]: True}, "keywords": {"$draft": True, "$seen": True},
            "from": [{"name": identity["name"] or None, "email": identity["email"]}],
            "subject": body.get("subject") or "", "bodyValues": {}}
    for name, value in (("to", to), ("cc", cc), ("bcc", bcc)):
        if value:
            spec[name] = value
    for part, kind, key in (("1", "text/plain", "text"), ("2", "text/html", "html")):
        if body.get(key) is not None:
            spec["bodyValues"][part] = {"value": body[key]}
            spec["textBody" if key == "text" else "htmlBody"] = [{"partId": part, "type": kind}]
    if body.get("attachments"):
        attachments = body["attachments"]
        if not isinstance(attachments, list) or not all(
                isinstance(a, dict) and isinstance(a.get("blob_id"), str) for a in attachments):
            raise RestError(400, "invalidArguments", "attachments are {blob_id, name, type} objects")
        spec["attachments"] = [{"blobId": a["blob_id"], "name": a.get("name"), "type": a.get("type")}
                               for a in attachments]
    if body.get("in_reply_to"):
        spec["inReplyTo"] = [str(body["in_reply_to"]).strip("<>")]
    created = await call(ctx, "Email/set", {"create": {"draft": spec}})
    _set_outcome(created, "draft", "new")
    email_id = created["created"]["draft"]["id"]
    sent = await call(ctx, "EmailSubmission/set", {
        "create": {"send": {"identityId": identity["id"], "emailId": email_id}},
        "onSuccessUpdateEmail": {"#send": {f"mailboxIds/{roles['drafts']}": None,
                                           f"mailboxIds/{roles['sent']}": True, "keywords/$draft": None}}})
    error = (sent.get("notCreated") or {}).get("send")
    if error is not None:
        await call(ctx, "Email/set", {"destroy": [email_id]})
        raise _from_set_error(error, "the message was not sent")
    submission = sent["created"]["send"]
    return 201, {"id": email_id, "submission_id": submission["id"], "sent_at": submission["sendAt"],
                 "delivery_status": {address: status["delivered"]
                                     for address, status in submission["deliveryStatus"].items()}}


async def route(ctx, request, read_body) -> tuple[int, dict | None]:
    """(status, JSON answer) of one /v1 request; RestError for a refusal."""
    path, method = request.path, request.method
    if path == b"/v1/messages":
        _allow(method, "/v1/messages")
        return await send_message(ctx, _json_body(request, read_body))
    if path == b"/v1/folders":
        _allow(method, "/v1/folders")
        return await folders(ctx, request)
    if path == b"/v1/search":
        _allow(method, "/v1/search")
        return await search(ctx, request)
    match = _FOLDER_MESSAGES.match(path)
    if match:
        _allow(method, "/v1/folders/{id}/messages")
        return await folder_messages(ctx, request, match.group(1).decode())
    match = _MESSAGE.match(path)
    if match:
        _allow(method, "/v1/messages/{id}")
        message_id = match.group(1).decode()
        if method == b"PATCH":
            return await patch_message(ctx, message_id, _json_body(request, read_body))
        if method == b"DELETE":
            return await delete_message(ctx, message_id)
        return await get_message(ctx, message_id)
    raise RestError(404, "notFound", "no resource at this path")


def _allow(method: bytes, route: str) -> None:
    methods = ROUTES[route]
    if method.decode("latin-1") not in methods:
        raise RestError(405, "methodNotAllowed", "allowed: " + ", ".join(methods), allow=", ".join(methods))


def _json_body(request, read_body):
    """The request's JSON body; only under Content-Type application/json, as /jmap/api: an
    HTML form can send text/plain that parses as JSON, and a browser attaches cached Basic
    credentials to another site's form POST (CSRF), but never sends application/json
    across origins without a CORS preflight."""
    content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if content_type != b"application/json":
        raise RestError(400, "notJSON", "the content type must be application/json")
    return _json(read_body())


def _json(body: bytes):
    try:
        return api.parse_json(body)
    except api.RequestError:
        raise RestError(400, "notJSON", "the body is not I-JSON (UTF-8, valid JSON, no duplicate keys)")


def dumps(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"
