"""mbox / mbox.gz / Maildir reading and writing (mailserverd.mailfiles)."""

from __future__ import annotations

import calendar
import gzip
import io
import mailbox
import os

import pytest

from mailserverd.mailfiles import (MaildirWriter, MboxWriter, SourceMessage, iter_mbox, iter_source,
                                   maildir_flags)

HERE = os.path.dirname(os.path.abspath(__file__))
HAM = next((path for path in (os.path.join(HERE, "..", "data", "spamassassin-easy-ham-1.mbox.gz"),
                              "/work/shared/corpus/spamassassin-easy-ham-1.mbox.gz")
            if os.path.exists(path)), None)

TWO = (b"From alice@example.test Thu Aug 22 12:36:23 2002\n"
       b"Subject: one\n\nfirst body\n\n"
       b"From bob@example.test  Fri Aug 23 01:02:03 2002\n"
       b"Subject: two\n\nsecond body\n\n")


def read(data: bytes, **kwargs) -> list[SourceMessage]:
    return list(iter_mbox(io.BytesIO(data), **kwargs))


def raws(data: bytes) -> list[bytes]:
    return [message.raw for message in read(data)]


def export(messages) -> bytes:
    out = io.BytesIO()
    writer = MboxWriter(out)
    for raw in messages:
        writer.write(raw, internal_date=0)
    writer.close()
    return out.getvalue()


# --- mbox reading --------------------------------------------------------------

def test_mbox_messages_with_crlf_and_without_separator():
    """Each message comes back with CRLF line ends and without the separator line."""
    assert raws(TWO) == [b"Subject: one\r\n\r\nfirst body\r\n", b"Subject: two\r\n\r\nsecond body\r\n"]


def test_mbox_index_and_from_line_date():
    """Messages are numbered from 1; the From_ line's date is the internal date (UTC)."""
    first, second = read(TWO)
    assert (first.index, second.index) == (1, 2)
    assert first.internal_date == calendar.timegm((2002, 8, 22, 12, 36, 23))
    assert second.internal_date == calendar.timegm((2002, 8, 23, 1, 2, 3))


def test_from_line_with_numeric_zone_and_rfc5322_date():
    """From_ dates with a zone, or in RFC 5322 form, are understood."""
    data = (b"From a@x Thu Aug 22 12:36:23 2002 +0200\n\nx\n\n"
            b"From a@x Thu, 22 Aug 2002 12:36:23 -0100\n\ny\n")
    first, second = read(data)
    assert first.internal_date == calendar.timegm((2002, 8, 22, 10, 36, 23))
    assert second.internal_date == calendar.timegm((2002, 8, 22, 13, 36, 23))


def test_quoted_from_lines_lose_exactly_one_quote():
    """mboxo: ">From " becomes "From "; ">>From " is left as it is."""
    data = b"From a@x Thu Aug 22 12:36:23 2002\n\n>From here\n>>From there\n> From quoted\n\n"
    assert raws(data) == [b"\r\nFrom here\r\n>>From there\r\n> From quoted\r\n"]


def test_lone_from_line_in_body_is_not_a_separator():
    """A body line "From ..." without a sender and date stays in the message."""
    data = b"From a@x Thu Aug 22 12:36:23 2002\nSubject: s\n\nhi\n\nFrom the desk of the editor:\nbye\n"
    assert raws(data) == [b"Subject: s\r\n\r\nhi\r\n\r\nFrom the desk of the editor:\r\nbye\r\n"]


def test_from_line_without_empty_line_before_still_separates():
    """A valid From_ line starts a new message even without the empty line before it."""
    data = b"From a@x Thu Aug 22 12:36:23 2002\n\none\nFrom b@x Thu Aug 22 12:36:24 2002\n\ntwo\n"
    assert raws(data) == [b"\r\none\r\n", b"\r\ntwo\r\n"]


def test_only_the_last_empty_line_is_the_separator():
    """Empty lines at a message's end are kept, except the one separator line."""
    data = b"From a@x Thu Aug 22 12:36:23 2002\n\nbody\n\n\n\nFrom b@x Thu Aug 22 12:36:24 2002\n\nx\n"
    assert raws(data)[0] == b"\r\nbody\r\n\r\n\r\n"


def test_crlf_mbox_reads_the_same():
    """An mbox written with CRLF line ends gives the same messages."""
    assert raws(TWO.replace(b"\n", b"\r\n")) == raws(TWO)


