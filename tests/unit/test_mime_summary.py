"""summarize(): the header cache and preview, on hand-made and real messages."""

from __future__ import annotations

import base64
import datetime
import itertools
import os

import pytest
from hypothesis import given, settings, strategies as st

from mailserverd.mime.summary import PREVIEW_CHARS, MessageSummary, summarize

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = [path for path in (os.path.join(HERE, "..", "data", "spamassassin-easy-ham-1.mbox.gz"),
                            "/work/shared/corpus/spamassassin-spam-1.mbox.gz") if os.path.exists(path)]

SIMPLE = (b"From: =?utf-8?q?J=C3=BCrgen?= <jurgen@example.test>\r\n"
          b"To: alice@example.test, \"Bob, Jr.\" <bob@example.test>\r\n"
          b"Cc: carol@example.test\r\n"
          b"Bcc: dave@example.test\r\n"
          b"Subject: =?iso-8859-1?q?Caf=E9?=\r\n  break\r\n"
          b"Message-ID: <m1@example.test>\r\n"
          b"In-Reply-To: <m0@example.test>\r\n"
          b"References: <root@example.test>\r\n <m0@example.test>\r\n"
          b"Date: Thu, 22 Aug 2002 12:36:23 +0200\r\n"
          b"\r\n"
          b"Hello   there,\r\n\r\nsee you.\r\n")


def multipart(*parts: bytes, subtype: bytes = b"mixed", boundary: bytes = b"B") -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    return (b"Content-Type: multipart/" + subtype + b"; boundary=" + boundary + b"\r\n\r\n"
            + body + b"--" + boundary + b"--\r\n")


def test_addresses_are_decoded_display_text():
    """From/To/Cc/Bcc are short display strings with RFC 2047 names decoded."""
    summary = summarize(SIMPLE)
    assert summary.from_ == "Jürgen <jurgen@example.test>"
    assert summary.to == "alice@example.test, Bob, Jr. <bob@example.test>"
    assert (summary.cc, summary.bcc) == ("carol@example.test", "dave@example.test")


def test_subject_is_decoded_and_unfolded():
    """The subject is RFC 2047 decoded, unfolded, with white space collapsed."""
    assert summarize(SIMPLE).subject == "Café break"


def test_message_ids_keep_angle_brackets():
    """Message-ID, In-Reply-To and References come back as "<id>" strings."""
    summary = summarize(SIMPLE)
    assert summary.message_id == "<m1@example.test>"
    assert summary.in_reply_to == "<m0@example.test>"
    assert summary.references == ["<root@example.test>", "<m0@example.test>"]


def test_references_keep_root_and_latest_when_too_many():
    """Past 100 references, the thread root and the 99 most recent are kept."""
    refs = b" ".join(b"<r%d@x.test>" % n for n in range(300))
    summary = summarize(b"References: " + refs + b"\r\n\r\nx")
    assert len(summary.references) == 100
    assert summary.references[0] == "<r0@x.test>" and summary.references[-1] == "<r299@x.test>"
    assert summary.references[1] == "<r201@x.test>"


def test_bare_message_id_is_accepted():
    """An id without angle brackets (old software) is still found."""
    assert summarize(b"Message-ID: abc@host.test\r\n\r\nx").message_id == "<abc@host.test>"


def test_date_is_timezone_aware():
    """Date: becomes an aware datetime with the message's own offset."""
    date = summarize(SIMPLE).date
    assert date == datetime.datetime(2002, 8, 22, 10, 36, 23, tzinfo=datetime.timezone.utc)
    assert date.utcoffset() == datetime.timedelta(hours=2)


def test_date_without_zone_is_utc():
    """A Date with -0000 or no zone is taken as UTC."""
    date = summarize(b"Date: 22 Aug 2002 12:36:23 -0000\r\n\r\nx").date
    assert date.tzinfo is not None and date.utcoffset() == datetime.timedelta(0)


def test_broken_date_is_none_and_other_fields_survive():
    """An unparseable Date gives None without costing the other fields."""
    summary = summarize(b"Date: someday soon\r\nSubject: still here\r\n\r\nx")
    assert summary.date is None and summary.subject == "still here"


