"""Group commit of flag changes, expunges, copies and moves (store/writes.py
run_group and AsyncStore's writer): one transaction per shard for every
waiting write, per-write results and refusals, the same change log as one
write at a time; on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import event, select

from mailserverd.store import Store, schema, service
from mailserverd.store.api import DeliveryTarget, NoSuchMailbox
from mailserverd.store.mail import Delivery
from mailserverd.store.writes import GroupWrite


class InlineReactor:
    def callFromThread(self, fn, *args, **kwargs):
        fn(*args, **kwargs)

    def seconds(self):
        return 0.0


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        directory = f"sqlite:///{tmp_path}/directory.sqlite3"
        shards = [f"sqlite:///{tmp_path}/shard-{n}.sqlite3" for n in range(2)]
    else:
        new_database = request.getfixturevalue("pg_database")
        directory = new_database()
        shards = [new_database() for _ in range(2)]
    store = Store(directory, shards, str(tmp_path / "blobs"))
    store.directory.add_domain("example.test")
    yield store
    store.close()


def fill(store, account, count):
    items = [Delivery(b"Subject: m%d\r\n\r\nbody %d\r\n" % (n, n), [DeliveryTarget(account)])
             for n in range(count)]
    store.mail.deliver_many(items)
    return store.mail.get_mailbox(account, "INBOX")


def count_commits(engine):
    commits = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    return commits


def test_waiting_writes_of_many_sessions_share_one_commit_per_shard(store):
    """STOREs, an EXPUNGE, a COPY and a MOVE queued together commit once per shard,
    and each caller gets its own result."""
    alice = store.add_account("alice@example.test", "pw")
    inbox = fill(store, alice, 10)
    commits = count_commits(store.shard_engines[alice.shard])
    async_store = service.AsyncStore(store, InlineReactor())
    flagged = [async_store.store_flags(alice, inbox.id, [uid], ["\\Flagged"], "add") for uid in (1, 2, 3)]
    deleted = async_store.store_flags(alice, inbox.id, [4, 5], ["\\Deleted"], "add")
    expunged = async_store.expunge(alice, inbox.id, [4, 5])
    copied = async_store.copy_messages(alice, inbox.id, [6], "Archive")
    moved = async_store.move_messages(alice, inbox.id, [7], "Trash")
    async_store._writes.put(service._STOP)
    async_store._write_loop()
    assert len(commits) == 1
    assert [d.result[0].uid for d in flagged] == [1, 2, 3]
    assert {ref.uid for ref in deleted.result} == {4, 5} and expunged.result == [4, 5]
    assert copied.result.pairs == [(6, 1)] and moved.result.pairs == [(7, 1)]
    uids = [ref.uid for ref in store.mail.list_messages(alice, inbox.id)]
    assert uids == [1, 2, 3, 6, 8, 9, 10]


def test_a_refused_write_fails_alone_and_the_group_commits(store):
    """COPY to a missing mailbox gets NoSuchMailbox; the STOREs around it are durable."""
    alice = store.add_account("alice@example.test", "pw")
    inbox = fill(store, alice, 3)
    writes = [GroupWrite("store_flags", alice, (inbox.id, [1], ["\\Seen"], "add")),
              GroupWrite("copy_messages", alice, (inbox.id, [1], "Nowhere")),
              GroupWrite("store_flags", alice, (inbox.id, [2], ["\\Seen"], "add"))]
    store.mail.run_group(writes)
    assert isinstance(writes[1].error, NoSuchMailbox)
    assert writes[0].error is None and writes[2].error is None
    assert [ref.flags for ref in store.mail.list_messages(alice, inbox.id)] == \
        [{"\\Seen"}, {"\\Seen"}, frozenset()]


def test_an_unexpected_failure_rolls_back_and_retries_one_by_one(store, monkeypatch):
    """A database error inside the group rolls the shard's transaction back; each
    write is then run alone, so only the broken one fails."""
    alice = store.add_account("alice@example.test", "pw")
    inbox = fill(store, alice, 3)
    original = store.mail._store_flags_in

    def broken(conn, account, mailbox_id, uids, flags, mode):
        if list(uids) == [2]:
            raise RuntimeError("disk on fire")
        return original(conn, account, mailbox_id, uids, flags, mode)
    monkeypatch.setattr(store.mail, "_store_flags_in", broken)
    writes = [GroupWrite("store_flags", alice, (inbox.id, [uid], ["\\Flagged"], "add")) for uid in (1, 2, 3)]
    store.mail.run_group(writes)
    assert [type(w.error) for w in writes] == [type(None), RuntimeError, type(None)]
    assert [ref.flags for ref in store.mail.list_messages(alice, inbox.id)] == \
        [{"\\Flagged"}, frozenset(), {"\\Flagged"}]


def test_grouped_expunge_logs_like_one_at_a_time(store):
    """Expunging both copies of one message in one mailbox: the first removal is
    "updated", the last "destroyed"; modseqs ascend by UID; quota goes back to 0."""
    alice = store.add_account("alice@example.test", "pw")
    inbox = fill(store, alice, 1)
    store.mail.copy_messages(alice, inbox.id, [1], "INBOX")  # a second membership, uid 2
    before = store.mail.highest_modseq(alice)
    writes = [GroupWrite("expunge", alice, (inbox.id, [1, 2]))]
    store.mail.run_group(writes)
    assert writes[0].result == [1, 2]
    changes = store.mail.changes_since(alice, before)
    assert [(c.uid, c.op, c.modseq) for c in changes] == [(1, "updated", before + 1),
                                                          (2, "destroyed", before + 2)]
    assert store.mail.usage(alice) == 0
    assert store.mail.get_mailbox(alice, "INBOX").highestmodseq == before + 2
    with store.shard_engines[alice.shard].connect() as conn:
        assert conn.execute(select(schema.messages.c.id)).all() == []
        assert conn.execute(select(schema.blob_refs.c.blob_id)).all() == []


def test_store_flags_batch_gives_each_change_its_own_modseq(store):
    """One STORE over many messages: one modseq per changed message, unchanged ones skipped,
    the mailbox's HIGHESTMODSEQ is the last (RFC 7162 3.1)."""
    alice = store.add_account("alice@example.test", "pw")
    inbox = fill(store, alice, 5)
    store.mail.store_flags(alice, inbox.id, [2], ["\\Seen"], "add")
    before = store.mail.highest_modseq(alice)
    changed = store.mail.store_flags(alice, inbox.id, [1, 2, 3, 4, 5], ["\\Seen", "$Work"], "replace")
    assert [(ref.uid, ref.modseq) for ref in changed] == [(n, before + n) for n in range(1, 6)]
    assert all(ref.flags == {"\\Seen", "$Work"} for ref in changed)
    again = store.mail.store_flags(alice, inbox.id, [1, 2, 3], ["\\Seen"], "add")
    assert again == []
    assert store.mail.get_mailbox(alice, "INBOX").highestmodseq == before + 5
