#!/usr/bin/env python3
"""bench/smtp: delivered messages/s and DATA-to-250 latency, mailserverd vs Postfix.

Sends real messages from ../shared/corpus (tests/data when absent) over 1,
16 and 64 concurrent SMTP sessions with smtplib, fsync on in both servers,
to a fresh mailserverd and to the Postfix peer that ../shared/tools/peers-setup
starts on 127.0.0.1:12625 (skipped with a note when it is not running).
Bounded by --messages per level and --seconds per level.

    ../shared/tools/peers-setup        # once, as root
    .venv/bin/python bench/smtp.py [--messages 1500] [--seconds 30] [--chain NAMES]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from bench.corpus import sample_messages  # noqa: E402

POSTFIX = ("127.0.0.1", 12625)
USERS = [f"testuser{n}@example.test" for n in range(1, 17)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mailserverd(work: str, chain: str | None = None) -> tuple[subprocess.Popen, tuple[str, int]]:
    port = free_port()
    conf = os.path.join(work, "m.conf")
    with open(conf, "w") as handle:
        handle.write(f"[server]\nhostname = mx.bench.test\ndata_dir = {work}/data\n"
                     f"[listen]\nsmtp = 127.0.0.1:{port}\n"  # the defaults: loopback is trusted
                     + (f"[checks]\nchain = {chain}\n" if chain is not None else ""))
    ctl = [sys.executable, "-m", "mailserverd.cli.ctl", "-c", conf]
    subprocess.run(ctl + ["domain", "add", "example.test"], check=True, capture_output=True)
    for user in USERS:
        subprocess.run(ctl + ["user", "add", user, "--password", "secret-pw-1"], check=True,
                       capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "mailserverd.cli.daemon", "-c", conf],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "mailserverd ready" in line:
            break
    else:
        proc.wait()
        raise SystemExit(f"bench/smtp: mailserverd did not start (exit {proc.returncode})")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
    return proc, ("127.0.0.1", port)


def _worker(address, messages, sessions, quota, deadline, results):
    """One process driving `sessions` threads; puts (count, latencies) on results."""
    latencies = []
    lock = threading.Lock()
    remaining = [quota]

    def session(index):
        client = smtplib.SMTP(*address, timeout=60)
        client.ehlo("bench.client")
        number = index
        while time.time() < deadline:
            with lock:
                if remaining[0] <= 0:
                    break
                remaining[0] -= 1
            # A header unique to this send: mailserverd stores identical bodies once
            # (content-addressed blobs), so resending the corpus verbatim would skip
            # its synced blob write and flatter it against Postfix.
            body = b"X-Bench-Id: %d.%d.%d\r\n" % (os.getpid(), sessions, number) + \
                messages[number % len(messages)]
            number += sessions
            client.mail("sender@bench.client")
            client.rcpt(USERS[number % len(USERS)])
            started = time.perf_counter()
            code, _ = client.data(body)
            if code == 250:
                with lock:
                    latencies.append(time.perf_counter() - started)
        client.quit()
    threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(latencies)


def run_level(address, messages, sessions, limit, seconds) -> dict:
    processes = 2 if sessions > 1 else 1
    results = multiprocessing.Queue()
    deadline = time.time() + seconds
    began = time.perf_counter()
    workers = [multiprocessing.Process(target=_worker, args=(
        address, messages, max(1, sessions // processes), limit // processes, deadline, results))
        for _ in range(processes)]
    for worker in workers:
        worker.start()
    latencies = []
    for _ in workers:
        latencies.extend(results.get())
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    if not latencies:
        return {"per_s": 0.0, "p50": 0.0, "p99": 0.0, "n": 0}
    return {"per_s": len(latencies) / elapsed, "n": len(latencies),
            "p50": 1000 * latencies[len(latencies) // 2],
            "p99": 1000 * latencies[max(0, int(len(latencies) * 0.99) - 1)]}


def postfix_up() -> bool:
    try:
        with socket.create_connection(POSTFIX, timeout=2):
            return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--chain", default=None,
                        help="[checks] chain for mailserverd (default: the configuration's default chain)")
    args = parser.parse_args()
    messages = sample_messages(640)  # CRLF bytes: smtplib sends bytes as they are
    work = tempfile.mkdtemp(prefix="bench-smtp-")
    proc, ours = start_mailserverd(work, args.chain)
    from mailserverd import config
    chain = args.chain or next(key.default for key in config.SCHEMA["checks"][1] if key.name == "chain")
    print(f"bench/smtp: mailserverd check chain: {chain}")
    targets = [("mailserverd", ours)] + ([("postfix", POSTFIX)] if postfix_up() else [])
    if len(targets) == 1:
        print("note: Postfix peer not running on 127.0.0.1:12625 (run ../shared/tools/peers-setup)")
    print(f"bench/smtp: {len(messages)} real messages, up to {args.messages} per level, "
          f"fsync on in both servers")
    print(f"{'server':<12} {'sessions':>8} {'msgs':>6} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    table = {}
    try:
        for sessions in (1, 16, 64):
            for name, address in targets:
                row = run_level(address, messages, sessions, args.messages, args.seconds)
                table[(name, sessions)] = row
                print(f"{name:<12} {sessions:>8} {row['n']:>6} {row['per_s']:>8.0f} "
                      f"{row['p50']:>8.1f} {row['p99']:>8.1f}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    if len(targets) == 2:
        for sessions in (1, 16, 64):
            ratio = table[("mailserverd", sessions)]["per_s"] / max(table[("postfix", sessions)]["per_s"], 1e-9)
            print(f"ratio mailserverd/postfix at {sessions} sessions: {ratio:.2f}")


if __name__ == "__main__":
    main()
