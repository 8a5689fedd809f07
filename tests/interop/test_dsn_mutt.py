"""mutt reads our DSNs as delivery reports.

mutt runs on a pseudo-terminal (it is a curses program) with no system or
user configuration (-n, HOME in the test directory) and `set pager=cat`, on
an mbox holding one DSN from outbound/dsn.py; pushed keys display the
message and quit. What mutt writes is the rendered message: its attachment
banners name the report's parts and the delivery-status fields are shown
inline as text. Skipped when mutt is not installed.
"""

from __future__ import annotations

import re
import shutil

import pytest

from tests.support.terminal import run_on_pty

from mailserverd.outbound.dsn import build_dsn
from mailserverd.outbound.types import RecipientResult

MUTT = shutil.which("mutt")
pytestmark = pytest.mark.skipif(MUTT is None, reason="mutt is not installed")

RUN_TIMEOUT = 10.0
ORIGINAL = (b"From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: lunch plans\r\n"
            b"Message-ID: <lunch-1@a.test>\r\nDate: Fri, 15 Jan 2027 08:00:00 +0000\r\n\r\n"
            b"Shall we meet at noon?\r\n")
MUTTRC = """\
set pager=cat
set wait_key=no
set prompt_after=no
set mbox_type=mbox
set quit=yes
set move=no
set confirmappend=no
set header_cache=""
set implicit_autoview=no
"""
ANSI = re.compile(rb"\x1b(?:\[[0-9;?]*[A-Za-z]|\([A-Z0-9]|[=>])")


def a_dsn(ret=None) -> bytes:
    result = RecipientResult(recipient="bob@b.test", status="failed", code=550, enhanced="5.1.1",
                             text="no such user here", remote_host="mx1.b.test", remote_ip="127.0.0.3")
    return build_dsn(reporting_mta="mx.a.test", original=ORIGINAL, sender="alice@a.test", results=[result],
                     queued_at=1_800_000_000.0, now=1_800_000_090.0, ret=ret, envid="ENV-7",
                     orcpts={"bob@b.test": "rfc822;bob@b.test"})


def mutt_renders(tmp_path, message: bytes) -> str:
    """mutt's screen output (escape sequences removed) after displaying `message` with pager=cat."""
    mbox = tmp_path / "mbox"
    # an mbox keeps LF line ends; ">From " quoting is not needed: no body line starts with "From "
    mbox.write_bytes(b"From MAILER-DAEMON Fri Jan 15 08:01:30 2027\n" + message.replace(b"\r\n", b"\n") + b"\n")
    (tmp_path / "muttrc").write_text(MUTTRC + f'set folder="{tmp_path}"\nset spoolfile="{mbox}"\n')
    status, output = run_on_pty([MUTT, "-n", "-F", str(tmp_path / "muttrc"), "-f", str(mbox),
                                 "-e", "push <display-message><quit>"], tmp_path, RUN_TIMEOUT,
                                rows=60, cols=200)
    if status is None:
        pytest.fail(f"mutt did not finish within {RUN_TIMEOUT:.0f} s:\n{output[-2000:]!r}")
    return ANSI.sub(b"", bytes(output)).replace(b"\r", b"").decode("utf-8", "replace")


def test_mutt_shows_the_dsn_as_a_delivery_report(tmp_path):
    """mutt lists the DSN from the Mail Delivery System and renders its three parts: the
    notification text, the message/delivery-status report with its fields, the returned message."""
    screen = mutt_renders(tmp_path, a_dsn(ret="FULL"))
    assert "Undelivered Mail Returned to Sender" in screen
    assert "Mail Delivery System <MAILER-DAEMON@mx.a.test>" in screen
    assert "[-- Attachment #1: Notification --]" in screen
    assert "[-- Attachment #2: Delivery report --]" in screen
    assert "[-- Type: message/delivery-status, Encoding: 7bit" in screen
    for field in ("Reporting-MTA: dns; mx.a.test", "Original-Envelope-Id: ENV-7",
                  "Original-Recipient: rfc822;bob@b.test", "Final-Recipient: rfc822;bob@b.test",
                  "Action: failed", "Status: 5.1.1", "Remote-MTA: dns; mx1.b.test",
                  "Diagnostic-Code: smtp; 550 5.1.1 no such user here"):
        assert field in screen, field
    assert "[-- Type: message/rfc822" in screen and "Shall we meet at noon?" in screen
    assert "<bob@b.test>: failed; host mx1.b.test [127.0.0.3] said:" in screen


def test_mutt_shows_returned_headers_inline(tmp_path):
    """With the default RET (headers only) mutt shows the text/rfc822-headers part inline,
    and the original body is not there."""
    screen = mutt_renders(tmp_path, a_dsn())
    assert "[-- Type: text/rfc822-headers" in screen
    assert "Subject: lunch plans" in screen and "Shall we meet at noon?" not in screen
