"""Browser authentication on the real daemon's http and https listeners
(jmap/browser.py, notes/browser-contract.md): sign-in sessions with an
HttpOnly SameSite=Strict cookie and a CSRF token, single-use push tickets,
and CORS for configured origins only."""

from __future__ import annotations

import http.client
import json
import ssl
import time

import pytest

from tests.support.daemon import PASSWORD

ALICE, BOB = "alice@example.test", "bob@example.test"
CORE, MAIL = "urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"
ALLOWED = "https://app.example.org"
PENALTY = 0.3  # seconds: [auth] penalty_initial, so a wrong password visibly waits


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """One daemon (http + https) for the module with one CORS origin and a short penalty."""
    from tests.conftest import _make_servers, _stop_all
    make, servers = _make_servers(request, tmp_path_factory)
    yield make(listeners=("smtp", "http", "https"),
               extra_config={"auth": {"penalty_initial": f"{PENALTY}s", "penalty_max": "1s"},
                             "http": {"cors_origins": ALLOWED}})
    _stop_all(servers)


def call(server, method, path, body=None, headers=None, listener="http"):
    host, port = server.address(listener)
    if listener == "https":
        connection = http.client.HTTPSConnection(host, port, timeout=10,
                                                 context=ssl._create_unverified_context())
    else:
        connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def login(server, user=ALICE, password=PASSWORD, listener="http"):
    """(cookie header value, JSON answer, Set-Cookie) of a successful sign-in."""
    status, headers, body = call(server, "POST", "/auth/login", {"username": user, "password": password},
                                 listener=listener)
    assert status == 200, body
    set_cookie = headers["set-cookie"]
    return set_cookie.split(";")[0], json.loads(body), set_cookie


def api_body(calls=(["Core/echo", {"x": 1}, "c"],)):
    return {"using": [CORE, MAIL], "methodCalls": list(calls)}


def test_login_sets_a_strict_httponly_cookie(server):
    """POST /auth/login answers username, accountId, csrfToken and expiresAt with a
    msd_session cookie that is HttpOnly, SameSite=Strict, Path=/, Secure only on https;
    GET /auth/session answers the same shape for that cookie."""
    cookie, answer, set_cookie = login(server)
    assert cookie.startswith("msd_session=") and len(cookie) > 40
    attributes = [part.strip() for part in set_cookie.split(";")[1:]]
    assert {"Path=/", "HttpOnly", "SameSite=Strict"} <= set(attributes) and "Secure" not in attributes
    assert answer["username"] == ALICE and set(answer) == {"username", "accountId", "csrfToken", "expiresAt"}
    assert answer["expiresAt"].endswith("Z")
    status, headers, body = call(server, "GET", "/auth/session", headers={"Cookie": cookie})
    assert status == 200 and json.loads(body) == answer
    _cookie, _answer, secure_cookie = login(server, listener="https")
    assert "Secure" in [part.strip() for part in secure_cookie.split(";")]


def test_cookie_authenticates_jmap_and_rest(server):
    """The cookie stands in for Authorization on /.well-known/jmap, GET /v1 and (with the
    CSRF token) POST /jmap/api."""
    cookie, answer, _ = login(server)
    status, _h, body = call(server, "GET", "/.well-known/jmap", headers={"Cookie": cookie})
    assert status == 200 and json.loads(body)["username"] == ALICE
    status, _h, _body = call(server, "GET", "/v1/folders", headers={"Cookie": cookie})
    assert status == 200
    status, _h, body = call(server, "POST", "/jmap/api", api_body(),
                            headers={"Cookie": cookie, "X-CSRF-Token": answer["csrfToken"]})
    assert status == 200 and json.loads(body)["methodResponses"][0][1] == {"x": 1}


@pytest.mark.parametrize("path,body", [("/jmap/api", api_body()),
                                       ("/v1/messages", {"to": [BOB], "subject": "x", "text": "y"})])
def test_csrf_token_missing_or_wrong_is_403(server, path, body):
    """With cookie authentication a POST without X-CSRF-Token, or with a wrong one, is
    403 forbidden "missing or wrong CSRF token", on JMAP and on /v1 alike."""
    cookie, answer, _ = login(server)
    token = answer["csrfToken"]
    wrong = token[:-1] + ("B" if token.endswith("A") else "A")  # one in 64 tokens ends in "A"
    for extra in ({}, {"X-CSRF-Token": wrong}, {"X-CSRF-Token": ""}):
        status, _h, answer_body = call(server, "POST", path, body, headers={"Cookie": cookie, **extra})
        assert status == 403, answer_body
        assert json.loads(answer_body) == {"type": "forbidden", "detail": "missing or wrong CSRF token"}


