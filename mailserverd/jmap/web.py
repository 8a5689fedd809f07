"""JMAP over HTTP: routing, HTTP Basic authentication, concurrency limits
and JSON answers (RFC 8620 2, 3.1, 6, 7.3).

Authentication is HTTP Basic (RFC 7617) with the account's address and
password, through the same Authenticator as IMAP (twisted.cred portal,
cache, failure penalty and the "auth failed: ... proto=http" log line that
fail2ban reads), or a Bearer token (RFC 6750) from `mailserverctl token
create`, whose failures pay the same penalty. As with IMAP LOGIN, a
credential is only accepted over TLS or from loopback (a local reverse proxy).
A verified Basic header is reused for LOGIN_TTL seconds from the same IP
(HTTP sends it with every request; IMAP logs in once per session), until
the Authenticator forgets its cache after an admin change. Every error is JSON with a type and
a detail; API request errors are RFC 7807 problem details (RFC 8620 3.6.1).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import re
import time
from collections import defaultdict

try:
    import orjson  # setup.cfg install_requires; the json module below when it is missing
except ImportError:  # pragma: no cover
    orjson = None

from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.web import server

from ..auth import AuthFailed, plaintext_allowed
from ..store import tokens
from . import (api, blobs, core, email, emailimport, identity, mailbox,  # noqa: F401  (methods
               querychanges, quota, session, snippet, submission, thread,  # noqa: F401  register themselves)
               vacation)  # noqa: F401
from . import browser, openapi, pushguard, rest
from .eventsource import EventSource

log = Logger(namespace="mailserverd.jmap")
auth_log = Logger(namespace="mailserverd.auth")  # the failure line fail2ban reads, as for passwords

JSON = b"application/json"
PROBLEM = b"application/problem+json"
REALM = b'Basic realm="mailserverd", charset="UTF-8", Bearer realm="mailserverd"'
_DOWNLOAD = re.compile(rb"^/jmap/download/([^/]+)/([^/]+)/([^/]*)$")
_UPLOAD = re.compile(rb"^/jmap/upload/([^/]+)/?$")
LOGIN_TTL = 60.0  # seconds a verified Basic header is reused without the portal
MAX_LOGINS = 10_000


class HTTPError(Exception):
    def __init__(self, status: int, kind: str, detail: str, headers=None, content_type=JSON, **extra):
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail
        self.headers = headers or {}
        self.content_type = content_type
        self.extra = extra

    def body(self) -> dict:
        out = {"type": self.kind, "detail": self.detail}
        if self.content_type == PROBLEM:
            out["status"] = self.status
        out.update(self.extra)
        return out


def send(request, status: int, body: bytes, content_type: bytes, headers=None) -> None:
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.setResponseCode(status)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"no-store")
    if headers:
        for name, value in headers.items():
            request.setHeader(name, value)
    request.setHeader(b"content-length", b"%d" % len(body))
    if request.method != b"HEAD":
        request.write(body)
    request.finish()


_JSON_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS if orjson is not None else 0


def encode_json(obj) -> bytes:
    """obj as compact UTF-8 JSON and a newline: orjson (~15x faster than the json module on
    a mail list's 20 KB answer), or the json module for what orjson refuses (integers past
    64 bits) or where orjson is not installed; the same JSON values either way."""
    if orjson is not None:
        try:
            return orjson.dumps(obj, option=_JSON_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError
            pass
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def send_json(request, status: int, obj, content_type: bytes = JSON, headers=None) -> None:
    send(request, status, encode_json(obj), content_type, headers)


class JMAPResource:
    """Serves /.well-known/jmap and /jmap/...; the listener's Root hands it those paths."""

    def __init__(self, store, authenticator, settings, reactor, upload_dir: str, submitter=None):
        self.store = store
        self.submitter = submitter  # smtp.server.SMTPFactory("submission"): EmailSubmission sends through it
        self.authenticator = authenticator
        self.settings = settings
        self.reactor = reactor
        self.limits = dict(api.LIMITS, maxSizeUpload=settings.limits.max_message_size)
        self.uploads = blobs.Uploads(upload_dir, self.limits["maxSizeUpload"], reactor)
        self.running: dict[int, int] = defaultdict(int)  # account id -> API requests in flight
        self.gates: dict[int, defer.DeferredSemaphore] = {}  # account id -> RUNNING_PER_ACCOUNT slots
        self.uploading: dict[int, int] = defaultdict(int)
        # Open push connections end with their credential (pushguard.py): sign-out at once,
        # other revocations within push_guard.interval, admin changes here at once (forget_all).
        self.push_guard = pushguard.PushGuard(
            pushguard.store_check(store, settings, reactor), reactor,
            on_dead=lambda dead: any(c[0] == "account" for c in dead) and authenticator.forget_cached())
        self.eventsource = EventSource(store, reactor, self.push_guard)
        # Basic credentials seen lately, by HMAC of header and client IP, so a client's
        # every request does not log "auth ok"; emptied whenever the Authenticator
        # forgets its cache (an admin change: password, removal).
        self._login_key = os.urandom(32)
        self._logins: dict[bytes, tuple[float, object]] = {}
        self.sessions = browser.BrowserSessions(store, settings, reactor)  # cookie sign-in (browser.py)
        self.tickets = browser.Tickets(reactor)  # single-use push tickets
        forget = authenticator.forget_cached

        def forget_all():
            forget()
            self._forget_logins()
            self.tickets.clear()
            self.sessions.forget().addErrback(lambda f: log.failure("jmap: purging sessions failed", f))
            self.push_guard.check_now()
        authenticator.forget_cached = forget_all

    def body_limit(self, path: bytes) -> int:
        if path.startswith(b"/jmap/upload/"):
            return self.limits["maxSizeUpload"]
        if path == b"/jmap/api" or path.startswith(b"/v1/"):
            return self.limits["maxSizeRequest"]
        if path.startswith(b"/auth/"):
            return browser.MAX_LOGIN_BODY
        return 0

    def render(self, request):
        d = defer.ensureDeferred(self._handle(request))
        d.addErrback(self._failed, request)
        return server.NOT_DONE_YET

    def _failed(self, failure, request):
        if failure.check(HTTPError):
            exc = failure.value
            send_json(request, exc.status, exc.body(), exc.content_type, exc.headers)
            return
        log.failure("jmap: {path} failed", failure, path=request.path)
        send_json(request, 500, {"type": "serverFail", "detail": "the server failed; the error is logged"})

    async def _handle(self, request):
        path, method = request.path, request.method
        if await browser.route(self, request):  # CORS, preflight, /auth/*, /jmap/ticket
            return
        if path == b"/.well-known/jmap":
            self._allow(request, (b"GET", b"HEAD"))
            account = await self._authenticate(request)
            base = self._base(request)
            return send_json(request, 200, session.resource(account, base, self.limits))
        if path == b"/jmap/api":
            self._allow(request, (b"POST",))
            account = await self._authenticate(request)
            return await self._api(request, account)
        if path == b"/jmap/eventsource":
            self._allow(request, (b"GET",))
            account = await self._authenticate(request)
            credential = await self._push_credential(request, account)
            return self.eventsource.open(request, account, api.account_id_of(account), credential)
        if path == b"/jmap/ws":  # JMAP over WebSocket (RFC 8887, websocket.py): authenticated, then upgraded
            self._allow(request, (b"GET",))
            account = await self._authenticate(request)
            credential = await self._push_credential(request, account)
            from . import websocket
            return websocket.hub(self).upgrade(request, account, credential)
        match = _DOWNLOAD.match(path)
        if match:
            self._allow(request, (b"GET", b"HEAD"))
            account = await self._authenticate(request)
            return await self._download(request, account, match)
        match = _UPLOAD.match(path)
        if match:
            self._allow(request, (b"POST",))
            account = await self._authenticate(request)
            return await self._upload(request, account, match.group(1))
        if path == b"/v1/openapi.json":
            self._allow(request, (b"GET", b"HEAD"))
            return send_json(request, 200, openapi.document())
        if path.startswith(b"/v1/"):
            account = await self._authenticate(request)
            return await self._rest(request, account)
        raise HTTPError(404, "notFound", "no resource at this path")

    async def _rest(self, request, account):
        """The /v1 REST API (rest.py) on the JMAP methods, one account request at a time
        per RUNNING_PER_ACCOUNT slot, as for /jmap/api."""
        async with self.account_slot(account):
            ctx = self._context(request, account)

            def read_body() -> bytes:
                request.content.seek(0)
                return request.content.read()
            try:
                status, answer = await rest.route(ctx, request, read_body)
            except rest.RestError as exc:
                headers = {b"allow": exc.extra.pop("allow").encode()} if "allow" in exc.extra else None
                raise HTTPError(exc.status, exc.kind, exc.detail, headers=headers, **exc.extra)
        if answer is None:
            return send(request, status, b"", JSON)
        send_json(request, status, answer)

    @contextlib.asynccontextmanager
    async def account_slot(self, account):
        """One of the account's RUNNING_PER_ACCOUNT running slots, for /jmap/api, /v1 and
        WebSocket requests alike; `running` counts the account's requests waiting or
        running (maxConcurrentRequests is checked against it before entering)."""
        self.running[account.id] += 1
        gate = self.gates.setdefault(account.id, defer.DeferredSemaphore(api.RUNNING_PER_ACCOUNT))
        try:
            await gate.acquire()
            try:
                yield
            finally:
                gate.release()
        finally:
            self.running[account.id] -= 1
            if not self.running[account.id]:
                del self.running[account.id]
                del self.gates[account.id]

    def _context(self, request, account) -> api.Context:
        return api.Context(account=account, store=self.store, limits=self.limits, reactor=self.reactor,
                           uploads=self.uploads, submitter=self.submitter,
                           remote_ip=getattr(request.getClientAddress(), "host", ""))

    def _allow(self, request, methods: tuple) -> None:
        if request.method not in methods:
            raise HTTPError(405, "methodNotAllowed", "allowed: " + ", ".join(m.decode() for m in methods),
                            headers={b"allow": b", ".join(methods)})

    def _base(self, request) -> str:
        secure = request.isSecure()
        listen = self.settings.listen.https if secure else self.settings.listen.http
        return session.base_url(request.getHeader(b"host"), self.settings.server.hostname, listen,
                                "https" if secure else "http", getattr(request.getHost(), "host", ""))

    async def _authenticate(self, request):
        unauthorized = {b"www-authenticate": REALM}
        header = request.getHeader(b"authorization") or b""
        if not header:  # a browser: session cookie or push ticket (browser.py)
            account = await browser.authenticate(self, request)
            if account is not None:
                return account
        scheme, _, value = header.partition(b" ")
        if scheme.lower() == b"bearer":
            return await self._bearer(request, value.strip(), unauthorized)
        if scheme.lower() != b"basic":
            raise HTTPError(401, "unauthorized", "authenticate with HTTP Basic (address and password) "
                            "or a Bearer token (mailserverctl token create)", headers=unauthorized)
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise HTTPError(401, "unauthorized", "malformed Basic credentials", headers=unauthorized)
        username, sep, password = decoded.partition(":")
        if not sep:
            raise HTTPError(401, "unauthorized", "malformed Basic credentials", headers=unauthorized)
        remote = request.getClientAddress()
        ip = getattr(remote, "host", "")
        if not plaintext_allowed(request.isSecure(), ip):
            raise HTTPError(403, "forbidden", "passwords are accepted only over TLS or from loopback")
        key = hmac.new(self._login_key, header + b"\0" + ip.encode(), hashlib.sha256).digest()
        hit = self._logins.get(key)
        request.msd_credential = ("account", None, None)  # the digest is read for push only (_push_credential)
        if hit is not None and hit[0] > self.reactor.seconds():
            return hit[1]
        try:
            account = await self.authenticator.authenticate(username, password, ip, "http")
        except AuthFailed:
            raise HTTPError(401, "unauthorized", "wrong address or password", headers=unauthorized)
        if len(self._logins) >= MAX_LOGINS:
            self._logins.clear()
        self._logins[key] = (self.reactor.seconds() + LOGIN_TTL, account)
        return account

    def _forget_logins(self) -> None:
        self._logins.clear()

    async def _push_credential(self, request, account):
        """What authenticated the request, for pushguard.py: ("session", id_sha256),
        ("token", id), or for a password ("account", id, digest of the account row,
        read now); a password whose account is already gone or changed is a 401."""
        credential = getattr(request, "msd_credential", None)
        if credential is None or credential[0] != "account" or credential[2] is not None:
            return credential
        credential = await pushguard.basic_credential(self.store, self.reactor, account)
        if credential is None:
            raise HTTPError(401, "unauthorized", "wrong address or password", headers={b"www-authenticate": REALM})
        return credential

    async def _bearer(self, request, value: bytes, unauthorized: dict):
        """A token from `mailserverctl token create`; a bad one pays the same penalty
        as a bad password and logs the same line (the token id, never the secret)."""
        token = value.decode("ascii", "replace")
        ip = getattr(request.getClientAddress(), "host", "")
        if not plaintext_allowed(request.isSecure(), ip):
            raise HTTPError(403, "forbidden", "tokens are accepted only over TLS or from loopback")
        account = await threads.deferToThreadPool(self.reactor, self.store.pool, tokens.verify,
                                                  self.store.store, token, time.time())
        if account is not None:
            request.msd_credential = ("token", tokens.token_id_of(token))
            return account
        penalty, ip_key = self.authenticator.penalty, "ip:" + ip
        penalty.failed(ip_key)
        auth_log.info("auth failed: user={user!r} rip={ip} proto={proto}",
                      user="token:" + (tokens.token_id_of(token) or "?"), ip=ip, proto="http")
        delay = penalty.delay(ip_key)
        if delay:
            await task.deferLater(self.authenticator.clock, delay, lambda: None)
        raise HTTPError(401, "unauthorized", "unknown, revoked or expired token", headers=unauthorized)

    async def _api(self, request, account):
        content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            error = api.RequestError("notJSON", "the content type must be application/json")
            return send_json(request, 400, error.problem(), PROBLEM)
        if self.running[account.id] >= self.limits["maxConcurrentRequests"]:
            error = api.RequestError("limit", "too many concurrent requests", limit="maxConcurrentRequests")
            return send_json(request, 400, error.problem(), PROBLEM)
        async with self.account_slot(account):
            request.content.seek(0)
            body = request.content.read()
            ctx = self._context(request, account)
            status, answer = await api.process(ctx, body, session.session_state(account, self.limits))
        send_json(request, status, answer, JSON if status == 200 else PROBLEM)

    def _account_matches(self, account, value: bytes) -> None:
        if value.decode("utf-8", "replace") != api.account_id_of(account):
            raise HTTPError(404, "notFound", "no such account")

    async def _download(self, request, account, match):
        self._account_matches(account, match.group(1))
        blob_id = match.group(2).decode("utf-8", "replace")
        data = await blobs.read(self.store, self.uploads, account, blob_id)
        if data is None:
            raise HTTPError(404, "notFound", "no such blob")
        name = blobs.unquote_name(match.group(3))
        kind = blobs.download_type(blobs.query_type(request.uri))
        send(request, 200, data, kind, {b"content-disposition": blobs.disposition(name),
                                       b"x-content-type-options": b"nosniff"})

    async def _upload(self, request, account, account_part: bytes):
        self._account_matches(account, account_part)
        if self.uploading[account.id] >= self.limits["maxConcurrentUpload"]:
            raise HTTPError(429, "limit", "too many concurrent uploads", limit="maxConcurrentUpload")
        self.uploading[account.id] += 1
        try:
            request.content.seek(0)
            data = request.content.read()
            kind = blobs.safe_type(request.getHeader(b"content-type") or b"").decode()
            blob_id = await self.uploads.put(account, data)
        except blobs.UploadsFull as exc:
            raise HTTPError(413, "overQuota", str(exc))
        finally:
            self.uploading[account.id] -= 1
            if not self.uploading[account.id]:
                del self.uploading[account.id]
        send_json(request, 201, {"accountId": api.account_id_of(account), "blobId": blob_id,
                                 "type": kind, "size": len(data)})
