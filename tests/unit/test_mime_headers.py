"""Header sections, RFC 2047 words, MIME parameters and charsets (mailserverd.mime.headers)."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from mailserverd.mime.headers import (decode_bytes, decode_words, first_fields, iter_fields,
                                      parse_content_type, parse_disposition, split_header)


def test_split_header_crlf():
    """The header ends after the last header line's CRLF; the body starts after the empty line."""
    raw = b"Subject: hi\r\nTo: a@b\r\n\r\nbody\r\n"
    header, offset = split_header(raw)
    assert header == b"Subject: hi\r\nTo: a@b\r\n"
    assert raw[offset:] == b"body\r\n"


def test_split_header_lf():
    """LF-only messages split the same way."""
    raw = b"Subject: hi\nTo: a@b\n\nbody\n"
    header, offset = split_header(raw)
    assert header == b"Subject: hi\nTo: a@b\n"
    assert raw[offset:] == b"body\n"


def test_split_header_without_body():
    """A message with no empty line is all header."""
    raw = b"Subject: hi\r\nTo: a@b\r\n"
    assert split_header(raw) == (raw, len(raw))


def test_split_header_empty_header():
    """A message starting with an empty line has an empty header."""
    assert split_header(b"\r\nbody") == (b"", 2)
    assert split_header(b"\nbody") == (b"", 1)


def test_iter_fields_unfolds_and_lowercases():
    """Continuation lines are joined (RFC 5322 2.2.3) and names come back lower case."""
    header = b"Subject: one\r\n two\r\n\tthree\r\nX-Empty:\r\nnot a field line\r\nTo: a@b\r\n"
    assert list(iter_fields(header)) == [("subject", b"one two\tthree"), ("x-empty", b""),
                                         ("to", b"a@b")]


def test_first_fields_keeps_first_occurrence():
    """With repeated fields, the first one wins; unrequested names are left out."""
    header = b"Subject: first\r\nSubject: second\r\nTo: a@b\r\n"
    assert first_fields(header, {"subject"}) == {"subject": b"first"}


def test_decode_words_joins_adjacent_encoded_words():
    """White space between adjacent encoded words disappears (RFC 2047 6.2)."""
    assert decode_words(b"=?utf-8?q?Hello?= =?utf-8?q?_World?=") == "Hello World"


def test_decode_words_keeps_multibyte_character_split_across_words():
    """A UTF-8 character split over two encoded words is decoded whole."""
    encoded = "é".encode("utf-8")
    value = b"=?UTF-8?Q?caf=%02X?= =?UTF-8?Q?=%02X?=" % (encoded[0], encoded[1])
    assert decode_words(value) == "café"


def test_decode_words_base64_and_plain_text_mix():
    """Encoded words decode inside ordinary text, which keeps its spaces."""
    assert decode_words(b"Re: =?ISO-8859-1?B?SOlsbG8=?= there") == "Re: Héllo there"


def test_decode_words_unknown_charset_does_not_raise():
    """An unknown charset falls back to UTF-8 / windows-1252 instead of failing."""
    assert decode_words(b"=?x-klingon?q?abc?=") == "abc"


def test_decode_words_raw_eight_bit():
    """Raw 8-bit header text is read as UTF-8 (RFC 6532), else windows-1252."""
    assert decode_words("Grüße".encode("utf-8")) == "Grüße"
    assert decode_words("Grüße".encode("cp1252")) == "Grüße"


def test_decode_bytes_refuses_bytes_to_bytes_codecs():
    """A charset naming a bytes codec (base64, zlib) is not used to decode text."""
    assert decode_bytes(b"aGk=", "base64") == "aGk="
    assert decode_bytes(b"x\x9c", "zlib") == "x\u0153"  # windows-1252 fallback


def test_decode_bytes_latin1_label_reads_windows_1252():
    """iso-8859-1 text is read as windows-1252, as mislabelled mail usually is."""
    assert decode_bytes(b"\x93quoted\x94", "iso-8859-1") == "\u201cquoted\u201d"


def test_parse_content_type_with_quoted_parameters():
    """Type and subtype are lower-cased; quoted values keep their ';' and escapes."""
    assert parse_content_type(b'Multipart/Mixed; boundary="a;b\\"c"; charset=UTF-8') == (
        "multipart/mixed", {"boundary": 'a;b"c', "charset": "UTF-8"})


def test_parse_content_type_rfc2231_continuations_and_charset():
    """RFC 2231: numbered sections are joined and %XX decoded in the declared charset."""
    value = b"application/pdf; name*0*=utf-8''r%C3%A9sum; name*1=\"e.pdf\""
    assert parse_content_type(value) == ("application/pdf", {"name": "résume.pdf"})


def test_parse_content_type_invalid_means_default():
    """A missing or malformed type means text/plain (RFC 2045 5.2) or the given default."""
    assert parse_content_type(None) == ("text/plain", {})
    assert parse_content_type(b"garbage") == ("text/plain", {})
    assert parse_content_type(b"", "message/rfc822") == ("message/rfc822", {})


def test_parse_content_type_ignores_comments():
    """Comments around the type are dropped (RFC 5322 3.2.2)."""
    assert parse_content_type(b"text/plain (plain (nested) text); charset=us-ascii")[0] == "text/plain"


def test_parse_disposition():
    """Disposition type lower-cased, with its filename parameter."""
    assert parse_disposition(b'Attachment; filename="a b.txt"') == ("attachment", {"filename": "a b.txt"})


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_header_functions_never_raise(value):
    """Arbitrary bytes never make the header helpers raise."""
    split_header(value)
    list(iter_fields(value))
    decode_words(value)
    parse_content_type(value)
    parse_disposition(value)
