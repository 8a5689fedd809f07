"""JMAP over WebSocket (RFC 8887) on the real daemon's http listener, driven by
an independent client (the `websockets` package): the upgrade (authentication,
the "jmap" subprotocol), Request/Response/RequestError messages, limits, and
push (WebSocketPushEnable/Disable, StateChange) after deliveries by SMTP, IMAP
APPEND and JMAP."""

from __future__ import annotations

import http.client
import imaplib
import json
import socket
import ssl
import time

import pytest

from tests.support.daemon import PASSWORD

websockets = pytest.importorskip("websockets", reason="the websockets client: pip install -e '.[test]'")
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from tests.transcript.test_jmap_http import ALICE, BOB, CORE, MAIL, Client, basic, deliver  # noqa: E402

WEBSOCKET = "urn:ietf:params:jmap:websocket"
PUSH_DEADLINE = 1.0  # seconds from a delivery to its StateChange (issue 11)
QUIET = 0.5  # seconds a socket must stay silent after a witness socket got its push
MAX_SIZE_REQUEST = 10 * 1024 * 1024  # maxSizeRequest of the session resource


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """One daemon (smtp, imap, http, https) for the module; no auth penalty, so failures stay fast."""
    from tests.conftest import _make_servers, _stop_all
    make, servers = _make_servers(request, tmp_path_factory)
    yield make(listeners=("smtp", "imap", "http", "https"), extra_config={"auth": {"penalty_initial": "0s"}})
    _stop_all(servers)


def url(server) -> str:
    host, port = server.address("http")
    return f"ws://{host}:{port}/jmap/ws"


def open_socket(server, user=ALICE, subprotocols=("jmap",), auth=True):
    headers = {"Authorization": basic(user)} if auth else {}
    return connect(url(server), subprotocols=list(subprotocols) if subprotocols else None,
                   additional_headers=headers, proxy=None, open_timeout=10, max_size=None)


def receive(ws, timeout=10.0) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def ask(ws, calls, request_id="r1", using=(CORE, MAIL)) -> dict:
    ws.send(json.dumps({"@type": "Request", "id": request_id, "using": list(using), "methodCalls": calls}))
    while True:
        answer = receive(ws)
        if answer.get("@type") != "StateChange":
            return answer


def enable_push(ws, data_types=None, push_state=None) -> None:
    """WebSocketPushEnable, then a Request: its Response comes once the baseline is taken."""
    message = {"@type": "WebSocketPushEnable", "dataTypes": data_types}
    if push_state is not None:
        message["pushState"] = push_state
    ws.send(json.dumps(message))
    assert ask(ws, [["Core/echo", {}, "e"]], "sync")["requestId"] == "sync"


def next_state_change(ws, timeout=PUSH_DEADLINE) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no StateChange within {timeout} s")
        try:
            message = receive(ws, left)
        except TimeoutError:
            raise AssertionError(f"no StateChange within {timeout} s")
        if message.get("@type") == "StateChange":
            return message


def metric(server, name: str) -> int:
    status, _headers, body = Client(server).request("GET", "/metrics", auth=False)
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def push_listeners(server) -> int:
    return metric(server, "mailserverd_jmap_websocket_push_listeners")


def settles_at(server, name: str, value: int, timeout: float = 10.0) -> bool:
    """The gauge reaches value within timeout (the server notices closes asynchronously)."""
    deadline = time.monotonic() + timeout
    while metric(server, name) != value:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_request_response_with_request_id(server):
    """RFC 8887 4.3.1-4.3.2: a Request's answer is a Response naming its id in requestId,
    with the methodResponses and sessionState POST /jmap/api gives; a Request without id
    is answered without requestId."""
    http_client = Client(server)
    session_state = http_client.session()["state"]
    with open_socket(server) as ws:
        assert ws.subprotocol == "jmap"
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None  # permessage-deflate declined
        answer = ask(ws, [["Core/echo", {"hello": True}, "c1"]], "first")
        assert answer == {"@type": "Response", "requestId": "first",
                          "methodResponses": [["Core/echo", {"hello": True}, "c1"]],
                          "sessionState": session_state}
        ws.send(json.dumps({"@type": "Request", "using": [CORE], "methodCalls": [["Core/echo", {}, "c"]]}))
        answer = receive(ws)
        assert answer["@type"] == "Response" and "requestId" not in answer


