"""IMAP command framing: lines, literals, continuations and their limits."""

import pytest

from mailserverd.imap import commands as c
from mailserverd.imap.parser import (ClientLine, CommandError, CommandParser, CommandReady,
                                     ContinuationNeeded, ParserLimits)


def run(parser, data=b""):
    parser.receive(data)
    out = []
    while (event := parser.next_event()) is not None:
        out.append(event)
    return out


def authed(limits=ParserLimits()):
    parser = CommandParser(limits)
    parser.authenticated = True
    return parser


def test_simple_command_line():
    """A complete line becomes one CommandReady with its tag."""
    [event] = run(CommandParser(), b"a1 NOOP\r\n")
    assert event == CommandReady(c.Noop("a1"))


def test_command_split_across_reads():
    """Bytes arriving in pieces are framed once the line ends."""
    parser = CommandParser()
    assert run(parser, b"a1 NO") == []
    assert run(parser, b"OP\r") == []
    assert run(parser, b"\n") == [CommandReady(c.Noop("a1"))]


def test_bare_lf_ends_a_line():
    """A line ending in LF alone is accepted, as common clients and Dovecot do."""
    assert run(CommandParser(), b"a1 NOOP\n") == [CommandReady(c.Noop("a1"))]


def test_empty_lines_between_commands_are_ignored():
    """Blank lines produce no event."""
    assert run(CommandParser(), b"\r\n\r\na1 NOOP\r\n") == [CommandReady(c.Noop("a1"))]


def test_pipelined_commands_come_out_in_order():
    """Several commands in one read are returned one at a time, in order."""
    events = run(CommandParser(), b"a1 NOOP\r\na2 CAPABILITY\r\na3 LOGOUT\r\n")
    assert [e.command.tag for e in events] == ["a1", "a2", "a3"]


def test_synchronizing_literal_asks_for_continuation():
    """{n} at a line end yields ContinuationNeeded before the literal is read."""
    parser = CommandParser()
    assert run(parser, b"a1 LOGIN {5}\r\n") == [ContinuationNeeded("a1")]
    assert run(parser, b"alice {6}\r\n") == [ContinuationNeeded("a1")]
    assert run(parser, b"secret\r\n") == [CommandReady(c.Login("a1", "alice", "secret"))]


def test_non_synchronizing_literal_needs_no_continuation():
    """{n+} (RFC 7888) is read at once, without a continuation request."""
    events = run(CommandParser(), b"a1 LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n")
    assert events == [CommandReady(c.Login("a1", "alice", "secret"))]


def test_literal_may_contain_crlf_and_braces():
    """Literal octets are data: CRLF or {n} inside them do not end or split the command."""
    message = b"Subject: x {3}\r\n\r\nbody\r\n"
    data = b"a1 APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n"
    [event] = run(authed(), data)
    assert event.command.message == message


def test_literal_split_across_reads():
    """A literal arriving in several reads is reassembled."""
    parser = authed()
    run(parser, b"a1 APPEND INBOX {10}\r\n")
    assert run(parser, b"01234") == []
    [event] = run(parser, b"56789\r\n")
    assert event.command.message == b"0123456789"


def test_zero_length_literal():
    """{0} is a valid empty string."""
    [event] = run(CommandParser(), b"a1 LOGIN {0+}\r\n {1+}\r\nx\r\n")
    assert event == CommandReady(c.Login("a1", "", "x"))
    [event] = run(CommandParser(), b"a2 ID ({0+}\r\n NIL)\r\n")
    assert event == CommandReady(c.Id("a2", (("", None),)))


def test_append_over_limit_is_refused_without_continuation():
    """APPEND INBOX {99999999999}: NO [TOOBIG] and no "+" (RFC 7889 4)."""
    [event] = run(authed(), b"a1 APPEND INBOX {99999999999}\r\n")
    assert event == CommandError("a1", "NO", "Message too large", "TOOBIG")


