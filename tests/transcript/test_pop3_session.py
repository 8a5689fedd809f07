"""POP3 sessions against the real daemon with Python's poplib: login, locks,
DELE/QUIT/RSET semantics, UIDL stability, STLS and pop3s."""

from __future__ import annotations

import os
import poplib
import smtplib
import socket
import ssl

import pytest

from mailserverd.mailfiles import iter_source
from tests.support.daemon import PASSWORD

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
HAM_200 = os.path.join(DATA, "ham-200.mbox")
ALICE = "alice@example.test"
TIMEOUT = 15  # seconds for any one socket operation: a hang fails the test, it never blocks CI


def numbered_messages(count: int) -> list[bytes]:
    return [f"From: s@example.test\r\nSubject: message {n}\r\n\r\nbody {n}\r\n".encode()
            for n in range(1, count + 1)]


def deliver(server, bodies: list[bytes], user: str = ALICE) -> None:
    """Deliver the messages over SMTP, in one session (faster than a mailserverctl run)."""
    with smtplib.SMTP(*server.address("smtp"), timeout=TIMEOUT) as smtp:
        for body in bodies:
            smtp.sendmail("sender@remote.test", [user], body)


def connect(server, user: str = ALICE) -> poplib.POP3:
    client = poplib.POP3(*server.address("pop3"), timeout=TIMEOUT)
    client.user(user)
    client.pass_(PASSWORD)
    return client


def subjects(client: poplib.POP3) -> list[str]:
    count, _size = client.stat()
    found = []
    for number in range(1, count + 1):
        header = client.top(number, 0)[1]
        found += [line.decode() for line in header if line.startswith(b"Subject:")]
    return found


@pytest.fixture(scope="module")
def loaded_server(shared_mailserver):
    """The shared daemon with the 200 ham messages in alice's INBOX (read-only tests)."""
    shared_mailserver.ctl("user", "import", ALICE, HAM_200)
    return shared_mailserver


def test_capa_on_plain_port(loaded_server):
    """CAPA on the plain port lists the RFC 2449 capabilities, STLS among them."""
    client = poplib.POP3(*loaded_server.address("pop3"), timeout=TIMEOUT)
    capabilities = client.capa()
    client.quit()
    for name in ("TOP", "UIDL", "USER", "RESP-CODES", "PIPELINING", "STLS", "AUTH-RESP-CODE"):
        assert name in capabilities
    assert capabilities["SASL"] == ["PLAIN"]


def test_retr_returns_every_imported_message_byte_for_byte(loaded_server):
    """All 200 real messages come back through RETR exactly as stored (CRLF lines, unstuffed)."""
    expected = [message.raw for message in iter_source(HAM_200)]
    client = connect(loaded_server)
    try:
        count, size = client.stat()
        assert count == 200 and size == sum(len(raw) for raw in expected)
        for number, raw in enumerate(expected, start=1):
            _reply, lines, octets = client.retr(number)
            assert b"\r\n".join(lines) + b"\r\n" == raw, number
    finally:
        client.quit()


def test_list_sizes_match_retr_octets(loaded_server):
    """LIST gives each message's exact size: the octets RETR sends, before stuffing."""
    client = connect(loaded_server)
    try:
        listing = {int(n): int(size) for n, size in (line.split() for line in client.list()[1])}
        for number in (1, 50, 200):
            _reply, lines, _octets = client.retr(number)
            assert len(b"\r\n".join(lines)) + 2 == listing[number]
    finally:
        client.quit()


def test_second_session_gets_in_use(loaded_server):
    """While a session holds alice's maildrop, a second login gets -ERR [IN-USE]; after QUIT it works."""
    first = connect(loaded_server)
    second = poplib.POP3(*loaded_server.address("pop3"), timeout=TIMEOUT)
    second.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_(PASSWORD)
    first.quit()
    second.user(ALICE)
    assert second.pass_(PASSWORD).startswith(b"+OK")
    second.quit()


def test_in_use_across_pop3_and_pop3s(loaded_server):
    """The maildrop lock covers both listeners: pop3s is refused while pop3 holds it."""
    first = connect(loaded_server)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    secure = poplib.POP3_SSL(*loaded_server.address("pop3s"), context=context, timeout=TIMEOUT)
    secure.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        secure.pass_(PASSWORD)
    secure.quit()
    first.quit()


