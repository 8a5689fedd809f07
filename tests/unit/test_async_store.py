"""AsyncStore's writer thread: group commit, ordinary writes in one batch, and
the mailbox/copy writes (results, errors, subscriber notification, order)."""

from __future__ import annotations

from twisted.internet import defer

from mailserverd.store import Store
from mailserverd.store.api import DeliveryTarget, MailboxExists
from mailserverd.store.mail import Delivery
from mailserverd.store import service

MESSAGE = b"From: a@remote.test\r\nSubject: hi\r\n\r\nbody\r\n"


class InlineReactor:
    """Runs callFromThread at once, so the writer loop can run in the test thread."""

    def callFromThread(self, fn, *args, **kwargs):
        fn(*args, **kwargs)

    def seconds(self):
        return 0.0


def make_store(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/d.sqlite3", [f"sqlite:///{tmp_path}/s0.sqlite3"],
                  str(tmp_path / "blobs"))
    store.directory.add_domain("example.test")
    return store, store.add_account("alice@example.test", "pw")


def test_mixed_batch_of_deliveries_and_writes(tmp_path):
    """Regression: a delivery and a flag write queued together both complete
    (the writer thread once crashed unpacking a mixed batch, stalling all writes)."""
    store, alice = make_store(tmp_path)
    async_store = service.AsyncStore(store, InlineReactor())
    inbox = store.mail.get_mailbox(alice, "INBOX")
    delivered = async_store.deliver(MESSAGE, [DeliveryTarget(alice)])
    flagged = async_store.store_flags(alice, inbox.id, [1], ["\\Seen"], "add")
    async_store._writes.put(service._STOP)
    async_store._write_loop()
    results = []
    defer.gatherResults([delivered, flagged]).addBoth(results.append)
    refs, changed = results[0]
    assert refs[0].uid == 1 and changed[0].flags == {"\\Seen"}
    store.close()


def test_many_waiting_deliveries_share_one_commit(tmp_path):
    """Group commit: deliveries queued together are committed in one deliver_many call."""
    store, alice = make_store(tmp_path)
    async_store = service.AsyncStore(store, InlineReactor())
    calls = []
    original = store.mail.deliver_many
    store.mail.deliver_many = lambda batch: calls.append(len(batch)) or original(batch)
    waits = [async_store.deliver(MESSAGE + b"%d\r\n" % n, [DeliveryTarget(alice)]) for n in range(20)]
    async_store._writes.put(service._STOP)
    async_store._write_loop()
    assert calls == [20]
    assert all(d.called for d in waits)
    assert store.mail.get_mailbox(alice, "INBOX").exists == 20
    store.close()


def run_writes(async_store):
    """Drain the writer queue in the test thread."""
    async_store._writes.put(service._STOP)
    async_store._write_loop()


def test_copy_fires_with_copyuid_and_notifies_subscribers(tmp_path):
    """copy_messages runs on the writer thread, fires with the CopyResult and
    then tells the account's subscribers (IMAP IDLE, JMAP push)."""
    store, alice = make_store(tmp_path)
    async_store = service.AsyncStore(store, InlineReactor())
    store.mail.deliver_many([Delivery(MESSAGE, [DeliveryTarget(alice)])])
    inbox = store.mail.get_mailbox(alice, "INBOX")
    heard, results = [], []
    async_store.subscribe(alice.id, heard.append)
    async_store.copy_messages(alice, inbox.id, [1], "Archive").addCallback(results.append)
    run_writes(async_store)
    assert results[0].pairs == [(1, 1)] and heard == [alice.id]
    store.close()


def test_refused_write_errbacks_without_notifying(tmp_path):
    """A write the store refuses (CREATE of an existing name) fails its Deferred
    with the store's error, and subscribers hear nothing."""
    store, alice = make_store(tmp_path)
    async_store = service.AsyncStore(store, InlineReactor())
    heard, failures = [], []
    async_store.subscribe(alice.id, heard.append)
    async_store.create_mailbox(alice, "Sent").addErrback(failures.append)
    run_writes(async_store)
    assert failures[0].check(MailboxExists) and heard == []
    store.close()


def test_mailbox_writes_keep_their_queue_order(tmp_path):
    """CREATE, RENAME, a MOVE into the renamed mailbox and DELETE queued together
    run in order on the one writer thread."""
    store, alice = make_store(tmp_path)
    async_store = service.AsyncStore(store, InlineReactor())
    store.mail.deliver_many([Delivery(MESSAGE, [DeliveryTarget(alice)])])
    inbox = store.mail.get_mailbox(alice, "INBOX")
    waits = [async_store.create_mailbox(alice, "A"),
             async_store.rename_mailbox(alice, "A", "B"),
             async_store.move_messages(alice, inbox.id, [1], "B"),
             async_store.delete_mailbox(alice, "B")]
    run_writes(async_store)
    results = []
    defer.gatherResults(waits).addBoth(results.append)
    assert results[0][2].pairs == [(1, 1)]
    assert {box.name for box in store.mail.list_mailboxes(alice)}.isdisjoint({"A", "B"})
    assert store.mail.usage(alice) == 0
    store.close()


def test_subscriptions_and_usage_through_the_async_store(tmp_path):
    """set_subscribed runs on the writer thread and notifies; list_subscriptions
    and usage read back through the pool (here: called in the test thread)."""
    store, alice = make_store(tmp_path)
    async_store = service.AsyncStore(store, InlineReactor())
    async_store._read = lambda fn, *args, **kwargs: defer.maybeDeferred(fn, *args, **kwargs)
    store.mail.deliver_many([Delivery(MESSAGE, [DeliveryTarget(alice)])])
    heard, results = [], []
    async_store.subscribe(alice.id, heard.append)
    async_store.set_subscribed(alice, "Later", True)
    run_writes(async_store)
    async_store.list_subscriptions(alice).addCallback(results.append)
    async_store.usage(alice).addCallback(results.append)
    assert "Later" in results[0] and results[1] == len(MESSAGE) and heard == [alice.id]
    store.close()
