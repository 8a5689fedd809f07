"""check.antivirus (mailserverd/checks/antivirus.py, archives.py): EICAR in every wrapping,
signature files, and archive bombs stopped within their limits."""

from __future__ import annotations

import base64
import bz2
import gzip
import hashlib
import io
import lzma
import mailbox
import os
import struct
import subprocess
import sys
import tarfile
import time
import tracemalloc
import zipfile
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserverd.checks.antivirus import EICAR, EICAR_NAME, AntivirusCheck, Scanner, Signatures
from mailserverd.checks.archives import Limits
from mailserverd.checks.base import CheckContext, Envelope, Session, load_check

DATA = os.path.join(os.path.dirname(__file__), "..", "data")
SESSION = Session(id="s1", mode="smtp", remote_ip="192.0.2.7", remote_port=4000, hostname="mx.test")
ENVELOPE = Envelope(id="e1", mail_from="a@remote.test", params=None)


def scanner(**limits) -> Scanner:
    return Scanner(Signatures(patterns=[(EICAR, EICAR_NAME)]), Limits(**limits))


def message_with(attachment: bytes, filename: str = "file.bin",
                 content_type: str = "application/octet-stream") -> bytes:
    """A multipart/mixed message with a text part and `attachment` in base64."""
    encoded = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    return (b"From: a@remote.test\r\nTo: alice@example.test\r\nSubject: file\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
            b"--XX\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
            b"--XX\r\nContent-Type: " + content_type.encode() + b"; name=\"" + filename.encode() + b"\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=\"" + filename.encode() + b"\"\r\n\r\n"
            + encoded + b"--XX--\r\n")


def zip_of(files: dict, method=zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=method) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def tar_of(files: dict, mode="w") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_eicar_in_a_plain_body_is_found():
    """The EICAR string in a 7bit text body is found, with its signature name."""
    raw = b"From: a@remote.test\r\nSubject: t\r\n\r\nhello\r\n" + EICAR + b"\r\n"
    finding = scanner().scan(raw)
    assert (finding.kind, finding.name) == ("infected", EICAR_NAME)


def test_eicar_in_a_base64_attachment_is_found():
    """RFC 2045 6.8: a base64 part is decoded before matching (the encoded text never matches)."""
    finding = scanner().scan(message_with(EICAR, "eicar.com"))
    assert finding.kind == "infected" and "eicar.com" in finding.where


def test_eicar_split_by_a_quoted_printable_soft_break_is_found():
    """RFC 2045 6.7: soft line breaks are removed before matching."""
    qp = EICAR[:30] + b"=\r\n" + EICAR[30:]
    raw = (b"From: a@remote.test\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
           b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp + b"\r\n")
    assert EICAR not in raw
    assert scanner().scan(raw).kind == "infected"


def test_eicar_in_an_attached_message_is_found():
    """RFC 2046 5.2: a message/rfc822 part is walked into; its own base64 part is decoded."""
    inner = message_with(EICAR)
    raw = (b"From: a@remote.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
           b"--b1\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--b1--\r\n")
    assert scanner().scan(raw).kind == "infected"