def test_impossible_date_is_none():
    """A Date naming an impossible day gives None, not an error."""
    assert summarize(b"Date: Thu, 31 Feb 2002 25:99:99 +0000\r\n\r\nx").date is None


def test_missing_fields_are_empty():
    """Absent fields are "" (references [], date None)."""
    assert summarize(b"\r\nbody only\r\n") == MessageSummary(preview="body only")


def test_preview_collapses_white_space_and_is_bounded():
    """The preview is the body text with white space collapsed, at most 256 characters."""
    assert summarize(SIMPLE).preview == "Hello there, see you."
    long_body = b"Subject: x\r\n\r\n" + b"word " * 1000
    assert len(summarize(long_body).preview) <= PREVIEW_CHARS


def test_preview_decodes_quoted_printable_and_charset():
    """Quoted-printable text in a declared charset is decoded for the preview."""
    raw = (b"Content-Type: text/plain; charset=iso-8859-1\r\n"
           b"Content-Transfer-Encoding: quoted-printable\r\n\r\nd=E9j=E0 vu=\r\n soft break\r\n")
    assert summarize(raw).preview == "déjà vu soft break"


def test_preview_decodes_base64_utf8():
    """Base64 text is decoded and read in its charset."""
    text = "Grüße aus Köln".encode("utf-8")
    raw = (b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + base64.encodebytes(text))
    assert summarize(raw).preview == "Grüße aus Köln"


def test_preview_from_html_drops_markup_style_and_script():
    """An HTML-only message previews its visible text."""
    raw = (b"Content-Type: text/html\r\n\r\n<html><head><title>T</title><style>p {color: red}</style>"
           b"</head><body><script>var x = 1;</script><p>Hello&nbsp;<b>bold</b><br>world</p>"
           b"<!-- hidden --></body></html>")
    assert summarize(raw).preview == "Hello bold world"


def test_preview_prefers_first_text_part_and_skips_attachments():
    """The preview comes from the first body text part, not from a text attachment."""
    raw = multipart(b"Content-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n"
                    b"\r\nattached text",
                    multipart(b"Content-Type: text/plain\r\n\r\nthe body",
                              b"Content-Type: text/html\r\n\r\n<p>the html</p>",
                              subtype=b"alternative", boundary=b"ALT"))
    assert summarize(raw).preview == "the body"


def test_preview_ignores_forwarded_message_text():
    """Text inside an attached message/rfc822 is not the preview."""
    raw = multipart(b"Content-Type: message/rfc822\r\n\r\nSubject: fwd\r\n\r\nforwarded text",
                    b"Content-Type: text/plain\r\n\r\nmy note")
    assert summarize(raw).preview == "my note"


def test_attachment_disposition_counts():
    """A part with Content-Disposition: attachment is an attachment."""
    raw = multipart(b"Content-Type: text/plain\r\n\r\nbody",
                    b"Content-Type: application/pdf\r\nContent-Disposition: attachment; "
                    b"filename=x.pdf\r\n\r\nJVBERi0=")
    assert summarize(raw).has_attachment is True


def test_plain_and_alternative_have_no_attachment():
    """A text message, even multipart/alternative, has no attachment."""
    raw = multipart(b"Content-Type: text/plain\r\n\r\nx", b"Content-Type: text/html\r\n\r\n<p>x</p>",
                    subtype=b"alternative")
    assert summarize(raw).has_attachment is False
    assert summarize(SIMPLE).has_attachment is False


def test_inline_images_of_html_body_are_not_attachments():
    """Resources inside multipart/related belong to the HTML body."""
    raw = multipart(b"Content-Type: text/html\r\n\r\n<img src=cid:i1>",
                    b"Content-Type: image/png; name=logo.png\r\nContent-ID: <i1>\r\n\r\niVBO",
                    subtype=b"related")
    assert summarize(raw).has_attachment is False


def test_signature_part_is_not_an_attachment():
    """A multipart/signed signature part is not an attachment."""
    raw = multipart(b"Content-Type: text/plain\r\n\r\nsigned text",
                    b"Content-Type: application/pgp-signature\r\n\r\n-----BEGIN PGP SIGNATURE-----",
                    subtype=b"signed")
    assert summarize(raw).has_attachment is False


