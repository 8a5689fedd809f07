"""bench/authcost: CPU cost per message of check.auth (SPF, DKIM, DMARC, ARC, the A-R field).

Real corpus messages, resolved through a loopback DNS server
(tests/support/dnsserver.py) that publishes, for each sampled From: domain,
an SPF record, a DMARC record (p=none) and a DKIM key. Each message is
measured twice: as it is (2002 mail: no DKIM signature), and DKIM-signed for
its From: domain with a 2048-bit RSA key (the usual key size today). The DNS
cache starts empty, so the first message of each domain pays its lookups.
CPU is process time of the checking thread's process (the DNS server is
another process), p50/p99 in ms.

    .venv/bin/python bench/authcost.py [--messages 500] [--seed 1]

(bench/filter.py runs it too, unless --auth-messages 0.)
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

CLIENT_IP = "192.0.2.25"


def _percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _key(bits: int = 2048):
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode("ascii")


def auth_cost(messages: list[bytes], limit: int = 500, seed: int = 1) -> dict[str, list[float]]:
    """{"as is": [ms...], "signed": [ms...]}: check.auth's evaluate() per message."""
    import dkim

    from mailserverd.checks.auth import evaluate, from_domains
    from mailserverd.checks.dns import CachingResolver
    from tests.support.dnsserver import DnsServer

    sample = random.Random(seed).sample(messages, min(limit, len(messages)))
    private, record = _key()
    zone = {}
    for raw in sample:
        for domain in from_domains(raw)[:1]:
            zone[domain] = {"TXT": ["v=spf1 ip4:192.0.2.0/24 ~all"]}
            zone[f"_dmarc.{domain}"] = {"TXT": ["v=DMARC1; p=none"]}
            zone[f"sel._domainkey.{domain}"] = {"TXT": [record]}
    signed = []
    for raw in sample:
        domains = from_domains(raw)
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if domains:
            try:
                raw = dkim.sign(raw, b"sel", domains[0].encode(), private) + raw
            except Exception:  # a From: domain dkimpy cannot sign for (8-bit, odd syntax)
                pass
        signed.append(raw)
    costs: dict[str, list[float]] = {"as is": [], "signed": []}
    passed = {"as is": 0, "signed": 0}
    from mailserverd.checks.dmarc import organizational_domain
    organizational_domain("example.com")  # loads the Public Suffix List once per process (~0.1 s)
    with DnsServer(zone) as server:
        for name, batch in (("as is", sample), ("signed", signed)):
            resolver = CachingResolver([server.address], timeout=5.0)
            for raw in batch:
                domains = from_domains(raw)
                mail_from = f"bounce@{domains[0]}" if domains else ""
                before = time.process_time()
                results = evaluate(resolver, CLIENT_IP, "mail.sender.test", mail_from, raw)
                costs[name].append(1000 * (time.process_time() - before))
                passed[name] += any(item.result == "pass" for item in results.dkim)
    for name, count in passed.items():
        print(f"{name}: {count} of {len(sample)} messages with a DKIM pass")
    return costs


def report(costs: dict[str, list[float]]) -> None:
    for name, values in costs.items():
        print(f"check.auth ({name}): p50 {_percentile(values, 0.5):.2f} ms, p99 {_percentile(values, 0.99):.2f} ms "
              f"CPU over {len(values)} messages (cold DNS cache, loopback DNS server)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    from bench.corpus import sample_messages
    messages = sample_messages(3000)
    report(auth_cost(messages, args.messages, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
