"""IMAP BODYSTRUCTURE, BODY and ENVELOPE (RFC 9051 7.5.2) from raw messages."""

import time

import pytest

from mailserverd.imap.responses import render
from mailserverd.mime.imapsection import IMAPMessage
from mailserverd.mime.imapstructure import bodystructure, envelope, parse_tree

# Messages written to exercise the corners of RFC 2045/2046/2231/5322, with the
# BODYSTRUCTURE and ENVELOPE that Dovecot 2.3.19 returned for them (captured
# by FETCH against Dovecot's imap binary on this machine). We match it byte
# for byte; Dovecot is what IMAP clients are tuned to.
DOVECOT = {
    'mixed_with_extension_data': (
        b'From: "Doe, John" <john@example.com>\nTo: undisclosed-recipients:;\nCc: A Group: a@b.c, "Quoted Name" <q@x.y>;, plain@host\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=   and\ttabs\nDate: Tue, 2 Jan 2024 10:00:00 +0100\nMessage-ID: <m1@example.com>\nIn-Reply-To: <parent@example.com>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b1"; foo=bar\n\n--b1\nContent-Type: text/plain; charset="iso-8859-1"; format=flowed\nContent-Transfer-Encoding: quoted-printable\nContent-ID: <part1@x>\nContent-Description: The  body\nContent-Language: en-US, de\nContent-Location: http://example.com/x\nContent-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n\ncaf=E9\n--b1\nContent-Type: application/octet-stream; name*0*=utf-8\'en\'%E2%82%AC; name*1="rate.pdf"\nContent-Disposition: attachment; filename*=utf-8\'\'%E2%82%AC%20rates.pdf; size=123\nContent-Transfer-Encoding: base64\n\nAAECAw==\n--b1\nContent-Type: message/rfc822\n\nFrom: inner@example.com\nTo: someone@example.com\nSubject: inner message\nContent-Type: multipart/alternative; boundary=inner\n\n--inner\nContent-Type: text/plain\n\nplain\n--inner\nContent-Type: text/html; charset=utf-8\n\n<p>html</p>\n--inner--\n--b1--\nepilogue\n',
        b'(("text" "plain" ("charset" "iso-8859-1" "format" "flowed") "<part1@x>" "The  body" "quoted-printable" 6 0 "Q2hlY2sgSW50ZWdyaXR5IQ==" NIL ("en-US" "de") "http://example.com/x")("application" "octet-stream" ("name*" "utf-8\'en\'%E2%82%ACrate.pdf") NIL NIL "base64" 8 NIL ("attachment" ("size" "123" "filename*" "utf-8\'\'%E2%82%AC%20rates.pdf")) NIL NIL)("message" "rfc822" NIL NIL NIL "7bit" 248 (NIL "inner message" ((NIL NIL "inner" "example.com")) ((NIL NIL "inner" "example.com")) ((NIL NIL "inner" "example.com")) ((NIL NIL "someone" "example.com")) NIL NIL NIL NIL) (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL NIL NIL)("text" "html" ("charset" "utf-8") NIL NIL "7bit" 11 0 NIL NIL NIL NIL) "alternative" ("boundary" "inner") NIL NIL NIL) 14 NIL NIL NIL NIL) "mixed" ("boundary" "b1" "foo" "bar") NIL NIL NIL)',
        b'("Tue, 2 Jan 2024 10:00:00 +0100" {36}\r\n=?utf-8?q?Gr=C3=BC=C3=9Fe?= and tabs (("Doe, John" NIL "john" "example.com")) (("Doe, John" NIL "john" "example.com")) (("Doe, John" NIL "john" "example.com")) ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) ((NIL NIL "A Group" NIL)(NIL NIL "a" "b.c")("Quoted Name" NIL "q" "x.y")(NIL NIL NIL NIL)(NIL NIL "plain" "host")) NIL "<parent@example.com>" "<m1@example.com>")'),
    'digest_default_rfc822': (
        b'From: d@x\nSubject: digest\nContent-Type: multipart/digest; boundary=dd\n\n--dd\n\nFrom: one@x\nSubject: one\n\nfirst\n--dd\nContent-Type: text/plain\n\nnot a message\n--dd--\n',
        b'(("message" "rfc822" NIL NIL NIL "7bit" 34 (NIL "one" ((NIL NIL "one" "x")) ((NIL NIL "one" "x")) ((NIL NIL "one" "x")) NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL NIL NIL) 3 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 13 0 NIL NIL NIL NIL) "digest" ("boundary" "dd") NIL NIL NIL)',
        b'(NIL "digest" ((NIL NIL "d" "x")) ((NIL NIL "d" "x")) ((NIL NIL "d" "x")) NIL NIL NIL NIL NIL)'),
    'multipart_without_boundary': (
        b'From: a@b\nContent-Type: multipart/mixed\n\nno boundary here\n',
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "mixed" NIL NIL NIL NIL)',
        b'(NIL NIL ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) NIL NIL NIL NIL NIL)'),
    'boundary_never_found': (
        b'From: a@b\nContent-Type: multipart/mixed; boundary=zzz\n\ntext only\n',
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "mixed" ("boundary" "zzz") NIL NIL NIL)',
        b'(NIL NIL ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) NIL NIL NIL NIL NIL)'),
    'header_only_no_newline': (
        b'From: a@b\nSubject: header only',
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)',
        b'(NIL "header only" ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) NIL NIL NIL NIL NIL)'),
    'empty_body': (
        b'From: a@b\nSubject: empty\n\n',
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)',
        b'(NIL "empty" ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) NIL NIL NIL NIL NIL)'),
    'headerless_and_empty_parts': (
        b'Content-Type: multipart/mixed; boundary="pad"\n\n--pad  \n--pad\n\nno header part\n--pad\nContent-Type: text/plain\n\nlast part without close',
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 14 0 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 23 0 NIL NIL NIL NIL) "mixed" ("boundary" "pad") NIL NIL NIL)',
        b'(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)'),
    'boundaries_sharing_a_prefix': (
        b'Content-Type: multipart/mixed; boundary="abc"\n\n--abc\nContent-Type: multipart/alternative; boundary="abcdef"\n\n--abcdef\nContent-Type: text/plain\n\none\n--abcdef\nContent-Type: text/html\n\ntwo\n--abcdef--\n\n--abc\nContent-Type: text/plain\n\nthree\n--abc--\n',
        b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 0 NIL NIL NIL NIL)("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 3 0 NIL NIL NIL NIL) "alternative" ("boundary" "abcdef") NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL NIL NIL) "mixed" ("boundary" "abc") NIL NIL NIL)',
        b'(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)'),
    'unusual_addresses': (
        b'From: John Q. Public <@route1,@route2:jqp@example.com>\nSender: (comment only)\nReply-To: \nTo: "very.unusual.@.unusual.com"@example.com, user@[192.168.0.1], <>\nCc: Name Only, =?iso-8859-1?q?J=F6rg?= <joerg@x.de> (comment)\nBcc: bcc@x (Real Name)\nSubject: addresses\n\nbody\n',
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1 NIL NIL NIL NIL)',
        b'(NIL "addresses" (("John Q. Public" "@route1,@route2" "jqp" "example.com")) (("John Q. Public" "@route1,@route2" "jqp" "example.com")) (("John Q. Public" "@route1,@route2" "jqp" "example.com")) ((NIL NIL "very.unusual.@.unusual.com" "example.com")(NIL NIL "user" "[192.168.0.1]")(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) (("Name Only" NIL "MISSING_MAILBOX" "MISSING_DOMAIN")("=?iso-8859-1?q?J=F6rg?=" NIL "joerg" "x.de")) (("Real Name" NIL "bcc" "x")) NIL NIL)'),
    'repeated_fields': (
        b'Subject: first\nSubject: second\nMessage-ID:\n <folded@x>\nFrom: a@b\nFrom: c@d\nContent-Type: text/plain; charset=us-ascii\nContent-Type: text/html\n\nx\n',
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1 NIL NIL NIL NIL)',
        b'(NIL "second" ((NIL NIL "a" "b")(NIL NIL "c" "d")) ((NIL NIL "a" "b")(NIL NIL "c" "d")) ((NIL NIL "a" "b")(NIL NIL "c" "d")) NIL NIL NIL NIL " <folded@x>")'),
    'uppercase_types': (
        b'MIME-Version: 1.0\nContent-Type: TEXT/HTML; CHARSET=UTF-8\nContent-Transfer-Encoding: 8BIT\nContent-Disposition: INLINE\n\n<b>x</b>\n',
        b'("TEXT" "HTML" ("CHARSET" "UTF-8") NIL NIL "8BIT" 10 1 NIL ("INLINE" NIL) NIL NIL)',
        b'(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)'),
    'nested_message_rfc822': (
        b'Content-Type: message/rfc822\n\nSubject: level1\nContent-Type: message/rfc822\n\nSubject: level2\n\ndeep body\n',
        b'("message" "rfc822" NIL NIL NIL "7bit" 79 (NIL "level1" NIL NIL NIL NIL NIL NIL NIL NIL) ("message" "rfc822" NIL NIL NIL "7bit" 30 (NIL "level2" NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 11 1 NIL NIL NIL NIL) 3 NIL NIL NIL NIL) 6 NIL NIL NIL NIL)',
        b'(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)'),
    'related_with_unknown_types': (
        b'Content-Type: multipart/related; type="text/html"; boundary=r\n\n--r\nContent-Type: text/html\n\n<img src="cid:x">\n--r\nContent-Type: image/png\nContent-ID: <x>\n\nPNG\n--r\nContent-Type: x-weird/x-type; a=1\n\nweird\n--r--\n',
        b'(("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 17 0 NIL NIL NIL NIL)("image" "png" NIL "<x>" NIL "7bit" 3 NIL NIL NIL NIL)("x-weird" "x-type" ("a" "1") NIL NIL "7bit" 5 NIL NIL NIL NIL) "related" ("type" "text/html" "boundary" "r") NIL NIL NIL)',
        b'(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)'),
    'unterminated_parameter_quote': (
        b'Content-Type: text/plain; charset="unterminated\n\nx\n',
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1 NIL NIL NIL NIL)',
        b'(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)'),
    'raw_8bit_headers': (
        b'From: =?utf-8?b?w6TDtsO8?= <a@b>\nSubject: \xc3\xa4\xc3\xb6\xc3\xbc raw utf8\nTo: J\xc3\xb6rg <j@x>\n\nbody\n',
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1 NIL NIL NIL NIL)',
        b'(NIL {15}\r\n\xc3\xa4\xc3\xb6\xc3\xbc raw utf8 (("=?utf-8?b?w6TDtsO8?=" NIL "a" "b")) (("=?utf-8?b?w6TDtsO8?=" NIL "a" "b")) (("=?utf-8?b?w6TDtsO8?=" NIL "a" "b")) (({5}\r\nJ\xc3\xb6rg NIL "j" "x")) NIL NIL NIL NIL)'),
    'base64_message_rfc822': (
        b'Content-Type: multipart/mixed; boundary=q (comment here)\n\n--q\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\nRnJvbTogYUBiDQoNCmhp\n--q\nContent-Type: text/plain (comment) ; charset = "us-ascii" (another)\n\nt\n--q--\n',
        b'(("message" "rfc822" NIL NIL NIL "base64" 22 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) 1 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0 NIL NIL NIL NIL) "mixed" ("boundary" "q") NIL NIL NIL)',
        b'(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)'),
    'empty_parts_and_cut_headers': (
        b'Content-Type: multipart/mixed; boundary=e\n\n--e\nContent-Type: text/plain\n\n--e\nContent-Type: message/rfc822\n\n--e\nContent-Type: message/rfc822\n\nSubject: x\n\n--e\nContent-Type: message/rfc822\n\nSubject: cut\n--e\nContent-Type: text/plain\n--e--\n',
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)("message" "rfc822" NIL NIL NIL "7bit" 0 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) 0 NIL NIL NIL NIL)("message" "rfc822" NIL NIL NIL "7bit" 14 (NIL "x" NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) 2 NIL NIL NIL NIL)("message" "rfc822" NIL NIL NIL "7bit" 14 (NIL "cut" NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) 1 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "mixed" ("boundary" "e") NIL NIL NIL)',
        b'(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)'),
    'delimiter_on_last_line': (
        b'Content-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: multipart/alternative; boundary=i\n\n--i\n\nx\n--i\n--o\nContent-Type: text/plain\n\ny\n--o--\n',
        b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "alternative" ("boundary" "i") NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0 NIL NIL NIL NIL) "mixed" ("boundary" "o") NIL NIL NIL)',
        b'(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)'),
    'nested_close_delimiters': (
        b'Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: message/rfc822\n\nSubject: m\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\nSubject: n\nContent-Type: multipart/alternative; boundary=c\n\n--c\n\nq\n--c--\n--b--\n--a--\n',
        b'(("message" "rfc822" NIL NIL NIL "7bit" 181 (NIL "m" NIL NIL NIL NIL NIL NIL NIL NIL) (("message" "rfc822" NIL NIL NIL "7bit" 80 (NIL "n" NIL NIL NIL NIL NIL NIL NIL NIL) (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0 NIL NIL NIL NIL) "alternative" ("boundary" "c") NIL NIL NIL) 7 NIL NIL NIL NIL) "mixed" ("boundary" "b") NIL NIL NIL) 14 NIL NIL NIL NIL) "mixed" ("boundary" "a") NIL NIL NIL)',
        b'(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)'),
}


