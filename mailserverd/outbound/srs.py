"""SRS, the Sender Rewriting Scheme, for the envelope sender of mail we forward.

A forwarded message leaves with MAIL FROM in our domain, so that SPF (RFC
7208) at the next hop checks our servers, not the original sender's; bounces
to that address come back to us and are routed to the original sender. The
address forms are those of Shevek's "Sender Rewriting Scheme" draft
(libsrs2, Mail::SRS; https://www.libsrs2.org/srs/srs.pdf), "guarded" variant:

    SRS0=HHH=TT=orig-domain=orig-local@forwarder        first forwarder
    SRS1=HHH=first-forwarder==HHH=TT=domain=local@us    an SRS0 address forwarded again

TT is the day (days since the epoch, modulo 1024) in two base32 characters
(draft 3.3); an address older than MAX_AGE days is refused, so a harvested
bounce address stops working. HHH is a keyed hash over the rest (draft 3.4),
so nobody can make us relay to an address of their choice: here the first
HASH_LENGTH characters of the base32 HMAC-SHA256 of the lower-cased fields
(the draft leaves function and length to the implementation; base32 of
lower-cased input survives MTAs that lower-case local parts, which the
draft's base64 does not).

The secret lives in <data_dir>/srs/secret (made on first use, mode 0600, one
hex secret a line): the first line signs, every line verifies, so a new
secret can be put first while addresses made with the old one still work.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from typing import Callable

BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # RFC 4648 6, as the draft's timestamp uses
TICK = 86400  # one timestamp unit: a day
TICK_SLOTS = 1024  # two base32 characters (draft 3.3: the timestamp wraps)
MAX_AGE = 21  # days a bounce address stays valid (libsrs2's and Mail::SRS's default)
HASH_LENGTH = 8  # base32 characters: 40 bits
SECRET_FILE = os.path.join("srs", "secret")


class SrsError(ValueError):
    """Not a valid SRS address of ours (forged, tampered with, expired or malformed)."""


def is_srs(local: str) -> bool:
    """True for a local part in SRS0 or SRS1 form (draft 3.1: the tags are case-insensitive)."""
    return local[:5].upper() in ("SRS0=", "SRS1=")


def load_secrets(data_dir: str) -> list[bytes]:
    """The secrets of <data_dir>/srs/secret, creating the file with one new secret if absent."""
    path = os.path.join(data_dir, SECRET_FILE)
    try:
        with open(path, "rb") as handle:
            lines = [line.strip() for line in handle.read().splitlines() if line.strip()]
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        try:  # O_EXCL: two processes starting at once agree on one secret
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_secrets(data_dir)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_hex(32).encode("ascii") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        return load_secrets(data_dir)
    if not lines:
        raise SrsError(f"{path} holds no secret")
    return lines


class SRS:
    """forward() makes the rewritten sender; reverse() checks and undoes it.

    secrets: the keys (the first signs); clock: seconds() (the reactor or a test clock).
    """

    def __init__(self, keys: list[bytes], clock=None, max_age: int = MAX_AGE):
        if not keys:
            raise ValueError("SRS needs at least one secret")
        self.keys = list(keys)
        self.max_age = max_age
        self._now: Callable[[], float] = clock.seconds if clock is not None else time.time

    @classmethod
    def from_data_dir(cls, data_dir: str, clock=None) -> "SRS":
        return cls(load_secrets(data_dir), clock)

    # -- the pieces (draft 3.3, 3.4) ---------------------------------------------------

    def _hash(self, key: bytes, *fields: str) -> str:
        data = "\0".join(field.lower() for field in fields).encode("utf-8")
        digest = hmac.new(key, data, hashlib.sha256).digest()
        return base64.b32encode(digest).decode("ascii")[:HASH_LENGTH]

    def _valid_hash(self, given: str, *fields: str) -> bool:
        given = given.upper()
        return any(hmac.compare_digest(given, self._hash(key, *fields)) for key in self.keys)

    def _today(self) -> int:
        return int(self._now() // TICK) % TICK_SLOTS

    def timestamp(self) -> str:
        today = self._today()
        return BASE32[today >> 5] + BASE32[today & 31]

    def _fresh(self, stamp: str) -> bool:
        stamp = stamp.upper()
        if len(stamp) != 2 or any(char not in BASE32 for char in stamp):
            return False
        then = BASE32.index(stamp[0]) << 5 | BASE32.index(stamp[1])
        age = (self._today() - then) % TICK_SLOTS  # the day count wraps every 1024 days
        return age <= self.max_age

    # -- the scheme ----------------------------------------------------------------------

    def forward(self, sender: str, domain: str) -> str:
        """The envelope sender for mail from `sender` forwarded by `domain`.

        The null reverse-path stays null (bounces are never bounced, RFC 5321 4.5.5);
        an SRS0/SRS1 address of another forwarder becomes SRS1 (draft 3.2), not a
        second, longer SRS0."""
        if not sender:
            return ""
        local, at, sender_domain = sender.rpartition("@")
        if not at or not local:
            raise SrsError(f"not an address: {sender!r}")
        key = self.keys[0]
        if local[:5].upper() == "SRS0=":
            rest = local[4:]  # "=HHH=TT=domain=local", kept as is
            return f"SRS1={self._hash(key, sender_domain, rest)}={sender_domain}={rest}@{domain}"
        if local[:5].upper() == "SRS1=":
            parts = local[5:].split("=", 2)  # HHH, first forwarder, "=HHH=TT=..."
            if len(parts) == 3 and parts[1]:
                first, rest = parts[1], parts[2]
                return f"SRS1={self._hash(key, first, rest)}={first}={rest}@{domain}"
        stamp = self.timestamp()
        return f"SRS0={self._hash(key, stamp, sender_domain, local)}={stamp}={sender_domain}={local}@{domain}"

    def reverse(self, local: str) -> str:
        """The address an SRS local part of ours stands for; SrsError if forged or expired.

        SRS0 gives the original sender; SRS1 gives the first forwarder's SRS0 address
        (which that forwarder checks and reverses in turn)."""
        tag = local[:5].upper()
        if tag == "SRS0=":
            parts = local[5:].split("=", 3)  # HHH, TT, domain, local (which may hold "=")
            if len(parts) != 4 or not all(parts):
                raise SrsError("malformed SRS0 address")
            given, stamp, domain, original = parts
            if not self._valid_hash(given, stamp, domain, original):
                raise SrsError("SRS0 hash does not verify")
            if not self._fresh(stamp):
                raise SrsError("SRS0 address has expired")
            return f"{original}@{domain}"
        if tag == "SRS1=":
            parts = local[5:].split("=", 2)
            if len(parts) != 3 or not parts[0] or not parts[1] or not parts[2].startswith("="):
                raise SrsError("malformed SRS1 address")
            given, first, rest = parts
            if not self._valid_hash(given, first, rest):
                raise SrsError("SRS1 hash does not verify")
            return f"SRS0{rest}@{first}"
        raise SrsError("not an SRS address")
