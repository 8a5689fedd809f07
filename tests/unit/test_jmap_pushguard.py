"""Open push connections end with their credential (jmap/pushguard.py,
store/pushauth.py): one batched check per interval on an injected clock, sign-out
closes at once, checks never overlap, and the store's answer for sessions
(sign-out, expiry, password change), tokens (revoke, expiry, account removal) and
Basic credentials (password change, removal)."""

from __future__ import annotations

import argon2
import pytest
from twisted.internet import defer, task

from mailserverd.jmap import browser, pushguard
from mailserverd.store import Store, pushauth, sessions, tokens

INTERVAL = 30.0
LIFE, MAX_LIFE = 100.0, 1000.0


class Checker:
    """A check function whose answers the test gives; records every batch asked."""

    def __init__(self):
        self.batches: list[list] = []
        self.pending: list[defer.Deferred] = []

    def __call__(self, credentials, now):
        self.batches.append(sorted(credentials, key=repr))
        d = defer.Deferred()
        self.pending.append(d)
        return d

    def answer(self, dead=()):
        self.pending.pop(0).callback(set(dead))


def guard_with(clock=None):
    clock = clock or task.Clock()
    checker = Checker()
    return pushguard.PushGuard(checker, clock, interval=INTERVAL), checker, clock


def test_one_batched_check_per_interval_closes_only_dead_credentials():
    """Nothing is read before the interval; then one check holds every distinct credential
    (three connections, two credentials: one batch of two); only the connections of
    the dead credential are closed, with a reason; the live one is checked again next interval."""
    guard, checker, clock = guard_with()
    closed = []
    alice, bob = ("session", "a" * 64), ("token", "0123456789abcdef")
    guard.watch(alice, "es1", lambda reason: closed.append(("es1", reason)))
    guard.watch(alice, "ws1", lambda reason: closed.append(("ws1", reason)))
    guard.watch(bob, "ws2", lambda reason: closed.append(("ws2", reason)))
    clock.advance(INTERVAL - 1)
    assert checker.batches == []
    clock.advance(1)
    assert checker.batches == [sorted([alice, bob], key=repr)]
    checker.answer({alice})
    assert sorted(name for name, _ in closed) == ["es1", "ws1"] and "signed out" in closed[0][1]
    assert list(guard.watched) == [bob]
    clock.advance(INTERVAL)
    assert checker.batches[-1] == [bob] and len(checker.batches) == 2
    checker.answer(set())
    assert len(closed) == 2


def test_the_loop_runs_only_while_connections_are_watched():
    """With no connection nothing is scheduled; the last unwatch (or the last dead
    credential) stops the loop; None (no recorded credential) is never watched."""
    guard, checker, clock = guard_with()
    guard.watch(None, "x", lambda reason: None)
    assert clock.getDelayedCalls() == [] and guard.watched == {}
    credential = ("token", "0123456789abcdef")
    guard.watch(credential, "ws", lambda reason: None)
    assert len(clock.getDelayedCalls()) == 1
    guard.unwatch(credential, "ws")
    assert clock.getDelayedCalls() == [] and guard.watched == {}
    clock.advance(10 * INTERVAL)
    assert checker.batches == []
    guard.watch(credential, "ws", lambda reason: None)
    clock.advance(INTERVAL)
    checker.answer({credential})
    assert clock.getDelayedCalls() == [] and guard.watched == {}


def test_revoke_closes_that_sessions_connections_at_once():
    """Sign-out in this process (revoke) closes the session's connections without
    waiting for a check, and no other session's."""
    guard, checker, clock = guard_with()
    closed = []
    mine, other = ("session", "a" * 64), ("session", "b" * 64)
    guard.watch(mine, "es", lambda reason: closed.append(("es", reason)))
    guard.watch(mine, "ws", lambda reason: closed.append(("ws", reason)))
    guard.watch(other, "ws2", lambda reason: closed.append(("ws2", reason)))
    assert guard.revoke(mine, "signed out") == 2
    assert sorted(closed) == [("es", "signed out"), ("ws", "signed out")]
    assert checker.batches == [] and list(guard.watched) == [other]