@pytest.mark.parametrize("name", sorted(DOVECOT))
def test_bodystructure_matches_dovecot(name):
    """BODYSTRUCTURE is byte-identical to Dovecot's for this message."""
    message, expected, _ = DOVECOT[name]
    assert bodystructure(message) == expected


@pytest.mark.parametrize("name", sorted(DOVECOT))
def test_envelope_matches_dovecot(name):
    """ENVELOPE is byte-identical to Dovecot's for this message."""
    message, _, expected = DOVECOT[name]
    assert envelope(message) == expected


def test_body_is_bodystructure_without_extension_data():
    """BODY (non-extensible) drops MD5, disposition, language and location."""
    message = DOVECOT["mixed_with_extension_data"][0]
    body = bodystructure(message, extensible=False)
    assert b"attachment" not in body and b"en-US" not in body
    assert body.startswith(b'(("text" "plain" ("charset" "iso-8859-1" "format" "flowed") '
                           b'"<part1@x>" "The  body" "quoted-printable" 6 0)')


def test_multipart_bodies_are_adjacent():
    """RFC 9051 9: body-type-mpart = 1*body SP subtype: no space between the bodies."""
    message = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\na\r\n--x\r\n\r\nb\r\n--x--\r\n"
    assert b")(" in bodystructure(message)
    assert b") (" not in bodystructure(message)


