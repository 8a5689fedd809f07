"""Dot-stuffing of multi-line bodies (RFC 1939 3) and the TOP cut, chunked or whole."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailserverd.pop3.stuffing import DotStuffer, stuff, top_of_message


def unstuff(wire: bytes) -> bytes:
    """What an RFC 1939 client reads back: lines up to the lone ".", leading "." removed."""
    lines = wire.split(b"\r\n")
    assert lines[-1] == b"" and lines[-2] == b".", wire[-20:]
    body = lines[:-2]
    assert b"." not in body, "a lone '.' before the end would end the body early"
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in body)


def chunked(message: bytes, cuts: list[int]) -> bytes:
    stuffer = DotStuffer()
    out, start = [], 0
    for cut in sorted(set(cuts)):
        out.append(stuffer.feed(message[start:cut]))
        start = cut
    out.append(stuffer.feed(message[start:]))
    return b"".join(out) + stuffer.finish()


def test_lone_dot_line_is_stuffed():
    """A line that is a lone "." goes out as ".." so it cannot end the body."""
    assert stuff(b"a\r\n.\r\nb\r\n") == b"a\r\n..\r\nb\r\n.\r\n"


def test_leading_dot_lines_are_stuffed():
    """Every line starting with "." gets one more, the first line included."""
    assert stuff(b".a\r\n..b\r\nc.d\r\n") == b"..a\r\n...b\r\nc.d\r\n.\r\n"


def test_message_without_final_crlf_gets_one():
    """RFC 1939 3: a body not ending in CRLF gets one before the terminating "."."""
    assert stuff(b"Subject: x\r\n\r\nno newline") == b"Subject: x\r\n\r\nno newline\r\n.\r\n"


def test_message_ending_in_dot_without_crlf():
    """A last line "." without CRLF is stuffed and terminated properly."""
    assert stuff(b"a\r\n.") == b"a\r\n..\r\n.\r\n"


def test_empty_message_is_just_the_terminator():
    """An empty body sends only ".\\r\\n"."""
    assert stuff(b"") == b".\r\n"


def test_bare_lf_becomes_crlf_and_is_stuffed():
    """A bare LF is sent as CRLF, and a "." after it is stuffed."""
    assert stuff(b"a\n.b\nc\r\n") == b"a\r\n..b\r\nc\r\n.\r\n"


def test_crlf_is_never_doubled():
    """Stored CRLF stays CRLF (twisted.mail.pop3 sent CR CR LF)."""
    assert b"\r\r" not in stuff(b"a\r\nb\r\n" * 100)


def test_crlf_split_across_chunks():
    """A CRLF cut between two chunks is still one CRLF, and a "." after it is stuffed."""
    assert chunked(b"a\r\n.b\r\n", [2]) == b"a\r\n..b\r\n.\r\n"
    assert chunked(b"a\r\n.b\r\n", [3]) == b"a\r\n..b\r\n.\r\n"


def test_dot_at_16k_boundary_is_stuffed():
    """The twisted.mail.pop3 bug: a "." line starting exactly at a 16 kB chunk boundary is stuffed."""
    line = b"x" * 16382 + b"\r\n"
    message = line + b".\r\n" + line
    assert chunked(message, [16384]) == stuff(message)
    assert b"\r\n..\r\n" in stuff(message)


def test_trailing_cr_is_a_line_end():
    """A message ending in a bare CR is closed with CRLF, not CR CR LF."""
    assert stuff(b"a\r") == b"a\r\n.\r\n"


# Bodies made of the characters that matter to stuffing.
BODIES = st.binary(max_size=300).map(lambda raw: bytes(b"\r\n.x"[b % 4] for b in raw))


@settings(max_examples=120, deadline=None)
@given(BODIES, st.lists(st.integers(min_value=0, max_value=300), max_size=10))
def test_chunking_never_changes_the_wire(message, cuts):
    """Any split into chunks gives exactly the bytes of the whole message stuffed at once."""
    assert chunked(message, cuts) == stuff(message)


@settings(max_examples=120, deadline=None)
@given(BODIES)
def test_wire_is_well_formed_and_round_trips(message):
    """The wire is CRLF lines, no lone "." before the end, and unstuffs to the message with
    line ends made CRLF and a final CRLF added if missing."""
    wire = stuff(message)
    assert wire.count(b"\n") == wire.count(b"\r\n")
    expected = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if expected.endswith(b"\r"):
        expected += b"\n"
    elif expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert unstuff(wire) == expected


def test_top_cuts_after_n_body_lines():
    """TOP's cut: the header, the blank line, then n lines of the body."""
    message = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n"
    assert top_of_message(message, 0) == b"A: 1\r\nB: 2\r\n\r\n"
    assert top_of_message(message, 2) == b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n"
    assert top_of_message(message, 99) == message


def test_top_of_message_without_body_is_the_whole_header():
    """A message with no blank line is all header: TOP gives all of it."""
    assert top_of_message(b"A: 1\r\nB: 2", 5) == b"A: 1\r\nB: 2"


def test_top_of_message_with_empty_header():
    """A message starting with the blank line has an empty header; the body lines follow."""
    assert top_of_message(b"\r\nl1\r\nl2\r\n", 1) == b"\r\nl1\r\n"


def test_top_last_line_without_crlf():
    """A last body line without CRLF counts as a line."""
    assert top_of_message(b"A: 1\r\n\r\nonly", 1) == b"A: 1\r\n\r\nonly"
