"""mailserverd and mailserverctl as an admin uses them: startup errors,
graceful stop, users and domains with the daemon up or down, import/export."""

from __future__ import annotations

import gzip
import mailbox
import os
import signal
import subprocess
import sys
import time

import pytest

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
HAM_FULL = os.path.join(DATA, "spamassassin-easy-ham-1.mbox.gz")


def run_daemon(conf, timeout=20):
    return subprocess.run([sys.executable, "-m", "mailserverd.cli.daemon", "-c", str(conf)],
                          capture_output=True, text=True, timeout=timeout)


def ctl(conf, *args, input=None):
    return subprocess.run([sys.executable, "-m", "mailserverd.cli.ctl", "-c", str(conf), *args],
                          capture_output=True, text=True, input=input, timeout=120)


@pytest.mark.parametrize("body, expected", [
    ("[server]\ndata_dir = d\ncolour = blue\n", "[server] colour: unknown key"),
    ("[server]\ndata_dir = d\n[listen]\nsmtp = 127.0.0.1:notaport\n", "[listen] smtp"),
    ("[server]\ndata_dir = d\n[tls]\ncert = /nonexistent.pem\nkey = /nonexistent.key\n", "[tls] cert: cannot read"),
    ("[server]\ndata_dir = /dev/null/sub\n", "[server] data_dir: cannot write"),
])
def test_bad_configuration_stops_startup_with_one_line(tmp_path, body, expected):
    """A bad configuration exits non-zero with one line naming file, section and key."""
    conf = tmp_path / "m.conf"
    conf.write_text(body)
    result = run_daemon(conf)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and str(conf) in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_port_in_use_names_the_listener(tmp_path):
    """A listener whose port is taken stops startup naming [listen] and the key."""
    import socket

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    conf = tmp_path / "m.conf"
    conf.write_text(f"[server]\ndata_dir = d\n[listen]\nsmtp = 127.0.0.1:{port}\n")
    try:
        result = run_daemon(conf)
    finally:
        blocker.close()
    assert result.returncode == 1
    assert f"[listen] smtp: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_user_added_with_ctl_appears_in_list_daemon_up_and_down(mailserver):
    """user add works through the running daemon and directly when it is stopped."""
    mailserver.ctl("user", "add", "carol@example.test", "--password-stdin", input="pw-carol\n")
    assert "carol@example.test" in mailserver.ctl("user", "list").stdout.split()
    mailserver.stop()
    mailserver.ctl("user", "add", "dave@example.test", "--password", "pw-dave")
    listed = mailserver.ctl("user", "list", "example.test").stdout.split()
    assert {"alice@example.test", "carol@example.test", "dave@example.test"} <= set(listed)


@pytest.mark.parametrize("args, reason", [
    (("user", "add", "alice@example.test", "--password", "x"), "already exists"),
    (("user", "add", "not-an-address", "--password", "x"), "invalid address"),
    (("user", "add", "x@nowhere.test", "--password", "x"), "not local"),
    (("domain", "add", "bad..domain"), "invalid domain"),
    (("user", "remove", "ghost@example.test"), "no such account"),
    (("user", "quota", "alice@example.test", "lots"), "expected a size"),
    (("frobnicate",), "invalid choice"),
])
def test_ctl_errors_are_one_line_and_non_zero(mailserver, args, reason):
    """Bad admin requests exit non-zero with a one-line reason, daemon running."""
    result = mailserver.ctl(*args, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], result.stderr


def test_sigterm_stops_gracefully(mailserver):
    """SIGTERM makes the daemon exit 0."""
    assert mailserver.stop() == 0


def _messages(path_or_bytes):
    """Message bytes as Python's mailbox.mbox sees them (the From_ line aside), LF endings."""
    box = mailbox.mbox(path_or_bytes, create=False)
    try:
        return [box.get_bytes(key) for key in box.iterkeys()]
    finally:
        box.close()


