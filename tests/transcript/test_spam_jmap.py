"""check.spam learns from JMAP too: an Email/set that moves a message into the Junk
mailbox (mailboxIds, RFC 8621 4.6) trains it as spam for the account, so the next
copy of it is delivered to Junk; moving it back out trains it as ham."""

from __future__ import annotations

import base64
import http.client
import json
import os
import smtplib
import time

import pytest

from tests.support.daemon import PASSWORD

ALICE = "alice@example.test"
CORE, MAIL = "urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"
LEARN_WAIT = 10.0
DATA = os.path.join(os.path.dirname(__file__), "..", "data")
BODY = ("Dear member, the garden allotment committee reminds you that the autumn seed swap "
        "happens on Saturday; bring labelled packets and a thermos of tea.")


@pytest.fixture
def server(mailserver_factory):
    return mailserver_factory(listeners=("smtp", "http"),
                              extra_config={"checks": {"chain": "check.hops, check.spam"},
                                            "check.spam": {"min_trained": "1"}})


def jmap(server, calls):
    connection = http.client.HTTPConnection(*server.address("http"), timeout=10)
    try:
        auth = "Basic " + base64.b64encode(f"{ALICE}:{PASSWORD}".encode()).decode()
        body = json.dumps({"using": [CORE, MAIL], "methodCalls": calls}).encode()
        connection.request("POST", "/jmap/api", body, {"Authorization": auth, "Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read())
        assert response.status == 200, answer
        return answer["methodResponses"]
    finally:
        connection.close()


def session(server) -> dict:
    connection = http.client.HTTPConnection(*server.address("http"), timeout=10)
    try:
        auth = "Basic " + base64.b64encode(f"{ALICE}:{PASSWORD}".encode()).decode()
        connection.request("GET", "/.well-known/jmap", headers={"Authorization": auth})
        response = connection.getresponse()
        return json.loads(response.read())
    finally:
        connection.close()


def deliver(server, number: int) -> None:
    message = (f"From: Committee <committee@allotments.example>\r\nTo: {ALICE}\r\nSubject: Seed swap\r\n"
               f"Message-ID: <swap-{number}@allotments.example>\r\nDate: Sat, 05 Dec 2026 10:00:00 +0000\r\n"
               f"\r\n{BODY}\r\n")
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as smtp:
        smtp.sendmail("committee@allotments.example", [ALICE], message)


def wait_for_log(server, needle: str) -> None:
    deadline = time.monotonic() + LEARN_WAIT
    while needle not in server.log:
        if time.monotonic() > deadline:
            pytest.fail(f"no {needle!r} in the daemon log within {LEARN_WAIT} s")
        time.sleep(0.05)


def test_jmap_move_into_junk_trains_spam_and_out_trains_ham(server):
    """Email/set mailboxIds {Junk} trains spam: the next copy lands in Junk; moving the
    first back to the Inbox trains ham: the copy after that lands in the Inbox."""
    server.ctl("spam", "train", "--ham", os.path.join(DATA, "ham-200.mbox"))  # ham known, no spam yet
    deliver(server, 1)
    account_id = session(server)["primaryAccounts"][MAIL]
    answer = jmap(server, [["Mailbox/get", {"accountId": account_id}, "m"]])
    mailboxes = {box["role"]: box["id"] for box in answer[0][1]["list"] if box.get("role")}

    def in_box(role):
        answer = jmap(server, [["Email/query", {"accountId": account_id,
                                                "filter": {"inMailbox": mailboxes[role]}}, "q"]])
        return answer[0][1]["ids"]

    first = in_box("inbox")
    assert len(first) == 1
    answer = jmap(server, [["Email/set", {"accountId": account_id, "update": {
        first[0]: {"mailboxIds": {mailboxes["junk"]: True}}}}, "s"]])
    assert first[0] in answer[0][1]["updated"], answer
    wait_for_log(server, "trained as spam (moved into Junk)")
    deliver(server, 2)
    assert len(in_box("junk")) == 2, "the next copy did not go to Junk"

    answer = jmap(server, [["Email/set", {"accountId": account_id, "update": {
        first[0]: {"mailboxIds": {mailboxes["inbox"]: True}}}}, "s"]])
    assert first[0] in answer[0][1]["updated"], answer
    wait_for_log(server, "trained as ham (moved out of Junk)")
    deliver(server, 3)
    assert len(in_box("inbox")) == 2, "the copy after moving back did not go to the Inbox"
