"""Bearer tokens (store/tokens.py): only a hash is stored, expiry, revocation,
and a token never opens a later account of the same address."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mailserverd.store import Store, StoreError, tokens


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/d.sqlite3", [f"sqlite:///{tmp_path}/s0.sqlite3"], str(tmp_path / "b"))
    store.directory.add_domain("example.test")
    store.add_account("alice@example.test", "pw")
    yield store
    store.close()


def test_token_verifies_and_only_its_hash_is_stored(store):
    """A created token verifies as its account; the table holds no secret; a changed
    secret or a malformed token is refused."""
    token_id, token = tokens.create(store, "Alice@Example.test", clock=lambda: 1000.0)
    assert tokens.verify(store, token, 1001.0).address == "alice@example.test"
    with store.directory_engine.connect() as conn:
        row = conn.execute(select(tokens.api_tokens)).one()
    secret = token.split("_", 2)[2]
    assert row.id == token_id and secret not in repr(tuple(row))
    assert tokens.verify(store, token[:-1] + ("A" if token[-1] != "A" else "B"), 1001.0) is None
    for bad in ("", "msd_x_y", token + "x", "Basic " + token):
        assert tokens.verify(store, bad, 1001.0) is None


def test_expiry_revoke_and_account_reuse(store):
    """An expired token, a revoked one, and one whose account was removed and made
    again under the same address are all refused (its tokens are deleted with it); revoking
    an unknown id is an error."""
    _id, expiring = tokens.create(store, "alice@example.test", lifetime=60, clock=lambda: 1000.0)
    assert tokens.verify(store, expiring, 1059.0) is not None
    assert tokens.verify(store, expiring, 1060.0) is None
    token_id, token = tokens.create(store, "alice@example.test")
    tokens.revoke(store, token_id)
    assert tokens.verify(store, token, 0) is None
    with pytest.raises(StoreError):
        tokens.revoke(store, token_id)
    _id, old = tokens.create(store, "alice@example.test")
    store.remove_account("alice@example.test")
    store.add_account("bob@example.test", "pw")  # takes the next id, so the re-made alice differs
    store.add_account("alice@example.test", "pw")
    assert tokens.verify(store, old, 0) is None
    assert tokens.list_tokens(store) == []