def test_bare_cr_inside_a_line_is_kept():
    """A CR inside a line is kept; CRs right before LF are part of the line end."""
    data = b"From a@x Thu Aug 22 12:36:23 2002\n\nab\rcd\r\r\nend\n"
    assert raws(data) == [b"\r\nab\rcd\r\nend\r\n"]


def test_last_message_without_final_line_end_gets_crlf():
    """A file ending mid-line gives a message ending in CRLF."""
    assert raws(b"From a@x Thu Aug 22 12:36:23 2002\n\nno newline") == [b"\r\nno newline\r\n"]


def test_eight_bit_bytes_are_kept():
    """Undecodable bytes pass through untouched."""
    assert raws(b"From a@x Thu Aug 22 12:36:23 2002\n\n\xff\xfe\x80\n") == [b"\r\n\xff\xfe\x80\r\n"]


def test_long_lines_are_read_in_pieces_intact():
    """Lines longer than the 64 KiB read size come back whole, "From " inside them untouched."""
    line = b"x" * 70000 + b"\nFrom " + b"y" * 140000 + b"\r"
    data = b"From a@x Thu Aug 22 12:36:23 2002\n\n" + line + b"\n"
    assert raws(data) == [b"\r\n" + b"x" * 70000 + b"\r\nFrom " + b"y" * 140000 + b"\r\n"]


def test_status_fields_give_flags_and_stay_in_message():
    """Status: R and X-Status: AF give \\Seen, \\Answered, \\Flagged; the fields remain."""
    data = b"From a@x Thu Aug 22 12:36:23 2002\nStatus: RO\nX-Status: AF\n\nStatus: R in body\n"
    (message,) = read(data)
    assert message.flags == {"\\Seen", "\\Answered", "\\Flagged"}
    assert message.raw.startswith(b"Status: RO\r\nX-Status: AF\r\n")


def test_status_in_body_gives_no_flags():
    """A "Status:" line in the body does not set flags."""
    (message,) = read(b"From a@x Thu Aug 22 12:36:23 2002\nSubject: s\n\nStatus: RO\n")
    assert message.flags == frozenset()


def test_garbage_before_first_from_line_is_an_error():
    """A file not starting with a From_ line yields one error and nothing else."""
    (message,) = read(b"Subject: not an mbox\n\nFrom a@x Thu Aug 22 12:36:23 2002\n\nx\n")
    assert message.error and "From_" in message.error and message.raw == b""


def test_leading_empty_lines_are_tolerated():
    """Empty lines before the first From_ line are not garbage."""
    assert raws(b"\n\n" + TWO) == raws(TWO)


def test_empty_file_has_no_messages():
    """An empty mbox is valid and empty."""
    assert read(b"") == []


def test_oversized_message_is_skipped_and_reading_goes_on():
    """A message over the size cap is reported, and the messages after it are read."""
    data = (b"From a@x Thu Aug 22 12:36:23 2002\n\nsmall\n\n"
            b"From a@x Thu Aug 22 12:36:23 2002\n\n" + b"big line\n" * 1000 + b"\n"
            b"From a@x Thu Aug 22 12:36:23 2002\n\nsmall again\n")
    first, big, last = read(data, max_message_size=1000)
    assert first.raw == b"\r\nsmall\r\n" and last.raw == b"\r\nsmall again\r\n"
    assert big.raw == b"" and big.index == 2 and "larger than 1000" in big.error


def test_empty_message_is_reported():
    """A From_ line directly followed by the next one is an empty message, reported."""
    data = b"From a@x Thu Aug 22 12:36:23 2002\nFrom b@x Thu Aug 22 12:36:23 2002\n\nx\n"
    empty, message = read(data)
    assert "empty" in empty.error and message.raw == b"\r\nx\r\n"


def test_truncated_gzip_yields_complete_messages_then_error(tmp_path):
    """A cut-off mbox.gz gives every complete message, then one error; the cut one is dropped."""
    data = b"".join(b"From a@x Thu Aug 22 12:36:23 2002\nSubject: %d\n\n%s\n\n" % (n, b"z" * 300)
                    for n in range(1, 201))
    compressed = gzip.compress(data, mtime=0)
    path = tmp_path / "cut.mbox.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    messages = list(iter_source(str(path)))
    good, last = messages[:-1], messages[-1]
    assert good and all(m.error is None for m in good)
    assert [m.raw for m in good] == [b"Subject: %d\r\n\r\n%s\r\n" % (n, b"z" * 300)
                                     for n in range(1, len(good) + 1)]
    assert last.error and "damaged" in last.error and last.index == len(good) + 1


