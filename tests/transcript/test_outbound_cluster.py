"""Outbound delivery end to end: three mailserverd nodes and a real DNS server.

Node A (mail.a.test, 127.0.0.2) is where alice@a.test submits. The domain
b.test has MX 10 mx1.b.test = node B (127.0.0.3) and MX 20 mx2.b.test =
node C (127.0.0.4); all three share one port number per listener, and A's
[outbound] port is that SMTP port. A's hostname is not an MX of b.test (the
resolver drops an MX equal to its own name). The zone (tests/support/dnsserver.py)
holds the MX and A records, and a.test's MX, SPF, DKIM and DMARC TXT records
exactly as `mailserverctl dns a.test` prints them after `mailserverctl dkim
keygen a.test` on A. Mail is read back over POP3; a node is "down" when its
daemon is stopped (connections are refused). Every wait has a deadline.
"""

from __future__ import annotations

import collections
import concurrent.futures
import email
import email.policy
import http.client
import poplib
import re
import smtplib
import ssl
import time
import uuid

import dkim as dkimpy
import dns.message
import dns.query
import dns.rdatatype
import pytest

from mailserverd.cli import ctl
from tests.support.daemon import MailServer
from tests.support.dnsserver import DnsServer

PASSWORD = "cluster-pw-1"
LISTENERS = ("smtp", "submission", "pop3", "http")
HOSTS = {"a": ("127.0.0.2", "mail.a.test"), "b": ("127.0.0.3", "mx1.b.test"), "c": ("127.0.0.4", "mx2.b.test")}
B_USERS = ("bob", "carol", "dave", "erin", "bulk")
POLL = 0.2  # seconds between looks at a remote mailbox or the queue
DELIVERY_DEADLINE = 30.0
BULK = 1000
BULK_DEADLINE = 120.0
SUBMIT_SESSIONS = 4


# -- the zone ------------------------------------------------------------------------------------

def published_records(text: str) -> dict:
    """Zone data from `mailserverctl dns DOMAIN` lines ("name. IN MX 10 host." / "name. IN TXT "..." "...")."""
    zone: dict = {}
    for line in text.splitlines():
        match = re.match(r"(\S+?)\.?\s+IN\s+(MX|TXT|A)\s+(.*)$", line.strip())
        if not match:
            continue
        name, kind, data = match.groups()
        records = zone.setdefault(name.lower(), {})
        if kind == "MX":
            preference, exchange = data.split()
            records.setdefault("MX", []).append((int(preference), exchange.rstrip(".")))
        elif kind == "TXT":
            records.setdefault("TXT", []).append("".join(re.findall(r'"((?:[^"\\]|\\.)*)"', data)))
        else:
            records.setdefault("A", []).append(data.strip())
    return zone


def base_zone() -> dict:
    return {
        "b.test": {"MX": [(10, "mx1.b.test"), (20, "mx2.b.test")], "TXT": ["v=spf1 mx -all"]},
        "_dmarc.b.test": {"TXT": ["v=DMARC1; p=none"]},
        "mx1.b.test": {"A": [HOSTS["b"][0]]},
        "mx2.b.test": {"A": [HOSTS["c"][0]]},
        "mail.a.test": {"A": [HOSTS["a"][0]]},
        "nullmx.test": {"MX": [(0, ".")]},  # RFC 7505
    }


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dns_server():
    with DnsServer(base_zone()) as server:
        yield server


def seed_b_test(directory) -> str:
    """A data directory with b.test and its users, copied to B and C. mailserverctl runs in
    this process (its main(), daemon stopped): one interpreter start instead of six."""
    seed = MailServer(directory, listeners=())
    seed.write_config()
    assert ctl.main(["-c", seed.conf_path, "domain", "add", "b.test"]) == 0
    for user in B_USERS:
        assert ctl.main(["-c", seed.conf_path, "user", "add", f"{user}@b.test", "--password", PASSWORD]) == 0
    return seed.data_dir


