"""AsyncStore's writer thread: group commit and ordinary writes in one batch."""

from __future__ import annotations

from twisted.internet import defer

from mailserverd.store import Store
from mailserverd.store.api import DeliveryTarget
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
