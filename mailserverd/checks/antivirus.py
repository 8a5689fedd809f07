"""check.antivirus: the built-in virus scanner of the body stage.

Every leaf MIME entity (RFC 2046; nested messages and any nesting depth the
message limits allow, found by mime.structure.iter_parts without recursion)
is decoded from base64 or quoted-printable (RFC 2045 6.7, 6.8) and matched
against the signatures:

    EICAR                 the anti-virus test file (eicar.org), anywhere in a part
    sha256 lists          digests of whole decoded parts or archive members
    byte patterns         byte strings anywhere in a part or member

Parts and members that are zip, gzip, bzip2, xz or tar archives are opened
and their members scanned the same way, nested archives too, within the
limits of checks.archives (an archive bomb stops the walk: refused or
quarantined per `on_limit`). The work runs in the reactor's thread pool.

Signature files (paths in [check.antivirus], relative to the configuration
file; '#' starts a comment):

    hash_files     lines "SHA256HEX [NAME]" (sha256sum's output works: the file
                   name becomes the signature name)
    pattern_files  lines "HEX NAME": the bytes, at least 4, in hexadecimal
"""

from __future__ import annotations

import binascii
import dataclasses
import hashlib
import os
import re
from typing import Iterable, Optional

from twisted.internet import threads
from twisted.logger import Logger

from ..config import parse_bool, parse_int, parse_size
from ..mime.structure import (DEFAULT_MAX_HEADER_SIZE, DEFAULT_MAX_MIME_DEPTH, DEFAULT_MAX_PARTS,
                              MessageTooComplex, iter_parts)
from ..mime.text import decode_transfer
from .archives import (HEAD_SIZE, ArchiveLimitExceeded, Budget, Limits, kind_of, members,
                       read_member)
from .base import Check, CheckContext, Verdict, register_builtin

log = Logger(namespace="mailserverd.checks.antivirus")

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_NAME = "Eicar-Test-Signature"
MIN_PATTERN = 4
MAX_DEPTH_OPTION = 20
MAX_ENCODED_MESSAGES = 3  # transfer-encoded message/rfc822 inside each other
_NAME = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?")  # printable: safe in a reply
_MANY_PATTERNS = 8  # past this, one regular expression beats a find() per pattern
# Scanned on the reactor thread, without a hop to the pool (which costs more than the
# scan itself; issue 10): messages up to INLINE_MAX bytes with no transfer encoding to
# undo and no control bytes, i.e. plain text, where no archive can hide, so the scan
# is one pass over few bytes. Everything else goes to the thread pool.
INLINE_MAX = 64 * 1024
_CONTROL = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F])
_NOT_CONTROL = bytes(byte for byte in range(256) if byte not in _CONTROL)


class Infected(Exception):
    def __init__(self, name: str, where: str):
        super().__init__(f"{name} in {where}")
        self.name, self.where = name, where


@dataclasses.dataclass(frozen=True)
class Finding:
    """The outcome of a scan that found something: kind is 'infected', 'limit' or 'encrypted'."""

    kind: str
    name: str  # the signature, the limit passed, or the encrypted member
    where: str


class Signatures:
    """Digests and byte patterns, each with the name that is logged and shown."""

    def __init__(self, hashes: Optional[dict[bytes, str]] = None,
                 patterns: Iterable[tuple[bytes, str]] = ()):
        self.hashes = dict(hashes or {})
        self.patterns = tuple(patterns)
        self.overlap = max((len(pattern) for pattern, _ in self.patterns), default=1) - 1
        self._names = {pattern: name for pattern, name in reversed(self.patterns)}
        self._regex = None
        if len(self.patterns) > _MANY_PATTERNS:
            self._regex = re.compile(b"|".join(re.escape(pattern) for pattern, _ in self.patterns))

    def find_pattern(self, data: bytes) -> Optional[str]:
        if self._regex is not None:
            match = self._regex.search(data)
            return None if match is None else self._names[match.group()]
        for pattern, name in self.patterns:
            if pattern in data:
                return name
        return None

    def match(self, data: bytes) -> Optional[str]:
        """The name of a signature `data` (a whole part or member) matches, or None."""
        if self.hashes:
            name = self.hashes.get(hashlib.sha256(data).digest())
            if name is not None:
                return name
        return self.find_pattern(data)


class StreamMatch:
    """Signatures.match over data that arrives in pieces (never held whole)."""

    def __init__(self, signatures: Signatures):
        self.signatures = signatures
        self.digest = hashlib.sha256() if signatures.hashes else None
        self.tail = b""

    def feed(self, piece: bytes) -> Optional[str]:
        if self.digest is not None:
            self.digest.update(piece)
        window = self.tail + piece
        name = self.signatures.find_pattern(window)
        overlap = self.signatures.overlap
        self.tail = window[-overlap:] if overlap else b""
        return name

    def finish(self) -> Optional[str]:
        if self.digest is None:
            return None
        return self.signatures.hashes.get(self.digest.digest())


