"""The Twisted SMTP protocol over an in-memory transport: delivery, limits, submission rules.

The store and authenticator are small doubles here so each test can hold a
Deferred open; transcript tests (tests/transcript/test_smtp_*.py) run the
real daemon.
"""

from __future__ import annotations

import pytest
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from mailserverd import config
from mailserverd.auth import AuthFailed
from mailserverd.checks.base import Check, CheckChain, Verdict
from mailserverd.smtp.server import build_factory
from mailserverd.store.api import Account

ALICE = Account(id=1, address="alice@local.test", shard=0)
BOB = Account(id=2, address="bob@local.test", shard=0)
MESSAGE = b"From: alice@local.test\r\nTo: bob@local.test\r\nSubject: hi\r\n\r\nhello\r\n"


class StoreDouble:
    def __init__(self):
        self.deliveries = []
        self.appends = []
        self.hold = None  # a Deferred deliver() returns instead of succeeding at once

    def is_local_domain(self, domain):
        return defer.succeed(domain == "local.test")

    def resolve_recipient(self, address):
        return defer.succeed({"alice@local.test": [ALICE], "bob@local.test": [BOB],
                              "both@local.test": [ALICE, BOB]}.get(address.lower(), []))

    def sender_addresses(self, account):
        return defer.succeed(frozenset({account.address, "sales@local.test"}))

    def deliver(self, body, targets, received_at=None):
        self.deliveries.append((body, targets))
        return self.hold if self.hold is not None else defer.succeed([])

    def append(self, account, mailbox, body, flags=(), received_at=None):
        self.appends.append((account, mailbox, body, tuple(flags)))
        return defer.succeed(None)


class AuthenticatorDouble:
    def authenticate(self, username, password, remote_ip, protocol=""):
        if username == "alice@local.test" and password == "secret":
            return defer.succeed(ALICE)
        return defer.fail(AuthFailed())


@pytest.fixture
def settings(tmp_path):
    path = tmp_path / "m.conf"
    path.write_text("[server]\nhostname = mx.local.test\ndata_dir = d\n"
                    "[limits]\nmax_connections_per_ip = 2\nmax_message_size = 4K\n"
                    "[smtp]\nmessage_rate_per_ip = 3\nsubmission_rate_per_account = 2\ntimeout = 30s\n")
    return config.load_settings(str(path))


class Harness:
    def __init__(self, settings, mode="smtp", checks=None, ip="192.0.2.9"):
        self.store = StoreDouble()
        self.clock = task.Clock()
        self.factory = build_factory(mode, settings, self.store, AuthenticatorDouble(), tls=None,
                                     checks=checks or CheckChain(), clock=self.clock)
        self.ip = ip

    def connect(self):
        proto = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", self.ip, 40000))
        proto.makeConnection(transport)
        return proto, transport

    @staticmethod
    def send(proto, transport, data: bytes) -> list[str]:
        transport.clear()
        proto.dataReceived(data)
        return transport.value().decode().splitlines()


def transaction(rcpt=b"bob@local.test", sender=b"x@remote.test", body=MESSAGE):
    return (b"EHLO client.test\r\nMAIL FROM:<" + sender + b">\r\nRCPT TO:<" + rcpt + b">\r\nDATA\r\n"
            + body + b".\r\n")


def test_inbound_delivery_prepends_return_path_and_received(settings):
    """One deliver() call stores the unchanged body with Return-Path and Received prepended, then 250."""
    harness = Harness(settings)
    proto, transport = harness.connect()
    assert transport.value().startswith(b"220 mx.local.test ESMTP")
    lines = harness.send(proto, transport, transaction())
    assert lines[-1].startswith("250 2.0.0 OK: queued as ")
    (body, targets), = harness.store.deliveries
    assert body == MESSAGE and [t.account for t in targets] == [BOB] and targets[0].mailbox == "INBOX"
    prepend = targets[0].prepend.decode()
    assert prepend.startswith("Return-Path: <x@remote.test>\r\nReceived: from client.test ([192.0.2.9])\r\n\tby ")
    assert "by mx.local.test (mailserverd) with ESMTP id " in prepend and "for <bob@local.test>;" in prepend


def test_reply_waits_for_the_durable_commit_and_reading_pauses(settings):
    """No 250 before deliver()'s Deferred fires; meanwhile the transport is paused; then pipelined input resumes."""
    harness = Harness(settings)
    harness.store.hold = defer.Deferred()
    proto, transport = harness.connect()
    lines = harness.send(proto, transport, transaction() + b"NOOP\r\n")
    assert lines[-1].startswith("354") and transport.producerState == "paused"
    transport.clear()
    harness.store.hold.callback([])
    lines = transport.value().decode().splitlines()
    assert lines[0].startswith("250 2.0.0 OK: queued") and lines[1] == "250 2.0.0 OK"
    assert transport.producerState == "producing"


