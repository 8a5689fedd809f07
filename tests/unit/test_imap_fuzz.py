"""Hypothesis fuzzing of the IMAP parser: only the parser's own results come out."""

from hypothesis import HealthCheck, given, settings, strategies as st

from mailserverd.imap.grammar import parse_command
from mailserverd.imap.lexer import ParseFailure
from mailserverd.imap.parser import (ClientLine, CommandError, CommandParser, CommandReady,
                                     ContinuationNeeded, ParserLimits)

EVENTS = (CommandReady, CommandError, ContinuationNeeded, ClientLine)
SMALL = ParserLimits(max_line=512, max_literal=256, max_append=1024, max_command=4096,
                     max_preauth_literal=64, max_discard=2048)

# Tokens that reach deep into the grammar when combined at random.
TOKENS = [
    b"a1", b"*", b" ", b"  ", b"(", b")", b"[", b"]", b"<", b">", b".", b"{3}\r\n", b"{2+}\r\n",
    b"~{1}\r\n", b"{99999999999}\r\n", b'"', b'\\"', b"\\", b"\r\n", b"\n", b"NIL", b"UID",
    b"LOGIN", b"SELECT", b"EXAMINE", b"FETCH", b"STORE", b"SEARCH", b"APPEND", b"LIST", b"LSUB",
    b"STATUS", b"SORT", b"THREAD", b"ID", b"ENABLE", b"CREATE", b"RENAME", b"COPY", b"MOVE",
    b"EXPUNGE", b"AUTHENTICATE", b"GETQUOTA", b"GETQUOTAROOT", b"IDLE", b"COMPRESS",
    b"BODY", b"BODY.PEEK", b"BINARY", b"HEADER.FIELDS", b"HEADER.FIELDS.NOT", b"MIME", b"TEXT",
    b"HEADER", b"1", b"0", b"1:*", b"$", b"4294967296", b"OR", b"NOT", b"CHARSET", b"UTF-8",
    b"RETURN", b"MIN", b"COUNT", b"CONDSTORE", b"QRESYNC", b"CHANGEDSINCE", b"VANISHED",
    b"UNCHANGEDSINCE", b"+FLAGS", b"-FLAGS.SILENT", b"\\Seen", b"$Junk", b"INBOX", b"&AOQ-",
    b"&", b"-", b"1-Jan-2020", b'"01-Jan-2020 00:00:00 +0000"', b"\xff", b"\x00", b"%",
    b"SUBSCRIBED", b"RECURSIVEMATCH", b"USE", b"REVERSE", b"DATE", b"HEADER", b"MODSEQ",
]


def drain(parser, data, chunk):
    out = []
    for start in range(0, len(data), chunk):
        parser.receive(data[start:start + chunk])
        while (event := parser.next_event()) is not None:
            assert isinstance(event, EVENTS)
            out.append(event)
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.integers(1, 64), st.booleans())
def test_random_bytes(data, chunk, authenticated):
    """Random bytes in random chunks yield only parser events, never an exception."""
    parser = CommandParser(SMALL)
    parser.authenticated = authenticated
    drain(parser, data, chunk)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=40), st.integers(1, 32), st.booleans(),
       st.booleans())
def test_token_soup(tokens, chunk, authenticated, utf8):
    """Grammar-shaped token sequences yield only parser events."""
    parser = CommandParser(SMALL)
    parser.authenticated = authenticated
    parser.utf8 = utf8
    drain(parser, b"a1 " + b" ".join(tokens) + b"\r\n", chunk)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=30))
def test_grammar_raises_only_parse_failure(tokens):
    """parse_command on any frame returns a command or raises ParseFailure."""
    try:
        parse_command(b"t " + b"".join(tokens))
    except ParseFailure:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=30), st.integers(1, 16))
def test_line_mode_interleaved(tokens, chunk):
    """expect_line between commands never breaks framing."""
    parser = CommandParser(SMALL)
    parser.receive(b"a1 IDLE\r\n")
    assert isinstance(parser.next_event(), CommandReady)
    parser.expect_line()
    drain(parser, b"".join(tokens) + b"\r\na2 NOOP\r\n", chunk)
