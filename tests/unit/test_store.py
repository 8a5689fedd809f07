"""The store on SQLite files and on a real PostgreSQL server: directory,
delivery, flags, expunge, change log, blob dedup and reference counting."""

from __future__ import annotations

import pytest

from mailserverd.store import Store
from mailserverd.store.api import DEFAULT_MAILBOXES, DeliveryTarget, NoSuchMailbox, StoreError
from mailserverd.store.blobs import blob_id_of
from mailserverd.store.mail import Delivery

MESSAGE = (b"From: Carol <carol@remote.test>\r\nTo: alice@example.test\r\n"
           b"Subject: Hello there\r\nMessage-ID: <m1@remote.test>\r\n\r\nHi Alice.\r\n")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        directory = f"sqlite:///{tmp_path}/directory.sqlite3"
        shards = [f"sqlite:///{tmp_path}/shard-{n}.sqlite3" for n in range(3)]
    else:
        new_database = request.getfixturevalue("pg_database")
        directory = new_database()
        shards = [new_database() for _ in range(3)]
    store = Store(directory, shards, str(tmp_path / "blobs"))
    store.directory.add_domain("example.test")
    yield store
    store.close()


def deliver(store, body, *targets, **kwargs):
    item = Delivery(body, list(targets), **kwargs)
    store.mail.deliver_many([item])
    if item.error:
        raise item.error
    return item.result


def test_new_account_gets_special_use_mailboxes(store):
    """A new account has INBOX plus the RFC 6154 Drafts, Sent, Junk, Trash, Archive."""
    account = store.add_account("Alice@Example.TEST", "pw-1")
    assert account.address == "alice@example.test"
    boxes = {box.name: box for box in store.mail.list_mailboxes(account)}
    assert set(boxes) == set(DEFAULT_MAILBOXES)
    assert boxes["Sent"].special_use == "\\Sent"
    assert boxes["INBOX"].uidnext == 1 and boxes["INBOX"].uidvalidity > 0


def test_duplicate_user_and_unknown_domain_are_refused(store):
    """Adding an existing user or a user of a non-local domain is a clear error."""
    store.add_account("alice@example.test", "pw")
    with pytest.raises(StoreError, match="already exists"):
        store.add_account("ALICE@example.test", "pw")
    with pytest.raises(StoreError, match="not local"):
        store.add_account("bob@elsewhere.test", "pw")
    with pytest.raises(StoreError, match="invalid address"):
        store.add_account("no at sign", "pw")


def test_password_verification(store):
    """verify_password returns the account only for the right password."""
    store.add_account("alice@example.test", "right")
    assert store.directory.verify_password("alice@example.test", "right").address == "alice@example.test"
    assert store.directory.verify_password("alice@example.test", "wrong") is None
    assert store.directory.verify_password("nobody@example.test", "right") is None


def test_aliases_and_catch_all_resolve(store):
    """Aliases expand to their targets; @domain catches every unknown local part."""
    alice = store.add_account("alice@example.test", "pw")
    bob = store.add_account("bob@example.test", "pw")
    store.directory.add_alias("team@example.test", ["alice@example.test", "bob@example.test"])
    assert {a.id for a in store.directory.resolve_recipient("team@example.test")} == {alice.id, bob.id}
    assert store.directory.resolve_recipient("stranger@example.test") == []
    store.directory.add_alias("@example.test", ["alice@example.test"])
    assert [a.id for a in store.directory.resolve_recipient("stranger@example.test")] == [alice.id]
    assert store.directory.sender_addresses(alice) == {"alice@example.test"}
    store.directory.add_alias("postmaster@example.test", ["alice@example.test"])
    assert "postmaster@example.test" in store.directory.sender_addresses(alice)


def test_delivery_assigns_uids_modseqs_and_header_cache(store):
    """Delivered copies get increasing UIDs and modseqs and a readable body."""
    alice = store.add_account("alice@example.test", "pw")
    first = deliver(store, MESSAGE, DeliveryTarget(alice, prepend=b"Return-Path: <c@r.test>\r\n"))[0]
    second = deliver(store, MESSAGE + b"more\r\n", DeliveryTarget(alice))[0]
    assert (first.uid, second.uid) == (1, 2)
    assert second.modseq > first.modseq
    assert store.mail.read_message(alice, first.message_id) == b"Return-Path: <c@r.test>\r\n" + MESSAGE
    inbox = store.mail.get_mailbox(alice, "inbox")
    assert (inbox.exists, inbox.unseen, inbox.uidnext) == (2, 2, 3)


def test_identical_bodies_are_stored_once_and_freed_after_last_delete(store):
    """Dedup: one blob for many copies; expunging the last copy frees it."""
    alice = store.add_account("alice@example.test", "pw")
    bob = store.add_account("bob@example.test", "pw")
    refs = deliver(store, MESSAGE, DeliveryTarget(alice), DeliveryTarget(bob))
    blob = blob_id_of(MESSAGE)
    assert store.blobs.exists(blob)
    inbox_a = store.mail.get_mailbox(alice, "INBOX")
    assert store.mail.expunge(alice, inbox_a.id, [refs[0].uid]) == [refs[0].uid]
    assert store.blobs.exists(blob), "bob still references the blob"
    inbox_b = store.mail.get_mailbox(bob, "INBOX")
    store.mail.expunge(bob, inbox_b.id, [refs[1].uid])
    assert not store.blobs.exists(blob)


