"""The IMAP session (mailserverd.imap.session) driven through the real command
parser against an in-memory store and authenticator."""

from __future__ import annotations

import base64

from tests.support.imapmemory import MESSAGE, Client


def test_capability_advertises_logindisabled_without_tls_or_loopback():
    """Before TLS on a non-loopback connection LOGIN is disabled (RFC 3501 6.2.3)."""
    reply = Client(plaintext_ok=False, with_tls=True).send(b"a CAPABILITY\r\n")
    assert b" STARTTLS LOGINDISABLED\r\n" in reply and b"AUTH=" not in reply
    assert reply.endswith(b"a OK CAPABILITY completed\r\n")


def test_capability_with_plaintext_allowed_offers_auth_plain():
    """With plaintext allowed, CAPABILITY offers AUTH=PLAIN and SASL-IR, not LOGINDISABLED."""
    reply = Client().send(b"a CAPABILITY\r\n")
    assert b" AUTH=PLAIN" in reply and b" SASL-IR" in reply and b"LOGINDISABLED" not in reply


def test_login_refused_before_tls():
    """LOGIN before TLS is refused with PRIVACYREQUIRED when plaintext is not allowed."""
    reply = Client(plaintext_ok=False).send(b"a LOGIN alice@example.test secret\r\n")
    assert reply.startswith(b"a NO [PRIVACYREQUIRED]")


def test_login_wrong_password():
    """A wrong password gets NO [AUTHENTICATIONFAILED] and the session stays unauthenticated."""
    client = Client()
    assert client.send(b"a LOGIN alice@example.test nope\r\n").startswith(b"a NO [AUTHENTICATIONFAILED]")
    assert client.send(b"b SELECT INBOX\r\n").startswith(b"b BAD")


def test_authenticate_plain_with_initial_response():
    """AUTHENTICATE PLAIN with a SASL-IR initial response logs in."""
    token = base64.b64encode(b"\0alice@example.test\0secret")
    reply = Client().send(b"a AUTHENTICATE PLAIN " + token + b"\r\n")
    assert reply.startswith(b"a OK [CAPABILITY IMAP4rev1 ") and reply.endswith(b"] Logged in\r\n")


def test_starttls_discards_pipelined_bytes():
    """Bytes pipelined after STARTTLS are dropped, not run after TLS starts (RFC 3501 6.2.1)."""
    client = Client(plaintext_ok=False, with_tls=True)
    reply = client.send(b"a STARTTLS\r\nb LOGIN alice@example.test secret\r\n")
    assert reply == b"a OK Begin TLS negotiation now\r\n"
    assert client.tls_started and client.session.account is None


def test_select_reports_mailbox_state():
    """SELECT sends FLAGS, EXISTS, RECENT, UNSEEN, UIDVALIDITY, UIDNEXT, PERMANENTFLAGS."""
    client = Client()
    client.login()
    reply = client.send(b"s SELECT INBOX\r\n")
    for expected in (b"* 2 EXISTS", b"* 2 RECENT", b"[HIGHESTMODSEQ ", b"[UNSEEN 1]", b"[UIDVALIDITY 7]", b"[UIDNEXT 3]",
                     b"[PERMANENTFLAGS (", b"s OK [READ-WRITE]"):
        assert expected in reply


def test_examine_is_read_only():
    """EXAMINE selects read-only and STORE is then refused."""
    client = Client()
    client.login()
    assert b"s OK [READ-ONLY]" in client.send(b"s EXAMINE INBOX\r\n")
    assert client.send(b"t STORE 1 +FLAGS (\\Flagged)\r\n").startswith(b"t NO [READ-ONLY]")


def test_select_missing_mailbox():
    """SELECT of an unknown mailbox answers NO [NONEXISTENT]."""
    client = Client()
    client.login()
    assert client.send(b"s SELECT Nope\r\n").startswith(b"s NO [NONEXISTENT]")


def test_list_shows_special_use_and_delimiter():
    """LIST "" * lists every mailbox with "/" and its SPECIAL-USE attribute (RFC 6154)."""
    client = Client()
    client.login()
    reply = client.send(b'l LIST "" *\r\n')
    assert b'* LIST (\\HasNoChildren) "/" INBOX\r\n' in reply
    assert b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n' in reply


def test_lsub_lists_only_subscribed():
    """LSUB lists subscribed mailboxes only."""
    client = Client()
    client.login()
    reply = client.send(b'l LSUB "" *\r\n')
    assert b"INBOX" in reply and b"Sent" not in reply


def test_status_counts():
    """STATUS reports MESSAGES, UNSEEN and UIDNEXT from the store."""
    client = Client()
    client.login()
    reply = client.send(b"t STATUS INBOX (MESSAGES UNSEEN UIDNEXT)\r\n")
    assert b"* STATUS INBOX (MESSAGES 2 UNSEEN 1 UIDNEXT 3)\r\n" in reply