def test_result_references(server):
    """RFC 8620 3.7 over the WebSocket: Mailbox/query then Mailbox/get by #ids back-reference."""
    account_id = Client(server).session()["primaryAccounts"][MAIL]
    with open_socket(server) as ws:
        answer = ask(ws, [["Mailbox/query", {"accountId": account_id, "filter": {"role": "inbox"}}, "q"],
                          ["Mailbox/get", {"accountId": account_id, "properties": ["name", "role"],
                                           "#ids": {"resultOf": "q", "name": "Mailbox/query", "path": "/ids"}},
                           "g"]])
        (_n1, query, _c1), (name, got, call_id) = answer["methodResponses"]
        assert (name, call_id) == ("Mailbox/get", "g")
        assert [m["id"] for m in got["list"]] == query["ids"] and got["list"][0]["role"] == "inbox"


@pytest.mark.parametrize("message,kind,request_id", [
    (b"{not json", "notJSON", None),
    (b'{"@type": "Request", "id": "a", "using": [], "methodCalls": [], "using": []}', "notJSON", None),
    (b"[1, 2]", "notRequest", None),
    (b'{"@type": "Request", "id": "b", "using": 5, "methodCalls": []}', "notRequest", "b"),
    (b'{"@type": "Nonsense", "id": "c"}', "notRequest", "c"),
    (b'{"using": [], "methodCalls": []}', "notRequest", None),
    (b'{"@type": "Request", "id": "d", "using": ["urn:x"], "methodCalls": []}', "unknownCapability", "d"),
    (b'{"@type": "WebSocketPushEnable", "id": "e", "dataTypes": "Email"}', "notRequest", "e"),
])
def test_request_errors(server, message, kind, request_id):
    """RFC 8887 4.3.4: a message that is not I-JSON or not a Request is answered by a
    RequestError (RFC 7807 problem details with @type and, when the id could be read,
    requestId); the connection stays usable."""
    with open_socket(server) as ws:
        ws.send(message.decode())
        answer = receive(ws)
        assert answer["@type"] == "RequestError"
        assert answer["type"] == "urn:ietf:params:jmap:error:" + kind and answer["status"] == 400
        assert answer.get("requestId") == request_id
        assert ask(ws, [["Core/echo", {}, "c"]], "after")["@type"] == "Response"


def test_too_many_calls_is_a_limit_request_error(server):
    """maxCallsInRequest applies to a WebSocket Request as to POST /jmap/api."""
    with open_socket(server) as ws:
        answer = ask(ws, [["Core/echo", {}, str(i)] for i in range(33)], "many")
        assert answer["@type"] == "RequestError" and answer["requestId"] == "many"
        assert answer["type"] == "urn:ietf:params:jmap:error:limit" and answer["limit"] == "maxCallsInRequest"


def test_oversized_message_is_refused(server):
    """A message over maxSizeRequest closes the connection with 1009 (RFC 6455 7.4.1)
    from its frame header, before the server buffers it."""
    with open_socket(server) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.send("x" * (MAX_SIZE_REQUEST + 1))
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_binary_frame_is_refused(server):
    """RFC 8887 4.3: JMAP messages are text frames; a binary one closes with 1003."""
    with open_socket(server) as ws:
        ws.send(b'{"@type": "Request", "using": [], "methodCalls": []}')
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1003


def test_upgrade_needs_the_jmap_subprotocol(server):
    """RFC 8887 4.2: an upgrade that does not offer "jmap" is refused (400 JSON, no upgrade)."""
    for offered in (None, ("chat",)):
        with pytest.raises(InvalidStatus) as refused:
            open_socket(server, subprotocols=offered)
        assert refused.value.response.status_code == 400
        assert json.loads(refused.value.response.body)["type"] == "badRequest"


