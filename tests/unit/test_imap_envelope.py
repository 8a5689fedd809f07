"""ENVELOPE (RFC 9051 7.5.2) and its address structures (RFC 5322 3.4)."""

import pytest
from hypothesis import given, settings, strategies as st

from mailserverd.imap.responses import LiteralString
from mailserverd.mime.imapaddress import MAX_ADDRESSES, parse_addresses
from mailserverd.mime.imapsection import IMAPMessage
from mailserverd.mime.imapstructure import envelope, envelope_value, parse_tree

# To: values and the address list Dovecot 2.3.19 put in ENVELOPE for them
# (captured from Dovecot's imap binary on this machine); RFC 5322 A.1 examples
# among them. Broken input is where clients depend on Dovecot's choices.
DOVECOT_ADDRESSES = [
    (b'john', ((None, None, b'john', b'MISSING_DOMAIN'),)),
    (b'Name Only', ((b'Name Only', None, b'MISSING_MAILBOX', b'MISSING_DOMAIN'),)),
    (b'Name Only <>', ((b'Name Only', None, b'MISSING_MAILBOX', b'MISSING_DOMAIN'),)),
    (b'"Quoted" <a@b> garbage, c@d', ((b'Quoted', None, b'a', b'b'),)),
    (b'a@b c@d', ((None, None, b'a', b'b'),)),
    (b'<a@b>, <c@d>', ((None, None, b'a', b'b'), (None, None, b'c', b'd'))),
    (b'a@', ((None, None, b'a', b'MISSING_DOMAIN'),)),
    (b'@b', ((None, None, b'MISSING_MAILBOX', b'b'),)),
    (b'"x"', ((b'x', None, b'MISSING_MAILBOX', b'MISSING_DOMAIN'),)),
    (b'a@b (c1) (c2)', ((b'c2', None, b'a', b'b'),)),
    (b'(lead comment) a@b', ((None, None, b'a', b'b'),)),
    (b'Name <a@b> (trailing comment)', ((b'Name', None, b'a', b'b'),)),
    (b'grp: ;', ((None, None, b'grp', None), (None, None, None, None))),
    (b'grp: a@b', ((None, None, b'grp', None), (None, None, b'a', b'b'), (None, None, None, None))),
    (b'a@b;', ((None, None, b'a', b'b'),)),
    (b'a.b.c@d.e', ((None, None, b'a.b.c', b'd.e'),)),
    (b'a..b@c', ((None, None, b'a..b', b'c'),)),
    (b'"a b"@c', ((None, None, b'a b', b'c'),)),
    (b'<a@b', ((None, None, b'a', b'SYNTAX_ERROR'),)),
    (b'a@b>', ((None, None, b'a', b'b'),)),
    (b'Name <a@b', ((b'Name', None, b'a', b'SYNTAX_ERROR'),)),
    (b'"unterminated <a@b>', ((None, None, b'MISSING_MAILBOX', b'MISSING_DOMAIN'),)),
    (b'=?utf-8?q?x?= =?utf-8?q?y?= <a@b>', ((b'=?utf-8?q?x?= =?utf-8?q?y?=', None, b'a', b'b'),)),
    (b'  ', None),
    (b',', ((None, None, b'MISSING_MAILBOX', b'MISSING_DOMAIN'),)),
    (b'a@b,', ((None, None, b'a', b'b'),)),
    (b',a@b', ((None, None, b'MISSING_MAILBOX', b'MISSING_DOMAIN'), (None, None, b'a', b'b'))),
    (b'undisclosed-recipients: ;', ((None, None, b'undisclosed-recipients', None), (None, None, None, None))),
    (b'Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>', ((b'Mary Smith', None, b'mary', b'x.test'), (None, None, b'jdoe', b'example.org'), (b'Who?', None, b'one', b'y.test'))),
    (b'<boss@nil.test>, "Giant; \\"Big\\" Box" <sysservices@example.net>', ((None, None, b'boss', b'nil.test'), (b'Giant; "Big" Box', None, b'sysservices', b'example.net'))),
    (b'A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;', ((None, None, b'A Group', None), (b'Ed Jones', None, b'c', b'a.test'), (None, None, b'joe', b'where.test'), (b'John', None, b'jdoe', b'one.test'), (None, None, None, None))),
    (b'Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>', ((b'Pete', None, b'pete', b'silly.test'),)),
    (b'"Joe Q. Public" <john.q.public@example.com>', ((b'Joe Q. Public', None, b'john.q.public', b'example.com'),)),
    (b'Joe Q. Public <john.q.public@example.com>', ((b'Joe Q. Public', None, b'john.q.public', b'example.com'),)),
    (b'a@b.c.', ((None, None, b'a', b'MISSING_DOMAIN'),)),
    (b'foo@[1.2.3.4]', ((None, None, b'foo', b'[1.2.3.4]'),)),
    (b'user@host name', ((None, None, b'user', b'host'),)),
]


