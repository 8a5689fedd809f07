"""JMAP Email/query text conditions against a real daemon (issue 12, RFC 8621 4.4.1):
they run through the same index + exact verification as IMAP SEARCH, so for the
same condition both return the same messages."""

from __future__ import annotations

import collections
import imaplib
import os
import re

import pytest

from tests.support.daemon import PASSWORD
from tests.transcript.test_jmap_http import ALICE, Client

DATA = os.path.join(os.path.dirname(__file__), "..", "data")

# (JMAP FilterCondition/FilterOperator, equivalent IMAP UID SEARCH criteria)
CASES = [
    ({"subject": "razor"}, ["SUBJECT", "razor"]),
    ({"from": "timc@2ubh"}, ["FROM", "timc@2ubh"]),
    ({"body": "linux"}, ["BODY", "linux"]),
    ({"body": "irish linux"}, ["BODY", '"irish linux"']),
    ({"body": "machina"}, ["BODY", "machina"]),  # only in a text/html part of the corpus
    ({"text": "spamassassin"}, ["TEXT", "spamassassin"]),
    ({"header": ["List-Id", "ilug"]}, ["HEADER", "List-Id", "ilug"]),
    ({"body": "linux", "notKeyword": "$seen"}, ["UNSEEN", "BODY", "linux"]),
    ({"operator": "OR", "conditions": [{"body": "razor"}, {"subject": "ilug"}]},
     ["OR", "BODY", "razor", "SUBJECT", "ilug"]),
    ({"operator": "NOT", "conditions": [{"text": "linux"}]}, ["NOT", "TEXT", "linux"]),
    ({"operator": "OR", "conditions": [{"operator": "NOT", "conditions": [{"body": "linux"}]},
                                       {"hasKeyword": "$seen"}]}, ["OR", "NOT", "BODY", "linux", "SEEN"]),
    ({"operator": "AND", "conditions": [{"notKeyword": "$seen"}, {"operator": "NOT", "conditions": [
        {"subject": "re:"}]}]}, ["UNSEEN", "NOT", "SUBJECT", "re:"]),
    ({"from": "tim", "subject": "re:", "minSize": 2000}, ["FROM", "tim", "SUBJECT", "re:", "LARGER", "1999"]),
]


@pytest.fixture(scope="module")
def setup(request, tmp_path_factory):
    """A daemon with ham-200.mbox imported for alice, the first 60 UIDs \\Seen."""
    from tests.conftest import _make_servers, _stop_all
    make, servers = _make_servers(request, tmp_path_factory)
    server = make(listeners=("imap", "http"), extra_config={"auth": {"penalty_initial": "0s"}})
    server.ctl("user", "import", ALICE, os.path.join(DATA, "ham-200.mbox"))
    imap = imaplib.IMAP4(*server.address("imap"), timeout=30)
    imap.login(ALICE, PASSWORD)
    imap.select("INBOX")
    assert imap.uid("STORE", "1:60", "+FLAGS", "(\\Seen)")[0] == "OK"
    client = Client(server)
    account = client.session()["primaryAccounts"]["urn:ietf:params:jmap:mail"]
    boxes = client.call("Mailbox/get", {"accountId": account})[1]["list"]
    inbox = next(b["id"] for b in boxes if b["role"] == "inbox")
    yield server, imap, client, account, inbox
    imap.logout()
    _stop_all(servers)