def test_upgrade_needs_authentication(server):
    """The upgrade request is authenticated first (JMAPResource._authenticate): none or a
    wrong password is a JSON 401 and the connection is never upgraded."""
    with pytest.raises(InvalidStatus) as refused:
        open_socket(server, auth=False)
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["type"] == "unauthorized"
    with pytest.raises(InvalidStatus) as refused:
        connect(url(server), subprotocols=["jmap"], proxy=None,
                additional_headers={"Authorization": basic(ALICE, PASSWORD + "x")})
    assert refused.value.response.status_code == 401


def test_plain_get_is_upgrade_required(server):
    """GET /jmap/ws without Upgrade: websocket is a JSON 426, not an HTML page."""
    status, headers, body = Client(server).request("GET", "/jmap/ws")
    assert status == 426 and headers["upgrade"].lower() == "websocket"
    assert json.loads(body)["type"] == "upgradeRequired"


def test_session_advertises_websocket(server):
    """RFC 8887 3: the session names the WebSocket URL (ws:// on the http listener) with supportsPush."""
    capability = Client(server).session()["capabilities"][WEBSOCKET]
    assert capability == {"url": url(server), "supportsPush": True}


def test_push_after_smtp_imap_and_jmap_changes(server):
    """RFC 8887 4.3.5: after WebSocketPushEnable a StateChange naming Email (and Mailbox)
    for the account arrives within one second of an SMTP delivery's 250, of an IMAP
    APPEND's OK and of a JMAP Email/set; each carries a pushState."""
    client = Client(server)
    account_id = client.session()["primaryAccounts"][MAIL]
    with open_socket(server) as ws:
        enable_push(ws)
        deliver(server, ALICE, subject="push over websocket")
        started = time.monotonic()
        change = next_state_change(ws)
        assert time.monotonic() - started < PUSH_DEADLINE
        assert set(change["changed"]) == {account_id}
        assert {"Email", "Mailbox", "Thread"} <= set(change["changed"][account_id])
        assert isinstance(change["pushState"], str) and change["pushState"]

        imap = imaplib.IMAP4(*server.address("imap"))
        imap.login(ALICE, PASSWORD)
        imap.append("INBOX", None, None, b"Subject: appended\r\n\r\nbody\r\n")
        started = time.monotonic()
        change = next_state_change(ws)
        assert time.monotonic() - started < PUSH_DEADLINE and "Email" in change["changed"][account_id]
        imap.logout()

        query = client.call("Email/query", {"accountId": account_id, "limit": 1})[1]
        client.call("Email/set", {"accountId": account_id,
                                  "update": {query["ids"][0]: {"keywords/$flagged": True}}})
        started = time.monotonic()
        change = next_state_change(ws)
        assert time.monotonic() - started < PUSH_DEADLINE and "Email" in change["changed"][account_id]


def test_push_data_types_and_push_state(server):
    """dataTypes limits what is pushed (["Mailbox"]: no Email entry); a new connection
    enabling push with an earlier pushState is told at once what changed meanwhile."""
    account_id = Client(server).session()["primaryAccounts"][MAIL]
    with open_socket(server) as ws:
        enable_push(ws, ["Mailbox"])
        deliver(server, ALICE, subject="mailbox only")
        change = next_state_change(ws)
        assert set(change["changed"][account_id]) == {"Mailbox"}
        push_state = change["pushState"]
    deliver(server, ALICE, subject="while away")
    with open_socket(server) as ws:
        ws.send(json.dumps({"@type": "WebSocketPushEnable", "dataTypes": None, "pushState": push_state}))
        change = next_state_change(ws)
        assert "Email" in change["changed"][account_id] and change["pushState"] != push_state


