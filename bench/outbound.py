#!/usr/bin/env python3
"""bench/outbound: outbound delivery throughput and the queue's claim cost.

1. Submission to remote acceptance, 2 nodes on loopback: node A (mail.a.test,
   127.0.0.2) takes real messages (../shared/corpus, tests/data when absent)
   over submission (STARTTLS + AUTH) from alice@a.test to bob@b.test; node B
   (mx1.b.test, 127.0.0.3) is b.test's only MX in a loopback DNS server
   (tests/support/dnsserver.py). A queues each message, DKIM-signs it
   (Ed25519 + RSA) and sends it to B over SMTP with STARTTLS; fsync on in
   both. Timed per level (1 and 8 submission sessions): until every 250 from
   A (submission rate), and until A has counted every recipient delivered,
   i.e. B answered 250 after DATA (end-to-end rate), read from A's /metrics.
2. Queue claim cost: 10,000 queued messages in the directory database (SQLite
   WAL, synchronous=FULL, the embedded default; PostgreSQL too when its
   binaries are installed, via tests/support/pg.py), then queue.claim() of 16
   at a time (the worker's default concurrency) until every row is leased:
   p50/p99 per claim, rows claimed per second; then queue.record() of 1,000
   delivered outcomes (what ends each attempt).

    .venv/bin/python bench/outbound.py [--messages 400] [--queued 10000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import os
import shutil
import signal
import smtplib
import ssl
import sys
import tempfile
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from bench.corpus import sample_messages  # noqa: E402

PASSWORD = "bench-pw-1"
DROPPED_FIELDS = (b"from", b"to", b"cc", b"bcc", b"message-id", b"return-path", b"delivered-to", b"received",
                  b"dkim-signature", b"x-bench-id")
CLAIM_BATCH = 16
RECORDED = 1000


# -- part 1: submission to remote acceptance ---------------------------------------------------

def as_alice(raw: bytes, number: int) -> bytes:
    """A corpus message re-addressed from alice@a.test to bob@b.test, with a unique header
    (mailserverd stores identical bodies once) and its original routing fields removed."""
    head, separator, body = raw.partition(b"\r\n\r\n")
    kept, dropping = [], False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.split(b":", 1)[0].strip().lower() in DROPPED_FIELDS
        if not dropping:
            kept.append(line)
    ours = [b"From: Alice <alice@a.test>", b"To: bob@b.test",
            b"Message-ID: <bench-%d.%d@a.test>" % (os.getpid(), number), b"X-Bench-Id: %d" % number]
    return b"\r\n".join(ours + kept) + (separator or b"\r\n\r\n") + body


def start_nodes(work: str):
    """The DNS server and nodes A and B (sharing port numbers), ready to send a.test -> b.test."""
    from tests.support.daemon import MailServer
    from tests.support.dnsserver import DnsServer

    dns_server = DnsServer({"b.test": {"MX": [(10, "mx1.b.test")]}, "mx1.b.test": {"A": ["127.0.0.3"]},
                            "mail.a.test": {"A": ["127.0.0.2"]}}).start()
    common = {"dns": {"nameservers": dns_server.nameservers},
              "smtp": {"message_rate_per_ip": "0", "submission_rate_per_account": "0"},
              "limits": {"max_connections_per_ip": "0"}}
    b = MailServer(os.path.join(work, "b"), listeners=("smtp", "submission", "http"), extra_config=common,
                   hostname="mx1.b.test", host="127.0.0.3")
    a = None
    try:
        os.makedirs(b.directory)
        b.start()
        b.ctl("domain", "add", "b.test")
        b.ctl("user", "add", "bob@b.test", "--password", PASSWORD)
        a = MailServer(os.path.join(work, "a"), listeners=("smtp", "submission", "http"),
                       extra_config={**common, "outbound": {"port": str(b.ports["smtp"]), **OUTBOUND_OPTIONS}},
                       hostname="mail.a.test", host="127.0.0.2", ports=b.ports)
        os.makedirs(a.directory)
        a.start()
        a.ctl("domain", "add", "a.test")
        a.ctl("user", "add", "alice@a.test", "--password", PASSWORD)
        a.ctl("dkim", "keygen", "a.test")
        return dns_server, a, b
    except BaseException:
        for node in (a, b):
            if node is not None and node.running:
                node.stop()
        dns_server.stop()
        raise


def delivered_count(node) -> float:
    connection = http.client.HTTPConnection(*node.address("http"), timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    for line in text.splitlines():
        if line.startswith('mailserverd_outbound_recipients_total{result="delivered"} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def submit_share(address, bodies: list[bytes]) -> int:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    sent = 0
    with smtplib.SMTP(*address, timeout=60) as client:
        client.starttls(context=context)
        client.login("alice@a.test", PASSWORD)
        for body in bodies:
            if not client.sendmail("alice@a.test", ["bob@b.test"], body):
                sent += 1
    return sent


def start_profile(prefix: str, node, label: str, seconds: float):
    """py-spy (collapsed stacks) on a node's daemon during one level, when --profile is given."""
    if not prefix:
        return None
    spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return subprocess.Popen([spy if os.path.exists(spy) else "py-spy", "record", "--format", "raw",
                             "--threads", "--idle", "-r", "200", "-d", str(int(seconds)),
                             "-p", str(node.process.pid), "-o", f"{prefix}-{label}.txt"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cpu_seconds(node) -> float:
    with open(f"/proc/{node.process.pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_level(a, bodies: list[bytes], sessions: int, seconds: float) -> dict:
    before = delivered_count(a)
    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(sessions) as pool:
        sent = sum(pool.map(lambda share: submit_share(a.address("submission"), share),
                            [bodies[i::sessions] for i in range(sessions)]))
    submitted = time.perf_counter() - began
    deadline = began + seconds
    accepted = 0.0
    while time.perf_counter() < deadline:
        accepted = delivered_count(a) - before
        if accepted >= sent:
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - began
    return {"sent": sent, "accepted": int(accepted), "submit_s": submitted, "end_s": elapsed,
            "submit_rate": sent / submitted, "end_rate": accepted / elapsed}


def drain_level(a, bodies: list[bytes], seconds: float, b=None) -> dict:
    """The outbound path alone: the messages are put in A's queue (not due yet) straight
    through its directory database, then `mailserverctl queue flush` makes them due and
    wakes A's worker; timed until A has counted every one delivered."""
    from mailserverd.outbound import queue
    from mailserverd.store import make_engine

    engine = make_engine(f"sqlite:///{os.path.join(a.data_dir, 'directory.sqlite3')}")
    later = time.time() + 3600  # created "in an hour": not due until the flush
    try:
        for body in bodies:
            queue.enqueue(engine, queue.NewMessage(
                id=queue.new_queue_id(), sender="alice@a.test", body=body, created_at=later,
                recipients=(queue.QueuedRecipient("bob@b.test"),)), 5 * 86400)
    finally:
        engine.dispose()
    before = delivered_count(a)
    cpu = (cpu_seconds(a), cpu_seconds(_NODES["b"]))
    began = time.perf_counter()
    a.ctl("queue", "flush")
    accepted = 0.0
    while time.perf_counter() < began + seconds:
        accepted = delivered_count(a) - before
        if accepted >= len(bodies):
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - began
    cpu = (cpu_seconds(a) - cpu[0], cpu_seconds(_NODES["b"]) - cpu[1])
    return {"sent": len(bodies), "accepted": int(accepted), "end_s": elapsed, "end_rate": accepted / elapsed,
            "cpu_a": 1000 * cpu[0] / len(bodies), "cpu_b": 1000 * cpu[1] / len(bodies)}


_NODES: dict = {}
OUTBOUND_OPTIONS: dict = {}  # [outbound] keys for node A from --outbound KEY=VALUE (default: the defaults)


def bench_delivery(messages: int, seconds: float, profile: str = "") -> None:
    corpus = sample_messages(min(messages, 640))
    print(f"bench/outbound delivery: {len(corpus)} real messages re-addressed alice@a.test -> bob@b.test, "
          f"{messages} per level; DKIM signing, STARTTLS, fsync on in both nodes")
    work = tempfile.mkdtemp(prefix="bench-outbound-")
    dns_server, a, b = start_nodes(work)
    _NODES["b"] = b
    try:
        print(f"{'sessions':>8} {'sent':>6} {'accepted':>8} {'submit msg/s':>12} {'end-to-end msg/s':>16} "
              f"{'lag s':>6}")
        number = 0
        for sessions in (1, 8):
            bodies = []
            for _ in range(messages):
                bodies.append(as_alice(corpus[number % len(corpus)], number))
                number += 1
            spies = [start_profile(profile, node, f"{name}-{sessions}", seconds / 3)
                     for name, node in (("a", a), ("b", b))]
            cpu = (cpu_seconds(a), cpu_seconds(b))
            row = run_level(a, bodies, sessions, seconds)
            cpu = (cpu_seconds(a) - cpu[0], cpu_seconds(b) - cpu[1])
            print(f"{sessions:>8} {row['sent']:>6} {row['accepted']:>8} {row['submit_rate']:>12.1f} "
                  f"{row['end_rate']:>16.1f} {row['end_s'] - row['submit_s']:>6.1f}"
                  f"   CPU ms/msg: A {1000 * cpu[0] / max(1, row['sent']):.1f}, "
                  f"B {1000 * cpu[1] / max(1, row['sent']):.1f}", flush=True)
            for spy in spies:
                if spy is not None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                    spy.wait()
            if row["accepted"] < row["sent"]:
                print(f"  note: only {row['accepted']} of {row['sent']} accepted within {seconds:.0f} s")
        bodies = []
        for _ in range(messages):
            bodies.append(as_alice(corpus[number % len(corpus)], number))
            number += 1
        spies = [start_profile(profile, node, f"{name}-drain", seconds / 3) for name, node in (("a", a), ("b", b))]
        row = drain_level(a, bodies, seconds)
        for spy in spies:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait()
        print(f"queue drain: {row['sent']} messages already queued in A, then `queue flush`: "
              f"{row['accepted']} accepted by B in {row['end_s']:.2f} s = {row['end_rate']:.1f} msg/s "
              f"(A CPU {row['cpu_a']:.1f} ms/msg, B {row['cpu_b']:.1f} ms/msg)", flush=True)
    finally:
        for node in (a, b):
            node.stop()
        dns_server.stop()
        shutil.rmtree(work, ignore_errors=True)


# -- part 2: claim cost ------------------------------------------------------------------------

def fill_queue(engine, count: int, now: float) -> float:
    from mailserverd.outbound import queue

    body = b"From: alice@a.test\r\nTo: x@remote.test\r\nSubject: queued\r\n\r\n" + b"x" * 2000 + b"\r\n"
    began = time.perf_counter()
    for number in range(count):
        message = queue.NewMessage(id=queue.new_queue_id(), sender="alice@a.test", body=body,
                                   recipients=(queue.QueuedRecipient(f"user{number}@remote{number % 50}.test"),),
                                   created_at=now)
        queue.enqueue(engine, message, 5 * 86400)
    return time.perf_counter() - began


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def bench_claims(url: str, label: str, queued: int) -> None:
    from sqlalchemy import text

    from mailserverd.outbound import queue
    from mailserverd.outbound.types import RecipientResult
    from mailserverd.store import make_engine, schema

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            schema.migrate(conn, "directory")
        now = time.time()
        fill = fill_queue(engine, queued, now)
        timings, cpu, claimed = [], [], []
        began = time.perf_counter()
        while True:
            started, started_cpu = time.perf_counter(), time.thread_time()
            batch = queue.claim(engine, "bench", now, CLAIM_BATCH)
            timings.append(time.perf_counter() - started)
            cpu.append(time.thread_time() - started_cpu)
            if not batch:
                break
            claimed.extend(batch)
        total = time.perf_counter() - began
        record_times = []
        for item in claimed[:RECORDED]:
            results = tuple(RecipientResult(recipient=r.address, status="delivered", code=250, enhanced="2.0.0",
                                            text="ok", remote_host="mx.remote.test") for r in item.recipients)
            started = time.perf_counter()
            queue.record(engine, item, queue.Outcome(results=results), now)
            record_times.append(time.perf_counter() - started)
        with engine.connect() as conn:
            left = conn.execute(text("SELECT count(*) FROM outbound_deliveries")).scalar()
        full = timings[:max(1, len(timings) // 10)]  # the first tenth: the queue is still near full
        print(f"{label:<10} {queued:>7} {queued / fill:>10.0f} {1000 * percentile(full, 0.5):>9.2f} "
              f"{1000 * percentile(timings, 0.5):>9.2f} {1000 * percentile(timings, 0.99):>9.2f} "
              f"{len(claimed) / total:>10.0f} {1000 * percentile(record_times, 0.5):>10.2f} {left:>7} "
              f"{1000 * percentile(cpu[:max(1, len(cpu) // 10)], 0.5):>9.2f} {1000 * percentile(cpu, 0.5):>8.2f}",
              flush=True)
    finally:
        engine.dispose()


def bench_claim_cost(queued: int) -> None:
    print(f"\nbench/outbound claim cost: {queued} queued messages (1 recipient each, 2 kB), claims of "
          f"{CLAIM_BATCH} until all are leased, then {min(RECORDED, queued)} delivered outcomes recorded")
    print(f"{'database':<10} {'queued':>7} {'enqueue/s':>10} {'p50 full':>9} {'p50 ms':>9} {'p99 ms':>9} "
          f"{'claimed/s':>10} {'record ms':>10} {'left':>7} {'CPU full':>9} {'CPU p50':>8}")
    print("(ms per claim of 16; 'full': the first tenth of the claims, the queue still near full; "
          "CPU: the claiming thread's CPU time, without the fsync wait)")
    work = tempfile.mkdtemp(prefix="bench-claims-")
    try:
        bench_claims(f"sqlite:///{work}/directory.sqlite3", "sqlite", queued)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        from tests.support.pg import PostgresServer, PostgresUnavailable
    except ImportError as exc:
        print(f"postgresql skipped: {exc}")
        return
    try:
        server = PostgresServer()
    except PostgresUnavailable as exc:
        print(f"postgresql skipped: {exc}")
        return
    server.start()
    try:
        bench_claims(server.new_database(), "postgresql", queued)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=400, help="messages per delivery level")
    parser.add_argument("--queued", type=int, default=10000, help="queued messages for the claim cost")
    parser.add_argument("--seconds", type=float, default=60.0, help="deadline per delivery level")
    parser.add_argument("--profile", default="",
                        help="py-spy both nodes during each level into PREFIX-{a,b}-<sessions>.txt")
    parser.add_argument("--skip-claims", action="store_true", help="only the delivery part")
    parser.add_argument("--outbound", action="append", default=[], metavar="KEY=VALUE",
                        help="an [outbound] setting for node A, e.g. max_per_destination=20")
    args = parser.parse_args()
    OUTBOUND_OPTIONS.update(item.split("=", 1) for item in args.outbound)
    bench_delivery(args.messages, args.seconds, args.profile)
    if not args.skip_claims:
        bench_claim_cost(args.queued)


if __name__ == "__main__":
    main()
