"""IMAP mailbox and message commands against the real daemon, with Python's imaplib
(and a raw socket where the exact order of untagged responses matters): LIST,
CREATE/RENAME/DELETE with children, APPEND + UID FETCH (APPENDUID), COPY (COPYUID),
MOVE, UID EXPUNGE, IDLE woken by SMTP delivery, SEARCH, SORT, THREAD, STATUS,
GETQUOTAROOT, and two sessions on one mailbox: EXPUNGE withheld during FETCH, STORE
and SEARCH (RFC 3501 7.4.1), flag changes announced, \\Recent given to one session only.

One daemon serves the module; each test works in mailboxes of its own (named after
the test) or, for mail delivered over SMTP, in bob's INBOX, counting from what it
finds there.
"""

from __future__ import annotations

import imaplib
import re
import smtplib
import socket
import time

import pytest

from tests.support.daemon import PASSWORD

ALICE = "alice@example.test"
BOB = "bob@example.test"
LISTENERS = ("smtp", "imap")
TIMEOUT = 15  # seconds for any one socket operation: a hang fails the test, never blocks CI
IDLE_WAKE = 1.0  # seconds from the SMTP 250 to the IDLE client's EXISTS (issue 5)
QUOTA = "10M"


@pytest.fixture(scope="module")
def server(shared_mailserver):
    """The module's daemon (the shared one listens for SMTP and IMAP), alice@ with a 10M quota."""
    for name in LISTENERS:
        if name not in shared_mailserver.ports:
            pytest.fail(f"the shared daemon has no {name} listener (tests/support/daemon.py)")
    shared_mailserver.ctl("user", "quota", ALICE, QUOTA)
    return shared_mailserver


def login(server, user: str = ALICE) -> imaplib.IMAP4:
    client = imaplib.IMAP4(*server.address("imap"), timeout=TIMEOUT)
    client.login(user, PASSWORD)
    return client


def message(subject: str, message_id: str, date: str, references=(), sender: str = "a@remote.test",
            body: str = "body") -> bytes:
    lines = [f"From: {sender}", "To: alice@example.test", f"Subject: {subject}",
             f"Message-ID: <{message_id}>", f"Date: {date}"]
    if references:
        lines.append(f"In-Reply-To: <{references[-1]}>")
        lines.append("References: " + " ".join(f"<{ref}>" for ref in references))
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


def mailbox_with(client: imaplib.IMAP4, name: str, messages) -> None:
    """CREATE `name` and APPEND `messages` to it, in order (UIDs 1, 2, ...)."""
    assert client.create(name)[0] == "OK"
    for raw in messages:
        assert client.append(name, None, None, raw)[0] == "OK"


def simple(subject: str, count: int) -> list[bytes]:
    return [message(f"{subject} {n}", f"{subject}-{n}@remote.test", "Wed, 01 Jan 2025 10:00:00 +0000")
            for n in range(1, count + 1)]


def deliver(server, recipient: str, raw: bytes) -> None:
    with smtplib.SMTP(*server.address("smtp"), timeout=TIMEOUT) as smtp:
        smtp.sendmail("s@remote.test", [recipient], raw)


def fetched_bodies(client: imaplib.IMAP4, uids: str) -> dict[int, bytes]:
    status, data = client.uid("FETCH", uids, "(BODY.PEEK[])")
    assert status == "OK"
    return {int(re.search(rb"UID (\d+)", item[0]).group(1)): item[1] for item in data if isinstance(item, tuple)}


def uid_list(uid_set: bytes) -> list[int]:
    """The UIDs of a uid-set such as b"4:5,7", in the order given (RFC 4315 COPYUID)."""
    uids = []
    for part in uid_set.split(b","):
        low, _, high = part.partition(b":")
        uids += range(int(low), int(high or low) + 1)
    return uids


class Wire:
    """A raw IMAP connection that shows every response line exactly as sent."""

    def __init__(self, server, user: str = BOB):
        self.sock = socket.create_connection(server.address("imap"), timeout=TIMEOUT)
        self.buffer = b""
        assert self.line().startswith(b"* OK")
        assert self.command("L", f'LOGIN {user} "{PASSWORD}"')[-1].startswith(b"L OK")

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; pending {self.buffer[:200]!r}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def command(self, tag: str, text: str) -> list[bytes]:
        """Send one command; every line up to and including its tagged answer."""
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        lines = []
        while True:
            lines.append(self.line())
            if lines[-1].startswith(tag.encode() + b" "):
                return lines

    def close(self) -> None:
        self.sock.close()