def seed_a_test(directory) -> tuple[str, str]:
    """A data directory with a.test, alice@ and DKIM keys; and what `mailserverctl dns a.test` prints."""
    seed = MailServer(directory, listeners=(), hostname=HOSTS["a"][1])
    seed.write_config()
    assert ctl.main(["-c", seed.conf_path, "domain", "add", "a.test"]) == 0
    assert ctl.main(["-c", seed.conf_path, "user", "add", "alice@a.test", "--password", PASSWORD]) == 0
    seed.ctl("dkim", "keygen", "a.test")  # the real command line, as an admin runs it
    return seed.data_dir, seed.ctl("dns", "a.test").stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, dns_server):
    """Nodes a, b, c (all running), b.test users on b and c, alice@a.test with DKIM keys on a."""
    common = {"dns": {"nameservers": dns_server.nameservers}, "auth": {"penalty_initial": "0s"},
              "smtp": {"message_rate_per_ip": "0", "submission_rate_per_account": "0"},
              "limits": {"max_connections_per_ip": "0"}}
    b_data = seed_b_test(tmp_path_factory.mktemp("seed-b"))
    a_data, a_records = seed_a_test(tmp_path_factory.mktemp("seed-a"))
    dns_server.set_zone({**base_zone(), **published_records(a_records)})
    nodes: dict[str, MailServer] = {}
    try:
        for name in ("b", "c", "a"):
            host, hostname = HOSTS[name]
            extra = {section: dict(values) for section, values in common.items()}
            fixed = nodes["b"].ports if nodes else None
            if name == "a":
                extra["outbound"] = {"port": str(nodes["b"].ports["smtp"])}
            node = MailServer(tmp_path_factory.mktemp(f"node-{name}"), listeners=LISTENERS, extra_config=extra,
                              hostname=hostname, host=host, ports=fixed)
            node.copy_data_from(a_data if name == "a" else b_data)
            nodes[name] = node
            node.start()
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()


@pytest.fixture
def up(cluster):
    """up("b", "c"): exactly these of b and c are running (a always is)."""
    def arrange(*names):
        for name in ("b", "c"):
            node = cluster[name]
            if name in names and not node.running:
                node.restart()
            elif name not in names and node.running:
                node.stop()
        if not cluster["a"].running:
            cluster["a"].restart()
        return cluster
    return arrange


# -- helpers -------------------------------------------------------------------------------------

def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def letter(token: str, *recipients: str, sender: str = "alice@a.test") -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: {', '.join(recipients)}\r\nSubject: note {token}\r\n"
            f"Message-ID: <{token}@a.test>\r\nDate: Fri, 15 Jan 2027 08:00:00 +0000\r\n\r\n"
            f"Hello from a.test ({token}).\r\n").encode()


def submit(node: MailServer, *recipients: str, token: str | None = None) -> str:
    """alice@a.test sends one message over submission (STARTTLS + AUTH); returns its token."""
    token = token or uuid.uuid4().hex
    with smtplib.SMTP(*node.address("submission"), timeout=30) as client:
        client.starttls(context=tls_context())
        client.login("alice@a.test", PASSWORD)
        refused = client.sendmail("alice@a.test", list(recipients), letter(token, *recipients))
    assert refused == {}
    return token


def pop_messages(node: MailServer, address: str) -> list[bytes]:
    """Every message in address's mailbox on node, raw (CRLF), over POP3 (keep mode)."""
    client = poplib.POP3(*node.address("pop3"), timeout=30)
    try:
        client.user(address)
        client.pass_(PASSWORD)
        count, _size = client.stat()
        return [b"\r\n".join(client.retr(number)[1]) + b"\r\n" for number in range(1, count + 1)]
    finally:
        client.quit()


def pop_message_ids(node: MailServer, address: str) -> list[str]:
    """The Message-ID of every message in the mailbox (TOP n 0: headers only)."""
    client = poplib.POP3(*node.address("pop3"), timeout=30)
    try:
        client.user(address)
        client.pass_(PASSWORD)
        count, _size = client.stat()
        ids = []
        for number in range(1, count + 1):
            head = b"\r\n".join(client.top(number, 0)[1]).decode("utf-8", "replace")
            match = re.search(r"(?im)^message-id:\s*(<[^>]*>)", head)
            ids.append(match.group(1) if match else "")
        return ids
    finally:
        client.quit()


