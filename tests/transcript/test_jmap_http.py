"""JMAP over the real daemon's http listener: authentication, the session
resource, request-level errors, limits and account isolation (RFC 8620)."""

from __future__ import annotations

import base64
import http.client
import imaplib
import json
import smtplib
import socket
import time

import pytest

from tests.support.daemon import PASSWORD

ALICE, BOB = "alice@example.test", "bob@example.test"
CORE, MAIL = "urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"


def basic(user=ALICE, password=PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Client:
    def __init__(self, server, user=ALICE):
        self.server = server
        self.address = server.address("http")
        self.auth = basic(user)

    def request(self, method, path, body=None, headers=None, auth=True):
        connection = http.client.HTTPConnection(*self.address, timeout=10)
        try:
            all_headers = {"Authorization": self.auth} if auth else {}
            all_headers.update(headers or {})
            connection.request(method, path, body=body, headers=all_headers)
            response = connection.getresponse()
            return response.status, dict((k.lower(), v) for k, v in response.getheaders()), response.read()
        finally:
            connection.close()

    def session(self):
        status, _headers, body = self.request("GET", "/.well-known/jmap")
        assert status == 200, body
        return json.loads(body)

    def api(self, calls, using=(CORE, MAIL)):
        body = json.dumps({"using": list(using), "methodCalls": calls}).encode()
        status, headers, answer = self.request("POST", "/jmap/api", body, {"Content-Type": "application/json"})
        return status, headers, json.loads(answer)

    def call(self, name, args):
        status, _headers, answer = self.api([[name, args, "c"]])
        assert status == 200, answer
        return answer["methodResponses"][0]


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """One daemon (smtp + http) for the module; no auth penalty, so failures stay fast."""
    from tests.conftest import _make_servers, _stop_all
    make, servers = _make_servers(request, tmp_path_factory)
    yield make(listeners=("smtp", "imap", "http"), extra_config={"auth": {"penalty_initial": "0s"}})
    _stop_all(servers)


def deliver(server, to=ALICE, subject="hello", body="body text"):
    message = (f"From: Carol <carol@remote.test>\r\nTo: {to}\r\nSubject: {subject}\r\n"
               f"Message-ID: <{time.time_ns()}@remote.test>\r\nDate: Sat, 05 Dec 2026 10:00:00 +0000\r\n"
               f"\r\n{body}\r\n")
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as smtp:
        smtp.sendmail("carol@remote.test", [to], message)


def test_session_needs_basic_authentication(server):
    """No or wrong credentials: 401 JSON with WWW-Authenticate Basic; the failure is
    logged like IMAP's (auth failed ... proto=http) for fail2ban."""
    client = Client(server)
    status, headers, body = client.request("GET", "/.well-known/jmap", auth=False)
    assert status == 401 and headers["www-authenticate"].startswith("Basic realm=")
    assert json.loads(body)["type"] == "unauthorized"
    status, headers, body = client.request("GET", "/.well-known/jmap", headers={"Authorization": basic(password="x")})
    assert status == 401 and headers["content-type"] == "application/json"
    deadline = time.time() + 5
    while "proto=http" not in server.log and time.time() < deadline:
        time.sleep(0.05)
    assert "auth failed: user='alice@example.test'" in server.log and "proto=http" in server.log


def test_session_resource(server):
    """RFC 8620 2: capabilities with every core limit, the mail account, absolute
    URLs from a Host naming this server, and the configured hostname otherwise."""
    client = Client(server)
    session = client.session()
    limits = session["capabilities"][CORE]
    for key in ("maxSizeUpload", "maxConcurrentUpload", "maxSizeRequest", "maxConcurrentRequests",
                "maxCallsInRequest", "maxObjectsInGet", "maxObjectsInSet", "collationAlgorithms"):
        assert key in limits
    account_id = session["primaryAccounts"][MAIL]
    assert session["accounts"][account_id]["name"] == ALICE and session["username"] == ALICE
    host, port = client.address
    assert session["apiUrl"] == f"http://{host}:{port}/jmap/api"
    for key in ("downloadUrl", "uploadUrl", "eventSourceUrl"):
        assert session[key].startswith(f"http://{host}:{port}/jmap/")
    status, _h, body = client.request("GET", "/.well-known/jmap", headers={"Host": "evil.example"})
    assert json.loads(body)["apiUrl"] == f"http://{server.hostname}:{port}/jmap/api"


@pytest.mark.parametrize("body,content_type,kind", [
    (b"[" * 100_000, "application/json", "notJSON"),
    (b'{"using": [], "using": [], "methodCalls": []}', "application/json", "notJSON"),
    (b'{"using": [], "methodCalls": [], "x": "\xff"}', "application/json", "notJSON"),
    (b'{"using": [], "methodCalls": []}', "text/plain", "notJSON"),
    (b'[1, 2]', "application/json", "notRequest"),
    (b'{"using": ["urn:x"], "methodCalls": []}', "application/json", "unknownCapability"),
    (json.dumps({"using": [CORE], "methodCalls": [["Core/echo", {}, str(n)] for n in range(100)]}).encode(),
     "application/json", "limit"),
])
def test_request_level_errors(server, body, content_type, kind):
    """RFC 8620 3.6.1: deep nesting, duplicate keys, invalid UTF-8, a wrong content type,
    a non-Request, an unknown capability and too many calls are problem details, never a 500."""
    status, headers, answer = Client(server).request("POST", "/jmap/api", body, {"Content-Type": content_type})
    assert status == 400, answer
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(answer)
    assert problem["type"] == "urn:ietf:params:jmap:error:" + kind and problem["status"] == 400
    if kind == "limit":
        assert problem["limit"] == "maxCallsInRequest"


def test_huge_content_length_is_refused_before_reading(server):
    """A 1 GB Content-Length gets 413 at once, before any body byte is sent: on the API
    an RFC 8620 3.6.1 limit problem naming maxSizeRequest."""
    with socket.create_connection(server.address("http"), timeout=5) as sock:
        sock.sendall(b"POST /jmap/api HTTP/1.1\r\nHost: x\r\nAuthorization: " + basic().encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413") and b"application/problem+json" in answer
    assert b'"urn:ietf:params:jmap:error:limit"' in answer and b'"maxSizeRequest"' in answer


def test_unknown_path_and_method_are_json(server):
    """Unknown paths are 404 JSON, wrong methods 405 JSON with Allow; /healthz still works."""
    client = Client(server)
    status, headers, body = client.request("GET", "/jmap/nothing")
    assert status == 404 and json.loads(body)["type"] == "notFound"
    status, headers, body = client.request("GET", "/jmap/api")
    assert status == 405 and headers["allow"] == "POST"
    status, _h, body = client.request("GET", "/healthz", auth=False)
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_echo_and_method_errors(server):
    """Core/echo; unknownMethod, accountNotFound, invalidArguments and an invalid
    result reference are method-level errors; later calls still run (RFC 8620 3.6.2)."""
    client = Client(server)
    status, _h, answer = client.api([
        ["Core/echo", {"hello": [1, 2]}, "0"],
        ["Nope/get", {}, "1"],
        ["Mailbox/get", {"accountId": "a999999"}, "2"],
        ["Mailbox/get", {"accountId": 5}, "3"],
        ["Mailbox/get", {"accountId": client.session()["primaryAccounts"][MAIL],
                         "#ids": {"resultOf": "zz", "name": "Mailbox/query", "path": "/ids"}}, "4"],
        ["Core/echo", {"after": True}, "5"],
    ])
    responses = answer["methodResponses"]
    assert responses[0] == ["Core/echo", {"hello": [1, 2]}, "0"]
    assert [r[1].get("type") for r in responses[1:5]] == [
        "unknownMethod", "accountNotFound", "invalidArguments", "invalidResultReference"]
    assert responses[5] == ["Core/echo", {"after": True}, "5"]


def test_account_isolation(server):
    """Bob cannot reach Alice's account, emails, mailboxes or blobs: accountNotFound,
    notFound and 404 (with nothing of hers in the answers)."""
    deliver(server, ALICE, subject="for alice only")
    alice, bob = Client(server), Client(server, BOB)
    alice_id = alice.session()["primaryAccounts"][MAIL]
    bob_id = bob.session()["primaryAccounts"][MAIL]
    found = alice.call("Email/query", {"accountId": alice_id, "filter": {"subject": "for alice only"}})
    email_id = found[1]["ids"][0]
    email = alice.call("Email/get", {"accountId": alice_id, "ids": [email_id],
                                     "properties": ["blobId", "mailboxIds", "threadId"]})[1]["list"][0]
    mailbox_id = next(iter(email["mailboxIds"]))
    assert bob.call("Email/get", {"accountId": alice_id, "ids": [email_id]})[1]["type"] == "accountNotFound"
    got = bob.call("Email/get", {"accountId": bob_id, "ids": [email_id]})[1]
    assert got["list"] == [] and got["notFound"] == [email_id]
    # ids are scoped to their account (the shards number rows alike): the same
    # mailbox id may name one of Bob's own, empty, mailboxes, never Alice's
    got = bob.call("Mailbox/get", {"accountId": bob_id, "ids": [mailbox_id]})[1]
    assert got["notFound"] == [mailbox_id] or got["list"][0]["totalEmails"] == 0
    got = bob.call("Thread/get", {"accountId": bob_id, "ids": [email["threadId"]]})[1]
    assert got["notFound"] == [email["threadId"]]
    query = bob.call("Email/query", {"accountId": bob_id, "filter": {"inMailbox": mailbox_id}})[1]
    assert query["ids"] == []
    changes = bob.call("Email/changes", {"accountId": bob_id, "sinceState": "0"})[1]
    assert email_id not in changes["created"] + changes["updated"] + changes["destroyed"]
    update = bob.call("Email/set", {"accountId": bob_id, "update": {email_id: {"keywords/$seen": True}},
                                    "destroy": [email_id]})[1]
    assert update["notUpdated"][email_id]["type"] == "notFound"
    assert update["notDestroyed"][email_id]["type"] == "notFound"
    for account in (alice_id, bob_id):
        status, _h, _b = bob.request("GET", f"/jmap/download/{account}/{email['blobId']}/x.eml")
        assert status == 404
    status, _h, body = alice.request("GET", f"/jmap/download/{alice_id}/{email['blobId']}/x.eml?type=message/rfc822")
    assert status == 200 and b"for alice only" in body


def test_upload_then_download(server):
    """RFC 8620 6.1-6.2: an upload answers blobId/type/size and downloads back with the
    asked type and an attachment disposition; another account's upload URL is 404."""
    client = Client(server)
    account_id = client.session()["primaryAccounts"][MAIL]
    data = bytes(range(256)) * 40
    status, _h, body = client.request("POST", f"/jmap/upload/{account_id}/", data, {"Content-Type": "image/png"})
    assert status == 201, body
    answer = json.loads(body)
    assert answer["size"] == len(data) and answer["type"] == "image/png" and answer["accountId"] == account_id
    status, headers, body = client.request(
        "GET", f"/jmap/download/{account_id}/{answer['blobId']}/pic%20one.png?type=image/png")
    assert status == 200 and body == data and headers["content-type"] == "image/png"
    assert headers["content-disposition"] == "attachment; filename*=UTF-8''pic%20one.png"
    bob = Client(server, BOB)
    bob_id = bob.session()["primaryAccounts"][MAIL]
    status, _h, _b = bob.request("GET", f"/jmap/download/{bob_id}/{answer['blobId']}/x")
    assert status == 404
    status, _h, _b = bob.request("POST", f"/jmap/upload/{account_id}/", b"x", {"Content-Type": "text/plain"})
    assert status == 404


def test_eventsource_state_change_after_smtp_delivery(server):
    """RFC 8620 7.3: a StateChange for Email and Mailbox arrives over the event stream
    within one second of an SMTP delivery's 250; closeafter=state ends the response."""
    client = Client(server)
    account_id = client.session()["primaryAccounts"][MAIL]
    connection = http.client.HTTPConnection(*client.address, timeout=10)
    connection.request("GET", "/jmap/eventsource?types=*&closeafter=state&ping=0",
                       headers={"Authorization": client.auth, "Accept": "text/event-stream"})
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("content-type").startswith("text/event-stream")
    assert response.readline() == b": ready\n"  # the baseline state is read: changes from here are pushed
    response.readline()
    deliver(server, ALICE, subject="push me")
    delivered = time.monotonic()
    lines = []
    while True:
        line = response.readline()
        if not line.strip():
            if lines:
                break
            continue
        lines.append(line.decode().rstrip("\n"))
    elapsed = time.monotonic() - delivered
    assert lines[0] == "event: state"
    change = json.loads(lines[1][len("data: "):])
    assert change["@type"] == "StateChange" and {"Email", "Mailbox"} <= set(change["changed"][account_id])
    assert elapsed < 1.0, elapsed
    assert response.read() == b""  # closeafter=state: the response ended
    connection.close()


def test_eventsource_bad_arguments_are_json(server):
    """Unknown types or closeafter values are a 400 JSON answer, not a stream."""
    status, _h, body = Client(server).request("GET", "/jmap/eventsource?types=Nope&closeafter=no&ping=0")
    assert status == 400 and json.loads(body)["type"] == "invalidArguments"


def test_bearer_tokens_from_mailserverctl(server):
    """mailserverctl token create prints a token that authenticates as its account
    (Bearer, RFC 6750); token list shows its id and never the secret; after revoke,
    or with a forged secret, it is 401 and the failure is logged with the token id."""
    created = server.ctl("token", "create", ALICE, "--expires", "1h")
    token = created.stdout.strip()
    token_id = token.split("_")[1]
    client = Client(server)
    client.auth = "Bearer " + token
    assert client.session()["username"] == ALICE
    listed = server.ctl("token", "list").stdout
    assert token_id in listed and token.split("_")[2] not in listed and ALICE in listed
    forged = Client(server)
    forged.auth = "Bearer " + token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    status, headers, _body = forged.request("GET", "/.well-known/jmap")
    assert status == 401 and "Bearer" in headers["www-authenticate"]
    server.ctl("token", "revoke", token_id)
    status, _h, _b = client.request("GET", "/.well-known/jmap")
    assert status == 401
    deadline = time.time() + 5
    while f"token:{token_id}" not in server.log and time.time() < deadline:
        time.sleep(0.05)
    assert f"auth failed: user='token:{token_id}'" in server.log


def test_imap_and_jmap_share_one_change_log(server):
    """A flag set over IMAP shows in JMAP Email/changes (updated) and Email/get keywords;
    a JMAP keyword and mailbox change shows in IMAP FETCH FLAGS and in the target mailbox."""
    deliver(server, BOB, subject="shared log")
    jmap = Client(server, BOB)
    account_id = jmap.session()["primaryAccounts"][MAIL]
    email_id = jmap.call("Email/query", {"accountId": account_id, "filter": {"subject": "shared log"}})[1]["ids"][0]
    since = jmap.call("Email/get", {"accountId": account_id, "ids": []})[1]["state"]
    imap = imaplib.IMAP4(*server.address("imap"), timeout=10)
    try:
        imap.login(BOB, PASSWORD)
        imap.select("INBOX")
        _typ, data = imap.uid("SEARCH", None, "SUBJECT", '"shared log"')
        uid = data[0].split()[-1]
        imap.uid("STORE", uid, "+FLAGS", "(\\Flagged)")
        changes = jmap.call("Email/changes", {"accountId": account_id, "sinceState": since})[1]
        assert changes["updated"] == [email_id]
        got = jmap.call("Email/get", {"accountId": account_id, "ids": [email_id], "properties": ["keywords"]})
        assert got[1]["list"][0]["keywords"] == {"$flagged": True}
        boxes = jmap.call("Mailbox/get", {"accountId": account_id})[1]["list"]
        archive = next(b["id"] for b in boxes if b["role"] == "archive")
        answer = jmap.call("Email/set", {"accountId": account_id, "update": {
            email_id: {"keywords/$seen": True, f"mailboxIds/{archive}": True}}})[1]
        assert answer["updated"] == {email_id: None}, answer
        imap.noop()  # RFC 3501 6.1.2: other sessions' flag changes are reported by the next command
        _typ, data = imap.uid("FETCH", uid, "(FLAGS)")
        assert b"\\Seen" in data[0] and b"\\Flagged" in data[0]
        _typ, data = imap.select("Archive")
        assert data == [b"1"]
    finally:
        imap.logout()


def test_password_change_ends_cached_basic_logins(server):
    """A verified Basic header is reused for a minute without logging "auth ok" again,
    but a password change (mailserverctl user passwd) ends that at once."""
    client = Client(server, BOB)
    assert client.session()["username"] == BOB
    before = server.log.count("auth ok: user=bob@example.test rip=127.0.0.1 proto=http")
    client.session()
    assert server.log.count("auth ok: user=bob@example.test rip=127.0.0.1 proto=http") == before
    server.ctl("user", "passwd", BOB, "--password", "changed-pw-9")
    try:
        status, _h, _b = client.request("GET", "/.well-known/jmap")
        assert status == 401
        client.auth = basic(BOB, "changed-pw-9")
        assert client.session()["username"] == BOB
    finally:
        server.ctl("user", "passwd", BOB, "--password", PASSWORD)


def test_failed_http_logins_pay_the_auth_penalty(mailserver_factory):
    """A wrong Basic password, then a forged Bearer token from the same IP, wait out the
    auth penalty ([auth] penalty_initial) as IMAP's do before the 401."""
    server = mailserver_factory(listeners=("http",), extra_config={"auth": {"penalty_initial": "1s"}})
    client = Client(server)
    client.auth = basic(password="wrong")
    started = time.monotonic()
    status, _h, _b = client.request("GET", "/.well-known/jmap")
    assert status == 401 and time.monotonic() - started >= 1.0
    client.auth = "Bearer msd_0123456789abcdef_" + "A" * 43
    started = time.monotonic()
    status, _h, _b = client.request("GET", "/.well-known/jmap")
    assert status == 401 and time.monotonic() - started >= 1.0
