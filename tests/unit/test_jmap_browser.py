"""Browser sessions, CSRF tokens, push tickets and CORS helpers (store/sessions.py,
jmap/browser.py) with injected clocks: hash-only storage, sliding and absolute
expiry, revocation on password change and account removal, single-use tickets."""

from __future__ import annotations

import types

import argon2
import pytest
from sqlalchemy import select
from twisted.internet import defer, task
from twisted.web.test.requesthelper import DummyRequest

from mailserverd.jmap import browser
from mailserverd.store import Store, sessions

LIFE, MAX_LIFE = 100.0, 1000.0


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/d.sqlite3", [f"sqlite:///{tmp_path}/s0.sqlite3"], str(tmp_path / "b"))
    store.directory.hasher = argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)  # fast tests
    store.directory.add_domain("example.test")
    store.add_account("alice@example.test", "pw")
    yield store
    store.close()


def alice(store):
    return store.directory.get_account("alice@example.test")


def test_only_the_hash_of_the_secret_is_stored(store):
    """The table holds the SHA-256 of the cookie secret and nothing that reveals the
    secret or the CSRF token; lookup finds the session by the secret alone."""
    secret, session = sessions.create(store, alice(store), 1000.0, LIFE, MAX_LIFE)
    with store.directory_engine.connect() as conn:
        row = conn.execute(select(sessions.browser_sessions)).one()
    assert row.id_sha256 == sessions.digest(secret) == session.id_sha256
    assert secret not in repr(tuple(row)) and browser.csrf_token(secret) not in repr(tuple(row))
    assert sessions.lookup(store, secret, 1001.0, LIFE, MAX_LIFE).account.address == "alice@example.test"
    for bad in ("", "x" * 43, secret[:-1], secret + "A", "../" + secret[3:]):
        assert sessions.lookup(store, bad, 1001.0, LIFE, MAX_LIFE) is None


def test_sliding_and_absolute_expiry(store):
    """A session lives `lifetime` seconds past its last renewal, renewals extend it, but
    never past `max_lifetime` after sign-in; a dead session's row is deleted."""
    secret, _ = sessions.create(store, alice(store), 1000.0, LIFE, MAX_LIFE)
    assert sessions.lookup(store, secret, 1099.0, LIFE, MAX_LIFE) is not None
    now = 1099.0
    while now < 1900.0:  # renewed every 90 s: alive up to the absolute limit
        sessions.touch(store, sessions.digest(secret), now)
        now += 90.0
        found = sessions.lookup(store, secret, now, LIFE, MAX_LIFE)
        assert found is not None and found.expires_at == min(now - 90.0 + LIFE, 2000.0)
    assert sessions.lookup(store, secret, 2000.0, LIFE, MAX_LIFE) is None
    assert sessions.count(store) == 0
    secret, _ = sessions.create(store, alice(store), 5000.0, LIFE, MAX_LIFE)
    assert sessions.lookup(store, secret, 5100.0, LIFE, MAX_LIFE) is None  # not renewed: sliding limit


def test_password_change_and_removal_revoke(store):
    """A new password hash (even for the same password), a removed account, and an
    account made again under the same address all end existing sessions; purge deletes them."""
    secret, _ = sessions.create(store, alice(store), 1000.0, LIFE, MAX_LIFE)
    store.directory.set_password("alice@example.test", "pw")
    assert sessions.lookup(store, secret, 1001.0, LIFE, MAX_LIFE) is None
    first, _ = sessions.create(store, alice(store), 1000.0, LIFE, MAX_LIFE)
    second, _ = sessions.create(store, alice(store), 1000.0, LIFE, MAX_LIFE)
    store.directory.set_password("alice@example.test", "new")
    assert sessions.purge(store, 1001.0, LIFE, MAX_LIFE) == 2 and sessions.count(store) == 0
    old, _ = sessions.create(store, alice(store), 1000.0, LIFE, MAX_LIFE)
    store.remove_account("alice@example.test")
    assert sessions.lookup(store, old, 1001.0, LIFE, MAX_LIFE) is None
    old, _ = sessions.create(store, store.add_account("alice@example.test", "pw"), 1000.0, LIFE, MAX_LIFE)
    store.remove_account("alice@example.test")
    store.add_account("bob@example.test", "pw")  # takes the next id: the re-made alice differs
    store.add_account("alice@example.test", "pw")
    assert sessions.lookup(store, old, 1001.0, LIFE, MAX_LIFE) is None


def test_revoke_and_per_account_limit(store):
    """revoke deletes exactly that session; sign-ins beyond keep end the least recently used."""
    secrets_ = [sessions.create(store, alice(store), 1000.0 + n, LIFE, MAX_LIFE, keep=3)[0] for n in range(4)]
    assert sessions.count(store) == 3 and sessions.lookup(store, secrets_[0], 1010.0, LIFE, MAX_LIFE) is None
    assert sessions.revoke(store, secrets_[3]) and not sessions.revoke(store, secrets_[3])
    assert sessions.lookup(store, secrets_[3], 1010.0, LIFE, MAX_LIFE) is None
    assert sessions.lookup(store, secrets_[2], 1010.0, LIFE, MAX_LIFE) is not None


class _SyncStore:
    """An AsyncStore stand-in running every call at once, counting writes."""

    def __init__(self, store):
        self.store, self.pool, self.writes = store, None, []

    def run_write(self, fn, *args):
        self.writes.append(fn.__name__)
        return defer.succeed(fn(*args))


