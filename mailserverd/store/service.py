"""AsyncStore: the store as protocol code sees it, off the reactor thread.

Reads run on a bounded thread pool. Writes go to ONE writer thread that
drains its queue and commits every waiting delivery together: one synced
RocksDB batch and one transaction per shard for the lot (group commit), so
64 concurrent senders cost far fewer than 64 fsyncs. Flag changes,
expunges, copies and moves (IMAP STORE/EXPUNGE/COPY/MOVE, the \\Seen of a
FETCH, POP3 UPDATE) are grouped the same way (store/writes.py run_group).
Each Deferred fires only after its data is durable.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections import defaultdict
from typing import Callable

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import threadpool
from twisted.python.failure import Failure

from . import Store
from .api import Account, DeliveryTarget
from .mail import Delivery
from .writes import GroupWrite

log = Logger()

MAX_GROUP = 256  # deliveries per group commit
# Directory answers (local domain? which accounts?) are cached this long; admin
# commands in this process clear the cache at once, other nodes see changes
# within the TTL.
DIRECTORY_TTL = 10.0
_STOP = object()


@dataclasses.dataclass
class _Deliver:
    deferred: defer.Deferred
    delivery: Delivery


@dataclasses.dataclass
class _Grouped:
    deferred: defer.Deferred
    write: GroupWrite


@dataclasses.dataclass
class _Write:
    deferred: defer.Deferred
    fn: Callable
    args: tuple
    kwargs: dict


class AsyncStore(service.Service):
    name = "store"

    def __init__(self, store: Store, reactor=None, read_threads: int = 8):
        if reactor is None:
            from twisted.internet import reactor
        self.store = store
        self.reactor = reactor
        self.pool = threadpool.ThreadPool(minthreads=1, maxthreads=read_threads, name="store-read")
        self._writes: queue.Queue = queue.Queue()
        self._writer: threading.Thread | None = None
        self._subscribers: dict[int, set[Callable]] = defaultdict(set)
        self._directory_cache: dict[tuple, tuple[float, object]] = {}
        self._copy_observers: list[Callable] = []

    # Service

    def startService(self):
        super().startService()
        self.pool.start()
        self._writer = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._writer.start()

    def stopService(self):
        """Finish every queued write, then stop the threads (graceful shutdown)."""
        super().stopService()
        self._writes.put(_STOP)
        writer = self._writer
        return self._read(writer.join).addBoth(self._stopped)

    def _stopped(self, result):
        self.pool.stop()
        self.store.close()
        return result

    # Plumbing

    def _read(self, fn, *args, **kwargs) -> defer.Deferred:
        from twisted.internet.threads import deferToThreadPool
        return deferToThreadPool(self.reactor, self.pool, fn, *args, **kwargs)

    def _grouped(self, op: str, account: Account, *args) -> defer.Deferred:
        d = defer.Deferred()
        self._writes.put(_Grouped(d, GroupWrite(op, account, args)))
        return d

    def _write(self, fn, *args, **kwargs) -> defer.Deferred:
        d = defer.Deferred()
        self._writes.put(_Write(d, fn, args, kwargs))
        return d

    def _write_loop(self) -> None:
        while True:
            first = self._writes.get()
            if first is _STOP:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_GROUP:
                try:
                    item = self._writes.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            deliveries = [(item.deferred, item.delivery) for item in batch if isinstance(item, _Deliver)]
            if deliveries:
                self._commit_deliveries(deliveries)
            # The other writes in queue order; consecutive grouped ones share a commit.
            run: list[_Grouped] = []
            for item in batch:
                if isinstance(item, _Grouped):
                    run.append(item)
                    continue
                if run:
                    self._commit_group(run)
                    run = []
                if isinstance(item, _Write):
                    self._run_write(item)
            if run:
                self._commit_group(run)
            if stop:
                return

    def _commit_group(self, run: list["_Grouped"]) -> None:
        writes = [item.write for item in run]
        try:
            self.store.mail.run_group(writes)
        except Exception as exc:  # not expected: run_group reports per write
            log.failure("group of writes failed")
            for write in writes:
                if write.error is None and write.result is None:
                    write.error = exc
        self.reactor.callFromThread(self._fire_group, run)

    def _fire_group(self, run: list["_Grouped"]) -> None:
        accounts = set()
        for item in run:
            if item.write.error is not None:
                item.deferred.errback(Failure(item.write.error))
            else:
                item.deferred.callback(item.write.result)
                accounts.add(item.write.account.id)
        for account_id in accounts:
            self._notify(account_id)

    def _run_write(self, item: "_Write") -> None:
        try:
            result = item.fn(*item.args, **item.kwargs)
        except Exception:
            self.reactor.callFromThread(item.deferred.errback, Failure())
        else:
            self.reactor.callFromThread(self._fire_write, item.deferred, result, item.args)

    def _commit_deliveries(self, deliveries) -> None:
        try:
            self.store.mail.deliver_many([delivery for _d, delivery in deliveries])
        except Exception as exc:  # e.g. the blob write failed: nothing was committed
            log.failure("group commit failed")
            for d, delivery in deliveries:
                delivery.error = delivery.error or exc
        accounts = set()
        for d, delivery in deliveries:
            if delivery.error is None:
                accounts.update(target.account.id for target in delivery.targets)
        self.reactor.callFromThread(self._fire_deliveries, deliveries, accounts)

    def _fire_deliveries(self, deliveries, accounts) -> None:
        for d, delivery in deliveries:
            if delivery.error is not None:
                d.errback(Failure(delivery.error))
            else:
                d.callback(delivery.result)
        for account_id in accounts:
            self._notify(account_id)

    def _fire_write(self, d, result, args) -> None:
        d.callback(result)
        account = next((arg for arg in args if isinstance(arg, Account)), None)
        if account is not None:
            self._notify(account.id)

    # Push: IMAP IDLE and JMAP sessions hear about changes after the commit

    def subscribe(self, account_id: int, callback: Callable) -> None:
        self._subscribers[account_id].add(callback)

    def unsubscribe(self, account_id: int, callback: Callable) -> None:
        self._subscribers[account_id].discard(callback)
        if not self._subscribers[account_id]:
            del self._subscribers[account_id]

    def _notify(self, account_id: int) -> None:
        for callback in list(self._subscribers.get(account_id, ())):
            try:
                callback(account_id)
            except Exception:
                log.failure("change subscriber failed")

    # Committed COPY/MOVE, for services that follow them (the spam filter learns
    # from moves into and out of Junk, spam/learn.py) without protocol code knowing.

    def observe_copies(self, callback: Callable) -> None:
        """callback(account, source_mailbox_id, dest_name, CopyResult, moved) runs on the
        reactor thread after each COPY (moved False) or MOVE (True) is durable."""
        self._copy_observers.append(callback)

    def _copied(self, result, account: Account, mailbox_id: int, dest: str, moved: bool):
        for callback in list(self._copy_observers):
            try:
                callback(account, mailbox_id, dest, result, moved)
            except Exception:
                log.failure("copy observer failed")
        return result

    # Directory (reads)

    def _cached_directory_read(self, fn, key: str) -> defer.Deferred:
        cache_key = (fn.__name__, key.lower())
        hit = self._directory_cache.get(cache_key)
        now = self.reactor.seconds()
        if hit and hit[0] > now:
            return defer.succeed(hit[1])

        def remember(result):
            if len(self._directory_cache) > 50_000:
                self._directory_cache.clear()
            self._directory_cache[cache_key] = (now + DIRECTORY_TTL, result)
            return result
        return self._read(fn, key).addCallback(remember)

    def forget_directory_cache(self) -> None:
        self._directory_cache.clear()

    def is_local_domain(self, domain: str) -> defer.Deferred:
        return self._cached_directory_read(self.store.directory.is_local_domain, domain)

    def resolve_recipient(self, address: str) -> defer.Deferred:
        return self._cached_directory_read(self.store.directory.resolve_recipient, address)

    def resolve_targets(self, address: str) -> defer.Deferred:
        """Deferred[(accounts, remote addresses)]: alias forwards to remote targets too."""
        return self._cached_directory_read(self.store.directory.resolve_targets, address)

    def sender_addresses(self, account: Account) -> defer.Deferred:
        return self._read(self.store.directory.sender_addresses, account)

    def verify_password(self, address: str, password: str) -> defer.Deferred:
        return self._read(self.store.directory.verify_password, address, password)

    # Mail

    def deliver(self, body: bytes, targets: list[DeliveryTarget], received_at: float | None = None,
                skip_duplicates: bool = False) -> defer.Deferred:
        d = defer.Deferred()
        self._writes.put(_Deliver(d, Delivery(body, list(targets), received_at, skip_duplicates)))
        return d

    def append(self, account: Account, mailbox_name: str, body: bytes, flags=(),
               received_at: float | None = None) -> defer.Deferred:
        target = DeliveryTarget(account=account, mailbox=mailbox_name, flags=frozenset(flags))
        return self.deliver(body, [target], received_at).addCallback(lambda refs: refs[0])

    def list_mailboxes(self, account: Account) -> defer.Deferred:
        return self._read(self.store.mail.list_mailboxes, account)

    def get_mailbox(self, account: Account, name: str) -> defer.Deferred:
        return self._read(self.store.mail.get_mailbox, account, name)

    def list_messages(self, account: Account, mailbox_id: int) -> defer.Deferred:
        return self._read(self.store.mail.list_messages, account, mailbox_id)

    def read_message(self, account: Account, message_id: int) -> defer.Deferred:
        return self._read(self.store.mail.read_message, account, message_id)

    def store_flags(self, account: Account, mailbox_id: int, uids, flags, mode: str) -> defer.Deferred:
        return self._grouped("store_flags", account, mailbox_id, list(uids), list(flags), mode)

    def expunge(self, account: Account, mailbox_id: int, uids) -> defer.Deferred:
        return self._grouped("expunge", account, mailbox_id, list(uids))

    def read_messages(self, account: Account, message_ids) -> defer.Deferred:
        return self._read(self.store.mail.read_messages, account, list(message_ids))

    def mailbox_changes(self, account: Account, mailbox_id: int, since: int) -> defer.Deferred:
        return self._read(self.store.mail.mailbox_changes, account, mailbox_id, since)

    def message_summaries(self, account: Account, message_ids) -> defer.Deferred:
        return self._read(self.store.mail.message_summaries, account, list(message_ids))

    def message_structures(self, account: Account, message_ids) -> defer.Deferred:
        return self._read(self.store.mail.message_structures, account, list(message_ids))

    def highest_modseq(self, account: Account) -> defer.Deferred:
        return self._read(self.store.mail.highest_modseq, account)

    def usage(self, account: Account) -> defer.Deferred:
        return self._read(self.store.mail.usage, account)

    def create_mailbox(self, account: Account, name: str, special_use=None) -> defer.Deferred:
        return self._write(self.store.mail.create_mailbox, account, name, special_use)

    def delete_mailbox(self, account: Account, name: str) -> defer.Deferred:
        return self._write(self.store.mail.delete_mailbox, account, name)

    def rename_mailbox(self, account: Account, old: str, new: str) -> defer.Deferred:
        return self._write(self.store.mail.rename_mailbox, account, old, new)

    def set_subscribed(self, account: Account, name: str, subscribed: bool) -> defer.Deferred:
        return self._write(self.store.mail.set_subscribed, account, name, subscribed)

    def list_subscriptions(self, account: Account) -> defer.Deferred:
        return self._read(self.store.mail.list_subscriptions, account)

    def copy_messages(self, account: Account, mailbox_id: int, uids, dest: str) -> defer.Deferred:
        return (self._grouped("copy_messages", account, mailbox_id, list(uids), dest)
                .addCallback(self._copied, account, mailbox_id, dest, False))

    def move_messages(self, account: Account, mailbox_id: int, uids, dest: str) -> defer.Deferred:
        return (self._grouped("move_messages", account, mailbox_id, list(uids), dest)
                .addCallback(self._copied, account, mailbox_id, dest, True))

    def run_write(self, fn: Callable, *args, **kwargs) -> defer.Deferred:
        """Run an arbitrary store write (admin commands) on the writer thread."""
        return self._write(fn, *args, **kwargs)

    def run_read(self, fn: Callable, *args) -> defer.Deferred:
        """Run fn(mail store, *args), a read-only query (store/jmapreads.py), on the read pool."""
        return self._read(fn, self.store.mail, *args)
