"""The indexer: a child service of the daemon that drains the durable queue
(store/searchqueue.py) into one Whoosh index per shard (issue 12).

One thread owns every index writer (Whoosh admits one writer per index,
LockError otherwise), so indexing never runs on the reactor and never
contends with itself. It takes up to BATCH queue rows of a shard, reads the
messages, builds their documents, commits one Whoosh segment, then deletes
the rows it applied: a crash (kill -9) in between replays them at the next
start, and re-adding a message replaces its document.

At start-up each shard's index is opened in that thread; missing or corrupt,
it is recreated empty and every message of the shard is queued; present,
its document ids are compared with the store and the difference queued
("stale"). Until that check is done, queries on the shard are not narrowed
(query.py falls back to the exact scan), and afterwards a queued message is
always a candidate, so results never depend on the indexer's progress.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict

from sqlalchemy import select
from twisted.application import service
from twisted.logger import Logger

from ..store import schema, searchqueue
from ..store.api import Account, StoreError
from .index import MERGE_SEGMENTS, ShardIndex
from .text import document

log = Logger(namespace="mailserverd.search")

BATCH = 500  # queue rows per Whoosh commit
IDLE_POLL = 0.1  # seconds between queue polls when idle
STATS_EVERY = 1.0  # seconds between refreshes of the statistics /metrics shows


class SearchService(service.Service):
    name = "search"

    def __init__(self, store, data_dir: str, async_store=None, clock=time.time, use_process: bool = True):
        self.store = store  # the synchronous Store (mailserverd.store.Store)
        self.root = os.path.join(data_dir, "search")
        self.indexes = [ShardIndex(os.path.join(self.root, f"shard-{n}"), n)
                        for n in range(len(store.shard_engines))]
        self.async_store = async_store
        self.clock = clock
        self.indexed_total = 0
        self.last_commit = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = threading.Event()  # every shard checked (tests wait on it)
        self.cached_stats: dict = {}  # stats() as of cached_at, for /metrics (no I/O on the reactor)
        self.cached_at = 0.0
        # Whoosh doc_count reads each index's table of contents from disk: it is counted
        # again only after a change to that index (drain_once bumps its version), not on
        # every STATS_EVERY refresh of an idle indexer.
        self._versions: dict[int, int] = defaultdict(int)  # index number -> changes applied
        self._documents: dict[int, tuple[int, int]] = {}  # index number -> (version, doc_count)
        # Documents are built and written in a child process (Whoosh is pure Python:
        # a second core, and the daemon's GIL stays free for the reactor).
        self.child = IndexerProcess() if use_process else None

    # -- service --------------------------------------------------------------------

    def startService(self):
        super().startService()
        global _SERVICE
        _SERVICE = self
        if self.async_store is not None:
            self.async_store.search = self  # query.py finds the indexes through the store
        self._thread = threading.Thread(target=self._run, name="search-indexer", daemon=True)
        self._thread.start()

    def stopService(self):
        super().stopService()
        self._stop.set()
        self._wake.set()
        thread, child = self._thread, self.child
        if thread is not None:
            from twisted.internet import threads

            def finish():
                thread.join(30)
                if child is not None:
                    child.close()
            return threads.deferToThread(finish)

    def wake(self) -> None:
        self._wake.set()

    # -- the indexer thread ---------------------------------------------------------

    def _run(self) -> None:
        for index in self.indexes:
            try:
                self._check(index)
            except Exception:
                log.failure("search: start-up check of shard {n} failed; it stays unindexed", n=index.number)
        self.started.set()
        while not self._stop.is_set():
            if self.clock() - self.cached_at >= STATS_EVERY:
                try:
                    self.cached_stats, self.cached_at = self.stats(), self.clock()
                except Exception:
                    log.failure("search: reading queue statistics failed")
                    self.cached_at = self.clock()
            worked = False
            for index in self.indexes:
                if not index.ready or self._stop.is_set():
                    continue
                try:
                    worked |= self.drain_once(index)
                except Exception:
                    log.failure("search: indexing shard {n} failed; retrying", n=index.number)
                    self._stop.wait(1.0)
            if not worked:
                self._wake.wait(IDLE_POLL)
                self._wake.clear()

    def _check(self, index: ShardIndex) -> None:
        engine = self.store.shard_engines[index.number]
        existed = index.open()
        with engine.begin() as conn:
            stored = dict(conn.execute(select(schema.messages.c.id, schema.messages.c.account_id)).all())
            queued = set(conn.execute(select(searchqueue.search_queue.c.message_id)).scalars())
            indexed = index.indexed_ids() if existed else set()
            missing = [mid for mid in stored if mid not in indexed and mid not in queued]
            extra = [mid for mid in indexed if mid not in stored and mid not in queued]
            now = self.clock()
            searchqueue.enqueue(conn, [(stored[mid], mid, "add") for mid in sorted(missing)], now)
            searchqueue.enqueue(conn, [(0, mid, "del") for mid in extra], now)
        if missing or extra or not existed:
            log.info("search: shard {n} index {state}: {missing} messages queued, {extra} removed",
                     n=index.number, state="ready" if existed else "created", missing=len(missing),
                     extra=len(extra))
        index.ready = True
        index.dirty = True  # merge check and lexicon warm-up at the first idle moment

    def drain_once(self, index: ShardIndex) -> bool:
        """Apply up to BATCH queue rows of one shard; False when its queue was empty."""
        engine = self.store.shard_engines[index.number]
        with engine.connect() as conn:
            rows = searchqueue.take(conn, BATCH)
        if not rows:
            if index.dirty and index.segment_count() > MERGE_SEGMENTS:  # idle: merge small segments
                if self.child is not None:
                    self.child.apply(index, [], [], [], merge=True)
                else:
                    index.apply([], [], [], merge=True)
                self._versions[index.number] += 1
            if index.dirty:
                index.warm()
            index.dirty = False
            return False
        resets = [row.account_id for row in rows if row.op == "reset"]
        deletes = [row.message_id for row in rows if row.op == "del"]
        wanted: dict[int, list[int]] = defaultdict(list)
        for row in rows:
            if row.op == "add":
                wanted[row.account_id].append(row.message_id)
        adds = []
        for account_id, message_ids in wanted.items():
            account = Account(id=account_id, address="", shard=index.number)
            try:
                raws = self.store.mail.read_messages(account, sorted(set(message_ids)))
            except StoreError:
                raws = {}
            adds.extend((account_id, message_id, raw) for message_id, raw in raws.items())
        if self.child is not None:
            self.child.apply(index, adds, deletes, resets)
        else:
            index.apply(documents(adds), deletes, resets)
        index.dirty = True
        self._versions[index.number] += 1
        with engine.begin() as conn:
            searchqueue.done(conn, rows[0].id, rows[-1].id)
        self.indexed_total += len(adds)
        self.last_commit = self.clock()
        return True

    # -- metrics ----------------------------------------------------------------------

    def stats(self) -> dict:
        """Queue depth and lag per shard (seconds since the oldest queued row was written)."""
        depth, lag = 0, 0.0
        now = self.clock()
        for engine in self.store.shard_engines:
            with engine.connect() as conn:
                count, oldest = searchqueue.depth(conn)
            depth += count
            if count and oldest:
                lag = max(lag, now - oldest)
        return {"queue_depth": depth, "lag_seconds": lag, "indexed_total": self.indexed_total,
                "ready_shards": sum(index.ready for index in self.indexes),
                "documents": sum(self._document_count(index) for index in self.indexes if index.ready)}

    def _document_count(self, index: ShardIndex) -> int:
        """index.doc_count() as of the index's last change (read again only after one)."""
        version = self._versions[index.number]
        cached = self._documents.get(index.number)
        if cached is not None and cached[0] == version:
            return cached[1]
        count = index.doc_count()
        self._documents[index.number] = (version, count)  # a change meanwhile bumped the version
        return count


