"""Real POP3 clients against the real daemon: fetchmail and getmail6 retrieve
200 real messages (tests/data/ham-200.mbox) completely, in keep and delete
modes, on the plain port (loopback) and over implicit TLS (pop3s); and the
whole 2,500-message corpus once with each client."""

from __future__ import annotations

import os
import poplib
import re
import shutil
import subprocess

import pytest

from mailserverd.mailfiles import iter_source
from tests.support.daemon import PASSWORD

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
HAM_200 = os.path.join(DATA, "ham-200.mbox")
ALICE = "alice@example.test"
CLIENT_TIMEOUT = 180  # seconds for one client run over 200 messages

FETCHMAIL = shutil.which("fetchmail")
GETMAIL = shutil.which("getmail")
needs_fetchmail = pytest.mark.skipif(FETCHMAIL is None, reason="fetchmail is not installed "
                                     "(Debian: apt-get install -y fetchmail)")
needs_getmail = pytest.mark.skipif(GETMAIL is None, reason="getmail6 is not installed "
                                   "(Debian: apt-get install -y getmail6)")


def expected_messages() -> list[bytes]:
    """The messages as stored by import, with LF line ends (as the clients write them)."""
    return sorted(message.raw.replace(b"\r\n", b"\n") for message in iter_source(HAM_200))


def header_identity(message: bytes) -> bytes:
    """The message's header, unfolded, blanks collapsed, Return-Path without brackets.

    getmail re-serializes every message through Python's email package: it folds long
    header lines anew, writes Return-Path as <address>, and re-encodes a few MIME bodies
    (2 of the 2,500). So getmail runs are checked by the complete header of every
    message; fetchmail and poplib runs check every byte.
    """
    header = message.partition(b"\n\n")[0]
    header = re.sub(rb"\n[ \t]+", b" ", header)
    header = re.sub(rb"[ \t]+", b" ", header)
    header = re.sub(rb" +\n", b"\n", header).rstrip(b" ")
    return re.sub(rb"(?i)\AReturn-Path: <([^>\n]*)>", rb"Return-Path: \1", header)


def same_messages_by_header(found: list[bytes], expected: list[bytes]) -> bool:
    return sorted(map(header_identity, found)) == sorted(map(header_identity, expected))


def retrieved(directory) -> list[bytes]:
    found = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                found.append(handle.read())
    return sorted(found)


def maildrop_count(server) -> int:
    client = poplib.POP3(*server.address("pop3"), timeout=30)
    client.user(ALICE)
    client.pass_(PASSWORD)
    count = client.stat()[0]
    client.quit()
    return count


def run(command, home, **kwargs) -> subprocess.CompletedProcess:
    environment = dict(os.environ, HOME=str(home), FETCHMAILHOME=str(home))
    result = subprocess.run(command, env=environment, capture_output=True, text=True,
                            timeout=CLIENT_TIMEOUT, **kwargs)
    return result


# -- fetchmail -----------------------------------------------------------------------

def fetchmail(server, tmp_path, *, keep: bool, secure: bool = False,
              fetchall: bool = True) -> tuple[subprocess.CompletedProcess, str]:
    """One fetchmail poll of alice's maildrop; each message goes to its own file in tmp_path/out.
    Without fetchall, only messages whose UIDL fetchmail has not seen before are retrieved."""
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    home = tmp_path / "fetchmail-home"
    home.mkdir(exist_ok=True)
    port = server.ports["pop3s" if secure else "pop3"]
    # FACTS.md: "ssl no sslcertck" in this order for a self-signed certificate; on the plain
    # loopback port sslproto '' keeps fetchmail from upgrading with STLS.
    tls = "ssl no sslcertck" if secure else "sslproto ''"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        "set invisible\n"  # no Received: header of its own, so messages compare byte for byte
        f"poll 127.0.0.1 service {port} protocol pop3 uidl auth password timeout 60\n"
        f'  user "{ALICE}" there with password "{PASSWORD}" is "tester" here\n'
        f"  {tls} {'keep' if keep else 'no keep'} {'fetchall' if fetchall else ''} no rewrite\n"
        f"  mda \"/bin/sh -c 'cat > $(mktemp {out}/msg.XXXXXXXX)'\"\n")
    rc.chmod(0o600)
    result = run([FETCHMAIL, "-f", str(rc), "--nodetach"], home)
    return result, str(out)


@pytest.fixture(scope="module")
def loaded_server(shared_mailserver):
    """The shared daemon with the 200 real messages in alice's INBOX: for keep-mode runs only."""
    shared_mailserver.ctl("user", "import", ALICE, HAM_200)
    return shared_mailserver


@pytest.fixture
def fresh_loaded_server(mailserver):
    """A daemon of its own with the 200 real messages in alice's INBOX: for delete-mode runs."""
    mailserver.ctl("user", "import", ALICE, HAM_200)
    return mailserver


