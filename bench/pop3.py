#!/usr/bin/env python3
"""bench/pop3: messages/s and bytes/s retrieved over POP3, mailserverd vs Dovecot.

Each client logs in to its own account with poplib (USER/PASS), sends STAT,
RETRs every message of a mailbox of N real messages (../shared/corpus, or
tests/data when absent) and QUITs, in keep mode (no DELE); it repeats that
session --passes times. Levels: 1 and 8 concurrent clients (8 clients run as
2 processes x 4 threads, so the client is not held to one core by the GIL).

Servers, loaded with the same N messages per account:
  mailserverd  a fresh one on a free port (imported with `mailserverctl user import`)
  dovecot      the peer ../shared/tools/peers-setup starts on 127.0.0.1:10110: the
               Maildirs of testuserK@example.test are emptied and the messages
               written into Maildir/new as vmail-owned files (needs root; skipped
               with a note otherwise or when Dovecot is not running)

Before timing, every account logs in once (USER/PASS, STAT, QUIT) on both
servers: Dovecot moves new/ to cur/ and builds its index, mailserverd fills its
password cache (argon2). Those cold logins are reported apart.
Bounded: N x passes RETRs per client and --seconds per level and server.

    ../shared/tools/peers-setup        # once, as root
    .venv/bin/python bench/pop3.py [--messages 500] [--passes 5] [--seconds 30]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import poplib
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from bench.corpus import sample_messages  # noqa: E402

DOVECOT = ("127.0.0.1", 10110)
DOVECOT_MAIL = "/tmp/dovecot-mail"
PASSWORD = "secret-pw-1"
LEVELS = (1, 8)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_mbox(path: str, messages: list[bytes]) -> None:
    from mailserverd.mailfiles import MboxWriter

    with open(path, "wb") as handle, MboxWriter(handle) as writer:
        for raw in messages:
            writer.write(raw)


def start_mailserverd(work: str, users: list[str], mbox: str) -> tuple[subprocess.Popen, tuple[str, int]]:
    """A fresh data dir; each user gets the mbox imported into INBOX before the daemon starts."""
    port = free_port()
    conf = os.path.join(work, "m.conf")
    with open(conf, "w") as handle:
        handle.write(f"[server]\nhostname = mx.bench.test\ndata_dir = {work}/data\n"
                     f"[listen]\npop3 = 127.0.0.1:{port}\n")  # the defaults (8 clients < 20 per IP)
    ctl = [sys.executable, "-m", "mailserverd.cli.ctl", "-c", conf]
    subprocess.run(ctl + ["domain", "add", "example.test"], check=True, capture_output=True)
    for user in users:
        subprocess.run(ctl + ["user", "add", user, "--password", PASSWORD], check=True, capture_output=True)
        subprocess.run(ctl + ["user", "import", user, mbox], check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "mailserverd.cli.daemon", "-c", conf],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "mailserverd ready" in line:
            break
    else:
        proc.wait()
        raise SystemExit(f"bench/pop3: mailserverd did not start (exit {proc.returncode})")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
    return proc, ("127.0.0.1", port)


def dovecot_note() -> str | None:
    """Why the Dovecot side cannot run, or None when it can."""
    try:
        with socket.create_connection(DOVECOT, timeout=2):
            pass
    except OSError:
        return "Dovecot POP3 not running on 127.0.0.1:10110 (run ../shared/tools/peers-setup)"
    if os.geteuid() != 0:
        return "loading Dovecot's Maildirs needs root (files owned by vmail)"
    try:
        pwd.getpwnam("vmail")
    except KeyError:
        return "no vmail user (run ../shared/tools/peers-setup)"
    return None


def dovecot_home(user: str) -> str:
    return os.path.join(DOVECOT_MAIL, user)


def load_dovecot(users: list[str], messages: list[bytes]) -> None:
    """Empty each user's home (Maildir and Dovecot's index), then deliver the
    messages into Maildir/new the way Postfix's virtual agent does: LF line
    ends, written in tmp/, renamed into new/, owned by vmail."""
    vmail = pwd.getpwnam("vmail")
    host = "bench-pop3"
    for user in users:
        home = dovecot_home(user)
        shutil.rmtree(home, ignore_errors=True)
        maildir = os.path.join(home, "Maildir")
        for path in (home, maildir) + tuple(os.path.join(maildir, sub) for sub in ("tmp", "new", "cur")):
            os.makedirs(path, mode=0o700, exist_ok=True)
            os.chown(path, vmail.pw_uid, vmail.pw_gid)
        now = time.time()
        for number, raw in enumerate(messages):
            name = f"{int(now)}.M{int(now * 1e6) % 1000000:06d}P{os.getpid()}Q{number}.{host}"
            temporary = os.path.join(maildir, "tmp", name)
            with open(temporary, "wb") as handle:
                handle.write(raw.replace(b"\r\n", b"\n"))
            os.chown(temporary, vmail.pw_uid, vmail.pw_gid)
            os.rename(temporary, os.path.join(maildir, "new", name))


def empty_dovecot(users: list[str]) -> None:
    for user in users:
        shutil.rmtree(dovecot_home(user), ignore_errors=True)


def cold_logins(address, users: list[str]) -> tuple[float, list[tuple[int, int]]]:
    """USER/PASS, STAT, QUIT once per user, one after another; returns the
    seconds taken and each mailbox's (count, octets)."""
    stats = []
    began = time.perf_counter()
    for user in users:
        client = poplib.POP3(*address, timeout=120)
        client.user(user)
        client.pass_(PASSWORD)
        stats.append(client.stat())
        client.quit()
    return time.perf_counter() - began, stats