def test_eicar_in_a_base64_encoded_attached_message_is_found():
    """A message/rfc822 part in base64 (RFC 2046 5.2.1 forbids it; readers decode it anyway)
    is decoded and walked as a message."""
    inner = base64.encodebytes(message_with(EICAR)).replace(b"\n", b"\r\n")
    raw = (b"From: a@remote.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
           b"--b1\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + inner + b"--b1--\r\n")
    assert scanner().scan(raw).kind == "infected"


@pytest.mark.parametrize("wrap", [
    pytest.param(lambda data: zip_of({"eicar.com": data}), id="zip"),
    pytest.param(lambda data: zip_of({"eicar.com": data}, zipfile.ZIP_STORED), id="zip-stored"),
    pytest.param(lambda data: zip_of({"eicar.com": data}, zipfile.ZIP_BZIP2), id="zip-bzip2"),
    pytest.param(lambda data: zip_of({"eicar.com": data}, zipfile.ZIP_LZMA), id="zip-lzma"),
    pytest.param(lambda data: zip_of({"a/b.zip": zip_of({"c.zip": zip_of({"eicar.com": data})})}),
                 id="zip-in-zip-in-zip"),
    pytest.param(lambda data: gzip.compress(data), id="gzip"),
    pytest.param(lambda data: gzip.compress(b"x") + gzip.compress(data), id="gzip-second-member"),
    pytest.param(lambda data: bz2.compress(data), id="bzip2"),
    pytest.param(lambda data: lzma.compress(data), id="xz"),
    pytest.param(lambda data: tar_of({"readme": b"hi", "eicar.com": data}), id="tar"),
    pytest.param(lambda data: tar_of({"eicar.com": data}, "w:gz"), id="tar.gz"),
    pytest.param(lambda data: zip_of({"x.tar.gz": tar_of({"in.zip": zip_of({"e": data})}, "w:gz")}),
                 id="zip-tgz-zip"),
    pytest.param(lambda data: b"MZ stub of a self-extractor" + zip_of({"eicar.com": data}), id="sfx-zip"),
])
def test_eicar_inside_archives_is_found(wrap):
    """Archives (nested too) in an attachment are opened and their members scanned."""
    finding = scanner().scan(message_with(wrap(EICAR), "archive.bin"))
    assert finding is not None and finding.kind == "infected", finding


def test_eicar_across_a_stream_chunk_boundary_is_found():
    """A pattern straddling two decompressed pieces (64 KiB each) is still found."""
    data = b"A" * (64 * 1024 - 20) + EICAR + b"B" * 1000
    assert scanner().scan(message_with(zip_of({"big.txt": data}))).kind == "infected"


def test_clean_real_mail_passes():
    """Real messages (ham and spam of the test corpus) have no findings."""
    box = mailbox.mbox(os.path.join(DATA, "ham-200.mbox"))
    scan = scanner()
    for number, message in enumerate(box):
        assert scan.scan(message.as_bytes()) is None
        if number == 60:
            break


def test_sha256_and_pattern_files_are_loaded_relative_to_the_config(tmp_path):
    """hash_files (sha256sum format) and pattern_files (HEX NAME) add named signatures."""
    payload = b"\x7fELF pretend malware body" * 10
    (tmp_path / "bad.sha256").write_text(f"{hashlib.sha256(payload).hexdigest()}  *Trojan.Test\n")
    (tmp_path / "bad.pat").write_text("# comment\n" + b"evil-marker".hex() + " Pattern.Evil\n")
    settings = type("S", (), {"path": str(tmp_path / "mailserverd.conf")})()
    check = AntivirusCheck(CheckContext(settings=settings), hash_files="bad.sha256",
                           pattern_files="bad.pat")
    assert check.scanner.scan(message_with(zip_of({"x": payload}))).name == "Trojan.Test"
    assert check.scanner.scan(message_with(b"..evil-marker..")).name == "Pattern.Evil"
    assert check.scanner.scan(message_with(payload + b"!")) is None


def test_bad_signature_lines_name_file_and_line(tmp_path):
    """A malformed line stops start-up with file:line (ValueError -> ConfigError)."""
    (tmp_path / "bad.pat").write_text("00 Short\n")
    with pytest.raises(ValueError, match=r"bad.pat:1"):
        AntivirusCheck(pattern_files=str(tmp_path / "bad.pat"))
    with pytest.raises(ValueError, match="on_limit"):
        AntivirusCheck(on_limit="bounce")


def test_infected_mail_is_refused_with_554_5_7_1():
    """An infected message gets 554 5.7.1 naming the signature."""
    verdict = AntivirusCheck().body(SESSION, ENVELOPE, message_with(zip_of({"e": EICAR})))
    assert (verdict.code, verdict.enhanced) == (554, "5.7.1") and EICAR_NAME in verdict.text


# -- archive bombs -------------------------------------------------------------------

def raw_zip(name: bytes, compressed: bytes, size: int, method: int = 8) -> bytes:
    """A zip with one member whose compressed bytes are given (CRC left 0: it is never reached)."""
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, method, 0, 0, 0, len(compressed),
                        min(size, 0xFFFFFFFF), len(name), 0) + name
    central = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, method, 0, 0, 0, len(compressed),
                          min(size, 0xFFFFFFFF), len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(central),
                      len(local) + len(compressed), 0)
    return local + compressed + central + end


