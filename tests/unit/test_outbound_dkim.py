"""DKIM keys and signing (outbound/dkim.py), checked with dkimpy's verifier fed from our TXT records."""

from __future__ import annotations

import calendar
import json
import os
import re
import stat

import dkim as dkimpy
import pytest

from mailserverd.cli import ctl
from mailserverd.outbound import dkim

NOW = calendar.timegm((2026, 11, 28, 12, 0, 0))
MESSAGE = (b"From: Alice <alice@example.org>\r\nTo: bob@remote.test\r\nSubject: hello\r\n"
           b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\nHi Bob.\r\n")


def dns_of(*key_sets):
    """A dkimpy dnsfunc answering the TXT records of the given keys (domain example.org)."""
    records = {}
    for domain, keys in key_sets:
        for key in keys:
            records[f"{key.record_name}.{domain}."] = key.public_txt.encode()

    def lookup(name, timeout=5):
        return records.get(name.decode())
    return lookup


@pytest.fixture
def data_dir(tmp_path):
    return str(tmp_path)


@pytest.fixture
def keys(data_dir):
    return dkim.keygen(data_dir, "example.org", now=NOW)


def signatures(message: bytes) -> list[bytes]:
    return [value for name, value in dkimpy.DKIM(message).headers if name.lower() == b"dkim-signature"]


def test_keygen_makes_ed25519_and_rsa_with_month_selectors(keys):
    """keygen makes an Ed25519 and an RSA key, selectors <yyyymm>e and <yyyymm>r."""
    assert [(key.kind, key.selector) for key in keys] == [("ed25519", "202611e"), ("rsa", "202611r")]


def test_key_files_are_private(data_dir, keys):
    """Key files are mode 0600 in a 0700 directory."""
    directory = os.path.join(data_dir, "dkim", "example.org")
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    for name in ("ed25519.pem", "rsa.pem", "selectors.json"):
        assert stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode) == 0o600
    with open(os.path.join(directory, "selectors.json")) as handle:
        assert json.load(handle) == {"ed25519": "202611e", "rsa": "202611r"}


def test_rsa_key_is_2048_bits(keys):
    """The RSA key is 2048 bits (RFC 8301 3.2: at least 1024, 2048 recommended)."""
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(keys[1].private, password=None)
    assert key.key_size == 2048


def test_keygen_refuses_to_overwrite(data_dir, keys):
    """A second keygen for the same domain fails instead of replacing published keys."""
    with pytest.raises(dkim.DkimKeyError, match="has DKIM keys already"):
        dkim.keygen(data_dir, "example.org", now=NOW)


def test_replace_uses_new_selectors(data_dir, keys):
    """keygen --replace in the same month picks selectors not used before."""
    again = dkim.keygen(data_dir, "example.org", now=NOW, replace=True)
    assert {key.selector for key in again}.isdisjoint({key.selector for key in keys})


@pytest.mark.parametrize("domain", ["../etc", "a/b.org", "", "nodot", "-bad.org"])
def test_keygen_refuses_bad_domains(data_dir, domain):
    """A domain that is not a host name (a path, say) is refused before touching the disk."""
    with pytest.raises(dkim.DkimKeyError):
        dkim.keygen(data_dir, domain)


def test_signed_message_verifies_with_both_keys(data_dir, keys):
    """Both signatures (Ed25519, RSA) verify against the published TXT records."""
    signed = dkim.DkimSigner.from_data_dir(data_dir).sign(MESSAGE, "example.org")
    assert len(signatures(signed)) == 2
    verifier = dkimpy.DKIM(signed)
    assert verifier.verify(0, dnsfunc=dns_of(("example.org", keys)))
    assert verifier.verify(1, dnsfunc=dns_of(("example.org", keys)))


def test_signature_is_relaxed_and_covers_the_usual_headers(data_dir, keys):
    """c=relaxed/relaxed, a=ed25519-sha256 then rsa-sha256, From oversigned, Subject/Date/To signed."""
    signed = dkim.DkimSigner.from_data_dir(data_dir).sign(MESSAGE, "example.org")
    first, second = (re.sub(rb"\s+", b"", value) for value in signatures(signed))
    assert b"a=ed25519-sha256" in first and b"a=rsa-sha256" in second
    assert b"c=relaxed/relaxed" in first and b"d=example.org" in first
    signed_headers = re.search(rb"h=([^;]*)", first).group(1).split(b":")
    assert signed_headers.count(b"from") == 2
    assert {b"to", b"subject", b"date", b"message-id"} <= set(signed_headers)


def test_relaxed_survives_whitespace_changes(data_dir, keys):
    """A relay refolding a header and padding spaces does not break the signature."""
    signed = dkim.DkimSigner.from_data_dir(data_dir).sign(MESSAGE, "example.org")
    changed = signed.replace(b"Subject: hello", b"Subject:   hello  ").replace(b"Hi Bob.", b"Hi  Bob.")
    assert dkimpy.DKIM(changed).verify(0, dnsfunc=dns_of(("example.org", keys)))


def test_changed_body_fails_verification(data_dir, keys):
    """A changed body no longer verifies."""
    signed = dkim.DkimSigner.from_data_dir(data_dir).sign(MESSAGE, "example.org")
    tampered = signed.replace(b"Hi Bob.", b"Hi Eve.")
    assert not dkimpy.verify(tampered, dnsfunc=dns_of(("example.org", keys)))


