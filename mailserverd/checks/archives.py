"""A bounded walk through zip, gzip, bzip2, xz and tar archives, for content scanners.

Archive bombs are the threat: a 1 MB zip member that inflates to 1 GB, a zip
nested in a zip sixteen times per level (42.zip), a zip that contains itself,
a tar with a sparse member of a terabyte. So nothing here ever asks a library
for "the whole member": every member is decompressed as a stream of at most
CHUNK-byte pieces (zlib/bz2/lzma with max_length), and each piece is charged
to a Budget that stops the walk as soon as any limit is passed:

    max_expanded   bytes produced by decompression/extraction, whole walk
    max_ratio      expanded / compressed size of one member, once past RATIO_FLOOR
    max_depth      archives inside archives
    max_members    members of all archives together

Zip members are read from their raw bytes (local header, RFC-less PKWARE
APPNOTE 4.3.7 and 4.4) rather than through zipfile's ZipExtFile, because that
class decompresses bzip2 and LZMA members without an output cap.

A member that is itself an archive is held in memory (it counts against
max_expanded) so that it can be opened; any other member streams through the
caller's scanner and is never held whole.
"""

from __future__ import annotations

import bz2
import dataclasses
import io
import lzma
import struct
import tarfile
import zipfile
import zlib
from typing import Callable, Iterator, Optional

CHUNK = 64 * 1024  # most bytes one decompression step may produce
INPUT_CHUNK = 16 * 1024
RATIO_FLOOR = 1024 * 1024  # small members legitimately compress 1000:1 (a page of spaces)
ZIP_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # APPNOTE 4.3.7, 30 bytes
_ZIP_TAIL = 65536 + 22  # the end of central directory record sits in the last 64 KiB + 22 bytes


class ArchiveLimitExceeded(Exception):
    """The walk stopped at a limit; str(exc) says which (an archive bomb, or close to one)."""


class EncryptedMember(Exception):
    """A member cannot be read without a password."""


class UnsupportedMethod(EncryptedMember):
    """A zip member compressed with a method we cannot expand (e.g. Deflate64, PPMd):
    like an encrypted one, it has no bytes to scan and follows the on_encrypted policy,
    rather than being skipped as if it were harmless."""


@dataclasses.dataclass
class Limits:
    max_expanded: int = 100 * 1024 * 1024
    max_ratio: int = 100
    max_depth: int = 6
    max_members: int = 10000


class Budget:
    """What one walk (one message) may still spend."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.expanded = 0
        self.members = 0

    def charge(self, size: int) -> None:
        self.expanded += size
        if self.expanded > self.limits.max_expanded:
            raise ArchiveLimitExceeded(f"archives expand to more than {self.limits.max_expanded} bytes")

    def count_member(self) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise ArchiveLimitExceeded(f"archives hold more than {self.limits.max_members} members")


def kind_of(head: bytes, data: Optional[bytes] = None) -> Optional[str]:
    """'zip', 'gzip', 'bzip2', 'xz', 'tar' or None, from magic numbers (never from names)."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh") and head[3:4].isdigit():
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head[257:262] == b"ustar":  # POSIX.1-1988 ustar and GNU tar headers
        return "tar"
    if data is not None and b"PK\x05\x06" in data[-_ZIP_TAIL:] and b"PK\x03\x04" in data:
        return "zip"  # a zip behind a prefix, e.g. a self-extracting executable
    return None


HEAD_SIZE = 262  # bytes kind_of() needs to recognise every kind


# -- bounded decompression ------------------------------------------------------

def _inflate_zlib(raw: bytes, wbits: int, multi: bool) -> Iterator[bytes]:
    """Output of a zlib/deflate/gzip stream in pieces of at most CHUNK bytes. Input goes
    in INPUT_CHUNK slices, so the decompressor's unconsumed tail stays small."""
    decompressor, position, pending = zlib.decompressobj(wbits), 0, b""
    while True:
        if not pending:
            if position >= len(raw):
                return  # truncated stream: what came out has been scanned
            pending = raw[position:position + INPUT_CHUNK]
            position += INPUT_CHUNK
        piece = decompressor.decompress(pending, CHUNK)
        pending = decompressor.unconsumed_tail
        if piece:
            yield piece
        if decompressor.eof:
            raw, position = decompressor.unused_data + raw[position:], 0
            if multi and raw[:2] == b"\x1f\x8b":  # RFC 1952 2.2: members follow each other
                decompressor, pending = zlib.decompressobj(wbits), b""
                continue
            return


def _inflate_stream(make: Callable, raw: bytes, multi: bool) -> Iterator[bytes]:
    """The same for bz2/lzma decompressors (which buffer input and report needs_input)."""
    decompressor, position = make(), 0
    while True:
        data = b""
        if decompressor.needs_input:
            if position >= len(raw):
                return  # truncated
            data = raw[position:position + INPUT_CHUNK]
            position += INPUT_CHUNK
        piece = decompressor.decompress(data, CHUNK)
        if piece:
            yield piece
        if decompressor.eof:
            raw, position = decompressor.unused_data + raw[position:], 0
            if multi and raw:
                decompressor = make()
                continue
            return


