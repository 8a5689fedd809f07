"""SEARCH evaluation (RFC 3501 6.4.4, RFC 5032, RFC 5182, RFC 7162 3.1.5) against
one message's facts, with programs built by the real command parser."""

import base64
import calendar

import pytest

from mailserverd.imap import search_eval
from mailserverd.imap.parser import CommandParser, CommandReady
from mailserverd.imap.search import SearchKey
from mailserverd.imap.search_eval import MessageFacts, evaluate, needs_raw, uses_modseq
from mailserverd.store.api import MessageRef

RECEIVED = calendar.timegm((2024, 3, 10, 23, 30, 0))  # 10-Mar-2024 23:30 UTC

MESSAGE = (
    b"Date: Mon, 11 Mar 2024 01:15:00 +0200\r\n"
    b"From: =?utf-8?q?J=C3=BCrgen_Doe?= <jurgen (work) @ example.org>\r\n"
    b"To: Alice <alice@example.com>, bob@example.net\r\n"
    b"Cc: Carol <carol@example.com>\r\n"
    b"Bcc: secret@example.com\r\n"
    b"Subject: =?iso-8859-1?q?Caf=E9?= meeting\r\n"
    b"X-Mailer: Tester 1.0\r\n"
    b"List-Id: <dev.example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=BOUND\r\n"
    b"\r\n"
    b"--BOUND\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Gr=FC=DFe aus M=FCnchen, soft=\r\n"
    b"break here.\r\n"
    b"--BOUND\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    + base64.encodebytes("<p>Hello <b>bold</b> world ☃</p>".encode()).replace(b"\n", b"\r\n")
    + b"--BOUND\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"\r\n"
    b"binaryneedle\r\n"
    b"--BOUND\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner subject line\r\n"
    b"\r\n"
    b"inner body words\r\n"
    b"--BOUND--\r\n"
)


def key(text: bytes) -> SearchKey:
    parser = CommandParser()
    parser.authenticated = True
    parser.receive(b"t SEARCH " + text + b"\r\n")
    event = parser.next_event()
    assert isinstance(event, CommandReady), event
    return event.command.key


def facts(uid=7, seq=3, size=2000, flags=(), modseq=50, recent=False, raw=MESSAGE,
          received=RECEIVED, now=RECEIVED + 3600):
    ref = MessageRef(mailbox_id=1, uid=uid, message_id=uid, size=size, flags=frozenset(flags),
                     modseq=modseq, received_at=received)
    return MessageFacts(seq=seq, ref=ref, recent=recent, raw=raw, now=now)


def matches(text: bytes, message=None, *, max_uid=10, max_seq=5, saved=None, **kwargs) -> bool:
    return evaluate(key(text), message or facts(**kwargs), max_uid=max_uid, max_seq=max_seq,
                    saved=saved)


def test_all_matches_everything():
    """ALL matches every message."""
    assert matches(b"ALL")


@pytest.mark.parametrize("word,flag", [("ANSWERED", "\\Answered"), ("DELETED", "\\Deleted"),
                                       ("DRAFT", "\\Draft"), ("FLAGGED", "\\Flagged"),
                                       ("SEEN", "\\Seen")])
def test_flag_keys_need_the_flag(word, flag):
    """ANSWERED/DELETED/DRAFT/FLAGGED/SEEN match exactly the messages with that flag."""
    assert matches(word.encode(), flags={flag})
    assert not matches(word.encode())


@pytest.mark.parametrize("word,flag", [("UNANSWERED", "\\Answered"), ("UNDELETED", "\\Deleted"),
                                       ("UNDRAFT", "\\Draft"), ("UNFLAGGED", "\\Flagged"),
                                       ("UNSEEN", "\\Seen")])
def test_un_flag_keys_need_its_absence(word, flag):
    """UNANSWERED/UNDELETED/UNDRAFT/UNFLAGGED/UNSEEN match the messages without that flag."""
    assert matches(word.encode())
    assert not matches(word.encode(), flags={flag})


