"""Regressions found by real clients and fuzzers (jmap-jam, schemathesis against
/v1/openapi.json), replayed over HTTP against the daemon: each request once drew a
500 or a wrong answer."""

from __future__ import annotations

import base64
from http.client import HTTPConnection
import json

import pytest

from tests.support.daemon import PASSWORD

ALICE = "alice@example.test"
USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail", "urn:ietf:params:jmap:submission",
         "urn:ietf:params:jmap:vacationresponse"]


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """One daemon (http) for the module; tests only add messages of their own."""
    from tests.conftest import _make_servers, _stop_all
    make, servers = _make_servers(request, tmp_path_factory)
    yield make(listeners=("http",))
    _stop_all(servers)


def http(server, method, path, body=None, headers=None):
    """(status, headers, parsed JSON or raw bytes) of one request as Alice (Basic)."""
    connection = HTTPConnection(*server.address("http"), timeout=10)
    auth = base64.b64encode(f"{ALICE}:{PASSWORD}".encode()).decode()
    sent = {"Authorization": "Basic " + auth, **(headers or {})}
    if body is not None and not isinstance(body, bytes):
        body, sent["Content-Type"] = json.dumps(body).encode(), "application/json"
    connection.request(method, path, body=body, headers=sent)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    kind = response.getheader("Content-Type") or ""
    return response.status, response, json.loads(data) if "json" in kind and data else data


def jmap(server, calls, created_ids=None):
    request = {"using": USING, "methodCalls": calls}
    if created_ids is not None:
        request["createdIds"] = created_ids
    status, _r, answer = http(server, "POST", "/jmap/api", request)
    assert status == 200, answer
    return answer


def roles(server) -> dict:
    boxes = jmap(server, [["Mailbox/get", {"accountId": "a1", "properties": ["role"]}, "0"]])
    return {box["role"]: box["id"] for box in boxes["methodResponses"][0][1]["list"] if box["role"]}


def test_unparseable_address_is_invalid_properties_not_server_fail(server):
    """An EmailAddress whose email the email package cannot parse (":x", found by schemathesis
    through POST /v1/messages bcc) is an invalidProperties SetError in Email/set create
    (RFC 8621 4.6) and a 400 from /v1/messages, never a 500 serverFail."""
    drafts = roles(server)["drafts"]
    answer = jmap(server, [["Email/set", {"accountId": "a1", "create": {"d": {
        "mailboxIds": {drafts: True}, "bcc": [{"email": ":\u00df5{~"}], "subject": "x"}}}, "0"]])
    error = answer["methodResponses"][0][1]["notCreated"]["d"]
    assert error["type"] == "invalidProperties" and error["properties"] == ["bcc"]
    status, _r, body = http(server, "POST", "/v1/messages", {"to": ALICE, "bcc": ":\u00df5{~", "text": "x"})
    assert status == 400 and body["type"] == "invalidProperties"


def test_utc_dates_with_fractional_seconds(server):
    """RFC 8620 1.4 lets a UTCDate carry a time-secfrac, and JavaScript's toISOString() (what a
    jmap-jam user passes) always writes ".000Z": Email/import receivedAt, Email/query after and
    VacationResponse fromDate accept both, keep whole seconds, and still refuse an offset."""
    raw = b"From: a@remote.test\r\nSubject: dated by jam\r\n\r\nbody\r\n"
    status, _r, blob = http(server, "POST", "/jmap/upload/a1/", raw, {"Content-Type": "message/rfc822"})
    assert status == 201, blob
    inbox = roles(server)["inbox"]
    emails = {cid: {"blobId": blob["blobId"], "mailboxIds": {inbox: True}, "receivedAt": when}
              for cid, when in (("frac", "2020-01-02T03:04:05.120Z"), ("js", "2020-01-02T03:04:05.000Z"),
                                ("offset", "2020-01-02T03:04:05+01:00"))}
    answer = jmap(server, [["Email/import", {"accountId": "a1", "emails": emails}, "0"],
                           ["Email/get", {"accountId": "a1", "ids": ["#frac", "#js"],
                                          "properties": ["receivedAt"]}, "1"],
                           ["Email/query", {"accountId": "a1", "filter": {"subject": "dated by jam",
                                                                          "after": "2020-01-02T03:04:04.999Z"}}, "2"],
                           ["VacationResponse/set", {"accountId": "a1", "update": {"singleton": {
                               "fromDate": "2026-12-05T14:52:00.000Z"}}}, "3"],
                           ["VacationResponse/get", {"accountId": "a1"}, "4"]])
    imported, got, query, vacation_set, vacation = (r[1] for r in answer["methodResponses"])
    assert sorted(imported["created"]) == ["frac", "js"]
    assert imported["notCreated"]["offset"]["properties"] == ["receivedAt"]
    assert [e["receivedAt"] for e in got["list"]] == ["2020-01-02T03:04:05Z"] * 2
    assert len(query["ids"]) == 2
    assert vacation_set["updated"] == {"singleton": None}
    assert vacation["list"][0]["fromDate"] == "2026-12-05T14:52:00Z"


def test_download_keeps_a_plain_charset_parameter(server):
    """jmap-jam's downloadBlob puts the mimeType it is given, e.g. "text/plain; charset=utf-8",
    into the downloadUrl's {type} (RFC 8620 6.2): the Content-Type keeps that charset (a browser
    would otherwise guess the encoding) but no other parameter, and a charset that is not a plain
    token is dropped."""
    status, _r, blob = http(server, "POST", "/jmap/upload/a1/", "caf\u00e9\n".encode(), {"Content-Type": "text/plain"})
    assert status == 201
    for asked, answered in (("text/plain;%20charset=utf-8", "text/plain; charset=utf-8"),
                            ('TEXT/HTML;%20x="<b>";%20Charset="UTF-8"', "text/html; charset=utf-8"),
                            ("text/plain;%20charset=%22utf%208%22", "text/plain"),
                            ("text/plain", "text/plain")):
        status, response, body = http(server, "GET", f"/jmap/download/a1/{blob['blobId']}/caf%C3%A9.txt?type={asked}")
        assert status == 200 and body == "caf\u00e9\n".encode()
        assert response.getheader("Content-Type") == answered, asked


