"""IMAP command grammar: each command's argument shape becomes a typed object."""

import datetime

import pytest

from mailserverd.imap import commands as c
from mailserverd.imap.parser import CommandError, CommandParser, CommandReady
from mailserverd.imap.search import SearchKey
from mailserverd.imap.sequence import SequenceSet


def parse(line, utf8=False):
    parser = CommandParser()
    parser.authenticated = True
    parser.utf8 = utf8
    parser.receive(line if line.endswith(b"\n") else line + b"\r\n")
    events = []
    while (event := parser.next_event()) is not None:
        events.append(event)
    assert len(events) == 1, events
    return events[0].command if isinstance(events[0], CommandReady) else events[0]


def bad(line):
    event = parse(line)
    assert isinstance(event, CommandError), event
    return event


@pytest.mark.parametrize("word,cls", [
    (b"CAPABILITY", c.Capability), (b"noop", c.Noop), (b"LOGOUT", c.Logout),
    (b"STARTTLS", c.StartTLS), (b"CHECK", c.Check), (b"CLOSE", c.Close),
    (b"UNSELECT", c.Unselect), (b"IDLE", c.Idle), (b"NAMESPACE", c.Namespace),
])
def test_commands_without_arguments(word, cls):
    """Argument-less commands parse case-insensitively to their class."""
    assert parse(b"t " + word) == cls("t")


def test_argument_after_argumentless_command_is_bad():
    """NOOP with an argument is a syntax error."""
    assert bad(b"t NOOP x").status == "BAD"


def test_login_astrings():
    """LOGIN takes two astrings: atoms, quoted strings with escapes, or literals."""
    assert parse(b't LOGIN "al\\"ice" {3+}\r\np w') == c.Login("t", 'al"ice', "p w")


def test_login_non_utf8_password_is_bad():
    """User names and passwords must be UTF-8 (str inside)."""
    assert bad(b't LOGIN alice "\xff"').status == "BAD"


def test_authenticate_with_and_without_initial_response():
    """AUTHENTICATE mechanism [initial-response] (RFC 4959 SASL-IR)."""
    assert parse(b"t AUTHENTICATE plain") == c.Authenticate("t", "PLAIN", None)
    assert parse(b"t AUTHENTICATE PLAIN =") == c.Authenticate("t", "PLAIN", b"=")
    assert bad(b"t AUTHENTICATE PLAIN ab$c").status == "BAD"


def test_enable_capabilities():
    """ENABLE lists one or more capabilities."""
    assert parse(b"t ENABLE CONDSTORE qresync") == c.Enable("t", ("CONDSTORE", "QRESYNC"))
    assert bad(b"t ENABLE").status == "BAD"


def test_id_nil_and_pairs():
    """ID NIL or a list of field/value pairs (RFC 2971)."""
    assert parse(b"t ID NIL") == c.Id("t", None)
    assert parse(b't ID ("name" "mutt" "os" NIL)') == c.Id("t", (("name", "mutt"), ("os", None)))


def test_id_more_than_30_pairs_is_bad():
    """RFC 2971 3.3 caps ID at 30 pairs."""
    pairs = b" ".join(b'"f%d" "v"' % i for i in range(31))
    assert bad(b"t ID (" + pairs + b")").status == "BAD"


def test_compress():
    """COMPRESS names an algorithm (RFC 4978)."""
    assert parse(b"t COMPRESS DEFLATE") == c.Compress("t", "DEFLATE")


def test_select_and_examine():
    """SELECT and EXAMINE take a mailbox; EXAMINE is read-only; INBOX is case-insensitive."""
    assert parse(b"t SELECT inbox") == c.Select("t", "INBOX")
    assert parse(b"t EXAMINE Inbox/Sub") == c.Examine("t", "INBOX/Sub", read_only=True)


def test_select_condstore_parameter():
    """SELECT mailbox (CONDSTORE) (RFC 7162 3.1.8)."""
    assert parse(b"t SELECT INBOX (CONDSTORE)").condstore


def test_select_qresync_full_parameters():
    """QRESYNC (uidvalidity modseq known-uids (seq-match-data)) (RFC 7162 3.2.5)."""
    command = parse(b"t SELECT INBOX (QRESYNC (67890007 90060115194045000 41:211,214:541 "
                    b"(1:10 11:20)))")
    q = command.qresync
    assert (q.uidvalidity, q.modseq) == (67890007, 90060115194045000)
    assert q.known_uids == SequenceSet(((41, 211), (214, 541)))
    assert q.known_sequences == SequenceSet(((1, 10),))
    assert q.known_sequence_uids == SequenceSet(((11, 20),))


def test_select_qresync_minimal():
    """QRESYNC with only uidvalidity and modseq."""
    q = parse(b"t SELECT INBOX (QRESYNC (1 2))").qresync
    assert (q.uidvalidity, q.modseq, q.known_uids) == (1, 2, None)