def test_recent_new_old():
    """RECENT is the session's \\Recent; NEW is RECENT UNSEEN; OLD is NOT RECENT."""
    assert matches(b"RECENT", recent=True) and not matches(b"RECENT")
    assert matches(b"NEW", recent=True)
    assert not matches(b"NEW", recent=True, flags={"\\Seen"})
    assert not matches(b"NEW")
    assert matches(b"OLD") and not matches(b"OLD", recent=True)


def test_keyword_and_unkeyword_ignore_case():
    """KEYWORD/UNKEYWORD test a keyword flag, case-insensitively."""
    assert matches(b"KEYWORD $junk", flags={"$Junk"})
    assert not matches(b"KEYWORD $Junk")
    assert matches(b"UNKEYWORD $Junk")
    assert not matches(b"UNKEYWORD $JUNK", flags={"$Junk"})


def test_larger_and_smaller_are_strict():
    """LARGER n means RFC822.SIZE > n, SMALLER n means size < n."""
    assert matches(b"LARGER 1999", size=2000) and not matches(b"LARGER 2000", size=2000)
    assert matches(b"SMALLER 2001", size=2000) and not matches(b"SMALLER 2000", size=2000)


def test_internal_date_keys_use_the_utc_calendar_day():
    """BEFORE/ON/SINCE compare the internal date's day (in UTC, INTERNALDATE's zone)."""
    assert matches(b"ON 10-Mar-2024")
    assert not matches(b"ON 11-Mar-2024")
    assert matches(b"SINCE 10-Mar-2024") and not matches(b"SINCE 11-Mar-2024")
    assert matches(b"BEFORE 11-Mar-2024") and not matches(b"BEFORE 10-Mar-2024")


def test_sent_date_keys_use_the_date_field_in_its_own_zone():
    """SENTBEFORE/SENTON/SENTSINCE use the Date: field's own calendar day (11 Mar at
    +0200 although it is still 10 Mar in UTC)."""
    assert matches(b"SENTON 11-Mar-2024")
    assert not matches(b"SENTON 10-Mar-2024")
    assert matches(b"SENTSINCE 11-Mar-2024") and not matches(b"SENTSINCE 12-Mar-2024")
    assert matches(b"SENTBEFORE 12-Mar-2024") and not matches(b"SENTBEFORE 11-Mar-2024")


def test_sent_date_keys_never_match_without_a_date():
    """A message without a parseable Date: field matches no SENT* key."""
    raw = b"Subject: x\r\nDate: not a date\r\n\r\nbody\r\n"
    for text in (b"SENTON 11-Mar-2024", b"SENTBEFORE 1-Jan-2100", b"SENTSINCE 1-Jan-1970"):
        assert not matches(text, raw=raw)


def test_subject_matches_decoded_substring_case_insensitively():
    """SUBJECT finds a substring of the RFC 2047-decoded subject, ignoring case."""
    assert matches('SUBJECT "CAFÉ MEET"'.encode())
    assert not matches(b"SUBJECT lunch")


def test_from_matches_decoded_name_and_address_without_comments():
    """FROM finds the decoded display name and the address with comments and
    spaces removed, as ENVELOPE shows it."""
    assert matches("FROM \"jürgen\"".encode())
    assert matches(b"FROM jurgen@example.org")
    assert matches(b"FROM EXAMPLE.ORG")
    assert not matches(b"FROM alice")


def test_to_cc_bcc_search_their_own_fields():
    """TO, CC and BCC each search only their own field, every address of it."""
    assert matches(b"TO bob@example.net") and matches(b"TO alice")
    assert matches(b"CC carol") and not matches(b"CC bob")
    assert matches(b"BCC secret@") and not matches(b"BCC carol")


def test_header_matches_named_field_and_empty_string_means_present():
    """HEADER field string is a substring match on that field; an empty string
    matches any message having the field."""
    assert matches(b"HEADER X-Mailer tester")
    assert matches(b'HEADER list-id "dev.EXAMPLE"')
    assert matches(b'HEADER X-Mailer ""')
    assert not matches(b'HEADER X-Spam ""')
    assert not matches(b"HEADER X-Mailer mutt")