def untagged(lines: list[bytes], kind: bytes) -> list[bytes]:
    """The untagged lines of one kind: `* n EXPUNGE`, `* n EXISTS`, `* n FETCH ...`."""
    return [line for line in lines if re.match(rb"\* \d+ " + kind + rb"\b", line)]


# -- mailboxes ----------------------------------------------------------------------------------

def test_list_shows_inbox_and_special_use_mailboxes(server):
    """LIST "" "*" names INBOX and the five special-use mailboxes with their RFC 6154
    attributes, hierarchy delimiter "/"."""
    client = login(server)
    status, lines = client.list('""', "*")
    assert status == "OK"
    listed = {}
    for line in lines:
        attributes, delimiter, name = re.match(rb'\(([^)]*)\) "(.)" (.+)', line).groups()
        assert delimiter == b"/"
        listed[name.strip(b'"')] = set(attributes.split())
    for name in (b"Sent", b"Drafts", b"Junk", b"Trash", b"Archive"):
        assert b"\\" + name in listed[name], (name, listed)
    assert b"INBOX" in listed
    client.logout()


def test_create_rename_delete_with_children(server):
    """CREATE a and a/b; RENAME a moves a/b (and its message) along; DELETE removes each;
    a deleted name is no longer listed, and selecting or deleting it again fails."""
    client = login(server)
    assert client.create("Projects")[0] == "OK"
    assert client.create("Projects/2027")[0] == "OK"
    raw = message("kept across rename", "rename@remote.test", "Wed, 01 Jan 2025 10:00:00 +0000")
    assert client.append("Projects/2027", None, None, raw)[0] == "OK"
    names = {line.rsplit(b" ", 1)[1].strip(b'"') for line in client.list('""', "Projects*")[1]}
    assert names == {b"Projects", b"Projects/2027"}

    assert client.rename("Projects", "Work")[0] == "OK"
    assert client.list('""', "Projects*")[1] == [None]
    names = {line.rsplit(b" ", 1)[1].strip(b'"') for line in client.list('""', "Work*")[1]}
    assert names == {b"Work", b"Work/2027"}
    client.select("Work/2027")
    assert list(fetched_bodies(client, "1:*").values()) == [raw]
    client.close()

    assert client.delete("Work/2027")[0] == "OK"
    assert client.delete("Work")[0] == "OK"
    assert client.list('""', "Work*")[1] == [None]
    assert client.select("Work/2027")[0] == "NO"
    assert client.delete("Work")[0] == "NO"
    client.logout()


# -- messages -----------------------------------------------------------------------------------

