"""IMAP session commands beyond the RFC 3501 core: mailbox management, UIDPLUS,
MOVE, IDLE push, CONDSTORE/QRESYNC, ESEARCH/SEARCHRES, SORT/THREAD, QUOTA,
LIST-EXTENDED, ENABLE, ID, COMPRESS and the per-user connection gate; driven
through the real parser against an in-memory store."""

from __future__ import annotations

import base64

from mailserverd.imap.mailbox_view import RecentRegistry
from tests.support.imapmemory import MESSAGE, Client

OTHER = (b"From: Carol <carol@example.test>\r\nTo: alice@example.test\r\n"
         b"Subject: Re: hello\r\nMessage-ID: <2@x>\r\nIn-Reply-To: <1@x>\r\n\r\nmore\r\n")


def test_authenticate_plain_with_continuation():
    """AUTHENTICATE PLAIN without SASL-IR sends an empty "+" and reads one line (RFC 3501 6.2.2)."""
    client = Client()
    assert client.send(b"a AUTHENTICATE PLAIN\r\n") == b"+ \r\n"
    assert client.session.awaiting_line
    reply = client.send(base64.b64encode(b"\0alice@example.test\0secret") + b"\r\n")
    assert reply.startswith(b"a OK [CAPABILITY ")


def test_authenticate_cancelled_with_star():
    """A "*" response cancels AUTHENTICATE with BAD (RFC 3501 6.2.2)."""
    client = Client()
    client.send(b"a AUTHENTICATE PLAIN\r\n")
    assert client.send(b"*\r\n").startswith(b"a BAD")
    assert client.session.account is None


def test_capabilities_after_login_list_extensions():
    """After login CAPABILITY lists the extensions that are implemented, and LITERAL+."""
    client = Client()
    client.login()
    reply = client.send(b"c CAPABILITY\r\n")
    for name in (b"UIDPLUS", b"MOVE", b"IDLE", b"CONDSTORE", b"QRESYNC", b"ESEARCH", b"SORT",
                 b"THREAD=REFERENCES", b"LIST-EXTENDED", b"LIST-STATUS", b"QUOTA", b"APPENDLIMIT=",
                 b"SPECIAL-USE", b"NAMESPACE", b"UNSELECT", b"ENABLE", b"LITERAL+"):
        assert b" " + name in reply, name


def test_login_gate_refuses_with_limit():
    """When the per-user connection gate says no, LOGIN answers NO [LIMIT] and stays logged out."""
    client = Client(login_gate=lambda account: None)
    assert client.send(b"a LOGIN alice@example.test secret\r\n").startswith(b"a NO [LIMIT]")
    assert client.session.account is None


def test_login_gate_released_on_connection_lost():
    """The release callable from the gate runs once when the connection goes."""
    released = []
    client = Client(login_gate=lambda account: lambda: released.append(account.address))
    client.login()
    client.session.connection_lost()
    assert released == ["alice@example.test"]


def test_create_rename_delete():
    """CREATE, RENAME (children follow) and DELETE change what LIST shows."""
    client = Client()
    client.login()
    assert client.send(b"c CREATE Work\r\n") == b"c OK CREATE completed\r\n"
    assert client.send(b"c CREATE Work/2026\r\n") == b"c OK CREATE completed\r\n"
    assert client.send(b"c CREATE Work\r\n").startswith(b"c NO [ALREADYEXISTS]")
    assert client.send(b"r RENAME Work Jobs\r\n") == b"r OK RENAME completed\r\n"
    listing = client.send(b'l LIST "" *\r\n')
    assert b'"/" Jobs/2026\r\n' in listing and b"Work" not in listing
    assert b'* LIST (\\HasChildren) "/" Jobs\r\n' in listing
    assert client.send(b"d DELETE Jobs/2026\r\n") == b"d OK DELETE completed\r\n"
    assert client.send(b"d DELETE INBOX\r\n").startswith(b"d NO")
    assert client.send(b"d DELETE Nope\r\n").startswith(b"d NO [NONEXISTENT]")


