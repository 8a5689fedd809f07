"""check.clamd and check.spamd (plugins/) against the real ClamAV and SpamAssassin daemons
from Debian, started by the tests: clamd with a signature database made here (no freshclam),
spamd -L with Debian's shipped rules. Both fail safe when their daemon is stopped."""

from __future__ import annotations

import base64
import io
import mailbox
import os
import smtplib
import zipfile

import pytest

from mailserverd.checks.base import CheckContext, Envelope, Session, load_check
from tests.support.clamd import EICAR, ClamdFailed, ClamdServer, ClamdUnavailable, clamd_binary
from tests.support.reactorthread import ensure_running, run_in_reactor
from tests.support.spamd import GTUBE, SpamdFailed, SpamdServer, SpamdUnavailable, spamd_binary

DATA = os.path.join(os.path.dirname(__file__), "..", "data")
SESSION = Session(id="s1", mode="smtp", remote_ip="192.0.2.7", remote_port=4000, hostname="mx.test")
ENVELOPE = Envelope(id="e1", mail_from="a@remote.test", params=None)
HEADER = b"From: sender@remote.test\r\nTo: alice@example.test\r\nSubject: %s\r\nMIME-Version: 1.0\r\n"


def attachment(data: bytes, filename: str) -> bytes:
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (HEADER % b"file" + b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
            b"--XX\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--XX\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=" + filename.encode() + b"\r\n\r\n"
            + encoded + b"--XX--\r\n")