def test_checks_never_overlap_and_a_late_request_runs_once_more():
    """While a check is unanswered, ticks and check_now start no second one; once it
    answers, one more check runs (changes made meanwhile are not missed)."""
    guard, checker, clock = guard_with()
    credential = ("account", 7, "d" * 64)
    guard.watch(credential, "es", lambda reason: None)
    clock.advance(INTERVAL)
    clock.advance(INTERVAL)
    guard.check_now()
    assert len(checker.batches) == 1
    checker.answer(set())
    assert len(checker.batches) == 2
    checker.answer(set())
    assert len(checker.batches) == 2 and guard.watched


def test_on_dead_hears_what_a_check_found():
    """on_dead gets the dead credentials of a check (web.py forgets cached logins when a
    password changed elsewhere); a check finding nothing dead does not call it."""
    found = []
    checker = Checker()
    clock = task.Clock()
    guard = pushguard.PushGuard(checker, clock, interval=INTERVAL, on_dead=found.append)
    credential = ("account", 7, "d" * 64)
    guard.watch(credential, "es", lambda reason: None)
    guard.watch(("token", "0123456789abcdef"), "ws", lambda reason: None)
    clock.advance(INTERVAL)
    checker.answer(set())
    clock.advance(INTERVAL)
    checker.answer({credential})
    assert found == [{credential}]


def test_check_now_and_a_failed_check():
    """check_now (an admin change in this process) reads at once; a failed read is
    logged and the next interval checks again; a failing close does not stop the others."""
    guard, checker, clock = guard_with()
    credential = ("token", "0123456789abcdef")
    closed = []

    def broken(reason):
        raise RuntimeError("boom")
    guard.watch(credential, "bad", broken)
    guard.watch(credential, "good", closed.append)
    guard.check_now()
    assert len(checker.batches) == 1
    checker.pending.pop(0).errback(RuntimeError("database away"))
    clock.advance(INTERVAL)
    assert len(checker.batches) == 2
    checker.answer({credential})
    assert closed == ["the token was revoked or expired"] and guard.watched == {}


def test_interval_from_the_environment(monkeypatch):
    """MAILSERVERD_PUSH_RECHECK sets the interval (tests); nonsense keeps the default."""
    monkeypatch.setenv(pushguard.RECHECK_ENV, "0.5")
    assert pushguard.default_interval() == 0.5
    for bad in ("", "x", "0", "-1", "1e9"):
        monkeypatch.setenv(pushguard.RECHECK_ENV, bad)
        assert pushguard.default_interval() == pushguard.RECHECK_INTERVAL


def test_ticket_carries_the_credential_it_was_issued_under():
    """A push ticket remembers the credential of the request that got it, so a
    connection opened with it ends with that session or token; signing out drops
    that session's unused tickets and no other's."""
    tickets = browser.Tickets(task.Clock())
    ticket, _ = tickets.issue("alice", ("session", "a" * 64))
    assert tickets.redeem_with_credential(ticket) == ("alice", ("session", "a" * 64))
    assert tickets.redeem_with_credential(ticket) is None
    signed_out, _ = tickets.issue("alice", ("session", "a" * 64))
    other, _ = tickets.issue("alice", ("session", "b" * 64))
    assert tickets.forget_credential(("session", "a" * 64)) == 1  # its session signed out
    assert tickets.redeem(signed_out) is None and tickets.redeem(other) == "alice"


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/d.sqlite3", [f"sqlite:///{tmp_path}/s0.sqlite3"], str(tmp_path / "b"))
    store.directory.hasher = argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)  # fast tests
    store.directory.add_domain("example.test")
    store.add_account("alice@example.test", "pw")
    store.add_account("bob@example.test", "pw")
    yield store
    store.close()


def _dead(store, credentials, now=1001.0):
    return pushauth.dead(store, credentials, now, LIFE, MAX_LIFE)


def test_store_sessions_dead_after_signout_expiry_and_password_change(store):
    """A session credential is dead once signed out, expired (sliding), or its
    account's password changed; another account's session is unaffected."""
    alice, bob = (store.directory.get_account(a) for a in ("alice@example.test", "bob@example.test"))
    out, _ = sessions.create(store, alice, 1000.0, LIFE, MAX_LIFE)
    _s, kept = sessions.create(store, bob, 1000.0, LIFE, MAX_LIFE)
    _s, changed = sessions.create(store, alice, 1000.0, LIFE, MAX_LIFE)
    creds = {name: ("session", digest) for name, digest in
             (("out", sessions.digest(out)), ("kept", kept.id_sha256), ("changed", changed.id_sha256))}
    assert _dead(store, creds.values()) == set()
    sessions.revoke(store, out)
    assert _dead(store, creds.values()) == {creds["out"]}
    store.directory.set_password("alice@example.test", "new")
    assert _dead(store, creds.values()) == {creds["out"], creds["changed"]}
    assert _dead(store, [creds["kept"]], now=1000.0 + LIFE) == {creds["kept"]}  # sliding expiry