def test_push_disable_and_account_isolation(server):
    """WebSocketPushDisable stops pushes; another account's delivery is never pushed.
    A second socket with push on is the witness that the change was announced."""
    alice_id = Client(server).session()["primaryAccounts"][MAIL]
    bob_id = Client(server, BOB).session()["primaryAccounts"][MAIL]
    with open_socket(server) as quiet, open_socket(server) as witness, open_socket(server, BOB) as bob:
        enable_push(quiet)
        enable_push(witness)
        enable_push(bob)
        quiet.send(json.dumps({"@type": "WebSocketPushDisable"}))
        assert ask(quiet, [["Core/echo", {}, "e"]])["@type"] == "Response"
        deliver(server, ALICE, subject="only the witness hears")
        assert alice_id in next_state_change(witness)["changed"]
        with pytest.raises(TimeoutError):
            quiet.recv(timeout=QUIET)
        with pytest.raises(TimeoutError):
            bob.recv(timeout=0.1)  # alice's delivery is not bob's business
        deliver(server, BOB, subject="bob's")
        assert set(next_state_change(bob)["changed"]) == {bob_id}
        with pytest.raises(TimeoutError):
            witness.recv(timeout=QUIET)


def test_closing_removes_every_push_listener(server):
    """Closing a WebSocket, cleanly or not, unsubscribes it from the store's change
    hook: the listener gauge in /metrics goes back to where it was."""
    before = push_listeners(server)
    sockets = [open_socket(server) for _ in range(3)]
    for ws in sockets:
        enable_push(ws)
    assert push_listeners(server) == before + 3
    sockets[0].close()
    sockets[1].socket.shutdown(socket.SHUT_RDWR)  # the TCP connection dropped without a close frame
    sockets[2].send(json.dumps({"@type": "WebSocketPushDisable"}))
    assert ask(sockets[2], [["Core/echo", {}, "e"]])["@type"] == "Response"
    assert settles_at(server, "mailserverd_jmap_websocket_push_listeners", before)
    sockets[2].close()


def test_upgrade_with_a_push_ticket(server):
    """A browser on another origin cannot set Authorization on a WebSocket: POST /jmap/ticket
    gives a single-use ticket accepted as ?ticket= of the upgrade; used twice it is a 401."""
    status, _headers, body = Client(server).request("POST", "/jmap/ticket")
    assert status == 201, body
    ticket = json.loads(body)["ticket"]
    address = url(server) + "?ticket=" + ticket
    with connect(address, subprotocols=["jmap"], proxy=None, compression=None) as ws:
        assert ask(ws, [["Core/echo", {}, "c"]])["@type"] == "Response"
    with pytest.raises(InvalidStatus) as refused:
        connect(address, subprotocols=["jmap"], proxy=None)
    assert refused.value.response.status_code == 401


def test_cookie_upgrade_checks_the_origin(server):
    """With the browser session cookie, the upgrade is accepted from the server's own
    origin and refused (403, no upgrade) from another one: cross-site WebSocket
    hijacking cannot ride on the cookie."""
    body = json.dumps({"username": ALICE, "password": PASSWORD}).encode()
    status, headers, answer = Client(server).request("POST", "/auth/login", body,
                                                     {"Content-Type": "application/json"}, auth=False)
    assert status == 200, answer
    cookie = headers["set-cookie"].split(";")[0]
    host, port = server.address("http")
    with connect(url(server), subprotocols=["jmap"], proxy=None, compression=None,
                 origin=f"http://{host}:{port}", additional_headers={"Cookie": cookie}) as ws:
        assert ask(ws, [["Core/echo", {}, "c"]])["@type"] == "Response"
    with pytest.raises(InvalidStatus) as refused:
        connect(url(server), subprotocols=["jmap"], proxy=None, origin="http://evil.example",
                additional_headers={"Cookie": cookie})
    assert refused.value.response.status_code == 403


def test_wss_on_the_https_listener(server):
    """Over TLS (the https listener, the daemon's self-signed certificate) the session
    names a wss:// URL, and the upgraded connection answers Requests and pushes."""
    host, port = server.address("https")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    connection = http.client.HTTPSConnection(host, port, timeout=10, context=context)
    connection.request("GET", "/.well-known/jmap", headers={"Authorization": basic()})
    session = json.loads(connection.getresponse().read())
    connection.close()
    assert session["capabilities"][WEBSOCKET]["url"] == f"wss://{host}:{port}/jmap/ws"
    account_id = session["primaryAccounts"][MAIL]
    with connect(f"wss://{host}:{port}/jmap/ws", ssl=context, subprotocols=["jmap"], proxy=None,
                 compression=None, additional_headers={"Authorization": basic()}) as ws:
        enable_push(ws)
        deliver(server, ALICE, subject="over tls")
        assert "Email" in next_state_change(ws)["changed"][account_id]


