"""The POP3 Twisted protocol against an in-memory store and authenticator, with an
injected clock: locks, UPDATE, failures of the store, timeouts, flow control."""

from __future__ import annotations

import types

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from mailserverd.auth import AuthFailed
from mailserverd.pop3.server import build_factory
from mailserverd.store.api import Account, Mailbox, MessageRef, StoreError

ALICE = Account(id=1, address="alice@example.test", shard=0)
PASSWORD = "secret"


def settings(timeout=600.0):
    return types.SimpleNamespace(
        server=types.SimpleNamespace(hostname="mx.example.test"),
        pop3=types.SimpleNamespace(timeout=timeout),
        limits=types.SimpleNamespace(max_connections_per_ip=3, max_line_length=1024 * 1024))


class MemoryStore:
    """The MailStore calls POP3 makes, over a dict; `hold` keeps a method's Deferred unfired."""

    def __init__(self, messages):
        self.messages = dict(messages)  # uid -> body
        self.expunged: list[list[int]] = []
        self.reads: list[list[int]] = []  # message ids of each read_messages call
        self.hold: dict[str, defer.Deferred] = {}
        self.fail: dict[str, Exception] = {}

    def _answer(self, name, value):
        if name in self.fail:
            return defer.fail(self.fail[name])
        if name in self.hold:
            d = self.hold[name]
            d.addCallback(lambda _: value)
            return d
        return defer.succeed(value)

    def get_mailbox(self, account, name):
        return self._answer("get_mailbox", Mailbox(id=10, name="INBOX", special_use=None, uidvalidity=42,
                                                   uidnext=100, subscribed=True))

    def list_messages(self, account, mailbox_id):
        refs = [MessageRef(10, uid, uid + 1000, len(body), frozenset(), 1, 0.0)
                for uid, body in sorted(self.messages.items())]
        return self._answer("list_messages", refs)

    def read_messages(self, account, message_ids):
        self.reads.append(list(message_ids))
        found = {mid: self.messages[mid - 1000] for mid in message_ids if mid - 1000 in self.messages}
        return self._answer("read_messages", found)

    def expunge(self, account, mailbox_id, uids):
        self.expunged.append(list(uids))
        return self._answer("expunge", None)


class Authenticator:
    def __init__(self):
        self.error: Exception | None = None

    def authenticate(self, username, password, remote_ip, protocol=""):
        if self.error is not None:
            return defer.fail(self.error)
        if username == ALICE.address and password == PASSWORD:
            return defer.succeed(ALICE)
        return defer.fail(AuthFailed())


class Harness:
    def __init__(self, store=None, mode="pop3", timeout=600.0):
        self.clock = Clock()
        self.store = store or MemoryStore({1: b"Subject: a\r\n\r\n.\r\n", 2: b"Subject: b\r\n\r\nbody\r\n"})
        self.authenticator = Authenticator()
        self.factory = build_factory(mode, settings(timeout), self.store, self.authenticator, None,
                                     clock=self.clock)

    def connect(self, ip="127.0.0.1"):
        proto = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", ip, 40000))
        proto.makeConnection(transport)
        return proto, transport

    def login(self, ip="127.0.0.1"):
        proto, transport = self.connect(ip)
        proto.dataReceived(f"USER {ALICE.address}\r\nPASS {PASSWORD}\r\n".encode())
        assert b"+OK Logged in" in transport.value(), transport.value()
        transport.clear()
        return proto, transport


def drop(proto, transport):
    transport.loseConnection()
    proto.connectionLost(Failure(ConnectionError("gone")))


def test_greeting_on_connect():
    """A new connection is greeted with +OK and the host name."""
    _proto, transport = Harness().connect()
    assert transport.value() == b"+OK mx.example.test POP3 server ready\r\n"


def test_unknown_user_and_wrong_password_get_identical_replies():
    """An unknown user and a wrong password both get exactly -ERR [AUTH] Authentication failed."""
    harness = Harness()
    replies = []
    for user, password in (("ghost@example.test", PASSWORD), (ALICE.address, "wrong")):
        proto, transport = harness.connect()
        transport.clear()
        proto.dataReceived(f"USER {user}\r\nPASS {password}\r\n".encode())
        replies.append(transport.value())
    assert replies[0] == replies[1] == b"+OK Send your password\r\n-ERR [AUTH] Authentication failed\r\n"


def test_second_session_gets_in_use():
    """While one session holds the maildrop, a second login gets -ERR [IN-USE]."""
    harness = Harness()
    harness.login()
    proto, transport = harness.connect()
    transport.clear()
    proto.dataReceived(f"USER {ALICE.address}\r\nPASS {PASSWORD}\r\n".encode())
    assert transport.value().endswith(b"-ERR [IN-USE] Maildrop already locked by another session\r\n")


def test_lock_is_shared_by_pop3_and_pop3s():
    """The lock is per store: a pop3s session is refused while a pop3 session holds it."""
    harness = Harness()
    harness.login()
    pop3s = build_factory("pop3s", settings(), harness.store, harness.authenticator, None, clock=harness.clock)
    proto = pop3s.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40001))
    proto.makeConnection(transport)
    proto.dataReceived(f"USER {ALICE.address}\r\nPASS {PASSWORD}\r\n".encode())
    assert b"[IN-USE]" in transport.value()