@needs_fetchmail
def test_fetchmail_keep_retrieves_everything_and_leaves_it(loaded_server, tmp_path):
    """fetchmail in keep mode gets all 200 messages byte for byte; the maildrop still holds them,
    and a second poll (UIDL-based) finds nothing new."""
    result, out = fetchmail(loaded_server, tmp_path, keep=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert retrieved(out) == expected_messages()
    assert maildrop_count(loaded_server) == 200
    again, _ = fetchmail(loaded_server, tmp_path, keep=True, fetchall=False)
    # fetchmail exits 1 for "no mail": every UIDL was seen before
    assert again.returncode == 1, again.stdout + again.stderr
    assert len(retrieved(out)) == 200


@needs_fetchmail
def test_fetchmail_over_pop3s_keep(loaded_server, tmp_path):
    """fetchmail over implicit TLS (pop3s) retrieves all 200 messages byte for byte."""
    result, out = fetchmail(loaded_server, tmp_path, keep=True, secure=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert retrieved(out) == expected_messages()


@needs_fetchmail
def test_fetchmail_delete_mode_empties_the_maildrop(fresh_loaded_server, tmp_path):
    """fetchmail without keep retrieves all 200 messages and deletes them at QUIT."""
    result, out = fetchmail(fresh_loaded_server, tmp_path, keep=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert retrieved(out) == expected_messages()
    assert maildrop_count(fresh_loaded_server) == 0


# -- getmail6 --------------------------------------------------------------------------

def getmail(server, tmp_path, *, delete: bool, secure: bool = False, read_all: bool = True):
    """One getmail run for alice; each message goes to its own file in tmp_path/out.

    The destination is an external command (cat into a new file): getmail refuses to
    write a Maildir as root, and CI runs as root; allow_root_commands permits the command.
    """
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    state = tmp_path / "getmail-state"
    state.mkdir(exist_ok=True)
    retriever = "SimplePOP3SSLRetriever" if secure else "SimplePOP3Retriever"
    port = server.ports["pop3s" if secure else "pop3"]
    rc = tmp_path / "getmailrc"
    rc.write_text(
        "[retriever]\n"
        f"type = {retriever}\n"
        "server = 127.0.0.1\n"
        f"port = {port}\n"
        f"username = {ALICE}\n"
        f"password = {PASSWORD}\n"
        "\n[destination]\n"
        "type = MDA_external\n"
        "path = /bin/sh\n"
        f"arguments = (\"-c\", \"cat > $(mktemp {out}/msg.XXXXXXXX)\")\n"
        "allow_root_commands = true\n"
        "\n[options]\n"
        "verbose = 0\n"
        f"read_all = {read_all}\n"
        f"delete = {delete}\n"
        "delivered_to = false\n"  # no headers of its own, so messages compare byte for byte
        "received = false\n")
    result = run(getmail_command("--rcfile", str(rc), "--getmaildir", str(state)), tmp_path)
    return result, str(out)


# getmail6 (6.18) forks once per delivered message and installs its SIGCHLD handler
# only after fork() returns (getmailcore/baseclasses.py ForkingBase.forkchild); a child
# that exits first is never noticed and getmail waits 60 s for it, or forever (seen on a
# loaded machine: the 2,500-message run stalled in _wait_for_child). The wrapper makes
# getmail wait for its child with waitpid() instead; everything on the wire is getmail's own.
GETMAIL_WAITPID = """
import os, runpy, sys
from getmailcore import baseclasses
from getmailcore.exceptions import getmailOperationError

def wait_for_child(self, childpid):
    _, status = os.waitpid(childpid, 0)
    if not os.WIFEXITED(status):
        raise getmailOperationError('child pid %d did not exit normally' % childpid)
    return os.WEXITSTATUS(status)

baseclasses.ForkingBase._prepare_child = lambda self: None
baseclasses.ForkingBase._wait_for_child = wait_for_child
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def getmail_command(*args: str) -> list[str]:
    """getmail with its own interpreter (the script's #! line) and the waitpid wrapper."""
    with open(GETMAIL, "rb") as script:
        interpreter = script.readline()[2:].decode().split()[0]
    return [interpreter, "-c", GETMAIL_WAITPID, GETMAIL, *args]


@needs_getmail
def test_getmail_keep_retrieves_everything_and_leaves_it(loaded_server, tmp_path):
    """getmail6 keeping mail gets all 200 messages (checked by header: see header_identity); the maildrop still holds them,
    and a run for new mail only (UIDL-based) finds nothing."""
    result, out = getmail(loaded_server, tmp_path, delete=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert same_messages_by_header(retrieved(out), expected_messages())
    assert maildrop_count(loaded_server) == 200
    again, _ = getmail(loaded_server, tmp_path, delete=False, read_all=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(retrieved(out)) == 200


@needs_getmail
def test_getmail_over_pop3s_keep(loaded_server, tmp_path):
    """getmail6 over implicit TLS (pop3s) retrieves all 200 messages."""
    result, out = getmail(loaded_server, tmp_path, delete=False, secure=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert same_messages_by_header(retrieved(out), expected_messages())


@needs_getmail
def test_getmail_delete_mode_empties_the_maildrop(fresh_loaded_server, tmp_path):
    """getmail6 with delete retrieves all 200 messages and deletes them."""
    result, out = getmail(fresh_loaded_server, tmp_path, delete=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert same_messages_by_header(retrieved(out), expected_messages())
    assert maildrop_count(fresh_loaded_server) == 0


# -- the whole corpus ----------------------------------------------------------------------

HAM_FULL = os.path.join(DATA, "spamassassin-easy-ham-1.mbox.gz")


@needs_fetchmail
@needs_getmail
def test_full_corpus_fetchmail_keep_then_getmail_delete(mailserver, tmp_path):
    """All 2,500 real messages: fetchmail (keep) gets every one byte for byte and leaves them;
    then getmail6 (delete) gets every one again (checked by header) and empties the maildrop."""
    result = mailserver.ctl("user", "import", ALICE, HAM_FULL)
    assert "imported 2500" in result.stderr
    expected = sorted(message.raw.replace(b"\r\n", b"\n") for message in iter_source(HAM_FULL))
    fetched, fetch_out = fetchmail(mailserver, tmp_path / "fetchmail", keep=True)
    assert fetched.returncode == 0, fetched.stderr
    assert retrieved(fetch_out) == expected
    assert maildrop_count(mailserver) == 2500
    got, get_out = getmail(mailserver, tmp_path / "getmail", delete=True)
    assert got.returncode == 0, got.stderr
    assert same_messages_by_header(retrieved(get_out), expected)
    assert maildrop_count(mailserver) == 0