def test_body_decodes_quoted_printable_in_declared_charset():
    """BODY reads quoted-printable text in its charset (soft line breaks joined)."""
    assert matches("BODY \"grüße aus münchen\"".encode())
    assert matches(b"BODY softbreak")


def test_body_decodes_base64_html_and_its_visible_text():
    """BODY reads base64 UTF-8 HTML, both as markup and as visible text."""
    assert matches("BODY \"☃\"".encode())
    assert matches(b"BODY <b>bold")
    assert matches(b'BODY "hello bold world"')


def test_body_skips_non_text_parts_and_headers():
    """BODY ignores application/* parts and the top-level header."""
    assert not matches(b"BODY binaryneedle")
    assert not matches(b"BODY X-Mailer")


def test_body_includes_encapsulated_message_header_and_text():
    """An attached message/rfc822 is body text: its header and its text."""
    assert matches(b'BODY "inner subject"')
    assert matches(b'BODY "inner body"')


def test_text_searches_header_and_body():
    """TEXT matches in the header (as "Name: value") or in the body."""
    assert matches(b'TEXT "x-mailer: tester"')
    assert matches(b"TEXT softbreak")
    assert not matches(b"TEXT nowhere-to-be-found")


def test_unknown_charset_and_8bit_text_fall_back():
    """A part in an unknown charset is read as UTF-8, else windows-1252."""
    raw = (b"Content-Type: text/plain; charset=x-bogus\r\n\r\n"
           + "naïve café".encode("cp1252") + b"\r\n")
    assert matches("BODY \"NAÏVE\"".encode(), raw=raw)


def test_body_search_is_capped(monkeypatch):
    """Only the first MAX_TEXT characters of decoded body text are searched."""
    monkeypatch.setattr(search_eval, "MAX_TEXT", 1000)
    raw = b"Subject: big\r\n\r\n" + b"a" * 5000 + b" needle\r\n"
    assert not matches(b"BODY needle", raw=raw)
    assert matches(b"BODY needle", raw=b"Subject: small\r\n\r\nneedle\r\n")


def test_too_complex_message_is_searched_as_raw_text():
    """A message the MIME walker refuses (nesting too deep) is searched as its raw body."""
    raw = b"Content-Type: multipart/mixed; boundary=a0\r\n\r\n"
    for depth in range(1, 120):
        raw += b"--a%d\r\nContent-Type: multipart/mixed; boundary=a%d\r\n\r\n" % (depth - 1, depth)
    raw += b"--a119\r\n\r\ndeep needle\r\n"
    assert matches(b'BODY "deep needle"', raw=raw)


def test_sequence_set_with_star_uses_max_seq():
    """A bare sequence set matches the message number; "*" is the mailbox's last number."""
    assert matches(b"1:3", seq=3)
    assert not matches(b"1,2", seq=3)
    assert matches(b"*", seq=5, max_seq=5)
    assert matches(b"4:*", seq=5, max_seq=5) and not matches(b"4:*", seq=3, max_seq=5)


def test_uid_set_with_star_uses_max_uid():
    """UID matches the message's UID; "*" is the highest UID in the mailbox."""
    assert matches(b"UID 7", uid=7)
    assert matches(b"UID 5:*", uid=7, max_uid=10)
    assert matches(b"UID *", uid=10, max_uid=10) and not matches(b"UID *", uid=7, max_uid=10)
    assert matches(b"UID 20:*", uid=10, max_uid=10)  # RFC 9051 9: 20:* is 10:20 here


def test_dollar_is_the_saved_result_by_uid():
    """"$" (RFC 5182) matches messages whose UID is in the saved result, as
    a sequence set or a UID set; nothing is saved means nothing matches."""
    assert matches(b"$", uid=7, saved=[2, 7, 9])
    assert matches(b"UID $", uid=7, saved={7})
    assert not matches(b"$", uid=8, saved=[2, 7, 9])
    assert not matches(b"UID $", uid=7, saved=None)
    assert not matches(b"$", uid=7, saved=[])