def test_dropped_connection_deletes_nothing_and_frees_lock():
    """A connection lost after DELE expunges nothing and releases the lock for the next session."""
    harness = Harness()
    proto, transport = harness.login()
    proto.dataReceived(b"DELE 1\r\n")
    drop(proto, transport)
    assert harness.store.expunged == []
    harness.login()  # the lock is free again


def test_quit_expunges_marked_uids_and_answers_after_commit():
    """QUIT expunges the marked UIDs and answers +OK only once the store's Deferred fires."""
    harness = Harness()
    harness.store.hold["expunge"] = pending = defer.Deferred()
    proto, transport = harness.login()
    proto.dataReceived(b"DELE 2\r\nQUIT\r\n")
    assert harness.store.expunged == [[2]]
    assert transport.value() == b"+OK Message 2 deleted\r\n"
    pending.callback(None)
    assert transport.value().endswith(b"+OK Logging out, 1 messages deleted\r\n")
    assert transport.disconnecting


def test_lock_held_until_expunge_completes():
    """The lock outlives a dropped connection while UPDATE is still expunging."""
    harness = Harness()
    harness.store.hold["expunge"] = pending = defer.Deferred()
    proto, transport = harness.login()
    proto.dataReceived(b"DELE 1\r\nQUIT\r\n")
    drop(proto, transport)
    assert harness.factory.locks.held(ALICE.id)
    pending.callback(None)
    assert not harness.factory.locks.held(ALICE.id)


def test_expunge_failure_answers_sys_temp():
    """If the expunge fails, QUIT answers -ERR [SYS/TEMP] and the lock is released."""
    harness = Harness()
    harness.store.fail["expunge"] = RuntimeError("disk full")
    proto, transport = harness.login()
    proto.dataReceived(b"DELE 1\r\nQUIT\r\n")
    assert transport.value().endswith(b"-ERR [SYS/TEMP] Some deleted messages not removed, try again later\r\n")
    assert not harness.factory.locks.held(ALICE.id)


def test_message_expunged_elsewhere_answers_err():
    """RETR of a message another protocol expunged since login answers -ERR; the session goes on."""
    harness = Harness()
    proto, transport = harness.login()
    del harness.store.messages[1]
    proto.dataReceived(b"RETR 1\r\nNOOP\r\n")
    assert transport.value() == b"-ERR Message was removed by another session\r\n+OK\r\n"


def test_store_read_failure_answers_sys_temp():
    """A store error other than a missing message answers -ERR [SYS/TEMP]."""
    harness = Harness()
    proto, transport = harness.login()
    harness.store.fail["read_messages"] = RuntimeError("rocksdb")
    proto.dataReceived(b"RETR 1\r\n")
    assert transport.value() == b"-ERR [SYS/TEMP] Cannot read the message now, try again later\r\n"


def test_maildrop_open_failure_answers_sys_temp_and_unlocks():
    """If listing INBOX fails after authentication, login answers [SYS/TEMP] and keeps no lock."""
    harness = Harness()
    harness.store.fail["list_messages"] = RuntimeError("db down")
    proto, transport = harness.connect()
    proto.dataReceived(f"USER {ALICE.address}\r\nPASS {PASSWORD}\r\n".encode())
    assert transport.value().endswith(b"-ERR [SYS/TEMP] Temporary server problem, try again later\r\n")
    assert not harness.factory.locks.held(ALICE.id)


def test_authentication_backend_error_answers_sys_temp():
    """An exception from the authenticator (not AuthFailed) answers [SYS/TEMP]."""
    harness = Harness()
    harness.authenticator.error = RuntimeError("directory down")
    proto, transport = harness.connect()
    proto.dataReceived(f"USER {ALICE.address}\r\nPASS {PASSWORD}\r\n".encode())
    assert transport.value().endswith(b"-ERR [SYS/TEMP] Temporary server problem, try again later\r\n")


def test_sasl_authzid_of_another_user_is_refused():
    """AUTH PLAIN asking to act as another user is refused like a bad password."""
    import base64
    harness = Harness()
    proto, transport = harness.connect()
    response = base64.b64encode(f"bob@example.test\0{ALICE.address}\0{PASSWORD}".encode())
    proto.dataReceived(b"AUTH PLAIN " + response + b"\r\n")
    assert transport.value().endswith(b"-ERR [AUTH] Authentication failed\r\n")


def test_reading_pauses_while_waiting_for_the_store():
    """While RETR waits for the store, the transport stops reading; it resumes after the answer."""
    harness = Harness()
    proto, transport = harness.login()
    harness.store.hold["read_messages"] = pending = defer.Deferred()
    proto.dataReceived(b"RETR 2\r\nSTAT\r\n")
    assert transport.producerState == "paused"
    assert transport.value() == b""
    pending.callback(None)
    assert transport.value() == b"+OK 20 octets\r\nSubject: b\r\n\r\nbody\r\n.\r\n+OK 2 37\r\n"
    assert transport.producerState == "producing"