def test_sockets_per_account_are_limited(server):
    """At most 16 WebSockets per account (as for event streams): the next upgrade is a
    JSON 429 and no upgrade; closing one makes room again. Another account is not affected."""
    sockets = [open_socket(server, BOB) for _ in range(16)]
    try:
        with pytest.raises(InvalidStatus) as refused:
            open_socket(server, BOB)
        assert refused.value.response.status_code == 429
        assert json.loads(refused.value.response.body)["type"] == "limit"
        with open_socket(server, ALICE) as ws:
            assert ask(ws, [["Core/echo", {}, "c"]])["@type"] == "Response"
        sockets.pop().close()
        deadline = time.monotonic() + 10
        while True:
            try:
                sockets.append(open_socket(server, BOB))
                break
            except InvalidStatus:
                assert time.monotonic() < deadline, "the closed socket was never released"
                time.sleep(0.05)
    finally:
        for ws in sockets:
            ws.close()


@pytest.mark.parametrize("headers,status", [
    ({"Sec-WebSocket-Version": "8"}, 426),
    ({"Sec-WebSocket-Key": "short"}, 400),
    ({"Sec-WebSocket-Key": None}, 400),
    ({"Connection": "keep-alive"}, 400),
])
def test_bad_handshakes_are_json_and_leave_nothing(server, headers, status):
    """A handshake that RFC 6455 4.2.1 refuses (wrong version, missing or malformed key,
    no Connection: Upgrade)
    is a JSON error before any upgrade, and no connection is counted."""
    base = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "jmap"}
    base.update(headers)
    status_got, answer_headers, body = Client(server).request(
        "GET", "/jmap/ws", headers={k: v for k, v in base.items() if v is not None})
    assert status_got == status and answer_headers["content-type"] == "application/json"
    assert json.loads(body)["type"] in ("badRequest", "upgradeRequired")
    assert settles_at(server, "mailserverd_jmap_websocket_connections", 0)


def test_basic_upgrade_from_a_foreign_origin_is_refused(server):
    """Cross-site WebSocket hijacking with a browser's cached Basic credentials: a Basic
    upgrade from another Origin is a 403 and no upgrade; from the server's own origin
    it is accepted (clients outside a browser send no Origin: tested above)."""
    host, port = server.address("http")
    with pytest.raises(InvalidStatus) as refused:
        connect(url(server), subprotocols=["jmap"], proxy=None, origin="http://evil.example",
                additional_headers={"Authorization": basic()})
    assert refused.value.response.status_code == 403
    with connect(url(server), subprotocols=["jmap"], proxy=None, origin=f"http://{host}:{port}",
                 additional_headers={"Authorization": basic()}) as ws:
        assert ask(ws, [["Core/echo", {}, "c"]])["@type"] == "Response"


def test_concurrent_requests_are_limited(server):
    """maxConcurrentRequests holds over the WebSocket too: 200 Requests that read the
    store, written in one burst, each get exactly one answer (by requestId): a Response,
    or a RequestError limit naming maxConcurrentRequests once 64 are in flight."""
    account_id = Client(server).session()["primaryAccounts"][MAIL]
    count = 200
    with open_socket(server) as ws:
        for i in range(count):  # framed by the client's own protocol, sent as one write
            ws.protocol.send_text(json.dumps({
                "@type": "Request", "id": f"r{i}", "using": [CORE, MAIL],
                "methodCalls": [["Mailbox/get", {"accountId": account_id}, "m"]]}).encode())
        ws.socket.sendall(b"".join(ws.protocol.data_to_send()))
        answers = [receive(ws) for _ in range(count)]
    assert sorted(a["requestId"] for a in answers) == sorted(f"r{i}" for i in range(count))
    limited = [a for a in answers if a["@type"] == "RequestError"]
    assert all(a["type"] == "urn:ietf:params:jmap:error:limit" and a["limit"] == "maxConcurrentRequests"
               for a in limited)
    assert limited and len(limited) <= count - 64
