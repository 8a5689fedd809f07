"""Transport (outbound/transport.py) against real SMTP servers on loopback.

Two mailserverd nodes (127.0.0.2 = mx1.remote.test, 127.0.0.3 = mx2.remote.test)
share one port number; scripted SMTP sinks on 127.0.0.4/127.0.0.5 play the
servers our daemon is not (greylisting, no STARTTLS, no 8BITMIME, 5xx); a
real DNS server (tests/support/dnsserver.py) holds the MX records and the
sender's DKIM keys. The transport runs in the reactor thread of this process.
"""

from __future__ import annotations

import socket
import threading
import types
import uuid

import dkim as dkimpy
import dns.message
import dns.query
import dns.rdatatype
import pytest
from twisted.internet import defer

from mailserverd.outbound import dkim
from mailserverd.outbound.client import Timeouts
from mailserverd.outbound.resolver import MxResolver
from mailserverd.outbound.transport import Transport, author_domain, parse_hostport
from mailserverd.outbound.types import OutboundMessage
from tests.support.daemon import MailServer
from tests.support.dnsserver import DnsServer
from tests.support.reactorthread import ensure_running, run_in_reactor

PASSWORD = "remote-pw-1"
SINK_HOSTS = ("127.0.0.4", "127.0.0.5")
DEAD_HOSTS = ("127.0.0.6", "127.0.0.7")  # nothing listens there
QUICK = Timeouts(connect=3, greeting=5, command=5, data_init=5, data_end=10, quit=2)


# -- a scripted SMTP server ---------------------------------------------------------------