def zipped(data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("eicar.com", data)
    return out.getvalue()


def corpus_message(name: str, index: int) -> bytes:
    for number, message in enumerate(mailbox.mbox(os.path.join(DATA, name))):
        if number == index:
            return message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    raise IndexError(index)


def check(name: str, **options):
    reactor = ensure_running()
    return load_check(name, CheckContext(reactor=reactor, clock=reactor), **options)


def scan(check_, message: bytes):
    return run_in_reactor(check_.body, SESSION, ENVELOPE, message, timeout=60)


@pytest.fixture(scope="module")
def clamd(tmp_path_factory):
    """One clamd per module, on a unix socket and a loopback TCP port, test signatures only."""
    try:
        clamd_binary()
    except ClamdUnavailable as reason:
        pytest.skip(str(reason))
    server = ClamdServer(tmp_path_factory.mktemp("clamd"), tcp=True)
    try:
        server.start()
    except ClamdFailed as failure:
        pytest.fail(str(failure), pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def spamd(tmp_path_factory):
    """One spamd -L per module on a free loopback port (start-up takes a second or two)."""
    try:
        spamd_binary()
    except SpamdUnavailable as reason:
        pytest.skip(str(reason))
    server = SpamdServer(tmp_path_factory.mktemp("spamd"))
    try:
        server.start()
    except SpamdFailed as failure:
        pytest.fail(str(failure), pytrace=False)
    yield server
    server.stop()


# -- clamd ---------------------------------------------------------------------------

@pytest.mark.parametrize("message", [
    pytest.param(HEADER % b"raw" + b"\r\n" + EICAR + b"\r\n", id="raw"),
    pytest.param(attachment(EICAR, "eicar.com"), id="base64"),
    pytest.param(attachment(zipped(EICAR), "eicar.zip"), id="zip"),
])
def test_clamd_finds_eicar_over_instream(clamd, message):
    """clamd (its own MIME and zip handling) finds the test signature over a unix socket: 554 5.7.1."""
    verdict = scan(check("check.clamd", socket=clamd.socket_path), message)
    assert (verdict.code, verdict.enhanced) == (554, "5.7.1")
    assert "Test.Eicar" in verdict.text


def test_clamd_over_tcp_passes_clean_mail_and_refuses_eicar(clamd):
    """Over TCP too; a real clean message passes with no verdict."""
    plugin = check("check.clamd", host="127.0.0.1", port=str(clamd.port))
    assert scan(plugin, corpus_message("ham-200.mbox", 0)) is None
    assert scan(plugin, attachment(EICAR, "e.com")).code == 554


def test_clamd_size_limit_error_fails_safe(clamd):
    """A message past clamd's StreamMaxLength gets an ERROR reply: treated as a failure (451),
    unless max_size keeps what is sent under clamd's limit."""
    big = HEADER % b"big" + b"\r\n" + b"x" * (26 * 1024 * 1024)
    assert scan(check("check.clamd", socket=clamd.socket_path, max_size="30M"), big).code == 451
    assert scan(check("check.clamd", socket=clamd.socket_path, max_size="1M"), big) is None


def test_clamd_stopped_gives_451_or_the_configured_pass(clamd):
    """clamd down: 451 4.7.1 by default, accepted unchecked with on_failure=accept."""
    clamd.stop()
    try:
        verdict = scan(check("check.clamd", socket=clamd.socket_path), attachment(EICAR, "e.com"))
        assert (verdict.code, verdict.enhanced) == (451, "4.7.1")
        tcp = check("check.clamd", host="127.0.0.1", port=str(clamd.port), on_failure="accept")
        assert scan(tcp, attachment(EICAR, "e.com")) is None
    finally:
        clamd.start()


# -- spamd ---------------------------------------------------------------------------

def test_spamd_scores_gtube_and_corpus_spam_high_and_ham_low(spamd):
    """GTUBE and an obvious corpus spam go to Junk with SpamAssassin's headers; a corpus ham is
    accepted with X-Spam-Status: No."""
    plugin = check("check.spamd", host="127.0.0.1", port=str(spamd.port))
    gtube = scan(plugin, HEADER % b"test" + b"\r\n" + GTUBE + b"\r\n")
    assert gtube.quarantined and float(dict(gtube.headers)["X-Spam-Score"]) > 100
    assert "GTUBE" in dict(gtube.headers)["X-Spam-Status"]
    spam = scan(plugin, corpus_message("spam-50.mbox", 0))
    assert spam.quarantined and ("X-Spam-Flag", "YES") in spam.headers
    ham = scan(plugin, corpus_message("ham-200.mbox", 0))
    assert ham.action == "accept" and dict(ham.headers)["X-Spam-Status"].startswith("No,")
    assert float(dict(ham.headers)["X-Spam-Score"]) < 2


def test_spamd_score_over_reject_score_is_refused(spamd):
    """reject_score: GTUBE (1000 points) is refused with 550 5.7.1."""
    plugin = check("check.spamd", host="127.0.0.1", port=str(spamd.port), reject_score="20")
    verdict = scan(plugin, HEADER % b"test" + b"\r\n" + GTUBE + b"\r\n")
    assert (verdict.code, verdict.enhanced) == (550, "5.7.1")


def test_spamd_over_a_unix_socket_then_stopped_fails_safe(tmp_path):
    """socket = PATH reaches spamd --socketpath (GTUBE goes to Junk); once spamd is stopped the
    same check answers 451 4.7.1, or accepts with on_failure=accept."""
    try:
        spamd_binary()
    except SpamdUnavailable as reason:
        pytest.skip(str(reason))
    server = SpamdServer(tmp_path, unix=True)
    server.start()
    plugin = check("check.spamd", socket=server.socket_path)
    lenient = check("check.spamd", socket=server.socket_path, on_failure="accept")
    try:
        verdict = scan(plugin, HEADER % b"t" + b"\r\n" + GTUBE + b"\r\n")
    finally:
        server.stop()
    assert verdict.quarantined and ("X-Spam-Flag", "YES") in verdict.headers
    down = scan(plugin, HEADER % b"x" + b"\r\nhello\r\n")
    assert (down.code, down.enhanced) == (451, "4.7.1")
    assert scan(lenient, HEADER % b"x" + b"\r\nhello\r\n") is None


# -- through the daemon, plugins loaded by name from the configuration ------------------

def test_daemon_loads_clamd_and_spamd_from_the_chain_and_refuses_eicar(clamd, spamd, mailserver_factory,
                                                                      tmp_path):
    """[checks] chain = ..., check.clamd, check.spamd with [check.clamd]/[check.spamd] options:
    EICAR gets 554 5.7.1 over smtplib; GTUBE is delivered to Junk with X-Spam-Flag."""
    server = mailserver_factory(listeners=("smtp",), extra_config={
        "checks": {"chain": "check.hops, check.clamd, check.spamd"},
        "check.clamd": {"socket": clamd.socket_path, "timeout": "20s"},
        "check.spamd": {"host": "127.0.0.1", "port": spamd.port},
    })
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=60) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("sender@remote.test", ["alice@example.test"], attachment(zipped(EICAR), "e.zip"))
        assert refused.value.smtp_code == 554 and refused.value.smtp_error.startswith(b"5.7.1")
        client.sendmail("sender@remote.test", ["alice@example.test"],
                        HEADER % b"gtube" + b"\r\n" + GTUBE + b"\r\n")
    out = tmp_path / "junk.mbox"
    server.ctl("user", "export", "alice@example.test", "--mailbox", "Junk", "-o", str(out))
    junk = [message for message in mailbox.mbox(str(out))]
    assert len(junk) == 1 and junk[0]["X-Spam-Flag"] == "YES"
    assert "clamd found Test.Eicar" in server.log