def test_store_tokens_dead_after_revoke_expiry_and_removal(store):
    """A token credential is dead once revoked, expired, or its account removed (and
    made again under the same address); a password change does not end a token."""
    revoked, _ = tokens.create(store, "alice@example.test")
    expiring, _ = tokens.create(store, "alice@example.test", lifetime=60, clock=lambda: 1000.0)
    kept, _ = tokens.create(store, "bob@example.test")
    creds = {name: ("token", token_id) for name, token_id in
             (("revoked", revoked), ("expiring", expiring), ("kept", kept))}
    assert _dead(store, creds.values()) == set()
    tokens.revoke(store, revoked)
    store.directory.set_password("bob@example.test", "new")
    assert _dead(store, creds.values()) == {creds["revoked"]}
    assert _dead(store, creds.values(), now=1060.0) == {creds["revoked"], creds["expiring"]}
    store.remove_account("bob@example.test")
    assert creds["kept"] in _dead(store, creds.values())
    store.add_account("carol@example.test", "pw")  # takes the next id: the re-made bob differs
    store.add_account("bob@example.test", "pw")
    assert creds["kept"] in _dead(store, creds.values())


def test_store_basic_credential_dead_after_password_change_or_removal(store):
    """A Basic credential is the account row's digest read at open: dead after a
    password change or removal; unknown kinds count as dead."""
    alice = store.directory.get_account("alice@example.test")
    bob = store.directory.get_account("bob@example.test")
    a = ("account", alice.id, pushauth.account_digest(store, alice.id, alice.address))
    b = ("account", bob.id, pushauth.account_digest(store, bob.id, bob.address))
    assert a[2] and _dead(store, [a, b]) == set()
    store.directory.set_password("alice@example.test", "pw")  # same password, new salted hash
    assert _dead(store, [a, b]) == {a}
    store.remove_account("bob@example.test")
    assert _dead(store, [a, b, ("weird", 1)]) == {a, b, ("weird", 1)}
    assert pushauth.account_digest(store, bob.id, bob.address) is None


def test_store_check_is_one_batch_for_many_credentials(store):
    """Many credentials (more than one IN list) are answered in one call: every
    unknown session and token is dead, the live ones are not."""
    alice = store.directory.get_account("alice@example.test")
    _s, live = sessions.create(store, alice, 1000.0, LIFE, MAX_LIFE)
    token_id, _ = tokens.create(store, "alice@example.test")
    unknown = [("session", f"{n:064x}") for n in range(1200)] + [("token", f"{n:016x}") for n in range(700)]
    found = _dead(store, unknown + [("session", live.id_sha256), ("token", token_id)])
    assert found == set(unknown)


def test_eventsource_stream_ends_when_its_credential_dies(tmp_path):
    """An EventSource stream registered under a token is found dead by the next check:
    the response gets a ": closed" comment, ends, and leaves the guard and the
    store's subscribers; a stream of another credential keeps streaming."""
    from mailserverd.jmap import eventsource
    from mailserverd.jmap.api import account_id_of
    from tests.support.jmapstore import make
    from tests.unit.test_jmap_eventsource import FakeRequest
    store, accounts = make(tmp_path, users=("alice@example.test",))
    try:
        alice = accounts["alice@example.test"]
        guard, checker, clock = guard_with()
        source = eventsource.EventSource(store, clock, guard)
        revoked, kept = ("token", "0123456789abcdef"), ("token", "fedcba9876543210")
        requests = {}
        for credential in (revoked, kept):
            request = FakeRequest({"types": "*", "closeafter": "no", "ping": "0"})
            source.open(request, alice, account_id_of(alice), credential)
            requests[credential] = request
        clock.advance(INTERVAL)
        checker.answer({revoked})
        gone = requests[revoked]
        assert gone.finished and gone.written[-1] == b": closed: the token was revoked or expired\n\n"
        assert not requests[kept].finished and list(guard.watched) == [kept]
        assert len(source.streams[alice.id]) == 1
    finally:
        store.store.close()
