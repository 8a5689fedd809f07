"""SORT (RFC 5256 3): the base subject algorithm (2.1), sent dates (2.2),
address keys, DISPLAYFROM/DISPLAYTO (RFC 5957) and sequence-number ties."""

import calendar

import pytest

from mailserverd.imap.sort import (SortFacts, ascii_casemap, base_subject, sort_key,
                                   sort_messages, subject_info)
from mailserverd.store.api import MessageRef


def message(seq, header: bytes, size=100, received=0.0, uid=None):
    ref = MessageRef(mailbox_id=1, uid=uid or seq * 10, message_id=seq, size=size,
                     flags=frozenset(), modseq=1, received_at=received)
    return SortFacts.from_raw(seq, ref, header)


def order(criteria, messages):
    return [facts.seq for facts in sort_messages(criteria, messages)]


@pytest.mark.parametrize("subject,base", [
    ("Re: hello", "hello"),
    ("RE: Re: re: hello", "hello"),
    ("Fwd: hello", "hello"),
    ("FW: hello", "hello"),
    ("Re[2]: hello", "hello"),
    ("Re [list]: hello", "hello"),
    ("[list] Re: hello", "hello"),
    ("[list] [other] hello", "hello"),
    ("[list]", "[list]"),
    ("[a] [b]", "[b]"),
    ("hello (fwd)", "hello"),
    ("hello (FWD) (fwd)  ", "hello"),
    ("[Fwd: hello]", "hello"),
    ("Re: [Fwd: Re: hello (fwd)]", "hello"),
    ("[fwd: [list] re: hello]", "hello"),
    ("  hello \t  world\r\n again ", "hello world again"),
    ("Re:", ""),
    ("Reply to this", "Reply to this"),
    ("re hello", "re hello"),
    ("Fwd hello", "Fwd hello"),
    ("hello [list]", "hello [list]"),
    ("[unclosed hello", "[unclosed hello"),
    ("[a[b]] hello", "[a[b]] hello"),
    ("", ""),
])
def test_base_subject(subject, base):
    """RFC 5256 2.1 steps (1)-(7): leaders, blobs, trailers, [fwd: ] wrappers,
    white space, applied until nothing more matches."""
    assert base_subject(subject) == base


@pytest.mark.parametrize("subject,reply", [
    ("hello", False), ("Re: hello", True), ("[list] hello", False), ("[list] Fwd: hello", True),
    ("hello (fwd)", True), ("[fwd: hello]", True), ("hello  ", False),
])
def test_reply_or_forward(subject, reply):
    """A subject is a reply or forward when extraction removed a re/fwd leader,
    a (fwd) trailer or a [fwd: ] wrapper; blobs and white space do not count."""
    assert subject_info(subject)[1] is reply


def test_base_subject_decodes_rfc2047_first():
    """Encoded words are decoded before extraction (step 1), and keys compare
    under i;ascii-casemap (ASCII upper-cased only)."""
    facts = message(1, b"Subject: =?utf-8?q?Re=3A_caf=C3=A9?= =?utf-8?q?_Bar?=\r\n")
    assert facts.base_subject == "CAFé BAR"


def test_ascii_casemap_leaves_non_ascii_alone():
    """i;ascii-casemap maps only a-z."""
    assert ascii_casemap("abc éß z") == "ABC éß Z"


def test_pathological_subject_is_linear():
    """Thousands of prefixes, blobs and trailers are stripped quickly."""
    subject = "Re: " * 20000 + "[x] " * 20000 + "hello" + " (fwd)" * 20000
    assert base_subject(subject) == "hello"
    assert base_subject("[a]" * 50000) == "[a]"


def test_sort_subject_then_sequence():
    """SORT SUBJECT orders by base subject; equal subjects keep sequence order."""
    messages = [message(1, b"Subject: Re: beta\r\n"), message(2, b"Subject: alpha\r\n"),
                message(3, b"Subject: [x] BETA\r\n"), message(4, b"Subject: Fwd: Alpha\r\n")]
    assert order([(False, "SUBJECT")], messages) == [2, 4, 1, 3]


def test_reverse_keeps_ties_in_sequence_order():
    """REVERSE reverses the criterion only; ties stay in ascending sequence order."""
    messages = [message(1, b"", size=5), message(2, b"", size=9), message(3, b"", size=5)]
    assert order([(True, "SIZE")], messages) == [2, 1, 3]
    assert order([(False, "SIZE")], messages) == [1, 3, 2]


