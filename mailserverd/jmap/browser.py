"""Browser authentication for JMAP and /v1: sign-in sessions, CSRF tokens,
push tickets and CORS (the HTTP contract in notes/browser-contract.md).

Sessions. POST /auth/login checks the password through the same
Authenticator as IMAP and HTTP Basic and answers a cookie
`msd_session=SECRET; Path=/; HttpOnly; SameSite=Strict` (+ Secure on https;
RFC 6265 4.1, RFC 6265bis 5.4.7). SECRET is 32 random bytes; the directory
database keeps only its SHA-256 (store/sessions.py), so sessions survive a
restart. Expiry slides with use (settings.http.session_lifetime) up to an
absolute limit (session_max_lifetime). A live session is remembered in
memory and checked against the database again every RECHECK seconds; its
sliding expiry is written at most every RENEW_INTERVAL, so a busy webmail
costs no database write per request (it may expire up to that much early).
Admin changes (password, removal) drop the memory at once (the
Authenticator's forget_cached hook) and the database check refuses a
session whose account row changed, whichever process changed it.

CSRF. The token is HMAC-SHA256(SECRET, "csrf"): bound to the session, never
stored, and useless for recovering the cookie. Cookie-authenticated requests
other than GET/HEAD must send it as X-CSRF-Token (compared in constant time),
and a cookie request with an Origin header (RFC 6454 7) that is not this
server's own origin is refused: a sibling subdomain is same-site but not
same-origin, so SameSite alone does not stop it.

Tickets. EventSource and WebSocket cannot send an Authorization header. POST
/jmap/ticket gives a 256-bit ticket, valid once, for TICKET_LIFETIME seconds,
only as ?ticket= of GET /jmap/eventsource and GET /jmap/ws. Tickets live in
this process's memory: they are single use and short-lived, so a restart
costs a client one new ticket and nothing needs to be durable; behind a load
balancer the ticket must be used on the node that issued it (sticky routing,
or the same-origin cookie instead).

CORS (Fetch standard, "CORS protocol"). Only the exact origins of
settings.http.cors_origins get Access-Control-Allow-Origin (with Vary:
Origin); never a wildcard and never Access-Control-Allow-Credentials, so
cookies never authenticate a cross-origin request: such clients use a
Bearer token or Basic. /auth/* is never CORS-enabled.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

from twisted.internet import threads

from ..auth import AuthFailed, plaintext_allowed
from ..store import sessions as session_store
from ..store.api import StoreError

COOKIE = b"msd_session"
CSRF_HEADER = b"x-csrf-token"
RECHECK = 10.0  # seconds a session found live is trusted without the database
RENEW_INTERVAL = 60.0  # the sliding expiry is written at most this often per session
MAX_CACHED = 10_000
TICKET_LIFETIME = 60.0  # seconds
MAX_TICKETS = 10_000
TICKETS_PER_ACCOUNT = 16
TICKET_PATHS = (b"/jmap/eventsource", b"/jmap/ws")
SAFE_METHODS = (b"GET", b"HEAD")
CORS_METHODS = b"GET, HEAD, POST, PATCH, DELETE"
CORS_HEADERS = b"Authorization, Content-Type"
CORS_MAX_AGE = b"600"
MAX_LOGIN_BODY = 4096  # octets of a POST /auth/login body
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def csrf_token(secret: str) -> str:
    mac = hmac.new(secret.encode("ascii"), b"mailserverd csrf", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def csrf_ok(secret: str, header: bytes | None) -> bool:
    if not header:
        return False
    return hmac.compare_digest(csrf_token(secret).encode("ascii"), header.strip())


def utc_date(seconds: float) -> str:
    """RFC 8620 1.4 UTCDate."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def normalize_origin(value: str) -> str | None:
    """scheme://host[:port] lower case without a default port, or None (also for "null")."""
    scheme, sep, rest = value.strip().lower().partition("://")
    if not sep or scheme not in _DEFAULT_PORTS or not rest or "/" in rest:
        return None
    if rest.endswith(":" + _DEFAULT_PORTS[scheme]):
        rest = rest[:-len(_DEFAULT_PORTS[scheme]) - 1]
    return f"{scheme}://{rest}"


def cookie_header(secret: str, secure: bool) -> bytes:
    return (COOKIE + b"=" + secret.encode("ascii") + b"; Path=/; HttpOnly; SameSite=Strict"
            + (b"; Secure" if secure else b""))


def clear_cookie_header(secure: bool) -> bytes:
    return COOKIE + b"=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0" + (b"; Secure" if secure else b"")


def session_cookie(request) -> str | None:
    value = request.getCookie(COOKIE)
    if not value:
        return None
    secret = value.decode("ascii", "replace")
    return secret if session_store.valid_secret(secret) else None