def test_import_then_export_after_restart_is_byte_identical(mailserver, tmp_path):
    """All 2,500 real messages come back byte-identical after import, restart and export."""
    source = tmp_path / "ham.mbox"
    source.write_bytes(gzip.decompress(open(HAM_FULL, "rb").read()))
    result = mailserver.ctl("user", "import", "alice@example.test", HAM_FULL)
    assert "imported 2500" in result.stderr
    mailserver.restart()
    out = tmp_path / "out.mbox"
    mailserver.ctl("user", "export", "alice@example.test", "--mailbox", "INBOX", "-o", str(out))
    original, exported = _messages(str(source)), _messages(str(out))
    assert len(exported) == 2500
    assert exported == original


def test_second_import_adds_nothing(mailserver):
    """Importing the same file twice stores each message once."""
    mailserver.ctl("user", "import", "bob@example.test", os.path.join(DATA, "ham-200.mbox"))
    again = mailserver.ctl("user", "import", "bob@example.test", os.path.join(DATA, "ham-200.mbox"))
    assert "imported 0, already present 200" in again.stderr


def test_truncated_gzip_imports_what_is_readable(mailserver, tmp_path):
    """A truncated mbox.gz imports the readable messages, reports the damage, exits 1."""
    data = open(os.path.join(DATA, "ham-200.mbox.gz"), "rb").read()
    broken = tmp_path / "broken.mbox.gz"
    broken.write_bytes(data[: len(data) // 2])
    result = mailserver.ctl("user", "import", "bob@example.test", str(broken), check=False)
    assert result.returncode == 1
    assert "skipped" in result.stderr
    imported = int(result.stderr.rsplit("imported ", 1)[1].split(",")[0])
    assert 0 < imported < 200
    listed = mailserver.ctl("user", "export", "bob@example.test").stdout
    assert listed.count("\nFrom ") + listed.startswith("From ") == imported


def test_kill_during_import_loses_nothing_reported(mailserver):
    """kill -9 mid-import: every message reported imported is there, whole; a rerun completes."""
    proc = subprocess.Popen([sys.executable, "-m", "mailserverd.cli.ctl", "-c", mailserver.conf_path,
                             "user", "import", "alice@example.test", HAM_FULL],
                            stderr=subprocess.PIPE, text=True)
    reported = 0
    deadline = time.monotonic() + 60
    buffer = ""
    while time.monotonic() < deadline:
        chunk = proc.stderr.read(64)
        if not chunk:
            break
        buffer += chunk
        counts = [int(part.split(",")[0]) for part in buffer.split("imported ")[1:] if "," in part]
        if counts and counts[-1] >= 400:
            reported = counts[-1]
            break
    assert reported >= 400
    mailserver.kill()
    proc.kill()
    proc.wait()
    mailserver.restart()
    exported = mailserver.ctl("user", "export", "alice@example.test", "--mailbox", "INBOX").stdout
    count = exported.count("\nFrom ") + exported.startswith("From ")
    assert count >= reported
    rerun = mailserver.ctl("user", "import", "alice@example.test", HAM_FULL)
    assert f"already present {count}" in rerun.stderr
    assert "imported %d" % (2500 - count) in rerun.stderr


def _fetch_certificate(port):
    import ssl

    return ssl.get_server_certificate(("127.0.0.1", port))


def test_sighup_reloads_the_certificate(mailserver_factory, tmp_path):
    """SIGHUP makes new TLS connections present the replaced certificate."""
    from mailserverd.tls import ensure_self_signed

    first_cert, first_key = ensure_self_signed(str(tmp_path / "one"), "one.example.test")
    live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    live_cert.write_bytes(open(first_cert, "rb").read())
    live_key.write_bytes(open(first_key, "rb").read())
    server = mailserver_factory(listeners=("submissions",),
                                extra_config={"tls": {"cert": str(live_cert), "key": str(live_key)}})
    before = _fetch_certificate(server.ports["submissions"])
    second_cert, second_key = ensure_self_signed(str(tmp_path / "two"), "two.example.test")
    live_cert.write_bytes(open(second_cert, "rb").read())
    live_key.write_bytes(open(second_key, "rb").read())
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _fetch_certificate(server.ports["submissions"]) == before:
        time.sleep(0.1)
    after = _fetch_certificate(server.ports["submissions"])
    assert before != after
    assert after.strip() == open(second_cert).read().strip()
