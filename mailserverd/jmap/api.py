"""The JMAP API request (RFC 8620 3): parsing, limits, method dispatch and
result references.

process() takes the raw POST body and answers with (status, JSON object):
a Response (3.4) or a request-level problem details object (3.6.1, RFC
7807). Each method call runs in order; a method's failure is a method-level
error response (3.6.2) and the next call still runs.
"""

from __future__ import annotations

import dataclasses
import json

from twisted.internet import defer
from twisted.logger import Logger

from ..store.api import Account

log = Logger(namespace="mailserverd.jmap")

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
QUOTA = "urn:ietf:params:jmap:quota"  # RFC 9425 (quota.py)
SUBMISSION = "urn:ietf:params:jmap:submission"  # RFC 8621 1.3.2 (identity.py, submission.py)
VACATION = "urn:ietf:params:jmap:vacationresponse"  # RFC 8621 1.3.3 (vacation.py)
WEBSOCKET = "urn:ietf:params:jmap:websocket"  # RFC 8887 (websocket.py); no methods of its own
CAPABILITIES = (CORE, MAIL, QUOTA, SUBMISSION, VACATION, WEBSOCKET)
ERROR_PREFIX = "urn:ietf:params:jmap:error:"

# RFC 8620 2: the limits of urn:ietf:params:jmap:core, all enforced here or in web.py.
LIMITS = {
    "maxSizeUpload": 25 * 1024 * 1024,  # replaced by [limits] max_message_size
    "maxConcurrentUpload": 4,
    "maxSizeRequest": 10 * 1024 * 1024,
    "maxConcurrentRequests": 64,  # accepted at once; RUNNING_PER_ACCOUNT of them run, the rest wait
    "maxCallsInRequest": 32,
    "maxObjectsInGet": 1000,
    "maxObjectsInSet": 500,
    "collationAlgorithms": ["i;unicode-casemap"],
}


RUNNING_PER_ACCOUNT = 8  # API requests of one account processed at once (the store has 8 read threads)


class MethodError(Exception):
    """A method-level error (RFC 8620 3.6.2); extra keys go into the response."""

    def __init__(self, kind: str, description: str | None = None, **extra):
        super().__init__(kind)
        self.kind = kind
        self.description = description
        self.extra = extra

    def arguments(self) -> dict:
        body = {"type": self.kind}
        if self.description:
            body["description"] = self.description
        body.update(self.extra)
        return body


class RequestError(Exception):
    """A request-level error (RFC 8620 3.6.1): problem details, status 400 unless said."""

    def __init__(self, kind: str, detail: str, status: int = 400, **extra):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status
        self.extra = extra

    def problem(self) -> dict:
        body = {"type": ERROR_PREFIX + self.kind, "status": self.status, "detail": self.detail}
        body.update(self.extra)
        return body


@dataclasses.dataclass
class Context:
    """What a method handler sees: the authenticated account and the store."""

    account: Account
    store: object  # AsyncStore
    limits: dict
    using: frozenset = frozenset()
    created_ids: dict = dataclasses.field(default_factory=dict)  # creation id -> id (RFC 8620 5.3)
    reactor: object = None
    uploads: object = None  # blobs.Uploads, for Email/import
    states: dict | None = None  # state strings read earlier in this request (state.current)
    submitter: object = None  # smtp.server.SMTPFactory in submission mode (EmailSubmission sends through it)
    remote_ip: str = ""  # the HTTP client, for Received and the logs of a submission
    implicit: list = dataclasses.field(default_factory=list)  # (name, arguments) answered after a call (7.5)
    call_id: str = ""  # of the call running now
    call_index: int = 0  # its place in methodCalls
    next_call: list | None = None  # the [name, arguments, call id] after it, for a read-ahead (email.py)
    prefetched: tuple | None = None  # (call index, ...) read ahead by that call for the next one only

    @property
    def account_id(self) -> str:
        return account_id_of(self.account)


def account_id_of(account: Account) -> str:
    return f"a{account.id}"


# method name -> (capability, async handler(ctx, args) -> dict)
METHODS: dict[str, tuple[str, object]] = {}


def method(name: str, capability: str = MAIL):
    def register(fn):
        METHODS[name] = (capability, fn)
        return fn
    return register


def _no_duplicates(pairs):
    keys = set()
    for key, _value in pairs:
        if key in keys:
            raise ValueError(f"duplicate key {key!r}")
        keys.add(key)
    return dict(pairs)


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("a number too large for I-JSON")
    return value


