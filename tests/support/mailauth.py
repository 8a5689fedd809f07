"""Helpers for the email-authentication tests: DKIM keys, signed messages, a resolver.

Keys are made in the test (RSA 1024 bits: the smallest dkimpy accepts, and fast);
messages are signed with dkimpy; the resolver is check.auth's CachingResolver
pointed at a tests.support.dnsserver.DnsServer.
"""

from __future__ import annotations

import base64
import functools

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailserverd.checks.dns import CachingResolver


@functools.lru_cache(maxsize=8)
def rsa_key(label: str = "a", bits: int = 1024) -> tuple[bytes, str]:
    """(PKCS#1 private key PEM, DKIM key record "v=DKIM1; k=rsa; p=...") for one label."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode("ascii")


def message(from_address: str = "alice@example.com", subject: str = "Hello", body: str = "Hi there.\r\n",
            extra: str = "") -> bytes:
    return (f"From: Alice <{from_address}>\r\nTo: bob@example.test\r\nSubject: {subject}\r\n"
            f"Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@{from_address.split('@')[1]}>\r\n"
            f"{extra}\r\n{body}").encode("utf-8")


def sign(raw: bytes, domain: str, selector: str = "sel", label: str = "a") -> bytes:
    """`raw` with a DKIM-Signature by `domain` prepended (relaxed/simple, rsa-sha256)."""
    private, _ = rsa_key(label)
    signature = dkim.sign(raw, selector.encode(), domain.encode(), private,
                          include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return signature + raw


def arc_seal(raw: bytes, domain: str, authserv_id: str, selector: str = "arc", label: str = "arc",
             results: str = "") -> bytes:
    """`raw` as forwarded by `domain`: its Authentication-Results and a new ARC set on top."""
    private, _ = rsa_key(label)
    authres = f"Authentication-Results: {authserv_id}; {results or 'dkim=pass header.d=' + domain}\r\n".encode()
    sealed = authres + raw
    headers = dkim.arc_sign(sealed, selector.encode(), domain.encode(), private, authserv_id.encode(),
                            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return b"".join(headers) + sealed


def key_record(label: str = "a") -> str:
    return rsa_key(label)[1]


def resolver(dns_server, clock=None, timeout: float = 2.0) -> CachingResolver:
    return CachingResolver([dns_server.address], timeout=timeout, clock=clock)