def test_domain_without_keys_is_left_unsigned(data_dir, keys):
    """Mail from a domain without keys passes unchanged."""
    assert dkim.DkimSigner.from_data_dir(data_dir).sign(MESSAGE, "other.org") == MESSAGE


def test_subdomain_is_signed_with_parent_keys(data_dir, keys):
    """Mail from news.example.org is signed d=example.org (relaxed DMARC alignment)."""
    message = MESSAGE.replace(b"alice@example.org", b"alice@news.example.org")
    signed = dkim.DkimSigner.from_data_dir(data_dir).sign(message, "news.example.org")
    assert b"d=example.org;" in signed
    assert dkimpy.DKIM(signed).verify(0, dnsfunc=dns_of(("example.org", keys)))


def test_message_without_from_is_left_unsigned(data_dir, keys):
    """Without a From header there is nothing DKIM can sign (RFC 6376 5.4)."""
    message = b"Subject: x\r\n\r\nbody\r\n"
    assert dkim.DkimSigner.from_data_dir(data_dir).sign(message, "example.org") == message


def test_keys_made_later_are_used_without_restart(data_dir):
    """A signer created before keygen signs with the new keys once they exist."""
    signer = dkim.DkimSigner.from_data_dir(data_dir)
    assert signer.sign(MESSAGE, "example.org") == MESSAGE
    keys = dkim.keygen(data_dir, "example.org", now=NOW)
    signed = signer.sign(MESSAGE, "example.org")
    assert dkimpy.DKIM(signed).verify(0, dnsfunc=dns_of(("example.org", keys)))


def test_txt_record_is_split_into_255_octet_strings(keys):
    """The RSA record, longer than 255 octets, is written as several quoted strings (RFC 1035 3.3.14)."""
    ed_line, rsa_line = dkim.txt_records("example.org", keys)
    assert ed_line.startswith('202611e._domainkey.example.org. IN TXT "v=DKIM1; k=ed25519; p=')
    strings = re.findall(r'"([^"]*)"', rsa_line)
    assert len(strings) >= 2 and all(len(part) <= 255 for part in strings)
    assert "".join(strings) == keys[1].public_txt


def test_dns_records_cover_mx_spf_dkim_dmarc(keys):
    """The records to publish: MX to our host, SPF, both DKIM keys and DMARC."""
    lines = dkim.dns_records("example.org", "mx.example.org", keys)
    assert lines[0] == "example.org. IN MX 10 mx.example.org."
    assert lines[1] == 'example.org. IN TXT "v=spf1 mx -all"'
    assert sum("._domainkey.example.org. IN TXT" in line for line in lines) == 2
    assert lines[-1].startswith('_dmarc.example.org. IN TXT "v=DMARC1; p=quarantine')


def test_dns_records_without_keys_say_how_to_make_them():
    """Without keys, a comment line names the keygen command instead of DKIM records."""
    lines = dkim.dns_records("example.org", "mx.example.org", [])
    assert "; no DKIM keys yet: mailserverctl dkim keygen example.org" in lines


def test_mailserverctl_keygen_and_dns(tmp_path, capsysbinary):
    """`mailserverctl dkim keygen` prints the TXT records; `mailserverctl dns` prints all four kinds."""
    conf = tmp_path / "mailserverd.conf"
    listeners = "\n".join(f"{name} =" for name in ("smtp", "submission", "submissions", "imap", "imaps",
                                                     "pop3", "pop3s", "http"))
    conf.write_text(f"[server]\nhostname = mx.example.org\ndata_dir = {tmp_path / 'data'}\n"
                    f"[listen]\n{listeners}\n[storage]\nshards = 1\n")
    assert ctl.main(["-c", str(conf), "domain", "add", "example.org"]) == 0
    capsysbinary.readouterr()
    assert ctl.main(["-c", str(conf), "dkim", "keygen", "example.org"]) == 0
    printed = capsysbinary.readouterr().out.decode().splitlines()
    assert len(printed) == 2 and all(re.fullmatch(r'\d{6}[er]\._domainkey\.example\.org\. IN TXT ".*"', line)
                                     for line in printed)
    assert ctl.main(["-c", str(conf), "dns", "example.org"]) == 0
    records = capsysbinary.readouterr().out.decode()
    assert "IN MX 10 mx.example.org." in records and "v=spf1" in records
    assert records.count("._domainkey.example.org. IN TXT") == 2 and "_dmarc.example.org." in records
    assert ctl.main(["-c", str(conf), "dns", "unknown.org"]) == 1


def test_openssl_rsa_signature_equals_dkimpys_arithmetic():
    """RSA signing goes through OpenSSL (dkimpy's pure-Python pow() cost ~13 ms a message) and
    gives byte for byte the signature dkimpy's own arithmetic gives (PKCS#1 v1.5 is
    deterministic), for SHA-256 and SHA-1."""
    import hashlib

    import dkim
    from cryptography.hazmat.primitives.asymmetric import rsa as rsa_keys
    from cryptography.hazmat.primitives import serialization
    from dkim.crypto import RSASSA_PKCS1_v1_5_sign as pure_python, parse_pem_private_key

    from mailserverd.outbound import dkim as ours

    assert dkim.RSASSA_PKCS1_v1_5_sign is ours._openssl_rsa_sign
    pem = rsa_keys.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    key = parse_pem_private_key(pem)
    for name in ("sha256", "sha1"):
        digest = dkim.HashThrough(hashlib.new(name))
        digest.update(b"From: a@example.test\r\nSubject: x\r\n")
        assert bytes(ours._openssl_rsa_sign(digest, key)) == bytes(pure_python(digest, key))