def test_flags_and_change_log(store):
    """STORE changes flags, bumps modseq, and the change log records every step."""
    alice = store.add_account("alice@example.test", "pw")
    ref = deliver(store, MESSAGE, DeliveryTarget(alice))[0]
    before = store.mail.highest_modseq(alice)
    changed = store.mail.store_flags(alice, ref.mailbox_id, [ref.uid], ["\\Seen", "$Work"], "add")
    assert changed[0].flags == {"\\Seen", "$Work"}
    assert store.mail.get_mailbox(alice, "INBOX").unseen == 0
    assert store.mail.store_flags(alice, ref.mailbox_id, [ref.uid], ["\\Seen"], "add") == []
    store.mail.store_flags(alice, ref.mailbox_id, [ref.uid], ["\\Seen"], "remove")
    log = store.mail.changes_since(alice, before)
    assert [row.op for row in log] == ["updated", "updated"]
    store.mail.expunge(alice, ref.mailbox_id, [ref.uid])
    assert store.mail.changes_since(alice, before)[-1].op == "destroyed"


def test_accounts_cannot_reach_each_others_mail(store):
    """Account isolation: another account's message and mailbox ids are invisible."""
    alice = store.add_account("alice@example.test", "pw")
    bob = store.add_account("bob@example.test", "pw")
    ref = deliver(store, MESSAGE, DeliveryTarget(alice))[0]
    with pytest.raises(StoreError):
        store.mail.read_message(bob, ref.message_id)
    assert store.mail.list_messages(bob, ref.mailbox_id) == []
    assert store.mail.expunge(bob, ref.mailbox_id, [ref.uid]) == []
    assert store.mail.store_flags(bob, ref.mailbox_id, [ref.uid], ["\\Deleted"], "add") == []


def test_import_skips_duplicates(store):
    """skip_duplicates: a body already in the mailbox is not stored again."""
    alice = store.add_account("alice@example.test", "pw")
    deliver(store, MESSAGE, DeliveryTarget(alice), skip_duplicates=True)
    assert deliver(store, MESSAGE, DeliveryTarget(alice), skip_duplicates=True) == []
    assert store.mail.get_mailbox(alice, "INBOX").exists == 1


def test_unknown_mailbox_fails_only_that_delivery(store):
    """A delivery to a missing mailbox fails with NoSuchMailbox and stores nothing."""
    alice = store.add_account("alice@example.test", "pw")
    item = Delivery(MESSAGE, [DeliveryTarget(alice, mailbox="Nope")])
    store.mail.deliver_many([item])
    assert isinstance(item.error, NoSuchMailbox)
    assert store.mail.get_mailbox(alice, "INBOX").exists == 0


def test_quota_refuses_delivery_over_the_limit(store):
    """A delivery that would take the account past its quota is refused."""
    store.add_account("alice@example.test", "pw")
    store.directory.set_quota("alice@example.test", len(MESSAGE) + 10)
    alice = store.directory.get_account("alice@example.test")
    deliver(store, MESSAGE, DeliveryTarget(alice))
    item = Delivery(MESSAGE + b"x", [DeliveryTarget(alice)])
    store.mail.deliver_many([item])
    assert item.error is not None and "quota" in str(item.error)


def test_remove_account_purges_mail_and_blobs(store):
    """user remove deletes the account, its rows and blobs nobody else references."""
    alice = store.add_account("alice@example.test", "pw")
    deliver(store, MESSAGE, DeliveryTarget(alice))
    assert store.remove_account("alice@example.test") == 1
    assert store.directory.get_account("alice@example.test") is None
    assert not store.blobs.exists(blob_id_of(MESSAGE))


def test_mailbox_names_are_validated(store):
    """ensure_mailbox refuses ../x, a//b, control characters and huge names."""
    alice = store.add_account("alice@example.test", "pw")
    for bad in ("../x", "a//b", "a\x01b", "x" * 5000, ""):
        with pytest.raises(StoreError):
            store.mail.ensure_mailbox(alice, bad)
    assert store.mail.ensure_mailbox(alice, "Lists/python").name == "Lists/python"


def test_refusal_on_one_shard_stores_nothing_on_another(store):
    """A delivery to accounts on different shards is all-or-nothing when one is over quota."""
    accounts = [store.add_account(f"user{n}@example.test", "pw") for n in range(12)]
    first = accounts[0]
    other = next(a for a in accounts if a.shard != first.shard)
    store.directory.set_quota(other.address, 10)
    other = store.directory.get_account(other.address)
    item = Delivery(MESSAGE, [DeliveryTarget(first), DeliveryTarget(other)])
    store.mail.deliver_many([item])
    assert item.error is not None
    assert store.mail.get_mailbox(first, "INBOX").exists == 0


def test_migrations_are_recorded_and_idempotent(tmp_path):
    """Opening a store twice runs no step twice; a database newer than the code is refused."""
    from sqlalchemy import create_engine, text

    from mailserverd.store import schema

    engine = create_engine(f"sqlite:///{tmp_path}/m.sqlite3")
    with engine.begin() as conn:
        assert schema.migrate(conn, "shard") == len(schema.MIGRATIONS["shard"])
    with engine.begin() as conn:
        assert schema.migrate(conn, "shard") == len(schema.MIGRATIONS["shard"])
        assert conn.execute(text("SELECT count(*) FROM schema_version")).scalar() == 1
        conn.execute(text("UPDATE schema_version SET version = 99"))
    with engine.begin() as conn, pytest.raises(RuntimeError, match="newer than this mailserverd"):
        schema.migrate(conn, "shard")
