#!/usr/bin/env python3
"""bench/profile: where the daemon's CPU goes under SMTP, POP3 and IMAP load.

Starts a fresh mailserverd (SMTP, POP3, IMAP on loopback), drives one bounded
load phase at a time and meanwhile samples the daemon with py-spy (pip install
py-spy; needs ptrace, i.e. root or CAP_SYS_PTRACE). For each phase it prints
the daemon's CPU seconds (utime + stime from /proc) per operation and the
py-spy samples split into buckets by the frames on the stack:

  parse     SMTP/POP3/IMAP parsers, MIME analysis (mailserverd/{smtp,pop3,imap,mime})
  sql       SQLAlchemy and sqlite3 statement work, commit excluded
  commit    the SQL commit (with synchronous=FULL: the fsync of the WAL)
  rocksdb   blob reads and the synced blob batch (store/blobs.py)
  hops      reactor and thread plumbing (twisted.internet, threadpool, queue)
  socket    send()/recv() on the client sockets (loopback copies)
  auth      argon2 password verification
  logging   twisted.logger
  checks    the SMTP check chain (mailserverd/checks)
  other     everything else
  idle      a thread waiting (epoll, an empty queue, a condition): not CPU

Phases (bounded by --count):
  smtp    N messages over 16 sessions from 127.0.0.1 (corpus mail, unique)
  pop3    RETR of N messages, one client, keep mode
  imap    N rounds of: UID STORE +FLAGS (\\Flagged), FETCH n (BODY[]) (sets \\Seen), FETCH n ENVELOPE

    .venv/bin/python bench/profile.py [--count 600] [--phases smtp,pop3,imap] [--out DIR]
"""

from __future__ import annotations

import argparse
import collections
import imaplib
import os
import poplib
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from bench.corpus import sample_messages  # noqa: E402
from bench.smtp import free_port  # noqa: E402

PASSWORD = "secret-pw-1"
USER = "profile@example.test"
BUCKETS = ("parse", "sql", "commit", "rocksdb", "socket", "auth", "hops", "logging", "checks", "other", "idle")


def start(work: str, mbox: str, limits_off: bool = False, chain: str | None = None, extra: str = ""):
    ports = {name: free_port() for name in ("smtp", "pop3", "imap")}
    conf = os.path.join(work, "m.conf")
    with open(conf, "w") as handle:
        handle.write(f"[server]\nhostname = mx.bench.test\ndata_dir = {work}/data\n[listen]\n" +
                     "".join(f"{name} = 127.0.0.1:{port}\n" for name, port in ports.items()) +
                     ("[smtp]\nmessage_rate_per_ip = 0\n[limits]\nmax_connections_per_ip = 0\n"
                      if limits_off else "") +
                     (f"[checks]\nchain = {chain}\n" if chain is not None else "") + extra)
    ctl = [sys.executable, "-m", "mailserverd.cli.ctl", "-c", conf]
    subprocess.run(ctl + ["domain", "add", "example.test"], check=True, capture_output=True)
    subprocess.run(ctl + ["user", "add", USER, "--password", PASSWORD], check=True, capture_output=True)
    subprocess.run(ctl + ["user", "import", USER, mbox], check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "mailserverd.cli.daemon", "-c", conf],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "mailserverd ready" in line:
            break
    else:
        raise SystemExit("bench/profile: mailserverd did not start")
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, ports


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bucket_of(stack: str) -> str:
    frames = stack.split(";")
    joined = stack
    leaf = frames[-1]
    if any(word in leaf for word in ("doPoll", "Condition.wait", "Queue.get", "Event.wait",
                                     "Thread._wait_for_tstate_lock")):
        return "idle"
    if "argon2" in joined:
        return "auth"
    if "wakeUp" in joined:
        return "hops"
    if "writeSomeData" in joined or "Connection.doRead" in joined and "untilConcludes" in leaf:
        return "socket"
    if "twisted/logger" in joined or "(logging" in joined:
        return "logging"
    for frame in reversed(frames):  # the innermost frame that says what the work is
        if "blobs.py" in frame:
            return "rocksdb"
        if "commit" in frame and ("sqlalchemy" in frame or "sqlite" in frame or "engine/base" in frame):
            return "commit"
        if "sqlalchemy" in frame or "sqlite3" in frame:
            return "sql"
        if "mailserverd/checks" in frame:
            return "checks"
        if any(part in frame for part in ("mailserverd/smtp/parser", "mailserverd/smtp/data",
                                          "mailserverd/smtp/syntax", "mailserverd/mime",
                                          "mailserverd/imap/lexer", "mailserverd/imap/grammar",
                                          "mailserverd/imap/parser", "mailserverd/imap/framing",
                                          "mailserverd/pop3/protocol", "mailserverd/pop3/stuffing",
                                          "store/mail.py", "mailserverd/imap/fetch",
                                          "mailserverd/imap/responses")):
            return "parse"
    if "twisted/internet" in joined or "threadpool" in joined or "queue.py" in joined \
            or "threading.py" in joined:
        return "hops"
    return "other"


def summarize_raw(path: str) -> tuple[collections.Counter, collections.Counter]:
    buckets: collections.Counter = collections.Counter()
    leaves: collections.Counter = collections.Counter()
    with open(path) as handle:
        for line in handle:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            bucket = bucket_of(stack)
            buckets[bucket] += int(count)
            if bucket != "idle":
                leaves[stack.split(";")[-1]] += int(count)
    return buckets, leaves


