"""DKIM keys and signing of outgoing mail (RFC 6376, Ed25519 per RFC 8463).

Each of our domains may have two keys, an Ed25519 one and an RSA-2048 one
(RFC 8463 3: sign with both until every verifier knows Ed25519), stored as

    <data_dir>/dkim/<domain>/ed25519.pem   PKCS#8, mode 0600
    <data_dir>/dkim/<domain>/rsa.pem       PKCS#1 (what dkimpy parses), mode 0600
    <data_dir>/dkim/<domain>/selectors.json {"ed25519": "202611e", "rsa": "202611r"}

`keygen` makes them (mailserverctl dkim keygen); `DkimSigner` signs with
them, re-reading a domain's keys when its selectors.json changes, so keys
made while the daemon runs are used without a restart. Signing is CPU work:
callers run it off the reactor thread. dkimpy computes RSA signatures with
Python integers (its own pow() arithmetic: ~13 ms per 2048-bit signature
here, holding the GIL, the largest CPU cost of an outbound delivery in
bench/outbound.py); `_openssl_rsa_sign` does the same RSASSA-PKCS1-v1_5
operation (RFC 8017 8.2.1) through OpenSSL (cryptography) and is installed
as dkimpy's signing primitive. PKCS#1 v1.5 signatures are deterministic, so
the header produced is byte for byte what dkimpy's arithmetic gives.
"""

from __future__ import annotations

import base64
import json
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

RSA_BITS = 2048
TXT_STRING_MAX = 255  # RFC 1035 3.3.14: one character-string holds at most 255 octets
SELECTORS_FILE = "selectors.json"
KEY_FILES = {"ed25519": "ed25519.pem", "rsa": "rsa.pem"}
ALGORITHMS = {"ed25519": b"ed25519-sha256", "rsa": b"rsa-sha256"}
# Signed in this order; listed headers absent from a message are not signed
# (dkimpy oversigns From by default, so a second From cannot be added later).
SIGNED_HEADERS = ("from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
                  "mime-version", "content-type", "content-transfer-encoding", "content-id",
                  "content-description", "in-reply-to", "references", "list-id", "list-help",
                  "list-unsubscribe", "list-unsubscribe-post", "list-subscribe", "list-post",
                  "list-owner", "list-archive", "resent-date", "resent-from", "resent-to",
                  "resent-cc", "resent-message-id")
_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+")


class DkimKeyError(Exception):
    """Keys could not be made or read; str() is a one-line reason."""


@dataclass(frozen=True)
class DomainKey:
    kind: str           # "ed25519" | "rsa"
    selector: str
    private: bytes      # in the form dkimpy's sign() takes
    public_txt: str     # the TXT record's text (RFC 6376 3.6.1)

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey"


def normalize_domain(domain: str) -> str:
    """Lower-case ASCII (IDNA) domain; refuses anything that is not a host name (or a path)."""
    value = domain.strip().rstrip(".").lower()
    try:
        value = value.encode("idna").decode("ascii")
    except UnicodeError:
        raise DkimKeyError(f"not a valid domain: {domain!r}") from None
    if not _DOMAIN.fullmatch(value):
        raise DkimKeyError(f"not a valid domain: {domain!r}")
    return value


def key_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "dkim")


# -- keys -------------------------------------------------------------------------------

def _ed25519_txt(public: ed25519.Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode("ascii")  # RFC 8463 4.2


def _rsa_txt(public: rsa.RSAPublicKey) -> str:
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")  # RFC 6376 3.6.1


def _load_key(kind: str, selector: str, pem: bytes) -> DomainKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if kind == "ed25519" and isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
        return DomainKey(kind, selector, base64.b64encode(seed), _ed25519_txt(key.public_key()))
    if kind == "rsa" and isinstance(key, rsa.RSAPrivateKey):
        pkcs1 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption())
        return DomainKey(kind, selector, pkcs1, _rsa_txt(key.public_key()))
    raise DkimKeyError(f"{KEY_FILES[kind]} does not hold an {kind} private key")