def _imap_ids(imap, criteria) -> collections.Counter:
    typ, data = imap.uid("SEARCH", "CHARSET", "UTF-8", *criteria)
    assert typ == "OK", data
    uids = data[0].split()
    found = collections.Counter()
    if uids:
        typ, rows = imap.uid("FETCH", b",".join(uids), "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        for row in rows:
            if isinstance(row, tuple):
                match = re.search(rb"<([^>]*)>", row[1])
                found[match.group(1).decode() if match else None] += 1
    return found


def _jmap(client, account, inbox, condition, **extra):
    filter_ = {"operator": "AND", "conditions": [{"inMailbox": inbox}, condition]}
    answer = client.call("Email/query", {"accountId": account, "filter": filter_, **extra})
    assert answer[0] == "Email/query", answer
    return answer[1]


def _jmap_ids(client, account, inbox, condition) -> collections.Counter:
    ids = _jmap(client, account, inbox, condition)["ids"]
    found = collections.Counter()
    if ids:
        got = client.call("Email/get", {"accountId": account, "ids": ids, "properties": ["header:Message-ID"]})
        for email in got[1]["list"]:
            match = re.search(r"<([^>]*)>", email["header:Message-ID"] or "")
            found[match.group(1) if match else None] += 1
    return found


@pytest.mark.parametrize("condition,criteria", CASES, ids=[" ".join(c) for _f, c in CASES])
def test_email_query_matches_imap_search(setup, condition, criteria):
    """Email/query in INBOX with a text condition returns exactly the messages IMAP UID
    SEARCH returns for the equivalent criteria (by raw Message-ID field)."""
    _server, imap, client, account, inbox = setup
    imap_found = _imap_ids(imap, criteria)
    assert sum(imap_found.values()) > 0, criteria  # every case selects something
    assert _jmap_ids(client, account, inbox, condition) == imap_found


def test_text_filter_runs_before_paging(setup):
    """position/limit/calculateTotal apply to the text-filtered, sorted list."""
    _server, _imap, client, account, inbox = setup
    condition = {"body": "linux"}
    full = _jmap(client, account, inbox, condition, sort=[{"property": "receivedAt", "isAscending": False}],
                 calculateTotal=True)
    assert full["total"] == len(full["ids"]) > 4
    page = _jmap(client, account, inbox, condition, sort=[{"property": "receivedAt", "isAscending": False}],
                 position=2, limit=3, calculateTotal=True)
    assert page["ids"] == full["ids"][2:5] and page["total"] == full["total"] and page["position"] == 2
    anchored = _jmap(client, account, inbox, condition, anchor=full["ids"][3], anchorOffset=-1, limit=2)
    assert anchored["ids"] == sorted(full["ids"], key=lambda i: int(i[1:]) if i[1:].isdigit() else i)[
        anchored["position"]:anchored["position"] + 2]


@pytest.mark.parametrize("condition,kind", [
    ({"header": []}, "invalidArguments"), ({"header": ["a b", "x"]}, "invalidArguments"),
    ({"header": ["Subject", 3]}, "invalidArguments"), ({"body": 5}, "invalidArguments"),
    ({"nosuch": "x"}, "unsupportedFilter")])
def test_bad_text_filters_are_method_errors(setup, condition, kind):
    """A malformed text condition is a JMAP method error, never a server failure."""
    _server, _imap, client, account, _inbox = setup
    answer = client.call("Email/query", {"accountId": account, "filter": condition})
    assert answer[0] == "error" and answer[1]["type"] == kind, answer


def test_rest_search_words_match_imap_text(setup):
    """/v1/search words are JMAP text conditions, so they find what IMAP TEXT finds,
    also in bodies and HTML parts, combined with is:unread (UNSEEN) and paged."""
    import json
    _server, imap, client, _account, _inbox = setup
    for q, criteria in (("machina", ["TEXT", "machina"]), ("linux%20is:unread", ["UNSEEN", "TEXT", "linux"]),
                        ("%22irish%20linux%22", ["TEXT", '"irish linux"'])):
        want = _imap_ids(imap, criteria)
        status, _headers, body = client.request("GET", f"/v1/search?q={q}&limit=500")
        answer = json.loads(body)
        assert status == 200 and answer["total"] == sum(want.values()) > 0, (q, answer.get("total"))
        status, _headers, body = client.request("GET", f"/v1/search?q={q}&limit=1")
        assert json.loads(body)["total"] == sum(want.values())


def test_rest_search_body_prefix(setup):
    """/v1/search body:WORD is the JMAP body condition: IMAP BODY finds the same count."""
    import json
    _server, imap, client, _account, _inbox = setup
    want = _imap_ids(imap, ["BODY", "machina"])
    status, _headers, body = client.request("GET", "/v1/search?q=body:machina")
    assert status == 200 and json.loads(body)["total"] == sum(want.values()) > 0