def test_append_answers_appenduid_and_uid_fetch_returns_the_message(server):
    """APPEND with flags and an internal date answers [APPENDUID uidvalidity uid] (RFC 4315);
    UID FETCH of that UID returns the same octets, the flags, the date and the size."""
    client = login(server)
    assert client.create("appended")[0] == "OK"
    raw = message("appended", "append@remote.test", "Wed, 01 Jan 2025 10:00:00 +0000", body="x" * 3000)
    status, data = client.append("appended", "(\\Seen $Label1)", '"01-Feb-2025 08:30:00 +0100"', raw)
    assert status == "OK"
    uidvalidity, uid = re.search(rb"\[APPENDUID (\d+) (\d+)\]", data[0]).groups()
    status, data = client.status("appended", "(UIDVALIDITY)")
    assert re.search(rb"UIDVALIDITY (\d+)", data[0]).group(1) == uidvalidity
    client.select("appended")
    status, data = client.uid("FETCH", uid.decode(), "(FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
    head, body = data[0]
    assert body == raw
    assert set(re.search(rb"FLAGS \(([^)]*)\)", head).group(1).split()) >= {b"\\Seen", b"$Label1"}
    # the same instant; the server may render it in another zone (RFC 3501 6.3.11)
    assert time.mktime(imaplib.Internaldate2tuple(head)) == \
        time.mktime(imaplib.Internaldate2tuple(b'INTERNALDATE "01-Feb-2025 08:30:00 +0100"'))
    assert b"RFC822.SIZE %d" % len(raw) in head
    client.logout()


def test_copy_answers_copyuid_and_keeps_the_source(server):
    """COPY 1:2 answers [COPYUID destvalidity 1:2 destuids]; the destination holds the same
    octets under those UIDs and the source still has both messages."""
    client = login(server)
    originals = simple("copied", 2)
    mailbox_with(client, "copy-from", originals)
    assert client.create("copy-to")[0] == "OK"
    client.select("copy-from")
    status, data = client.copy("1:2", "copy-to")
    assert status == "OK"
    validity, source, target = re.search(rb"\[COPYUID (\d+) (\S+) (\S+)\]", data[0]).groups()
    assert source == b"1:2"
    status, data = client.status("copy-to", "(UIDVALIDITY MESSAGES)")
    assert re.search(rb"UIDVALIDITY (\d+)", data[0]).group(1) == validity
    assert b"MESSAGES 2" in data[0]
    assert list(fetched_bodies(client, "1:*").values()) == originals
    client.select("copy-to")
    assert fetched_bodies(client, target.decode()) == dict(zip(uid_list(target), originals))
    client.logout()


def test_move_answers_copyuid_and_expunges_the_source(server):
    """UID MOVE (RFC 6851) sends an untagged OK [COPYUID ...] and * n EXPUNGE; the message
    is then only in the destination."""
    client = login(server)
    originals = simple("moved", 3)
    mailbox_with(client, "move-from", originals)
    assert client.create("move-to")[0] == "OK"
    client.select("move-from")
    status, _ = client.uid("MOVE", "2", "move-to")
    assert status == "OK"
    assert re.fullmatch(rb"\d+ 2 1", client.response("COPYUID")[1][0])
    assert client.response("EXPUNGE")[1] == [b"2"]
    assert list(fetched_bodies(client, "1:*").items()) == [(1, originals[0]), (3, originals[2])]
    client.select("move-to")
    assert list(fetched_bodies(client, "1:*").values()) == [originals[1]]
    client.logout()


def test_uid_expunge_removes_only_the_given_uids(server):
    """With messages 1-3 marked \\Deleted, UID EXPUNGE 2 (RFC 4315) removes message 2 only;
    1 and 3 stay, still \\Deleted."""
    client = login(server)
    mailbox_with(client, "uid-expunge", simple("expunged", 3))
    client.select("uid-expunge")
    assert client.store("1:3", "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
    status, _ = client.uid("EXPUNGE", "2")
    assert status == "OK"
    assert client.response("EXPUNGE")[1] == [b"2"]
    status, data = client.uid("FETCH", "1:*", "(FLAGS)")
    assert [re.search(rb"UID (\d+)", item).group(1) for item in data] == [b"1", b"3"]
    assert all(b"\\Deleted" in item for item in data)
    client.logout()


def test_status_counts_messages_unseen_and_uidnext(server):
    """STATUS reports MESSAGES, UNSEEN, UIDNEXT and UIDVALIDITY of a mailbox not selected."""
    client = login(server)
    mailbox_with(client, "status-box", simple("status", 3))
    client.select("status-box")
    client.store("1", "+FLAGS", "(\\Seen)")
    client.close()
    status, data = client.status("status-box", "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY)")
    assert status == "OK"
    assert re.fullmatch(rb'"?status-box"? \(MESSAGES 3 UNSEEN 2 UIDNEXT 4 UIDVALIDITY \d+\)', data[0]), data
    client.logout()


def test_getquotaroot_reports_storage_use_and_limit(server):
    """GETQUOTAROOT INBOX (RFC 9208) names a root and its STORAGE usage and limit in KiB:
    the limit is the account's 10M quota, and usage grows by about the size of an
    appended 20 kB message."""

    def storage(client):
        status, _ = client._simple_command("GETQUOTAROOT", "INBOX")
        assert status == "OK"
        root = client.response("QUOTAROOT")[1][0]
        assert root.startswith(b"INBOX ")
        used, limit = re.search(rb"\(STORAGE (\d+) (\d+)\)", client.response("QUOTA")[1][0]).groups()
        return int(used), int(limit)

    client = login(server)
    used, limit = storage(client)
    assert limit == 10 * 1024
    raw = message("quota", "quota@remote.test", "Wed, 01 Jan 2025 10:00:00 +0000", body="q" * 20_000)
    assert client.append("INBOX", None, None, raw)[0] == "OK"
    grown, _ = storage(client)
    assert 18 <= grown - used <= 22
    client.logout()


# -- search, sort, thread -----------------------------------------------------------------------

THREADED = [
    message("topic", "t1@remote.test", "Wed, 01 Jan 2025 10:00:00 +0000", sender="carol@remote.test"),
    message("Re: topic", "t2@remote.test", "Wed, 01 Jan 2025 11:00:00 +0000", ["t1@remote.test"],
            sender="dave@remote.test"),
    message("Re: topic", "t3@remote.test", "Wed, 01 Jan 2025 12:00:00 +0000", ["t1@remote.test", "t2@remote.test"],
            sender="bert@remote.test", body="a longer body " * 100),
    message("other", "t4@remote.test", "Wed, 01 Jan 2025 09:00:00 +0000", sender="alex@remote.test"),
    message("Re: topic", "t5@remote.test", "Wed, 01 Jan 2025 13:00:00 +0000", ["t1@remote.test"],
            sender="carol@remote.test"),
]


@pytest.fixture(scope="module")
def threaded(server):
    """alice's mailbox `threads`: 1 topic, 2 and 5 reply to 1, 3 replies to 2, 4 is alone
    and oldest."""
    client = login(server)
    mailbox_with(client, "threads", THREADED)
    client.logout()
    return "threads"


def test_search_by_header_size_and_flags(server, threaded):
    """SEARCH finds by SUBJECT, FROM, LARGER and flags; UID SEARCH answers with UIDs."""
    client = login(server)
    client.select(threaded)
    client.store("2", "+FLAGS", "(\\Flagged)")
    assert client.search(None, "SUBJECT", '"Re: topic"') == ("OK", [b"2 3 5"])
    assert client.search(None, "FROM", "carol") == ("OK", [b"1 5"])
    assert client.search(None, "LARGER", "1000") == ("OK", [b"3"])
    assert client.search(None, "FLAGGED") == ("OK", [b"2"])
    assert client.search(None, "NOT", "FLAGGED", "SUBJECT", "topic") == ("OK", [b"1 3 5"])
    assert client.uid("SEARCH", "OR", "FROM", "alex", "FROM", "bert") == ("OK", [b"3 4"])
    client.store("2", "-FLAGS", "(\\Flagged)")
    client.logout()


def test_sort_by_date_subject_and_from(server, threaded):
    """SORT (RFC 5256) orders by DATE, REVERSE DATE, base SUBJECT then sequence, and FROM."""
    client = login(server)
    client.select(threaded)
    assert client.sort("(DATE)", "UTF-8", "ALL") == ("OK", [b"4 1 2 3 5"])
    assert client.sort("(REVERSE DATE)", "UTF-8", "ALL") == ("OK", [b"5 3 2 1 4"])
    assert client.sort("(SUBJECT)", "UTF-8", "ALL") == ("OK", [b"4 1 2 3 5"])
    assert client.sort("(FROM)", "UTF-8", "ALL") == ("OK", [b"4 3 1 5 2"])
    assert client.uid("SORT", "(REVERSE SUBJECT DATE)", "UTF-8", "ALL") == ("OK", [b"1 2 3 5 4"])
    client.logout()


def test_thread_references_and_orderedsubject(server, threaded):
    """THREAD=REFERENCES builds the reply tree from References/In-Reply-To; ORDEREDSUBJECT
    groups by base subject with every later message a child of the first (RFC 5256)."""
    client = login(server)
    client.select(threaded)
    assert client.thread("REFERENCES", "UTF-8", "ALL") == ("OK", [b"(4)(1 (2 3)(5))"])
    assert client.thread("ORDEREDSUBJECT", "UTF-8", "ALL") == ("OK", [b"(4)(1 (2)(3)(5))"])
    client.logout()


# -- IDLE and several sessions --------------------------------------------------------------------

def test_idle_announces_smtp_delivery_within_a_second(server):
    """While a client IDLEs in INBOX (RFC 2177), a message delivered over SMTP is announced
    as * n EXISTS within one second of the SMTP server's 250."""
    wire = Wire(server)
    exists = untagged(wire.command("s", "SELECT INBOX"), b"EXISTS")
    before = int(exists[0].split()[1])
    wire.sock.sendall(b"i IDLE\r\n")
    assert wire.line().startswith(b"+ ")
    deliver(server, BOB, b"Subject: wake up\r\n\r\nidle no more\r\n")
    delivered = time.monotonic()
    wire.sock.settimeout(IDLE_WAKE)
    update = wire.line()
    while update.endswith(b" RECENT"):
        update = wire.line()
    assert update == b"* %d EXISTS" % (before + 1)
    assert time.monotonic() - delivered <= IDLE_WAKE
    wire.sock.settimeout(TIMEOUT)
    wire.sock.sendall(b"DONE\r\n")
    while not (line := wire.line()).startswith(b"i "):
        pass
    assert line.startswith(b"i OK")
    wire.close()


@pytest.fixture
def two_sessions(server, request):
    """Two raw sessions of alice with the same fresh mailbox of 3 messages selected."""
    name = request.node.name.removeprefix("test_")[:40]
    client = login(server)
    mailbox_with(client, name, simple(name, 3))
    client.logout()
    first, second = Wire(server, ALICE), Wire(server, ALICE)
    for session in (first, second):
        assert session.command("s", f"SELECT {name}")[-1].startswith(b"s OK")
    yield first, second
    first.close()
    second.close()


def test_expunge_is_not_announced_during_fetch_store_or_search(two_sessions):
    """When one session expunges message 2, the other sees no * 2 EXPUNGE in answer to
    FETCH, STORE or SEARCH (RFC 3501 7.4.1: sequence numbers would shift under them), and
    still numbers 3 messages; its next NOOP announces the EXPUNGE, and message 2 is then
    the former message 3."""
    first, second = two_sessions
    assert first.command("a", "STORE 2 +FLAGS.SILENT (\\Deleted)")[-1].startswith(b"a OK")
    expunged = first.command("b", "EXPUNGE")
    assert untagged(expunged, b"EXPUNGE") == [b"* 2 EXPUNGE"]

    fetched = second.command("c", "FETCH 1:3 (FLAGS)")
    assert fetched[-1].startswith(b"c OK") and untagged(fetched, b"EXPUNGE") == []
    stored = second.command("d", "STORE 1 +FLAGS (\\Seen)")
    assert stored[-1].startswith(b"d OK") and untagged(stored, b"EXPUNGE") == []
    searched = second.command("e", "SEARCH ALL")
    assert searched[-1].startswith(b"e OK") and untagged(searched, b"EXPUNGE") == []
    assert b"* SEARCH 1 2 3" in searched

    nooped = second.command("f", "NOOP")
    assert untagged(nooped, b"EXPUNGE") == [b"* 2 EXPUNGE"]
    after = second.command("g", "FETCH 2 (UID)")
    assert b"* 2 FETCH (UID 3)" in after


def test_flag_change_reaches_the_other_session_at_its_next_command(two_sessions):
    """A STORE in one session shows up in the other as * n FETCH (FLAGS ...) in answer to
    its next command (NOOP), with the new flags."""
    first, second = two_sessions
    assert first.command("a", "STORE 1 +FLAGS (\\Flagged)")[-1].startswith(b"a OK")
    updates = untagged(second.command("b", "NOOP"), b"FETCH")
    assert len(updates) == 1 and updates[0].startswith(b"* 1 FETCH (")
    assert b"\\Flagged" in re.search(rb"FLAGS \(([^)]*)\)", updates[0]).group(1)


def test_fetch_after_another_sessions_store_answers_the_new_flags(two_sessions):
    """A FETCH FLAGS right after another session's STORE never shows the old flags: the
    change is applied before the FETCH answers (a regression: the snapshot's flags came
    first and the update after them in the same response)."""
    first, second = two_sessions
    assert first.command("a", "STORE 1 +FLAGS (\\Flagged)")[-1].startswith(b"a OK")
    time.sleep(0.2)  # the commit notification reaches the other session
    fetched = second.command("b", "FETCH 1 (FLAGS)")
    assert fetched[-1].startswith(b"b OK")
    flags = [re.search(rb"FLAGS \(([^)]*)\)", line).group(1) for line in untagged(fetched, b"FETCH")]
    assert flags and all(b"\\Flagged" in value for value in flags), fetched


def test_recent_goes_to_one_session_only(server):
    """Two sessions have bob's INBOX selected when a message is delivered: both learn of it
    (EXISTS), but exactly one sees it with \\Recent (RFC 3501 2.3.2)."""
    first, second = Wire(server), Wire(server)
    counts = []
    for session in (first, second):
        exists = untagged(session.command("s", "SELECT INBOX"), b"EXISTS")
        counts.append(int(exists[0].split()[1]))
    assert counts[0] == counts[1]
    deliver(server, BOB, b"Subject: recent\r\n\r\nwho sees it first?\r\n")
    recent = []
    for session in (first, second):
        assert untagged(session.command("n", "NOOP"), b"EXISTS") == [b"* %d EXISTS" % (counts[0] + 1)]
        fetched = untagged(session.command("f", f"FETCH {counts[0] + 1} (FLAGS)"), b"FETCH")
        assert len(fetched) == 1
        recent.append(b"\\Recent" in fetched[0])
    assert sorted(recent) == [False, True]
    first.close()
    second.close()