def documents(adds) -> list:
    """(account id, message id, raw) -> (account id, message id, token sets, scan)."""
    out = []
    for account_id, message_id, raw in adds:
        try:
            texts, scan = document(raw)
        except Exception:  # never lose a message to a parser bug: make it a candidate always
            texts, scan = {}, True
        out.append((account_id, message_id, texts, scan))
    return out


def _child_main(inp, out) -> None:
    """The indexing process (python -m mailserverd.search.indexer): pickled (index path,
    shard, adds, deletes, resets) in, ("ok"|"error", detail) out. It exits when the
    daemon's end of the pipe closes (a killed daemon included)."""
    import pickle
    indexes: dict[str, ShardIndex] = {}
    while True:
        try:
            path, number, adds, deletes, resets, merge = pickle.load(inp)
        except (EOFError, OSError, pickle.UnpicklingError):
            return
        try:
            index = indexes.get(path)
            if index is None:
                index = indexes[path] = ShardIndex(path, number)
                index.open()
            index.apply(documents(adds), deletes, resets, merge)
            reply = ("ok", len(adds))
        except Exception as exc:
            indexes.pop(path, None)
            reply = ("error", f"{type(exc).__name__}: {exc}")
        pickle.dump(reply, out)
        out.flush()


class IndexerProcess:
    """The child process holding the index writers; restarted if it dies."""

    def __init__(self):
        self.process = None

    def apply(self, index: ShardIndex, adds, deletes, resets, merge: bool = False) -> None:
        import pickle
        if self.process is None or self.process.poll() is not None:
            self._start()
        try:
            pickle.dump((index.path, index.number, adds, deletes, resets, merge), self.process.stdin,
                        protocol=pickle.HIGHEST_PROTOCOL)
            self.process.stdin.flush()
            status, detail = pickle.load(self.process.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            self.close()
            raise RuntimeError("the indexing process died") from None
        if status != "ok":
            raise RuntimeError("indexing process: " + detail)

    def _start(self) -> None:
        import subprocess
        import sys
        self.process = subprocess.Popen([sys.executable, "-m", "mailserverd.search.indexer"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def close(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        try:
            process.stdin.close()
            process.wait(10)
        except Exception:
            process.kill()
            process.wait()


def reindex(store, address: str | None, now: float | None = None) -> int:
    """`mailserverctl reindex [ADDRESS]`: queue a reset and every message of the
    account (all accounts without ADDRESS), in one transaction per shard; the
    running indexer (or the next start) rebuilds from the primary store.
    Returns the number of messages queued."""
    now = time.time() if now is None else now
    if address:
        accounts = [store.directory.require_account(address)]
    else:
        accounts = store.directory.list_accounts()
    by_shard = defaultdict(list)
    for account in accounts:
        by_shard[account.shard].append(account.id)
    total = 0
    for shard, account_ids in by_shard.items():
        with store.shard_engines[shard].begin() as conn:
            for account_id in account_ids:
                total += searchqueue.enqueue_reindex(conn, account_id, now)
    if _SERVICE is not None:
        _SERVICE.wake()
    return total


_SERVICE: SearchService | None = None


def render_metrics(fresh: bool = False) -> str:
    """Prometheus text for /metrics: the indexer's statistics as of its last refresh
    (at most STATS_EVERY old; fresh=True reads them now). Empty when no indexer runs."""
    if _SERVICE is None:
        return ""
    stats = _SERVICE.stats() if fresh else _SERVICE.cached_stats
    if not stats:
        return ""
    lines = []
    for name, kind, doc, value in (
            ("mailserverd_search_queue_depth", "gauge", "Index queue rows not yet applied.", stats["queue_depth"]),
            ("mailserverd_search_lag_seconds", "gauge", "Age of the oldest index queue row (0 when empty).",
             float(stats["lag_seconds"])),
            ("mailserverd_search_indexed_total", "counter", "Messages indexed by this process.",
             stats["indexed_total"]),
            ("mailserverd_search_documents", "gauge", "Documents in the ready indexes.", stats["documents"])):
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}",
                  f"{name} {value:.3f}" if isinstance(value, float) else f"{name} {value}"]
    return "\n".join(lines) + "\n"


__all__ = ["SearchService", "reindex", "render_metrics", "BATCH"]


if __name__ == "__main__":
    import sys
    _child_main(sys.stdin.buffer, sys.stdout.buffer)
