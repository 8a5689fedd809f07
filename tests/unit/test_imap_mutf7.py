"""Modified UTF-7 mailbox names (RFC 3501 5.1.3) and name validation."""

import pytest
from hypothesis import given, strategies as st

from mailserverd.imap import mutf7


@pytest.mark.parametrize("text,wire", [
    ("INBOX", b"INBOX"),
    ("Entwürfe", b"Entw&APw-rfe"),
    ("&Co", b"&-Co"),
    ("~peter/mail/日本語/台北", b"~peter/mail/&ZeVnLIqe-/&U,BTFw-"),
    ("😀", b"&2D3eAA-"),
])
def test_known_encodings(text, wire):
    """Encoding matches RFC 3501's examples and decodes back."""
    assert mutf7.encode(text) == wire
    assert mutf7.decode(wire) == text


@given(st.text(max_size=40))
def test_round_trip(text):
    """decode(encode(s)) == s for any text, and the encoding is printable ASCII."""
    wire = mutf7.encode(text)
    assert all(0x20 <= byte <= 0x7E for byte in wire)
    assert mutf7.decode(wire) == text


@given(st.binary(max_size=40))
def test_decode_never_crashes(data):
    """Any bytes either decode or raise MUTF7Error."""
    try:
        mutf7.decode(data)
    except mutf7.MUTF7Error:
        pass


@pytest.mark.parametrize("wire", [
    b"&AOQ",  # unterminated
    b"&AOQ-&AOQ-",  # adjacent encoded runs
    b"&AGE-",  # printable ASCII encoded
    b"&A-",  # trailing sextet
    b"&AOR-",  # non-zero padding bits
    b"caf\xc3\xa9",  # raw 8-bit
    b"&2D0-",  # lone surrogate
    b"&AO/-",  # "/" instead of ","
])
def test_strict_decoding_refuses_non_canonical_forms(wire):
    """Every name has exactly one encoding; the others are refused."""
    with pytest.raises(mutf7.MUTF7Error):
        mutf7.decode(wire)


@pytest.mark.parametrize("name", ["../x", "a//b", "/a", "a/", "a/./b", "a\x00b", "a\nb",
                                  "a\x7fb", "x" * 1001, "", "a*b", "a%b", "a\u2028b"])
def test_invalid_names(name):
    """Traversal, empty levels, control characters, wildcards, >1000 octets are refused."""
    with pytest.raises(mutf7.InvalidMailboxName):
        mutf7.normalize_mailbox_name(name)


def test_long_multibyte_name_counts_octets():
    """The 1000 limit counts UTF-8 octets, not characters."""
    with pytest.raises(mutf7.InvalidMailboxName):
        mutf7.normalize_mailbox_name("ä" * 501)
    assert mutf7.normalize_mailbox_name("ä" * 500) == "ä" * 500


def test_inbox_is_case_insensitive():
    """inbox, Inbox/Sub become INBOX, INBOX/Sub; other levels keep their case."""
    assert mutf7.normalize_mailbox_name("inbox") == "INBOX"
    assert mutf7.normalize_mailbox_name("Inbox/Sub") == "INBOX/Sub"
    assert mutf7.normalize_mailbox_name("Archive/inbox") == "Archive/inbox"


def test_patterns_allow_wildcards():
    """LIST patterns keep wildcards; INBOX in them is case-insensitive."""
    assert mutf7.normalize_pattern("inbox/%") == "INBOX/%"
    assert mutf7.normalize_pattern("*") == "*"
