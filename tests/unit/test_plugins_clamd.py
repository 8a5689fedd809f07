"""plugins/clamd.py without clamd: INSTREAM framing, reply parsing, fail-safe on a dead or
silent daemon, options, and loading by name (entry point and plugins/ fallback)."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from importlib import metadata

import pytest

from mailserverd.checks.base import CheckContext, Envelope, Session
from plugins.clamd import ClamdCheck, instream_request, parse_reply
from tests.support.daemon import free_port
from tests.support.reactorthread import ensure_running, run_in_reactor

SESSION = Session(id="s1", mode="smtp", remote_ip="192.0.2.7", remote_port=4000, hostname="mx.test")
ENVELOPE = Envelope(id="e1", mail_from="a@remote.test", params=None)
MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"


def test_instream_request_frames_chunks_and_ends_with_a_zero_length():
    """clamd(8) INSTREAM: 'zINSTREAM\\0', then <4-byte big-endian length><data> chunks, then 0."""
    request = instream_request(b"a" * 10, max_size=100, chunk=4)
    assert request == (b"zINSTREAM\0" + struct.pack(">I", 4) + b"aaaa" + struct.pack(">I", 4) + b"aaaa"
                       + struct.pack(">I", 2) + b"aa" + struct.pack(">I", 0))
    assert instream_request(b"a" * 10, max_size=3, chunk=4) == (
        b"zINSTREAM\0" + struct.pack(">I", 3) + b"aaa" + struct.pack(">I", 0))


@pytest.mark.parametrize("reply, expected", [
    (b"stream: OK\0", ("clean", None)),
    (b"stream: Eicar-Signature FOUND\0", ("infected", "Eicar-Signature")),
    (b"1: stream: Win.Test.EICAR_HDB-1 FOUND\0", ("infected", "Win.Test.EICAR_HDB-1")),
    (b"stream: Bad\r\nName\x01 FOUND\0", ("infected", "BadName")),
    (b"INSTREAM size limit exceeded. ERROR\0", ("error", "INSTREAM size limit exceeded. ERROR")),
    (b"", ("error", "empty reply")),
])
def test_replies_are_parsed(reply, expected):
    """OK is clean, 'NAME FOUND' infected (name made safe for an SMTP reply), anything else an error."""
    assert parse_reply(reply) == expected


def test_options_are_checked():
    """Bad options stop start-up: an unknown on_failure, no address, a bad port."""
    with pytest.raises(ValueError, match="on_failure"):
        ClamdCheck(socket="/x", on_failure="maybe")
    with pytest.raises(ValueError, match="socket"):
        ClamdCheck()
    with pytest.raises(ValueError, match="port"):
        ClamdCheck(host="127.0.0.1", port="99999")


def check(**options) -> ClamdCheck:
    reactor = ensure_running()
    return ClamdCheck(CheckContext(reactor=reactor, clock=reactor), **options)


def test_a_refused_connection_tempfails_or_passes_per_on_failure(tmp_path):
    """Daemon down: 451 4.7.1 by default, accepted with on_failure=accept (TCP and unix socket)."""
    port = str(free_port())
    verdict = run_in_reactor(check(host="127.0.0.1", port=port).body, SESSION, ENVELOPE, MESSAGE)
    assert (verdict.code, verdict.enhanced) == (451, "4.7.1")
    missing = str(tmp_path / "no.sock")
    assert run_in_reactor(check(socket=missing).body, SESSION, ENVELOPE, MESSAGE).code == 451
    assert run_in_reactor(check(socket=missing, on_failure="accept").body, SESSION, ENVELOPE, MESSAGE) is None


def test_a_silent_daemon_times_out_with_451():
    """A daemon that accepts but never answers costs `timeout` seconds, then 451 4.7.1."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        port = str(silent.getsockname()[1])
        verdict = run_in_reactor(check(host="127.0.0.1", port=port, timeout="0.3").body,
                                 SESSION, ENVELOPE, MESSAGE, timeout=10)
    assert (verdict.code, verdict.enhanced) == (451, "4.7.1")


def test_plugins_are_published_as_entry_points():
    """setup.cfg publishes check.clamd and check.spamd in group mailserverd.checks (after
    `pip install -e .`, which bin/_venv reruns when setup.cfg changes)."""
    names = {entry.name: entry.value for entry in metadata.entry_points(group="mailserverd.checks")}
    assert names.get("check.clamd") == "plugins.clamd:ClamdCheck"
    assert names.get("check.spamd") == "plugins.spamd:SpamdCheck"


def test_load_by_name_in_a_fresh_interpreter_outside_the_checkout(tmp_path):
    """load_check('check.clamd') works from any directory: the plugins package is installed."""
    code = ("from mailserverd.checks.base import load_check; "
            "print(type(load_check('check.clamd', socket='/x')).__name__, "
            "type(load_check('check.spamd', host='127.0.0.1')).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    assert out.stdout.split() == ["ClamdCheck", "SpamdCheck"]
