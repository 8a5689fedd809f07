"""BODY[section]<partial> and BINARY[section] (RFC 9051 6.4.5, RFC 3516)."""

import pytest

from mailserverd.mime.imapsection import (IMAPMessage, UnknownTransferEncoding, parse_spec,
                                          section)

# The structure of RFC 3501 6.4.5's part-numbering example.
EXAMPLE = (
    b"From: top@example.com\r\nSubject: example\r\n"
    b"Content-Type: multipart/mixed; boundary=top\r\n\r\n"
    b"--top\r\nContent-Type: text/plain\r\n\r\npart one\r\n"
    b"--top\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"aGVsbG8g\r\nd29ybGQ=\r\n"
    b"--top\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: three\r\nContent-Type: multipart/mixed; boundary=three\r\n\r\n"
    b"--three\r\nContent-Type: text/plain\r\n\r\nthree one\r\n"
    b"--three\r\nContent-Type: application/octet-stream\r\n\r\nthree two\r\n"
    b"--three--\r\n"
    b"--top\r\nContent-Type: multipart/mixed; boundary=four\r\n\r\n"
    b"--four\r\nContent-Type: image/gif\r\n\r\nGIF\r\n"
    b"--four\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: four two\r\nContent-Type: multipart/mixed; boundary=fourtwo\r\n\r\n"
    b"--fourtwo\r\nContent-Type: text/plain\r\n\r\nfour two one\r\n"
    b"--fourtwo\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n"
    b"--alt\r\nContent-Type: text/plain\r\n\r\nplain alt\r\n"
    b"--alt\r\nContent-Type: text/richtext\r\n\r\nrich alt\r\n"
    b"--alt--\r\n"
    b"--fourtwo--\r\n"
    b"--four--\r\n"
    b"--top--\r\n"
)


@pytest.mark.parametrize("spec,expected", [
    ("1", b"part one"),
    ("2", b"aGVsbG8g\r\nd29ybGQ="),
    ("3.HEADER", b"Subject: three\r\nContent-Type: multipart/mixed; boundary=three\r\n\r\n"),
    ("3.1", b"three one"),
    ("3.2", b"three two"),
    ("4.1", b"GIF"),
    ("4.1.MIME", b"Content-Type: image/gif\r\n\r\n"),
    ("4.2.HEADER", b"Subject: four two\r\nContent-Type: multipart/mixed; boundary=fourtwo\r\n\r\n"),
    ("4.2.1", b"four two one"),
    ("4.2.2.1", b"plain alt"),
    ("4.2.2.2", b"rich alt"),
])
def test_rfc3501_part_numbering(spec, expected):
    """Part numbers follow RFC 3501 6.4.5's example, through message/rfc822 parts."""
    assert section(EXAMPLE, spec) == expected


def test_text_of_message_rfc822_part():
    """N.TEXT is the encapsulated message's body."""
    assert section(EXAMPLE, "3.TEXT").startswith(b"--three\r\nContent-Type: text/plain")


def test_whole_message_header_and_text():
    """BODY[], BODY[HEADER] and BODY[TEXT] split the message at the blank line."""
    header = section(EXAMPLE, "HEADER")
    assert header.endswith(b"boundary=top\r\n\r\n")
    assert header + section(EXAMPLE, "TEXT") == section(EXAMPLE, "") == EXAMPLE


def test_header_fields_and_not():
    """HEADER.FIELDS keeps matching fields in order (case-insensitive) plus the blank line;
    .NOT keeps the others."""
    message = b"Received: x\r\n y\r\nFrom: a@b\r\nSubject: s\r\nreceived: z\r\n\r\nbody"
    assert section(message, "HEADER.FIELDS (RECEIVED)") == b"Received: x\r\n y\r\nreceived: z\r\n\r\n"
    assert section(message, "HEADER.FIELDS.NOT (Received)") == b"From: a@b\r\nSubject: s\r\n\r\n"
    assert section(message, "HEADER.FIELDS (X-None)") == b"\r\n"


