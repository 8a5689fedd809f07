#!/usr/bin/env python3
"""bench/imap: IMAP throughput and memory, mailserverd vs Dovecot, in one run.

1. imaptest stress (Dovecot's load generator with its own state checker; it is
   NOT part of this repository: build it locally from github dovecot/imaptest
   at 924f619 and pass --imaptest PATH or set $IMAPTEST) at 10 and 50 clients
   for --seconds each, one account, a fixed seed, messages from the corpus:
   operations per second for Login, Select, Fetch, Store, Append, Expunge, and
   the checker's error count, side by side with Dovecot (127.0.0.1:10143 from
   ../shared/tools/peers-setup).
2. FETCH 1:* (ENVELOPE) over a mailbox of --messages real messages, with
   imaplib, twice (cold, then warm), against both servers. Dovecot's copy is
   written into the Maildir of testuser100@example.test (needs root).
3. The daemon's resident memory with --idle IMAP connections all in IDLE.

    ../shared/tools/peers-setup                # once, as root
    IMAPTEST=/path/to/imaptest .venv/bin/python bench/imap.py [--seconds 30]

Every phase is bounded in count and time. Without imaptest, phase 1 is
skipped with a note; without Dovecot, its columns are.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from bench.corpus import sample_messages  # noqa: E402
from bench.pop3 import dovecot_note, empty_dovecot, free_port, load_dovecot, write_mbox  # noqa: E402

DOVECOT = ("127.0.0.1", 10143)
PASSWORD = "secret-pw-1"
STRESS_USER = "testuser2@example.test"
ENVELOPE_USER = "testuser100@example.test"
IDLE_USER = "testuser3@example.test"
OPS = ("Logi", "Sele", "Fetc", "Stor", "Appe", "Expu")


def start_mailserverd(work: str, mbox: str, big_mbox: str, idle_mbox: str):
    port = free_port()
    conf = os.path.join(work, "m.conf")
    with open(conf, "w") as handle:
        handle.write(f"[server]\nhostname = mx.bench.test\ndata_dir = {work}/data\n"
                     f"[listen]\nimap = 127.0.0.1:{port}\n"
                     "[limits]\nmax_connections_per_ip = 0\n"
                     "[imap]\nmax_userip_connections = 100000\n")
    ctl = [sys.executable, "-m", "mailserverd.cli.ctl", "-c", conf]
    subprocess.run(ctl + ["domain", "add", "example.test"], check=True, capture_output=True)
    for user, source in ((STRESS_USER, mbox), (ENVELOPE_USER, big_mbox), (IDLE_USER, idle_mbox)):
        subprocess.run(ctl + ["user", "add", user, "--password", PASSWORD], check=True, capture_output=True)
        subprocess.run(ctl + ["user", "import", user, source], check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "mailserverd.cli.daemon", "-c", conf],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if "mailserverd ready" in line:
            break
        if time.monotonic() > deadline:
            raise SystemExit("mailserverd did not start")
    # Keep reading its log: a full pipe would block the daemon's reactor.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, ("127.0.0.1", port)


def imaptest_stress(binary: str, address, clients: int, seconds: int, mbox: str) -> dict:
    """imaptest's Totals line divided by the run time, plus its checker errors."""
    command = [binary, f"host={address[0]}", f"port={address[1]}", f"user={STRESS_USER}",
               f"pass={PASSWORD}", f"clients={clients}", f"secs={seconds}", "seed=42", f"mbox={mbox}"]
    run = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=seconds + 120,
                         cwd=tempfile.gettempdir())
    out = run.stdout
    lines = out.splitlines()
    totals = lines.index("Totals:") if "Totals:" in lines else None
    if totals is None:
        return {"error": (out + run.stderr)[-300:]}
    names = lines[totals + 1].split()
    counts = [int(value) for value in lines[totals + 4].split()]
    result = {name: count / seconds for name, count in zip(names, counts)}
    result["errors"] = sum(1 for line in lines if line.startswith("Error"))
    return result


def fetch_envelopes(address, user: str) -> tuple[float, float, int]:
    client = imaplib.IMAP4(*address)
    client.login(user, PASSWORD)
    typ, data = client.select("INBOX", readonly=True)
    count = int(data[0])
    times = []
    for _ in range(2):
        started = time.perf_counter()
        client.fetch("1:*", "(ENVELOPE)")
        times.append(time.perf_counter() - started)
    client.logout()
    return times[0], times[1], count


