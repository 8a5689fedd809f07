"""TLS for every listener: one pyOpenSSL context, TLS 1.2 or newer.

The certificate and key come from [tls] cert/key, or a self-signed pair is
generated under data_dir on first start. reload() (SIGHUP) swaps in a fresh
context; connections already open keep the old one.
"""

from __future__ import annotations

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface import implementer

# Mozilla "intermediate" cipher list for TLS 1.2; TLS 1.3 suites are fixed by OpenSSL.
CIPHERS = (b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
           b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
           b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")


class TLSError(Exception):
    """Unreadable or mismatched certificate/key; str() names the file."""


def ensure_self_signed(data_dir: str, hostname: str) -> tuple[str, str]:
    """Paths of a self-signed P-256 pair under data_dir/tls, created if absent."""
    directory = os.path.join(data_dir, "tls")
    cert_path = os.path.join(directory, "selfsigned.crt")
    key_path = os.path.join(directory, "selfsigned.key")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .sign(key, hashes.SHA256()))
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    fd = os.open(key_path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    with open(cert_path + ".tmp", "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(key_path + ".tmp", key_path)
    os.replace(cert_path + ".tmp", cert_path)
    return cert_path, key_path


@implementer(IOpenSSLServerConnectionCreator)
class _ContextFactory:
    """What transport.startTLS and SSL4ServerEndpoint want. It reads the
    current context at each handshake, so SIGHUP reloads reach new connections."""

    def __init__(self, owner: "TLSConfig"):
        self._owner = owner

    def getContext(self):
        return self._owner.context

    def serverConnectionForTLS(self, tls_protocol):
        return SSL.Connection(self._owner.context, None)


class TLSConfig:
    def __init__(self, cert_path: str, key_path: str):
        self.cert_path = cert_path
        self.key_path = key_path
        self.context = self._load()
        self._factory = _ContextFactory(self)

    @classmethod
    def from_settings(cls, settings) -> "TLSConfig":
        if settings.tls.cert:
            return cls(settings.tls.cert, settings.tls.key)
        cert, key = ensure_self_signed(settings.server.data_dir, settings.server.hostname)
        return cls(cert, key)

    def _load(self) -> SSL.Context:
        for label, path in (("cert", self.cert_path), ("key", self.key_path)):
            if not os.access(path, os.R_OK):
                raise TLSError(f"[tls] {label}: cannot read {path}")
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
        context.set_cipher_list(CIPHERS)
        try:
            context.use_certificate_chain_file(self.cert_path.encode())
            context.use_privatekey_file(self.key_path.encode())
            context.check_privatekey()
        except SSL.Error as exc:
            raise TLSError(f"[tls] cert/key: {self.cert_path} and {self.key_path} are not a "
                           f"usable PEM pair: {exc}") from None
        return context

    def reload(self) -> None:
        """Re-read cert and key (SIGHUP); on error keep serving the old ones."""
        self.context = self._load()

    def server_context_factory(self) -> _ContextFactory:
        return self._factory

    def certificate_pem(self) -> bytes:
        with open(self.cert_path, "rb") as handle:
            return handle.read()


__all__ = ["TLSConfig", "TLSError", "ensure_self_signed"]