def test_select_unknown_parameter_is_bad():
    """Unknown SELECT parameters are refused (RFC 4466 2.1)."""
    assert bad(b"t SELECT INBOX (FOO)").status == "BAD"


def test_mailbox_names_decode_modified_utf7():
    """Mailbox arguments are decoded from modified UTF-7."""
    assert parse(b"t SELECT Entw&APw-rfe") == c.Select("t", "Entwürfe")


def test_mailbox_names_are_utf8_after_enable_utf8():
    """With UTF8=ACCEPT enabled, names arrive as UTF-8 (RFC 6855 3)."""
    assert parse('t SELECT "Entwürfe"'.encode(), utf8=True) == c.Select("t", "Entwürfe")


@pytest.mark.parametrize("name", [b"../x", b"a//b", b"/a", b'"a\\\\b\x01"', b"&Jjo",
                                  b"x" * 1001, b'"a/../b"', b'"a*"'])
def test_invalid_mailbox_names_get_no(name):
    """Names like ../x, a//b, control characters, bad UTF-7 or >1000 octets get NO [CANNOT]."""
    event = bad(b"t CREATE " + name)
    assert (event.status, event.code) == ("NO", "CANNOT")


def test_create_strips_trailing_separator_and_reads_special_use():
    """CREATE "Foo/" creates Foo (RFC 9051 6.3.4); (USE (...)) is RFC 6154."""
    assert parse(b"t CREATE Foo/ (USE (\\Drafts))") == c.Create("t", "Foo", ("\\Drafts",))


def test_delete_rename_subscribe_unsubscribe():
    """The single- and two-mailbox commands."""
    assert parse(b"t DELETE a/b") == c.Delete("t", "a/b")
    assert parse(b"t RENAME a b/c") == c.Rename("t", "a", "b/c")
    assert parse(b"t SUBSCRIBE a") == c.Subscribe("t", "a")
    assert parse(b"t UNSUBSCRIBE a") == c.Unsubscribe("t", "a")


def test_list_basic():
    """LIST reference pattern; wildcards and an empty reference are allowed."""
    assert parse(b'T LIST "" *') == c.List("T", "", ("*",))
    assert parse(b"t LIST inbox/ %") == c.List("t", "INBOX/", ("%",))


def test_list_extended_options():
    """LIST-EXTENDED selection and return options, several patterns, LIST-STATUS."""
    command = parse(b'T LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" "Sent*") '
                    b"RETURN (CHILDREN SPECIAL-USE STATUS (MESSAGES UIDNEXT))")
    assert command.selection == {"SUBSCRIBED", "RECURSIVEMATCH"}
    assert command.returns == {"CHILDREN", "SPECIAL-USE", "STATUS"}
    assert command.patterns == ("INBOX", "Sent*")
    assert command.status_items == ("MESSAGES", "UIDNEXT")
    assert command.extended


def test_list_recursivematch_alone_is_bad():
    """RECURSIVEMATCH needs another selection option (RFC 5258 3)."""
    assert bad(b'T LIST (RECURSIVEMATCH) "" *').status == "BAD"


def test_list_unknown_options_are_bad():
    """Unknown selection or return options get BAD (RFC 5258 3)."""
    assert bad(b'T LIST (FOO) "" *').status == "BAD"
    assert bad(b'T LIST "" * RETURN (FOO)').status == "BAD"


def test_lsub():
    """LSUB reference pattern."""
    assert parse(b'T LSUB "" "*"') == c.Lsub("T", "", "*")


def test_status_items():
    """STATUS mailbox (items) with RFC 3501, 9051, 7162, 8438 and 7889 items."""
    command = parse(b"t STATUS INBOX (MESSAGES UNSEEN HIGHESTMODSEQ SIZE APPENDLIMIT)")
    assert command == c.Status("t", "INBOX",
                               ("MESSAGES", "UNSEEN", "HIGHESTMODSEQ", "SIZE", "APPENDLIMIT"))
    assert bad(b"t STATUS INBOX (BOGUS)").status == "BAD"
    assert bad(b"t STATUS INBOX ()").status == "BAD"


def test_append_with_flags_and_date():
    """APPEND mailbox (flags) "date-time" literal."""
    command = parse(b'A APPEND Sent (\\Seen $Label1) "05-Jan-2024 09:03:04 -0500" {3+}\r\nabc')
    assert command.mailbox == "Sent" and command.flags == ("\\Seen", "$Label1")
    assert command.internal_date == datetime.datetime(
        2024, 1, 5, 9, 3, 4, tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))
    assert command.message == b"abc" and not command.binary


def test_append_without_flag_list():
    """APPEND without flags is fine (twisted's server fails here, FACTS.md)."""
    assert parse(b"A APPEND INBOX {2+}\r\nhi") == c.Append("A", "INBOX", message=b"hi")