def test_store_failure_gives_451_never_250(settings):
    """When the commit fails the client gets 451 4.3.0 and can retry."""
    harness = Harness(settings)
    harness.store.hold = defer.fail(OSError("disk on fire"))
    proto, transport = harness.connect()
    lines = harness.send(proto, transport, transaction())
    assert lines[-1].startswith("451 4.3.0")


def test_one_copy_per_account_however_many_recipients_reach_it(settings):
    """bob and an alias reaching bob and alice give one copy each, each with its own Received "for"."""
    harness = Harness(settings)
    proto, transport = harness.connect()
    harness.send(proto, transport, b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@local.test>\r\n"
                                   b"RCPT TO:<both@local.test>\r\nDATA\r\n" + MESSAGE + b".\r\n")
    (_, targets), = harness.store.deliveries
    assert [t.account for t in targets] == [BOB, ALICE]
    assert b"for <bob@local.test>" in targets[0].prepend and b"for <both@local.test>" in targets[1].prepend
    assert targets[0].prepend.startswith(b"Return-Path: <>\r\n")


def test_unknown_user_and_relay_are_refused_at_rcpt(settings):
    """Unknown local user gets 550 5.1.1; a remote domain 554 5.7.1 on the MX."""
    harness = Harness(settings)
    proto, transport = harness.connect()
    lines = harness.send(proto, transport, b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<nobody@local.test>\r\n"
                                           b"RCPT TO:<a@remote.test>\r\n")
    assert lines[-2].startswith("550 5.1.1") and lines[-1].startswith("554 5.7.1")


def test_connections_over_the_per_ip_limit_get_421(settings):
    """The third concurrent connection from one IP (limit 2) gets 421 4.7.0 and is closed."""
    harness = Harness(settings)
    harness.connect()
    harness.connect()
    _, third = harness.connect()
    assert third.value().startswith(b"421 4.7.0") and third.disconnecting


def test_closed_connections_free_their_slot(settings):
    """A closed connection no longer counts against the per-IP limit."""
    harness = Harness(settings)
    first, _ = harness.connect()
    harness.connect()
    first.connectionLost(None)
    _, again = harness.connect()
    assert again.value().startswith(b"220")


def test_message_rate_per_ip_gives_450(settings):
    """Past message_rate_per_ip MAIL commands a minute, MAIL gets 450 4.7.1; the bucket refills with time."""
    harness = Harness(settings)
    proto, transport = harness.connect()
    harness.send(proto, transport, b"EHLO c\r\n")
    lines = harness.send(proto, transport, b"MAIL FROM:<>\r\nRSET\r\n" * 4)
    assert [line[:9] for line in lines[::2]] == ["250 2.1.0"] * 3 + ["450 4.7.1"]
    harness.clock.advance(25)  # 3 a minute: one token back every 20 s (idle timeout is 30 s)
    assert harness.send(proto, transport, b"MAIL FROM:<>\r\n")[0].startswith("250 2.1.0")


def test_idle_session_times_out_with_421(settings):
    """After smtp.timeout seconds without input the server says 421 4.4.2 and closes."""
    harness = Harness(settings)
    proto, transport = harness.connect()
    harness.clock.advance(29)
    assert not transport.disconnecting
    transport.clear()
    harness.clock.advance(2)
    assert transport.value().startswith(b"421 4.4.2") and transport.disconnecting


def test_body_check_quarantine_goes_to_junk_with_headers(settings):
    """A quarantine verdict delivers to Junk and the check's headers are prepended."""
    class Spammy(Check):
        name = "spammy"

        def body(self, session, envelope, message):
            return Verdict.quarantine("spam", [("X-Spam-Flag", "YES")])

    harness = Harness(settings, checks=CheckChain([Spammy()]))
    proto, transport = harness.connect()
    lines = harness.send(proto, transport, transaction())
    (_, targets), = harness.store.deliveries
    assert lines[-1].startswith("250") and targets[0].mailbox == "Junk"
    assert targets[0].prepend.endswith(b"X-Spam-Flag: YES\r\n")


def test_body_check_reject_is_the_reply(settings):
    """A reject verdict at the body stage is the reply and nothing is stored."""
    class Virus(Check):
        name = "virus"

        def body(self, session, envelope, message):
            return Verdict.reject(554, "5.7.1", "Virus found")

    harness = Harness(settings, checks=CheckChain([Virus()]))
    proto, transport = harness.connect()
    assert harness.send(proto, transport, transaction())[-1] == "554 5.7.1 Virus found"
    assert harness.store.deliveries == []