def test_idle_timeout_closes_without_update():
    """After pop3.timeout idle seconds the session is closed with -ERR and nothing is expunged."""
    harness = Harness(timeout=600.0)
    proto, transport = harness.login()
    proto.dataReceived(b"DELE 1\r\n")
    harness.clock.advance(599)
    assert not transport.disconnecting
    harness.clock.advance(2)
    assert transport.value().endswith(b"-ERR Disconnected for inactivity\r\n")
    assert transport.disconnecting
    assert harness.store.expunged == []


class FullAfterEachWrite(StringTransport):
    """A transport whose buffer is full after every write, as a slow reader's would be."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.writes: list[int] = []

    def write(self, data):
        super().write(data)
        self.writes.append(len(data))
        if self.producer is not None:
            self.producer.pauseProducing()


def test_big_body_waits_for_transport_to_drain():
    """A big body is written a chunk per resumeProducing, never all at once, and arrives whole."""
    body = b"Subject: big\r\n\r\n" + b"".join(b".line %d\r\n" % i for i in range(60_000))
    harness = Harness(MemoryStore({1: body}))
    proto, _ = harness.login()
    transport = FullAfterEachWrite(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    proto.transport = transport
    transport.registerProducer(proto, True)
    proto.dataReceived(b"RETR 1\r\nNOOP\r\n")
    assert len(transport.writes) == 1
    for _ in range(100):
        if transport.value().endswith(b"+OK\r\n"):
            break
        proto.resumeProducing()
    assert len(transport.writes) > 5 and max(transport.writes) <= 2 * 65536
    assert transport.value().endswith(b"..line 59999\r\n.\r\n+OK\r\n")
    assert transport.value().count(b"\r\n..line ") == 60_000


def test_too_many_connections_from_one_ip():
    """Past limits.max_connections_per_ip the connection gets -ERR [SYS/TEMP] and is closed."""
    harness = Harness()
    for _ in range(3):
        harness.connect("192.0.2.1")
    _proto, transport = harness.connect("192.0.2.1")
    assert transport.value() == b"-ERR [SYS/TEMP] Too many connections from your address\r\n"
    assert transport.disconnecting


def test_plaintext_login_refused_from_remote_without_tls():
    """From a non-loopback address without TLS, USER gets -ERR [AUTH] and no login happens."""
    proto, transport = Harness().connect("192.0.2.7")
    transport.clear()
    proto.dataReceived(f"USER {ALICE.address}\r\nPASS {PASSWORD}\r\n".encode())
    assert transport.value().count(b"-ERR [AUTH] Plaintext authentication disallowed") == 2


def test_pop3s_accepts_plaintext_login_from_remote():
    """On pop3s the connection is secure from the start: USER/PASS work from any address."""
    harness = Harness(mode="pop3s")
    proto, transport = harness.connect("192.0.2.7")
    proto.dataReceived(f"USER {ALICE.address}\r\nPASS {PASSWORD}\r\n".encode())
    assert b"+OK Logged in" in transport.value()


def test_unknown_mode_is_refused():
    """build_factory rejects a mode other than pop3 and pop3s."""
    with pytest.raises(ValueError):
        build_factory("imap", settings(), MemoryStore({}), Authenticator(), None, clock=Clock())


def test_retr_reads_ahead_in_batches_bounded_by_count_and_bytes(monkeypatch):
    """RETR of every message in order costs one store read per batch of following live
    messages (DELEd ones skipped), at most READ_AHEAD_COUNT messages or READ_AHEAD_BYTES each;
    the bodies sent are exactly the stored ones."""
    from mailserverd.pop3 import server as pop3_server
    monkeypatch.setattr(pop3_server, "READ_AHEAD_COUNT", 3)
    monkeypatch.setattr(pop3_server, "READ_AHEAD_BYTES", 100)
    bodies = {uid: b"Subject: %d\r\n\r\n" % uid + b"x" * (10 if uid != 7 else 90) + b"\r\n"
              for uid in range(1, 11)}
    harness = Harness(MemoryStore(bodies))
    proto, transport = harness.login()
    proto.dataReceived(b"DELE 2\r\n")
    proto.dataReceived(b"".join(b"RETR %d\r\n" % n for n in range(1, 11) if n != 2))
    out = transport.value()
    for uid in range(1, 11):
        assert (uid == 2) != (bodies[uid] + b".\r\n" in out)
    # 26 octets each but uid 7 (106) and 10 (27): the byte bound cuts before 100 is passed
    assert harness.store.reads == [[1001, 1003, 1004], [1005, 1006], [1007], [1008, 1009, 1010]]


def test_retr_of_a_message_expunged_elsewhere_after_read_ahead_still_fails_cleanly():
    """A message absent from the batch read (expunged by IMAP since login) answers -ERR; the
    next RETR is served."""
    harness = Harness()
    proto, transport = harness.login()
    del harness.store.messages[2]
    proto.dataReceived(b"RETR 2\r\nRETR 1\r\n")
    assert transport.value().startswith(b"-ERR Message was removed by another session\r\n+OK ")
