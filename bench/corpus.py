"""Real messages for benchmarks: ../shared/corpus when present, else tests/data."""

from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "corpus"))
HAM = "spamassassin-easy-ham-1.mbox.gz"
SPAM = "spamassassin-spam-1.mbox.gz"


def corpus_paths() -> list[str]:
    shared = [os.path.join(SHARED, name) for name in (HAM, SPAM)]
    if all(os.path.exists(path) for path in shared):
        return shared
    return [os.path.join(HERE, "..", "tests", "data", name) for name in ("ham-200.mbox", "spam-50.mbox")]


def sample_messages(limit: int) -> list[bytes]:
    from mailserverd.mailfiles import iter_source

    messages = []
    for path in corpus_paths():
        for message in iter_source(path):
            if message.error is None:
                messages.append(message.raw)
            if len(messages) >= limit:
                return messages
    return messages