class Sink:
    """A small threaded SMTP server answering from a script; records commands and bodies."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.commands: list[str] = []
        self.bodies: list[bytes] = []
        self.script(greeting="220 sink.test ESMTP")
        self._socket = socket.create_server((host, port))
        self._socket.settimeout(0.2)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"sink-{host}", daemon=True)
        self._thread.start()

    def script(self, greeting="220 sink.test ESMTP", extensions=("PIPELINING", "8BITMIME", "SIZE 1000000"),
               mail="250 2.1.0 ok", rcpt="250 2.1.5 ok", data="354 go on", data_end="250 2.0.0 accepted"):
        self.replies = dict(greeting=greeting, extensions=extensions, mail=mail, rcpt=rcpt, data=data,
                            data_end=data_end)
        self.commands, self.bodies = [], []

    def _serve(self):
        while not self._stopping.is_set():
            try:
                connection, _ = self._socket.accept()
            except (socket.timeout, OSError):
                continue
            with connection:
                connection.settimeout(10)
                try:
                    self._session(connection.makefile("rwb"))
                except (OSError, ValueError):
                    pass

    def _session(self, stream):
        replies = self.replies

        def say(text):
            stream.write(text.encode() + b"\r\n")
            stream.flush()

        say(replies["greeting"])
        if not replies["greeting"].startswith("2"):
            stream.readline()
            say("221 bye")
            return
        while True:
            line = stream.readline()
            if not line:
                return
            command = line.decode().rstrip("\r\n")
            self.commands.append(command)
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                lines = ["sink.test", *replies["extensions"]]
                for index, text in enumerate(lines):
                    say(("250 " if index == len(lines) - 1 else "250-") + text)
            elif verb == "HELO":
                say("250 sink.test")
            elif verb == "MAIL":
                say(replies["mail"])
            elif verb == "RCPT":
                say(replies["rcpt"])
            elif verb == "DATA":
                say(replies["data"])
                if replies["data"].startswith("354"):
                    body = b""
                    while (chunk := stream.readline()) not in (b".\r\n", b""):
                        body += chunk
                    self.bodies.append(body)
                    say(replies["data_end"])
            elif verb == "STARTTLS" and "STARTTLS" in replies["extensions"]:
                say("220 2.0.0 go ahead")
                return  # and no TLS at all: the client's handshake fails
            elif verb == "RSET":
                say("250 ok")
            elif verb == "QUIT":
                say("221 bye")
                return
            else:
                say("502 5.5.1 not implemented")

    def stop(self):
        self._stopping.set()
        self._thread.join(5)
        self._socket.close()


# -- fixtures -------------------------------------------------------------------------------

def zone(keys) -> dict:
    records = {f"{key.record_name}.sender.test": {"TXT": [key.public_txt]} for key in keys}
    return {
        "remote.test": {"MX": [(10, "mx1.remote.test"), (20, "mx2.remote.test")]},
        "mx1.remote.test": {"A": ["127.0.0.2"]},
        "mx2.remote.test": {"A": ["127.0.0.3"]},
        "fallback.test": {"MX": [(10, "dead.fallback.test"), (20, "mx2.remote.test")]},
        "dead.fallback.test": {"A": [DEAD_HOSTS[0]]},
        "greylist.test": {"MX": [(10, "sink1.greylist.test"), (20, "mx1.remote.test")]},
        "sink1.greylist.test": {"A": [SINK_HOSTS[0]]},
        "sink.test": {"MX": [(10, "sink1.sink.test"), (20, "mx1.remote.test")]},
        "sink1.sink.test": {"A": [SINK_HOSTS[1]]},
        "down.test": {"MX": [(10, "a.down.test"), (20, "b.down.test")]},
        "a.down.test": {"A": [DEAD_HOSTS[0]]},
        "b.down.test": {"A": [DEAD_HOSTS[1]]},
        "nullmx.test": {"MX": [(0, ".")]},
        "sender.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
        **records,
    }


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sender")
    dkim.keygen(str(directory), "sender.test")
    return str(directory)


@pytest.fixture(scope="module")
def dns_server(keys_dir):
    with DnsServer(zone(dkim.load_keys(keys_dir, "sender.test"))) as server:
        yield server


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, dns_server):
    """mx1 on 127.0.0.2 and mx2 on 127.0.0.3, same SMTP port, each with bob@remote.test."""
    extra = {"dns": {"nameservers": dns_server.nameservers}, "auth": {"penalty_initial": "0s"}}
    first = MailServer(tmp_path_factory.mktemp("mx1"), listeners=("smtp", "submission"), extra_config=extra,
                       hostname="mx1.remote.test", host="127.0.0.2")
    first.start()
    second = MailServer(tmp_path_factory.mktemp("mx2"), listeners=("smtp", "submission"), extra_config=extra,
                        hostname="mx2.remote.test", host="127.0.0.3", ports=first.ports)
    try:
        second.start()
        for node in (first, second):
            node.ctl("domain", "add", "remote.test")
            node.ctl("user", "add", "bob@remote.test", "--password", PASSWORD)
        yield first, second
    finally:
        for node in (first, second):
            node.stop()


@pytest.fixture(scope="module")
def sinks(nodes):
    port = nodes[0].ports["smtp"]
    made = [Sink(host, port) for host in SINK_HOSTS]
    yield made
    for sink in made:
        sink.stop()


def settings_for(nodes, dns_server, **outbound):
    return types.SimpleNamespace(
        server=types.SimpleNamespace(hostname="mta.sender.test"),
        dns=types.SimpleNamespace(nameservers=(dns_server.address,)),
        outbound=types.SimpleNamespace(port=nodes[0].ports["smtp"], max_per_destination=4, **outbound))


@pytest.fixture
def transport(nodes, sinks, dns_server, keys_dir):
    reactor = ensure_running()
    settings = settings_for(nodes, dns_server)
    resolver = MxResolver(reactor, settings.dns.nameservers, timeout=2.0, local_names=("mta.sender.test",))
    return Transport(reactor, settings, resolver=resolver, dkim_signer=dkim.DkimSigner.from_data_dir(keys_dir),
                     timeouts=QUICK)


def message(*recipients, body: bytes | None = None, **fields) -> OutboundMessage:
    token = uuid.uuid4().hex
    if body is None:
        body = (f"From: Alice <alice@sender.test>\r\nTo: {', '.join(recipients)}\r\nSubject: test {token}\r\n"
                f"Message-ID: <{token}@sender.test>\r\nDate: Sat, 28 Nov 2026 12:00:00 +0000\r\n\r\n"
                "Hello.\r\n.leading dot\r\n").encode()
    return OutboundMessage(queue_id=token, sender="alice@sender.test", recipients=tuple(recipients),
                           body=body, **fields)


def stored(node: MailServer, address: str, token: str) -> bytes | None:
    """The raw message whose body mentions token, from the node's mailbox of address."""
    export = node.ctl("user", "export", address, text=False).stdout
    for chunk in export.split(b"\nFrom ")[0:]:
        if token.encode() in chunk:
            return chunk
    return None


