"""A real authoritative DNS server (twisted.names) on loopback, for outbound tests.

It runs as a subprocess (its own reactor, so tests may run theirs, and the
daemon under test resolves through it like through any name server), on
127.0.0.1 with one free port number for both UDP and TCP. The zone is
Python data, replaceable while the server runs:

    {
        "remote.test": {"MX": [(10, "mx1.remote.test"), (20, "mx2.remote.test")],
                        "TXT": ["v=spf1 mx -all"]},
        "mx1.remote.test": {"A": ["127.0.0.2"]},
        "mx2.remote.test": {"A": ["127.0.0.3"], "AAAA": ["::1"]},
        "alias.test": {"CNAME": "remote.test"},
        "nullmx.test": {"MX": [(0, ".")]},
        "broken.test": "SERVFAIL",      # every query for the name: SERVFAIL
        "silent.test": "TIMEOUT",       # no answer at all (the client times out)
    }

A name not in the zone is NXDOMAIN; a name without records of the asked
type answers NOERROR with no records (NODATA). A CNAME is followed within
the zone, as an authoritative server does. Names are case-insensitive.

    with DnsServer(zone) as dns_server:
        dns_server.nameservers     # "127.0.0.1:PORT" for [dns] nameservers
        dns_server.address         # ("127.0.0.1", PORT) for the resolver
        dns_server.set_zone(other) # takes effect before it returns
"""

from __future__ import annotations

import json
import subprocess
import sys

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
REPLY_TIMEOUT = 10.0
TTL = 60
MAX_CNAME_CHAIN = 8


class DnsServerFailed(Exception):
    """The DNS server process did not start or did not answer its control line."""


def _normalize(zone: dict) -> dict:
    """JSON-safe, lower-case, dot-less names; tuples become lists."""
    return {name.lower().rstrip("."): value for name, value in json.loads(json.dumps(zone)).items()}


class DnsServer:
    """The server process; start()/stop(), or use it as a context manager."""

    def __init__(self, zone: dict | None = None):
        self.zone = _normalize(zone or {})
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    @property
    def nameservers(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> "DnsServer":
        self.process = subprocess.Popen([sys.executable, "-m", "tests.support.dnsserver"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, bufsize=1)
        first = self._command({"zone": self.zone}, START_TIMEOUT)
        if not first.startswith("ready "):
            self.stop()
            raise DnsServerFailed(f"unexpected first line {first!r}")
        self.port = int(first.split()[1])
        return self

    def set_zone(self, zone: dict) -> None:
        self.zone = _normalize(zone)
        answer = self._command({"zone": self.zone}, REPLY_TIMEOUT)
        if answer != "ok":
            raise DnsServerFailed(f"zone not taken: {answer!r}")

    def _command(self, request: dict, timeout: float) -> str:
        if self.process is None or self.process.poll() is not None:
            raise DnsServerFailed("the DNS server is not running")
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = _readline(self.process, timeout)
        if line is None:
            error = self.stop()
            raise DnsServerFailed(f"no answer from the DNS server within {timeout:.0f} s\n{error}")
        return line.strip()

    def stop(self) -> str:
        """End the process; returns what it wrote on stderr."""
        if self.process is None:
            return ""
        process, self.process = self.process, None
        if process.poll() is None:
            process.stdin.close()  # end of input: the server stops its reactor
            try:
                process.wait(timeout=REPLY_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        error = process.stderr.read()
        process.stdout.close()
        process.stderr.close()
        return error

    def __enter__(self) -> "DnsServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _readline(process: subprocess.Popen, timeout: float) -> str | None:
    import selectors
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return None
    line = process.stdout.readline()
    return line or None


# -- the server process ----------------------------------------------------------------

def _serve() -> None:
    from twisted.internet import defer, reactor, stdio
    from twisted.internet.error import CannotListenError
    from twisted.names import common, dns, server
    from twisted.protocols import basic

    class ZoneAuthority(common.ResolverBase):
        """Answers from the current zone; the zone object is replaced, never mutated."""

        def __init__(self):
            super().__init__()
            self.zone: dict = {}

        def _records(self, name: str, entry: dict, qtype: int) -> list:
            encoded = name.encode("ascii")
            records = []
            if qtype in (dns.MX, dns.ALL_RECORDS):
                for preference, exchange in entry.get("MX", ()):
                    records.append(dns.Record_MX(int(preference), exchange.rstrip(".").encode("ascii"), ttl=TTL))
            if qtype in (dns.A, dns.ALL_RECORDS):
                records += [dns.Record_A(address, ttl=TTL) for address in entry.get("A", ())]
            if qtype in (dns.AAAA, dns.ALL_RECORDS):
                records += [dns.Record_AAAA(address, ttl=TTL) for address in entry.get("AAAA", ())]
            if qtype in (dns.TXT, dns.ALL_RECORDS):
                for text in entry.get("TXT", ()):
                    data = text.encode("utf-8")
                    strings = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
                    records.append(dns.Record_TXT(*strings, ttl=TTL))
            return [dns.RRHeader(encoded, record.TYPE, dns.IN, TTL, record, auth=True) for record in records]

        def _lookup(self, name, cls, qtype, timeout):
            answers = []
            current = name.decode("ascii").lower().rstrip(".")
            for _ in range(MAX_CNAME_CHAIN):
                entry = self.zone.get(current)
                if entry is None:
                    if answers:  # the alias exists; its target does not (RFC 2308 2.1)
                        return defer.succeed((answers, [], []))
                    return defer.fail(dns.AuthoritativeDomainError(current))
                if entry == "SERVFAIL":
                    return defer.fail(dns.DNSServerError(current))
                if entry == "TIMEOUT":
                    return defer.Deferred()  # never answered
                target = entry.get("CNAME")
                if target and qtype != dns.CNAME:
                    answers.append(dns.RRHeader(current.encode("ascii"), dns.CNAME, dns.IN, TTL,
                                                dns.Record_CNAME(target.rstrip(".").encode("ascii"), ttl=TTL),
                                                auth=True))
                    current = target.lower().rstrip(".")
                    continue
                if target:
                    answers.append(dns.RRHeader(current.encode("ascii"), dns.CNAME, dns.IN, TTL,
                                                dns.Record_CNAME(target.rstrip(".").encode("ascii"), ttl=TTL),
                                                auth=True))
                    return defer.succeed((answers, [], []))
                return defer.succeed((answers + self._records(current, entry, qtype), [], []))
            return defer.fail(dns.DNSServerError("CNAME chain too long"))

    authority = ZoneAuthority()
    factory = server.DNSServerFactory(authorities=[authority])

    class Control(basic.LineReceiver):
        delimiter = b"\n"
        MAX_LENGTH = 64 * 1024 * 1024
        started = False

        def lineReceived(self, line):
            request = json.loads(line)
            authority.zone = request["zone"]
            if self.started:
                self.sendLine(b"ok")
                return
            self.started = True
            port = None
            for _ in range(20):  # the UDP port number may be taken for TCP: try another
                udp = reactor.listenUDP(0, dns.DNSDatagramProtocol(controller=factory), interface=HOST)
                port = udp.getHost().port
                try:
                    reactor.listenTCP(port, factory, interface=HOST)
                    break
                except CannotListenError:
                    udp.stopListening()
                    port = None
            if port is None:
                sys.stderr.write("no port free for both UDP and TCP\n")
                reactor.stop()
                return
            self.sendLine(f"ready {port}".encode("ascii"))

        def connectionLost(self, reason):
            if reactor.running:
                reactor.stop()

    stdio.StandardIO(Control())
    reactor.run()


if __name__ == "__main__":
    _serve()