def load_keys(data_dir: str, domain: str) -> list[DomainKey]:
    """The domain's keys (Ed25519 first), or [] when it has none."""
    directory = os.path.join(key_dir(data_dir), normalize_domain(domain))
    try:
        with open(os.path.join(directory, SELECTORS_FILE), encoding="utf-8") as handle:
            selectors = json.load(handle)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise DkimKeyError(f"{directory}/{SELECTORS_FILE}: {exc}") from None
    keys = []
    for kind in ("ed25519", "rsa"):
        selector = selectors.get(kind) if isinstance(selectors, dict) else None
        if not selector:
            continue
        try:
            with open(os.path.join(directory, KEY_FILES[kind]), "rb") as handle:
                keys.append(_load_key(kind, str(selector), handle.read()))
        except (OSError, ValueError) as exc:
            raise DkimKeyError(f"{directory}/{KEY_FILES[kind]}: {exc}") from None
    return keys


def _write_private(path: str, data: bytes) -> None:
    """Write a file readable by its owner only, atomically (temp file, fsync, rename)."""
    directory = os.path.dirname(path)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".tmp-")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def _new_selectors(old: dict, now: float) -> dict:
    """<yyyymm>e / <yyyymm>r; a letter is added when this month's name is taken, since a
    published record must not change meaning under the same selector (RFC 6376 3.1)."""
    month = time.strftime("%Y%m", time.gmtime(now))
    taken = set(old.values())
    for suffix in [""] + [chr(c) for c in range(ord("b"), ord("z") + 1)]:
        names = {"ed25519": f"{month}{suffix}e", "rsa": f"{month}{suffix}r"}
        if not taken & set(names.values()):
            return names
    raise DkimKeyError("too many key generations this month")


