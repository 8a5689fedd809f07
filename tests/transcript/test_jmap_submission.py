"""JMAP submission over the real daemon (RFC 8621 6, 7): a draft with an uploaded
attachment sent by EmailSubmission/set reaches another local user (read back over
IMAP), moves to Sent through onSuccessUpdateEmail, and sending as someone else is
refused as SMTP submission refuses it."""

from __future__ import annotations

import email
import email.policy
import imaplib
import json

import pytest

from tests.support.daemon import PASSWORD
from tests.transcript.test_jmap_http import ALICE, BOB, CORE, MAIL, Client

SUBMISSION = "urn:ietf:params:jmap:submission"
USING = (CORE, MAIL, SUBMISSION)


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """One daemon (smtp, imap, http) for the module; no auth penalty; 8 submissions an hour;
    a DNS server that does not answer, so remote recipients stay queued."""
    from tests.conftest import _make_servers, _stop_all
    make, servers = _make_servers(request, tmp_path_factory)
    yield make(listeners=("smtp", "imap", "http"), extra_config={"auth": {"penalty_initial": "0s"},
                                                                 "smtp": {"submission_rate_per_account": "8"},
                                                                 "dns": {"nameservers": "127.0.0.1:9"}})
    _stop_all(servers)


def calls(client, method_calls):
    status, _headers, answer = client.api(method_calls, using=USING)
    assert status == 200, answer
    return answer["methodResponses"]


def mailboxes(client, account_id) -> dict:
    found = calls(client, [["Mailbox/get", {"accountId": account_id, "ids": None}, "m"]])[0][1]["list"]
    return {item["role"]: item["id"] for item in found if item.get("role")}


def own_identity(client, account_id) -> str:
    """The id of the Identity of the account's own address."""
    found = calls(client, [["Identity/get", {"accountId": account_id, "ids": None}, "i"]])[0][1]["list"]
    return next(item["id"] for item in found if item["email"] == ALICE)


def draft(account_id, boxes, sender, subject, attachment=None):
    spec = {"mailboxIds": {boxes["drafts"]: True}, "keywords": {"$draft": True},
            "from": [{"name": "Sender", "email": sender}], "to": [{"name": "Bob", "email": BOB}],
            "bcc": [{"name": None, "email": ALICE}], "subject": subject,
            "textBody": [{"partId": "1", "type": "text/plain"}],
            "bodyValues": {"1": {"value": "Hello Bob, see the attachment.\n"}}}
    if attachment:
        spec["attachments"] = [{"blobId": attachment, "type": "text/csv", "name": "figures.csv"}]
    return ["Email/set", {"accountId": account_id, "create": {"draft": spec}}, "e"]


def bob_messages(server, subject: str) -> list:
    """Bob's INBOX messages whose subject holds `subject`, read over IMAP."""
    with imaplib.IMAP4(*server.address("imap"), timeout=10) as imap:
        imap.login(BOB, PASSWORD)
        imap.select("INBOX")
        _status, data = imap.uid("SEARCH", "SUBJECT", f'"{subject}"')
        found = []
        for uid in data[0].split():
            _status, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
            found.append(email.message_from_bytes(fetched[0][1], policy=email.policy.default))
        return found


def test_session_advertises_submission(server):
    """RFC 8621 1.3.2: the submission capability, with maxDelayedSend 0 (nothing is held)."""
    session = Client(server).session()
    assert SUBMISSION in session["capabilities"]
    account_id = session["primaryAccounts"][SUBMISSION]
    assert session["accounts"][account_id]["accountCapabilities"][SUBMISSION] == {
        "maxDelayedSend": 0, "submissionExtensions": {}}


