"""The /v1 REST API (../shared/INTERFACE.md) over the real daemon: a message sent with
POST /v1/messages reaches another local user, who lists, reads, searches, marks,
moves and deletes it; errors are JSON with a type and a detail."""

from __future__ import annotations

import json

import pytest

from tests.transcript.test_jmap_http import ALICE, BOB, Client


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """One daemon (smtp, imap, http) for the module; no auth penalty."""
    from tests.conftest import _make_servers, _stop_all
    make, servers = _make_servers(request, tmp_path_factory)
    yield make(listeners=("smtp", "imap", "http"), extra_config={"auth": {"penalty_initial": "0s"}})
    _stop_all(servers)


def rest(client, method, path, body=None, auth=True):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"} if data is not None else {}
    status, response_headers, answer = client.request(method, path, data, headers, auth=auth)
    return status, (json.loads(answer) if answer else None), response_headers


def test_openapi_and_errors(server):
    """/v1/openapi.json describes every route; no credentials is 401; an unknown path
    404, a wrong method 405, a body that is not JSON 400 notJSON: all {type, detail}."""
    alice = Client(server)
    status, document, _h = rest(alice, "GET", "/v1/openapi.json", auth=False)
    assert status == 200 and document["openapi"].startswith("3.")
    assert {"/v1/messages", "/v1/folders", "/v1/folders/{id}/messages", "/v1/messages/{id}",
            "/v1/search"} <= set(document["paths"])
    for method, path, body, want, kind in (("GET", "/v1/folders", None, 401, "unauthorized"),
                                           ("GET", "/v1/nothing", None, 404, "notFound"),
                                           ("PUT", "/v1/folders", b"{}", 405, "methodNotAllowed"),
                                           ("POST", "/v1/messages", b"{nope", 400, "notJSON"),
                                           ("GET", "/v1/messages/e999999", None, 404, "notFound"),
                                           ("GET", "/v1/search", None, 400, "invalidArguments")):
        status, answer, _h = rest(alice, method, path, body, auth=want != 401)
        assert status == want and answer["type"] == kind and answer["detail"], (path, answer)


def test_form_post_that_parses_as_json_is_refused(server):
    """CSRF through cached Basic credentials: another site's HTML form (enctype text/plain,
    field name '{"to":...,"text":"' and value '"}') posts a body that parses as JSON. /v1
    writes take only Content-Type application/json (which a form cannot send), so the
    attack gets 400 notJSON and nothing is sent; PATCH likewise."""
    alice = Client(server)
    forged = ('{"to": ["%s"], "subject": "csrf", "text": "' % BOB + '=' + '"}').encode()
    assert json.loads(forged)["subject"] == "csrf"  # the body is valid JSON
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        status, _h, answer = alice.request("POST", "/v1/messages", forged, headers)
        assert status == 400 and json.loads(answer)["type"] == "notJSON", content_type
        status, _h, answer = alice.request("PATCH", "/v1/messages/e1", b'{"is_read": true}', headers)
        assert status == 400 and json.loads(answer)["type"] == "notJSON", content_type
    folders = {f["role"]: f for f in rest(alice, "GET", "/v1/folders")[1]["folders"]}
    sent = rest(alice, "GET", f"/v1/folders/{folders['sent']['id']}/messages")[1]["messages"]
    assert not [m for m in sent if m["subject"] == "csrf"]