def test_append_literal8():
    """APPEND with ~{n} (RFC 3516 4.4) is marked binary."""
    command = parse(b"A APPEND INBOX ~{3+}\r\na\x00b")
    assert command.binary and command.message == b"a\x00b"


def test_append_message_must_be_a_literal():
    """A quoted string is not a message (RFC 9051 6.3.12)."""
    assert bad(b'A APPEND INBOX "hello"').status == "BAD"


def test_append_bad_date_is_bad():
    """An impossible date-time is a syntax error."""
    assert bad(b'A APPEND INBOX "31-Feb-2024 00:00:00 +0000" {1+}\r\nx').status == "BAD"


def test_expunge_and_uid_expunge():
    """EXPUNGE has no arguments; UID EXPUNGE takes a UID set (RFC 4315)."""
    assert parse(b"t EXPUNGE") == c.Expunge("t")
    assert parse(b"t UID EXPUNGE 3:5,7") == c.Expunge("t", SequenceSet(((3, 5), (7, 7))))
    assert bad(b"t UID EXPUNGE").status == "BAD"


def test_uid_prefix_on_unsupported_command_is_bad():
    """UID only prefixes COPY, MOVE, FETCH, SEARCH, STORE, EXPUNGE, SORT, THREAD."""
    assert bad(b"t UID SELECT INBOX").status == "BAD"


def test_fetch_macro_and_uid():
    """UID FETCH with a macro expands it (RFC 9051 6.4.5)."""
    command = parse(b"t UID FETCH 1:* FAST")
    assert command.uid and [i.name for i in command.items] == [
        "FLAGS", "INTERNALDATE", "RFC822.SIZE"]


def test_fetch_changedsince_vanished():
    """UID FETCH ... (CHANGEDSINCE n VANISHED) (RFC 7162)."""
    command = parse(b"t UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)")
    assert (command.changed_since, command.vanished) == (12345, True)
    assert bad(b"t FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)").status == "BAD"


def test_store_variants():
    """STORE with FLAGS, +FLAGS.SILENT, -FLAGS, flag lists or bare flags, UNCHANGEDSINCE."""
    assert parse(b"t STORE 1 FLAGS (\\Seen)") == c.Store(
        "t", SequenceSet(((1, 1),)), "replace", False, ("\\Seen",))
    command = parse(b"t UID STORE 1:2 (UNCHANGEDSINCE 99) +FLAGS.SILENT \\Flagged $Work")
    assert (command.mode, command.silent, command.flags, command.unchanged_since, command.uid) == (
        "add", True, ("\\Flagged", "$Work"), 99, True)
    assert parse(b"t STORE $ -FLAGS ()").mode == "remove"


def test_store_system_flags_are_canonicalised():
    """\\SEEN and \\seen both become \\Seen."""
    assert parse(b"t STORE 1 +FLAGS (\\SEEN \\deleted)").flags == ("\\Seen", "\\Deleted")


def test_copy_and_move():
    """COPY / MOVE sequence mailbox, with UID prefix."""
    assert parse(b"t COPY 1:3 Trash") == c.Copy("t", SequenceSet(((1, 3),)), "Trash")
    assert parse(b"t UID MOVE 5 Archive").uid


def test_getquota_and_getquotaroot():
    """GETQUOTA root and GETQUOTAROOT mailbox (RFC 9208)."""
    assert parse(b'T GETQUOTA ""') == c.GetQuota("T", "")
    assert parse(b"T GETQUOTAROOT INBOX") == c.GetQuotaRoot("T", "INBOX")


def test_sort():
    """SORT (criteria) charset keys (RFC 5256), with RETURN for ESORT."""
    command = parse(b"t UID SORT RETURN (COUNT) (REVERSE ARRIVAL cc) UTF-8 SEEN")
    assert command.criteria == ((True, "ARRIVAL"), (False, "CC"))
    assert (command.charset, command.key, command.returns, command.uid) == (
        "UTF-8", SearchKey("SEEN"), ("COUNT",), True)
    assert bad(b"t SORT (REVERSE) UTF-8 ALL").status == "BAD"
    assert bad(b"t SORT (DATE) ALL").status == "BAD"


def test_thread():
    """THREAD algorithm charset keys (RFC 5256)."""
    assert parse(b"t THREAD ORDEREDSUBJECT US-ASCII ALL") == c.Thread(
        "t", "ORDEREDSUBJECT", "US-ASCII", SearchKey("ALL"))


def test_unknown_command_is_bad():
    """An unknown command word gets BAD."""
    assert bad(b"t XYZZY").text.startswith("unknown command")


def test_double_space_is_bad():
    """The grammar has exactly one SP between arguments."""
    assert bad(b"t SELECT  INBOX").status == "BAD"