def deliver(transport, domain, msg):
    return run_in_reactor(transport.deliver, domain, msg, timeout=60)


def txt_lookup(dns_server):
    def lookup(name, timeout=5):
        query = dns.message.make_query(name.decode().rstrip("."), dns.rdatatype.TXT)
        answer = dns.query.udp(query, dns_server.address[0], port=dns_server.address[1], timeout=timeout)
        for rrset in answer.answer:
            for record in rrset:
                return b"".join(record.strings)
        return None
    return lookup


# -- tests ----------------------------------------------------------------------------------

def test_best_mx_receives_the_message(transport, nodes):
    """The MX with the lowest preference gets the message when it is up."""
    msg = message("bob@remote.test")
    [result] = deliver(transport, "remote.test", msg)
    assert (result.status, result.code, result.remote_host, result.remote_ip) == \
        ("delivered", 250, "mx1.remote.test", "127.0.0.2")
    assert stored(nodes[0], "bob@remote.test", msg.queue_id) is not None
    assert stored(nodes[1], "bob@remote.test", msg.queue_id) is None


def test_dkim_signature_verifies_at_the_receiver(transport, nodes, dns_server):
    """The copy stored by the receiving node carries Ed25519 and RSA signatures that verify
    against the keys published in DNS."""
    msg = message("bob@remote.test")
    deliver(transport, "remote.test", msg)
    raw = stored(nodes[0], "bob@remote.test", msg.queue_id)
    raw = raw[raw.index(b"\n") + 1:].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # mbox "From " line off
    raw = raw.replace(b"\r\n>From ", b"\r\nFrom ")
    verifier = dkimpy.DKIM(raw)
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    assert len(signatures) == 2
    assert verifier.verify(0, dnsfunc=txt_lookup(dns_server))
    assert verifier.verify(1, dnsfunc=txt_lookup(dns_server))


def test_falls_back_to_next_mx_when_best_is_down(transport, nodes):
    """When the best MX refuses connections, the next MX gets the message."""
    msg = message("bob@remote.test")
    [result] = deliver(transport, "fallback.test", msg)
    assert (result.status, result.remote_ip) == ("delivered", "127.0.0.3")
    assert stored(nodes[1], "bob@remote.test", msg.queue_id) is not None


def test_4xx_on_one_mx_tries_the_next(transport, sinks, nodes):
    """A 4xx to MAIL from the best MX sends the message on to the next MX."""
    sinks[0].script(mail="451 4.7.1 greylisted, try later")
    msg = message("bob@remote.test")
    [result] = deliver(transport, "greylist.test", msg)
    assert (result.status, result.remote_host) == ("delivered", "mx1.remote.test")
    assert any(command.startswith("MAIL FROM:<alice@sender.test>") for command in sinks[0].commands)


def test_all_mx_down_defers(transport):
    """When no MX can be reached every recipient is deferred with a connection error."""
    results = deliver(transport, "down.test", message("x@down.test", "y@down.test"))
    assert [(r.status, r.code, r.enhanced) for r in results] == [("deferred", 0, "4.4.1")] * 2


def test_rcpt_5xx_fails_without_trying_the_next_mx(transport, sinks):
    """A 550 to RCPT is final: the recipient fails and the backup MX is not asked."""
    sinks[1].script(rcpt="550 5.1.1 no such user")
    [result] = deliver(transport, "sink.test", message("nobody@sink.test"))
    assert (result.status, result.code, result.enhanced, result.text) == ("failed", 550, "5.1.1", "no such user")
    assert result.remote_host == "sink1.sink.test"


def test_unknown_user_at_real_node_fails(transport):
    """Our own daemon refusing an unknown user gives a failed recipient with its 5.1.1."""
    results = deliver(transport, "remote.test", message("bob@remote.test", "ghost@remote.test"))
    assert [(r.status, r.enhanced[:1]) for r in results] == [("delivered", "2"), ("failed", "5")]


