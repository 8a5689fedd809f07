"""check.spam against the real daemon: `mailserverctl spam train` while it runs, near-certain
spam refused 550 5.7.1, X-Spam-Status/X-Spam-Score on delivered mail, and learning from
users: an IMAP MOVE into Junk trains the message as spam for that user (the next copy of
it scores higher and goes to Junk), a MOVE back out of Junk trains it as ham (the next
copy scores lower again)."""

from __future__ import annotations

import imaplib
import os
import re
import smtplib
import time

import pytest

from tests.support.daemon import PASSWORD

ALICE = "alice@example.test"
TIMEOUT = 15
LEARN_WAIT = 10.0  # seconds for the learner to train after the MOVE's OK
DATA = os.path.join(os.path.dirname(__file__), "..", "data")
CHAIN = {"checks": {"chain": "check.hops, check.spam"}}


@pytest.fixture
def server(mailserver_factory):
    return mailserver_factory(listeners=("smtp", "imap"), extra_config=CHAIN)


def send(server, number: int, body: str, subject: str = "Quarterly widget figures") -> None:
    message = (f"From: Pat Example <pat@sender.example>\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
               f"Message-ID: <learn-{number}@sender.example>\r\nDate: Mon, 2 Sep 2002 10:00:00 +0000\r\n"
               f"\r\n{body}\r\n")
    with smtplib.SMTP(*server.address("smtp"), timeout=TIMEOUT) as client:
        client.sendmail("pat@sender.example", [ALICE], message.encode())


def login(server) -> imaplib.IMAP4:
    client = imaplib.IMAP4(*server.address("imap"), timeout=TIMEOUT)
    client.login(ALICE, PASSWORD)
    return client


def spam_headers(client: imaplib.IMAP4, mailbox: str, number: int):
    """(uid, X-Spam-Status, X-Spam-Score) of message <learn-NUMBER@...> in mailbox, or None."""
    client.select(mailbox)
    status, data = client.uid("SEARCH", None, "HEADER", "Message-ID", f"learn-{number}@")
    uids = data[0].split()
    if not uids:
        return None
    status, data = client.uid("FETCH", uids[-1], "(BODY.PEEK[HEADER.FIELDS (X-Spam-Status X-Spam-Score)])")
    text = data[0][1].decode()
    status_line = re.search(r"X-Spam-Status: ([^\r\n]*)", text).group(1)
    score = float(re.search(r"X-Spam-Score: ([0-9.]+)", text).group(1))
    return uids[-1].decode(), status_line, score


def wait_for_log(server, needle: str, count: int) -> None:
    deadline = time.monotonic() + LEARN_WAIT
    while server.log.count(needle) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"no {count}x {needle!r} in the daemon log within {LEARN_WAIT} s")
        time.sleep(0.05)


BODY = ("Hello Alice, the widget figures for the third quarter are attached below. "
        "Frobnication throughput rose by eleven percent; the zorblax line stayed flat. "
        "Please review the quintessential numbers before Thursday's meeting.")


def test_train_beside_the_daemon_then_a_junk_move_raises_the_score(server):
    """spam train runs while the daemon runs and trained spam is refused; then moving a message
    to Junk over IMAP makes the next copy of it score higher and go to Junk, and moving it back
    out makes it score lower."""
    result = server.ctl("spam", "train", "--ham", os.path.join(DATA, "ham-200.mbox"),
                        "--spam", os.path.join(DATA, "spam-100.mbox"))
    assert "100 spam, 200 ham trained" in result.stdout

    # A spam message the global database was trained on is refused at DATA (reject_score).
    spam_message = open(os.path.join(DATA, "spam-100.mbox"), "rb").read().split(b"\nFrom ")[80]
    spam_raw = spam_message.split(b"\n", 1)[1].replace(b"\n", b"\r\n")
    with smtplib.SMTP(*server.address("smtp"), timeout=TIMEOUT) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("x@remote.example", [ALICE], spam_raw)
    assert refused.value.smtp_code == 550 and b"5.7.1" in refused.value.smtp_error

    send(server, 1, BODY)
    client = login(server)
    try:
        uid, status_line, before = spam_headers(client, "INBOX", 1)
        assert status_line.startswith(("No", "Unsure")), status_line

        assert client.uid("MOVE", uid, "Junk")[0] == "OK"
        wait_for_log(server, "trained as spam (moved into Junk)", 1)
        send(server, 2, BODY)  # not refused: the global database alone does not call it spam
        found = spam_headers(client, "Junk", 2)
        assert found is not None, "the second copy is not in Junk"
        assert found[1].startswith("Yes") and found[2] > before, f"{found} after the Junk move, {before} before"
        raised = found[2]

        # Moving the first copy back out of Junk retrains it as ham (moved, not counted twice).
        junk_uid = spam_headers(client, "Junk", 1)[0]
        assert client.uid("MOVE", junk_uid, "INBOX")[0] == "OK"
        wait_for_log(server, "trained as ham (moved out of Junk)", 1)
        send(server, 3, BODY)
        found = spam_headers(client, "INBOX", 3) or spam_headers(client, "Junk", 3)
        assert found[2] < raised, f"score {found[2]} after moving back, {raised} before"
    finally:
        client.logout()


def test_untrained_filter_delivers_to_inbox_with_headers(server):
    """With nothing trained, mail lands in INBOX marked as not (or not yet surely) spam."""
    send(server, 10, BODY)
    client = login(server)
    try:
        uid, status_line, score = spam_headers(client, "INBOX", 10)
        assert status_line.startswith(("No", "Unsure")) and "untrained" in status_line
        assert 0.0 <= score <= 1.0
    finally:
        client.logout()
