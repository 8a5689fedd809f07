"""Interop: the jmapc client (PyPI) against the real daemon's https listener
(the self-signed certificate the daemon makes, so certificate checks are off)."""

from __future__ import annotations

import smtplib
import time

import pytest

from tests.support.daemon import PASSWORD

jmapc = pytest.importorskip("jmapc", reason="jmapc is not installed: pip install -e '.[test]'")
from jmapc import Comparator, EmailQueryFilterCondition, MailboxQueryFilterCondition, Ref  # noqa: E402
from jmapc.methods import (EmailGet, EmailGetResponse, EmailQuery, EmailSet, MailboxGet,  # noqa: E402
                           MailboxGetResponse, MailboxQuery)

ALICE = "alice@example.test"


@pytest.fixture
def server(mailserver_factory):
    return mailserver_factory(listeners=("smtp", "https"))


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_jmapc_lists_queries_reads_and_sets(server, tmp_path):
    """Over https, jmapc finds INBOX by role, queries it newest first, reads the delivered email
    with its text body, marks it $seen and uploads a blob."""
    message = ("From: Carol <carol@remote.test>\r\nTo: alice@example.test\r\nSubject: interop\r\n"
               "Message-ID: <interop@remote.test>\r\n\r\nhello from smtp\r\n")
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as smtp:
        smtp.sendmail("carol@remote.test", [ALICE], message)
    host, port = server.address("https")
    client = jmapc.Client.create_with_password(f"{host}:{port}", ALICE, PASSWORD)
    client.requests_session.trust_env = False  # no REQUESTS_CA_BUNDLE from the environment
    client.requests_session.verify = False  # the daemon's self-signed certificate
    assert client.jmap_session.api_url == f"https://{host}:{port}/jmap/api"
    results = client.request([
        MailboxQuery(filter=MailboxQueryFilterCondition(role="inbox")),
        MailboxGet(ids=Ref("/ids")),
    ])
    inbox = results[1].response
    assert isinstance(inbox, MailboxGetResponse) and inbox.data[0].name == "INBOX"
    assert inbox.data[0].total_emails == 1
    results = client.request([
        EmailQuery(collapse_threads=True, filter=EmailQueryFilterCondition(in_mailbox=inbox.data[0].id),
                   sort=[Comparator(property="receivedAt", is_ascending=False)], limit=50),
        EmailGet(ids=Ref("/ids"), properties=["id", "subject", "from", "receivedAt", "keywords",
                                              "textBody", "bodyValues"], fetch_text_body_values=True),
    ])
    emails = results[1].response
    assert isinstance(emails, EmailGetResponse)
    email = emails.data[0]
    assert email.subject == "interop" and email.mail_from[0].email == "carol@remote.test"
    part = email.text_body[0].part_id
    assert email.body_values[part].value.strip() == "hello from smtp"
    result = client.request(EmailSet(update={email.id: {"keywords/$seen": True}}))
    assert email.id in result.updated
    again = client.request(EmailGet(ids=[email.id], properties=["keywords"]))
    assert again.data[0].keywords == {"$seen": True}
    attachment = tmp_path / "note.txt"
    attachment.write_bytes(b"attachment bytes")
    blob = client.upload_blob(attachment)
    assert blob.size == len(b"attachment bytes") and blob.type == "text/plain"


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_jmapc_sends_an_attachment_another_user_receives(server, tmp_path):
    """Over https, jmapc uploads a blob, creates a draft with it as an attachment and submits
    it with EmailSubmission/set (onSuccessUpdateEmail moves it to Sent); Bob, reading with
    jmapc too, receives the message with the attachment's name and bytes."""
    from jmapc import Email, EmailAddress, EmailBodyPart, EmailBodyValue, EmailSubmission
    from jmapc.methods import EmailSubmissionSet, IdentityGet

    def connect(address):
        client = jmapc.Client.create_with_password("%s:%d" % server.address("https"), address, PASSWORD)
        client.requests_session.trust_env = False
        client.requests_session.verify = False  # the daemon's self-signed certificate
        return client

    alice = connect(ALICE)
    payload = b"quarterly,figures\n1,2\n"
    attachment = tmp_path / "figures.csv"
    attachment.write_bytes(payload)
    blob = alice.upload_blob(attachment)
    mailboxes = alice.request(MailboxGet(ids=None)).data
    drafts = next(box.id for box in mailboxes if box.role == "drafts")
    sent = next(box.id for box in mailboxes if box.role == "sent")
    identity = alice.request(IdentityGet(ids=None)).data[0]
    draft = Email(mail_from=[EmailAddress(email=ALICE)], to=[EmailAddress(email="bob@example.test")],
                  subject="figures attached", mailbox_ids={drafts: True}, keywords={"$draft": True},
                  body_values={"body": EmailBodyValue(value="See the figures.\n")},
                  text_body=[EmailBodyPart(part_id="body", type="text/plain")],
                  attachments=[EmailBodyPart(blob_id=blob.id, type="text/csv", name="figures.csv")])
    results = alice.request([
        EmailSet(create={"draft": draft}),
        EmailSubmissionSet(create={"send": EmailSubmission(identity_id=identity.id, email_id="#draft")},
                           on_success_update_email={"#send": {f"mailboxIds/{drafts}": None,
                                                              f"mailboxIds/{sent}": True,
                                                              "keywords/$draft": None}}),
    ])
    assert results[0].response.created and results[1].response.created, results

    bob = connect("bob@example.test")
    deadline = time.monotonic() + 10
    while True:  # local delivery is done when the submission is; the loop only bounds a slow machine
        found = bob.request([EmailQuery(), EmailGet(ids=Ref("/ids"), properties=["subject", "from", "attachments"])])
        found = [email for email in found[1].response.data if email.subject == "figures attached"]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(found) == 1 and found[0].mail_from[0].email == ALICE
    (part,) = found[0].attachments
    assert part.name == "figures.csv" and part.type == "text/csv"
    bob.download_attachment(part, tmp_path / "received.csv")
    assert (tmp_path / "received.csv").read_bytes() == payload
