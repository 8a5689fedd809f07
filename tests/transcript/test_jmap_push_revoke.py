"""Open push connections end with the credential that opened them (jmap/pushguard.py),
on the real daemon: sign-out closes the session's EventSource and WebSocket at once
(also one opened with a push ticket), a revoked Bearer token and a changed password
close theirs, and a browser session that expires closes its WebSocket within the
recheck interval (MAILSERVERD_PUSH_RECHECK, short here) with no admin action at all.
Connections of other credentials stay open."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from tests.support.daemon import PASSWORD
from tests.transcript.test_jmap_browser_auth import call, login
from tests.transcript.test_jmap_http import ALICE, BOB, CORE, MAIL, basic

websockets = pytest.importorskip("websockets", reason="the websockets client: pip install -e '.[test]'")
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

RECHECK = 0.3  # seconds between the daemon's checks of open push connections
SESSION_LIFETIME = 4  # seconds: [http] session_lifetime, so the expiry test is short
CLOSE_WITHIN = 3.0  # seconds a revoked connection may take to close (many intervals of slack)
POLICY_VIOLATION = 1008  # RFC 6455 7.4.1


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """One daemon (smtp + http) with a short push recheck interval and session lifetime."""
    from tests.conftest import _make_servers, _stop_all
    make, servers = _make_servers(request, tmp_path_factory)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MAILSERVERD_PUSH_RECHECK", str(RECHECK))
        daemon = make(listeners=("smtp", "http"),
                      extra_config={"auth": {"penalty_initial": "0s"},
                                    "http": {"session_lifetime": f"{SESSION_LIFETIME}s"}})
    yield daemon
    _stop_all(servers)


def open_socket(server, headers):
    host, port = server.address("http")
    return connect(f"ws://{host}:{port}/jmap/ws", subprotocols=["jmap"], additional_headers=headers,
                   proxy=None, open_timeout=10, max_size=None)


def echo(ws) -> None:
    """The socket still answers a Request."""
    ws.send(json.dumps({"@type": "Request", "id": "e", "using": [CORE, MAIL],
                        "methodCalls": [["Core/echo", {"x": 1}, "c"]]}))
    assert json.loads(ws.recv(timeout=5))["requestId"] == "e"


def closed_with(ws, timeout=CLOSE_WITHIN):
    """(code, reason) of the close frame the server sends within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as caught:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the WebSocket was still open after {timeout} s")
            ws.recv(timeout=left)  # a StateChange may come first
    return caught.value.rcvd.code, caught.value.rcvd.reason


class Stream:
    """GET /jmap/eventsource with the given headers, read up to ": ready"."""

    def __init__(self, server, path="/jmap/eventsource?types=*&closeafter=no&ping=0", headers=None):
        self.connection = http.client.HTTPConnection(*server.address("http"), timeout=CLOSE_WITHIN)
        self.connection.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        self.response = self.connection.getresponse()
        assert self.response.status == 200, self.response.read()
        assert self.response.readline() == b": ready\n"
        self.response.readline()

    def rest(self) -> bytes:
        """Everything until the server ends the response (a timeout fails the test)."""
        try:
            return self.response.read()
        finally:
            self.connection.close()


def logout(server, cookie, csrf) -> None:
    status, _h, body = call(server, "POST", "/auth/logout", headers={"Cookie": cookie, "X-CSRF-Token": csrf})
    assert status == 204, body


def test_logout_closes_the_sessions_eventsource_and_websocket_at_once(server):
    """POST /auth/logout ends the EventSource stream opened with that cookie (a comment
    line says why) and closes its WebSocket with 1008 "signed out" at once; a WebSocket
    of another session of the same account stays open and working."""
    cookie, answer, _ = login(server)
    other_cookie, _other, _ = login(server)
    stream = Stream(server, headers={"Cookie": cookie})
    ws = open_socket(server, {"Cookie": cookie})
    other = open_socket(server, {"Cookie": other_cookie})
    try:
        echo(ws)
        started = time.monotonic()
        logout(server, cookie, answer["csrfToken"])
        assert closed_with(ws) == (POLICY_VIOLATION, "signed out")
        assert b": closed: signed out" in stream.rest()
        assert time.monotonic() - started < CLOSE_WITHIN
        echo(other)
    finally:
        ws.close()
        other.close()


def test_logout_closes_an_eventsource_opened_with_a_ticket(server):
    """A push ticket got with the session cookie opens an EventSource that lives as long
    as that session: signing out ends it, and an unused ticket of that session no longer
    opens anything (401)."""
    cookie, answer, _ = login(server)
    tickets = []
    for _ in range(2):
        status, _h, body = call(server, "POST", "/jmap/ticket",
                                headers={"Cookie": cookie, "X-CSRF-Token": answer["csrfToken"]})
        assert status == 201, body
        tickets.append(json.loads(body)["ticket"])
    path = "/jmap/eventsource?types=*&closeafter=no&ping=0&ticket="
    stream = Stream(server, path + tickets[0])
    logout(server, cookie, answer["csrfToken"])
    assert b": closed: signed out" in stream.rest()
    status, _h, body = call(server, "GET", path + tickets[1])
    assert status == 401 and json.loads(body)["type"] == "unauthorized"


def test_token_revoke_closes_the_bearer_websocket(server):
    """`mailserverctl token revoke` closes the WebSocket that token opened with 1008 and a
    reason naming the token; a WebSocket of another token stays open across several
    recheck intervals."""
    token = server.ctl("token", "create", ALICE).stdout.strip()
    kept = server.ctl("token", "create", ALICE).stdout.strip()
    ws = open_socket(server, {"Authorization": "Bearer " + token})
    other = open_socket(server, {"Authorization": "Bearer " + kept})
    try:
        echo(ws)
        server.ctl("token", "revoke", token.split("_")[1])
        code, reason = closed_with(ws)
        assert code == POLICY_VIOLATION and "token" in reason
        time.sleep(3 * RECHECK)
        echo(other)
    finally:
        ws.close()
        other.close()


def test_password_change_closes_basic_push_connections(server):
    """`mailserverctl user passwd` ends the EventSource stream and closes the WebSocket
    that bob opened with HTTP Basic (1008, the password changed); alice's stay open."""
    stream = Stream(server, headers={"Authorization": basic(BOB)})
    ws = open_socket(server, {"Authorization": basic(BOB)})
    alice = open_socket(server, {"Authorization": basic(ALICE)})
    try:
        echo(ws)
        server.ctl("user", "passwd", BOB, "--password", "changed-pw-9")
        code, reason = closed_with(ws)
        assert code == POLICY_VIOLATION and "password" in reason
        assert b": closed: the password changed" in stream.rest()
        time.sleep(3 * RECHECK)
        echo(alice)
    finally:
        server.ctl("user", "passwd", BOB, "--password", PASSWORD)
        ws.close()
        alice.close()


def test_session_expiry_closes_the_cookie_websocket_within_the_interval(server):
    """With no sign-out and no admin command, a session that outlives its sliding
    lifetime while only its WebSocket is open is found dead by the periodic check:
    the WebSocket closes with 1008 within a recheck interval of the expiry."""
    cookie, _answer, _ = login(server)
    ws = open_socket(server, {"Cookie": cookie})
    try:
        opened = time.monotonic()
        echo(ws)
        code, reason = closed_with(ws, timeout=SESSION_LIFETIME + CLOSE_WITHIN)
        assert code == POLICY_VIOLATION and "session ended" in reason
        assert time.monotonic() - opened >= SESSION_LIFETIME - 0.5  # not before it expired
    finally:
        ws.close()