def test_server_without_starttls_gets_mail_in_clear(transport, sinks):
    """Opportunistic TLS: a server that offers no STARTTLS still gets the message."""
    sinks[1].script()
    [result] = deliver(transport, "sink.test", message("u@sink.test"))
    assert result.status == "delivered"
    assert "STARTTLS" not in sinks[1].commands
    assert b"\r\n..leading dot\r\n" in sinks[1].bodies[0]  # dot-stuffed on the wire


def test_failed_tls_handshake_is_retried_in_clear(transport, sinks):
    """Opportunistic TLS: when the handshake fails, the same host is tried again without STARTTLS."""
    sinks[1].script(extensions=("PIPELINING", "8BITMIME", "STARTTLS"))
    [result] = deliver(transport, "sink.test", message("u@sink.test"))
    assert (result.status, result.remote_host) == ("delivered", "sink1.sink.test")
    assert sinks[1].commands.count("STARTTLS") == 1 and len(sinks[1].bodies) == 1


def test_starttls_is_used_when_offered(transport, nodes):
    """Our daemon offers STARTTLS; the transport takes it (the receiver records ESMTPS or TLS)."""
    msg = message("bob@remote.test")
    deliver(transport, "remote.test", msg)
    raw = stored(nodes[0], "bob@remote.test", msg.queue_id)
    received = raw.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    assert b"ESMTPS" in received or b"TLS" in received


def test_8bit_message_to_server_without_8bitmime_bounces(transport, sinks):
    """An 8-bit message is not sent to a server lacking 8BITMIME: failed with 5.6.3 (RFC 6152 3)."""
    sinks[1].script(extensions=("PIPELINING", "SIZE 1000000"))
    body = "From: alice@sender.test\r\nSubject: Grüße\r\n\r\nGrüße\r\n".encode()
    [result] = deliver(transport, "sink.test", message("u@sink.test", body=body, eight_bit=True))
    assert (result.status, result.enhanced) == ("failed", "5.6.3")
    assert not any(command.startswith("MAIL") for command in sinks[1].commands)


def test_8bit_message_to_server_with_8bitmime(transport, sinks):
    """With 8BITMIME offered, MAIL carries BODY=8BITMIME and the bytes arrive unchanged."""
    sinks[1].script()
    body = "From: alice@sender.test\r\nSubject: x\r\n\r\nGrüße\r\n".encode()
    [result] = deliver(transport, "sink.test", message("u@sink.test", body=body, eight_bit=True))
    assert result.status == "delivered"
    assert any("BODY=8BITMIME" in command for command in sinks[1].commands)
    assert "Grüße".encode() in sinks[1].bodies[0]


def test_nxdomain_fails_every_recipient(transport):
    """A domain that does not exist fails at once with 550 5.1.2."""
    results = deliver(transport, "no-such-domain.test", message("a@no-such-domain.test"))
    assert [(r.status, r.code, r.enhanced) for r in results] == [("failed", 550, "5.1.2")]


def test_null_mx_fails_every_recipient(transport):
    """A null MX domain fails at once with 556 5.1.10 (RFC 7505)."""
    results = deliver(transport, "nullmx.test", message("a@nullmx.test"))
    assert [(r.status, r.code, r.enhanced) for r in results] == [("failed", 556, "5.1.10")]


def test_greeting_refused_tries_next_mx(transport, sinks):
    """A 554 greeting makes the transport try the next MX rather than bounce."""
    sinks[1].script(greeting="554 5.7.1 no service for you")
    [result] = deliver(transport, "sink.test", message("bob@sink.test"))
    # the next MX is mx1.remote.test, which does not host sink.test: it refuses the recipient
    assert result.remote_host == "mx1.remote.test"