def test_corrupt_gzip_is_reported(tmp_path):
    """A gzip file with a damaged checksum ends the reading with an error, not an exception."""
    compressed = bytearray(gzip.compress(TWO, mtime=0))
    compressed[-8] ^= 0xFF  # CRC32 of the member
    path = tmp_path / "bad.mbox.gz"
    path.write_bytes(bytes(compressed))
    messages = list(iter_source(str(path)))
    assert messages[-1].error and "damaged" in messages[-1].error


def test_gzip_detected_by_magic_not_name(tmp_path):
    """A gzip-compressed mbox is recognised whatever its file name."""
    path = tmp_path / "archive.mbox"
    path.write_bytes(gzip.compress(TWO))
    assert [m.raw for m in iter_source(str(path))] == raws(TWO)


def test_missing_path_is_an_error_message(tmp_path):
    """A path that cannot be opened yields one error, not an exception."""
    (message,) = list(iter_source(str(tmp_path / "nope.mbox")))
    assert message.error and "cannot open" in message.error


def test_directory_that_is_not_a_maildir_is_an_error(tmp_path):
    """A directory without cur/ new/ tmp/ is reported, not read."""
    (message,) = list(iter_source(str(tmp_path)))
    assert "not a Maildir" in message.error


# --- mbox writing ----------------------------------------------------------------

def test_writer_format():
    """From_ line "From MAILER-DAEMON <ctime UTC>", LF ends, ">From " quoting, separator line."""
    out = io.BytesIO()
    MboxWriter(out).write(b"From: a@x\r\n\r\nFrom me\r\nno newline", internal_date=0)
    assert out.getvalue() == (b"From MAILER-DAEMON Thu Jan  1 00:00:00 1970\n"
                              b"From: a@x\n\n>From me\nno newline\n\n")


def test_writer_inverts_reader_for_tricky_messages():
    """Read-after-write gives back every message the reader can produce, byte for byte."""
    messages = [b"Subject: a\r\n\r\nFrom here\r\n>>From there\r\n\r\n\r\n",
                b"From the start\r\n\r\nbody\rwith bare CR\r\n",
                b"Subject: empty body\r\n",
                b"\r\n\r\n\xff\r\n"]
    assert raws(export(messages)) == messages


def test_export_of_import_reproduces_mboxo_file():
    """export(import(file)) equals the file apart from the From_ lines."""
    original = (b"From a@x Thu Jan  1 00:00:00 1970\nSubject: q\n\n>From x\n>>From y\n\n\n"
                b"From b@x Thu Jan  1 00:00:00 1970\nSubject: r\n\nend\n\n")
    exported = export(raws(original))
    assert exported == original.replace(b"From a@x", b"From MAILER-DAEMON").replace(
        b"From b@x", b"From MAILER-DAEMON")


# --- Maildir -------------------------------------------------------------------

def make_maildir(root, files: dict[str, bytes], keywords: str = "") -> str:
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(root, name), "wb") as handle:
            handle.write(data)
    if keywords:
        with open(os.path.join(root, "dovecot-keywords"), "w") as handle:
            handle.write(keywords)
    return str(root)


def test_maildir_flags_from_info():
    """":2," info letters map to IMAP flags; P is $Forwarded; unknown letters are ignored."""
    assert maildir_flags("123.M1.host:2,DFPRSTX") == {"\\Draft", "\\Flagged", "$Forwarded",
                                                      "\\Answered", "\\Seen", "\\Deleted"}
    assert maildir_flags("123.M1.host") == frozenset()


def test_maildir_reads_cur_and_new_in_delivery_order(tmp_path):
    """Messages from new/ and cur/ come oldest first; new/ ones have no flags; LF -> CRLF."""
    path = make_maildir(tmp_path, {
        "cur/1000000002.M2.host:2,S": b"Subject: second\n\nb\n",
        "new/1000000001.M1.host": b"Subject: first\n\na\n",
        "new/1000000003.M3.host:2,S": b"Subject: third\n\nc",
        "cur/.hidden": b"ignored",
        "tmp/1000000000.M0.host": b"in progress",
    })
    messages = list(iter_source(path))
    assert [m.raw for m in messages] == [b"Subject: first\r\n\r\na\r\n", b"Subject: second\r\n\r\nb\r\n",
                                         b"Subject: third\r\n\r\nc\r\n"]
    assert [m.flags for m in messages] == [frozenset(), {"\\Seen"}, frozenset()]
    assert [m.index for m in messages] == [1, 2, 3]