def test_plain_7bit_message_has_canonical_form():
    """A text/plain us-ascii 7bit message is written in lower case whatever its spelling."""
    message = b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\nContent-Transfer-Encoding: 7BIT\r\n\r\nx\r\n"
    assert bodystructure(message) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1 NIL NIL NIL NIL)')


def test_text_part_without_charset_gets_us_ascii():
    """Text parts without a charset get ("charset" "us-ascii") added, other types do not."""
    message = b"Content-Type: text/html\r\n\r\n<p>\r\n"
    assert bodystructure(message).startswith(b'("text" "html" ("charset" "us-ascii")')
    assert b'("image" "png" NIL' in bodystructure(
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: image/png\r\n\r\nx\r\n--b--\r\n")


def test_size_and_lines_count_crlf_form():
    """Sizes and line counts describe the CRLF form even when stored with bare LF."""
    assert bodystructure(b"Subject: x\n\nline1\nline2\n") == bodystructure(
        b"Subject: x\r\n\r\nline1\r\nline2\r\n")
    assert b'"7bit" 14 2 ' in bodystructure(b"Subject: x\n\nline1\nline2\n")


def test_rfc2231_continuations_are_merged_but_stay_encoded():
    """name*0*/name*1 merge into one name* parameter, still charset'lang'-encoded."""
    message = DOVECOT["mixed_with_extension_data"][0]
    assert b'("name*" "utf-8\'en\'%E2%82%ACrate.pdf")' in bodystructure(message)
    assert b'"filename*" "utf-8\'\'%E2%82%AC%20rates.pdf"' in bodystructure(message)


def test_message_rfc822_part_has_envelope_body_and_lines():
    """A message/rfc822 part carries the encapsulated ENVELOPE, BODYSTRUCTURE and lines."""
    structure = bodystructure(DOVECOT["mixed_with_extension_data"][0])
    assert b'("message" "rfc822" NIL NIL NIL "7bit" ' in structure
    assert b'(NIL "inner message" ((NIL NIL "inner" "example.com"))' in structure


def test_broken_content_type_defaults_to_text_plain():
    """RFC 2045 5.2: an unusable Content-Type means text/plain; charset=us-ascii."""
    for value in (b";;;", b"text", b"/plain", b""):
        structure = bodystructure(b"Content-Type: " + value + b"\r\n\r\nz\r\n")
        assert structure.startswith(b'("text" "plain" ("charset" "us-ascii")'), value


def test_nesting_beyond_limit_is_opaque_and_fast():
    """1,000 nested multiparts: parts deeper than max_depth become application/octet-stream,
    without recursion errors, in well under a second."""
    depth = 1000
    message = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
                       for i in range(depth)) + b"\r\nleaf\r\n"
    started = time.perf_counter()
    structure = bodystructure(message)
    assert time.perf_counter() - started < 1.0
    assert structure.count(b'"mixed"') == 101  # depths 0 to 100
    assert b'"application" "octet-stream"' in structure