def test_header_fields_of_message_rfc822_part():
    """N.HEADER.FIELDS reads the encapsulated message's header."""
    assert section(EXAMPLE, "3.HEADER.FIELDS (Subject)") == b"Subject: three\r\n\r\n"


def test_single_part_message_has_part_one():
    """A non-multipart message's part 1 is its body; 1.1 does not exist."""
    message = b"Subject: x\r\n\r\nhello"
    assert section(message, "1") == b"hello"
    assert section(message, "1.MIME") == b"Subject: x\r\n\r\n"
    assert section(message, "1.1") == b""


def test_trailing_one_below_a_leaf_part_is_that_part():
    """BODY[1.1] of a leaf part 1 is part 1 (Dovecot); 1.1.1 does not exist."""
    assert section(EXAMPLE, "1.1") == b"part one"
    assert section(EXAMPLE, "1.1.1") == b""


@pytest.mark.parametrize("spec", ["5", "4.3", "2.2", "3.3", "1.HEADER", "2.TEXT", "9.MIME"])
def test_missing_sections_are_empty(spec):
    """Sections that do not exist are empty strings, as Dovecot returns them."""
    assert section(EXAMPLE, spec) == b""


def test_partial():
    """<start.count> slices the section; past the end gives an empty string."""
    assert section(EXAMPLE, "1", partial=(5, 3)) == b"one"
    assert section(EXAMPLE, "1", partial=(5, 100)) == b"one"
    assert section(EXAMPLE, "1", partial=(100, 5)) == b""


def test_bare_lf_message_is_served_as_crlf():
    """Sections come from the CRLF form, matching RFC822.SIZE."""
    message = IMAPMessage(b"Subject: x\n\nline\n")
    assert message.section() == b"Subject: x\r\n\r\nline\r\n"
    assert message.size == len(message.section())


def test_binary_decodes_base64_and_qp():
    """BINARY[n] removes the transfer encoding (RFC 3516 4.2); BINARY.SIZE counts the result."""
    message = IMAPMessage(EXAMPLE)
    assert message.binary((2,)) == b"hello world"
    assert message.binary_size((2,)) == 11
    assert message.binary((2,), partial=(6, 5)) == b"world"
    qp = IMAPMessage(b"Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =\r\nx")
    assert qp.binary((1,)) == b"caf\xc3\xa9 x"


def test_binary_of_unknown_encoding_raises():
    """An unknown Content-Transfer-Encoding is UNKNOWN-CTE (RFC 3516 4.3)."""
    message = IMAPMessage(b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin")
    with pytest.raises(UnknownTransferEncoding):
        message.binary((1,))


def test_binary_of_broken_base64_does_not_raise():
    """Junk in base64 is skipped (RFC 2045 6.8), never an exception."""
    message = IMAPMessage(b"Content-Transfer-Encoding: base64\r\n\r\nYW*Jj\r\nZ")
    assert message.binary((1,)) == b"abc"


def test_binary_of_missing_part_is_none():
    """BINARY of a part that does not exist gives None."""
    assert IMAPMessage(EXAMPLE).binary((7,)) is None


def test_parse_spec():
    """Section specs parse into numbers, text and fields; invalid ones raise ValueError."""
    assert parse_spec("1.2.HEADER.FIELDS (From To)") == ((1, 2), "HEADER.FIELDS", ("From", "To"))
    assert parse_spec("") == ((), None, ())
    assert parse_spec("3.mime") == ((3,), "MIME", ())
    for bad in ("MIME", "0", "1..2", "HEADER.FIELDS", "TEXT (x)", "1.FOO"):
        with pytest.raises(ValueError):
            parse_spec(bad)


def test_section_path_depth_is_capped():
    """A part path deeper than the cap names nothing, without walking it."""
    assert IMAPMessage(EXAMPLE).part((1,) * 200) is None
