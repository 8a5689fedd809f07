"""check_limits: what must be refused before Python's email package sees a message."""

from __future__ import annotations

import email
import email.policy

import pytest
from hypothesis import given, settings, strategies as st

from mailserverd.mime.limits import (MAX_COMMENT_DEPTH, MAX_PARAMETERS, MessageTooComplex,
                                     check_limits, comment_depth, count_addresses)


def nested_multipart(levels: int) -> bytes:
    """A message whose multiparts nest `levels` deep below the top level."""
    opening = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (n, n)
                       for n in range(levels))
    return b"Subject: deep\r\n" + opening + b"Content-Type: text/plain\r\n\r\nleaf\r\n"


def nested_messages(levels: int) -> bytes:
    """message/rfc822 inside message/rfc822, `levels` deep."""
    return b"Content-Type: message/rfc822\r\n\r\n" * levels + b"Subject: x\r\n\r\nleaf\r\n"


def parse_fully(raw: bytes) -> None:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    for part in message.walk():
        part.get_content_type()
        for name in ("to", "from", "cc", "content-disposition"):
            value = part[name]
            if value is not None and hasattr(value, "addresses"):
                value.addresses


def test_plain_message_passes():
    """An ordinary message passes without complaint."""
    check_limits(b"From: a@b.test\r\nTo: c@d.test\r\nSubject: hi\r\n\r\nbody\r\n")


def test_thousand_nested_multiparts_are_refused():
    """1,000 nested multiparts (RecursionError in the email package) are refused."""
    with pytest.raises(MessageTooComplex, match="nesting"):
        check_limits(nested_multipart(1000))


def test_nesting_at_the_limit_passes_and_parses():
    """Nesting exactly at max_mime_depth passes, and the email package then parses it."""
    raw = nested_multipart(100)
    check_limits(raw, max_mime_depth=100)
    parse_fully(raw)


def test_nesting_one_past_the_limit_is_refused():
    """One level more than max_mime_depth is refused."""
    with pytest.raises(MessageTooComplex):
        check_limits(nested_multipart(11), max_mime_depth=10)


def test_nested_messages_count_as_levels():
    """message/rfc822 nesting counts towards the depth limit, not only multiparts."""
    check_limits(nested_messages(10), max_mime_depth=10)
    with pytest.raises(MessageTooComplex):
        check_limits(nested_messages(11), max_mime_depth=10)


def test_depth_hidden_behind_bare_cr_line_ends_is_found():
    """Bare-CR line ends (which the email package honours) do not hide nesting."""
    raw = nested_multipart(50).replace(b"\r\n", b"\r")
    with pytest.raises(MessageTooComplex):
        check_limits(raw, max_mime_depth=20)


def test_twenty_thousand_addresses_are_refused():
    """A To: with 20,000 addresses (10 s in the email package) is refused."""
    to = b"To: " + b",".join(b"u%d@x.t" % n for n in range(20000)) + b"\r\n\r\nx"
    with pytest.raises(MessageTooComplex, match="addresses"):
        check_limits(to, max_header_size=1 << 20)


def test_address_limit_counts_all_address_fields_together():
    """To and Cc together count against max_addresses."""
    raw = b"To: a@x.t, b@x.t\r\nCc: c@x.t\r\n\r\n"
    check_limits(raw, max_addresses=3)
    with pytest.raises(MessageTooComplex):
        check_limits(raw, max_addresses=2)


def test_thousand_addresses_pass():
    """1,000 addresses, the default limit, pass."""
    check_limits(b"To: " + b",".join(b"u%d@x.t" % n for n in range(1000)) + b"\r\n\r\nx")


def test_addresses_in_encapsulated_message_are_counted():
    """Address fields inside a forwarded message are checked too."""
    inner = b"To: " + b",".join(b"u%d@x.t" % n for n in range(50)) + b"\r\n\r\nx\r\n"
    with pytest.raises(MessageTooComplex):
        check_limits(b"Content-Type: message/rfc822\r\n\r\n" + inner, max_addresses=10)


def test_count_addresses_respects_quotes_comments_and_groups():
    """Commas in quoted names and comments do not separate; group names are not members."""
    assert count_addresses(b'"Doe, John" <j@x.t>, (a, b) k@x.t') == 2
    assert count_addresses(b"friends: a@x.t, b@x.t;, c@x.t") == 3
    assert count_addresses(b"undisclosed-recipients:;") == 0


def test_deep_comments_in_content_type_are_refused():
    """Deeply nested comments (RecursionError inside message_from_bytes) are refused."""
    raw = (b"Content-Type: text/plain; charset=" + b"(" * 2000 + b")" * 2000 + b"\r\n\r\nx")
    with pytest.raises(MessageTooComplex, match="comments"):
        check_limits(raw)


def test_comments_at_the_limit_parse():
    """Comment nesting at MAX_COMMENT_DEPTH passes and the email package parses it."""
    comment = b"(" * MAX_COMMENT_DEPTH + b")" * MAX_COMMENT_DEPTH
    raw = b"To: " + comment + b" a@x.t\r\nContent-Type: text/plain; a=b " + comment + b"\r\n\r\nx"
    check_limits(raw)
    parse_fully(raw)