def test_append_limit_follows_configuration():
    """A message literal one octet over max_append is refused; at the limit it is accepted."""
    limits = ParserLimits(max_append=100)
    assert run(authed(limits), b"a1 APPEND INBOX {101}\r\n")[0].code == "TOOBIG"
    assert run(authed(limits), b"a1 APPEND INBOX {100}\r\n") == [ContinuationNeeded("a1")]


def test_huge_login_literal_is_refused_without_continuation():
    """LOGIN {4294967296}: BAD [TOOBIG], no "+"; the next command still works."""
    parser = CommandParser()
    [event] = run(parser, b"a1 LOGIN {4294967296}\r\n")
    assert (event.tag, event.status, event.code, event.fatal) == ("a1", "BAD", "TOOBIG", False)
    assert run(parser, b"a2 NOOP\r\n") == [CommandReady(c.Noop("a2"))]


def test_absurd_literal_size_digits_are_refused():
    """A size with hundreds of digits is refused, not converted at great cost."""
    [event] = run(CommandParser(), b"a1 LOGIN {" + b"9" * 500 + b"}\r\n")
    assert event.code == "TOOBIG"


def test_preauth_non_synchronizing_literal_over_4096_is_bad():
    """Before authentication a {n+} over 4096 octets is BAD; its octets are dropped, not run."""
    parser = CommandParser()
    payload = b"x" * 5000
    events = run(parser, b"a1 LOGIN {5000+}\r\n" + payload + b" pw\r\na2 NOOP\r\n")
    assert events[0] == CommandError("a1", "BAD", "Literal too large (non-synchronizing)",
                                     "TOOBIG")
    assert events[1:] == [CommandReady(c.Noop("a2"))]


def test_preauth_literal_of_4096_is_accepted():
    """Exactly 4096 octets before authentication is within the limit."""
    parser = CommandParser()
    events = run(parser, b"a1 LOGIN {4096+}\r\n" + b"u" * 4096 + b" pw\r\n")
    assert events[0].command.username == "u" * 4096


def test_refused_literal_smuggling_is_not_executed():
    """Commands hidden inside a refused LITERAL+ literal are never parsed."""
    hidden = b"\r\nevil DELETE INBOX\r\n"
    hidden += b"x" * (5000 - len(hidden))
    events = run(CommandParser(), b"a1 LOGIN {5000+}\r\n" + hidden + b"\r\na2 NOOP\r\n")
    assert not any(isinstance(e, CommandReady) and e.command.tag == "evil" for e in events)
    assert events[-1] == CommandReady(c.Noop("a2"))


def test_enormous_refused_literal_plus_is_fatal():
    """A refused {n+} larger than we are willing to drop closes the connection."""
    parser = CommandParser()
    [event] = run(parser, b"a1 LOGIN {99999999999+}\r\n")
    assert event.fatal and event.code == "TOOBIG"
    assert run(parser, b"a2 NOOP\r\n") == []


def test_non_append_literal_limit_after_authentication():
    """After login, literals outside APPEND are capped at max_literal."""
    parser = authed(ParserLimits(max_literal=10))
    [event] = run(parser, b"a1 SELECT {11}\r\n")
    assert (event.status, event.code) == ("BAD", "TOOBIG")


def test_line_too_long_is_refused_before_it_ends():
    """A 1 MB line gets BAD as soon as it passes the line limit; memory stays bounded."""
    parser = CommandParser()
    [event] = run(parser, b"a1 NOOP " + b"x" * (1024 * 1024))
    assert (event.tag, event.status) == ("a1", "BAD")
    assert parser.buffered < 100
    assert run(parser, b"yyy\r\na2 NOOP\r\n") == [CommandReady(c.Noop("a2"))]