def test_foreign_origin_with_cookie_is_403(server):
    """A cookie request whose Origin is another origin (also a sibling subdomain, also an
    allowed CORS origin: cookies never cross origins) is 403; this server's own origin passes."""
    cookie, answer, _ = login(server)
    host, port = server.address("http")
    for origin in ("https://evil.example", f"http://sub.{server.hostname}:{port}", ALLOWED, "null"):
        status, headers, _b = call(server, "GET", "/.well-known/jmap", headers={"Cookie": cookie, "Origin": origin})
        assert status == 403, origin
        assert "access-control-allow-credentials" not in headers
    own = {"Cookie": cookie, "Origin": f"http://{host}:{port}", "X-CSRF-Token": answer["csrfToken"]}
    assert call(server, "POST", "/jmap/api", api_body(), headers=own)[0] == 200
    status, _h, _b = call(server, "POST", "/auth/login", {"username": ALICE, "password": PASSWORD},
                          headers={"Origin": "https://evil.example"})
    assert status == 403  # no sign-in from another origin's page (login CSRF)


def test_logout_revokes_the_session(server):
    """POST /auth/logout with the CSRF token answers 204 and clears the cookie; the old
    cookie is then 401 everywhere, without a WWW-Authenticate that would pop up a dialog.
    Signing in again with a cookie held ends that older session (no session fixation)."""
    cookie, answer, _ = login(server)
    status, _h, _b = call(server, "POST", "/auth/logout", headers={"Cookie": cookie})
    assert status == 403  # logout needs the CSRF token too
    status, headers, _b = call(server, "POST", "/auth/logout",
                               headers={"Cookie": cookie, "X-CSRF-Token": answer["csrfToken"]})
    assert status == 204 and "Max-Age=0" in headers["set-cookie"]
    for method, path in (("GET", "/auth/session"), ("GET", "/.well-known/jmap")):
        status, headers, body = call(server, method, path, headers={"Cookie": cookie})
        assert status == 401 and json.loads(body)["type"] == "unauthorized"
        assert "www-authenticate" not in headers
    held, _answer, _ = login(server)
    status, headers, _b = call(server, "POST", "/auth/login", {"username": ALICE, "password": PASSWORD},
                               headers={"Cookie": held})
    assert status == 200 and headers["set-cookie"].split(";")[0] != held
    assert call(server, "GET", "/auth/session", headers={"Cookie": held})[0] == 401  # no fixation


def test_wrong_password_pays_the_penalty_and_is_logged(server):
    """A wrong password is 401 JSON after the Authenticator's penalty, logs the
    fail2ban line with proto=http, and sends no WWW-Authenticate; bad bodies are JSON errors."""
    started = time.monotonic()
    status, headers, body = call(server, "POST", "/auth/login", {"username": BOB, "password": "wrong"})
    assert status == 401 and json.loads(body)["type"] == "unauthorized"
    assert time.monotonic() - started >= PENALTY * 0.9
    assert "www-authenticate" not in headers and "set-cookie" not in headers
    deadline = time.time() + 5
    while "auth failed: user='bob@example.test'" not in server.log and time.time() < deadline:
        time.sleep(0.05)
    assert "auth failed: user='bob@example.test'" in server.log and "proto=http" in server.log
    for body, content_type, kind in ((b"username=a", "application/x-www-form-urlencoded", "notJSON"),
                                     (b"{nope", "application/json", "notJSON"),
                                     (b'{"username": 1}', "application/json", "invalidArguments")):
        status, _h, answer = call(server, "POST", "/auth/login", body, {"Content-Type": content_type})
        assert status == 400 and json.loads(answer)["type"] == kind
    status, _h, answer = call(server, "POST", "/auth/login", b"{" + b" " * 10_000 + b"}",
                              {"Content-Type": "application/json"})
    assert status == 413 and json.loads(answer)["type"] == "tooLarge"


def test_ticket_works_once_for_eventsource_only(server):
    """POST /jmap/ticket (here with the cookie and CSRF token) answers 201 {ticket, expiresAt};
    the ticket opens GET /jmap/eventsource once, a second use is 401, and it is never
    accepted on /jmap/api."""
    cookie, answer, _ = login(server)
    status, _h, body = call(server, "POST", "/jmap/ticket",
                            headers={"Cookie": cookie, "X-CSRF-Token": answer["csrfToken"]})
    assert status == 201, body
    ticket = json.loads(body)
    assert set(ticket) == {"ticket", "expiresAt"}
    path = f"/jmap/eventsource?types=*&closeafter=state&ping=0&ticket={ticket['ticket']}"
    host, port = server.address("http")
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("content-type").startswith("text/event-stream")
    connection.close()
    status, _h, body = call(server, "GET", path)
    assert status == 401 and json.loads(body)["type"] == "unauthorized"
    status, _h, body = call(server, "POST", "/jmap/ticket",
                            headers={"Cookie": cookie, "X-CSRF-Token": answer["csrfToken"]})
    fresh = json.loads(body)["ticket"]
    status, _h, _b = call(server, "POST", f"/jmap/api?ticket={fresh}", api_body())
    assert status == 401


