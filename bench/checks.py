#!/usr/bin/env python3
"""bench/checks: CPU per message of each check of the default chain, in-process.

No daemon, no network server of our own: the checks' work alone, on real
messages (bench/corpus.py), so a change to one check shows without the SMTP
and store noise of bench/smtp.py and bench/profile.py.

    check.auth       evaluate() (SPF, DKIM, DMARC, ARC) through one CachingResolver
                     on the system resolver ([dns] nameservers empty): a cold pass
                     (every answer from DNS; wall time shows the DNS latency) and a
                     warm pass (every answer cached)
    check.antivirus  Scanner.scan, and how many messages take the in-line path
    check.spam       SpamCheck.classify against a SQLite token database: empty
                     (the body stage answers without tokenising) and trained on
                     --train messages (global database; the per-user one empty),
                     warm token cache, totals cached as the daemon does

    .venv/bin/python bench/checks.py [--messages 400] [--train 600]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from bench.corpus import sample_messages  # noqa: E402


def per_message(fn, messages) -> tuple[float, float]:
    """(CPU ms, wall ms) per message of fn(message) over all of them."""
    cpu, wall = time.process_time(), time.perf_counter()
    for message in messages:
        fn(message)
    n = max(len(messages), 1)
    return 1000 * (time.process_time() - cpu) / n, 1000 * (time.perf_counter() - wall) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--train", type=int, default=600)
    args = parser.parse_args()
    from sqlalchemy import create_engine

    from mailserverd.checks import antivirus, auth
    from mailserverd.checks.dns import CachingResolver
    from mailserverd.spam.check import SpamCheck
    from mailserverd.spam.tokendb import TokenDB
    from mailserverd.store import schema
    from mailserverd.store.api import Account

    corpus = sample_messages(3000)
    ham = [m for m in corpus[:2500]]
    spam = [m for m in corpus[2500:]]
    train_spam = min(len(spam) // 2, args.train // 3)
    train_ham = min(len(ham) // 2, args.train - train_spam)
    test = (ham[train_ham:] + spam[train_spam:])[:args.messages]
    print(f"bench/checks: {len(test)} messages; training {train_ham} ham + {train_spam} spam")

    resolver = CachingResolver()
    rng = random.Random(1)

    def evaluate(message):
        auth.evaluate(resolver, "127.0.0.1", "bench.client", "sender@bench.client", message, rng)
    for label in ("cold", "warm"):
        cpu, wall = per_message(evaluate, test)
        print(f"check.auth evaluate, {label}: {cpu:.3f} ms CPU, {wall:.3f} ms wall per message")

    check = antivirus.AntivirusCheck()
    cpu, _wall = per_message(check.scanner.scan, test)
    inline = sum(1 for message in test if antivirus.plain_text(message))
    print(f"check.antivirus scan: {cpu:.3f} ms CPU per message; {inline} of {len(test)} scanned in line")

    work = tempfile.mkdtemp(prefix="bench-checks-")
    try:
        engine = create_engine(f"sqlite:///{work}/directory.sqlite3")
        with engine.begin() as conn:
            schema.migrate(conn, "directory")
        account = Account(id=1, address="a@example.test", shard=0)
        db = TokenDB(engine, totals_ttl=2.0)
        spam_check = SpamCheck(db=db, reject_score="")
        cpu, _wall = per_message(lambda message: spam_check.classify(message, [account]), test)
        print(f"check.spam classify, empty database: {cpu:.3f} ms CPU per message "
              f"(the body stage skips even this once the totals are cached)")
        TokenDB(engine).train_many([(m, False) for m in ham[:train_ham]] + [(m, True) for m in spam[:train_spam]])
        db.forget_totals()
        per_message(lambda message: spam_check.classify(message, [account]), test)  # warm the token cache
        cpu, _wall = per_message(lambda message: spam_check.classify(message, [account]), test)
        print(f"check.spam classify, trained: {cpu:.3f} ms CPU per message (tokenise + score, warm cache)")
        engine.dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