def test_dele_then_quit_deletes(mailserver):
    """DELE marks, QUIT removes: the next session no longer sees the message."""
    deliver(mailserver, numbered_messages(3))
    client = connect(mailserver)
    client.dele(2)
    assert client.quit().startswith(b"+OK")
    client = connect(mailserver)
    assert subjects(client) == ["Subject: message 1", "Subject: message 3"]
    client.quit()


def test_dropped_connection_deletes_nothing(mailserver):
    """A connection closed without QUIT after DELE leaves every message in place."""
    deliver(mailserver, numbered_messages(3))
    client = connect(mailserver)
    client.dele(1)
    client.dele(2)
    client.sock.shutdown(socket.SHUT_RDWR)
    client.close()
    client = connect(mailserver)  # also proves the lock was released
    assert client.stat()[0] == 3
    client.quit()


def test_rset_undeletes(mailserver):
    """RSET unmarks deleted messages, so QUIT afterwards removes nothing."""
    deliver(mailserver, numbered_messages(2))
    client = connect(mailserver)
    client.dele(1)
    assert client.stat()[0] == 1
    client.rset()
    assert client.stat()[0] == 2
    client.quit()
    client = connect(mailserver)
    assert client.stat()[0] == 2
    client.quit()


def test_uidl_stable_across_sessions_deletes_and_restart(mailserver):
    """A message keeps its UIDL across sessions, the deletion of others, and a daemon restart."""
    deliver(mailserver, numbered_messages(4))
    client = connect(mailserver)
    before = dict(line.split()[::-1] for line in client.uidl()[1])  # uid -> number
    by_number = {int(number): uid for uid, number in before.items()}
    client.dele(2)
    client.quit()
    mailserver.restart()
    client = connect(mailserver)
    after = [line.split() for line in client.uidl()[1]]
    client.quit()
    assert [uid for _number, uid in after] == [by_number[1], by_number[3], by_number[4]]
    for uid in by_number.values():
        assert 1 <= len(uid) <= 70 and all(0x21 <= byte <= 0x7E for byte in uid)


def test_message_delivered_by_smtp_is_retrievable(mailserver):
    """A message accepted on the SMTP port is in INBOX for POP3, with the server's Received header."""
    with smtplib.SMTP(*mailserver.address("smtp"), timeout=TIMEOUT) as smtp:
        smtp.sendmail("someone@remote.test", [ALICE],
                      b"From: someone@remote.test\r\nTo: alice@example.test\r\nSubject: via smtp\r\n\r\n"
                      b".\r\n..two dots\r\nend\r\n")
    client = connect(mailserver)
    _reply, lines, _octets = client.retr(1)
    client.quit()
    assert b"Subject: via smtp" in lines
    # Both sides stuff and unstuff: poplib gives back the lines the message holds.
    assert lines[-3:] == [b".", b"..two dots", b"end"]
    assert any(line.startswith(b"Received:") for line in lines)


def test_stls_then_login(mailserver):
    """STLS upgrades the plain connection; login and retrieval work inside TLS."""
    deliver(mailserver, numbered_messages(1))
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    client = poplib.POP3(*mailserver.address("pop3"), timeout=TIMEOUT)
    assert client.stls(context).startswith(b"+OK")
    assert "STLS" not in client.capa()
    client.user(ALICE)
    client.pass_(PASSWORD)
    assert b"Subject: message 1" in client.retr(1)[1]
    client.quit()


def test_pop3s_login_and_retrieve(mailserver):
    """On the implicit-TLS port login and retrieval work and STLS is not offered."""
    deliver(mailserver, numbered_messages(2))
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    client = poplib.POP3_SSL(*mailserver.address("pop3s"), context=context, timeout=TIMEOUT)
    assert "STLS" not in client.capa()
    client.user(ALICE)
    client.pass_(PASSWORD)
    assert client.stat()[0] == 2
    assert b"Subject: message 2" in client.retr(2)[1]
    client.quit()


def test_each_user_sees_only_their_own_inbox(mailserver):
    """bob's maildrop does not contain alice's mail, and bob can log in while alice holds hers."""
    deliver(mailserver, numbered_messages(2))
    alice = connect(mailserver)
    bob = connect(mailserver, "bob@example.test")
    assert alice.stat()[0] == 2 and bob.stat()[0] == 0
    alice.quit()
    bob.quit()
