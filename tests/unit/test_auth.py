"""Authentication through the twisted.cred portal: penalty, cache, plaintext rule."""

from __future__ import annotations


import pytest
from twisted.internet import defer, task

from mailserverd.auth import AuthFailed, Authenticator, MailRealm, Penalty, StoreChecker, plaintext_allowed
from mailserverd.auth import sasl
from mailserverd.store.api import Account
from twisted.cred import portal

ALICE = Account(id=1, address="alice@example.test", shard=0)


class DirectoryStore:
    """A real-enough password source: counts verifications, answers at once."""

    def __init__(self):
        self.calls = 0

    def verify_password(self, address, password):
        self.calls += 1
        return defer.succeed(ALICE if (address.lower(), password) == (ALICE.address, "right") else None)


def make(clock, store=None):
    store = store or DirectoryStore()
    checker = StoreChecker(store, clock, ttl=300)
    return Authenticator(portal.Portal(MailRealm(), [checker]), clock, Penalty(clock, 2.0, 15.0)), store


def test_success_returns_the_account():
    """The right password yields the Account avatar with no delay."""
    clock = task.Clock()
    auth, _ = make(clock)
    results = []
    auth.authenticate("Alice@Example.test", "right", "192.0.2.1").addCallback(results.append)
    assert results == [ALICE]


def test_failures_are_delayed_doubling_to_the_cap():
    """Dovecot's auth penalty: 2 s after the first failure, doubling, capped at 15 s."""
    clock = task.Clock()
    auth, _ = make(clock)
    delays = []
    for _ in range(5):
        outcome = []
        auth.authenticate("alice@example.test", "wrong", "192.0.2.7").addErrback(
            lambda f: outcome.append(f.trap(AuthFailed)))
        waited = 0.0
        while not outcome:
            clock.advance(0.5)
            waited += 0.5
        delays.append(waited)
    assert delays == [2.0, 4.0, 8.0, 15.0, 15.0]


def test_penalty_follows_the_account_across_ips():
    """Failures for one account slow attempts on it from a fresh IP too."""
    clock = task.Clock()
    penalty = Penalty(clock, 2.0, 15.0)
    penalty.failed("ip:192.0.2.1", "user:alice")
    penalty.failed("ip:192.0.2.2", "user:alice")
    assert penalty.delay("ip:198.51.100.9", "user:alice") == 4.0
    clock.advance(901)
    assert penalty.delay("ip:198.51.100.9", "user:alice") == 0.0, "forgotten after 15 minutes"


def test_cache_avoids_a_second_hash_until_ttl():
    """A verified password is cached (argon2 is slow); it expires after the TTL."""
    clock = task.Clock()
    auth, store = make(clock)
    for _ in range(3):
        auth.authenticate("alice@example.test", "right", "127.0.0.1")
    assert store.calls == 1
    clock.advance(301)
    auth.authenticate("alice@example.test", "right", "127.0.0.1")
    assert store.calls == 2
    auth.forget_cached()
    auth.authenticate("alice@example.test", "right", "127.0.0.1")
    assert store.calls == 3


def test_wrong_password_is_never_cached():
    """A failed verification is not cached as success."""
    clock = task.Clock()
    auth, store = make(clock)
    failures = []
    auth.authenticate("alice@example.test", "wrong", "127.0.0.1").addErrback(failures.append)
    clock.advance(20)
    assert failures and store.calls == 1


@pytest.mark.parametrize("secure, ip, allowed", [
    (True, "203.0.113.5", True), (False, "127.0.0.1", True), (False, "127.8.9.10", True),
    (False, "::1", True), (False, "203.0.113.5", False), (False, "garbage", False),
])
def test_plaintext_only_over_tls_or_loopback(secure, ip, allowed):
    """Plaintext passwords are refused on unencrypted non-loopback connections."""
    assert plaintext_allowed(secure, ip) is allowed


def test_sasl_plain_decoding():
    """RFC 4616: authzid NUL authcid NUL password; malformed data is a SASLError."""
    assert sasl.decode_plain(b"\x00alice\x00pw") == ("", "alice", "pw")
    for bad in (b"alice\x00pw", b"\x00\x00pw", b"a\x00b\x00c\x00d", b"\x00\xff\x00pw"):
        with pytest.raises(sasl.SASLError):
            sasl.decode_plain(bad)
    with pytest.raises(sasl.SASLError):
        sasl.b64decode(b"not base64!")
    with pytest.raises(sasl.SASLError):
        sasl.b64decode(b"QUFB" * 2000)
    assert sasl.b64decode(b"=") == b""
    assert sasl.decode_login_field(b"YWxpY2U=") == "alice"


