"""Removing an account leaves nothing that could open a later account: its Bearer
tokens and browser sessions are deleted, and on SQLite a re-created account never
gets the removed account's id (directory migration step 10)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from mailserverd.store import Store, sessions, tokens


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/d.sqlite3", [f"sqlite:///{tmp_path}/s0.sqlite3"], str(tmp_path / "b"))
    store.directory.add_domain("example.test")
    yield store
    store.close()


def test_a_recreated_account_gets_a_new_id(store):
    """Deleting the newest account must not hand its id to the next one (SQLite AUTOINCREMENT)."""
    first = store.add_account("zed@example.test", "pw-one-1")
    store.remove_account("zed@example.test")
    again = store.add_account("zed@example.test", "pw-two-2")
    assert again.id > first.id


def test_tokens_and_sessions_of_a_removed_account_are_deleted(store):
    """A token or sign-in session issued to a removed account opens nothing afterwards,
    not even an account re-created under the same address."""
    account = store.add_account("zed@example.test", "pw-one-1")
    token, _ = tokens.create(store, "zed@example.test")
    secret, _ = sessions.create(store, account, time.time(), 3600, 86400)
    store.remove_account("zed@example.test")
    with store.directory_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tokens.api_tokens)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(sessions.browser_sessions)).scalar() == 0
    store.add_account("zed@example.test", "pw-two-2")
    assert tokens.verify(store, token, time.time()) is None
    assert sessions.lookup(store, secret, time.time(), 3600, 86400) is None