def test_line_too_long_in_one_read():
    """A too-long line that arrives whole with its CRLF is refused as well."""
    events = run(CommandParser(ParserLimits(max_line=100)), b"a1 " + b"x" * 200 + b"\r\na2 NOOP\r\n")
    assert events[0].status == "BAD" and events[1] == CommandReady(c.Noop("a2"))


def test_too_long_line_ending_in_literal_plus_drops_the_literal():
    """An over-long line announcing {n+}: the n octets that follow are dropped, not run."""
    parser = CommandParser(ParserLimits(max_line=100))
    data = b"a1 LOGIN " + b"x" * 200 + b" {20+}\r\n" + b"evil DELETE INBOX\r\n " + b"\r\na2 NOOP\r\n"
    events = run(parser, data)
    assert events[0].status == "BAD"
    assert events[1:] == [CommandReady(c.Noop("a2"))]


def test_command_total_size_limit():
    """Many small literals cannot build a command beyond max_command."""
    parser = authed(ParserLimits(max_command=1000, max_literal=600))
    events = run(parser, b"a1 ID ({500+}\r\n" + b"a" * 500 + b" {500+}\r\n")
    assert events and events[-1].code == "TOOBIG"


def test_take_buffer_drops_pipelined_bytes_after_starttls():
    """Bytes pipelined after STARTTLS are handed back by take_buffer and never parsed."""
    parser = CommandParser()
    parser.receive(b"a1 STARTTLS\r\na2 LOGIN alice secret\r\n")
    assert parser.next_event() == CommandReady(c.StartTLS("a1"))
    assert parser.take_buffer() == b"a2 LOGIN alice secret\r\n"
    assert parser.next_event() is None


def test_expect_line_returns_raw_client_line():
    """After expect_line the next line is a ClientLine (AUTHENTICATE response, DONE)."""
    parser = CommandParser()
    run(parser, b"a1 IDLE\r\n")
    parser.expect_line()
    assert run(parser, b"DONE\r\na2 NOOP\r\n") == [ClientLine(b"DONE"), CommandReady(c.Noop("a2"))]


def test_expect_line_too_long_gives_none():
    """An over-long AUTHENTICATE response is reported as ClientLine(None) and skipped."""
    parser = CommandParser(ParserLimits(max_line=100))
    parser.expect_line()
    assert run(parser, b"A" * 300) == [ClientLine(None)]
    assert run(parser, b"AAAA\r\na2 NOOP\r\n") == [CommandReady(c.Noop("a2"))]


def test_error_keeps_the_tag_when_it_is_valid():
    """A malformed command is answered with its own tag."""
    [event] = run(CommandParser(), b"tag7 SELECT\r\n")
    assert event.tag == "tag7" and event.status == "BAD"


def test_error_without_valid_tag_uses_star():
    """A line without a usable tag is answered untagged."""
    [event] = run(CommandParser(), b"(((\r\n")
    assert event.tag == "*"


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
def test_framing_is_independent_of_read_size(limit):
    """Feeding the same stream in chunks of any size gives the same events."""
    stream = (b"a1 LOGIN {5+}\r\nalice pw\r\na2 APPEND INBOX (\\Seen) {4}\r\nabcd\r\n"
              b"a3 SEARCH TEXT {2+}\r\nhi\r\n")
    whole = run(authed(), stream)
    parser = authed()
    pieces = []
    for start in range(0, len(stream), limit):
        pieces += run(parser, stream[start:start + limit])
    assert pieces == whole


def test_limits_from_settings():
    """APPEND follows limits.max_message_size; lines never exceed limits.max_line_length."""
    from types import SimpleNamespace
    settings = SimpleNamespace(limits=SimpleNamespace(max_message_size=1000, max_line_length=500))
    limits = ParserLimits.from_settings(settings)
    assert (limits.max_append, limits.max_line) == (1000, 500)
    roomy = SimpleNamespace(limits=SimpleNamespace(max_message_size=1000, max_line_length=1 << 20))
    assert ParserLimits.from_settings(roomy).max_line == 65536