def test_create_makes_missing_parents():
    """CREATE a/b/c also creates a and a/b (RFC 3501 6.3.3 SHOULD)."""
    client = Client()
    client.login()
    assert client.send(b"c CREATE a/b/c\r\n") == b"c OK CREATE completed\r\n"
    assert {"a", "a/b", "a/b/c"} <= set(client.store.boxes)


def test_list_percent_shows_missing_parent_as_noselect():
    """LIST "" % shows a parent that exists only through its child as \\Noselect (RFC 3501 6.3.8)."""
    client = Client()
    client.login()
    client.store.create_mailbox(None, "a/b")
    reply = client.send(b'l LIST "" %\r\n')
    assert b'* LIST (\\Noselect \\HasChildren) "/" a\r\n' in reply
    assert b"a/b" not in reply


def test_list_extended_subscribed_and_status():
    """LIST (SUBSCRIBED) lists subscribed mailboxes with \\Subscribed; RETURN (STATUS) adds STATUS."""
    client = Client()
    client.login()
    reply = client.send(b'l LIST (SUBSCRIBED) "" * RETURN (STATUS (MESSAGES))\r\n')
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX\r\n' in reply
    assert b"Sent" not in reply.split(b"* STATUS")[0]
    assert b"* STATUS INBOX (MESSAGES 2)\r\n" in reply


def test_subscribe_then_lsub():
    """SUBSCRIBE makes a mailbox appear in LSUB; UNSUBSCRIBE removes it."""
    client = Client()
    client.login()
    client.send(b"s SUBSCRIBE Sent\r\n")
    assert b'"/" Sent' in client.send(b'l LSUB "" *\r\n')
    client.send(b"s UNSUBSCRIBE Sent\r\n")
    assert b"Sent" not in client.send(b'l LSUB "" *\r\n')


def test_copy_answers_copyuid():
    """COPY answers OK [COPYUID uidvalidity source-uids new-uids] (RFC 4315 3)."""
    client = Client()
    client.select()
    assert client.send(b"c COPY 1:2 Sent\r\n") == b"c OK [COPYUID 8 1:2 1:2] COPY completed\r\n"
    assert len(client.store.boxes["Sent"]["msgs"]) == 2


def test_copy_to_missing_mailbox_is_trycreate():
    """COPY to a mailbox that does not exist answers NO [TRYCREATE] (RFC 3501 6.4.7)."""
    client = Client()
    client.select()
    assert client.send(b"c COPY 1 Nope\r\n").startswith(b"c NO [TRYCREATE]")


def test_move_sends_copyuid_then_expunge():
    """MOVE sends an untagged OK [COPYUID], then EXPUNGE, then the tagged OK (RFC 6851 4.3)."""
    client = Client()
    client.select()
    reply = client.send(b"m MOVE 1 Sent\r\n")
    assert reply == (b"* OK [COPYUID 8 1 1] Moved\r\n* 1 EXPUNGE\r\n"
                     b"m OK MOVE completed\r\n")
    assert list(client.store.boxes["INBOX"]["msgs"]) == [2]


def test_uid_expunge_removes_only_named_uids():
    """UID EXPUNGE removes only \\Deleted messages in its UID set (RFC 4315 2.1)."""
    client = Client()
    client.select()
    client.send(b"t STORE 1:2 +FLAGS.SILENT (\\Deleted)\r\n")
    assert client.send(b"e UID EXPUNGE 2\r\n") == b"* 2 EXPUNGE\r\ne OK EXPUNGE completed\r\n"
    assert list(client.store.boxes["INBOX"]["msgs"]) == [1]


def test_idle_pushes_new_mail_and_ends_with_done():
    """During IDLE a delivery is pushed at once as EXISTS; DONE ends it with OK (RFC 2177)."""
    client = Client()
    client.select()
    assert client.send(b"i IDLE\r\n") == b"+ idling\r\n"
    client.store.add("INBOX", MESSAGE, notify=True)
    assert b"* 3 EXISTS\r\n" in client.take()
    assert client.send(b"DONE\r\n") == b"i OK IDLE terminated\r\n"


