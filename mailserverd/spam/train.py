"""`mailserverctl spam train --spam PATH --ham PATH [--user ADDRESS]`.

Streams mbox, gzip mbox or Maildir sources (mailfiles.iter_source) into the
token database in batches of BATCH messages, one transaction each, with a
one-line progress display. Runs in the mailserverctl process even while the
daemon runs: it writes only the directory database's spam tables (SQLite in
WAL mode admits this second writer; PostgreSQL any number), never RocksDB; the
daemon sees the new counts within [check.spam] refresh seconds (tokendb revision check).
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterable

from .tokendb import ALREADY, GLOBAL, MOVED, TokenDB

BATCH = 200


class Progress:
    def __init__(self, err: Callable[[str], None]):
        self.err = err
        self.started = time.monotonic()
        self.counts = {"spam": 0, "ham": 0, "already": 0, "moved": 0, "skipped": 0}

    def show(self) -> None:
        done = self.counts["spam"] + self.counts["ham"]
        rate = done / max(time.monotonic() - self.started, 1e-6)
        self.err(f"\rtrained spam {self.counts['spam']}, ham {self.counts['ham']} "
                 f"({self.counts['moved']} moved from the other class), already trained "
                 f"{self.counts['already']}, skipped {self.counts['skipped']} ({rate:.0f} msg/s)")

    def failed(self, reason: str) -> None:
        self.counts["skipped"] += 1
        self.err(f"\nskipped: {reason}\n")


def train_sources(db: TokenDB, sources: Iterable[tuple[str, bool]], err: Callable[[str], None],
                  owner: int = GLOBAL, max_message_size: int = 25 * 1024 * 1024) -> Progress:
    """Train every message of each (path, is_spam) source; returns the counts."""
    from ..mailfiles import iter_source

    progress = Progress(err)
    for path, is_spam in sources:
        batch: list[tuple[bytes, bool]] = []

        def flush():
            for result in db.train_many(batch, owner):
                if result == ALREADY:
                    progress.counts["already"] += 1
                else:
                    progress.counts["spam" if is_spam else "ham"] += 1
                    if result == MOVED:
                        progress.counts["moved"] += 1
            batch.clear()
            progress.show()

        for message in iter_source(path, max_message_size=max_message_size):
            if message.error:
                progress.failed(f"{path}: message {message.index}: {message.error}")
                continue
            batch.append((message.raw, is_spam))
            if len(batch) >= BATCH:
                flush()
        if batch:
            flush()
    progress.show()
    err("\n")
    return progress


def check_paths(paths: Iterable[str]) -> list[str]:
    """The paths that do not exist (the command refuses to start with any)."""
    return [path for path in paths if not os.path.exists(path)]