def load_hash_file(path: str) -> dict[bytes, str]:
    hashes: dict[bytes, str] = {}
    for number, line in _lines(path):
        digest, _, name = line.partition(" ")
        name = name.strip().lstrip("*") or f"Sha256.{digest[:16].lower()}"
        if not re.fullmatch(r"[0-9A-Fa-f]{64}", digest) or not _NAME.fullmatch(name):
            raise ValueError(f"{path}:{number}: expected 'SHA256HEX [NAME]'")
        hashes[bytes.fromhex(digest)] = name
    return hashes


def load_pattern_file(path: str) -> list[tuple[bytes, str]]:
    patterns = []
    for number, line in _lines(path):
        text, _, name = line.partition(" ")
        name = name.strip()
        if (not re.fullmatch(r"(?:[0-9A-Fa-f]{2}){%d,}" % MIN_PATTERN, text)
                or not _NAME.fullmatch(name)):
            raise ValueError(f"{path}:{number}: expected 'HEX NAME' with at least {MIN_PATTERN} bytes")
        patterns.append((bytes.fromhex(text), name))
    return patterns


def _lines(path: str):
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                line = line.split("#", 1)[0].strip().replace("\t", " ")
                if line:
                    yield number, line
    except OSError as exc:
        raise ValueError(f"cannot read signature file {path}: {exc.strerror}") from None


class Scanner:
    """Scans one message at a time; thread-safe (no state outside a scan)."""

    def __init__(self, signatures: Signatures, limits: Limits = Limits(),
                 max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
                 max_mime_depth: int = DEFAULT_MAX_MIME_DEPTH):
        self.signatures, self.limits = signatures, limits
        self.max_header_size, self.max_mime_depth = max_header_size, max_mime_depth

    def scan(self, raw: bytes) -> Optional[Finding]:
        """The first infection found; else a limit passed; else an encrypted member; else None."""
        return _Scan(self).run(raw)


class _Scan:
    def __init__(self, scanner: Scanner):
        self.scanner = scanner
        self.signatures = scanner.signatures
        self.budget = Budget(scanner.limits)
        self.limit: Optional[Finding] = None
        self.encrypted: Optional[Finding] = None

    def run(self, raw: bytes) -> Optional[Finding]:
        try:
            for number, (where, data) in enumerate(self._parts(raw), 1):
                self._scan_blob(data, f"part {number}{where}", 0)
        except Infected as found:
            return Finding("infected", found.name, found.where)
        return self.limit or self.encrypted

    def _parts(self, raw: bytes, level: int = 0):
        try:
            parts = list(iter_parts(raw, max_header_size=self.scanner.max_header_size,
                                    max_mime_depth=self.scanner.max_mime_depth,
                                    max_parts=DEFAULT_MAX_PARTS))
        except MessageTooComplex:
            # unreachable after delivery's check_limits; still, scan the bytes as they are
            yield "", raw
            return
        for part in parts:
            body = raw[part.body_start:part.body_end]
            if part.is_multipart:
                continue  # a container: its entities come as parts of their own
            if part.content_type.startswith("message/") and part.content_type != "message/delivery-status":
                # RFC 2046 5.2.1 forbids base64 and quoted-printable here, but mail readers
                # decode them: so does the scan (the encoded form came as parts of its own)
                if part.transfer_encoding in ("base64", "quoted-printable") and level < MAX_ENCODED_MESSAGES:
                    yield from self._parts(_decode(body, part.transfer_encoding), level + 1)
                continue
            filename = part.disposition_params.get("filename") or part.params.get("name") or ""
            label = f" ({part.content_type}{', ' + filename if filename else ''})"
            yield label[:200], _decode(body, part.transfer_encoding)

    def _scan_blob(self, data: bytes, where: str, depth: int) -> None:
        name = self.signatures.match(data)
        if name is not None:
            raise Infected(name, where)
        kind = kind_of(data[:HEAD_SIZE], data)
        if kind is None or self.limit is not None:
            return
        if depth >= self.scanner.limits.max_depth:
            self.limit = Finding("limit", f"archives nested deeper than {self.scanner.limits.max_depth}",
                                 where)
            return
        try:
            self._walk(kind, data, where, depth + 1)
        except ArchiveLimitExceeded as exc:
            self.limit = self.limit or Finding("limit", str(exc), where)

    def _walk(self, kind: str, data: bytes, path: str, depth: int) -> None:
        for member in members(kind, data, path, self.budget):
            if member.encrypted:
                self.encrypted = self.encrypted or Finding("encrypted", "encrypted archive member",
                                                           member.path)
                continue
            chunks = read_member(member, self.budget)
            head = b""
            for piece in chunks:
                head += piece
                if len(head) >= HEAD_SIZE:
                    break
            if kind_of(head[:HEAD_SIZE]) is not None:
                # an archive inside: held whole (its bytes were charged) to be opened
                self._scan_blob(head + b"".join(chunks), member.path, depth)
                if self.limit is not None:
                    raise ArchiveLimitExceeded(self.limit.name)
                continue
            match = StreamMatch(self.signatures)
            name = match.feed(head)
            for piece in chunks:
                if name is not None:
                    break
                name = match.feed(piece)
            name = name or match.finish()
            if name is not None:
                raise Infected(name, member.path)


