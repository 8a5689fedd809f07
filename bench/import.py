#!/usr/bin/env python3
"""bench/import: mailserverctl user import of the real corpus.

Imports ../shared/corpus (3,000 messages; tests/data when absent) into a
fresh data dir with the real mailserverctl, and reports messages/s and bytes
on disk against the raw size. Bounded: one pass over the files.

    .venv/bin/python bench/import.py
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from bench.corpus import corpus_paths  # noqa: E402


def disk_usage(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, name)) for name in files)
    return total


def raw_size(path: str) -> int:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        return sum(len(chunk) for chunk in iter(lambda: handle.read(1 << 20), b""))


def ctl(conf: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailserverd.cli.ctl", "-c", conf, *args],
                          capture_output=True, text=True, check=True)


def main() -> None:
    work = tempfile.mkdtemp(prefix="bench-import-")
    conf = os.path.join(work, "m.conf")
    with open(conf, "w") as handle:
        handle.write(f"[server]\nhostname = bench.test\ndata_dir = {work}/data\n")
    ctl(conf, "domain", "add", "bench.test")
    ctl(conf, "user", "add", "user@bench.test", "--password", "pw")
    total_raw = sum(raw_size(path) for path in corpus_paths())  # outside the timed part
    total_messages = 0
    started = time.perf_counter()
    for path in corpus_paths():
        result = ctl(conf, "user", "import", "user@bench.test", path)
        total_messages += int(result.stderr.rsplit("imported ", 1)[1].split(",")[0])
    elapsed = time.perf_counter() - started
    on_disk = disk_usage(os.path.join(work, "data"))
    shutil.rmtree(work, ignore_errors=True)
    print(f"bench/import: {total_messages} messages from {', '.join(map(os.path.basename, corpus_paths()))}")
    print(f"  {total_messages / elapsed:.0f} messages/s ({elapsed:.1f} s, including process start)")
    print(f"  raw {total_raw / 1e6:.1f} MB -> on disk {on_disk / 1e6:.1f} MB "
          f"({on_disk / total_raw:.2f}x: SQLite shards + WAL + zstd RocksDB)")


if __name__ == "__main__":
    main()