def _zip_lzma(raw: bytes) -> Iterator[bytes]:
    # APPNOTE 5.8.8: version (2 bytes), properties size (2), LZMA1 properties, raw stream
    if len(raw) < 4:
        return iter(())
    size = struct.unpack("<H", raw[2:4])[0]
    filters = [lzma._decode_filter_properties(lzma.FILTER_LZMA1, bytes(raw[4:4 + size]))]  # as zipfile does
    return _inflate_stream(lambda: lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters),
                           raw[4 + size:], multi=False)


def _zip_member(data: bytes, info: zipfile.ZipInfo) -> Iterator[bytes]:
    if info.flag_bits & 0x1:  # APPNOTE 4.4.4 bit 0: encrypted
        raise EncryptedMember(info.filename)
    fields = ZIP_LOCAL_HEADER.unpack_from(data, info.header_offset)
    if fields[0] != b"PK\x03\x04":
        raise zipfile.BadZipFile("bad local header")
    start = info.header_offset + ZIP_LOCAL_HEADER.size + fields[-2] + fields[-1]
    raw = memoryview(data)[start:start + info.compress_size]  # no copy of the member
    method = info.compress_type
    if method == zipfile.ZIP_STORED:
        return (bytes(raw[offset:offset + CHUNK]) for offset in range(0, len(raw), CHUNK))
    if method == zipfile.ZIP_DEFLATED:
        return _inflate_zlib(raw, -15, multi=False)
    if method == zipfile.ZIP_BZIP2:
        return _inflate_stream(bz2.BZ2Decompressor, raw, multi=False)
    if method == zipfile.ZIP_LZMA:
        return _zip_lzma(raw)
    raise UnsupportedMethod(f"{info.filename}: zip compression method {method}")


# -- the walk -------------------------------------------------------------------

@dataclasses.dataclass
class Member:
    """One member: its path (archive names joined by '/'), a stream of its bytes, and
    the compressed size that the ratio limit compares against."""

    path: str
    chunks: Iterator[bytes]
    compressed: int
    encrypted: bool = False  # a zip member that needs a password: no bytes to scan
    charged: bool = True  # False for tar members: slices of bytes already charged, not expansion


def members(kind: str, data: bytes, path: str, budget: Budget) -> Iterator[Member]:
    """The members of one archive held in `data`. Broken archives end the iteration
    quietly (what was read is still scanned); an encrypted zip member comes with
    encrypted=True and no bytes."""
    if kind == "zip":
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            infos = archive.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, struct.error, EOFError):
            return
        for info in infos:
            if info.is_dir():
                continue
            budget.count_member()
            name = f"{path}/{info.filename}"
            try:
                chunks = _zip_member(data, info)
            except EncryptedMember:
                yield Member(name, iter(()), info.compress_size, encrypted=True)
                continue
            except (zipfile.BadZipFile, struct.error, lzma.LZMAError):
                continue
            yield Member(name, chunks, info.compress_size)
    elif kind == "tar":
        try:
            archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
        except (tarfile.TarError, OSError, ValueError, EOFError):
            return
        while True:
            try:
                info = archive.next()
            except (tarfile.TarError, OSError, ValueError, EOFError):
                return
            if info is None:
                return
            budget.count_member()
            if not info.isfile():
                continue
            reader = archive.extractfile(info)
            # a sparse member can be far larger than the archive: charged like inflation
            yield Member(f"{path}/{info.name}", iter(lambda r=reader: r.read(CHUNK), b""), len(data),
                         charged=info.issparse())
    else:
        budget.count_member()
        stream = {"gzip": lambda: _inflate_zlib(data, 31, multi=True),
                  "bzip2": lambda: _inflate_stream(bz2.BZ2Decompressor, data, multi=True),
                  "xz": lambda: _inflate_stream(lzma.LZMADecompressor, data, multi=True)}[kind]()
        yield Member(f"{path}/({kind})", stream, len(data))


def read_member(member: Member, budget: Budget) -> Iterator[bytes]:
    """member.chunks, charged to the budget and held to the ratio limit. Decoder
    errors end the stream (a corrupt member is scanned as far as it decodes)."""
    expanded = 0
    ratio_cap = max(RATIO_FLOOR, budget.limits.max_ratio * max(member.compressed, 1))
    try:
        for piece in member.chunks:
            expanded += len(piece)
            if member.charged:
                budget.charge(len(piece))
            if expanded > ratio_cap:
                raise ArchiveLimitExceeded(
                    f"{member.path} expands more than {budget.limits.max_ratio} times")
            yield piece
    except (zlib.error, OSError, EOFError, lzma.LZMAError, tarfile.TarError, ValueError):
        return