def test_date_uses_date_field_in_utc_else_internal_date():
    """DATE is the Date: field normalised to UTC; without a parseable Date: the
    internal date stands in (RFC 5256 2.2)."""
    t = calendar.timegm((2024, 1, 1, 12, 0, 0))
    messages = [
        message(1, b"Date: Mon, 1 Jan 2024 13:00:00 +0200\r\n"),  # 11:00 UTC
        message(2, b"Date: Mon, 1 Jan 2024 11:30:00 -0000\r\n"),  # 11:30 UTC
        message(3, b"Date: garbage\r\n", received=t - 7200),      # 10:00 UTC
        message(4, b"", received=t),                               # 12:00 UTC
    ]
    assert order([(False, "DATE")], messages) == [3, 1, 2, 4]


def test_arrival_and_size():
    """ARRIVAL orders by internal date, SIZE by RFC822.SIZE."""
    messages = [message(1, b"", size=30, received=3), message(2, b"", size=10, received=1),
                message(3, b"", size=20, received=2)]
    assert order([(False, "ARRIVAL")], messages) == [2, 3, 1]
    assert order([(False, "SIZE")], messages) == [2, 3, 1]


def test_address_keys_use_first_mailbox_local_part():
    """FROM/TO/CC sort by the first address's mailbox (local part), not the
    display name, case-insensitively; a missing field sorts as ""."""
    messages = [
        message(1, b"From: Zed <bob@z.example>\r\nTo: b@x, a@x\r\n"),
        message(2, b"From: =?utf-8?q?Doe=2C_Ann?= <carol@y.example>\r\nCc: c@x\r\n"),
        message(3, b"From: ALICE@w.example\r\n"),
        message(4, b"To: A@x\r\n"),
    ]
    assert order([(False, "FROM")], messages) == [4, 3, 1, 2]
    assert order([(False, "TO")], messages) == [2, 3, 4, 1]
    assert order([(False, "CC")], messages) == [1, 3, 4, 2]


def test_group_sorts_by_its_name():
    """An address group's first "address" is the group name, as in ENVELOPE."""
    facts = message(1, b"To: undisclosed-recipients:;\r\n")
    assert sort_key("TO", facts) == "UNDISCLOSED-RECIPIENTS"


def test_display_keys():
    """DISPLAYFROM/DISPLAYTO use the decoded display name, else mailbox@host (RFC 5957 3)."""
    named = message(1, b"From: =?utf-8?q?zo=C3=AB?= <a@x>\r\n")
    bare = message(2, b"From: <bob@example.org>\r\nTo: Carl <c@x>\r\n")
    assert sort_key("DISPLAYFROM", named) == "ZOë"
    assert sort_key("DISPLAYFROM", bare) == "BOB@EXAMPLE.ORG"
    assert sort_key("DISPLAYTO", bare) == "CARL"
    assert order([(False, "DISPLAYFROM")], [named, bare]) == [2, 1]


def test_multiple_criteria_most_significant_first():
    """Later criteria only order messages equal on the earlier ones."""
    messages = [message(1, b"Subject: b\r\n", size=1), message(2, b"Subject: a\r\n", size=2),
                message(3, b"Subject: b\r\n", size=3), message(4, b"Subject: a\r\n", size=1)]
    assert order([(False, "SUBJECT"), (True, "SIZE")], messages) == [2, 4, 3, 1]


def test_input_order_does_not_matter():
    """The result depends on the messages, not on the order they are given in."""
    messages = [message(3, b"Subject: x\r\n"), message(1, b"Subject: x\r\n"),
                message(2, b"Subject: x\r\n")]
    assert order([(False, "SUBJECT")], messages) == [1, 2, 3]


def test_unknown_key_is_an_error():
    """An unknown criterion raises ValueError (the parser never produces one)."""
    with pytest.raises(ValueError):
        sort_key("COLOUR", message(1, b""))


def test_fields_come_from_the_header_only():
    """Given a whole message (LF line ends too), body lines are never read as fields."""
    facts = message(1, b"From: a@x\n\nSubject: not a field\n")
    assert facts.base_subject == ""
    assert sort_key("FROM", facts) == "A"