# -- CORS ----------------------------------------------------------------------

def cors_origin(request, allowed: tuple) -> bytes | None:
    """The request's Origin if it is one of `allowed` (exact, as configured), else None."""
    origin = request.getHeader(b"origin")
    if not origin or not allowed or request.path.startswith(b"/auth/"):
        return None
    text = origin.decode("ascii", "replace").strip().lower()
    return text.encode("ascii") if text in allowed else None


def apply_cors(request, allowed: tuple) -> bool:
    """Set the CORS response headers for an allowed origin; True if it was one."""
    if allowed:
        request.setHeader(b"vary", b"Origin")
    origin = cors_origin(request, allowed)
    if origin is None:
        return False
    request.setHeader(b"access-control-allow-origin", origin)
    return True


def preflight_headers(request, allowed: tuple) -> dict:
    """The headers of the 204 answer to an OPTIONS preflight: none beyond Allow for an
    origin not allowed, so the browser refuses the real request."""
    headers = {b"allow": CORS_METHODS + b", OPTIONS"}
    if apply_cors(request, allowed):
        headers.update({b"access-control-allow-methods": CORS_METHODS,
                        b"access-control-allow-headers": CORS_HEADERS,
                        b"access-control-max-age": CORS_MAX_AGE})
    return headers


# -- tickets -------------------------------------------------------------------

class Tickets:
    """Single-use push tickets in memory (see the module docstring for why).

    Each account holds at most `per_account` unused tickets (a new one ends its
    oldest), so no account can crowd the others out of the `limit`."""

    def __init__(self, clock, lifetime: float = TICKET_LIFETIME, limit: int = MAX_TICKETS,
                 per_account: int = TICKETS_PER_ACCOUNT):
        self.clock = clock
        self.lifetime = lifetime
        self.limit = limit
        self.per_account = per_account
        # SHA-256 of ticket -> (expires, account, credential of the request that got it: pushguard.py)
        self._tickets: dict[str, tuple[float, object, object]] = {}
        self._held: dict[object, int] = {}  # account id -> unused tickets

    @staticmethod
    def _owner(account):
        return getattr(account, "id", account)

    def _drop(self, key: str) -> tuple[float, object, object] | None:
        entry = self._tickets.pop(key, None)
        if entry is not None:
            owner = self._owner(entry[1])
            self._held[owner] -= 1
            if not self._held[owner]:
                del self._held[owner]
        return entry

    def issue(self, account, credential=None) -> tuple[str, float] | None:
        """(ticket, expiry), or None when the table is full of live tickets. A push
        connection opened with the ticket lives as long as `credential` (pushguard.py)."""
        now, owner = self.clock.seconds(), self._owner(account)
        if len(self._tickets) >= self.limit or self._held.get(owner, 0) >= self.per_account:
            for key in [k for k, v in self._tickets.items() if v[0] <= now]:
                self._drop(key)
        if self._held.get(owner, 0) >= self.per_account:
            self._drop(next(k for k, v in self._tickets.items() if self._owner(v[1]) == owner))
        if len(self._tickets) >= self.limit:
            return None
        ticket = secrets.token_urlsafe(32)
        expires = now + self.lifetime
        self._tickets[hashlib.sha256(ticket.encode()).hexdigest()] = (expires, account, credential)
        self._held[owner] = self._held.get(owner, 0) + 1
        return ticket, expires

    def redeem(self, ticket: str):
        """The ticket's account, once; None if unknown, used or expired."""
        found = self.redeem_with_credential(ticket)
        return None if found is None else found[0]

    def redeem_with_credential(self, ticket: str):
        """(account, credential it was issued under), once; None if unknown, used or expired."""
        entry = self._drop(hashlib.sha256(ticket.encode("utf-8", "replace")).hexdigest())
        if entry is None or entry[0] <= self.clock.seconds():
            return None
        return entry[1], entry[2]

    def forget_credential(self, credential) -> int:
        """Drop the unused tickets issued under `credential` (its session signed out)."""
        keys = [key for key, entry in self._tickets.items() if entry[2] == credential]
        for key in keys:
            self._drop(key)
        return len(keys)

    def clear(self) -> None:
        self._tickets.clear()
        self._held.clear()


# -- sessions --------------------------------------------------------------------