def smtp_phase(ports, count, messages):
    sessions = 16
    remaining = [count]
    delivered = [0]
    refused: list[str] = []
    lock = threading.Lock()

    def session(index):
        client = smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=60)
        client.ehlo("bench.client")
        number = index
        while True:
            with lock:
                if remaining[0] <= 0:
                    break
                remaining[0] -= 1
            body = b"X-Bench-Id: p%d.%d\r\n" % (os.getpid(), number) + messages[number % len(messages)]
            number += sessions
            try:
                client.sendmail("sender@bench.client", [USER], body)
            except smtplib.SMTPException as exc:
                with lock:
                    refused.append(str(exc))
                client.rset()
            else:
                with lock:
                    delivered[0] += 1
        client.quit()
    threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if refused:
        print(f"smtp: {len(refused)} of {count} refused, e.g. {refused[0]}")
    return delivered[0]


def pop3_warmup(ports):
    """One login before sampling: the argon2 verify is then cached, as in bench/pop3.py."""
    session = poplib.POP3("127.0.0.1", ports["pop3"], timeout=60)
    session.user(USER)
    session.pass_(PASSWORD)
    session.quit()


def pop3_phase(ports, count, _messages):
    done = 0
    while done < count:
        session = poplib.POP3("127.0.0.1", ports["pop3"], timeout=60)
        session.user(USER)
        session.pass_(PASSWORD)
        total, _ = session.stat()
        for number in range(1, total + 1):
            if done >= count:
                break
            session.retr(number)
            done += 1
        session.quit()
    return done


def imap_phase(ports, count, _messages):
    client = imaplib.IMAP4("127.0.0.1", ports["imap"])
    client.login(USER, PASSWORD)
    typ, data = client.select("INBOX")
    exists = int(data[0])
    commands = 0
    for n in range(count):
        number = str(1 + n % exists)
        client.store(number, "+FLAGS", "(\\Flagged)")
        client.fetch(number, "(BODY[])")
        client.fetch(number, "(ENVELOPE)")
        commands += 3
    client.logout()
    return commands


def wait_idle(pid: int, limit: float = 90.0) -> float:
    """Wait (at most `limit` s) until the daemon uses under 5% of a core, so work left
    over from loading or an earlier phase (e.g. the full-text indexer catching up)
    is not counted in the next phase. Returns the seconds waited."""
    began = time.monotonic()
    while time.monotonic() - began < limit:
        before = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - before < 0.05:
            break
    return time.monotonic() - began


PHASES = {"smtp": (smtp_phase, "delivered message"), "pop3": (pop3_phase, "RETR"),
          "imap": (imap_phase, "IMAP command")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--phases", default="smtp,pop3,imap")
    parser.add_argument("--out", default=None, help="keep py-spy output here (default: discard)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="extra configuration, e.g. --set storage.analysis_workers=0")
    parser.add_argument("--gil", action="store_true",
                        help="sample only the thread holding the GIL (Python CPU; syscalls like "
                             "fsync, which release it, drop out)")
    parser.add_argument("--chain", default=None,
                        help="[checks] chain for the daemon (default: the configuration default)")
    parser.add_argument("--limits-off", action="store_true",
                        help="message_rate_per_ip = 0, max_connections_per_ip = 0 (default: the defaults)")
    args = parser.parse_args()
    messages = sample_messages(500)
    work = tempfile.mkdtemp(prefix="bench-profile-")
    out = args.out or work
    os.makedirs(out, exist_ok=True)
    mbox = os.path.join(work, "sample.mbox")
    from bench.pop3 import write_mbox
    write_mbox(mbox, messages)
    pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    extra = "".join(f"[{item.split('.', 1)[0]}]\n{item.split('.', 1)[1].split('=', 1)[0]} = "
                    f"{item.split('=', 1)[1]}\n" for item in args.set)
    proc, ports = start(work, mbox, args.limits_off, args.chain, extra)
    from mailserverd import config
    chain = args.chain or next(key.default for key in config.SCHEMA["checks"][1] if key.name == "chain")
    print(f"bench/profile: check chain {chain!r}")
    try:
        for name in args.phases.split(","):
            phase, unit = PHASES[name]
            if name in ("pop3", "imap"):
                pop3_warmup(ports)
            waited = wait_idle(proc.pid)
            if waited > 2:
                print(f"({name}: waited {waited:.0f} s for the daemon to go idle first)")
            raw = os.path.join(out, f"{name}.raw")
            spy = subprocess.Popen([pyspy, "record", "--pid", str(proc.pid), "--format", "raw",
                                    "--rate", str(args.rate), "--nonblocking", "-o", raw] +
                                   (["--gil"] if args.gil else []),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
            cpu0, wall0 = cpu_seconds(proc.pid), time.perf_counter()
            ops = phase(ports, args.count, messages)
            cpu, wall = cpu_seconds(proc.pid) - cpu0, time.perf_counter() - wall0
            spy.send_signal(2)
            spy.wait(timeout=60)
            print(f"{name}: {ops} x {unit} in {wall:.2f} s = {ops / wall:.0f}/s; daemon CPU "
                  f"{cpu:.2f} s = {1000 * cpu / ops:.2f} ms per {unit}")
            if os.path.exists(raw):
                buckets, leaves = summarize_raw(raw)
                idle = buckets.pop("idle", 0)
                total = sum(buckets.values()) or 1
                print(f"  busy samples ({total}; {idle} idle left out), split of the CPU per {unit}: " +
                      ", ".join(f"{b} {100 * buckets[b] / total:.0f}% "
                                f"({1000 * cpu / ops * buckets[b] / total:.2f} ms)"
                                for b in BUCKETS if buckets[b]))
                for leaf, samples in leaves.most_common(8):
                    print(f"    {100 * samples / total:4.1f}%  {leaf}")
            else:
                print("  (no py-spy samples: is py-spy installed and ptrace allowed?)")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