def test_deep_mime_is_refused_before_any_parsing(settings):
    """A message nested deeper than max_mime_depth gets 554 5.6.0 and is not stored."""
    settings.limits.max_mime_depth = 3
    nested = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (n, n) for n in range(6))
    harness = Harness(settings)
    proto, transport = harness.connect()
    assert harness.send(proto, transport, transaction(body=nested))[-1].startswith("554 5.6.0")
    assert harness.store.deliveries == []


# -- submission ----------------------------------------------------------------------

AUTH = b"AUTH PLAIN AGFsaWNlQGxvY2FsLnRlc3QAc2VjcmV0\r\n"  # alice@local.test / secret


def submission(settings):
    harness = Harness(settings, mode="submission", ip="127.0.0.1")
    proto, transport = harness.connect()
    return harness, proto, transport


def test_submission_requires_auth_before_mail(settings):
    """MAIL before AUTH on submission gets 530 5.7.0."""
    harness, proto, transport = submission(settings)
    assert harness.send(proto, transport, b"EHLO c\r\nMAIL FROM:<alice@local.test>\r\n")[-1].startswith("530 5.7.0")


def test_submission_delivers_locally_and_saves_a_seen_copy_in_sent(settings):
    """An authenticated local submission is delivered and a copy with \\Seen is appended to Sent."""
    harness, proto, transport = submission(settings)
    lines = harness.send(proto, transport, b"EHLO c\r\n" + AUTH + transaction(sender=b"alice@local.test")[9:])
    assert lines[-1].startswith("250 2.0.0"), lines
    (_, targets), = harness.store.deliveries
    assert b"with ESMTPA id" in targets[0].prepend
    assert harness.store.appends == [(ALICE, "Sent", MESSAGE, ("\\Seen",))]


def test_submission_refuses_foreign_envelope_sender(settings):
    """MAIL FROM an address the account does not own gets 550 5.7.1; an owned alias passes."""
    harness, proto, transport = submission(settings)
    lines = harness.send(proto, transport, b"EHLO c\r\n" + AUTH + b"MAIL FROM:<ceo@local.test>\r\n"
                                           b"MAIL FROM:<Sales@Local.Test>\r\n")
    assert lines[-2].startswith("550 5.7.1") and lines[-1].startswith("250 2.1.0")


def test_submission_refuses_foreign_from_header(settings):
    """A From: header naming an address the account does not own gets 550 5.7.1; nothing is stored."""
    harness, proto, transport = submission(settings)
    spoof = MESSAGE.replace(b"From: alice@local.test", b"From: \"Boss\" <ceo@local.test>")
    lines = harness.send(proto, transport, b"EHLO c\r\n" + AUTH + transaction(sender=b"alice@local.test", body=spoof)[9:])
    assert lines[-1].startswith("550 5.7.1") and harness.store.deliveries == []


def test_submission_refuses_remote_recipients_temporarily(settings):
    """A remote recipient on submission gets 451 4.3.2 until the outbound queue exists."""
    harness, proto, transport = submission(settings)
    lines = harness.send(proto, transport, b"EHLO c\r\n" + AUTH + b"MAIL FROM:<alice@local.test>\r\n"
                                           b"RCPT TO:<friend@remote.test>\r\n")
    assert lines[-1] == "451 4.3.2 remote delivery is not available yet"


def test_submission_rate_limit_per_account(settings):
    """Past submission_rate_per_account messages an hour, MAIL gets 450 4.7.1."""
    harness, proto, transport = submission(settings)
    harness.send(proto, transport, b"EHLO c\r\n" + AUTH)
    lines = harness.send(proto, transport, b"MAIL FROM:<alice@local.test>\r\nRSET\r\n" * 3)
    assert [line[:9] for line in lines[::2]] == ["250 2.1.0", "250 2.1.0", "450 4.7.1"]


def test_wrong_password_gets_535(settings):
    """A failed AUTH gets 535 5.7.8 and the session stays unauthenticated."""
    harness, proto, transport = submission(settings)
    lines = harness.send(proto, transport, b"EHLO c\r\nAUTH PLAIN AGFsaWNlQGxvY2FsLnRlc3QAd3Jvbmc=\r\n"
                                           b"MAIL FROM:<alice@local.test>\r\n")
    assert lines[-2].startswith("535 5.7.8") and lines[-1].startswith("530 5.7.0")


def test_auth_not_offered_without_tls_off_loopback(settings):
    """Submission from a non-loopback peer without TLS does not offer AUTH and refuses it with 538."""
    harness = Harness(settings, mode="submission", ip="192.0.2.50")
    proto, transport = harness.connect()
    lines = harness.send(proto, transport, b"EHLO c\r\n" + AUTH)
    assert not any("AUTH" in line for line in lines[:-1]) and lines[-1].startswith("538 5.7.11")