def idle_memory(address, pid: int, connections: int, parallel: int = 250) -> tuple[int, int]:
    """RSS (KiB) of the daemon before and with `connections` sessions in IDLE.

    Sessions are set up `parallel` at a time with non-blocking sockets (one
    thread, selectors): each connects, pipelines LOGIN, SELECT and IDLE, and
    counts once the server's "+ idling" arrives.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, connections + 1024), hard))
    before = rss_kib(pid)
    request = b"a LOGIN %s %s\r\nb SELECT INBOX\r\nc IDLE\r\n" % (IDLE_USER.encode(), PASSWORD.encode())
    selector = selectors.DefaultSelector()
    idling, pending, started = [], {}, 0
    deadline = time.monotonic() + 60 + connections / 20
    try:
        while len(idling) < connections:
            while started < connections and len(pending) < parallel:
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(address)
                pending[sock] = b""
                selector.register(sock, selectors.EVENT_WRITE)
                started += 1
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(idling)} of {connections} sessions idle in time")
            for key, events in selector.select(timeout=5):
                sock = key.fileobj
                if events & selectors.EVENT_WRITE:
                    sock.sendall(request)  # small: fits the empty send buffer
                    selector.modify(sock, selectors.EVENT_READ)
                    continue
                chunk = sock.recv(65536)
                if not chunk:
                    raise SystemExit(f"server closed a session; it sent {pending[sock][-300:]!r}")
                pending[sock] += chunk
                if b"+ idling" in pending[sock]:
                    selector.unregister(sock)
                    del pending[sock]
                    idling.append(sock)
        return before, rss_kib(pid)
    finally:
        for sock in idling + list(pending):
            sock.close()
        selector.close()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        return int(re.search(r"VmRSS:\s+(\d+)", handle.read()).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--imaptest", default=os.environ.get("IMAPTEST", ""))
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--clients", default="10,50")
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--idle", type=int, default=5000)
    parser.add_argument("--phases", default="stress,envelope,idle",
                        help="comma-separated subset of stress,envelope,idle")
    parser.add_argument("--no-peer", action="store_true", help="measure mailserverd only")
    parser.add_argument("--profile", default="",
                        help="py-spy the daemon during each stress run into PREFIX-<clients>.txt "
                             "(collapsed stacks; needs py-spy and ptrace)")
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    note = "not measured (--no-peer)" if args.no_peer else dovecot_note()
    if note is None:
        note = None if _reachable(DOVECOT) else "Dovecot IMAP is not listening on 127.0.0.1:10143"
    messages = sample_messages(args.messages)
    # Repeat the corpus with distinct Message-IDs when asked for more than it has.
    while len(messages) < args.messages:
        extra = len(messages)
        messages += [b"X-Bench-Copy: %d\r\n" % (extra + i) + raw
                     for i, raw in enumerate(messages[:args.messages - extra])]
    with tempfile.TemporaryDirectory() as work:
        small, big = os.path.join(work, "stress.mbox"), os.path.join(work, "big.mbox")
        tiny = os.path.join(work, "idle.mbox")
        write_mbox(small, messages[:1000])
        write_mbox(big, messages if "envelope" in phases else messages[:10])
        write_mbox(tiny, messages[:10])
        proc, ours = start_mailserverd(work, small, big, tiny)
        try:
            if note is None and "envelope" in phases:
                empty_dovecot([ENVELOPE_USER])
                load_dovecot([ENVELOPE_USER], messages)
            if "stress" in phases:
                stress_phase(args, proc, ours, small, note)
            if "idle" in phases:  # before the big FETCH, whose caches would count as the daemon's base
                idle_phase(ours, proc, args.idle)
            if "envelope" in phases:
                envelope_phase(ours, note)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            if note is None and "envelope" in phases:
                empty_dovecot([ENVELOPE_USER])


def stress_phase(args, proc, ours, small: str, note) -> None:
    print(f"imaptest stress, {args.seconds} s per run, one account, ops/s "
          f"(dovecot: {note or 'measured'})")
    if not args.imaptest or not os.path.exists(args.imaptest):
        print("  skipped: no imaptest binary (--imaptest PATH or $IMAPTEST)")
    else:
        for clients in (int(c) for c in args.clients.split(",")):
            spy = start_profile(args.profile, clients, proc.pid, args.seconds)
            cpu = cpu_seconds(proc.pid)
            mine = imaptest_stress(args.imaptest, ours, clients, args.seconds, small)
            cpu = cpu_seconds(proc.pid) - cpu
            if spy:
                spy.wait(timeout=60)
            theirs = imaptest_stress(args.imaptest, DOVECOT, clients, args.seconds, small) \
                if note is None else {}
            print(f"  clients={clients}")
            for op in OPS:
                ratio = (f"{mine.get(op, 0) / theirs[op]:.2f}x" if theirs.get(op) else "-")
                print(f"    {op}: mailserverd {mine.get(op, 0):8.1f}  dovecot "
                      f"{theirs.get(op, 0):8.1f}  ratio {ratio}")
            print(f"    checker errors: mailserverd {mine.get('errors')}  "
                  f"dovecot {theirs.get('errors', '-')}")
            ops = sum(mine.get(op, 0) for op in OPS) * args.seconds
            if ops:
                print(f"    mailserverd CPU: {cpu:.1f} s for {ops:.0f} commands "
                      f"({1000 * cpu / ops:.2f} ms per command counted above)")
            if mine.get("error"):
                print(f"    imaptest output: {mine['error']}")


def envelope_phase(ours, note) -> None:
    cold, warm, count = fetch_envelopes(ours, ENVELOPE_USER)
    print(f"FETCH 1:* (ENVELOPE) over {count} messages: mailserverd cold {cold:.2f} s, "
          f"warm {warm:.2f} s")
    if note is None:
        cold, warm, count = fetch_envelopes(DOVECOT, ENVELOPE_USER)
        print(f"  dovecot ({count} messages): cold {cold:.2f} s, warm {warm:.2f} s")


def idle_phase(ours, proc, count: int) -> None:
    started = time.monotonic()
    before, during = idle_memory(ours, proc.pid, count)
    print(f"memory with {count} IDLE sessions (set up in {time.monotonic() - started:.1f} s): "
          f"{before} KiB idle daemon -> {during} KiB, {(during - before) / 1024:.1f} MiB added "
          f"({(during - before) / count:.1f} KiB per session)")


def start_profile(prefix: str, clients: int, pid: int, seconds: int):
    if not prefix:
        return None
    spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return subprocess.Popen([spy if os.path.exists(spy) else "py-spy", "record", "--format", "raw", "--threads", "--idle",
                             "-r", "200", "-d", str(seconds), "-p", str(pid),
                             "-o", f"{prefix}-{clients}.txt"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _reachable(address) -> bool:
    try:
        socket.create_connection(address, timeout=2).close()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