def test_modseq_is_at_least():
    """MODSEQ n matches messages whose mod-sequence is >= n, with or without an entry."""
    assert matches(b"MODSEQ 50", modseq=50) and not matches(b"MODSEQ 51", modseq=50)
    assert matches(b'MODSEQ "/flags/\\\\seen" all 40', modseq=50)


def test_older_and_younger_measure_seconds_since_arrival():
    """RFC 5032 3: OLDER n: arrived more than n seconds ago; YOUNGER n: within the
    last n seconds, ends included; so OLDER n is exactly NOT YOUNGER n (as Dovecot)."""
    assert matches(b"OLDER 3599") and not matches(b"OLDER 3600")
    assert matches(b"YOUNGER 3600") and not matches(b"YOUNGER 3599")
    for seconds in (3599, 3600, 3601):
        assert matches(b"OLDER %d" % seconds) != matches(b"YOUNGER %d" % seconds)


def test_not_or_and_combine():
    """NOT inverts, OR takes either, a parenthesised list and the program are ANDs."""
    assert matches(b"NOT SEEN")
    assert matches(b"OR SEEN SUBJECT meet")
    assert not matches(b"OR SEEN DELETED")
    assert matches(b"(UNSEEN SUBJECT meeting) LARGER 10")
    assert not matches(b"(UNSEEN SUBJECT meeting) LARGER 5000")


def test_needs_raw_only_for_header_and_body_keys():
    """Flag, number, size, date and set keys never need the message bytes."""
    assert not needs_raw(key(b"UNSEEN UID 1:* LARGER 5 SINCE 1-Jan-2020 NOT OR NEW KEYWORD a"))
    assert needs_raw(key(b"NOT OR SEEN HEADER x y"))
    assert needs_raw(key(b"SENTON 1-Jan-2020"))


def test_raw_is_read_lazily_once():
    """raw may be a callable: called once, and only when a key needs the message."""
    calls = []

    def load():
        calls.append(1)
        return MESSAGE

    message = facts(raw=load)
    assert evaluate(key(b"SEEN"), message, max_uid=10, max_seq=5) is False
    assert calls == []
    assert evaluate(key(b"BODY bold SUBJECT meeting FROM doe"), message, max_uid=10, max_seq=5)
    assert calls == [1]


def test_uses_modseq_finds_nested_modseq():
    """uses_modseq sees a MODSEQ key anywhere in the program."""
    assert uses_modseq(key(b"NOT (SEEN OR ALL MODSEQ 5)"))
    assert not uses_modseq(key(b"NOT (SEEN OR ALL DELETED)"))


def test_overdeep_hand_built_tree_is_refused():
    """A tree deeper than the parser allows raises ValueError, not RecursionError."""
    tree = SearchKey("ALL")
    for _ in range(5000):
        tree = SearchKey("NOT", (tree,))
    with pytest.raises(ValueError):
        evaluate(tree, facts(), max_uid=10, max_seq=5)


def test_large_uid_set_is_cheap_per_message():
    """A 10,000-range UID set is resolved once, not once per message."""
    program = key(b"UID " + b",".join(b"%d" % (n * 2) for n in range(1, 10001)))
    hits = sum(evaluate(program, facts(uid=uid), max_uid=30000, max_seq=5)
               for uid in range(1, 20001))
    assert hits == 10000


def test_garbage_message_never_raises():
    """Broken bytes, NULs and a header without body are searched without error."""
    for raw in (b"", b"\x00\xff\xfe", b"Subject: =?bad?x?zz?=\r\n", b"From: <<<@@>>\r\n\r\n\xff"):
        assert not matches(b'OR OR TEXT zzz FROM zzz SENTON 1-Jan-2020', raw=raw)