def test_smime_signature_marked_attachment_is_not_an_attachment():
    """An S/MIME signature is not an attachment even with disposition "attachment"."""
    raw = multipart(b"Content-Type: text/plain\r\n\r\nsigned text",
                    b"Content-Type: application/x-pkcs7-signature; name=smime.p7s\r\n"
                    b"Content-Disposition: attachment; filename=smime.p7s\r\n\r\nMIAG",
                    subtype=b"signed")
    assert summarize(raw).has_attachment is False


def test_forwarded_message_is_an_attachment():
    """An attached message/rfc822 counts as an attachment."""
    raw = multipart(b"Content-Type: text/plain\r\n\r\nsee below",
                    b"Content-Type: message/rfc822\r\n\r\nSubject: old\r\n\r\nold text")
    assert summarize(raw).has_attachment is True


def test_unnamed_binary_part_in_mixed_is_an_attachment():
    """A non-text part in multipart/mixed counts even without a file name."""
    raw = multipart(b"Content-Type: text/plain\r\n\r\nx",
                    b"Content-Type: application/octet-stream\r\n\r\n\x00\x01")
    assert summarize(raw).has_attachment is True


def test_missing_boundary_does_not_raise():
    """A multipart without its boundary in the body gives an empty preview, no error."""
    raw = b"Content-Type: multipart/mixed; boundary=NOPE\r\n\r\nno parts here\r\n"
    assert summarize(raw).preview == ""


def test_strings_have_no_control_characters_or_surrogates():
    """NUL and other controls never reach the summary (PostgreSQL refuses NUL in text)."""
    raw = (b"Subject: a\x00b\x07c\r\nFrom: x\x00y@z.test\r\n"
           b"Content-Type: text/plain; charset=utf-16-le\r\n\r\n" + "\ud800ok".encode("utf-16-le",
                                                                                   "surrogatepass"))
    summary = summarize(raw)
    for text in (summary.subject, summary.from_, summary.preview):
        assert not any(ord(c) < 0x20 for c in text)
        text.encode("utf-8")
    assert summary.subject == "abc"


def test_undecodable_header_bytes_fall_back():
    """Raw 8-bit in headers without a charset is read as windows-1252 rather than failing."""
    assert summarize(b"Subject: caf\xe9 \xff\r\n\r\nx").subject == "café ÿ"


def test_deeply_nested_message_is_summarized_without_recursion():
    """A message nested 5,000 levels deep summarizes (fields kept) without RecursionError."""
    raw = b"Subject: deep\r\n" + b"Content-Type: message/rfc822\r\n\r\n" * 5000 + b"x"
    assert summarize(raw).subject == "deep"


def test_deeply_nested_comments_in_from_do_not_raise():
    """Address parsing is skipped for comment nesting that would blow the stack."""
    summary = summarize(b"From: " + b"(" * 5000 + b"x" + b")" * 5000 + b" a@b.test\r\n\r\nx")
    assert isinstance(summary.from_, str)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(raw):
    """summarize() returns a MessageSummary for any bytes at all."""
    assert isinstance(summarize(raw), MessageSummary)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=A\r\n", b"Content-Type: text/html; charset=x-bogus\r\n",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Type: message/rfc822\r\n", b"Subject: =?utf-8?b?w6k?=\r\n", b"Date: Mon, 99 Foo 1\r\n",
    b"\r\n", b"--A\r\n", b"--A--\r\n", b"<p>t&amp;\xff=E9=\r\n", b"From: <<@>>,,\r\n",
]), max_size=30))
def test_fuzzed_mime_never_raises(pieces):
    """Any mix of MIME lines, charsets and encodings summarizes without raising."""
    assert isinstance(summarize(b"".join(pieces)), MessageSummary)


@pytest.mark.skipif(not CORPUS, reason="no corpus in tests/data or /work/shared/corpus")
def test_real_messages_summarize():
    """500 real messages of the corpus each get a sender, and most a date and a preview."""
    from mailserverd.mailfiles import iter_source

    messages = [message.raw for message in itertools.islice(iter_source(CORPUS[0]), 500)]
    summaries = [summarize(raw) for raw in messages]
    assert len(summaries) == 500
    assert all(summary.from_ for summary in summaries)
    assert sum(summary.date is not None for summary in summaries) >= 490
    assert sum(bool(summary.preview) for summary in summaries) >= 490
