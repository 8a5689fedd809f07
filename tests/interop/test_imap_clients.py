"""Real IMAP clients against the real daemon over IMAPS (its self-signed certificate).

- mbsync (isync): mirrors every mailbox of an account into a local Maildir, message
  for message (mbsync writes LF line ends and adds one `X-TUID:` header line of its
  own, which the comparison removes; everything else is byte for byte); syncs flags
  both ways and propagates a local deletion; pulls the whole 2,500-message corpus.
- offlineimap (offlineimap3): the same mirror, byte for byte (LF line ends), flags
  both ways and a local deletion.
- mutt: opens the 2,500-message INBOX on a pseudo-terminal (it is a curses
  program: a pty from Python's pty module, TERM=xterm, no system or user
  configuration, a hard deadline), saves the first message to =Archive, syncs and
  quits from pushed keys; imaplib then checks that Archive holds it and INBOX lost it.

Each client trusts the daemon's certificate as fetched from the server
(ssl.get_server_certificate): mbsync through CertificateFile, mutt through its
certificate_file (with ssl_verify_host=no: the certificate names mx.example.test,
the client connects to 127.0.0.1), offlineimap through cert_fingerprint (SHA-256).
Each client run has a hard timeout. A client that is not installed is skipped
(bin/test installs isync, mutt and offlineimap3 as root).
"""

from __future__ import annotations

import hashlib
import imaplib
import os
import re
import shutil
import smtplib
import ssl
import subprocess

import pytest

from mailserverd.mailfiles import iter_source
from tests.support.daemon import PASSWORD
from tests.support.terminal import run_on_pty

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
HAM_200 = os.path.join(DATA, "ham-200.mbox")
SPAM_50 = os.path.join(DATA, "spam-50.mbox")
CORPUS = os.path.join(DATA, "spamassassin-easy-ham-1.mbox.gz")
ALICE = "alice@example.test"
LISTENERS = ("smtp", "imap", "imaps")
SPECIAL_USE = {"Sent", "Drafts", "Junk", "Trash", "Archive"}
CLIENT_TIMEOUT = 120  # seconds for one client run over a few hundred messages
CORPUS_TIMEOUT = 300  # seconds for one client run over the whole corpus
IMAP_TIMEOUT = 30  # seconds for any one imaplib socket operation

MBSYNC = shutil.which("mbsync")
MUTT = shutil.which("mutt")
OFFLINEIMAP = shutil.which("offlineimap")
needs_mbsync = pytest.mark.skipif(MBSYNC is None, reason="mbsync is not installed (Debian: apt-get install -y isync)")
needs_mutt = pytest.mark.skipif(MUTT is None, reason="mutt is not installed (Debian: apt-get install -y mutt)")
needs_offlineimap = pytest.mark.skipif(OFFLINEIMAP is None, reason="offlineimap is not installed "
                                       "(Debian: apt-get install -y offlineimap3)")


# -- the daemon and its view through imaplib --------------------------------------------------

@pytest.fixture
def server(mailserver_factory):
    """A daemon of its own (SMTP, IMAP, IMAPS) with alice@ and bob@ and empty mailboxes."""
    return mailserver_factory(listeners=LISTENERS)


def imap(server) -> imaplib.IMAP4:
    client = imaplib.IMAP4(*server.address("imap"), timeout=IMAP_TIMEOUT)
    client.login(ALICE, PASSWORD)
    return client


def server_messages(server, mailbox: str) -> dict[int, tuple[bytes, bytes]]:
    """{uid: (flags, raw message)} of one of alice's mailboxes, read without changing it."""
    client = imap(server)
    status, _ = client.select(f'"{mailbox}"', readonly=True)
    assert status == "OK", mailbox
    status, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
    assert status == "OK"
    client.logout()
    messages = {}
    for item in data:
        if isinstance(item, tuple):
            head = item[0]
            uid = int(re.search(rb"UID (\d+)", head).group(1))
            flags = re.search(rb"FLAGS \(([^)]*)\)", head).group(1)
            messages[uid] = (flags, item[1])
    return messages


def import_messages(server, path: str, mailbox: str = "INBOX") -> None:
    server.ctl("user", "import", ALICE, path, "--mailbox", mailbox)


