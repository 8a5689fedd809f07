"""plugins/spamd.py without spamd: the spamc request, reply parsing, headers, verdicts from a
scripted daemon, and fail-safe when spamd is down."""

from __future__ import annotations

import socket
import threading

import pytest

from mailserverd.checks.base import CheckContext, Envelope, Session
from plugins.daemonclient import DaemonError
from plugins.spamd import SpamdCheck, SpamdResult, parse_reply, spam_headers, symbols_request
from tests.support.daemon import free_port
from tests.support.reactorthread import ensure_running, run_in_reactor

SESSION = Session(id="s1", mode="smtp", remote_ip="192.0.2.7", remote_port=4000, hostname="mx.test")
ENVELOPE = Envelope(id="e1", mail_from="a@remote.test", params=None)
MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"
SPAM_REPLY = (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 10\r\nSpam: True ; 1003.3 / 5.0\r\n\r\n"
              b"GTUBE,MISSING_DATE")


def test_symbols_request_carries_the_length_and_user():
    """spamd/PROTOCOL: 'SYMBOLS SPAMC/1.5', Content-length (required since 1.2), optional User."""
    assert symbols_request(b"abc", "nobody") == (b"SYMBOLS SPAMC/1.5\r\nContent-length: 3\r\n"
                                                  b"User: nobody\r\n\r\nabc")


def test_replies_are_parsed():
    """Spam flag, score, threshold and rule names; error codes and cut replies are DaemonError."""
    assert parse_reply(SPAM_REPLY) == SpamdResult(True, 1003.3, 5.0, ("GTUBE", "MISSING_DATE"))
    ham = b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; -1.9 / 5.0\r\n\r\n"
    assert parse_reply(ham) == SpamdResult(False, -1.9, 5.0, ())
    for bad in (b"SPAMD/1.0 76 Bad header line: x\r\n", b"SPAMD/1.1 0 EX_OK\r\nSpam: Tr", b"",
                b"HTTP/1.0 200"):
        with pytest.raises(DaemonError):
            parse_reply(bad)


def test_headers_follow_spamassassin():
    """X-Spam-Flag for spam, X-Spam-Status 'Yes, score=... required=... tests=...', X-Spam-Score."""
    headers = dict(spam_headers(SpamdResult(True, 7.3, 5.0, ("A", "B"))))
    assert headers == {"X-Spam-Flag": "YES", "X-Spam-Status": "Yes, score=7.3 required=5.0 tests=A,B",
                       "X-Spam-Score": "7.3"}


def scripted_daemon(reply: bytes):
    """A one-shot spamd stand-in on loopback: reads the request, answers `reply`, closes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve():
        connection, _ = server.accept()
        with connection:
            connection.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                data += connection.recv(4096)
            connection.sendall(reply)
        server.close()
    threading.Thread(target=serve, daemon=True).start()
    return str(server.getsockname()[1])


def check(**options) -> SpamdCheck:
    reactor = ensure_running()
    return SpamdCheck(CheckContext(reactor=reactor, clock=reactor), host="127.0.0.1", **options)


def test_spam_goes_to_junk_and_a_high_score_is_refused():
    """spamd's spam verdict quarantines with headers; reject_score refuses with 550 5.7.1."""
    verdict = run_in_reactor(check(port=scripted_daemon(SPAM_REPLY)).body, SESSION, ENVELOPE, MESSAGE)
    assert verdict.quarantined and ("X-Spam-Flag", "YES") in verdict.headers
    verdict = run_in_reactor(check(port=scripted_daemon(SPAM_REPLY), reject_score="15").body,
                             SESSION, ENVELOPE, MESSAGE)
    assert (verdict.code, verdict.enhanced) == (550, "5.7.1")


def test_ham_is_accepted_with_status_headers():
    """A ham verdict is accepted and still carries X-Spam-Status: No."""
    reply = b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; 0.4 / 5.0\r\n\r\nHTML_MESSAGE"
    verdict = run_in_reactor(check(port=scripted_daemon(reply)).body, SESSION, ENVELOPE, MESSAGE)
    assert verdict.action == "accept" and dict(verdict.headers)["X-Spam-Status"].startswith("No, score=0.4")


def test_daemon_down_or_confused_fails_safe():
    """Refused connection or an error reply: 451 4.7.1, or nothing with on_failure=accept."""
    port = str(free_port())
    assert run_in_reactor(check(port=port).body, SESSION, ENVELOPE, MESSAGE).code == 451
    assert run_in_reactor(check(port=port, on_failure="accept").body, SESSION, ENVELOPE, MESSAGE) is None
    error = scripted_daemon(b"SPAMD/1.0 76 Bad header line\r\n")
    assert run_in_reactor(check(port=error).body, SESSION, ENVELOPE, MESSAGE).code == 451


def test_large_messages_are_not_sent():
    """Past max_size the message is not scored (spamc's behaviour), so a down spamd does not matter."""
    port = str(free_port())
    assert run_in_reactor(check(port=port, max_size="10").body, SESSION, ENVELOPE, MESSAGE) is None


def test_options_are_checked():
    """reject_score must be a number, user a plain name."""
    with pytest.raises(ValueError, match="reject_score"):
        SpamdCheck(host="127.0.0.1", reject_score="high")
    with pytest.raises(ValueError, match="user"):
        SpamdCheck(host="127.0.0.1", user="a b\r\n")
