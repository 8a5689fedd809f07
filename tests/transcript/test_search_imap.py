"""IMAP SEARCH through the full-text index against a real daemon (issue 12).

The daemon narrows text keys through its index; `NOT NOT key` cannot be
narrowed (query.py), so the same daemon answers it by the exhaustive scan:
the two must agree, before the index has caught up, after it has, after
`mailserverctl reindex`, with a corrupt index at start-up, and after a
kill -9 in the middle of heavy delivery (the durable queue replays). The
index queue depth and document count show on /metrics.
"""

from __future__ import annotations

import http.client
import imaplib
import os
import sqlite3
import threading
import time

from tests.support.daemon import PASSWORD

DATA = os.path.join(os.path.dirname(__file__), "..", "data")
NEEDLES = ["the", "linux", "razor", "jm@", "example.sourceforge.net", "Re:", "ilug",
           "spamassassin", "zzzz@", "irish linux", "tion", "subscri", "\"quoted", "net"]
KEYS = ("SUBJECT", "FROM", "TO", "BODY", "TEXT")


def _login(server):
    client = imaplib.IMAP4(*server.address("imap"), timeout=30)
    client.login("alice@example.test", PASSWORD)
    client.select("INBOX")
    return client


def _search(client, *criteria):
    typ, data = client.uid("SEARCH", "CHARSET", "UTF-8", *criteria)
    assert typ == "OK", data
    return set(data[0].split())


def _quoted(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _shards(server):
    return sorted(name for name in os.listdir(server.data_dir) if name.startswith("shard-") and name.endswith(".sqlite3"))


def _queue_depth(server) -> int:
    depth = 0
    for name in _shards(server):
        with sqlite3.connect(os.path.join(server.data_dir, name), timeout=30) as conn:
            depth += conn.execute("SELECT count(*) FROM search_queue").fetchone()[0]
    return depth


def _drained(server, timeout=120.0):
    deadline = time.monotonic() + timeout
    while _queue_depth(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _queue_depth(server) == 0, "the indexer did not drain its queue"


def _metrics(server) -> str:
    connection = http.client.HTTPConnection(*server.address("http"), timeout=10)
    connection.request("GET", "/metrics")
    return connection.getresponse().read().decode()


def _agree(client, keys=KEYS, needles=NEEDLES):
    for key in keys:
        for needle in needles:
            indexed = _search(client, key, _quoted(needle))
            scanned = _search(client, "NOT", "NOT", key, _quoted(needle))
            assert indexed == scanned, (key, needle)
    combined = _search(client, "UNSEEN", "BODY", "linux", "OR", "FROM", "example", "SUBJECT", "razor")
    assert combined == _search(client, "UNSEEN", "NOT", "NOT", "BODY", "linux", "NOT", "NOT", "OR", "FROM",
                               "example", "SUBJECT", "razor")


def test_search_agrees_with_scan_through_reindex_and_corruption(mailserver_factory):
    """Indexed SEARCH == exhaustive SEARCH while indexing, once drained, during and after
    `mailserverctl reindex ADDRESS`, and after a start with a corrupt index; bad input
    gets a clean answer."""
    server = mailserver_factory(listeners=("imap", "http"))
    server.ctl("user", "import", "alice@example.test", os.path.join(DATA, "ham-200.mbox"))
    client = _login(server)
    _agree(client, keys=("BODY",), needles=NEEDLES[:4])  # the queue may still be draining
    _drained(server)
    _agree(client)
    deadline = time.monotonic() + 30
    while "mailserverd_search_documents 200" not in _metrics(server) and time.monotonic() < deadline:
        time.sleep(0.3)
    text = _metrics(server)
    assert "mailserverd_search_queue_depth 0" in text and "mailserverd_search_documents 200" in text
    out = server.ctl("reindex", "alice@example.test").stdout
    assert "200 messages queued" in out
    _agree(client, keys=("SUBJECT", "BODY"))
    _drained(server)
    _agree(client, keys=("SUBJECT", "BODY"))
    for bad in ("a" * 5000, ".*[(", ""):
        typ, _ = client.uid("SEARCH", "BODY", _quoted(bad))
        assert typ == "OK"
    typ, data = client.uid("SEARCH", "CHARSET", "X-UNKNOWN", "BODY", "x")
    assert typ == "NO" and b"BADCHARSET" in data[0]
    client.logout()
    server.stop()
    for shard in os.listdir(os.path.join(server.data_dir, "search")):
        index_dir = os.path.join(server.data_dir, "search", shard)
        for name in os.listdir(index_dir):
            with open(os.path.join(index_dir, name), "wb") as damaged:
                damaged.write(b"\0garbage")
    server.start()
    client = _login(server)
    _agree(client, keys=("BODY", "SUBJECT"), needles=NEEDLES[:6])
    _drained(server)
    _agree(client, keys=("BODY", "SUBJECT"), needles=NEEDLES[:6])
    client.logout()


def test_kill_9_during_delivery_leaves_index_consistent(mailserver_factory):
    """4 clients APPEND while the daemon is killed with SIGKILL; after a restart the queue
    replays: every stored message is indexed once and SEARCH by its unique subject word
    finds exactly it."""
    server = mailserver_factory(listeners=("imap",))
    stop = threading.Event()
    appended = []
    lock = threading.Lock()

    def writer(number):
        try:
            client = imaplib.IMAP4(*server.address("imap"), timeout=10)
            client.login("alice@example.test", PASSWORD)
            for n in range(400):
                if stop.is_set():
                    return
                word = f"kq{number}x{n}z"
                body = (f"Subject: load {word}\r\nMessage-ID: <{word}@t.example>\r\n\r\n"
                        f"body of {word} with words\r\n").encode()
                typ, _ = client.append("INBOX", None, None, body)
                if typ != "OK":
                    return
                with lock:
                    appended.append(word)
        except (OSError, imaplib.IMAP4.abort, imaplib.IMAP4.error):
            return

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(appended) < 150 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(30)
    server.start()
    _drained(server)
    client = _login(server)
    every = _search(client, "ALL")
    assert len(every) >= len(appended) >= 150
    assert _search(client, "SUBJECT", "load") == every
    assert _search(client, "BODY", "kq") == _search(client, "NOT", "NOT", "BODY", "kq") == every
    for word in appended[::25]:
        assert len(_search(client, "SUBJECT", word)) == 1, word
    client.logout()
    from whoosh import index as windex
    documents = 0
    for shard in os.listdir(os.path.join(server.data_dir, "search")):
        with windex.open_dir(os.path.join(server.data_dir, "search", shard)).searcher() as searcher:
            documents += searcher.doc_count()
    assert documents == len(every)