def _no_lone_surrogates(value) -> None:
    """A lone surrogate escape (\\ud800) parses to a str that is not Unicode text (I-JSON 2.1)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")  # UnicodeEncodeError (a ValueError) on a lone surrogate
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def parse_json(body: bytes):
    """I-JSON (RFC 7493): UTF-8, no duplicate keys, finite numbers (Python's parser
    would take NaN, Infinity and 1e999); anything else is notJSON."""
    try:
        text = body.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                           parse_float=_finite)
        _no_lone_surrogates(value)
        return value
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RequestError("notJSON", "the request body is not I-JSON (UTF-8, valid JSON, no duplicate keys)")


def parse_request(body, limits: dict) -> dict:
    """The Request object (RFC 8620 3.3), checked; RequestError otherwise. body is the
    raw octets, or a JSON value already parsed (a WebSocket message, RFC 8887 4.3.1)."""
    request = parse_json(body) if isinstance(body, (bytes, bytearray)) else body
    if not isinstance(request, dict):
        raise RequestError("notRequest", "the request is not a JSON object")
    using, calls = request.get("using"), request.get("methodCalls")
    if not isinstance(using, list) or not all(isinstance(u, str) for u in using):
        raise RequestError("notRequest", "using must be an array of capability strings")
    if not isinstance(calls, list):
        raise RequestError("notRequest", "methodCalls must be an array")
    for call in calls:
        if (not isinstance(call, list) or len(call) != 3 or not isinstance(call[0], str)
                or not isinstance(call[1], dict) or not isinstance(call[2], str)):
            raise RequestError("notRequest", "each method call is [name, arguments object, call id]")
    created = request.get("createdIds")
    if created is not None and (not isinstance(created, dict)
                                or not all(isinstance(v, str) for v in created.values())):
        raise RequestError("notRequest", "createdIds must map creation ids to ids")
    unknown = [u for u in using if u not in CAPABILITIES]
    if unknown:
        raise RequestError("unknownCapability", f"unknown capability: {unknown[0]}")
    if len(calls) > limits["maxCallsInRequest"]:
        raise RequestError("limit", f"more than {limits['maxCallsInRequest']} method calls",
                           limit="maxCallsInRequest")
    return request


# -- result references (RFC 8620 3.7) -------------------------------------------------

class _BadReference(Exception):
    pass


def evaluate_pointer(value, path: str):
    """A JSON Pointer (RFC 6901) with the "*" extension of RFC 8620 3.7."""
    if path == "":
        return value
    if not path.startswith("/"):
        raise _BadReference("a path starts with /")
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]
    return _walk(value, tokens)


def _walk(value, tokens):
    if not tokens:
        return value
    token, rest = tokens[0], tokens[1:]
    if isinstance(value, list):
        if token == "*":
            out = []
            for item in value:
                found = _walk(item, rest)
                out.extend(found) if isinstance(found, list) else out.append(found)
            return out
        if not token.isdigit() or (len(token) > 1 and token[0] == "0") or int(token) >= len(value):
            raise _BadReference(f"no item {token!r}")
        return _walk(value[int(token)], rest)
    if isinstance(value, dict):
        if token not in value:
            raise _BadReference(f"no member {token!r}")
        return _walk(value[token], rest)
    raise _BadReference(f"cannot descend into {type(value).__name__} with {token!r}")


def resolve_references(args: dict, responses: list) -> dict:
    """Arguments with every "#name" replaced by the value its ResultReference points at."""
    resolved = {}
    for key, value in args.items():
        if not key.startswith("#"):
            continue
        plain = key[1:]
        if plain in args:
            raise MethodError("invalidArguments", f"both {plain} and #{plain} given")
        if (not isinstance(value, dict) or set(value) != {"resultOf", "name", "path"}
                or not all(isinstance(value[k], str) for k in value)):
            raise MethodError("invalidResultReference", f"#{plain} is not a ResultReference")
        for name, result, call_id in responses:
            if call_id == value["resultOf"]:
                break
        else:
            raise MethodError("invalidResultReference", f"no response with call id {value['resultOf']!r}")
        if name != value["name"]:
            raise MethodError("invalidResultReference",
                              f"the response of {value['resultOf']!r} is {name}, not {value['name']}")
        try:
            resolved[plain] = evaluate_pointer(result, value["path"])
        except _BadReference as exc:
            raise MethodError("invalidResultReference", f"path {value['path']!r}: {exc}")
    if not resolved:
        return args
    out = {k: v for k, v in args.items() if not k.startswith("#")}
    out.update(resolved)
    return out


# -- dispatch --------------------------------------------------------------------------

async def run_call(ctx: Context, name: str, args: dict, responses: list) -> tuple[str, dict]:
    entry = METHODS.get(name)
    if entry is None or entry[0] not in ctx.using:
        raise MethodError("unknownMethod", f"unknown method {name}" if entry is None
                          else f"{name} needs {entry[0]} in using")
    args = resolve_references(args, responses)
    result = await entry[1](ctx, args)
    return name, result


async def process(ctx: Context, body, session_state: str) -> tuple[int, dict]:
    """(HTTP status, JSON object) for one API request (body: as for parse_request)."""
    try:
        request = parse_request(body, ctx.limits)
    except RequestError as exc:
        return exc.status, exc.problem()
    ctx.using = frozenset(request["using"]) | {CORE}
    created = request.get("createdIds")
    if created is not None:
        ctx.created_ids.update(created)
    responses: list = []
    calls = request["methodCalls"]
    for index, (name, args, call_id) in enumerate(calls):
        ctx.call_id, ctx.call_index = call_id, index
        ctx.next_call = calls[index + 1] if index + 1 < len(calls) else None
        if ctx.prefetched is not None and ctx.prefetched[0] != index - 1:
            ctx.prefetched = None  # a read-ahead serves the call right after the one that made it
        try:
            name, result = await run_call(ctx, name, args, responses)
            responses.append([name, result, call_id])
            # RFC 8621 7.5: e.g. EmailSubmission/set's implicit Email/set, with the same call id
            responses.extend([extra, arguments, call_id] for extra, arguments in ctx.implicit)
        except MethodError as exc:
            responses.append(["error", exc.arguments(), call_id])
        except Exception:
            log.failure("jmap: {method} failed", method=name)
            responses.append(["error", {"type": "serverFail",
                                        "description": "the server failed; the error is logged"}, call_id])
        finally:
            ctx.implicit.clear()
    answer = {"methodResponses": responses, "sessionState": session_state}
    if created is not None:
        answer["createdIds"] = ctx.created_ids
    return 200, answer


def process_deferred(ctx: Context, body: bytes, session_state: str) -> defer.Deferred:
    return defer.ensureDeferred(process(ctx, body, session_state))