def test_realm_gives_the_account_avatar():
    """The realm hands back the checker's Account for IMailAccount."""
    from mailserverd.auth import IMailAccount

    iface, avatar, _logout = MailRealm().requestAvatar(ALICE, None, IMailAccount)
    assert (iface, avatar) == (IMailAccount, ALICE)


class SlowDirectory(DirectoryStore):
    """A password source whose checks complete only when the test says so."""

    def __init__(self):
        super().__init__()
        self.pending = []

    def verify_password(self, address, password):
        self.calls += 1
        d = defer.Deferred()
        self.pending.append((d, ALICE if (address.lower(), password) == (ALICE.address, "right") else None))
        return d

    def finish_all(self):
        pending, self.pending = self.pending, []
        for d, result in pending:
            d.callback(result)


def test_concurrent_logins_share_one_password_check():
    """Ten simultaneous logins with the same password cost one argon2 check, and all succeed."""
    clock = task.Clock()
    store = SlowDirectory()
    auth, _ = make(clock, store)
    results = []
    for _ in range(10):
        auth.authenticate("alice@example.test", "right", "127.0.0.1").addCallback(results.append)
    assert store.calls == 1 and results == []
    store.finish_all()
    assert results == [ALICE] * 10
    auth.authenticate("alice@example.test", "right", "127.0.0.1").addCallback(results.append)
    assert store.calls == 1 and len(results) == 11, "the next login is a cache hit"


def test_concurrent_wrong_passwords_all_fail_and_are_penalised():
    """Logins sharing a failed check all fail with the penalty; nothing is cached."""
    clock = task.Clock()
    store = SlowDirectory()
    auth, _ = make(clock, store)
    failures = []
    for _ in range(3):
        auth.authenticate("alice@example.test", "wrong", "192.0.2.9").addErrback(
            lambda f: failures.append(f.trap(AuthFailed)))
    store.finish_all()
    clock.advance(60)
    assert len(failures) == 3 and store.calls == 1
    auth.authenticate("alice@example.test", "wrong", "192.0.2.9").addErrback(lambda f: None)
    assert store.calls == 2, "a wrong password is checked again every time"


def test_check_started_before_an_admin_change_is_not_cached():
    """forget() during a running check: its answer reaches its caller but is not cached,
    and a login after the change starts a fresh check."""
    clock = task.Clock()
    store = SlowDirectory()
    auth, _ = make(clock, store)
    first = []
    auth.authenticate("alice@example.test", "right", "127.0.0.1").addCallback(first.append)
    auth.forget_cached()  # e.g. `mailserverctl user passwd` while the check runs
    second = []
    auth.authenticate("alice@example.test", "right", "127.0.0.1").addCallback(second.append)
    assert store.calls == 2, "no sharing across the change"
    store.finish_all()
    assert first == [ALICE] and second == [ALICE]
    auth.forget_cached()
    auth.authenticate("alice@example.test", "right", "127.0.0.1")
    assert store.calls == 3


def test_cache_key_is_a_keyed_hash_not_the_password():
    """The cache holds an HMAC of (address, password): the password appears nowhere in it,
    and two processes (two random keys) derive different keys."""
    clock = task.Clock()
    checker = StoreChecker(DirectoryStore(), clock)
    Authenticator(portal.Portal(MailRealm(), [checker]), clock, Penalty(clock)).authenticate(
        "alice@example.test", "right", "127.0.0.1")
    (key,) = checker._cache
    assert b"right" not in key and len(key) == 32
    other = StoreChecker(DirectoryStore(), clock)
    assert other._cache_key("alice@example.test", "right") != key
    assert checker._cache_key("ALICE@example.test", "right") == key, "addresses are case-insensitive"
    assert checker._cache_key("alice@example.test", "Right") != key, "passwords are not"


def test_expired_entries_make_room_before_clearing():
    """A full cache drops expired entries first; live ones stay cached."""
    clock = task.Clock()
    store = DirectoryStore()
    checker = StoreChecker(store, clock, ttl=10, max_entries=1)
    auth = Authenticator(portal.Portal(MailRealm(), [checker]), clock, Penalty(clock))
    checker._cache[b"old"] = (5.0, ALICE)
    clock.advance(6)
    auth.authenticate("alice@example.test", "right", "127.0.0.1")
    auth.authenticate("alice@example.test", "right", "127.0.0.1")
    assert store.calls == 1 and b"old" not in checker._cache
