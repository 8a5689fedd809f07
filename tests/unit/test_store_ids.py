"""Message and mailbox ids are never handed out twice (JMAP ids, RFC 8620 1.2),
on PostgreSQL (sequences) and on SQLite (AUTOINCREMENT, shard migration step 5)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, insert, inspect, select, text

from mailserverd.store import Store, schema
from mailserverd.store.api import DeliveryTarget
from mailserverd.store.mail import Delivery

MESSAGE = b"From: a@remote.test\r\nSubject: one\r\n\r\nbody one\r\n"
OTHER = b"From: a@remote.test\r\nSubject: two\r\n\r\nbody two\r\n"
THIRD = b"From: a@remote.test\r\nSubject: three\r\n\r\nbody three\r\n"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        directory = f"sqlite:///{tmp_path}/directory.sqlite3"
        shards = [f"sqlite:///{tmp_path}/shard-0.sqlite3"]
    else:
        new_database = request.getfixturevalue("pg_database")
        directory, shards = new_database(), [new_database()]
    store = Store(directory, shards, str(tmp_path / "blobs"))
    store.directory.add_domain("example.test")
    yield store
    store.close()


def deliver(store, body, account):
    item = Delivery(body, [DeliveryTarget(account)])
    store.mail.deliver_many([item])
    if item.error:
        raise item.error
    return item.result[0]


def test_expunging_the_newest_message_does_not_free_its_id(store):
    """The next delivery after the newest message is expunged gets a new message id."""
    alice = store.add_account("alice@example.test", "pw")
    deliver(store, MESSAGE, alice)
    newest = deliver(store, OTHER, alice)
    store.mail.expunge(alice, newest.mailbox_id, [newest.uid])
    assert deliver(store, THIRD, alice).message_id > newest.message_id


def test_deleting_the_newest_mailbox_does_not_free_its_id(store):
    """A mailbox created after the newest one was deleted gets a new mailbox id."""
    alice = store.add_account("alice@example.test", "pw")
    gone = store.mail.create_mailbox(alice, "Gone")
    store.mail.delete_mailbox(alice, "Gone")
    assert store.mail.create_mailbox(alice, "Later").id > gone.id


def test_sqlite_shard_from_before_the_step_keeps_rows_indexes_and_constraints(tmp_path):
    """An existing SQLite shard is rebuilt with AUTOINCREMENT: its rows, indexes and the
    unique mailbox name survive, and from then on a freed id is not reused. (An id freed
    before the upgrade may be handed out once more: the old table kept no record of it.)"""
    engine = create_engine(f"sqlite:///{tmp_path}/shard.sqlite3")
    step = len(schema.MIGRATIONS["shard"]) - 1  # index of _sqlite_ids_never_reused(...)
    with engine.begin() as conn:
        schema.version_meta.create_all(conn)
        conn.execute(insert(schema.schema_version).values(version=step))
        for run in schema.MIGRATIONS["shard"][:step]:
            run(conn)
        for name, uidnext in (("INBOX", 1), ("Old", 1)):
            conn.execute(insert(schema.mailboxes).values(account_id=1, name=name, uidvalidity=1,
                                                         uidnext=uidnext, subscribed=True, modseq=1))
        for n in (1, 2, 3):
            conn.execute(insert(schema.messages).values(account_id=1, blob_id=f"{n:064x}", prepend=b"",
                                                        size=n, received_at=float(n)))
        conn.execute(text("DELETE FROM messages WHERE id = 3"))
    with engine.begin() as conn:
        assert schema.migrate(conn, "shard") == len(schema.MIGRATIONS["shard"])
        ddl = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'messages'")).scalar()
        assert "AUTOINCREMENT" in ddl.upper()
        assert [row.size for row in conn.execute(select(schema.messages).order_by(schema.messages.c.id))] == [1, 2]
        indexes = {index["name"] for index in inspect(conn).get_indexes("messages")}
        assert {"ix_messages_account_blob", "ix_messages_blob"} <= indexes
        assert {"ix_messages_thread", "ix_messages_subject_time"} <= indexes, "raw-SQL indexes of step 4"
        row = dict(account_id=1, blob_id="f" * 64, prepend=b"", size=9, received_at=9.0)
        freed = conn.execute(insert(schema.messages).values(**row)).inserted_primary_key[0]
        conn.execute(text("DELETE FROM messages WHERE id = :id"), {"id": freed})
        assert conn.execute(insert(schema.messages).values(**row)).inserted_primary_key[0] > freed
        with pytest.raises(Exception):
            conn.execute(insert(schema.mailboxes).values(account_id=1, name="Old", uidvalidity=1,
                                                         uidnext=1, subscribed=True, modseq=1))
    engine.dispose()
