"""SEARCH key grammar (RFC 9051 6.4.4) as a typed tree."""

import datetime

import pytest

from mailserverd.imap import commands as c
from mailserverd.imap.parser import CommandError, CommandParser, CommandReady
from mailserverd.imap.search import MAX_SEARCH_DEPTH, SearchKey
from mailserverd.imap.sequence import SequenceSet


def parse(line):
    parser = CommandParser()
    parser.authenticated = True
    parser.receive(line + b"\r\n")
    event = parser.next_event()
    assert parser.next_event() is None
    return event


def key(text):
    event = parse(b"t SEARCH " + text)
    assert isinstance(event, CommandReady), event
    return event.command.key


@pytest.mark.parametrize("word", ["ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD",
                                  "RECENT", "SEEN", "UNANSWERED", "UNDELETED", "UNDRAFT",
                                  "UNFLAGGED", "UNSEEN"])
def test_flag_keys(word):
    """Argument-less keys parse case-insensitively."""
    assert key(word.lower().encode()) == SearchKey(word)


@pytest.mark.parametrize("word", ["BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"])
def test_string_keys(word):
    """String keys take an astring, decoded to str."""
    assert key(word.encode() + b' "hello world"') == SearchKey(word, ("hello world",))


@pytest.mark.parametrize("word", ["BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"])
def test_date_keys(word):
    """Date keys take dd-Mon-yyyy, bare or quoted."""
    expected = SearchKey(word, (datetime.date(2024, 3, 7),))
    assert key(word.encode() + b" 7-Mar-2024") == expected
    assert key(word.encode() + b' "07-mar-2024"') == expected


def test_invalid_date_is_bad():
    """30-Feb is not a date."""
    assert parse(b"t SEARCH ON 30-Feb-2024").status == "BAD"


def test_size_within_keyword_header_keys():
    """LARGER/SMALLER, OLDER/YOUNGER (RFC 5032), KEYWORD, HEADER."""
    assert key(b"LARGER 1000") == SearchKey("LARGER", (1000,))
    assert key(b"YOUNGER 3600") == SearchKey("YOUNGER", (3600,))
    assert key(b"UNKEYWORD $Junk") == SearchKey("UNKEYWORD", ("$Junk",))
    assert key(b'HEADER Message-ID "<a@b>"') == SearchKey("HEADER", ("Message-ID", "<a@b>"))


def test_sequence_set_and_uid_keys():
    """A bare sequence set, "$" (RFC 5182) and UID set are keys."""
    assert key(b"1:3,*") == SearchKey("SEQ", (SequenceSet(((1, 3), (None, None))),))
    assert key(b"$") == SearchKey("SEQ", (SequenceSet(saved=True),))
    assert key(b"UID 5:*") == SearchKey("UID", (SequenceSet(((5, None),)),))


def test_modseq_key():
    """MODSEQ with and without entry name (RFC 7162 3.1.5)."""
    assert key(b"MODSEQ 620162338") == SearchKey("MODSEQ", (620162338, None, None))
    assert key(b'MODSEQ "/flags/\\\\draft" all 620162338') == SearchKey(
        "MODSEQ", (620162338, "/flags/\\draft", "all"))


def test_not_or_and_nesting():
    """NOT, OR and parentheses nest; several keys at top level are ANDed."""
    assert key(b"OR (SEEN FLAGGED) NOT DELETED FROM x") == SearchKey("AND", (
        SearchKey("OR", (SearchKey("AND", (SearchKey("SEEN"), SearchKey("FLAGGED"))),
                         SearchKey("NOT", (SearchKey("DELETED"),)))),
        SearchKey("FROM", ("x",))))


def test_charset_decodes_strings():
    """CHARSET ISO-8859-1 decodes a literal's bytes accordingly."""
    event = parse(b"t SEARCH CHARSET ISO-8859-1 SUBJECT {4+}\r\ncaf\xe9")
    assert event.command.key == SearchKey("SUBJECT", ("café",))
    assert event.command.charset == "ISO-8859-1"


def test_unknown_charset_is_no_badcharset():
    """An unknown charset gets NO [BADCHARSET (UTF-8 US-ASCII)] (RFC 9051 6.4.4)."""
    event = parse(b"t SEARCH CHARSET X-NOPE ALL")
    assert (event.status, event.code) == ("NO", "BADCHARSET (UTF-8 US-ASCII)")


def test_non_text_codec_is_refused_as_charset():
    """Python codecs that are not text encodings (base64, rot13) are not charsets."""
    assert parse(b"t SEARCH CHARSET base64 ALL").code.startswith("BADCHARSET")


def test_invalid_utf8_string_is_no():
    """Strings that are not valid in the charset are refused, never a traceback."""
    event = parse(b"t SEARCH CHARSET UTF-8 TEXT {2+}\r\n\xff\xfe")
    assert (event.status, event.code[:10]) == ("NO", "BADCHARSET")


def test_search_return_options():
    """SEARCH RETURN (MIN MAX COUNT ALL SAVE) (RFC 4731, 5182); () means ALL."""
    event = parse(b"t UID SEARCH RETURN (MIN MAX COUNT ALL SAVE) UNSEEN")
    assert event.command.returns == ("MIN", "MAX", "COUNT", "ALL", "SAVE") and event.command.uid
    assert parse(b"t SEARCH RETURN () ALL").command.returns == ()
    assert parse(b"t SEARCH RETURN (BOGUS) ALL").status == "BAD"


def test_unknown_key_is_bad():
    """Unknown search keys get BAD."""
    assert parse(b"t SEARCH FROBNICATE").status == "BAD"


def test_nesting_at_the_cap_is_accepted():
    """Parentheses just under the depth cap still parse."""
    depth = MAX_SEARCH_DEPTH - 1
    event = parse(b"t SEARCH " + b"(" * depth + b"ALL" + b")" * depth)
    assert isinstance(event, CommandReady)


def test_nesting_over_the_cap_is_bad():
    """Nesting beyond the cap gets BAD (not a RecursionError)."""
    depth = MAX_SEARCH_DEPTH + 1
    event = parse(b"t SEARCH " + b"(" * depth + b"ALL" + b")" * depth)
    assert isinstance(event, CommandError) and "nested" in event.text


def test_long_not_chain_is_bad():
    """NOT NOT NOT ... nests too and is capped the same way."""
    event = parse(b"t SEARCH " + b"NOT " * 5000 + b"ALL")
    assert isinstance(event, CommandError)


def test_search_command_object():
    """The command carries charset None by default and uid False."""
    assert parse(b"t SEARCH ALL").command == c.Search("t", SearchKey("ALL"))