def _decode(body: bytes, encoding: str) -> bytes:
    """RFC 2045 6.7/6.8 decoding of a whole part. binascii skips line breaks and other
    characters outside the base64 alphabet itself, without a cleaned copy; bad padding
    falls back to the tolerant (copying) decoder."""
    if encoding == "base64":
        try:
            return binascii.a2b_base64(body)
        except binascii.Error:
            pass
    return decode_transfer(body, encoding, len(body) + 4)


# -- the check --------------------------------------------------------------------

_ACTIONS = ("accept", "quarantine", "reject")


def _action(option: str, value: str) -> str:
    value = value.strip().lower()
    if value not in _ACTIONS:
        raise ValueError(f"[check.antivirus] {option}: expected one of {', '.join(_ACTIONS)}")
    return value


class AntivirusCheck(Check):
    """Refuse infected mail at the end of DATA: 554 5.7.1 (RFC 3463 3.8 security/policy)."""

    name = "check.antivirus"

    def __init__(self, context: Optional[CheckContext] = None, eicar: str = "yes",
                 hash_files: str = "", pattern_files: str = "", max_expanded: str = "100M",
                 max_ratio: str = "100", max_depth: str = "6", max_members: str = "10000",
                 on_limit: str = "reject", on_encrypted: str = "accept"):
        self.context = context or CheckContext()
        settings = self.context.settings
        base = os.path.dirname(settings.path) if settings is not None else os.getcwd()
        hashes: dict[bytes, str] = {}
        patterns: list[tuple[bytes, str]] = [(EICAR, EICAR_NAME)] if parse_bool(eicar) else []
        for path in _paths(hash_files, base):
            hashes.update(load_hash_file(path))
        for path in _paths(pattern_files, base):
            patterns.extend(load_pattern_file(path))
        depth = parse_int(max_depth)
        if not 1 <= depth <= MAX_DEPTH_OPTION:
            raise ValueError(f"[check.antivirus] max_depth: between 1 and {MAX_DEPTH_OPTION}")
        limits = Limits(max_expanded=parse_size(max_expanded), max_ratio=max(1, parse_int(max_ratio)),
                        max_depth=depth, max_members=parse_int(max_members))
        message_limits = getattr(settings, "limits", None)
        self.scanner = Scanner(Signatures(hashes, patterns), limits,
                               getattr(message_limits, "max_header_size", DEFAULT_MAX_HEADER_SIZE),
                               getattr(message_limits, "max_mime_depth", DEFAULT_MAX_MIME_DEPTH))
        self.on_limit = _action("on_limit", on_limit)
        self.on_encrypted = _action("on_encrypted", on_encrypted)

    def body(self, session, envelope, message: bytes):
        reactor = self.context.reactor
        if reactor is None or plain_text(message):  # (or unit tests without a reactor): scan in line
            return self.verdict(session, envelope, self.scanner.scan(message))
        scanning = threads.deferToThreadPool(reactor, reactor.getThreadPool(), self.scanner.scan, message)
        return scanning.addCallback(lambda finding: self.verdict(session, envelope, finding))

    def verdict(self, session, envelope, finding: Optional[Finding]) -> Optional[Verdict]:
        if finding is None:
            return None
        log.info("message {id} from {ip}: {kind} {name} in {where}", id=envelope.id,
                 ip=session.remote_ip, kind=finding.kind, name=finding.name, where=finding.where)
        if finding.kind == "infected":
            return Verdict.reject(554, "5.7.1", f"Message refused: virus found ({finding.name})")
        action = self.on_limit if finding.kind == "limit" else self.on_encrypted
        if action == "reject":
            reason = ("an archive exceeds the scanning limits" if finding.kind == "limit"
                      else "an encrypted archive cannot be scanned")
            return Verdict.reject(554, "5.7.1", f"Message refused: {reason}")
        if action == "quarantine":
            return Verdict.quarantine(f"unscanned: {finding.name}",
                                      [("X-Antivirus-Status", f"Unscanned ({finding.name})")])
        return None


def plain_text(message: bytes) -> bool:
    """Cheap pre-scan: small, no base64 / quoted-printable / uuencode anywhere, no control
    bytes (every archive format has some: NUL padding, gzip's 1F 8B, zip's 03 04)."""
    if len(message) > INLINE_MAX or message.translate(None, _NOT_CONTROL):
        return False
    lowered = message.lower()
    return b"base64" not in lowered and b"quoted-printable" not in lowered and b"uue" not in lowered


def _paths(value: str, base: str) -> list[str]:
    return [os.path.join(base, part.strip()) for part in value.split(",") if part.strip()]


register_builtin(AntivirusCheck.name, AntivirusCheck)