def gigabyte_bomb() -> bytes:
    """About 1 MB of deflate that inflates to 1 GiB of zeros (identical full-flush blocks)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return raw_zip(b"zeros.bin", block * 1024 + b"\x03\x00", 1 << 30)


def test_gigabyte_zip_bomb_is_stopped_quickly_in_bounded_memory():
    """A 1 MB zip expanding to 1 GiB is stopped at the ratio/size limit, in seconds and with
    memory far below the expansion (members stream; nothing is read whole)."""
    raw = message_with(gigabyte_bomb(), "bomb.zip")
    assert len(raw) < 2_000_000
    tracemalloc.start()
    started = time.process_time()
    try:
        finding = scanner().scan(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert finding.kind == "limit", finding
    assert time.process_time() - started < 5
    assert peak < 8_000_000, peak  # the message, its decoded part, a few 64 KiB pieces


def test_overlapping_entries_bomb_is_stopped():
    """A zip whose 5,000 central-directory entries all point at one 1 MiB member (a
    non-recursive bomb in the manner of Fifield's overlapping zips) hits max_expanded."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = compressor.compress(bytes(1 << 20)) + compressor.flush()
    one = raw_zip(b"z", data, 1 << 20)
    local_size = 30 + 1 + len(data)
    entry = one[local_size:-22]  # the one central directory record
    entries = entry * 5000
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 5000, 5000, len(entries), local_size, 0)
    started = time.process_time()
    finding = scanner().scan(message_with(one[:local_size] + entries + end))
    assert finding.kind == "limit" and "expand" in finding.name
    assert time.process_time() - started < 5


def forty_two(levels: int = 5) -> bytes:
    """42.zip-style: 16 copies of the level below at each level, 10 MiB of zeros at the bottom."""
    data = zip_of({"0.bin": bytes(10 << 20)})
    for _ in range(levels):
        data = zip_of({f"{number}.zip": data for number in range(16)})
    return data


def test_nested_42_zip_style_bomb_is_stopped():
    """Small nested zips that multiply (16 per level) hit the total expansion budget."""
    bomb = forty_two()
    assert len(bomb) < 200_000
    started = time.process_time()
    finding = scanner().scan(message_with(bomb, "42.zip"))
    assert finding.kind == "limit" and time.process_time() - started < 5


def test_tar_gz_is_charged_once_for_its_expansion():
    """A .tar.gz counts its gzip expansion against max_expanded once, not again for the tar
    members it holds: 6 MiB of text inside fits a 10M budget."""
    text = b"".join(b"log line %d\n" % number for number in range(500000))
    assert 5 << 20 < len(text) < 10 << 20
    raw = message_with(tar_of({"log.txt": text}, "w:gz"))
    assert scanner(max_expanded=10 << 20).scan(raw) is None
    assert scanner(max_expanded=3 << 20).scan(raw).kind == "limit"


def test_member_count_and_depth_limits():
    """More members than max_members, or archives nested deeper than max_depth, are limits;
    a deeper max_depth then finds what the archive hides."""
    many = zip_of({f"f{number}": b"x" for number in range(50)})
    assert scanner(max_members=20).scan(message_with(many)).kind == "limit"
    deep = EICAR
    for _ in range(8):
        deep = zip_of({"inner.zip": deep})
    assert scanner().scan(message_with(deep)).kind == "limit"
    assert scanner(max_depth=10).scan(message_with(deep)).kind == "infected"


def test_limits_refuse_by_default_and_quarantine_when_configured():
    """on_limit=reject (default) gives 554 5.7.1; on_limit=quarantine sends it to Junk with a header."""
    raw = message_with(forty_two(3), "42.zip")
    refused = AntivirusCheck(max_expanded="20M").body(SESSION, ENVELOPE, raw)
    assert (refused.code, refused.enhanced) == (554, "5.7.1")
    held = AntivirusCheck(max_expanded="20M", on_limit="quarantine").body(SESSION, ENVELOPE, raw)
    assert held.quarantined and held.headers[0][0] == "X-Antivirus-Status"


def test_encrypted_members_follow_on_encrypted():
    """An encrypted zip member cannot be scanned: accepted by default, refused with on_encrypted=reject."""
    data = bytearray(zip_of({"secret.exe": b"ciphertext" * 10}))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # APPNOTE 4.4.4 bit 0
        position = data.find(signature) + offset
        data[position] |= 1
    raw = message_with(bytes(data))
    assert AntivirusCheck().body(SESSION, ENVELOPE, raw) is None
    assert AntivirusCheck(on_encrypted="reject").body(SESSION, ENVELOPE, raw).code == 554