@pytest.mark.parametrize("value,expected", DOVECOT_ADDRESSES)
def test_addresses_match_dovecot(value, expected):
    """Each address field parses to the structures Dovecot returns."""
    assert parse_addresses(value) == expected


def test_group_structure():
    """A group is bracketed by (NIL NIL name NIL) and (NIL NIL NIL NIL) (RFC 9051 7.5.2)."""
    assert parse_addresses(b"friends: a@b, c@d;") == (
        (None, None, b"friends", None), (None, None, b"a", b"b"), (None, None, b"c", b"d"),
        (None, None, None, None))


def test_display_name_with_extra_blanks_is_a_literal():
    """Names whose blanks were collapsed are sent as literals, as Dovecot sends them."""
    [(name, _, _, _)] = parse_addresses(b'"Jane   Doe" <j@x>')
    assert name == b"Jane Doe" and isinstance(name, LiteralString)


def test_many_addresses_are_capped_and_fast():
    """20,000 addresses in one field: at most MAX_ADDRESSES are parsed, quickly."""
    value = b", ".join(b"user%d@example.com" % i for i in range(20000))
    assert len(parse_addresses(value)) == MAX_ADDRESSES


def test_deep_comments_do_not_recurse():
    """100,000 nested comments are skipped without recursion."""
    value = b"a@b " + b"(" * 100000 + b")" * 100000
    [(_, _, mailbox, host)] = parse_addresses(value)
    assert (mailbox, host) == (b"a", b"b")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_address_parser_never_raises(value):
    """Any bytes give a tuple of 4-tuples or None."""
    parsed = parse_addresses(value)
    assert parsed is None or all(len(address) == 4 for address in parsed)


def envelope_of(header):
    return envelope_value(parse_tree(header + b"\r\n\r\nbody\r\n"))


def test_sender_and_reply_to_default_to_from():
    """RFC 9051 7.5.2: absent Sender and Reply-To repeat From."""
    values = envelope_of(b"From: a@b")
    assert values[2] == values[3] == values[4]
    assert envelope_of(b"From: a@b\r\nSender: s@b")[3] != values[2]


def test_absent_fields_are_nil():
    """Missing Date, Subject, To, Cc, Bcc, In-Reply-To, Message-ID are NIL."""
    assert envelope(b"\r\nbody") == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"


def test_subject_is_unfolded_and_collapsed():
    """Folded subjects come out on one line with single spaces."""
    values = envelope_of(b"Subject: one\r\n  two\tthree")
    assert values[1] == b"one two three"


def test_message_id_keeps_raw_value():
    """Message-ID and In-Reply-To are the raw unfolded values (no address parsing)."""
    values = envelope_of(b"Message-ID:  <a@b> \r\nIn-Reply-To: <x@y>\r\n <z@w>")
    assert values[9] == b"<a@b> " and values[8] == b"<x@y> <z@w>"


def test_repeated_address_fields_accumulate():
    """Two From: fields give both addresses (as Dovecot does); Subject: the last wins."""
    values = envelope_of(b"From: a@b\r\nFrom: c@d\r\nSubject: 1\r\nSubject: 2")
    assert envelope(b"From: a@b\r\nFrom: c@d\r\n\r\n").count(b'"b")(NIL') == 3
    assert values[1] == b"2"


def test_encoded_words_are_left_encoded():
    """RFC 2047 words are not decoded in ENVELOPE; clients decode them."""
    assert envelope_of(b"Subject: =?utf-8?q?x?=")[1] == b"=?utf-8?q?x?="


def test_eight_bit_subject_is_a_literal():
    """Raw 8-bit header text goes out as a literal."""
    assert b"{8}\r\nJ\xc3\xb6rg ok" in IMAPMessage(b"Subject: J\xc3\xb6rg ok\r\n\r\n").envelope()
