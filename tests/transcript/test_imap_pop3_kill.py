"""kill -9 under IMAP STORE/EXPUNGE and POP3 DELE+QUIT load (issue 10): those
writes are group-committed on the store's writer thread, and every OK/+OK
must still mean durable: after a restart each acknowledged flag change and
expunge is there."""

from __future__ import annotations

import imaplib
import os
import poplib
import re
import threading
import time

from tests.support.daemon import PASSWORD

DATA = os.path.join(os.path.dirname(__file__), "..", "data")
IMAP_CLIENTS = 4
PER_CLIENT = 40  # UIDs each IMAP client works on (disjoint ranges)


def imap_login(server):
    client = imaplib.IMAP4(*server.address("imap"), timeout=10)
    client.login("alice@example.test", PASSWORD)
    return client


def test_kill_9_loses_no_acknowledged_store_expunge_or_pop3_update(mailserver_factory):
    """4 IMAP clients flag (and every 4th message also \\Deleted + UID EXPUNGE) and a POP3
    client deletes one message per session while the daemon is killed with SIGKILL; after a
    restart every STORE answered OK shows its flag, every UID EXPUNGE answered OK removed
    its message, and bob has lost at least as many messages as QUITs answered +OK."""
    server = mailserver_factory(listeners=("imap", "pop3"))
    mbox = os.path.join(DATA, "ham-200.mbox")
    server.ctl("user", "import", "alice@example.test", mbox)
    server.ctl("user", "import", "bob@example.test", mbox)
    flagged: list[int] = []
    expunged: list[int] = []
    expunge_sent: set[int] = set()  # an EXPUNGE may commit with its OK lost to the kill
    pop3_deleted = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def imap_worker(number: int):
        try:
            client = imap_login(server)
            client.select("INBOX")
            for uid in range(1 + number * PER_CLIENT, 1 + (number + 1) * PER_CLIENT):
                if stop.is_set():
                    return
                typ, _ = client.uid("STORE", str(uid), "+FLAGS", "(\\Flagged)")
                if typ != "OK":
                    return
                with lock:
                    flagged.append(uid)
                if uid % 4 == 0:
                    with lock:
                        expunge_sent.add(uid)
                    typ, _ = client.uid("STORE", str(uid), "+FLAGS", "(\\Deleted)")
                    typ2, _ = client.uid("EXPUNGE", str(uid))
                    if typ == typ2 == "OK":
                        with lock:
                            expunged.append(uid)
        except (OSError, imaplib.IMAP4.error, EOFError):
            return  # the server died under us: expected

    def pop3_worker():
        try:
            while not stop.is_set():
                session = poplib.POP3(*server.address("pop3"), timeout=10)
                session.user("bob@example.test")
                session.pass_(PASSWORD)
                session.dele(1)
                if session.quit().startswith(b"+OK"):
                    with lock:
                        pop3_deleted[0] += 1
        except (OSError, poplib.error_proto, EOFError):
            return

    threads = [threading.Thread(target=imap_worker, args=(n,), daemon=True) for n in range(IMAP_CLIENTS)]
    threads.append(threading.Thread(target=pop3_worker, daemon=True))
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with lock:
            if len(flagged) >= 60 and len(expunged) >= 10 and pop3_deleted[0] >= 5:
                break
        time.sleep(0.01)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(10)
    with lock:
        acked_flags, acked_expunges, acked_deletes = list(flagged), list(expunged), pop3_deleted[0]
    assert len(acked_flags) >= 60 and len(acked_expunges) >= 10 and acked_deletes >= 5

    server.restart()
    client = imap_login(server)
    client.select("INBOX", readonly=True)
    typ, data = client.uid("FETCH", "1:*", "(FLAGS)")
    flags_of = {}
    for line in data:
        match = re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", line if isinstance(line, bytes) else line[0])
        if match:
            flags_of[int(match.group(1))] = match.group(2).decode()
    client.logout()
    assert not [uid for uid in acked_expunges if uid in flags_of], "an acknowledged EXPUNGE was lost"
    # a flagged message must show \Flagged, or be gone because an EXPUNGE of it was sent
    lost = [uid for uid in acked_flags
            if "\\Flagged" not in flags_of.get(uid, "") and not (uid in expunge_sent and uid not in flags_of)]
    assert not lost, f"acknowledged STOREs lost: {lost}"
    session = poplib.POP3(*server.address("pop3"), timeout=10)
    session.user("bob@example.test")
    session.pass_(PASSWORD)
    count, _ = session.stat()
    session.quit()
    assert count <= 200 - acked_deletes