def keygen(data_dir: str, domain: str, now: float | None = None, replace: bool = False) -> list[DomainKey]:
    """Make an Ed25519 and an RSA-2048 key for the domain; returns them (Ed25519 first).

    Refuses when the domain has keys already, unless `replace` (new selectors
    then, so the old records can stay published while mail signed with the
    old keys is still in transit).
    """
    name = normalize_domain(domain)
    directory = os.path.join(key_dir(data_dir), name)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(key_dir(data_dir), 0o700)
    os.chmod(directory, 0o700)
    selectors_path = os.path.join(directory, SELECTORS_FILE)
    old: dict = {}
    if os.path.exists(selectors_path):
        if not replace:
            raise DkimKeyError(f"{name} has DKIM keys already ({directory}); "
                               "`mailserverctl dns` prints their records, --replace makes new ones")
        with open(selectors_path, encoding="utf-8") as handle:
            old = json.load(handle)
    selectors = _new_selectors(old if isinstance(old, dict) else {}, time.time() if now is None else now)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    _write_private(os.path.join(directory, KEY_FILES["ed25519"]), ed_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    _write_private(os.path.join(directory, KEY_FILES["rsa"]), rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    # selectors.json last: a signer that sees it finds both keys in place
    _write_private(selectors_path, json.dumps(selectors, sort_keys=True).encode("ascii"))
    return load_keys(data_dir, name)


# -- DNS records ------------------------------------------------------------------------

def txt_strings(text: str) -> str:
    """Zone-file form of a TXT value: quoted strings of at most 255 octets each."""
    parts = [text[i:i + TXT_STRING_MAX] for i in range(0, len(text), TXT_STRING_MAX)] or [""]
    return " ".join('"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"' for part in parts)


def txt_records(domain: str, keys: list[DomainKey]) -> list[str]:
    """One zone-file line per key: `<selector>._domainkey.<domain>. IN TXT "..."`."""
    name = normalize_domain(domain)
    return [f"{key.record_name}.{name}. IN TXT {txt_strings(key.public_txt)}" for key in keys]


# -- signing ----------------------------------------------------------------------------

_OPENSSL_KEYS: dict[int, rsa.RSAPrivateKey] = {}  # modulus -> key; a handful of domain keys
_OPENSSL_LOCK = threading.Lock()
_PREHASHED = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}
_dkimpy_rsa_sign = dkim.RSASSA_PKCS1_v1_5_sign


def _openssl_key(private_key: dict) -> rsa.RSAPrivateKey:
    """The cryptography key for dkimpy's parsed key (a dict of the PKCS#1 integers)."""
    modulus = private_key["modulus"]
    with _OPENSSL_LOCK:
        key = _OPENSSL_KEYS.get(modulus)
    if key is None:
        numbers = rsa.RSAPrivateNumbers(
            p=private_key["prime1"], q=private_key["prime2"], d=private_key["privateExponent"],
            dmp1=private_key["exponent1"], dmq1=private_key["exponent2"], iqmp=private_key["coefficient"],
            public_numbers=rsa.RSAPublicNumbers(private_key["publicExponent"], modulus))
        key = numbers.private_key()
        with _OPENSSL_LOCK:
            if len(_OPENSSL_KEYS) > 64:
                _OPENSSL_KEYS.clear()
            _OPENSSL_KEYS[modulus] = key
    return key


def _openssl_rsa_sign(hash, private_key):
    """dkim.crypto.RSASSA_PKCS1_v1_5_sign(hash, private_key), computed by OpenSSL."""
    algorithm = _PREHASHED.get(hash.name.lower())
    if algorithm is None:
        return _dkimpy_rsa_sign(hash, private_key)
    return _openssl_key(private_key).sign(hash.digest(), padding.PKCS1v15(), Prehashed(algorithm))


dkim.RSASSA_PKCS1_v1_5_sign = _openssl_rsa_sign  # the name dkim.DomainSigner.sign calls

class DkimSigner:
    """Signs outgoing messages with the keys of the domain they are from."""

    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        self._lock = threading.Lock()  # sign() runs on worker threads
        self._cache: dict[str, tuple[float | None, list[DomainKey]]] = {}

    @classmethod
    def from_data_dir(cls, data_dir: str) -> "DkimSigner":
        return cls(data_dir)

    def keys_for(self, domain: str) -> list[DomainKey]:
        """The domain's keys, re-read when its selectors.json changes (one stat per call)."""
        try:
            name = normalize_domain(domain)
        except DkimKeyError:
            return []
        path = os.path.join(key_dir(self.data_dir), name, SELECTORS_FILE)
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            mtime = None
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and cached[0] == mtime:
                return cached[1]
        keys = load_keys(self.data_dir, name) if mtime is not None else []
        with self._lock:
            self._cache[name] = (mtime, keys)
        return keys

    def signing_domain(self, domain: str) -> str | None:
        """The domain itself, or the nearest parent with keys (DMARC relaxed alignment, RFC 7489 3.1.1)."""
        labels = domain.strip().rstrip(".").lower().split(".")
        for start in range(len(labels) - 1):
            candidate = ".".join(labels[start:])
            if self.keys_for(candidate):
                return candidate
        return None

    def sign(self, body: bytes, domain: str) -> bytes:
        """body with DKIM-Signature headers prepended (Ed25519, then RSA), or body unchanged
        when neither the domain nor a parent has keys."""
        signing = self.signing_domain(domain)
        if signing is None:
            return body
        present = _header_names(body)
        if "from" not in present:  # RFC 6376 5.4: From must be signed; nothing to sign without it
            return body
        # From is listed twice ("oversigned") so that a From added in transit breaks the signature
        include = [name.encode("ascii") for name in ("from",) + SIGNED_HEADERS if name in present]
        headers = []
        for key in self.keys_for(signing):
            # RFC 6376 3.4: relaxed/relaxed survives the header refolding and trailing
            # whitespace changes that relays commonly make
            headers.append(dkim.sign(body, key.selector.encode("ascii"), signing.encode("ascii"), key.private,
                                     canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=ALGORITHMS[key.kind],
                                     include_headers=include))
        return b"".join(headers) + body


HEADER_SCAN_LIMIT = 1024 * 1024  # a header block larger than this is not looked into further


def _header_names(body: bytes) -> set[str]:
    """Lower-case names of the header fields of a CRLF message."""
    end = body.find(b"\r\n\r\n", 0, HEADER_SCAN_LIMIT)
    head = body[:HEADER_SCAN_LIMIT] if end < 0 else body[:end + 2]
    return {match.group(1).decode("ascii").lower()
            for match in re.finditer(rb"(?m)^([!-9;-~]+)[ \t]*:", head)}


def dns_records(domain: str, mail_host: str, keys: list[DomainKey]) -> list[str]:
    """Zone-file lines to publish for one of our domains: MX, SPF, DKIM, DMARC.

    A comment line stands in for the DKIM records when the domain has no keys.
    """
    name = normalize_domain(domain)
    lines = [
        f"{name}. IN MX 10 {mail_host.rstrip('.')}.",
        # RFC 7208: only our MX hosts send for the domain; others fail
        f"{name}. IN TXT {txt_strings('v=spf1 mx -all')}",
    ]
    lines += txt_records(name, keys) or [f"; no DKIM keys yet: mailserverctl dkim keygen {name}"]
    # RFC 7489 6.3: quarantine what fails, aggregate reports to postmaster
    lines.append(f"_dmarc.{name}. IN TXT {txt_strings(f'v=DMARC1; p=quarantine; rua=mailto:postmaster@{name}')}")
    return lines
