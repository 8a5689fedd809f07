"""Vacation replies over the real daemon (RFC 8621 8, RFC 3834): Bob turns his
VacationResponse on over JMAP; mail delivered to him gets one auto-reply per sender
(local senders in their INBOX, remote ones through the outbound queue), none for
list mail or a null reverse-path."""

from __future__ import annotations

import imaplib
import smtplib
import time

import pytest

from tests.support.daemon import PASSWORD
from tests.transcript.test_jmap_http import ALICE, BOB, CORE, MAIL, Client

VACATION = "urn:ietf:params:jmap:vacationresponse"


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """One daemon; a DNS server that does not answer, so remote replies stay queued (and
    only check.hops, whose verdicts need no DNS)."""
    from tests.conftest import _make_servers, _stop_all
    make, servers = _make_servers(request, tmp_path_factory)
    yield make(listeners=("smtp", "imap", "http"), extra_config={
        "auth": {"penalty_initial": "0s"}, "dns": {"nameservers": "127.0.0.1:9"},
        "checks": {"chain": "check.hops"}})
    _stop_all(servers)


def send(server, sender, subject, extra=""):
    message = (f"From: {sender or 'daemon@remote.test'}\r\nTo: Bob <{BOB}>\r\nSubject: {subject}\r\n"
               f"Message-ID: <{time.time_ns()}@remote.test>\r\n{extra}\r\nhello\r\n")
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as smtp:
        smtp.sendmail(sender, [BOB], message)


def auto_replies(server) -> list[bytes]:
    with imaplib.IMAP4(*server.address("imap"), timeout=10) as imap:
        imap.login(ALICE, PASSWORD)
        imap.select("INBOX")
        _status, data = imap.uid("SEARCH", "HEADER", "Auto-Submitted", "auto-replied")
        found = []
        for uid in data[0].split():
            _status, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
            found.append(fetched[0][1])
        return found


def replies_logged(server, wanted: int, wait: float) -> int:
    """The "vacation: replied" log lines, polled until `wanted` are there or `wait` passes."""
    deadline = time.time() + wait
    while server.log.count("vacation: replied") < wanted and time.time() < deadline:
        time.sleep(0.05)
    return server.log.count("vacation: replied")


def test_vacation_replies_once_per_sender(server):
    """JMAP VacationResponse/set turns it on (advertised in the session); Alice's two
    messages get one reply (Auto-Submitted, the configured subject and text, null
    Return-Path); list mail and a bounce get none; a remote sender's reply is queued."""
    bob = Client(server, BOB)
    session = bob.session()
    assert VACATION in session["capabilities"]
    account_id = session["primaryAccounts"][VACATION]
    status, _h, answer = bob.api([["VacationResponse/set", {"accountId": account_id, "update": {"singleton": {
        "isEnabled": True, "subject": "Bob is away", "textBody": "Back on Monday.\n"}}}, "v"]],
        using=(CORE, MAIL, VACATION))
    assert status == 200 and answer["methodResponses"][0][1]["updated"] == {"singleton": None}, answer

    send(server, ALICE, "lunch?")
    assert replies_logged(server, 1, 10) == 1
    replies = auto_replies(server)
    assert len(replies) == 1
    reply = replies[0]
    assert b"Return-Path: <>" in reply and b"Subject: Bob is away" in reply and b"Back on Monday." in reply
    assert b"In-Reply-To: <" in reply

    send(server, ALICE, "lunch again?")
    send(server, "news@lists.remote.test", "newsletter", "List-Id: <news.lists.remote.test>\r\n")
    send(server, "", "bounce")
    send(server, "carol@remote.test", "from afar")  # the only one of these four that is answered
    assert replies_logged(server, 2, 10) == 2
    assert replies_logged(server, 3, 1.0) == 2
    assert len(auto_replies(server)) == 1
    listing = server.ctl("queue", "list").stdout
    assert "<MAILER-DAEMON> -> remote.test (1 recipient)" in listing  # the null reverse-path
    shown = server.ctl("queue", "show", listing.split()[0]).stdout
    assert "<carol@remote.test>" in shown