def test_mailbox_set_updates_and_destroys_by_creation_id(server):
    """Like Email/set and Identity/set, Mailbox/set takes "#cid" of a Mailbox created earlier
    in the request as an update or destroy key (RFC 8620 5.3, erratum 6607); it was notFound.
    An unknown "#cid" is notFound, not a method error."""
    answer = jmap(server, [
        ["Mailbox/set", {"accountId": "a1", "create": {"box": {"name": "Made by jam"}}}, "0"],
        ["Mailbox/set", {"accountId": "a1", "update": {"#box": {"name": "Renamed by jam"}},
                         "destroy": ["#nope"]}, "1"],
        ["Mailbox/get", {"accountId": "a1", "ids": ["#box"], "properties": ["name"]}, "2"],
        ["Mailbox/set", {"accountId": "a1", "destroy": ["#box"]}, "3"],
        ["Mailbox/get", {"accountId": "a1", "ids": ["#box"], "properties": ["name"]}, "4"]])
    created, updated, got, destroyed, gone = (r[1] for r in answer["methodResponses"])
    box = created["created"]["box"]["id"]
    # the answer names the Mailbox by the id "#box" resolved to (as Cyrus does; test_jmap_audit)
    assert list(updated["updated"]) == [box] and updated["notDestroyed"] == {"#nope": {"type": "notFound"}}
    assert got["list"] == [{"id": box, "name": "Renamed by jam"}]
    assert destroyed["destroyed"] == [box] and gone["notFound"] == [box]


def test_email_set_create_with_body_structure(server):
    """Email/set create takes a bodyStructure (RFC 8621 4.6; jmap-jam's types offer it and it
    was invalidProperties): multipart/alternative of text and of HTML related to an inline image
    with a cid, plus a named attachment, from bodyValues and uploads, read back as textBody,
    htmlBody, attachments (4.1.4) and bodyValues. Giving textBody too, a partId on a non-text part or a missing
    blob is refused with the SetError RFC 8621 names."""
    drafts = roles(server)["drafts"]
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
    uploads = {}
    for name, data, kind in (("png", png, "image/png"), ("pdf", b"%PDF-1.4\n", "application/pdf")):
        status, _r, blob = http(server, "POST", "/jmap/upload/a1/", data, {"Content-Type": kind})
        assert status == 201
        uploads[name] = blob["blobId"]
    structure = {"type": "multipart/mixed", "subParts": [
        {"type": "multipart/alternative", "subParts": [
            {"partId": "t", "type": "text/plain"},
            {"type": "multipart/related", "subParts": [
                {"partId": "h", "type": "text/html"},
                {"blobId": uploads["png"], "type": "image/png", "disposition": "inline", "cid": "logo@jam"}]}]},
        {"blobId": uploads["pdf"], "type": "application/pdf", "name": "r\u00e9sum\u00e9.pdf",
         "disposition": "attachment"}]}
    values = {"t": {"value": "caf\u00e9 text\n"}, "h": {"value": "<p>caf\u00e9 <img src=\"cid:logo@jam\"></p>\n"}}
    base = {"mailboxIds": {drafts: True}, "from": [{"email": ALICE}], "subject": "structured"}
    answer = jmap(server, [
        ["Email/set", {"accountId": "a1", "create": {
            "ok": dict(base, bodyStructure=structure, bodyValues=values),
            "both": dict(base, bodyStructure=structure, bodyValues=values, textBody=[{"partId": "t"}]),
            "binary": dict(base, bodyStructure={"partId": "t", "type": "image/png"}, bodyValues=values),
            "gone": dict(base, bodyStructure={"blobId": "u" + "0" * 64, "type": "text/plain"})}}, "0"],
        ["Email/get", {"accountId": "a1", "ids": ["#ok"], "fetchAllBodyValues": True,
                       "properties": ["subject", "bodyStructure", "textBody", "htmlBody", "attachments",
                                      "bodyValues", "hasAttachment"]}, "1"]])
    created, got = (r[1] for r in answer["methodResponses"])
    assert list(created["created"]) == ["ok"]
    assert created["notCreated"]["both"]["type"] == "invalidProperties"
    assert created["notCreated"]["binary"]["type"] == "invalidProperties"
    assert created["notCreated"]["gone"]["type"] == "blobNotFound"
    email = got["list"][0]
    assert email["subject"] == "structured" and email["bodyStructure"]["type"] == "multipart/mixed"
    assert [p["type"] for p in email["textBody"]] == ["text/plain"]
    assert [p["type"] for p in email["htmlBody"]] == ["text/html"]
    assert email["bodyValues"][email["textBody"][0]["partId"]]["value"] == "caf\u00e9 text\n"
    assert "cid:logo@jam" in email["bodyValues"][email["htmlBody"][0]["partId"]]["value"]
    attachments = {p["type"]: p for p in email["attachments"]}
    assert attachments["image/png"]["cid"] == "logo@jam" and attachments["image/png"]["size"] == len(png)
    assert attachments["application/pdf"]["name"] == "r\u00e9sum\u00e9.pdf" and email["hasAttachment"]
