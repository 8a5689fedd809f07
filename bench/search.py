"""Full-text search benchmark (issue 12): indexing throughput, index size, and
IMAP SEARCH latency through the index, against Dovecot's SEARCH (no FTS
plugin, its default) on the same mailbox in the same run.

    .venv/bin/python bench/search.py [--messages 10000] [--rounds 5] [--no-peer]

Real mail from ../shared/corpus (tests/data when absent), repeated with fresh
Message-IDs and dates up to --messages. mailserverd: the mbox is imported
before the daemon starts, then the time until its indexer has drained the
queue gives messages/s. Queries (words drawn from the corpus, each asked
--rounds times after one untimed round, client-side wall time): SUBJECT word, FROM word, BODY word,
BODY "two words", UNSEEN BODY word; plus BODY word through the exhaustive
scan (NOT NOT BODY word, which the index cannot narrow) for reference. Then
--load messages over SMTP (16 sessions) while the index queue is sampled:
its largest depth and lag, and the drain time after the load stops.
Dovecot: ../shared/tools/peers-setup (127.0.0.1:10143, testuser97@example.test,
Maildir loaded as bench/pop3.py does; needs root).
"""

from __future__ import annotations

import argparse
import imaplib
import os
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.corpus import sample_messages  # noqa: E402
from bench.pop3 import dovecot_note, empty_dovecot, free_port, load_dovecot, write_mbox  # noqa: E402

DOVECOT = ("127.0.0.1", 10143)
PEER_USER = "testuser97@example.test"
USER = "search@example.test"
PASSWORD = "secret-pw-1"
KINDS = ("subject", "from", "body", "phrase", "unseen+body", "body (exhaustive scan)")


def scaled(count: int) -> list[bytes]:
    """Corpus mail repeated to `count` messages; copies get new Message-IDs and dates."""
    base = sample_messages(count)
    out = list(base)
    copy = 0
    while len(out) < count:
        copy += 1
        for raw in base[:count - len(out)]:
            raw = re.sub(rb"(?im)^message-id:[^\r\n]*", b"Message-ID: <copy%d.%d@bench.example>" % (copy, len(out)),
                         raw, count=1)
            raw = re.sub(rb"(?im)^date:[^\r\n]*", b"Date: %s" % time.strftime(
                "%a, %d %b %Y %H:%M:%S +0000", time.gmtime(1_000_000_000 + len(out) * 97)).encode(), raw, count=1)
            out.append(raw)
    return out


def words_of(messages: list[bytes], rng: random.Random) -> dict:
    """Query words: from subjects, From names/domains and bodies of random messages."""
    import email
    subjects, senders, bodies, phrases = [], [], [], []
    for raw in rng.sample(messages, min(400, len(messages))):
        message = email.message_from_bytes(raw)
        subjects += [w for w in re.findall(r"[A-Za-z]{5,}", str(message.get("subject", "")))]
        senders += [w for w in re.findall(r"[A-Za-z]{4,}", str(message.get("from", "")))]
        split = re.search(rb"\r?\n\r?\n", raw)
        text = raw[split.end() if split else 0:][:2000].decode("latin-1")
        found = re.findall(r"[A-Za-z]{5,}", text)
        bodies += found
        phrases += [f"{a} {b}" for a, b in zip(found, found[1:])]
    pick = lambda items, n: rng.sample(sorted(set(items)), min(n, len(set(items))))  # noqa: E731
    return {"subject": pick(subjects, 20), "from": pick(senders, 20), "body": pick(bodies, 20),
            "phrase": pick(phrases, 20)}


def queries(words: dict) -> list[tuple[str, list[str]]]:
    q = lambda text: '"' + text.replace('"', "") + '"'  # noqa: E731
    out = []
    for word in words["subject"]:
        out.append(("subject", ["SUBJECT", q(word)]))
    for word in words["from"]:
        out.append(("from", ["FROM", q(word)]))
    for word in words["body"]:
        out.append(("body", ["BODY", q(word)]))
        out.append(("unseen+body", ["UNSEEN", "BODY", q(word)]))
    for phrase in words["phrase"]:
        out.append(("phrase", ["BODY", q(phrase)]))
    for word in words["body"][:4]:
        out.append(("body (exhaustive scan)", ["NOT", "NOT", "BODY", q(word)]))
    return out


