#!/usr/bin/env python3
"""bench/store: durable delivery through AsyncStore (group commit).

Measures the latency of one durable delivery (blob synced, rows committed)
and throughput with 1, 8 and 64 concurrent writers, plus how many group
commits (fsync rounds) they needed. Bounded in count and time.

    .venv/bin/python bench/store.py [--messages 2000] [--seconds 20] [--shards 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from twisted.internet import defer, task  # noqa: E402

from bench.corpus import sample_messages  # noqa: E402
from mailserverd.store import Store  # noqa: E402
from mailserverd.store.api import DeliveryTarget  # noqa: E402
from mailserverd.store.service import AsyncStore  # noqa: E402


@defer.inlineCallbacks
def run_level(reactor, async_store, accounts, messages, writers, limit, seconds):
    commits = {"n": 0}
    original = async_store.store.mail.deliver_many

    def counting(batch):
        commits["n"] += 1
        return original(batch)
    async_store.store.mail.deliver_many = counting
    latencies = []
    deadline = time.monotonic() + seconds
    sent = {"n": 0}

    @defer.inlineCallbacks
    def writer(index):
        while sent["n"] < limit and time.monotonic() < deadline:
            number = sent["n"]
            sent["n"] += 1
            body = messages[number % len(messages)] + b"X-Bench: %d-%d\r\n" % (writers, number)
            target = DeliveryTarget(accounts[number % len(accounts)])
            started = time.perf_counter()
            yield async_store.deliver(body, [target])
            latencies.append(time.perf_counter() - started)
    began = time.perf_counter()
    yield defer.gatherResults([writer(i) for i in range(writers)])
    elapsed = time.perf_counter() - began
    async_store.store.mail.deliver_many = original
    latencies.sort()
    return {
        "writers": writers, "messages": len(latencies), "per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1],
        "commits": commits["n"],
    }


def main(reactor, args):
    data = tempfile.mkdtemp(prefix="bench-store-", dir=args.dir)
    store = Store(f"sqlite:///{data}/directory.sqlite3",
                  [f"sqlite:///{data}/shard-{n}.sqlite3" for n in range(args.shards)],
                  f"{data}/blobs")
    store.directory.add_domain("bench.test")
    store.directory.hasher = type(store.directory.hasher)(time_cost=1, memory_cost=64, parallelism=1)
    accounts = [store.add_account(f"user{n}@bench.test", "pw") for n in range(16)]
    messages = sample_messages(200)
    async_store = AsyncStore(store, reactor)
    async_store.startService()

    @defer.inlineCallbacks
    def all_levels():
        print(f"bench/store: SQLite x{args.shards} shards + RocksDB, fsync on, "
              f"{len(messages)} real messages cycling, data in {data} (removed after)")
        print(f"{'writers':>8} {'msgs':>6} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'commits':>8}")
        for writers in (1, 8, 64):
            row = yield run_level(reactor, async_store, accounts, messages, writers,
                                  args.messages, args.seconds)
            print(f"{row['writers']:>8} {row['messages']:>6} {row['per_s']:>8.0f} "
                  f"{row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['commits']:>8}")
        yield async_store.stopService()
        shutil.rmtree(data, ignore_errors=True)
    return all_levels()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--dir", default=None)
    task.react(main, [parser.parse_args()])