def wait_for(what: str, check, deadline: float = DELIVERY_DEADLINE):
    """Poll check() until it returns something true; fail with `what` after the deadline."""
    end = time.monotonic() + deadline
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > end:
            pytest.fail(f"{what}: not within {deadline:.0f} s")
        time.sleep(POLL)


def received(node: MailServer, address: str, token: str) -> bytes | None:
    for raw in pop_messages(node, address):
        if token.encode() in raw:
            return raw
    return None


def metrics(node: MailServer) -> dict[str, float]:
    connection = http.client.HTTPConnection(*node.address("http"), timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def queue_size(node: MailServer) -> float:
    return metrics(node)["mailserverd_outbound_queue_size"]


def dsn_about(node: MailServer, token: str) -> email.message.EmailMessage:
    """The DSN in alice@a.test's INBOX on node whose returned headers carry token."""
    raw = wait_for(f"a DSN about {token} in alice's INBOX",
                   lambda: next((raw for raw in pop_messages(node, "alice@a.test")
                                 if token.encode() in raw and b"multipart/report" in raw), None))
    return email.message_from_bytes(raw, policy=email.policy.default)


def recipient_fields(report: email.message.EmailMessage) -> email.message.Message:
    """The (single) per-recipient block of a DSN's message/delivery-status part."""
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    status = report.get_payload()[1]
    assert status.get_content_type() == "message/delivery-status"
    [_per_message, per_recipient] = status.get_payload()
    return per_recipient


def dns_txt(dns_server):
    def lookup(name, timeout=5):
        query = dns.message.make_query(name.decode().rstrip("."), dns.rdatatype.TXT)
        answer = dns.query.udp(query, dns_server.address[0], port=dns_server.address[1], timeout=timeout)
        for rrset in answer.answer:
            for record in rrset:
                return b"".join(record.strings)
        return None
    return lookup


# -- tests ---------------------------------------------------------------------------------------

def test_delivered_through_the_best_mx_with_dkim_that_verifies(up, dns_server):
    """Submission on A to bob@b.test arrives at B (MX 10), not C, signed by A's Ed25519 and
    RSA keys; both signatures verify against the TXT records published in DNS, with d= the
    From domain (DMARC alignment) and a DMARC record to align with."""
    nodes = up("b", "c")
    token = submit(nodes["a"], "bob@b.test")
    raw = wait_for("the message at B", lambda: received(nodes["b"], "bob@b.test", token))
    assert received(nodes["c"], "bob@b.test", token) is None
    verifier = dkimpy.DKIM(raw)
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    assert len(signatures) == 2
    assert all(re.search(rb"\bd=a\.test;", re.sub(rb"\s", b"", value)) for value in signatures)
    lookup = dns_txt(dns_server)
    assert verifier.verify(0, dnsfunc=lookup) and verifier.verify(1, dnsfunc=lookup)
    assert lookup(b"_dmarc.a.test.").startswith(b"v=DMARC1;")


def test_best_mx_down_delivers_through_the_next(up):
    """With B down (connection refused), the message goes to C (MX 20)."""
    nodes = up("c")
    token = submit(nodes["a"], "carol@b.test")
    raw = wait_for("the message at C", lambda: received(nodes["c"], "carol@b.test", token))
    assert b"by mx2.b.test" in raw


def test_all_mx_down_defers_then_flush_delivers(up):
    """With B and C down the message stays queued (deferred, connection error); once C is up,
    `mailserverctl queue flush` delivers it at once, and the queue empties."""
    nodes = up()
    a = nodes["a"]
    token = submit(a, "dave@b.test")
    listing = wait_for("a deferred entry in the queue",
                       lambda: [line for line in a.ctl("queue", "list").stdout.splitlines()
                                if "deferred" in line and "-> b.test" in line and "attempts 1" in line])
    assert len(listing) == 1
    up("c")
    assert a.ctl("queue", "flush").stdout.endswith("due now\n")
    wait_for("the message at C after the flush", lambda: received(nodes["c"], "dave@b.test", token))
    wait_for("an empty queue on A", lambda: queue_size(a) == 0)


def test_unknown_user_bounces_a_dsn_into_the_senders_inbox(up):
    """B refuses ghost@b.test with 550 5.1.1: A puts an RFC 3464 DSN in alice's INBOX naming
    the recipient, the status, B as the remote MTA, and B's reply."""
    nodes = up("b", "c")
    token = submit(nodes["a"], "ghost@b.test")
    report = dsn_about(nodes["a"], token)
    assert report["From"].addresses[0].addr_spec == "MAILER-DAEMON@mail.a.test"
    fields = recipient_fields(report)
    assert fields["Final-Recipient"] == "rfc822;ghost@b.test"
    assert (fields["Action"], fields["Status"]) == ("failed", "5.1.1")
    assert fields["Remote-MTA"] == "dns; mx1.b.test"
    assert fields["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    returned = report.get_payload()[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert f"Subject: note {token}".encode() in returned.get_payload(decode=True)


def test_null_mx_domain_bounces_at_once(up):
    """A domain with a null MX (RFC 7505) bounces without any connection: DSN with 5.1.10."""
    nodes = up("b", "c")
    token = submit(nodes["a"], "someone@nullmx.test")
    fields = recipient_fields(dsn_about(nodes["a"], token))
    assert fields["Final-Recipient"] == "rfc822;someone@nullmx.test"
    assert (fields["Action"], fields["Status"]) == ("failed", "5.1.10")
    assert fields["Remote-MTA"] is None


def test_nonexistent_domain_bounces_at_once(up):
    """A domain that does not exist (NXDOMAIN) bounces at once: DSN with 5.1.2."""
    nodes = up("b", "c")
    token = submit(nodes["a"], "someone@nowhere.test")
    fields = recipient_fields(dsn_about(nodes["a"], token))
    assert fields["Final-Recipient"] == "rfc822;someone@nowhere.test"
    assert (fields["Action"], fields["Status"]) == ("failed", "5.1.2")


def test_restart_with_a_thousand_queued_messages_delivers_each_exactly_once(up):
    """1,000 messages queued while every MX is down survive a restart of A; after B comes up
    and a flush, A is restarted again mid-delivery; B ends with each message exactly once."""
    nodes = up()
    a, b = nodes["a"], nodes["b"]
    run = uuid.uuid4().hex[:8]
    tokens = [f"bulk-{run}-{number:04d}" for number in range(BULK)]
    with concurrent.futures.ThreadPoolExecutor(SUBMIT_SESSIONS) as pool:
        list(pool.map(lambda share: submit_many(a, share), [tokens[i::SUBMIT_SESSIONS]
                                                             for i in range(SUBMIT_SESSIONS)]))
    assert queue_size(a) == BULK
    a.restart()
    assert queue_size(a) == BULK
    up("b")
    a.ctl("queue", "flush")
    wait_for("some deliveries before the mid-delivery restart",
             lambda: BULK // 10 <= pop_count(b, "bulk@b.test"), BULK_DEADLINE)
    a.restart()
    a.ctl("queue", "flush")
    wait_for(f"{BULK} messages at B", lambda: pop_count(b, "bulk@b.test") >= BULK, BULK_DEADLINE)
    wait_for("an empty queue on A", lambda: queue_size(a) == 0)
    counts = collections.Counter(pop_message_ids(b, "bulk@b.test"))
    expected = {f"<{token}@a.test>" for token in tokens}
    assert set(counts) == expected
    assert [message_id for message_id, count in counts.items() if count != 1] == []


def submit_many(node: MailServer, tokens: list[str]) -> None:
    """One submission session sending one message per token to bulk@b.test."""
    with smtplib.SMTP(*node.address("submission"), timeout=60) as client:
        client.starttls(context=tls_context())
        client.login("alice@a.test", PASSWORD)
        for token in tokens:
            assert client.sendmail("alice@a.test", ["bulk@b.test"], letter(token, "bulk@b.test")) == {}


def pop_count(node: MailServer, address: str) -> int:
    client = poplib.POP3(*node.address("pop3"), timeout=30)
    try:
        client.user(address)
        client.pass_(PASSWORD)
        return client.stat()[0]
    finally:
        client.quit()