def run_queries(address, user: str, plan, rounds: int) -> tuple[dict, dict]:
    """{kind: [seconds]} and {(kind, args): matches} over `rounds` passes."""
    client = imaplib.IMAP4(*address, timeout=600)
    client.login(user, PASSWORD)
    began = time.perf_counter()
    client.select("INBOX")
    select_seconds = time.perf_counter() - began
    times: dict = {kind: [] for kind in KINDS}
    answers = {}
    for kind, args in plan:  # one untimed round: both servers start from warm caches
        if kind != "body (exhaustive scan)":
            client.uid("SEARCH", *args)
    for round_number in range(rounds):
        for kind, args in plan:
            if kind == "body (exhaustive scan)" and round_number:
                continue  # seconds per query: once is enough
            began = time.perf_counter()
            typ, data = client.uid("SEARCH", *args)
            times[kind].append(time.perf_counter() - began)
            if typ != "OK":
                raise SystemExit(f"SEARCH {args} failed: {data}")
            answers[(kind, tuple(args))] = len(data[0].split())
    client.logout()
    times["select"] = [select_seconds]
    return times, answers


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def queue_depth(data_dir: str) -> int:
    depth = 0
    for name in os.listdir(data_dir):
        if name.startswith("shard-") and name.endswith(".sqlite3"):
            with sqlite3.connect(os.path.join(data_dir, name), timeout=60) as conn:
                depth += conn.execute("SELECT count(*) FROM search_queue").fetchone()[0]
    return depth


def dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def start_daemon(work: str, mbox: str):
    port = free_port()
    conf = os.path.join(work, "m.conf")
    with open(conf, "w") as handle:
        handle.write(f"[server]\nhostname = mx.bench.test\ndata_dir = {work}/data\n"
                     f"[listen]\nimap = 127.0.0.1:{port}\nsmtp = 127.0.0.1:{free_port()}\n"
                     "[storage]\nshards = 1\n[limits]\nmax_connections_per_ip = 0\n")
    ctl = [sys.executable, "-m", "mailserverd.cli.ctl", "-c", conf]
    subprocess.run(ctl + ["domain", "add", "example.test"], check=True, capture_output=True)
    subprocess.run(ctl + ["user", "add", USER, "--password", PASSWORD], check=True, capture_output=True)
    began = time.perf_counter()
    subprocess.run(ctl + ["user", "import", USER, mbox], check=True, capture_output=True)
    imported = time.perf_counter() - began
    proc = subprocess.Popen([sys.executable, "-m", "mailserverd.cli.daemon", "-c", conf],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "mailserverd ready" in line:
            break
    else:
        raise SystemExit("mailserverd did not start")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    smtp_port = int(open(conf).read().split("smtp = 127.0.0.1:")[1].split()[0])
    return proc, ("127.0.0.1", port), os.path.join(work, "data"), imported, ("127.0.0.1", smtp_port)


def delivery_lag(smtp, data_dir: str, messages: list[bytes], sessions: int, count: int) -> str:
    """SMTP load (smtplib, `sessions` threads, `count` messages) while the index queue is
    sampled: delivered msg/s, the largest queue depth and oldest-row age seen, and how long
    the indexer takes to drain after the last 250."""
    import smtplib
    sent = [0]
    lock = threading.Lock()
    stop = threading.Event()
    samples = []

    def sender(number):
        client = smtplib.SMTP(*smtp, timeout=120)
        while True:
            with lock:
                if sent[0] >= count:
                    break
                sent[0] += 1
                index = sent[0]
            try:
                client.sendmail("load@bench.example", [USER], messages[index % len(messages)])
            except smtplib.SMTPResponseException:
                pass  # a message the server refuses (size, syntax) is not part of the load
        client.quit()

    def sampler():
        while not stop.is_set():
            began = time.time()
            depth = queue_depth(data_dir)
            with sqlite3.connect(os.path.join(data_dir, "shard-0.sqlite3"), timeout=60) as conn:
                oldest = conn.execute("SELECT min(at) FROM search_queue").fetchone()[0]
            samples.append((depth, began - oldest if oldest else 0.0))
            stop.wait(0.5)

    watcher = threading.Thread(target=sampler, daemon=True)
    watcher.start()
    began = time.perf_counter()
    threads = [threading.Thread(target=sender, args=(n,)) for n in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    load = time.perf_counter() - began
    drained = time.perf_counter()
    while queue_depth(data_dir):
        time.sleep(0.2)
    drain = time.perf_counter() - drained
    stop.set()
    watcher.join()
    return (f"SMTP load {count} messages / {sessions} sessions: {count / load:.0f} msg/s delivered; "
            f"index queue max {max(d for d, _ in samples)} rows, max lag {max(a for _, a in samples):.1f} s; "
            f"drained {drain:.1f} s after the last 250")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-peer", action="store_true", help="measure mailserverd only")
    parser.add_argument("--load", type=int, default=2000,
                        help="messages delivered over SMTP (16 sessions) while index lag is sampled; 0 = skip")
    args = parser.parse_args()
    note = "not measured (--no-peer)" if args.no_peer else dovecot_note()
    messages = scaled(args.messages)
    raw_bytes = sum(len(raw) for raw in messages)
    plan = queries(words_of(messages, random.Random(12)))
    print(f"{len(messages)} messages, {raw_bytes / 1e6:.1f} MB raw; {len(plan)} distinct queries")
    with tempfile.TemporaryDirectory() as work:
        mbox = os.path.join(work, "corpus.mbox")
        write_mbox(mbox, messages)
        proc, address, data_dir, imported, smtp = start_daemon(work, mbox)
        try:
            began = time.perf_counter()
            while queue_depth(data_dir):
                time.sleep(0.5)
            indexing = time.perf_counter() - began
            time.sleep(10)  # the indexer merges small segments and warms its caches when idle
            index_bytes = dir_size(os.path.join(data_dir, "search"))
            print(f"mailserverd: import {len(messages) / imported:.0f} msg/s; indexing {indexing:.1f} s "
                  f"= {len(messages) / indexing:.0f} msg/s; index {index_bytes / 1e6:.1f} MB "
                  f"({index_bytes / raw_bytes:.2f} x raw)")
            ours, our_answers = run_queries(address, USER, plan, args.rounds)
            if args.load:
                lag_line = delivery_lag(smtp, data_dir, messages[:2000], 16, args.load)
                print(lag_line)
            index_bytes = dir_size(os.path.join(data_dir, "search"))
            print(f"index at the end: {index_bytes / 1e6:.1f} MB ({index_bytes / raw_bytes:.2f} x raw)")
        finally:
            proc.terminate()
            proc.wait(timeout=120)
    theirs, their_answers = None, {}
    if note is None:
        try:
            empty_dovecot([PEER_USER])
            load_dovecot([PEER_USER], messages)
            theirs, their_answers = run_queries(DOVECOT, PEER_USER, plan, args.rounds)
        finally:
            empty_dovecot([PEER_USER])
    print(f"\nIMAP UID SEARCH latency, ms (p50 / p99), {len(messages)} messages, {args.rounds} rounds")
    print(f"  {'query':24} {'mailserverd':>18} {'dovecot':>18}")
    for kind in KINDS + ("select",):
        mine = ours[kind]
        if not mine:
            continue
        line = f"  {kind:24} {percentile(mine, .5) * 1e3:8.1f} / {percentile(mine, .99) * 1e3:7.1f}"
        if theirs and theirs.get(kind):
            line += f" {percentile(theirs[kind], .5) * 1e3:8.1f} / {percentile(theirs[kind], .99) * 1e3:7.1f}"
        else:
            line += f"  {note or '-'}"
        print(line)
    if their_answers:
        differ = [key for key in our_answers if key in their_answers and our_answers[key] != their_answers[key]]
        print(f"  answers differing from Dovecot's: {len(differ)} of {len(our_answers)}"
              + (f" (e.g. {differ[0]}: {our_answers[differ[0]]} vs {their_answers[differ[0]]})" if differ else ""))


if __name__ == "__main__":
    main()
