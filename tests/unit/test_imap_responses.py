"""Rendering of IMAP responses (RFC 9051 7)."""

import datetime

from mailserverd.imap import responses as r
from mailserverd.imap.fetch import FetchAtt, Section


def test_string_quoting_and_literals():
    """Short 7-bit text is quoted with escapes; 8-bit, CR/LF or long text is a literal."""
    assert r.string(b'a"b\\c') == b'"a\\"b\\\\c"'
    assert r.string("café") == b"{5}\r\ncaf\xc3\xa9"
    assert r.string(b"a\r\nb") == b"{4}\r\na\r\nb"
    assert r.string(b"x" * 2000).startswith(b"{2000}\r\n")


def test_astring_prefers_atoms_but_not_nil():
    """An astring is an atom when possible; "NIL" and "" must be quoted."""
    assert r.astring("INBOX") == b"INBOX"
    assert r.astring("NIL") == b'"NIL"'
    assert r.astring("") == b'""'
    assert r.astring("a b") == b'"a b"'


def test_mailbox_names_are_encoded():
    """Mailbox names go out in modified UTF-7, or UTF-8 after UTF8=ACCEPT."""
    assert r.mailbox("Entwürfe") == b"Entw&APw-rfe"
    assert r.mailbox("Entwürfe", utf8=True) == b"{9}\r\nEntw\xc3\xbcrfe"


def test_render_nested_values():
    """None, ints, strings, atoms, raw bytes and nested lists render as IMAP data."""
    value = ("text", None, 5, r.Atom("\\Seen"), r.Raw(b"(X)"), [b"a", [b"b"]], ())
    assert r.render(value) == b'("text" NIL 5 \\Seen (X) ("a" ("b")) ())'


def test_render_deep_nesting_without_recursion():
    """10,000 nested lists render without RecursionError."""
    value = None
    for _ in range(10000):
        value = [value]
    rendered = r.render(value)
    assert rendered.startswith(b"(" * 10000) and rendered.endswith(b")" * 10000)


def test_literal8():
    """Literal8 renders as ~{n} (RFC 3516 4.3)."""
    assert r.render(r.Literal8(b"a\x00b")) == b"~{3}\r\na\x00b"


def test_tagged_and_untagged_status_lines():
    """Status responses carry an optional [code]; CR/LF in text cannot split the line."""
    assert r.tagged("a1", "OK", "done", "READ-WRITE") == b"a1 OK [READ-WRITE] done\r\n"
    assert r.tagged("a1", "BAD", "x\r\n* BYE y") == b"a1 BAD x * BYE y\r\n"
    assert r.untagged_status("OK", "hi", "UIDNEXT 5") == b"* OK [UIDNEXT 5] hi\r\n"
    assert r.bye("bye") == b"* BYE bye\r\n"
    assert r.continuation() == b"+ Ready\r\n"


def test_internal_date():
    """INTERNALDATE uses dd-Mon-yyyy hh:mm:ss +zzzz, with the timezone offset."""
    when = datetime.datetime(2024, 2, 3, 4, 5, 6,
                             tzinfo=datetime.timezone(-datetime.timedelta(hours=5, minutes=30)))
    assert r.internal_date(when) == b'"03-Feb-2024 04:05:06 -0530"'
    assert r.internal_date(86400.0) == b'"02-Jan-1970 00:00:00 +0000"'


def test_fetch_response_with_labels():
    """A FETCH response uses each item's label and renders values."""
    body = FetchAtt("BODY", Section((), "HEADER.FIELDS", ("Subject",)), peek=True)
    line = r.fetch_response(4, [("UID", 9), (body, b"Subject: x\r\n\r\n"),
                                ("FLAGS", r.Raw(r.flags(["\\Seen"])))])
    assert line == (b"* 4 FETCH (UID 9 BODY[HEADER.FIELDS (Subject)] {14}\r\nSubject: x\r\n\r\n"
                    b" FLAGS (\\Seen))\r\n")


def test_list_status_search_responses():
    """LIST, STATUS, SEARCH and ESEARCH lines."""
    assert r.list_response(["\\HasNoChildren", "\\Sent"], "Sent") == (
        b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n')
    assert r.list_response(["\\Noselect"], "x", delimiter=None) == b"* LIST (\\Noselect) NIL x\r\n"
    assert r.status_response("INBOX", {"MESSAGES": 2, "UIDNEXT": 9}) == (
        b"* STATUS INBOX (MESSAGES 2 UIDNEXT 9)\r\n")
    assert r.search_response([2, 5], modseq=7) == b"* SEARCH 2 5 (MODSEQ 7)\r\n"
    assert r.search_response([]) == b"* SEARCH\r\n"
    assert r.esearch_response("t", False, {"COUNT": 0, "ALL": []}) == (
        b'* ESEARCH (TAG "t") COUNT 0\r\n')


def test_thread_response_shapes():
    """THREAD renders chains flat and branches nested (RFC 5256 4 example)."""
    threads = [(2, []), (3, [(6, [(4, [(23, [])]), (44, [(7, [(96, [])])])])])]
    assert r.thread_response(threads) == b"* THREAD (2)(3 6 (4 23)(44 7 96))\r\n"
    assert r.thread_response([(None, [(3, []), (5, [])])]) == b"* THREAD ((3)(5))\r\n"


def test_thread_response_long_chain_is_iterative():
    """A reply chain 50,000 long renders without recursion."""
    node = (50000, [])
    for number in range(49999, 0, -1):
        node = (number, [node])
    line = r.thread_response([node])
    assert line.startswith(b"* THREAD (1 2 3 ") and line.endswith(b" 49999 50000)\r\n")
    assert b"(" not in line[10:]


def test_misc_server_data():
    """EXISTS, EXPUNGE, VANISHED, NAMESPACE, ID, QUOTA, ENABLED, CAPABILITY."""
    assert r.exists(3) == b"* 3 EXISTS\r\n"
    assert r.expunge(2) == b"* 2 EXPUNGE\r\n"
    assert r.vanished([5, 3, 4], earlier=True) == b"* VANISHED (EARLIER) 3:5\r\n"
    assert r.namespace_response() == b'* NAMESPACE (("" "/")) NIL NIL\r\n'
    assert r.id_response(None) == b"* ID NIL\r\n"
    assert r.quota_response("", {"STORAGE": (1, 2)}) == b'* QUOTA "" (STORAGE 1 2)\r\n'
    assert r.quotaroot_response("INBOX", [""]) == b'* QUOTAROOT INBOX ""\r\n'
    assert r.enabled(["CONDSTORE"]) == b"* ENABLED CONDSTORE\r\n"
    assert r.capability(["IMAP4rev1", "IDLE"]) == b"* CAPABILITY IMAP4rev1 IDLE\r\n"