def test_smarthost_with_auth_over_starttls(nodes, dns_server):
    """With a smarthost, mail goes there (AUTH PLAIN after STARTTLS) whatever the domain's MX."""
    reactor = ensure_running()
    submission = nodes[1].ports["submission"]
    settings = settings_for(nodes, dns_server, smarthost=f"127.0.0.3:{submission}",
                            smarthost_user="bob@remote.test", smarthost_password=PASSWORD)
    relay = Transport(reactor, settings, resolver=MxResolver(reactor, settings.dns.nameservers, timeout=2.0),
                      timeouts=QUICK)
    token = uuid.uuid4().hex
    body = (f"From: bob@remote.test\r\nTo: bob@remote.test\r\nSubject: {token}\r\n"
            f"Message-ID: <{token}@remote.test>\r\n\r\nvia the relay\r\n").encode()
    msg = OutboundMessage(queue_id=token, sender="bob@remote.test", recipients=("bob@remote.test",), body=body)
    [result] = deliver(relay, "remote.test", msg)
    assert (result.status, result.remote_ip) == ("delivered", "127.0.0.3")
    assert stored(nodes[1], "bob@remote.test", token) is not None


def test_smarthost_with_wrong_password_defers(nodes, dns_server):
    """Refused relay credentials defer the mail (a configuration error), never bounce it."""
    reactor = ensure_running()
    settings = settings_for(nodes, dns_server, smarthost=f"127.0.0.3:{nodes[1].ports['submission']}",
                            smarthost_user="bob@remote.test", smarthost_password="wrong")
    relay = Transport(reactor, settings, resolver=MxResolver(reactor, settings.dns.nameservers, timeout=2.0),
                      timeouts=QUICK)
    [result] = deliver(relay, "remote.test", message("bob@remote.test"))
    assert result.status == "deferred" and result.code == 535


# -- without sockets -------------------------------------------------------------------------

class HeldResolver:
    """route() returns Deferreds the test fires; counts lookups in flight."""

    def __init__(self):
        self.waiting: list[defer.Deferred] = []

    def route(self, domain):
        d = defer.Deferred()
        self.waiting.append(d)
        return d


def test_concurrency_per_destination_is_limited():
    """No more than max_per_destination deliveries to one domain run at once; the rest queue."""
    settings = types.SimpleNamespace(server=types.SimpleNamespace(hostname="mta.sender.test"),
                                     dns=types.SimpleNamespace(nameservers=()),
                                     outbound=types.SimpleNamespace(port=25, max_per_destination=2))
    resolver = HeldResolver()
    transport = Transport(None, settings, resolver=resolver, tls_client_context_factory=object())
    done: list[int] = []
    for index in range(5):
        transport.deliver("busy.test", message("a@busy.test")).addCallback(lambda results, i=index: done.append(i))
    transport.deliver("other.test", message("a@other.test")).addCallback(lambda results: done.append(99))
    assert len(resolver.waiting) == 3  # two for busy.test, one for other.test
    resolver.waiting[0].callback([])   # no hosts: deferred at once, and a slot frees up
    assert done == [0] and len(resolver.waiting) == 4
    for d in resolver.waiting[1:]:
        d.callback([])
    assert sorted(done) == [0, 1, 2, 99] and len(resolver.waiting) == 6
    for d in resolver.waiting[4:]:
        d.callback([])
    assert sorted(done) == [0, 1, 2, 3, 4, 99]
    assert transport._limits == {}  # idle destinations are forgotten


def test_author_domain_comes_from_the_from_header():
    """DKIM signs for the From header's domain (DMARC alignment), the envelope sender otherwise."""
    assert author_domain(b"Subject: x\r\nFrom: \"A, B\" <a@Example.ORG>\r\n\r\nFrom: x@y.test\r\n", "s@e.test") \
        == "example.org"
    assert author_domain(b"Subject: x\r\n\r\n", "bounce@env.test") == "env.test"


def test_smarthost_setting_forms():
    """The smarthost setting may be (host, port), "host:port", "[v6]:port" or a bare host."""
    assert parse_hostport(("relay.test", 587), 25) == ("relay.test", 587)
    assert parse_hostport("relay.test:2525", 25) == ("relay.test", 2525)
    assert parse_hostport("[::1]:2525", 25) == ("::1", 2525)
    assert parse_hostport("relay.test", 25) == ("relay.test", 25)
    assert parse_hostport("", 25) is None