def test_cors_only_for_configured_origins(server):
    """An allowed origin gets Access-Control-Allow-Origin (echoed, Vary: Origin) and a 204
    preflight with methods, headers and max-age; another origin or none gets no CORS
    header; Access-Control-Allow-Credentials is never sent; /auth/* is never CORS."""
    status, headers, _b = call(server, "OPTIONS", "/jmap/api", headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert status == 204 and headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in headers["access-control-allow-methods"]
    assert "authorization" in headers["access-control-allow-headers"].lower()
    assert int(headers["access-control-max-age"]) > 0 and "Origin" in headers["vary"]
    basic = "Basic " + __import__("base64").b64encode(f"{ALICE}:{PASSWORD}".encode()).decode()
    status, headers, _b = call(server, "GET", "/.well-known/jmap", headers={"Origin": ALLOWED,
                                                                            "Authorization": basic})
    assert status == 200 and headers["access-control-allow-origin"] == ALLOWED
    for origin in ("https://evil.example", "https://sub.app.example.org", None):
        extra = {"Origin": origin} if origin else {}
        status, headers, _b = call(server, "OPTIONS", "/jmap/api", headers=extra)
        assert status == 204 and not any(k.startswith("access-control-") for k in headers)
        status, headers, _b = call(server, "GET", "/.well-known/jmap", headers={"Authorization": basic, **extra})
        assert status == 200 and not any(k.startswith("access-control-") for k in headers)
    status, headers, _b = call(server, "POST", "/auth/login", {"username": ALICE, "password": PASSWORD},
                               headers={"Origin": ALLOWED})
    assert status == 403 and not any(k.startswith("access-control-") for k in headers)


def test_password_change_and_removal_revoke_sessions(server):
    """`mailserverctl user passwd` ends the account's sessions at once (401), and so does
    `user remove`, even when an account of the same address is made again."""
    server.ctl("user", "add", "carol@example.test", "--password", PASSWORD)
    cookie, _answer, _ = login(server, "carol@example.test")
    assert call(server, "GET", "/auth/session", headers={"Cookie": cookie})[0] == 200
    server.ctl("user", "passwd", "carol@example.test", "--password", PASSWORD)  # same password, new hash
    assert call(server, "GET", "/auth/session", headers={"Cookie": cookie})[0] == 401
    cookie, _answer, _ = login(server, "carol@example.test")
    server.ctl("user", "remove", "carol@example.test")
    server.ctl("user", "add", "carol@example.test", "--password", PASSWORD)
    assert call(server, "GET", "/.well-known/jmap", headers={"Cookie": cookie})[0] == 401


def test_sessions_survive_a_restart(server):
    """Sessions are durable: the cookie and its CSRF token still work after the daemon restarts."""
    cookie, answer, _ = login(server)
    server.restart()
    status, _h, body = call(server, "GET", "/auth/session", headers={"Cookie": cookie})
    assert status == 200 and json.loads(body)["csrfToken"] == answer["csrfToken"]
    status, _h, _b = call(server, "POST", "/jmap/api", api_body(),
                          headers={"Cookie": cookie, "X-CSRF-Token": answer["csrfToken"]})
    assert status == 200


def test_ticket_and_cookie_open_the_websocket(server):
    """GET /jmap/ws accepts a Bearer-less ticket once (a second upgrade with it is refused)
    and the same-origin session cookie; a cookie from a foreign Origin is refused."""
    pytest.importorskip("websockets", reason="the websockets client: pip install -e '.[test]'")
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect
    host, port = server.address("http")
    cookie, answer, _ = login(server)
    status, _h, body = call(server, "POST", "/jmap/ticket",
                            headers={"Cookie": cookie, "X-CSRF-Token": answer["csrfToken"]})
    url = f"ws://{host}:{port}/jmap/ws?ticket={json.loads(body)['ticket']}"

    def open_ws(url, headers=None):
        return connect(url, subprotocols=["jmap"], additional_headers=headers or {}, proxy=None, open_timeout=10)
    with open_ws(url) as ws:
        ws.send(json.dumps({"@type": "Request", "id": "1", "using": [CORE], "methodCalls": [["Core/echo", {}, "c"]]}))
        assert json.loads(ws.recv(timeout=10))["methodResponses"][0][0] == "Core/echo"
    with pytest.raises(InvalidStatus) as refused:
        open_ws(url).close()
    assert refused.value.response.status_code == 401
    with open_ws(f"ws://{host}:{port}/jmap/ws", {"Cookie": cookie, "Origin": f"http://{host}:{port}"}):
        pass
    with pytest.raises(InvalidStatus) as refused:
        open_ws(f"ws://{host}:{port}/jmap/ws", {"Cookie": cookie, "Origin": "https://evil.example"}).close()
    assert refused.value.response.status_code == 403