def test_comment_depth_is_an_upper_bound():
    """Escaped ")" does not close; "(" always opens, even quoted or escaped (err on the safe side)."""
    assert comment_depth(b"(a \\) (b))") == 2
    assert comment_depth(b'"((" \\( x') == 3
    assert comment_depth(b"(\\)(\\)(\\)") == 3


def test_long_boundaries_are_followed_or_refused():
    """Nesting behind boundaries longer than RFC 2046's 70 characters is still found."""
    opening = b"".join(b'Content-Type: multipart/mixed; boundary="%s%d"\r\n\r\n--%s%d\r\n'
                       % (b"x" * 300, n, b"x" * 300, n) for n in range(30))
    with pytest.raises(MessageTooComplex, match="nesting"):
        check_limits(opening + b"\r\nleaf\r\n", max_mime_depth=20)
    with pytest.raises(MessageTooComplex, match="boundary"):
        check_limits(b'Content-Type: multipart/mixed; boundary="%s"\r\n\r\n' % (b"x" * 2000))


def test_empty_boundary_is_followed():
    """boundary="" makes every "--" line a delimiter in the email package; it is followed too."""
    raw = (b'Content-Type: multipart/mixed; boundary=""\r\n\r\n--\r\n'
           + nested_multipart(30).split(b"\r\n", 1)[1])
    with pytest.raises(MessageTooComplex):
        check_limits(raw, max_mime_depth=20)


def test_content_type_read_as_the_email_package_reads_it():
    """A Content-Type the email package reads as multipart (odd case, trailing
    blanks in the boundary) is followed as multipart."""
    levels = b"".join(b'CONTENT-TYPE: MultiPart/Mixed; boundary="b%d  "\r\n\r\n--b%d\r\n' % (n, n)
                      for n in range(30))
    raw = levels + b"\r\nleaf\r\n"
    depth = 0
    message = email.message_from_bytes(raw, policy=email.policy.default)
    while message.is_multipart():
        message, depth = message.get_payload(0), depth + 1
    assert depth == 30
    with pytest.raises(MessageTooComplex):
        check_limits(raw, max_mime_depth=20)


def test_many_parameters_are_refused():
    """More than MAX_PARAMETERS Content-Type parameters are refused (quadratic parsing)."""
    params = b"; ".join(b"p%d=v" % n for n in range(MAX_PARAMETERS * 3))
    with pytest.raises(MessageTooComplex, match="parameters"):
        check_limits(b"Content-Type: text/plain; " + params + b"\r\n\r\nx")


def test_hundreds_of_empty_parameters_pass():
    """Spam with ~750 empty parameters (";;;;", seen in the corpus) still passes."""
    check_limits(b"Content-Type: text/plain" + b";" * 750 + b"\r\n\r\nx")


def test_parameters_in_part_headers_are_checked():
    """Part headers get the same parameter limit as the top level."""
    raw = (b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain"
           + b";" * 5000 + b"\r\n\r\nx\r\n--B--\r\n")
    with pytest.raises(MessageTooComplex):
        check_limits(raw)


def test_oversized_header_is_refused():
    """A header section over max_header_size is refused."""
    raw = b"X-Big: " + b"a" * 2000 + b"\r\n\r\nbody"
    with pytest.raises(MessageTooComplex, match="header"):
        check_limits(raw, max_header_size=1000)


def test_oversized_part_header_is_refused():
    """A part's header section over max_header_size is refused too."""
    raw = (b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
           + b"X-Pad: a\r\n" * 200 + b"\r\nx\r\n--B--\r\n")
    with pytest.raises(MessageTooComplex):
        check_limits(raw, max_header_size=1000)


def test_long_body_line_is_not_a_header():
    """A part whose body starts at once with a long non-header line is not a big header."""
    raw = (b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
           + b"no header here " * 1000 + b"\r\n--B--\r\n")
    check_limits(raw, max_header_size=1000)


def test_too_many_parts_are_refused():
    """More than max_parts entities are refused."""
    raw = (b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
           + b"--B\r\n\r\nx\r\n" * 20 + b"--B--\r\n")
    check_limits(raw, max_parts=21)
    with pytest.raises(MessageTooComplex, match="parts"):
        check_limits(raw, max_parts=20)


def test_many_dash_lines_do_not_slow_the_scan():
    """Megabytes of lines starting with "--" are scanned in C, not line by line."""
    raw = b"Content-Type: multipart/mixed; boundary=B\r\n\r\n" + b"--\r\n--x\r\n" * 500000
    check_limits(raw)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=A\r\n", b"Content-Type: message/rfc822\r\n",
    b"Content-Type: multipart/digest; boundary=B\r\n", b"To: (a (b) c) x@y, \"q\" <z@w>\r\n",
    b"\r\n", b"--A\r\n", b"--B\r\n", b"--A--\r\n", b"text\r\n", b"\r", b"\n", b"Subject: =?x?q?a?=\r\n",
]), max_size=40))
def test_fuzzed_structures_pass_or_raise_cleanly(pieces):
    """Any mix of MIME lines either raises MessageTooComplex or parses in the email package."""
    raw = b"".join(pieces)
    try:
        check_limits(raw, max_mime_depth=8)
    except MessageTooComplex:
        return
    parse_fully(raw)