def test_renewal_writes_at_most_once_per_interval(store, monkeypatch):
    """BrowserSessions serves lookups from memory for RECHECK seconds and writes the sliding
    expiry at most once per RENEW_INTERVAL, however many requests arrive; forget() (an admin
    change) drops the memory."""
    clock = task.Clock()
    clock.advance(1000)
    fake = _SyncStore(store)
    monkeypatch.setattr(browser.threads, "deferToThreadPool", lambda _r, _p, fn, *a: defer.succeed(fn(*a)))
    settings = types.SimpleNamespace(http=types.SimpleNamespace(session_lifetime=LIFE * 10,
                                                                session_max_lifetime=MAX_LIFE * 10))
    manager = browser.BrowserSessions(fake, settings, clock, clock)
    secret, _ = defer.ensureDeferred(manager.create(alice(store))).result
    for _ in range(300):  # 150 s of one request every half second
        clock.advance(0.5)
        assert defer.ensureDeferred(manager.lookup(secret)).result is not None
    assert fake.writes.count("touch") == 2
    store.directory.set_password("alice@example.test", "other")
    manager.forget()
    assert defer.ensureDeferred(manager.lookup(secret)).result is None


def test_tickets_are_single_use_and_expire():
    """A ticket redeems once; an unknown one never; an unused one dies after 60 s;
    the table stays bounded."""
    clock = task.Clock()
    tickets = browser.Tickets(clock, limit=5)
    ticket, expires = tickets.issue("alice")
    assert expires == 60.0 and tickets.redeem(ticket) == "alice" and tickets.redeem(ticket) is None
    late, _ = tickets.issue("alice")
    clock.advance(60.0)
    assert tickets.redeem(late) is None and tickets.redeem("nope") is None
    for _ in range(20):
        tickets.issue("bob")
    assert len(tickets._tickets) <= 5


def test_tickets_per_account_cap():
    """An account holding TICKETS_PER_ACCOUNT unused tickets loses its oldest to a new one,
    so it cannot fill the table; a full table of live tickets refuses (None), never evicts others."""
    clock = task.Clock()
    tickets = browser.Tickets(clock, limit=20, per_account=4)
    first = tickets.issue("mallory")[0]
    for _ in range(10):
        tickets.issue("mallory")
    assert tickets.redeem(first) is None and len(tickets._tickets) == 4
    others = [tickets.issue(name)[0] for name in "abcdefghijklmnop"]
    assert tickets.issue("late") is None
    assert all(tickets.redeem(ticket) is not None for ticket in others[:8])
    clock.advance(61)  # the rest expire unused and make room
    assert tickets.issue("late") is not None
    for _ in range(20):
        tickets.issue("x")
    assert tickets._held == {"late": 1, "x": 4} and len(tickets._tickets) == 5


def test_csrf_token_is_bound_to_the_session():
    """The CSRF token differs per session, is not the secret, and compares exactly."""
    one, two = "a" * 43, "b" * 43
    assert browser.csrf_token(one) != browser.csrf_token(two) and one not in browser.csrf_token(one)
    assert browser.csrf_ok(one, browser.csrf_token(one).encode())
    assert not browser.csrf_ok(one, browser.csrf_token(two).encode()) and not browser.csrf_ok(one, None)


def _request(path=b"/jmap/api", origin=None, method=b"GET", ip="127.0.0.1"):
    request = DummyRequest([])
    request.path, request.method = path, method
    request.client = types.SimpleNamespace(host=ip, port=1)
    request.getClientAddress = lambda: request.client
    request.isSecure = lambda: False
    if origin:
        request.requestHeaders.setRawHeaders(b"origin", [origin])
    return request


def test_cors_headers_only_for_configured_origins():
    """An allowed origin is echoed with Vary: Origin and a preflight gets methods, headers
    and max-age; another origin, none, or any /auth/ path gets no CORS header; never credentials."""
    allowed = ("https://app.example.org",)
    request = _request(origin=b"https://app.example.org", method=b"OPTIONS")
    headers = browser.preflight_headers(request, allowed)
    assert request.responseHeaders.getRawHeaders(b"access-control-allow-origin") == [b"https://app.example.org"]
    assert headers[b"access-control-max-age"] and b"Authorization" in headers[b"access-control-allow-headers"]
    for request in (_request(origin=b"https://evil.example"), _request(), _request(b"/auth/login",
                                                                                   b"https://app.example.org")):
        headers = browser.preflight_headers(request, allowed)
        assert not any(name.startswith(b"access-control") for name in headers)
        assert not request.responseHeaders.hasHeader(b"access-control-allow-origin")
    assert not request.responseHeaders.hasHeader(b"access-control-allow-credentials")


def test_login_over_plain_http_from_elsewhere_is_refused():
    """Passwords, sessions and tickets are accepted only over TLS or from loopback
    (auth.plaintext_allowed): plain http from another address is 403 before any check."""
    from mailserverd.jmap.web import HTTPError
    with pytest.raises(HTTPError) as caught:
        browser._secure_or_loopback(_request(b"/auth/login", method=b"POST", ip="192.0.2.7"), "passwords are")
    assert caught.value.status == 403
    browser._secure_or_loopback(_request(b"/auth/login", method=b"POST", ip="::1"), "passwords are")


def test_origin_normalisation():
    """Default ports drop out, case folds; "null", paths and other schemes are no origin."""
    assert browser.normalize_origin("HTTPS://Mail.Example.org:443") == "https://mail.example.org"
    assert browser.normalize_origin("http://a.example:8080") == "http://a.example:8080"
    for bad in ("null", "ftp://a.example", "https://a.example/x", ""):
        assert browser.normalize_origin(bad) is None
