#!/usr/bin/env python3
"""bench/jmap: JMAP over the real daemon's http listener.

Fills one account with --messages messages (straight through the store,
before the daemon starts), then measures requests/s and p50/p99 latency of
the request a mail list sends (Email/query inMailbox INBOX, sort receivedAt
desc, limit 50, + Email/get of those ids by back-reference with the list
properties) at 1, 16 and 64 concurrent clients (threads, keep-alive
connections) with the daemon's CPU time per request (disturbed less than the
rate by the other users of a shared machine), Email/get of one full message
with bodyValues, and the push latency from an SMTP 250 to the EventSource
"state" event and to the WebSocket StateChange. Measures once the daemon's
search indexer has indexed the fill. Bounded in time.

    .venv/bin/python bench/jmap.py [--messages 10000] [--seconds 5] [--levels 1,16,64]
                                   [--push-samples 20] [--index-wait 600] [--py-spy FILE]

--py-spy FILE samples the daemon with py-spy (needs ptrace) during the
16-client level (or the first level) and writes collapsed stacks to FILE;
bench/profile.py-style buckets are not computed: read the file with e.g.
flamegraph.pl, or sum the counts per frame.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import smtplib
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from mailserverd.store import Store  # noqa: E402
from mailserverd.store.api import DeliveryTarget  # noqa: E402
from mailserverd.store.mail import Delivery  # noqa: E402
from tests.support.daemon import PASSWORD, MailServer  # noqa: E402

USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]
LIST_PROPERTIES = ["id", "threadId", "mailboxIds", "keywords", "from", "subject", "receivedAt", "size",
                   "preview", "hasAttachment"]


def fill(server: MailServer, count: int) -> None:
    directory = f"sqlite:///{server.data_dir}/directory.sqlite3"
    shards = [f"sqlite:///{server.data_dir}/shard-{n}.sqlite3" for n in range(2)]
    store = Store(directory, shards, os.path.join(server.data_dir, "blobs"))
    alice = store.directory.require_account("alice@example.test")
    batch = []
    for n in range(count):
        body = (f"From: Sender {n % 97} <s{n % 97}@remote.test>\r\nTo: alice@example.test\r\n"
                f"Subject: message number {n}\r\nMessage-ID: <{n}@bench.test>\r\n"
                f"Date: Sat, 05 Dec 2026 10:00:00 +0000\r\n\r\n" + f"line {n} of the body\r\n" * 20).encode()
        batch.append(Delivery(body, [DeliveryTarget(alice)], received_at=1_700_000_000 + n))
        if len(batch) == 500:
            store.mail.deliver_many(batch)
            batch = []
    if batch:
        store.mail.deliver_many(batch)
    store.close()


class Client:
    def __init__(self, address):
        self.connection = http.client.HTTPConnection(*address, timeout=30)
        self.auth = "Basic " + base64.b64encode(f"alice@example.test:{PASSWORD}".encode()).decode()

    def post(self, calls):
        body = json.dumps({"using": USING, "methodCalls": calls})
        self.connection.request("POST", "/jmap/api", body, {"Authorization": self.auth,
                                                            "Content-Type": "application/json"})
        response = self.connection.getresponse()
        answer = json.loads(response.read())
        assert response.status == 200, answer
        return answer["methodResponses"]


def list_request(account_id, inbox):
    return [["Email/query", {"accountId": account_id, "filter": {"inMailbox": inbox},
                             "sort": [{"property": "receivedAt", "isAscending": False}], "limit": 50}, "q"],
            ["Email/get", {"accountId": account_id, "properties": LIST_PROPERTIES,
                           "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"}}, "g"]]


def wait_indexed(server: MailServer, limit: float) -> float:
    """Seconds until the daemon's search indexer has drained the queue the fill left
    (it would otherwise share the CPU with the measured requests); at most limit."""
    import sqlite3
    began = time.monotonic()
    paths = [os.path.join(server.data_dir, f"shard-{n}.sqlite3") for n in range(2)]
    while time.monotonic() - began < limit:
        pending = 0
        for path in paths:
            with sqlite3.connect(path, timeout=30) as db:
                pending += db.execute("SELECT count(*) FROM search_queue").fetchone()[0]
        if not pending:
            break
        time.sleep(1)
    return time.monotonic() - began


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc; 0 where there is none."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_level(address, calls, clients: int, seconds: float):
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker():
        client = Client(address)
        mine = []
        while time.monotonic() < stop:
            start = time.perf_counter()
            client.post(calls)
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    begin = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - begin
    latencies.sort()
    return (len(latencies) / elapsed, latencies[len(latencies) // 2] * 1000,
            latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000)


def push_latency(server, account_id, samples: int) -> list[float]:
    auth = Client(server.address("http")).auth
    found = []
    for n in range(samples):
        connection = http.client.HTTPConnection(*server.address("http"), timeout=10)
        connection.request("GET", "/jmap/eventsource?types=Email&closeafter=state&ping=0",
                           headers={"Authorization": auth})
        response = connection.getresponse()
        assert response.readline() == b": ready\n"
        with smtplib.SMTP(*server.address("smtp"), timeout=10) as smtp:
            smtp.sendmail("c@remote.test", ["alice@example.test"],
                          f"Subject: push {n}\r\n\r\nx\r\n")
            accepted = time.perf_counter()  # sendmail returns after the 250 to DATA
            while not response.readline().startswith(b"event: state"):
                pass
            found.append((time.perf_counter() - accepted) * 1000)
        connection.close()
    return sorted(found)


def websocket_push_latency(server, account_id, samples: int) -> list[float]:
    """The same deliveries, timed to the StateChange on one JMAP WebSocket (RFC 8887)
    with push enabled; a Core/echo round trip first, so the push baseline is taken."""
    from websockets.sync.client import connect  # the test extra's client
    host, port = server.address("http")
    found = []
    with connect(f"ws://{host}:{port}/jmap/ws", subprotocols=["jmap"], proxy=None,
                 additional_headers={"Authorization": Client(server.address("http")).auth}) as ws:
        ws.send(json.dumps({"@type": "WebSocketPushEnable", "dataTypes": ["Email"]}))
        ws.send(json.dumps({"@type": "Request", "id": "sync", "using": USING,
                            "methodCalls": [["Core/echo", {}, "e"]]}))
        assert json.loads(ws.recv(timeout=10))["requestId"] == "sync"
        for n in range(samples):
            with smtplib.SMTP(*server.address("smtp"), timeout=10) as smtp:
                smtp.sendmail("c@remote.test", ["alice@example.test"], f"Subject: ws push {n}\r\n\r\nx\r\n")
                accepted = time.perf_counter()  # sendmail returns after the 250 to DATA
                while json.loads(ws.recv(timeout=10)).get("@type") != "StateChange":
                    pass
                found.append((time.perf_counter() - accepted) * 1000)
    return sorted(found)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--levels", default="1,16,64")
    parser.add_argument("--push-samples", type=int, default=20)
    parser.add_argument("--index-wait", type=float, default=600.0,
                        help="seconds to wait at most for the search indexer before measuring")
    parser.add_argument("--py-spy", default=None, help="collapsed py-spy stacks of the daemon go here")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        server = MailServer(directory, listeners=("smtp", "http"))
        server.write_config()
        server.add_standard_accounts()
        began = time.monotonic()
        fill(server, options.messages)
        print(f"filled {options.messages} messages in {time.monotonic() - began:.1f} s")
        server.start()
        try:
            print(f"search indexer drained its queue in {wait_indexed(server, options.index_wait):.0f} s")
            time.sleep(1)  # the indexer's merge check and warm-up after its last batch
            cpu = cpu_seconds(server.process.pid)
            time.sleep(3)  # nobody connected: the search indexer's polls and statistics, timers
            print(f"daemon idle CPU: {(cpu_seconds(server.process.pid) - cpu) / 3 * 100:.1f}% of a core")
            client = Client(server.address("http"))
            session_calls = [["Mailbox/query", {"accountId": "a1", "filter": {"role": "inbox"}}, "m"]]
            connection = http.client.HTTPConnection(*server.address("http"), timeout=10)
            connection.request("GET", "/.well-known/jmap", headers={"Authorization": client.auth})
            account_id = json.loads(connection.getresponse().read())["primaryAccounts"][USING[1]]
            session_calls[0][1]["accountId"] = account_id
            inbox = client.post(session_calls)[0][1]["ids"][0]
            calls = list_request(account_id, inbox)
            levels = [int(x) for x in options.levels.split(",")]
            for level in levels:
                spy = None
                if options.py_spy and level == (16 if 16 in levels else levels[0]):
                    spy = subprocess.Popen(
                        [shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy"),
                         "record", "--format", "raw", "--threads", "--gil", "--rate", "200", "--nonblocking",
                         "--duration", str(int(options.seconds)), "--pid", str(server.process.pid),
                         "--output", options.py_spy], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                cpu = cpu_seconds(server.process.pid)
                rate, p50, p99 = run_level(server.address("http"), calls, level, options.seconds)
                cpu = (cpu_seconds(server.process.pid) - cpu) / (rate * options.seconds) * 1000
                if spy is not None:
                    spy.wait(timeout=options.seconds + 30)
                print(f"query+get (50 of {options.messages}), {level:>2} clients: "
                      f"{rate:7.1f} req/s  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  daemon CPU {cpu:.2f} ms/req")
            first = client.post(calls)[0][1]["ids"][0]
            full = [["Email/get", {"accountId": account_id, "ids": [first], "fetchAllBodyValues": True}, "g"]]
            rate, p50, p99 = run_level(server.address("http"), full, 1, options.seconds)
            print(f"Email/get one full message with bodyValues, 1 client: {rate:7.1f} req/s  "
                  f"p50 {p50:.1f} ms  p99 {p99:.1f} ms")
            pushes = push_latency(server, account_id, options.push_samples)
            print(f"push SMTP 250 -> EventSource state event ({len(pushes)} samples): "
                  f"p50 {statistics.median(pushes):.1f} ms  max {pushes[-1]:.1f} ms")
            pushes = websocket_push_latency(server, account_id, options.push_samples)
            print(f"push SMTP 250 -> WebSocket StateChange ({len(pushes)} samples): "
                  f"p50 {statistics.median(pushes):.1f} ms  max {pushes[-1]:.1f} ms")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