def test_sent_message_reaches_another_user(server):
    """POST /v1/messages (To, Cc, Bcc) as Alice: 201, Bob delivered; Alice's copy is in
    Sent. Bob finds it unread in his inbox, reads it, marks it read, finds it by search
    (from:, subject:, is:read / is:unread), pages with limit and page_token, moves it to
    Archive, deletes it to Trash and then for good. Sending from Bob's address is 403 forbiddenFrom."""
    alice, bob = Client(server), Client(server, BOB)
    status, sent, _h = rest(alice, "POST", "/v1/messages", {
        "to": [{"name": "Bob", "email": BOB}], "cc": ALICE, "bcc": [BOB],
        "subject": "quarterly figures", "text": "Bob, the figures are in.\n"})
    assert status == 201, sent
    assert sent["delivery_status"] == {BOB: "yes", ALICE: "yes"}
    status, answer, _h = rest(alice, "POST", "/v1/messages", {"from": BOB, "to": [ALICE], "text": "x"})
    assert status == 403 and answer["type"] == "forbiddenFrom"
    status, answer, _h = rest(alice, "POST", "/v1/messages", {"subject": "nobody"})
    assert status == 400 and answer["type"] == "noRecipients"
    folders = {f["role"]: f for f in rest(alice, "GET", "/v1/folders")[1]["folders"]}
    mine = rest(alice, "GET", f"/v1/folders/{folders['sent']['id']}/messages")[1]["messages"]
    assert [m["id"] for m in mine] == [sent["id"]] and not mine[0]["is_draft"]
    assert rest(alice, "GET", f"/v1/folders/{folders['drafts']['id']}/messages")[1]["messages"] == []

    folders = {f["role"]: f for f in rest(bob, "GET", "/v1/folders")[1]["folders"]}
    inbox = folders["inbox"]["id"]
    assert folders["inbox"]["unread"] == 1
    page = rest(bob, "GET", f"/v1/folders/{inbox}/messages?is_read=false")[1]
    assert page["total"] == 1 and page["next_page_token"] is None
    summary = page["messages"][0]
    assert summary["subject"] == "quarterly figures" and summary["from"]["email"] == ALICE
    assert summary["is_read"] is False
    message_id = summary["id"]
    status, message, _h = rest(bob, "GET", f"/v1/messages/{message_id}")
    assert status == 200 and message["text"] == "Bob, the figures are in.\n" and message["bcc"] == []
    assert rest(bob, "GET", "/v1/search?q=" + "from:alice%20is:unread%20subject:quarterly")[1]["total"] == 1
    status, message, _h = rest(bob, "PATCH", f"/v1/messages/{message_id}", {"is_read": True})
    assert status == 200 and message["is_read"] is True
    assert rest(bob, "GET", "/v1/search?q=is:unread%20subject:quarterly")[1]["total"] == 0
    found = rest(bob, "GET", "/v1/search?q=is:read%20from:alice%20in:inbox")[1]["messages"]
    assert [m["id"] for m in found] == [message_id]
    assert rest(bob, "GET", f"/v1/folders/{inbox}/messages?is_read=false")[1]["total"] == 0

    rest(alice, "POST", "/v1/messages", {"to": BOB, "subject": "second", "text": "2\n"})
    first = rest(bob, "GET", f"/v1/folders/{inbox}/messages?limit=1")[1]
    assert first["total"] == 2 and first["messages"][0]["subject"] == "second"  # newest first
    token = first["next_page_token"]
    second = rest(bob, "GET", f"/v1/folders/{inbox}/messages?limit=1&page_token={token}")[1]
    assert second["messages"][0]["id"] == message_id and second["next_page_token"] is None
    status, answer, _h = rest(bob, "GET", f"/v1/folders/{inbox}/messages?page_token=zz")
    assert status == 400 and answer["type"] == "invalidArguments"

    archive = folders["archive"]["id"]
    status, message, _h = rest(bob, "PATCH", f"/v1/messages/{message_id}", {"folder_id": archive})
    assert status == 200 and message["folder_ids"] == [archive]
    status, _answer, _h = rest(bob, "DELETE", f"/v1/messages/{message_id}")
    assert status == 204  # to Trash
    trash = next(f["id"] for f in rest(bob, "GET", "/v1/folders")[1]["folders"] if f["role"] == "trash")
    assert rest(bob, "GET", f"/v1/messages/{message_id}")[1]["folder_ids"] == [trash]
    status, _answer, _h = rest(bob, "DELETE", f"/v1/messages/{message_id}")
    assert status == 204  # from Trash: for good
    assert rest(bob, "GET", f"/v1/messages/{message_id}")[0] == 404
    assert rest(alice, "GET", f"/v1/messages/{sent['id']}")[0] == 200  # Alice's copy stays
