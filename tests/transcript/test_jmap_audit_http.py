"""The JMAP audit's fixes replayed over HTTP against the daemon (the unit tests in
tests/unit/test_jmap_audit.py pin each case): header:Name:asForm on Email/set
create (RFC 8621 4.6) read back in every form, "#cid" update/destroy keys
answered by id (RFC 8620 5.3), the from/hasKeyword sorts (RFC 8621 4.4.2) and
asGroupedAddresses (4.1.2.4)."""

from __future__ import annotations

import base64
from http.client import HTTPConnection
import json

import pytest

from tests.support.daemon import PASSWORD

ALICE = "alice@example.test"
USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """One daemon (http) for the module."""
    from tests.conftest import _make_servers, _stop_all
    make, servers = _make_servers(request, tmp_path_factory)
    yield make(listeners=("http",))
    _stop_all(servers)


def jmap(server, calls) -> list:
    """The methodResponses of one JMAP request as Alice (Basic)."""
    connection = HTTPConnection(*server.address("http"), timeout=10)
    auth = base64.b64encode(f"{ALICE}:{PASSWORD}".encode()).decode()
    connection.request("POST", "/jmap/api", body=json.dumps({"using": USING, "methodCalls": calls}).encode(),
                       headers={"Authorization": "Basic " + auth, "Content-Type": "application/json"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    assert response.status == 200, answer
    return answer["methodResponses"]


def inbox(server) -> str:
    boxes = jmap(server, [["Mailbox/get", {"accountId": "a1", "properties": ["role"]}, "0"]])[0][1]["list"]
    return next(box["id"] for box in boxes if box["role"] == "inbox")


def test_create_with_header_forms_then_read_them_back(server):
    """RFC 8621 4.6: a draft made with header:List-Unsubscribe:asURLs,
    header:X-Custom:asText (non-ASCII: RFC 2047), header:Reply-To:asAddresses and
    header:Cc:asGroupedAddresses, then updated and destroyed by "#d" in later calls:
    Email/get reads each field back in its form, and updated/destroyed name the id."""
    box = inbox(server)
    made, got, updated, destroyed = jmap(server, [
        ["Email/set", {"accountId": "a1", "create": {"d": {
            "mailboxIds": {box: True}, "subject": "audit",
            "from": [{"name": "Alice", "email": ALICE}],
            "header:List-Unsubscribe:asURLs": ["mailto:leave@example.test?subject=unsubscribe"],
            "header:X-Custom:asText": "Grüße",
            "header:Reply-To:asAddresses": [{"name": "Zoë", "email": "zoe@example.test"}],
            "header:Cc:asGroupedAddresses": [{"name": "Team", "addresses": [{"email": "t@example.test"}]}],
            "textBody": [{"partId": "t", "type": "text/plain"}], "bodyValues": {"t": {"value": "hello"}}}}}, "0"],
        ["Email/get", {"accountId": "a1", "ids": ["#d"], "properties": [
            "header:List-Unsubscribe:asURLs", "header:X-Custom:asText", "header:X-Custom", "replyTo",
            "header:Cc:asGroupedAddresses", "cc", "from"]}, "1"],
        ["Email/set", {"accountId": "a1", "update": {"#d": {"keywords/$flagged": True}}}, "2"],
        ["Email/set", {"accountId": "a1", "destroy": ["#d"]}, "3"]])
    email_id = made[1]["created"]["d"]["id"]
    email = got[1]["list"][0]
    assert email["header:List-Unsubscribe:asURLs"] == ["mailto:leave@example.test?subject=unsubscribe"]
    assert email["header:X-Custom:asText"] == "Grüße" and email["header:X-Custom"].strip().startswith("=?utf-8?")
    assert email["replyTo"] == [{"name": "Zoë", "email": "zoe@example.test"}]
    assert email["header:Cc:asGroupedAddresses"] == [
        {"name": "Team", "addresses": [{"name": None, "email": "t@example.test"}]}]
    assert email["cc"] == [{"name": None, "email": "t@example.test"}]
    assert updated[1]["updated"] == {email_id: None} and destroyed[1]["destroyed"] == [email_id]


def test_header_form_clash_is_invalid_properties(server):
    """RFC 8621 4.6: from and header:From together is invalidProperties naming both."""
    answer = jmap(server, [["Email/set", {"accountId": "a1", "create": {"x": {
        "mailboxIds": {inbox(server): True}, "from": [{"email": ALICE}],
        "header:From:asAddresses": [{"email": ALICE}]}}}, "0"]])[0][1]
    assert answer["notCreated"]["x"] == {"type": "invalidProperties", "description": "From is given twice",
                                         "properties": ["header:From:asAddresses", "from"]}


def test_sort_by_from_and_keyword(server):
    """RFC 8621 4.4.2: sort by from (name, else email) and by hasKeyword, over HTTP."""
    box = inbox(server)
    made = jmap(server, [["Email/set", {"accountId": "a1", "create": {
        "b": {"mailboxIds": {box: True}, "from": [{"name": "Bea", "email": "b@example.test"}], "subject": "s1"},
        "a": {"mailboxIds": {box: True}, "from": [{"email": "aaa@example.test"}], "subject": "s2",
              "keywords": {"$flagged": True}}}}, "0"]])[0][1]["created"]
    mine = {made["a"]["id"], made["b"]["id"]}
    by_from, by_flag = jmap(server, [
        ["Email/query", {"accountId": "a1", "sort": [{"property": "from"}]}, "0"],
        ["Email/query", {"accountId": "a1", "sort": [{"property": "hasKeyword", "keyword": "$flagged",
                                                       "isAscending": False}]}, "1"]])
    assert [i for i in by_from[1]["ids"] if i in mine] == [made["a"]["id"], made["b"]["id"]]
    assert by_flag[1]["ids"][0] == made["a"]["id"] and by_flag[1]["canCalculateChanges"] is False


def test_session_lists_the_sort_options(server):
    """RFC 8621 1.3.1: the mail account capability's emailQuerySortOptions names every sort
    Email/query takes, the RFC 8621 4.4.2 ones included."""
    connection = HTTPConnection(*server.address("http"), timeout=10)
    auth = base64.b64encode(f"{ALICE}:{PASSWORD}".encode()).decode()
    connection.request("GET", "/.well-known/jmap", headers={"Authorization": "Basic " + auth})
    response = connection.getresponse()
    session = json.loads(response.read())
    connection.close()
    assert response.status == 200
    account = session["accounts"][session["primaryAccounts"]["urn:ietf:params:jmap:mail"]]
    options = account["accountCapabilities"]["urn:ietf:params:jmap:mail"]["emailQuerySortOptions"]
    assert set(options) == {"receivedAt", "size", "from", "to", "subject", "sentAt", "hasKeyword",
                            "allInThreadHaveKeyword", "someInThreadHaveKeyword"}