def test_maildir_order_compares_numbers_as_numbers(tmp_path):
    """Unpadded microseconds and counters sort numerically (M99999 before M100000)."""
    path = make_maildir(tmp_path, {"cur/100.M100000P1Q10.h:2,": b"c\n", "cur/100.M99999P1Q2.h:2,": b"a\n",
                                   "cur/100.M100000P1Q9.h:2,": b"b\n", "new/99.M5P1.h": b"first\n"})
    assert [m.raw for m in iter_source(path)] == [b"first\r\n", b"a\r\n", b"b\r\n", b"c\r\n"]


def test_maildir_internal_date_is_file_mtime(tmp_path):
    """The internal date of a Maildir message is its file's mtime."""
    path = make_maildir(tmp_path, {"cur/1.M1.h:2,": b"Subject: x\n\ny\n"})
    os.utime(os.path.join(path, "cur/1.M1.h:2,"), (1_000_000_000, 1_000_000_000))
    (message,) = list(iter_source(path))
    assert message.internal_date == 1_000_000_000


def test_maildir_dovecot_keywords(tmp_path):
    """Lower-case info letters name keywords listed in dovecot-keywords."""
    path = make_maildir(tmp_path, {"cur/1.M1.h:2,Sab": b"x\n"}, keywords="0 $Junk\n1 Work\n")
    (message,) = list(iter_source(path))
    assert message.flags == {"\\Seen", "$Junk", "Work"}


def test_maildir_oversized_file_is_skipped(tmp_path):
    """A Maildir file over the cap is reported and the others are read."""
    path = make_maildir(tmp_path, {"cur/1.M1.h:2,": b"x" * 5000, "cur/2.M2.h:2,": b"small\n"})
    big, small = list(iter_source(path, max_message_size=1000))
    assert "larger than 1000" in big.error and small.raw == b"small\r\n"


def test_maildir_writer_round_trip(tmp_path):
    """MaildirWriter output reads back identical: bytes, flags, keywords and date."""
    messages = [(b"Subject: a\r\n\r\nFrom x\r\n", frozenset({"\\Seen", "\\Flagged"}), 1_000_000_000.0),
                (b"Subject: b\r\n\r\nbare\rcr\r\n", frozenset({"$Forwarded", "$Junk", "Custom"}),
                 1_000_000_100.0),
                (b"Subject: c\r\n\r\n", frozenset(), 1_000_000_200.0)]
    with MaildirWriter(str(tmp_path / "box")) as writer:
        for raw, flags, date in messages:
            writer.write(raw, flags=flags, internal_date=date)
    back = list(iter_source(str(tmp_path / "box")))
    assert [(m.raw, m.flags, m.internal_date) for m in back] == messages
    assert os.listdir(tmp_path / "box" / "tmp") == []


def test_maildir_writer_file_names(tmp_path):
    """Files land in cur/ with ":2," and flag letters in ASCII order, LF line ends."""
    writer = MaildirWriter(str(tmp_path))
    name = writer.write(b"a\r\nb\r\n", flags={"\\Seen", "\\Answered", "\\Draft"})
    writer.close()
    assert name.endswith(":2,DRS")
    assert (tmp_path / "cur" / name).read_bytes() == b"a\nb\n"


# --- the real corpus -------------------------------------------------------------

@pytest.fixture(scope="module")
def ham():
    if HAM is None:
        pytest.skip("corpus not found in tests/data or /work/shared/corpus")
    return list(iter_source(HAM))


def test_corpus_reads_every_message(ham):
    """All 2,500 real messages are read without error."""
    assert len(ham) == 2500 and not [m.error for m in ham if m.error]


def test_corpus_round_trip_is_byte_identical(ham):
    """Read, write with MboxWriter, read back: every message identical, dates kept."""
    out = io.BytesIO()
    writer = MboxWriter(out)
    for message in ham:
        writer.write(message.raw, internal_date=message.internal_date)
    back = list(iter_mbox(io.BytesIO(out.getvalue())))
    assert [m.raw for m in back] == [m.raw for m in ham]
    assert [m.internal_date for m in back] == [m.internal_date for m in ham]


def test_corpus_matches_python_mailbox(ham, tmp_path):
    """Each message equals Python's mailbox.mbox view of it after LF normalisation."""
    path = tmp_path / "ham.mbox"
    with gzip.open(HAM) as source:
        path.write_bytes(source.read())
    box = mailbox.mbox(str(path), create=False)
    try:
        theirs = [box.get_bytes(key) for key in box.iterkeys()]
    finally:
        box.close()
    assert [m.raw.replace(b"\r\n", b"\n") for m in ham] == theirs