def _worker(address, users, passes, seconds, ready, start, results):
    """One process: a thread per user, each running `passes` sessions that
    RETR every message. Puts (messages, octets, errors, client CPU s) on results."""
    totals = {"messages": 0, "octets": 0, "errors": []}
    lock = threading.Lock()
    ready.put(os.getpid())
    start.wait()
    deadline = time.monotonic() + seconds
    cpu_began = time.process_time()

    def client(user):
        messages = octets = 0
        try:
            for _ in range(passes):
                if time.monotonic() >= deadline:
                    break
                session = poplib.POP3(*address, timeout=60)
                session.user(user)
                session.pass_(PASSWORD)
                count, _size = session.stat()
                for number in range(1, count + 1):
                    if time.monotonic() >= deadline:
                        break
                    _reply, _lines, size = session.retr(number)
                    messages += 1
                    octets += size
                session.quit()
        except (OSError, poplib.error_proto) as exc:
            with lock:
                totals["errors"].append(f"{user}: {exc}")
        with lock:
            totals["messages"] += messages
            totals["octets"] += octets

    threads = [threading.Thread(target=client, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put((totals["messages"], totals["octets"], totals["errors"],
                 time.process_time() - cpu_began))


def run_level(address, users: list[str], passes: int, seconds: float) -> dict:
    """len(users) concurrent clients; the clock starts once every worker process is up."""
    processes = min(2, len(users))
    ready, results = multiprocessing.Queue(), multiprocessing.Queue()
    start = multiprocessing.Event()
    workers = [multiprocessing.Process(target=_worker, args=(
        address, users[index::processes], passes, seconds, ready, start, results))
        for index in range(processes)]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get()
    began = time.perf_counter()
    start.set()
    row = {"messages": 0, "octets": 0, "errors": [], "cpu": 0.0}
    for _ in workers:
        messages, octets, errors, cpu = results.get()
        row["messages"] += messages
        row["octets"] += octets
        row["errors"] += errors
        row["cpu"] += cpu
    elapsed = time.perf_counter() - began
    for worker in workers:
        worker.join()
    row["seconds"] = elapsed
    row["per_s"] = row["messages"] / elapsed
    row["mb_s"] = row["octets"] / elapsed / 1e6
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=500, help="messages per account (default 500)")
    parser.add_argument("--passes", type=int, default=5,
                        help="sessions per client, each RETRing every message (default 5)")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="time limit per level and server (default 30)")
    parser.add_argument("--first-user", type=int, default=81,
                        help="accounts testuserK..testuserK+7@example.test (default 81; "
                             "bench/smtp.py delivers to 1..16)")
    args = parser.parse_args()
    users = [f"testuser{n}@example.test" for n in range(args.first_user, args.first_user + max(LEVELS))]
    messages = sample_messages(args.messages)
    corpus_bytes = sum(len(raw) for raw in messages)
    work = tempfile.mkdtemp(prefix="bench-pop3-")
    mbox = os.path.join(work, "sample.mbox")
    write_mbox(mbox, messages)
    note = dovecot_note()
    loading = time.perf_counter()
    proc, ours = start_mailserverd(work, users, mbox)
    print(f"mailserverd: {len(users)} x {len(messages)} messages imported and daemon started "
          f"in {time.perf_counter() - loading:.1f} s", flush=True)
    targets = [("mailserverd", ours)]
    if note is None:
        load_dovecot(users, messages)
        targets.append(("dovecot", DOVECOT))
    else:
        print(f"note: {note}; mailserverd only")
    table = {}
    try:
        print(f"bench/pop3: {len(messages)} real messages per account ({corpus_bytes / 1e6:.1f} MB), "
              f"keep mode, {args.passes} passes per client, up to {args.seconds:.0f} s per level")
        for name, address in targets:
            took, stats = cold_logins(address, users)
            counts = sorted({count for count, _ in stats})
            octets = sorted({size for _, size in stats})
            print(f"{name}: cold first login + STAT + QUIT of {len(users)} accounts: {took:.2f} s; "
                  f"STAT says {counts} messages, {octets} octets per mailbox", flush=True)
        print(f"{'server':<12} {'clients':>7} {'msgs':>6} {'msg/s':>8} {'MB/s':>7} "
              f"{'secs':>6} {'client CPU s':>12} {'errors':>6}")
        for clients in LEVELS:
            for name, address in targets:
                row = run_level(address, users[:clients], args.passes, args.seconds)
                table[(name, clients)] = row
                print(f"{name:<12} {clients:>7} {row['messages']:>6} {row['per_s']:>8.0f} "
                      f"{row['mb_s']:>7.1f} {row['seconds']:>6.1f} {row['cpu']:>12.1f} "
                      f"{len(row['errors']):>6}", flush=True)
                for error in row["errors"][:3]:
                    print(f"  error: {error}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
        if note is None:
            empty_dovecot(users)
    if len(targets) == 2:
        for clients in LEVELS:
            ratio = table[("mailserverd", clients)]["per_s"] / max(table[("dovecot", clients)]["per_s"], 1e-9)
            print(f"ratio mailserverd/dovecot at {clients} clients: {ratio:.2f}")


if __name__ == "__main__":
    main()