def test_nested_message_rfc822_beyond_limit():
    """1,000 nested message/rfc822 parts stop at the depth limit too."""
    message = b"Content-Type: message/rfc822\r\n\r\n" * 1000 + b"Subject: end\r\n\r\nx\r\n"
    structure = bodystructure(message, extensible=False)
    assert structure.count(b'"message" "rfc822"') == 100
    assert render(()) == b"()"  # the renderer handled the depth without recursion


def test_part_count_limit():
    """More parts than max_parts: the rest of the tree is not expanded."""
    message = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
               + b"--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\n\r\nx\r\n--c--\r\n" * 50
               + b"--b--\r\n")
    tree = parse_tree(message, max_parts=20)
    opaque = [child for child in tree.children if child.media_type == b"application"]
    assert len(tree.children) == 50 and opaque


def test_empty_multipart_gets_one_empty_text_part():
    """RFC 9051 requires at least one body in a multipart: an empty text/plain stands in."""
    structure = bodystructure(b"Content-Type: multipart/mixed; boundary=z\r\n\r\nnothing\r\n")
    assert structure == (b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'
                         b' "mixed" ("boundary" "z") NIL NIL NIL)')


def test_inner_close_delimiter_owns_its_line_end():
    """"--inner--CRLF--outer": the CRLF counts in the inner part (as Dovecot counts it)."""
    message = (b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n"
               b"Content-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\nx\r\n--i--\r\n"
               b"--o--\r\n")
    inner = IMAPMessage(message).section((1,))
    assert inner.endswith(b"--i--\r\n")


def test_imap_message_reuses_one_parse():
    """IMAPMessage gives the same answers as the one-shot functions."""
    message = DOVECOT["nested_message_rfc822"][0]
    parsed = IMAPMessage(message)
    assert parsed.bodystructure() == bodystructure(message)
    assert parsed.envelope() == envelope(message)
    assert parsed.size == len(message.replace(b"\n", b"\r\n"))


def test_folded_boundary_parameter_is_unfolded():
    """A boundary folded inside its quoted string ("foo<CRLF> bar") is "foo bar"
    (RFC 5322 2.2.3), so the parts are found (imaptest fetch-bodystructure)."""
    from mailserverd.mime.imapsection import IMAPMessage
    raw = (b'Mime-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="foo\r\n bar"\r\n\r\n'
           b"--foo bar\r\nContent-Type: text/x-myown; charset=us-ascii\r\n\r\nhello\r\n\r\n"
           b"--foo bar--\r\n")
    assert IMAPMessage(raw).bodystructure(False) == (
        b'(("text" "x-myown" ("charset" "us-ascii") NIL NIL "7bit" 7 1) "mixed")')
