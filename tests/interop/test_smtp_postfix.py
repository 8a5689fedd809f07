"""Postfix, a real MTA, relaying into the daemon's inbound port (tests/support/postfix.py
runs a private instance; the system's Postfix is never touched).

The tests hand a message to Postfix with smtplib, follow it by its Postfix queue id in
Postfix's log until Postfix has delivered or bounced it (30 s at most), then look at what
the daemon stored."""

from __future__ import annotations

import email
import email.policy
import re
import smtplib

import pytest

from tests.interop import exported, require_program, start_module_mailserver, unique_subject, with_subject
from tests.support.postfix import HOST, HOSTNAME, PostfixRelay, postfix_unavailable_reason

DELIVERY_TIMEOUT = 30.0  # seconds for Postfix to deliver (or bounce) one message


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    return start_module_mailserver(request, tmp_path_factory)


@pytest.fixture(scope="module")
def relay(server):
    """A private Postfix whose relayhost is the daemon's port 25 listener."""
    require_program("postfix")
    reason = postfix_unavailable_reason()
    if reason:
        pytest.skip(reason)
    postfix = PostfixRelay(relay_port=server.ports["smtp"])
    try:
        postfix.start()
        yield postfix
    finally:
        print(postfix.log_tail(100))  # shown when a test failed
        postfix.stop()


def hand_to_postfix(relay, sender: str, recipient: str, subject: str) -> str:
    """Submit one message to Postfix's smtpd; returns the Postfix queue id."""
    message = (f"From: {sender}\r\nTo: {recipient}\r\nSubject: {subject}\r\n\r\n"
               "Relayed by Postfix.\r\n").encode()
    with smtplib.SMTP(HOST, relay.port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.mail(sender)[0] == 250
        assert client.rcpt(recipient)[0] == 250
        code, reply = client.data(message)
    assert code == 250, reply
    return re.search(rb"queued as ([0-9A-Za-z]+)", reply).group(1).decode()


def delivery_outcome(relay, queue_id: str, recipient: str) -> re.Match:
    """Postfix's log line for the delivery attempt of `queue_id` to `recipient` that ended in
    sent or bounced (a deferral would be retried; the test then times out on it)."""
    return relay.wait_for_log(rf"^.* {queue_id}: to=<{re.escape(recipient)}>, "
                              rf"relay=(?P<relay>\S+), .*dsn=(?P<dsn>[\d.]+), "
                              rf"status=(?P<status>sent|bounced) \((?P<reply>.*)\)$", DELIVERY_TIMEOUT)


def received_headers(message: bytes) -> list[str]:
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    return [" ".join(value.split()) for value in parsed.get_all("Received", [])]


def test_postfix_relays_into_us_over_starttls(server, relay, tmp_path):
    """A message Postfix relays arrives in alice's INBOX: Postfix used STARTTLS, and the
    Received chain shows Postfix's hop under ours (`with ESMTPS`, TLS details)."""
    subject = unique_subject("via postfix")
    queue_id = hand_to_postfix(relay, "sender@remote.test", "alice@example.test", subject)
    outcome = delivery_outcome(relay, queue_id, "alice@example.test")
    assert outcome["status"] == "sent" and outcome["reply"].startswith("250 2.0.0"), outcome.group(0)
    assert outcome["relay"] == f"{HOST}[{HOST}]:{server.ports['smtp']}"
    assert f"TLS connection established to {HOST}[{HOST}]:{server.ports['smtp']}" in relay.log()
    delivered, = with_subject(exported(server, tmp_path, "alice@example.test"), subject)
    assert delivered.startswith(b"Return-Path: <sender@remote.test>\n")
    ours, postfix_hop = received_headers(delivered)[:2]
    assert ours.startswith(f"from {HOSTNAME} (") and f"[{HOST}]" in ours
    assert "by mx.example.test (mailserverd) with ESMTPS id" in ours and "(using TLSv1" in ours
    assert f"by {HOSTNAME} (Postfix) with ESMTP id {queue_id}" in postfix_hop


def test_postfix_bounces_mail_for_an_unknown_user_on_our_5_1_1(relay):
    """Relayed mail for a user we do not have is refused at RCPT with 550 5.1.1; Postfix
    records it as bounced with that status and writes a non-delivery notification."""
    queue_id = hand_to_postfix(relay, "sender@remote.test", "nobody@example.test", unique_subject("bounce"))
    outcome = delivery_outcome(relay, queue_id, "nobody@example.test")
    assert outcome["status"] == "bounced" and outcome["dsn"] == "5.1.1", outcome.group(0)
    refusal = r"said: 550 5\.1\.1 .*\(in reply to RCPT TO command\)"
    assert re.search(refusal, outcome["reply"]), outcome.group(0)
    relay.wait_for_log(rf"^.* {queue_id}: sender non-delivery notification: \w+$", DELIVERY_TIMEOUT)


def test_postfix_bounce_notice_reaches_a_local_sender(server, relay, tmp_path):
    """When the sender is one of ours, Postfix's non-delivery notice (null reverse-path)
    is accepted and lands in the sender's INBOX, reporting 5.1.1 for the lost recipient."""
    subject = unique_subject("bounce to bob")
    queue_id = hand_to_postfix(relay, "bob@example.test", "nobody@example.test", subject)
    notice_id = relay.wait_for_log(rf"^.* {queue_id}: sender non-delivery notification: (\w+)$",
                                   DELIVERY_TIMEOUT).group(1)
    outcome = delivery_outcome(relay, notice_id, "bob@example.test")
    assert outcome["status"] == "sent", outcome.group(0)
    # the notice quotes the original message, whose Subject line identifies it
    notice, = with_subject(exported(server, tmp_path, "bob@example.test"), subject)
    assert notice.startswith(b"Return-Path: <>\n")
    assert b"report-type=delivery-status" in notice
    assert re.search(rb"^Status: 5\.1\.1$", notice, re.MULTILINE)
    assert re.search(rb"^Final-Recipient: rfc822; ?nobody@example\.test$", notice, re.MULTILINE)