def test_draft_with_attachment_sent_to_local_user_and_moved_to_sent(server):
    """Email/set creates a draft with an uploaded attachment; EmailSubmission/set sends it
    (undoStatus final, Bob delivered) and its implicit Email/set moves it from Drafts to
    Sent without $draft; Bob reads it over IMAP with the attachment and no Bcc field;
    EmailSubmission/get, /query and /changes see the submission."""
    alice = Client(server)
    account_id = alice.session()["primaryAccounts"][MAIL]
    status, _h, body = alice.request("POST", f"/jmap/upload/{account_id}/", b"month,total\r\njan,3\r\n",
                                     {"Content-Type": "text/csv"})
    assert status == 201, body
    blob_id = json.loads(body)["blobId"]
    boxes = mailboxes(alice, account_id)
    before = calls(alice, [["EmailSubmission/get", {"accountId": account_id, "ids": None}, "g"]])
    before = before[0][1]["state"]
    identities = calls(alice, [["Identity/get", {"accountId": account_id, "ids": None}, "i"]])[0][1]["list"]
    identity = next(item["id"] for item in identities if item["email"] == ALICE)
    responses = calls(alice, [
        draft(account_id, boxes, ALICE, "figures for jan", blob_id),
        ["EmailSubmission/set", {
            "accountId": account_id,
            "create": {"send": {"identityId": identity, "emailId": "#draft"}},
            "onSuccessUpdateEmail": {"#send": {f"mailboxIds/{boxes['drafts']}": None,
                                               f"mailboxIds/{boxes['sent']}": True,
                                               "keywords/$draft": None}}}, "s"]])
    assert [r[0] for r in responses] == ["Email/set", "EmailSubmission/set", "Email/set"]
    email_id = responses[0][1]["created"]["draft"]["id"]
    sent = responses[1][1]
    assert sent["notCreated"] is None, sent
    created = sent["created"]["send"]
    assert created["undoStatus"] == "final" and created["deliveryStatus"][BOB]["delivered"] == "yes"
    assert responses[2][1]["updated"] == {email_id: None} and responses[2][2] == "s"
    got = calls(alice, [["Email/get", {"accountId": account_id, "ids": [email_id],
                                       "properties": ["mailboxIds", "keywords"]}, "g"]])[0][1]["list"][0]
    assert got["mailboxIds"] == {boxes["sent"]: True} and "$draft" not in got["keywords"]
    received = bob_messages(server, "figures for jan")
    assert len(received) == 1
    message = received[0]
    assert message["Bcc"] is None and message["From"].addresses[0].addr_spec == ALICE
    assert "Hello Bob" in message.get_body(("plain",)).get_content()
    attachments = list(message.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["figures.csv"]
    assert attachments[0].get_content().replace("\r\n", "\n") == "month,total\njan,3\n"
    submission_id = created["id"]
    got = calls(alice, [
        ["EmailSubmission/get", {"accountId": account_id, "ids": [submission_id]}, "g"],
        ["EmailSubmission/query", {"accountId": account_id, "filter": {"emailIds": [email_id]}}, "q"],
        ["EmailSubmission/changes", {"accountId": account_id, "sinceState": before}, "c"],
        ["EmailSubmission/set", {"accountId": account_id,
                                 "update": {submission_id: {"undoStatus": "canceled"}}}, "u"]])
    item = got[0][1]["list"][0]
    assert item["emailId"] == email_id and item["identityId"] == identity
    assert item["envelope"]["mailFrom"]["email"] == ALICE
    assert sorted(r["email"] for r in item["envelope"]["rcptTo"]) == [ALICE, BOB]  # To and Bcc (7.5)
    assert got[1][1]["ids"] == [submission_id]
    assert got[2][1]["created"] == [submission_id]
    assert got[3][1]["notUpdated"][submission_id]["type"] == "cannotUnsend"


def test_sending_as_another_user_is_forbidden(server):
    """A From: of Bob's address is forbiddenFrom; an envelope mailFrom of Bob's is
    forbiddenMailFrom; an unknown local recipient is invalidRecipients; nothing reaches Bob."""
    alice = Client(server)
    account_id = alice.session()["primaryAccounts"][MAIL]
    boxes = mailboxes(alice, account_id)
    identities = calls(alice, [["Identity/get", {"accountId": account_id, "ids": None}, "i"]])[0][1]["list"]
    identity = identities[0]["id"]
    responses = calls(alice, [draft(account_id, boxes, BOB, "forged from bob"),
                              ["EmailSubmission/set", {"accountId": account_id, "create": {
                                  "from": {"identityId": identity, "emailId": "#draft"}}}, "s"]])
    assert responses[1][1]["notCreated"]["from"]["type"] == "forbiddenFrom"
    responses = calls(alice, [draft(account_id, boxes, ALICE, "forged mail from"),
                              ["EmailSubmission/set", {"accountId": account_id, "create": {
                                  "env": {"identityId": identity, "emailId": "#draft",
                                          "envelope": {"mailFrom": {"email": BOB, "parameters": None},
                                                       "rcptTo": [{"email": BOB, "parameters": None}]}},
                                  "nobody": {"identityId": identity, "emailId": "#draft",
                                             "envelope": {"mailFrom": {"email": ALICE, "parameters": None},
                                                          "rcptTo": [{"email": "nobody@example.test",
                                                                      "parameters": None}]}}}}, "s"]])
    refused = responses[1][1]["notCreated"]
    assert refused["env"]["type"] == "forbiddenMailFrom"
    assert refused["nobody"]["type"] == "invalidRecipients"
    assert refused["nobody"]["invalidRecipients"] == ["nobody@example.test"]
    assert bob_messages(server, "forged") == []


def test_remote_recipient_goes_to_the_outbound_queue(server):
    """A remote rcptTo is queued (deliveryStatus queued, "queued as" the queue id) and
    shows in `mailserverctl queue list`, as SMTP submission would queue it."""
    alice = Client(server)
    account_id = alice.session()["primaryAccounts"][MAIL]
    boxes = mailboxes(alice, account_id)
    identity = own_identity(alice, account_id)
    responses = calls(alice, [draft(account_id, boxes, ALICE, "to a remote friend"),
                              ["EmailSubmission/set", {"accountId": account_id, "create": {"out": {
                                  "identityId": identity, "emailId": "#draft",
                                  "envelope": {"mailFrom": {"email": ALICE, "parameters": None},
                                               "rcptTo": [{"email": "friend@remote.test",
                                                           "parameters": {"NOTIFY": "NEVER"}}]}}}}, "s"]])
    created = responses[1][1]["created"]["out"]
    status = created["deliveryStatus"]["friend@remote.test"]
    assert status["delivered"] == "queued" and status["smtpReply"].startswith("250 2.0.0 queued as ")
    queue_id = status["smtpReply"].rsplit(" ", 1)[1]
    shown = server.ctl("queue", "show", queue_id).stdout
    assert "sender: <alice@example.test>" in shown and "<friend@remote.test>" in shown


def test_submission_rate_limit_is_the_smtp_one(server):
    """The per-account submission budget ([smtp] submission_rate_per_account, here 8 an
    hour) also bounds EmailSubmission: within 10 tries one is forbiddenToSend."""
    alice = Client(server)
    account_id = alice.session()["primaryAccounts"][MAIL]
    boxes = mailboxes(alice, account_id)
    identity = own_identity(alice, account_id)
    kinds = []
    for attempt in range(10):
        responses = calls(alice, [draft(account_id, boxes, ALICE, f"rate {attempt}"),
                                  ["EmailSubmission/set", {"accountId": account_id, "create": {
                                      "r": {"identityId": identity, "emailId": "#draft"}}}, "s"]])
        refused = (responses[1][1]["notCreated"] or {}).get("r")
        kinds.append(refused["type"] if refused else "sent")
        if refused:
            assert "rate" in refused["description"].lower()
            break
    assert kinds[-1] == "forbiddenToSend" and set(kinds[:-1]) <= {"sent"}