class BrowserSessions:
    """Durable sessions (store/sessions.py) with a small memory in front.

    `store` is the AsyncStore (reads on its pool, writes on its writer thread);
    `clock` gives wall-clock seconds (reactor.seconds, or a test clock).
    """

    def __init__(self, store, settings, reactor, clock=None):
        self.store = store
        self.reactor = reactor
        self.clock = clock or reactor
        self.lifetime = settings.http.session_lifetime
        self.max_lifetime = settings.http.session_max_lifetime
        self._live: dict[str, tuple[float, session_store.Session]] = {}  # id_sha256 -> (checked, session)
        self._generation = 0

    def _read(self, fn, *args):
        return threads.deferToThreadPool(self.reactor, self.store.pool, fn, self.store.store, *args)

    def _write(self, fn, *args):
        return self.store.run_write(fn, self.store.store, *args)

    async def create(self, account) -> tuple[str, session_store.Session]:
        secret, session = await self._write(session_store.create, account, self.clock.seconds(),
                                            self.lifetime, self.max_lifetime)
        self._remember(session)
        return secret, session

    async def lookup(self, secret: str) -> session_store.Session | None:
        now = self.clock.seconds()
        id_sha256 = session_store.digest(secret)
        cached = self._live.get(id_sha256)
        if cached is not None and now - cached[0] < RECHECK and now < cached[1].expires_at:
            session = cached[1]
        else:
            generation = self._generation
            session = await self._read(session_store.lookup, secret, now, self.lifetime, self.max_lifetime)
            if session is None:
                self._live.pop(id_sha256, None)
                return None
            if generation != self._generation:  # an admin change while we read: ask again
                return await self.lookup(secret)
            self._remember(session, now)
        if now - session.last_used_at >= RENEW_INTERVAL:
            await self._write(session_store.touch, id_sha256, now)
            session = session_store.Session(session.account, id_sha256, session.created_at, now,
                                            session_store.expires_at(session.created_at, now, self.lifetime,
                                                                     self.max_lifetime))
            self._remember(session, now)
        return session

    def _remember(self, session, checked: float | None = None) -> None:
        if len(self._live) >= MAX_CACHED:
            self._live.clear()
        self._live[session.id_sha256] = (self.clock.seconds() if checked is None else checked, session)

    async def revoke(self, secret: str) -> bool:
        self._live.pop(session_store.digest(secret), None)
        return await self._write(session_store.revoke, secret)

    def forget(self):
        """After an admin change: trust nothing remembered; delete the dead rows."""
        self._live.clear()
        self._generation += 1
        return self._write(session_store.purge, self.clock.seconds(), self.lifetime, self.max_lifetime)


def session_answer(session, secret: str, account_id: str) -> dict:
    """The JSON of /auth/login and /auth/session."""
    return {"username": session.account.address, "accountId": account_id,
            "csrfToken": csrf_token(secret), "expiresAt": utc_date(session.expires_at)}


# -- the HTTP side (JMAPResource in web.py calls these) ----------------------------

def _errors():
    from .web import HTTPError, JSON, send, send_json  # web.py imports this module
    return HTTPError, JSON, send, send_json


def own_origins(resource, request) -> set:
    """This server's origin as the browser sees it: scheme and the Host header when it
    names this server (session.base_url). Over plain http from loopback (a local
    TLS-terminating reverse proxy) the https origin of the same authority counts too."""
    base = resource._base(request)
    origins = {normalize_origin(base)}
    peer = getattr(request.getClientAddress(), "host", "")
    if not request.isSecure() and plaintext_allowed(False, peer):
        origins.add(normalize_origin("https://" + base.partition("://")[2]))
    return origins


def check_origin(resource, request) -> None:
    """A cookie request whose Origin is not this server's own is refused (RFC 6454 7.3)."""
    HTTPError = _errors()[0]
    origin = request.getHeader(b"origin")
    if origin is None:
        return
    if normalize_origin(origin.decode("ascii", "replace")) not in own_origins(resource, request):
        raise HTTPError(403, "forbidden", "cookies are accepted only from this server's own origin")


def _secure_or_loopback(request, what: str) -> None:
    HTTPError = _errors()[0]
    if not plaintext_allowed(request.isSecure(), getattr(request.getClientAddress(), "host", "")):
        raise HTTPError(403, "forbidden", f"{what} accepted only over TLS or from loopback")


async def authenticate(resource, request):
    """The account of a push ticket or a session cookie; None when the request carries
    neither (web.py then asks for Basic or Bearer). A ticket counts only on TICKET_PATHS."""
    HTTPError = _errors()[0]
    ticket = request.args.get(b"ticket")
    if ticket and request.path in TICKET_PATHS and request.method == b"GET":
        _secure_or_loopback(request, "tickets are")
        found = resource.tickets.redeem_with_credential(ticket[0].decode("ascii", "replace"))
        if found is None:
            raise HTTPError(401, "unauthorized", "unknown, used or expired ticket")
        request.msd_credential = found[1]  # the ticket's push connection lives as long as it
        return found[0]
    if request.getCookie(COOKIE) is None:
        return None
    session, secret = await _session(resource, request)
    if request.method not in SAFE_METHODS and not csrf_ok(secret, request.getHeader(CSRF_HEADER)):
        raise HTTPError(403, "forbidden", "missing or wrong CSRF token")
    request.msd_credential = ("session", session.id_sha256)  # what a push connection lives on (pushguard.py)
    return session.account


