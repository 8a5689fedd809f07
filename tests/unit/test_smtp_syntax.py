"""Envelope syntax (RFC 5321 4.1.2): paths, domains, literals and DSN parameters."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserverd.smtp.syntax import (CommandError, Path, decode_xtext, parse_helo_name, parse_params,
                                     parse_path, split_path_and_params)


@pytest.mark.parametrize("text, expected", [
    ("<alice@Example.TEST>", Path("alice", "example.test")),
    ('<"john smith"@example.test>', Path("john smith", "example.test", quoted=True)),
    ('<"a\\"b"@example.test>', Path('a"b', "example.test", quoted=True)),
    ("<@relay.test,@b.test:bob@example.test>", Path("bob", "example.test", route=("relay.test", "b.test"))),
    ("<x@[192.0.2.1]>", Path("x", "[192.0.2.1]")),
    ("<x@[IPv6:2001:DB8::1]>", Path("x", "[IPv6:2001:db8::1]")),
    ("<a%b@example.test>", Path("a%b", "example.test")),
    ("<b!a@example.test>", Path("b!a", "example.test")),
])
def test_valid_paths_parse(text, expected):
    """Dot-strings, quoted strings, source routes and address literals parse per RFC 5321 4.1.2."""
    assert parse_path(text) == expected


@pytest.mark.parametrize("text", [
    "alice@example.test", "<alice>", "<alice@>", "<@example.test>", "<a..b@example.test>",
    "<.a@example.test>", "<a@-bad.test>", "<a@bad-.test>", "<a@[300.1.1.1]>", "<a@[IPv6:zz]>",
    "<a b@example.test>", "<a@b@example.test>", '<"unterminated@example.test>', "<" + "a" * 65 + "@x.test>",
    "<a@" + "b" * 64 + ".test>", "<@x.test>", "<@x.test:>", "<a@[01.2.3.4]>",
])
def test_invalid_paths_are_refused(text):
    """Malformed or over-long paths raise ValueError."""
    with pytest.raises(ValueError):
        parse_path(text)


def test_at_in_local_part_parses_only_when_asked():
    """"a@b@local" is recognisable as a relay attempt only when allow_at_in_local is set."""
    assert parse_path("<a@b@local.test>", allow_at_in_local=True) == Path("a@b", "local.test")


def test_utf8_paths_need_utf8_mode_and_domains_become_a_labels():
    """Non-ASCII parses only in SMTPUTF8 mode; U-label domains are stored as A-labels."""
    with pytest.raises(ValueError):
        parse_path("<jösé@bücher.test>")
    assert parse_path("<jösé@bücher.test>", utf8=True) == Path("jösé", "xn--bcher-kva.test")


def test_address_requotes_only_when_needed():
    """Path.address renders a quoted local part in quotes and a dot-string bare."""
    assert parse_path('<"john smith"@x.test>').address == '"john smith"@x.test'
    assert parse_path('<"john"@x.test>').address == "john@x.test"


def test_split_path_and_params_respects_quotes():
    """A ">" or space inside a quoted local part does not end the path."""
    assert split_path_and_params('<"a> b"@x.test> SIZE=1') == ('<"a> b"@x.test>', "SIZE=1")
    with pytest.raises(CommandError):
        split_path_and_params("<a@x.test>SIZE=1")


def test_params_are_uppercased_and_duplicates_refused():
    """Parameter keywords are case-insensitive; a repeated keyword is a 501."""
    assert parse_params("size=10 smtputf8") == {"SIZE": "10", "SMTPUTF8": None}
    with pytest.raises(CommandError) as caught:
        parse_params("SIZE=1 size=2")
    assert caught.value.reply.code == 501


def test_xtext_decodes_hex_escapes_and_refuses_bad_ones():
    """xtext (RFC 3461 4) turns "+XX" into the character; "+" without two hex digits is refused."""
    assert decode_xtext("a+2Bb+3Dc") == "a+b=c"
    for bad in ("a+2", "a+zz", "a=b"):
        with pytest.raises(CommandError):
            decode_xtext(bad)


def test_helo_name_takes_one_printable_token():
    """HELO accepts one printable token (real clients send IPs and underscores) and refuses controls."""
    assert parse_helo_name("my_pc.local extra") == "my_pc.local"
    with pytest.raises(CommandError):
        parse_helo_name("")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_fuzzed_paths_raise_only_value_error(text):
    """Any text given to parse_path either parses or raises ValueError."""
    for utf8 in (False, True):
        try:
            parse_path("<" + text + ">", utf8=utf8, allow_at_in_local=True)
        except ValueError:
            pass