def test_idle_polls_for_changes_made_elsewhere():
    """While idling the session re-checks the mailbox every 30 s of the injected clock."""
    client = Client()
    client.select()
    client.send(b"i IDLE\r\n")
    client.store.add("INBOX", MESSAGE)  # no notification: as from another node
    client.clock.advance(31)
    assert b"* 3 EXISTS\r\n" in client.take()


def test_idle_rejects_anything_but_done():
    """A line other than DONE ends IDLE with BAD."""
    client = Client()
    client.select()
    client.send(b"i IDLE\r\n")
    assert client.send(b"NOOP\r\n") == b"i BAD Expected DONE\r\n"


def test_recent_goes_to_one_session_only():
    """\\Recent is reported to the first read-write session only (RFC 3501 2.3.2)."""
    registry = RecentRegistry()
    first = Client(registry=registry)
    assert b"* 2 RECENT" in first.send(b"a LOGIN alice@example.test secret\r\ns SELECT INBOX\r\n")
    second = Client(store=first.store, registry=registry)
    assert b"* 0 RECENT" in second.send(b"a LOGIN alice@example.test secret\r\ns SELECT INBOX\r\n")


def test_new_keyword_announced_in_flags_first():
    """A new keyword is sent in an untagged FLAGS before the FETCH that shows it."""
    client = Client()
    client.select()
    reply = client.send(b"t STORE 1 +FLAGS ($Important)\r\n")
    assert reply.index(b"* FLAGS (") < reply.index(b"* 1 FETCH")
    assert b"$Important" in reply.split(b"\r\n")[0]


def test_condstore_fetch_changedsince_and_modseq():
    """FETCH (FLAGS) (CHANGEDSINCE n) returns only newer messages, with MODSEQ (RFC 7162 3.1.4)."""
    client = Client()
    client.select()
    client.send(b"t STORE 2 +FLAGS.SILENT (\\Flagged)\r\n")
    since = client.store.modseq - 1
    reply = client.send(b"f FETCH 1:* (FLAGS) (CHANGEDSINCE %d)\r\n" % since)
    assert b"* 2 FETCH (FLAGS (\\Flagged \\Seen \\Recent) MODSEQ (%d))" % client.store.modseq in reply
    assert b"* 1 FETCH" not in reply


def test_condstore_unchangedsince_reports_modified():
    """STORE (UNCHANGEDSINCE n) skips messages changed since n and names them in [MODIFIED]."""
    client = Client()
    client.select()
    reply = client.send(b"t STORE 1:2 (UNCHANGEDSINCE 2) +FLAGS (\\Flagged)\r\n")
    assert reply.endswith(b"t OK [MODIFIED 2] Conditional STORE failed for some messages\r\n")


def test_select_reports_highestmodseq():
    """SELECT sends HIGHESTMODSEQ (RFC 7162 3.1.2.1)."""
    client = Client()
    client.login()
    assert b"[HIGHESTMODSEQ %d]" % client.store.modseq in client.send(b"s SELECT INBOX\r\n")


def test_enable_qresync_reports_expunge_as_vanished():
    """With QRESYNC enabled, EXPUNGE is reported as VANISHED (RFC 7162 3.2.10)."""
    client = Client()
    client.login()
    assert client.send(b"e ENABLE QRESYNC\r\n").startswith(b"* ENABLED QRESYNC")
    client.send(b"s SELECT INBOX\r\n")
    client.send(b"t STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
    assert client.send(b"x EXPUNGE\r\n").startswith(b"* VANISHED 1\r\n")


def test_select_qresync_sends_changed_flags():
    """SELECT (QRESYNC (uidvalidity modseq)) sends FETCH UID FLAGS MODSEQ for changed messages."""
    client = Client()
    client.login()
    client.send(b"e ENABLE QRESYNC\r\n")
    since = client.store.modseq
    client.store.store_flags(None, 10, [1], ["\\Flagged"], "add")
    reply = client.send(b"s SELECT INBOX (QRESYNC (7 %d))\r\n" % since)
    assert b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent) MODSEQ" in reply


