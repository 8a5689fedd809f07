#!/usr/bin/env python3
"""bench/antivirus: CPU per message of check.antivirus (the scan its thread does).

Half the messages come from the ham and half from the spam mbox of the corpus
(../shared/corpus, tests/data when absent); each is scanned once after a
warm-up, with the default options (EICAR, archive limits). Reports CPU ms
(thread time) p50/p90/p99/max, and how many messages had a finding.

    .venv/bin/python bench/antivirus.py [--messages 500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.corpus import corpus_paths  # noqa: E402
from mailserverd.checks.antivirus import AntivirusCheck  # noqa: E402
from mailserverd.mailfiles import iter_source  # noqa: E402


def sample(total: int) -> list[bytes]:
    paths = corpus_paths()
    messages: list[bytes] = []
    for number, path in enumerate(paths):
        want = total // len(paths) + (number < total % len(paths))
        taken = 0
        for message in iter_source(path):
            if message.error is None and taken < want:
                messages.append(message.raw)
                taken += 1
            if taken >= want:
                break
    return messages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    args = parser.parse_args()
    messages = sample(args.messages)
    scanner = AntivirusCheck().scanner
    for raw in messages[:20]:
        scanner.scan(raw)  # warm-up: regular expression and import caches
    costs, findings = [], 0
    for raw in messages:
        started = time.thread_time()
        findings += scanner.scan(raw) is not None
        costs.append((time.thread_time() - started) * 1000)
    costs.sort()

    def quantile(fraction: float) -> float:
        return costs[min(len(costs) - 1, int(fraction * len(costs)))]

    size = sum(map(len, messages)) / len(messages) / 1024
    print(f"check.antivirus: {len(messages)} messages ({size:.1f} KiB mean), {findings} with findings")
    print(f"CPU ms per message: p50 {quantile(0.5):.3f}  p90 {quantile(0.9):.3f}  p99 {quantile(0.99):.3f}  "
          f"max {costs[-1]:.3f}  mean {statistics.mean(costs):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