async def _session(resource, request):
    """(Session, secret) of the request's cookie, or 401 (the cookie cleared) / 403."""
    HTTPError = _errors()[0]
    _secure_or_loopback(request, "sessions are")
    check_origin(resource, request)
    secret = session_cookie(request)
    session = await resource.sessions.lookup(secret) if secret else None
    if session is None:
        raise HTTPError(401, "unauthorized", "no session, or it expired or was signed out: sign in again",
                        headers={b"set-cookie": clear_cookie_header(request.isSecure())})
    return session, secret


async def route(resource, request) -> bool:
    """CORS headers for every JMAP/REST answer, OPTIONS preflights, /auth/* and
    /jmap/ticket; True when the request was answered here."""
    HTTPError, JSON, send, send_json = _errors()
    path, method = request.path, request.method
    apply_cors(request, resource.settings.http.cors_origins)
    if method == b"OPTIONS" and not path.startswith(b"/auth/"):
        send(request, 204, b"", JSON, preflight_headers(request, resource.settings.http.cors_origins))
        return True
    if path == b"/auth/login":
        resource._allow(request, (b"POST",))
        await _login(resource, request)
        return True
    if path == b"/auth/session":
        resource._allow(request, (b"GET", b"HEAD"))
        session, secret = await _session(resource, request)
        send_json(request, 200, session_answer(session, secret, _account_id(session.account)))
        return True
    if path == b"/auth/logout":
        resource._allow(request, (b"POST",))
        session, secret = await _session(resource, request)
        if not csrf_ok(secret, request.getHeader(CSRF_HEADER)):
            raise HTTPError(403, "forbidden", "missing or wrong CSRF token")
        await resource.sessions.revoke(secret)
        resource.tickets.forget_credential(("session", session.id_sha256))  # nor can its tickets open one
        resource.push_guard.revoke(("session", session.id_sha256), "signed out")  # its push ends now
        send(request, 204, b"", JSON, {b"set-cookie": clear_cookie_header(request.isSecure())})
        return True
    if path.startswith(b"/auth/"):
        raise HTTPError(404, "notFound", "no resource at this path")
    if path == b"/jmap/ticket":
        resource._allow(request, (b"POST",))
        account = await resource._authenticate(request)
        issued = resource.tickets.issue(account, await resource._push_credential(request, account))
        if issued is None:
            raise HTTPError(503, "serviceUnavailable", "too many unused tickets; try again in a minute",
                            headers={b"retry-after": b"60"})
        ticket, expires = issued
        send_json(request, 201, {"ticket": ticket, "expiresAt": utc_date(expires)})
        return True
    return False


def _account_id(account) -> str:
    from .api import account_id_of
    return account_id_of(account)


async def _login(resource, request) -> None:
    """POST /auth/login {"username", "password"}: the Authenticator (penalty and the
    "auth failed ... proto=http" line on failure), then a new session."""
    HTTPError, _JSON, _send, send_json = _errors()
    _secure_or_loopback(request, "passwords are")
    check_origin(resource, request)  # no login CSRF from another origin
    content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if content_type != b"application/json":
        raise HTTPError(400, "notJSON", "the content type must be application/json")
    request.content.seek(0)
    try:
        body = json.loads(request.content.read(MAX_LOGIN_BODY + 1).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise HTTPError(400, "notJSON", "the body is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("username"), str) \
            or not isinstance(body.get("password"), str) or not body["username"] or not body["password"]:
        raise HTTPError(400, "invalidArguments", 'expected {"username": ADDRESS, "password": PASSWORD}')
    ip = getattr(request.getClientAddress(), "host", "")
    try:
        account = await resource.authenticator.authenticate(body["username"], body["password"], ip, "http")
        secret, session = await resource.sessions.create(account)
    except (AuthFailed, StoreError):
        raise HTTPError(401, "unauthorized", "wrong address or password") from None
    previous = session_cookie(request)
    if previous:  # a new sign-in ends the session this browser held (no fixation, no leftovers)
        await resource.sessions.revoke(previous)
        resource.push_guard.revoke(("session", session_store.digest(previous)), "signed in again")
    send_json(request, 200, session_answer(session, secret, _account_id(account)),
              headers={b"set-cookie": cookie_header(secret, request.isSecure())})