def test_esearch_min_max_count():
    """SEARCH RETURN (MIN MAX COUNT) answers one ESEARCH line (RFC 4731)."""
    client = Client()
    client.select()
    reply = client.send(b"s SEARCH RETURN (MIN MAX COUNT) ALL\r\n")
    assert reply.startswith(b'* ESEARCH (TAG "s") MIN 1 MAX 2 COUNT 2\r\n')


def test_searchres_saves_result_for_dollar():
    """SEARCH RETURN (SAVE) keeps the result for "$" in a later FETCH (RFC 5182)."""
    client = Client()
    client.select()
    assert client.send(b"s SEARCH RETURN (SAVE) UNSEEN\r\n") == b"s OK SEARCH completed, result saved\r\n"
    reply = client.send(b"f FETCH $ (UID)\r\n")
    assert b"* 1 FETCH (UID 1)" in reply and b"* 2 FETCH" not in reply


def test_search_flags_and_text():
    """SEARCH combines flag and text keys and answers sequence numbers."""
    client = Client()
    client.select()
    assert client.send(b"s SEARCH SEEN SUBJECT hello\r\n").startswith(b"* SEARCH 2\r\n")
    assert client.send(b"s UID SEARCH BODY text\r\n").startswith(b"* SEARCH 1 2\r\n")


def test_sort_and_thread():
    """SORT (REVERSE SIZE) keeps ties in sequence order; THREAD ORDEREDSUBJECT makes the
    first message the parent of the others with the same base subject (RFC 5256)."""
    client = Client()
    client.store.add("INBOX", OTHER)
    client.select()
    assert client.send(b"s SORT (REVERSE SIZE) UTF-8 ALL\r\n").startswith(b"* SORT 3 1 2\r\n")
    assert client.send(b"t THREAD ORDEREDSUBJECT UTF-8 ALL\r\n").startswith(b"* THREAD (1 (2)(3))\r\n")


def test_quota_root_and_usage():
    """GETQUOTAROOT names the "" root and its STORAGE usage and limit in KiB (RFC 9208)."""
    from dataclasses import replace
    client = Client()
    client.login()
    client.session.account = replace(client.session.account, quota=10 * 1024 * 1024)
    reply = client.send(b"q GETQUOTAROOT INBOX\r\n")
    assert b'* QUOTAROOT INBOX ""\r\n' in reply
    assert b'* QUOTA "" (STORAGE 1 10240)\r\n' in reply


def test_id_and_namespace():
    """ID answers the server's identity; NAMESPACE one personal namespace with "/"."""
    client = Client()
    assert client.send(b"i ID NIL\r\n").startswith(b'* ID ("name" "mailserverd"')
    client.login()
    assert client.send(b"n NAMESPACE\r\n").startswith(b'* NAMESPACE (("" "/")) NIL NIL\r\n')


def test_compress_hands_over_pipelined_bytes():
    """COMPRESS DEFLATE answers OK in the clear, then hands what follows to the decompressor."""
    client = Client(with_compress=True)
    reply = client.send(b"z COMPRESS DEFLATE\r\nxyz")
    assert reply == b"z OK DEFLATE active\r\n"
    assert client.compress_leftover == b"xyz"
    assert client.send(b"z2 COMPRESS DEFLATE\r\n").startswith(b"z2 NO [COMPRESSIONACTIVE]")


def test_append_normalises_bare_newlines():
    """APPEND stores bare LF as CRLF, so RFC822.SIZE matches BODY[] (RFC 3501 2.3.4)."""
    client = Client()
    client.login()
    client.send(b"a APPEND Sent {6+}\r\na\nb\nc\n\r\n")
    assert client.store.appended[-1][1] == b"a\r\nb\r\nc\r\n"
