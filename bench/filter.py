#!/usr/bin/env python3
"""bench/filter: accuracy and cost of the built-in spam classifier (check.spam).

1. 10-fold cross-validation on the corpus (../shared/corpus: 2,500 ham, 500
   spam; tests/data when absent): each message is scored by a classifier
   trained on the other nine folds. Reports spam caught (score >= spam
   cutoff), ham misfiled (ham scored as spam), and the unsure rates, overall
   and for the hard ham: mail people asked for from lists and senders of bulk
   mail (List-Id, List-Unsubscribe or Precedence: bulk/list). Then a harsher test
   of generalisation: trained on the first half of each file, scored on the rest.
2. Per-message scoring cost, CPU ms p50/p99: tokenising plus classifying with
   an in-memory table, and the check's real path: one batched SELECT on a
   token database in SQLite (mailserverd.spam.tokendb) trained on the corpus.

    .venv/bin/python bench/filter.py [--folds 10] [--seed 1] [--no-sql]

Bounded: 3,000 messages, each tokenised once; the SQL phase scores at most
--sql-messages messages.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.corpus import corpus_paths  # noqa: E402
from mailserverd.mailfiles import iter_source  # noqa: E402
from mailserverd.mime.headers import first_fields, split_header  # noqa: E402
from mailserverd.spam import classifier  # noqa: E402
from mailserverd.spam.classifier import Counts  # noqa: E402
from mailserverd.spam.tokenizer import tokenize  # noqa: E402

_BULK = re.compile(rb"^\s*(bulk|list|junk)\b", re.I)


def is_hard_ham(raw: bytes) -> bool:
    """Mail from lists and bulk senders: what people asked for but looks most like spam."""
    fields = first_fields(split_header(raw)[0], {"list-id", "list-unsubscribe", "precedence"})
    return ("list-id" in fields or "list-unsubscribe" in fields
            or bool(_BULK.match(fields.get("precedence", b""))))


def load(paths: list[str]) -> list[tuple[bytes, bool]]:
    messages = []
    for path in paths:
        is_spam = "ham" not in os.path.basename(path).replace("spamassassin", "")
        for message in iter_source(path):
            if message.error is None:
                messages.append((message.raw, is_spam))
    return messages


def cross_validate(tokens: list[set[str]], labels: list[bool], folds: int, seed: int,
                   options: classifier.Options):
    order = list(range(len(tokens)))
    random.Random(seed).shuffle(order)
    fold_of = {index: position % folds for position, index in enumerate(order)}
    spam_all, ham_all = Counter(), Counter()
    for token_set, is_spam in zip(tokens, labels):
        (spam_all if is_spam else ham_all).update(token_set)
    scores = [0.0] * len(tokens)
    for fold in range(folds):
        spam_counts, ham_counts = spam_all.copy(), ham_all.copy()
        members = [index for index in range(len(tokens)) if fold_of[index] == fold]
        for index in members:
            (spam_counts if labels[index] else ham_counts).subtract(tokens[index])
        nspam = sum(1 for index, is_spam in enumerate(labels) if is_spam and fold_of[index] != fold)
        nham = sum(1 for index, is_spam in enumerate(labels) if not is_spam and fold_of[index] != fold)
        for index in members:
            counts = {token: Counts(spam_counts.get(token, 0), ham_counts.get(token, 0))
                      for token in tokens[index]
                      if spam_counts.get(token, 0) > 0 or ham_counts.get(token, 0) > 0}
            scores[index], _clues = classifier.score(tokens[index], counts, nspam, nham, options)
    return scores


def split_scores(tokens: list[set[str]], labels: list[bool], fraction: float, options: classifier.Options):
    """Train on the first `fraction` of each class (file order), score the rest: mail from
    later in time than all training, a closer proxy for unseen mail than shuffled folds."""
    ham = [index for index, is_spam in enumerate(labels) if not is_spam]
    spam = [index for index, is_spam in enumerate(labels) if is_spam]
    train = ham[:int(len(ham) * fraction)] + spam[:int(len(spam) * fraction)]
    test = ham[int(len(ham) * fraction):] + spam[int(len(spam) * fraction):]
    spam_counts, ham_counts = Counter(), Counter()
    for index in train:
        (spam_counts if labels[index] else ham_counts).update(tokens[index])
    nspam = sum(labels[index] for index in train)
    nham = len(train) - nspam
    scores = []
    for index in test:
        counts = {token: Counts(spam_counts[token], ham_counts[token]) for token in tokens[index]
                  if spam_counts[token] or ham_counts[token]}
        scores.append(classifier.score(tokens[index], counts, nspam, nham, options)[0])
    return scores, [labels[index] for index in test]


def report(name: str, scores: list[float], labels: list[bool], ham_cutoff: float, spam_cutoff: float):
    spam = [score for score, is_spam in zip(scores, labels) if is_spam]
    ham = [score for score, is_spam in zip(scores, labels) if not is_spam]

    def pct(part, whole):
        return f"{100.0 * part / whole:6.2f}%" if whole else "   n/a"
    line = f"{name:<26}"
    if spam:
        caught = sum(score >= spam_cutoff for score in spam)
        unsure = sum(ham_cutoff <= score < spam_cutoff for score in spam)
        line += f" spam {len(spam):5}: caught {pct(caught, len(spam))} unsure {pct(unsure, len(spam))}"
    if ham:
        misfiled = sum(score >= spam_cutoff for score in ham)
        unsure = sum(ham_cutoff <= score < spam_cutoff for score in ham)
        line += (f" ham {len(ham):5}: misfiled {pct(misfiled, len(ham))} ({misfiled})"
                 f" unsure {pct(unsure, len(ham))}")
    print(line)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def sql_cost(messages, limit: int, seed: int):
    """Train a SQLite token database on every message, then score `limit` of them
    the way check.spam does (tokenise, one batched SELECT, combine)."""
    from sqlalchemy import create_engine

    from mailserverd.spam.tokendb import TokenDB

    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite:///{scratch}/directory.sqlite3")
        db = TokenDB(engine, cache_size=0)
        db.create_tables()
        started = time.monotonic()
        for start in range(0, len(messages), 200):  # as mailserverctl spam train batches
            db.train_many(messages[start:start + 200])
        trained = time.monotonic() - started
        sample = random.Random(seed).sample(messages, min(limit, len(messages)))
        costs = []
        for raw, _is_spam in sample:
            before = time.process_time()
            db.score(raw)
            costs.append(1000 * (time.process_time() - before))
        engine.dispose()
    return trained, costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ham-cutoff", type=float, default=0.20)
    parser.add_argument("--spam-cutoff", type=float, default=0.90)
    parser.add_argument("--split", type=float, default=0.5, help="fraction trained in the time-order test")
    parser.add_argument("--no-sql", action="store_true", help="skip the SQLite cost phase")
    parser.add_argument("--sql-messages", type=int, default=500)
    parser.add_argument("--show-errors", type=int, default=0, help="print N worst misfiled of each kind")
    parser.add_argument("--auth-messages", type=int, default=500,
                        help="check.auth cost phase (bench/authcost.py) on N messages; 0 skips it")
    args = parser.parse_args()

    paths = corpus_paths()
    messages = load(paths)
    labels = [is_spam for _raw, is_spam in messages]
    print(f"corpus: {', '.join(os.path.relpath(path) for path in paths)}: "
          f"{labels.count(False)} ham, {labels.count(True)} spam")
    costs = []
    tokens = []
    for raw, _is_spam in messages:
        before = time.process_time()
        tokens.append(tokenize(raw))
        costs.append(1000 * (time.process_time() - before))
    print(f"tokenise: p50 {percentile(costs, 0.5):.2f} ms, p99 {percentile(costs, 0.99):.2f} ms CPU, "
          f"{statistics.mean(len(t) for t in tokens):.0f} tokens/message")

    options = classifier.Options()
    print(f"classifier: {options}")
    scores = cross_validate(tokens, labels, args.folds, args.seed, options)
    print(f"{args.folds}-fold cross-validation, ham cutoff {args.ham_cutoff}, spam cutoff {args.spam_cutoff}:")
    report("all", scores, labels, args.ham_cutoff, args.spam_cutoff)
    hard = [index for index, (raw, is_spam) in enumerate(messages) if not is_spam and is_hard_ham(raw)]
    report("hard ham (lists, bulk)", [scores[i] for i in hard], [False] * len(hard),
           args.ham_cutoff, args.spam_cutoff)
    plain = [index for index, (raw, is_spam) in enumerate(messages) if not is_spam and index not in set(hard)]
    report("other ham", [scores[i] for i in plain], [False] * len(plain), args.ham_cutoff, args.spam_cutoff)
    ham_scores = sorted(score for score, is_spam in zip(scores, labels) if not is_spam)
    print(f"highest ham scores: {', '.join(f'{s:.4f}' for s in ham_scores[-5:])}")
    if args.show_errors:
        _show_errors(messages, scores, labels, args.show_errors)
    split, split_labels = split_scores(tokens, labels, args.split, options)
    print(f"trained on the first {args.split:.0%} of each file, scored on the rest:")
    report("later mail", split, split_labels, args.ham_cutoff, args.spam_cutoff)

    if not args.no_sql:
        trained, costs = sql_cost(messages, args.sql_messages, args.seed)
        print(f"SQLite token db: trained {len(messages)} messages in {trained:.1f} s; "
              f"score (tokenise + one SELECT + combine): p50 {percentile(costs, 0.5):.2f} ms, "
              f"p99 {percentile(costs, 0.99):.2f} ms CPU over {len(costs)} messages")
    if args.auth_messages:
        from bench import authcost
        authcost.report(authcost.auth_cost([raw for raw, _is_spam in messages], args.auth_messages, args.seed))
    return 0


def _show_errors(messages, scores, labels, count):
    ranked = sorted(range(len(scores)), key=lambda index: scores[index])
    spam_low = [index for index in ranked if labels[index]][:count]
    ham_high = [index for index in reversed(ranked) if not labels[index]][:count]
    for title, indexes in (("spam scored lowest", spam_low), ("ham scored highest", ham_high)):
        print(f"-- {title}")
        for index in indexes:
            fields = first_fields(split_header(messages[index][0])[0], {"subject", "from"})
            print(f"  {scores[index]:.4f} {fields.get('from', b'')[:50]!r} {fields.get('subject', b'')[:60]!r}")


if __name__ == "__main__":
    sys.exit(main())
