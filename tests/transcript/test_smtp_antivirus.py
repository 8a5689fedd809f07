"""check.antivirus in the daemon's default chain, over smtplib: EICAR in any wrapping is refused
at the end of DATA with 554 5.7.1 and the signature is logged; clean mail is delivered; an
archive bomb is refused quickly."""

from __future__ import annotations

import base64
import io
import smtplib
import struct
import time
import zipfile
import zlib

import pytest

from mailserverd.checks.antivirus import EICAR
from tests.support.daemon import MailServer

HEADER = b"From: sender@remote.test\r\nTo: alice@example.test\r\nSubject: %s\r\nMIME-Version: 1.0\r\n"


def attachment(data: bytes, filename: str) -> bytes:
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (HEADER % b"file" + b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
            b"--XX\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--XX\r\n"
            b"Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=" + filename.encode() + b"\r\n\r\n"
            + encoded + b"--XX--\r\n")


def zipped(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return out.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory, mailserver_seed_data):
    """One daemon (SMTP only) with the default configuration: [checks] chain includes check.antivirus."""
    server = MailServer(tmp_path_factory.mktemp("av"), listeners=("smtp",))
    server.copy_data_from(mailserver_seed_data)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("message", [
    pytest.param(HEADER % b"raw" + b"\r\n" + EICAR + b"\r\n", id="raw"),
    pytest.param(attachment(EICAR, "eicar.com"), id="base64"),
    pytest.param(attachment(zipped("eicar.com", EICAR), "eicar.zip"), id="zip"),
    pytest.param(attachment(zipped("inner.zip", zipped("eicar.com", EICAR)), "nested.zip"), id="nested-zip"),
])
def test_eicar_is_refused_with_554_5_7_1(server, message):
    """RFC 3463 5.7.1: the whole message is refused after DATA; the log names the signature."""
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("sender@remote.test", ["alice@example.test"], message)
        assert refused.value.smtp_code == 554
        assert refused.value.smtp_error.startswith(b"5.7.1")
        assert b"Eicar-Test-Signature" in refused.value.smtp_error
        # the session goes on: the next transaction is accepted
        client.sendmail("sender@remote.test", ["alice@example.test"], HEADER % b"clean" + b"\r\nHello.\r\n")
    assert "infected Eicar-Test-Signature" in server.log


def test_zip_bomb_is_refused_quickly(server):
    """A 1 MB zip member that inflates to 1 GiB is refused (554 5.7.1) within seconds."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    data, name = block * 1024 + b"\x03\x00", b"zeros.bin"
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, len(data), 1 << 30,
                        len(name), 0) + name
    central = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, 0, len(data), 1 << 30,
                          len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    started = time.monotonic()
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("sender@remote.test", ["alice@example.test"],
                            attachment(local + data + central + end, "bomb.zip"))
    assert refused.value.smtp_code == 554 and b"scanning limits" in refused.value.smtp_error
    assert time.monotonic() - started < 10