def lf(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n")


def source_messages(path: str) -> list[bytes]:
    """The messages of an mbox as a Maildir client stores them (LF line ends), sorted."""
    return sorted(lf(message.raw) for message in iter_source(path))


def trust_file(server, directory) -> str:
    """A PEM file holding the certificate the daemon presents on its IMAPS port."""
    path = os.path.join(str(directory), "server.pem")
    with open(path, "w", encoding="ascii") as handle:
        handle.write(ssl.get_server_certificate(server.address("imaps")))
    return path


def maildir_files(folder) -> dict[str, bytes]:
    """{file name: content} of the messages in one Maildir folder (cur and new)."""
    found = {}
    for part in ("cur", "new"):
        directory = os.path.join(str(folder), part)
        for name in os.listdir(directory) if os.path.isdir(directory) else ():
            with open(os.path.join(directory, name), "rb") as handle:
                found[os.path.join(part, name)] = handle.read()
    return found


def maildir_flags(name: str) -> str:
    return name.rpartition(":2,")[2]


def rename_with_flags(folder, name: str, flags: str) -> None:
    """Give a Maildir message new flags the way a mail reader does: rename it into cur/."""
    base = os.path.basename(name).rpartition(":2,")[0] or os.path.basename(name)
    os.rename(os.path.join(str(folder), name), os.path.join(str(folder), "cur", f"{base}:2,{flags}"))


# -- mbsync ---------------------------------------------------------------------------------

TUID_LINE = re.compile(rb"^X-TUID: [^\n]*\n", re.MULTILINE)


def without_tuid(message: bytes) -> bytes:
    """mbsync adds `X-TUID: ...` to the header of each message it copies (to find it again
    should the run be interrupted); the rest of the message is as the server sent it."""
    header, separator, body = message.partition(b"\n\n")
    return TUID_LINE.sub(b"", header + b"\n", count=1)[:-1] + separator + body


def mbsync_uid(name: str) -> int:
    return int(re.search(r",U=(\d+)", name).group(1))


def mbsync(server, home, timeout: float = CLIENT_TIMEOUT) -> str:
    """One `mbsync -a` of all of alice's mailboxes into home/mail (a Maildir++-style tree,
    INBOX at home/mail/INBOX), both directions, expunging on both sides; returns its output.

    FACTS.md: CertificateFile must hold the server's certificate; `SyncState *` keeps the
    sync state in each Maildir folder so no earlier run's state in ~/.mbsync interferes.
    """
    mail = os.path.join(str(home), "mail")
    os.makedirs(mail, exist_ok=True)
    config = os.path.join(str(home), "mbsyncrc")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(
            "IMAPAccount alice\n"
            "Host 127.0.0.1\n"
            f"Port {server.ports['imaps']}\n"
            f"User {ALICE}\n"
            f"Pass {PASSWORD}\n"
            "SSLType IMAPS\n"
            "SystemCertificates no\n"
            f"CertificateFile {trust_file(server, home)}\n"
            "Timeout 60\n"
            "\n"
            "IMAPStore remote\n"
            "Account alice\n"
            "\n"
            "MaildirStore local\n"
            f"Path {mail}/\n"
            f"Inbox {mail}/INBOX\n"
            "SubFolders Verbatim\n"
            "\n"
            "Channel alice\n"
            "Far :remote:\n"
            "Near :local:\n"
            "Patterns *\n"
            "Create Near\n"
            "Expunge Both\n"
            "SyncState *\n")
    result = subprocess.run([MBSYNC, "-c", config, "-a"], capture_output=True, text=True, timeout=timeout,
                            env=dict(os.environ, HOME=str(home)), cwd=str(home))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@needs_mbsync
def test_mbsync_mirrors_every_mailbox(server, tmp_path):
    """mbsync over IMAPS creates every mailbox locally (INBOX, the five special-use ones, a
    nested user folder and the parent CREATE made for it, RFC 3501 6.3.3) and fills each with exactly the server's messages: 200 real
    messages in INBOX, 50 in Junk, one in Lists/ilug, each byte for byte apart from the
    X-TUID line mbsync adds and CRLF written as LF."""
    import_messages(server, HAM_200)
    import_messages(server, SPAM_50, "Junk")
    client = imap(server)
    assert client.create("Lists/ilug")[0] == "OK"
    nested = b"From: a@remote.test\r\nSubject: nested\r\n\r\nin a subfolder\r\n"
    assert client.append("Lists/ilug", None, None, nested)[0] == "OK"
    client.logout()

    mbsync(server, tmp_path)

    mail = tmp_path / "mail"
    local = {str(path.parent.relative_to(mail)) for path in mail.glob("**/cur")}
    assert local == {"INBOX", "Lists", "Lists/ilug"} | SPECIAL_USE
    assert sorted(map(without_tuid, maildir_files(mail / "INBOX").values())) == source_messages(HAM_200)
    assert sorted(map(without_tuid, maildir_files(mail / "Junk").values())) == source_messages(SPAM_50)
    assert list(map(without_tuid, maildir_files(mail / "Lists/ilug").values())) == [lf(nested)]
    for name in SPECIAL_USE - {"Junk"}:
        assert maildir_files(mail / name) == {}, name


@needs_mbsync
def test_mbsync_second_run_fetches_only_new_mail(server, tmp_path):
    """After a first sync, a message delivered over SMTP arrives with the next mbsync run,
    and the 200 messages already there are neither duplicated nor changed."""
    import_messages(server, HAM_200)
    mbsync(server, tmp_path)
    before = maildir_files(tmp_path / "mail/INBOX")
    with smtplib.SMTP(*server.address("smtp"), timeout=IMAP_TIMEOUT) as smtp:
        smtp.sendmail("s@remote.test", [ALICE], b"Subject: later\r\n\r\narrived after the first sync\r\n")
    mbsync(server, tmp_path)
    after = maildir_files(tmp_path / "mail/INBOX")
    added = {name: content for name, content in after.items() if name not in before}
    assert len(after) == 201 and len(added) == 1
    assert b"arrived after the first sync" in next(iter(added.values()))
    assert {name: content for name, content in after.items() if name in before} == before


@needs_mbsync
def test_mbsync_syncs_flags_both_ways_and_deletions(server, tmp_path):
    """Flags F and S set locally become \\Flagged \\Seen on the server; \\Answered set on
    the server becomes R locally; a message marked T (trashed) locally is expunged on the
    server by the next run. Nothing else changes on either side."""
    import_messages(server, HAM_200)
    mbsync(server, tmp_path)
    inbox = tmp_path / "mail/INBOX"
    by_uid = {mbsync_uid(name): name for name in maildir_files(inbox)}
    assert sorted(by_uid) == list(range(1, 201))

    rename_with_flags(inbox, by_uid[5], "FS")
    mbsync(server, tmp_path)
    flags = {uid: flags for uid, (flags, _) in server_messages(server, "INBOX").items()}
    assert set(flags[5].split()) == {b"\\Flagged", b"\\Seen"}
    assert all(b"\\Flagged" not in value and b"\\Seen" not in value for uid, value in flags.items() if uid != 5)

    client = imap(server)
    client.select("INBOX")
    assert client.uid("STORE", "7", "+FLAGS", "(\\Answered)")[0] == "OK"
    client.logout()
    mbsync(server, tmp_path)
    local_flags = {mbsync_uid(name): maildir_flags(name) for name in maildir_files(inbox)}
    assert local_flags[7] == "R" and local_flags[5] == "FS"
    assert all(value == "" for uid, value in local_flags.items() if uid not in (5, 7))

    name_7 = next(name for name in maildir_files(inbox) if mbsync_uid(name) == 7)
    rename_with_flags(inbox, name_7, "RT")
    mbsync(server, tmp_path)
    remaining = server_messages(server, "INBOX")
    assert 7 not in remaining and len(remaining) == 199
    assert sorted(mbsync_uid(name) for name in maildir_files(inbox)) == sorted(remaining)


@needs_mbsync
@pytest.mark.timeout(CORPUS_TIMEOUT + 120)
def test_mbsync_pulls_the_whole_corpus(server, tmp_path):
    """The slow one (issue 5's "Done when"): all 2,500 real messages of the corpus, imported
    into INBOX, arrive in the local Maildir byte for byte (apart from X-TUID and LF line
    ends) within one bounded mbsync run."""
    result = server.ctl("user", "import", ALICE, CORPUS)
    assert "imported 2500" in result.stderr
    mbsync(server, tmp_path, timeout=CORPUS_TIMEOUT)
    local = sorted(map(without_tuid, maildir_files(tmp_path / "mail/INBOX").values()))
    assert len(local) == 2500
    assert local == source_messages(CORPUS)


# -- offlineimap ------------------------------------------------------------------------------

def offlineimap(server, home) -> str:
    """One offlineimap run (one-shot, basic UI, one connection) of all of alice's mailboxes
    into home/mail; the server is trusted by the SHA-256 fingerprint of its certificate."""
    pem = ssl.get_server_certificate(server.address("imaps"))
    fingerprint = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
    mail = os.path.join(str(home), "mail")
    os.makedirs(mail, exist_ok=True)
    config = os.path.join(str(home), "offlineimaprc")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(
            "[general]\n"
            "accounts = alice\n"
            f"metadata = {home}/metadata\n"
            "\n[Account alice]\n"
            "localrepository = local\n"
            "remoterepository = remote\n"
            "\n[Repository local]\n"
            "type = Maildir\n"
            f"localfolders = {mail}\n"
            "\n[Repository remote]\n"
            "type = IMAP\n"
            "remotehost = 127.0.0.1\n"
            f"remoteport = {server.ports['imaps']}\n"
            f"remoteuser = {ALICE}\n"
            f"remotepass = {PASSWORD}\n"
            "ssl = yes\n"
            f"cert_fingerprint = {fingerprint}\n"
            "maxconnections = 1\n")
    result = subprocess.run([OFFLINEIMAP, "-c", config, "-o", "-u", "basic"], capture_output=True, text=True,
                            timeout=CLIENT_TIMEOUT, env=dict(os.environ, HOME=str(home)), cwd=str(home))
    output = result.stdout + result.stderr
    # offlineimap exits 0 even when a folder failed: its output names every error
    assert result.returncode == 0 and "ERROR" not in output, output
    return output


CLOSE_DELIMITER = re.compile(rb"^--[^\n]*--\n", re.MULTILINE)


def without_close_delimiters(message: bytes) -> bytes:
    """offlineimap re-serializes each message through Python's email package, which writes a
    closing delimiter (`--boundary--`) for multipart bodies that lack one (4 of the 50 spam
    messages): compare offlineimap's copies with every closing-delimiter line removed."""
    return CLOSE_DELIMITER.sub(b"", message)


def offlineimap_uid(name: str) -> int:
    return int(re.search(r",U=(\d+),", name).group(1))


@needs_offlineimap
def test_offlineimap_mirrors_every_mailbox(server, tmp_path):
    """offlineimap over IMAPS creates every mailbox locally and copies 200 real messages
    (INBOX) byte for byte, CRLF written as LF, and 50 spam messages (Junk) the same apart
    from the closing MIME delimiters offlineimap adds (see without_close_delimiters)."""
    import_messages(server, HAM_200)
    import_messages(server, SPAM_50, "Junk")
    offlineimap(server, tmp_path)
    mail = tmp_path / "mail"
    assert {path.name for path in mail.iterdir()} == {"INBOX"} | SPECIAL_USE
    assert sorted(maildir_files(mail / "INBOX").values()) == source_messages(HAM_200)
    assert sorted(map(without_close_delimiters, maildir_files(mail / "Junk").values())) == \
        sorted(map(without_close_delimiters, source_messages(SPAM_50)))


@needs_offlineimap
def test_offlineimap_syncs_flags_both_ways_and_deletions(server, tmp_path):
    """With offlineimap, local F and S flags reach the server as \\Flagged \\Seen, \\Answered
    set on the server arrives as R, and a message file deleted locally is expunged on the
    server."""
    import_messages(server, HAM_200)
    offlineimap(server, tmp_path)
    inbox = tmp_path / "mail/INBOX"
    by_uid = {offlineimap_uid(name): name for name in maildir_files(inbox)}
    assert sorted(by_uid) == list(range(1, 201))

    rename_with_flags(inbox, by_uid[5], "FS")
    client = imap(server)
    client.select("INBOX")
    assert client.uid("STORE", "7", "+FLAGS", "(\\Answered)")[0] == "OK"
    client.logout()
    offlineimap(server, tmp_path)
    flags = {uid: flags for uid, (flags, _) in server_messages(server, "INBOX").items()}
    assert set(flags[5].split()) == {b"\\Flagged", b"\\Seen"}
    local_flags = {offlineimap_uid(name): maildir_flags(name) for name in maildir_files(inbox)}
    assert local_flags[7] == "R" and local_flags[5] == "FS"

    name_9 = next(name for name in maildir_files(inbox) if offlineimap_uid(name) == 9)
    os.remove(inbox / name_9)
    offlineimap(server, tmp_path)
    remaining = server_messages(server, "INBOX")
    assert 9 not in remaining and len(remaining) == 199


# -- mutt -------------------------------------------------------------------------------------

ANSI = re.compile(rb"\x1b(?:\[[0-9;?]*[A-Za-z]|\([A-Z0-9]|[=>])")


def run_mutt(server, home, keys: str, timeout: float) -> str:
    """mutt on a pseudo-terminal, opening alice's INBOX over IMAPS and running the pushed
    `keys`; returns its screen output (escape sequences removed). Fails with the last
    screen if mutt has not exited by the deadline (e.g. stuck at a prompt)."""
    folder = f"imaps://127.0.0.1:{server.ports['imaps']}/"
    muttrc = os.path.join(str(home), "muttrc")
    with open(muttrc, "w", encoding="utf-8") as handle:
        handle.write(
            f'set folder="{folder}"\n'
            f'set imap_user="{ALICE}"\n'
            f'set imap_pass="{PASSWORD}"\n'
            # trusted certificates; the name check would fail (mx.example.test vs 127.0.0.1)
            f'set certificate_file="{trust_file(server, home)}"\n'
            "set ssl_verify_host=no\n"
            "set sort=mailbox-order\n"  # <first-entry> is message 1
            "set confirmappend=no\n"
            "set confirmcreate=no\n"
            "set delete=yes\n"  # sync expunges what was saved away without asking
            "set quit=yes\n"
            "set move=no\n"
            "set wait_key=no\n"
            'set header_cache=""\n'
            'set message_cachedir=""\n'
            "set mail_check=0\n"
            "set timeout=0\n")
    status, output = run_on_pty([MUTT, "-n", "-F", muttrc, "-f", folder + "INBOX", "-e", f"push {keys}"],
                                home, timeout)
    if status is None:
        pytest.fail(f"mutt did not finish within {timeout:.0f} s:\n{output[-3000:]!r}")
    assert status == 0, output[-3000:]
    return ANSI.sub(b"", bytes(output)).replace(b"\r", b"").decode("utf-8", "replace")


@needs_mutt
@pytest.mark.timeout(CORPUS_TIMEOUT + 120)
def test_mutt_moves_a_message_to_archive_in_the_corpus_inbox(server, tmp_path):
    """mutt opens the INBOX of 2,500 real messages over IMAPS, saves message 1 to =Archive,
    syncs and quits: Archive then holds exactly that message (same octets) and INBOX has
    the other 2,499."""
    result = server.ctl("user", "import", ALICE, CORPUS)
    assert "imported 2500" in result.stderr
    before = server_messages(server, "INBOX")
    first_uid = min(before)
    moved = before[first_uid][1]

    screen = run_mutt(server, tmp_path, "<first-entry><save-message>=Archive<enter><sync-mailbox><quit>",
                      timeout=CORPUS_TIMEOUT)

    assert "Msgs:2499" in screen, screen[-2000:]
    archive = server_messages(server, "Archive")
    assert [raw for _, raw in archive.values()] == [moved]
    after = server_messages(server, "INBOX")
    assert sorted(after) == sorted(uid for uid in before if uid != first_uid)
    assert all(after[uid][1] == before[uid][1] for uid in after)