def test_members_in_an_unsupported_zip_method_follow_on_encrypted():
    """A zip member compressed with a method we cannot expand (Deflate64, method 9) is not
    skipped as harmless: like an encrypted one it is refused with on_encrypted=reject."""
    data = bytearray(zip_of({"payload.exe": b"MZ" + b"\x90" * 200}, method=zipfile.ZIP_STORED))
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # APPNOTE 4.4.5
        position = data.find(signature) + offset
        data[position:position + 2] = (9).to_bytes(2, "little")
    raw = message_with(bytes(data))
    assert AntivirusCheck(on_encrypted="reject").body(SESSION, ENVELOPE, raw).code == 554


def test_truncated_and_corrupt_archives_do_not_raise():
    """A broken archive is scanned as far as it decodes; no exception escapes the scanner."""
    good = zip_of({"a.txt": b"hello" * 1000})
    for broken in (good[:len(good) // 2], good[:-10], gzip.compress(b"x" * 10000)[:40],
                   b"PK\x03\x04" + os.urandom(300), b"\x1f\x8b" + os.urandom(100), bz2.compress(b"y")[:-5]):
        assert scanner().scan(message_with(broken)) is None


def test_check_antivirus_loads_by_name_in_a_fresh_interpreter():
    """load_check('check.antivirus') works without importing the module first (checks/base.py
    imports mailserverd.checks.antivirus for an unregistered 'check.antivirus')."""
    code = ("from mailserverd.checks.base import load_check; "
            "print(type(load_check('check.antivirus')).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "AntivirusCheck"
    assert type(load_check("check.antivirus", max_depth="3")).__name__ == "AntivirusCheck"


MAGICS = [b"PK\x03\x04", b"\x1f\x8b\x08\x00", b"BZh9", b"\xfd7zXZ\x00", b"PK\x05\x06"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(magic=st.sampled_from(MAGICS), body=st.binary(max_size=2000), cut=st.integers(0, 400),
       flips=st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), max_size=8))
def test_fuzzed_archives_never_raise(magic, body, cut, flips):
    """Random and mutated archives (real ones with bytes flipped or cut) end in a finding or
    None, never an exception."""
    real = zip_of({"a.txt": body, "b.zip": zip_of({"c": body})}) if magic.startswith(b"PK") else (
        tar_of({"t": body}, "w:gz") if magic.startswith(b"\x1f") else
        bz2.compress(body) if magic == b"BZh9" else lzma.compress(body))
    data = bytearray(real[:len(real) - cut] if cut < len(real) else magic + body)
    for position, value in flips:
        data[position % len(data)] = value
    scanner().scan(message_with(bytes(data)))


def test_plain_text_is_scanned_in_line_and_the_rest_in_the_pool(monkeypatch):
    """With a reactor, a small plain-text message (no transfer encoding, no control bytes)
    is scanned on the reactor thread without a hop, EICAR in it still refused; a base64
    attachment, a control byte or a message over INLINE_MAX goes to the thread pool."""
    from twisted.internet import defer

    from mailserverd.checks import antivirus
    hops = []

    class Reactor:
        def getThreadPool(self):
            return "pool"
    check = AntivirusCheck(CheckContext(reactor=Reactor()))

    def to_pool(reactor, pool, fn, *args):
        hops.append(pool)
        return defer.succeed(fn(*args))
    monkeypatch.setattr(antivirus.threads, "deferToThreadPool", to_pool)
    plain = b"From: a@remote.test\r\nSubject: hi\r\n\r\nHello,\r\n\x0cpage two\r\n"
    assert check.body(SESSION, ENVELOPE, plain) is None and hops == []
    refused = check.body(SESSION, ENVELOPE, plain + EICAR + b"\r\n")
    assert refused.rejected and hops == []
    for heavy in (message_with(b"just bytes"), plain + b"\x00", plain + b"x" * antivirus.INLINE_MAX,
                  plain.replace(b"Subject", b"Content-Transfer-Encoding: Quoted-Printable\r\nSubject")):
        d = check.body(SESSION, ENVELOPE, heavy)
        assert isinstance(d, defer.Deferred)
    assert hops == ["pool"] * 4