def test_fetch_body_sets_seen():
    """FETCH BODY[] returns the message and sets \\Seen; the new FLAGS are sent."""
    client = Client()
    client.login()
    client.send(b"s SELECT INBOX\r\n")
    reply = client.send(b"f FETCH 1 BODY[]\r\n")
    assert b"BODY[] {%d}\r\n" % len(MESSAGE) + MESSAGE in reply
    assert b"FLAGS (\\Seen \\Recent)" in reply
    assert "\\Seen" in client.store.messages[1][1]


def test_fetch_peek_leaves_seen_alone():
    """BODY.PEEK[HEADER.FIELDS (SUBJECT)] does not set \\Seen."""
    client = Client()
    client.login()
    client.send(b"s SELECT INBOX\r\n")
    reply = client.send(b"f FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
    assert b"Subject: hello" in reply
    assert client.store.messages[1][1] == frozenset()


def test_uid_fetch_includes_uid():
    """UID FETCH adds UID to each response (RFC 3501 6.4.8)."""
    client = Client()
    client.login()
    client.send(b"s SELECT INBOX\r\n")
    reply = client.send(b"u UID FETCH 2 (FLAGS RFC822.SIZE)\r\n")
    assert b"* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent) RFC822.SIZE %d)\r\n" % len(MESSAGE) in reply


def test_fetch_beyond_exists_is_bad():
    """A message sequence number beyond EXISTS is BAD."""
    client = Client()
    client.login()
    client.send(b"s SELECT INBOX\r\n")
    assert client.send(b"f FETCH 9 FLAGS\r\n").startswith(b"f BAD")


def test_store_silent_sends_no_fetch():
    """STORE +FLAGS.SILENT changes flags without an untagged FETCH."""
    client = Client()
    client.login()
    client.send(b"s SELECT INBOX\r\n")
    reply = client.send(b"t STORE 1 +FLAGS.SILENT (\\Flagged)\r\n")
    assert reply == b"t OK STORE completed\r\n"
    assert "\\Flagged" in client.store.messages[1][1]


def test_expunge_reports_removed_messages():
    """EXPUNGE removes \\Deleted messages and reports their sequence numbers."""
    client = Client()
    client.login()
    client.send(b"s SELECT INBOX\r\n")
    client.send(b"t STORE 1 +FLAGS (\\Deleted)\r\n")
    reply = client.send(b"e EXPUNGE\r\n")
    assert reply == b"* 1 EXPUNGE\r\ne OK EXPUNGE completed\r\n"


def test_noop_reports_changes_from_elsewhere():
    """NOOP announces messages that arrived and were expunged by other sessions."""
    client = Client()
    client.login()
    client.send(b"s SELECT INBOX\r\n")
    client.store.remove("INBOX", 1)
    client.store.add("INBOX", MESSAGE)
    reply = client.send(b"n NOOP\r\n")
    assert reply == b"* 1 EXPUNGE\r\n* 2 EXISTS\r\n* 2 RECENT\r\nn OK NOOP completed\r\n"


def test_fetch_completion_never_carries_expunge():
    """After FETCH, an expunge made elsewhere is held back (RFC 3501 7.4.1)."""
    client = Client()
    client.login()
    client.send(b"s SELECT INBOX\r\n")
    client.store.remove("INBOX", 2)
    reply = client.send(b"f FETCH 1 UID\r\n")
    assert b"EXPUNGE" not in reply
    assert client.send(b"n NOOP\r\n") == b"* 2 EXPUNGE\r\nn OK NOOP completed\r\n"


def test_append_to_missing_mailbox_suggests_trycreate():
    """APPEND to an unknown mailbox answers NO [TRYCREATE]."""
    client = Client()
    client.login()
    assert client.send(b"a APPEND Nope {3+}\r\nabc\r\n").startswith(b"a NO [TRYCREATE]")


def test_append_with_flags():
    """APPEND stores the message with its flags."""
    client = Client()
    client.login()
    assert client.send(b"a APPEND Sent (\\Seen) {3+}\r\nabc\r\n") == b"a OK [APPENDUID 8 1] APPEND completed\r\n"
    assert client.store.appended == [("Sent", b"abc", ("\\Seen",))]


def test_close_expunges_silently():
    """CLOSE expunges \\Deleted messages without EXPUNGE responses and leaves selected state."""
    client = Client()
    client.login()
    client.send(b"s SELECT INBOX\r\n")
    client.send(b"t STORE 2 +FLAGS.SILENT (\\Deleted)\r\n")
    assert client.send(b"c CLOSE\r\n") == b"c OK CLOSE completed\r\n"
    assert 2 not in client.store.messages
    assert client.send(b"f FETCH 1 FLAGS\r\n").startswith(b"f BAD")


def test_logout_says_bye():
    """LOGOUT sends BYE before the tagged OK."""
    assert Client().send(b"z LOGOUT\r\n") == b"* BYE Logging out\r\nz OK LOGOUT completed\r\n"
