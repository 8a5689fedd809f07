"""The POP3 state machine, bytes in and replies out, no sockets."""

from __future__ import annotations

import base64

import pytest

from mailserverd.pop3 import replies
from mailserverd.pop3.events import (NEED_DATA, PAUSED, Close, Login, MachineConfig, Retrieve, StartTLS,
                                     Update)
from mailserverd.pop3.maildrop import Maildrop
from mailserverd.pop3.protocol import AUTHORIZATION, TRANSACTION, POP3Machine

MESSAGES = {
    11: b"Subject: one\r\n\r\nfirst body\r\n",
    12: b"Subject: two\r\n\r\n.\r\n.dot line\r\nlast\r\n",
    13: b"Subject: three\r\nX: y\r\n\r\nl1\r\nl2\r\nl3\r\n",
}


def maildrop() -> Maildrop:
    return Maildrop(777, [(1, 11, len(MESSAGES[11])), (5, 12, len(MESSAGES[12])),
                          (9, 13, len(MESSAGES[13]))])


def make(**overrides) -> POP3Machine:
    overrides.setdefault("plaintext_auth_without_tls", True)
    machine = POP3Machine(MachineConfig(hostname="mx.example.test", **overrides))
    machine.data_to_send()  # the greeting
    return machine


class Driver:
    """Answers requests the way server.py would, with fixed data; records them."""

    def __init__(self, machine, password="secret"):
        self.machine = machine
        self.password = password
        self.events = []

    def answer(self, event):
        machine = self.machine
        if isinstance(event, Login):
            if event.password == self.password:
                machine.login_succeeded(maildrop(), event.username)
            else:
                machine.login_failed(replies.AUTH_FAILED)
        elif isinstance(event, Retrieve):
            machine.message_read(MESSAGES[event.message_id])
        elif isinstance(event, Update):
            machine.update_done()
        elif isinstance(event, StartTLS):
            machine.tls_started()

    def run(self, data: bytes) -> bytes:
        """Feed data, answer every request; the bytes the client would read."""
        self.machine.receive_data(data)
        out = []
        while True:
            event = self.machine.next_event()
            out.append(self.machine.data_to_send())
            if event is NEED_DATA:
                break
            if event is PAUSED:
                if self.machine.waiting:
                    break
                continue
            self.events.append(event)
            if isinstance(event, Close):
                break
            self.answer(event)
        return b"".join(out)


def lines(data: bytes) -> list[str]:
    return data.decode("utf-8").split("\r\n")[:-1]


def logged_in() -> Driver:
    driver = Driver(make())
    driver.run(b"USER alice@example.test\r\nPASS secret\r\n")
    assert driver.machine.state == TRANSACTION
    return driver


# -- greeting, CAPA -----------------------------------------------------------

def test_greeting_is_ok_with_hostname():
    """RFC 1939 4: the session opens with a +OK greeting naming the server."""
    machine = POP3Machine(MachineConfig(hostname="mx.example.test"))
    assert machine.data_to_send() == b"+OK mx.example.test POP3 server ready\r\n"
    assert machine.state == AUTHORIZATION


def test_capa_lists_the_capabilities_before_login():
    """RFC 2449 5: CAPA lists TOP, UIDL, USER, SASL PLAIN, RESP-CODES, PIPELINING, AUTH-RESP-CODE, STLS."""
    out = lines(Driver(make(stls_available=True)).run(b"CAPA\r\n"))
    assert out[0].startswith("+OK")
    assert out[1:] == ["TOP", "UIDL", "USER", "SASL PLAIN", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE",
                       "STLS", "IMPLEMENTATION mailserverd", "."]


def test_capa_omits_user_and_sasl_when_plaintext_is_not_allowed():
    """Without TLS from a non-loopback peer, CAPA offers neither USER nor SASL, only STLS."""
    out = lines(Driver(make(plaintext_auth_without_tls=False, stls_available=True)).run(b"CAPA\r\n"))
    assert "USER" not in out and not any(line.startswith("SASL") for line in out)
    assert "STLS" in out


def test_capa_omits_stls_when_tls_is_active():
    """RFC 2595 4: STLS is not offered once TLS is on (pop3s)."""
    out = lines(Driver(make(stls_available=True, tls_active=True)).run(b"CAPA\r\n"))
    assert "STLS" not in out and "USER" in out


def test_capa_after_login_lists_no_login_capabilities():
    """In TRANSACTION, CAPA no longer lists USER, SASL or STLS."""
    driver = logged_in()
    out = lines(driver.run(b"CAPA\r\n"))
    assert out[1:] == ["TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE",
                       "IMPLEMENTATION mailserverd", "."]


# -- USER/PASS and AUTH ----------------------------------------------------------

def test_user_pass_emits_login_and_enters_transaction():
    """USER then PASS yields one Login request; +OK moves the session to TRANSACTION."""
    driver = Driver(make())
    out = lines(driver.run(b"USER alice@example.test\r\nPASS secret\r\n"))
    assert driver.events == [Login("USER", "alice@example.test", "secret")]
    assert out == ["+OK Send your password", "+OK Logged in, 3 messages (100 octets)"]
    assert driver.machine.state == TRANSACTION


def test_password_may_contain_spaces():
    """RFC 1939 7: PASS takes the rest of the line, spaces included."""
    driver = Driver(make(), password="two words ")
    driver.run(b"USER a@example.test\r\nPASS two words \r\n")
    assert driver.events[0].password == "two words "
    assert driver.machine.state == TRANSACTION


def test_wrong_password_answers_auth_code_and_stays_in_authorization():
    """A failed login answers -ERR [AUTH] Authentication failed and allows another try."""
    driver = Driver(make())
    out = lines(driver.run(b"USER a@example.test\r\nPASS wrong\r\n"))
    assert out[-1] == "-ERR [AUTH] Authentication failed"
    assert driver.machine.state == AUTHORIZATION
    driver.run(b"USER a@example.test\r\nPASS secret\r\n")
    assert driver.machine.state == TRANSACTION


def test_pass_without_user_is_an_error():
    """PASS with no USER before it is refused without a Login request."""
    driver = Driver(make())
    out = lines(driver.run(b"PASS secret\r\n"))
    assert out == ["-ERR Send USER first"] and driver.events == []


def test_user_and_pass_refused_without_tls_from_remote_peer():
    """Plaintext USER/PASS from a non-loopback peer without TLS gets -ERR [AUTH], no Login."""
    driver = Driver(make(plaintext_auth_without_tls=False))
    out = lines(driver.run(b"USER a@example.test\r\nPASS secret\r\n"))
    assert out == [replies.PLAINTEXT_REFUSED.decode().strip()] * 2
    assert driver.events == []


def test_auth_plain_with_initial_response():
    """RFC 5034 4: AUTH PLAIN with an initial response yields a Login with the decoded fields."""
    driver = Driver(make())
    response = base64.b64encode(b"\0alice@example.test\0secret").decode()
    out = lines(driver.run(f"AUTH PLAIN {response}\r\n".encode()))
    assert driver.events == [Login("PLAIN", "alice@example.test", "secret", "")]
    assert out[0].startswith("+OK Logged in")


def test_auth_plain_with_continuation():
    """RFC 5034 4: AUTH PLAIN alone gets an empty "+ " challenge; the next line is the response."""
    driver = Driver(make())
    assert driver.run(b"AUTH PLAIN\r\n") == b"+ \r\n"
    response = base64.b64encode(b"\0alice@example.test\0secret")
    out = lines(driver.run(response + b"\r\n"))
    assert out[0].startswith("+OK Logged in")


def test_auth_cancelled_with_star():
    """RFC 5034 4: a "*" response cancels the exchange with -ERR; commands work again after it."""
    driver = Driver(make())
    driver.run(b"AUTH PLAIN\r\n")
    assert lines(driver.run(b"*\r\n")) == ["-ERR Authentication cancelled"]
    assert lines(driver.run(b"CAPA\r\n"))[0].startswith("+OK")


def test_auth_plain_malformed_response_is_refused():
    """A response that is not base64 of authzid NUL authcid NUL password gets -ERR, no Login."""
    driver = Driver(make())
    out = lines(driver.run(b"AUTH PLAIN !!!notbase64\r\n"))
    assert out[0].startswith("-ERR") and driver.events == []
    out = lines(driver.run(b"AUTH PLAIN " + base64.b64encode(b"no-nuls") + b"\r\n"))
    assert out[0].startswith("-ERR") and driver.events == []


def test_auth_unknown_mechanism_refused():
    """An unsupported SASL mechanism gets -ERR."""
    out = lines(Driver(make()).run(b"AUTH CRAM-MD5\r\n"))
    assert out == ["-ERR Unsupported authentication mechanism"]


def test_auth_plain_refused_in_plaintext_from_remote():
    """AUTH PLAIN without TLS from a non-loopback peer gets -ERR [AUTH]."""
    out = lines(Driver(make(plaintext_auth_without_tls=False)).run(b"AUTH PLAIN\r\n"))
    assert out == [replies.PLAINTEXT_REFUSED.decode().strip()]


def test_bare_auth_lists_mechanisms():
    """A bare AUTH (RFC 1734 clients) lists PLAIN as a multi-line response."""
    assert lines(Driver(make()).run(b"AUTH\r\n")) == ["+OK Methods supported", "PLAIN", "."]


def test_too_many_auth_failures_close_the_session():
    """After max_auth_failures failed logins on one connection the session closes."""
    driver = Driver(make(max_auth_failures=2))
    driver.run(b"USER a\r\nPASS x\r\nUSER a\r\nPASS y\r\n")
    assert isinstance(driver.events[-1], Close)


def test_in_use_does_not_count_as_auth_failure():
    """A login refused with [IN-USE] leaves the credentials-failure count alone."""
    machine = make(max_auth_failures=1)
    machine.receive_data(b"USER a\r\nPASS secret\r\n")
    assert isinstance(machine.next_event(), Login)
    machine.login_failed(replies.IN_USE, credentials_rejected=False)
    assert machine.data_to_send().endswith(b"-ERR [IN-USE] Maildrop already locked by another session\r\n")
    assert machine.next_event() is NEED_DATA


def test_transaction_commands_refused_before_login():
    """STAT, RETR and friends in AUTHORIZATION get -ERR (RFC 1939 4)."""
    out = lines(Driver(make()).run(b"STAT\r\nRETR 1\r\nNOOP\r\n"))
    assert out == ["-ERR Command not valid in this state"] * 3


def test_apop_is_not_offered():
    """APOP is not implemented: it is an unknown command."""
    assert lines(Driver(make()).run(b"APOP alice 0123456789abcdef\r\n")) == ["-ERR Unknown command"]


# -- STLS -----------------------------------------------------------------------------

def test_stls_discards_pipelined_commands():
    """RFC 2595 4: bytes pipelined after STLS are discarded, never run as commands."""
    driver = Driver(make(stls_available=True))
    out = driver.run(b"STLS\r\nUSER alice\r\nPASS secret\r\n")
    assert out == b"+OK Begin TLS negotiation\r\n"
    assert driver.events == [StartTLS()]
    assert driver.machine.state == AUTHORIZATION and driver.machine.tls_active
    assert driver.run(b"") == b""  # nothing left to run


def test_stls_forgets_user():
    """STLS resets the authorization state: a USER given before TLS does not count after it."""
    driver = Driver(make(stls_available=True))
    driver.run(b"USER alice\r\n")
    driver.run(b"STLS\r\n")
    assert lines(driver.run(b"PASS secret\r\n")) == ["-ERR Send USER first"]


def test_stls_refused_when_tls_active():
    """STLS inside TLS gets -ERR."""
    assert lines(Driver(make(stls_available=True, tls_active=True)).run(b"STLS\r\n")) == \
        ["-ERR TLS already active"]


def test_stls_refused_after_login():
    """RFC 2595 4: STLS is only valid in AUTHORIZATION."""
    driver = Driver(make(stls_available=True))
    driver.run(b"USER a\r\nPASS secret\r\n")
    assert lines(driver.run(b"STLS\r\n")) == ["-ERR Command not valid in this state"]


# -- TRANSACTION ------------------------------------------------------------------------

def test_stat_counts_messages_and_octets():
    """RFC 1939 5: STAT answers "+OK count octets"."""
    assert lines(logged_in().run(b"STAT\r\n")) == ["+OK 3 100"]


def test_list_scan_listing_and_single():
    """LIST lists "number size" per message; LIST n answers one line."""
    driver = logged_in()
    assert lines(driver.run(b"LIST\r\n")) == ["+OK 3 messages (100 octets)", "1 28", "2 36", "3 36", "."]
    assert lines(driver.run(b"LIST 2\r\n")) == ["+OK 2 36"]


def test_uidl_is_uidvalidity_dash_uid():
    """RFC 1939 7: UIDL gives "uidvalidity-uid" per message, stable forever."""
    driver = logged_in()
    assert lines(driver.run(b"UIDL\r\n")) == ["+OK Unique-ID listing follows", "1 777-1", "2 777-5", "3 777-9", "."]
    assert lines(driver.run(b"UIDL 3\r\n")) == ["+OK 3 777-9"]


def test_retr_sends_stuffed_message_with_terminator():
    """RETR stuffs lines starting with "." (a lone "." included) and ends with ".\\r\\n"."""
    driver = logged_in()
    out = driver.run(b"RETR 2\r\n")
    assert out == b"+OK 36 octets\r\nSubject: two\r\n\r\n..\r\n..dot line\r\nlast\r\n.\r\n"
    assert driver.events[-1] == Retrieve(2, 12)


def test_top_sends_header_and_n_lines():
    """RFC 1939 7 TOP n k: the header, the blank line, then k body lines."""
    out = logged_in().run(b"TOP 3 2\r\n")
    assert out == b"+OK Top of message follows\r\nSubject: three\r\nX: y\r\n\r\nl1\r\nl2\r\n.\r\n"


def test_top_zero_lines_sends_only_header():
    """TOP n 0 gives the header and the blank line."""
    out = logged_in().run(b"TOP 1 0\r\n")
    assert out == b"+OK Top of message follows\r\nSubject: one\r\n\r\n.\r\n"


def test_dele_marks_and_hides_message():
    """DELE marks a message; it is then absent from STAT/LIST/UIDL and RETR/DELE of it fail."""
    driver = logged_in()
    assert lines(driver.run(b"DELE 1\r\n")) == ["+OK Message 1 deleted"]
    out = lines(driver.run(b"STAT\r\nLIST 1\r\nRETR 1\r\nDELE 1\r\nTOP 1 0\r\nUIDL 1\r\n"))
    assert out[0] == "+OK 2 72"
    assert out[1:] == ["-ERR Message 1 already deleted"] * 5
    assert lines(driver.run(b"LIST\r\n"))[1:] == ["2 36", "3 36", "."]


def test_rset_undeletes():
    """RSET unmarks every deleted message."""
    driver = logged_in()
    driver.run(b"DELE 1\r\nDELE 2\r\n")
    assert lines(driver.run(b"RSET\r\n")) == ["+OK Maildrop has 3 messages (100 octets)"]
    assert lines(driver.run(b"STAT\r\n")) == ["+OK 3 100"]


def test_quit_after_dele_requests_update_with_uids():
    """RFC 1939 6: QUIT in TRANSACTION asks to expunge the marked UIDs, then closes."""
    driver = logged_in()
    driver.run(b"DELE 1\r\nDELE 3\r\n")
    out = lines(driver.run(b"QUIT\r\n"))
    assert Update((1, 9)) in driver.events
    assert out == ["+OK Logging out, 2 messages deleted"]
    assert isinstance(driver.events[-1], Close)


def test_quit_without_dele_needs_no_update():
    """QUIT with nothing marked closes at once without an Update request."""
    driver = logged_in()
    assert lines(driver.run(b"QUIT\r\n")) == ["+OK Logging out"]
    assert not any(isinstance(event, Update) for event in driver.events)
    assert isinstance(driver.events[-1], Close)


def test_update_failure_answers_sys_temp():
    """If the expunge fails, QUIT answers -ERR [SYS/TEMP] and the session closes."""
    machine = logged_in().machine
    machine.receive_data(b"DELE 1\r\nQUIT\r\n")
    assert isinstance(machine.next_event(), Update)
    machine.update_failed()
    assert machine.data_to_send().endswith(b"-ERR [SYS/TEMP] Some deleted messages not removed, "
                                           b"try again later\r\n")
    assert isinstance(machine.next_event(), Close)


def test_quit_before_login_closes():
    """QUIT in AUTHORIZATION answers +OK and closes."""
    driver = Driver(make())
    assert lines(driver.run(b"QUIT\r\n")) == ["+OK Logging out"]
    assert isinstance(driver.events[-1], Close)


def test_noop():
    """NOOP answers +OK."""
    assert lines(logged_in().run(b"NOOP\r\n")) == ["+OK"]


# -- strict arguments ------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    b"RETR 0", b"RETR -1", b"RETR " + b"9" * 30, b"RETR 4", b"RETR", b"RETR 1 2", b"RETR abc",
    b"RETR +1", b"RETR 1.0", b"RETR  1", b"TOP 1 -1", b"TOP 1", b"TOP 1 x", b"TOP 0 1",
    b"LIST abc", b"LIST 1 2", b"LIST 0", b"DELE 0", b"DELE", b"UIDL x", b"STAT 1", b"NOOP x",
    b"RSET now", b"QUIT now", b"LIST " + b"1" * 11,
])
def test_bad_arguments_answer_err(command):
    """Malformed, out-of-range or surplus arguments answer -ERR and change nothing."""
    driver = logged_in()
    out = lines(driver.run(command + b"\r\n"))
    assert len(out) == 1 and out[0].startswith("-ERR"), out
    assert not any(isinstance(event, Retrieve) for event in driver.events)
    assert lines(driver.run(b"STAT\r\n")) == ["+OK 3 100"]


def test_unknown_command():
    """An unknown keyword answers -ERR Unknown command."""
    assert lines(logged_in().run(b"XYZZY\r\nLAST\r\n")) == ["-ERR Unknown command"] * 2


def test_keywords_are_case_insensitive():
    """RFC 1939 3: keywords are case-insensitive."""
    assert lines(logged_in().run(b"stat\r\nLiSt 1\r\n")) == ["+OK 3 100", "+OK 1 28"]


def test_bare_lf_ends_a_command():
    """A command ended by a bare LF is still understood."""
    assert lines(logged_in().run(b"STAT\n")) == ["+OK 3 100"]


def test_control_characters_refused():
    """A command line with a NUL or other control character gets -ERR."""
    assert lines(logged_in().run(b"STAT\x00\r\n")) == ["-ERR Invalid characters in command"]


def test_invalid_utf8_refused():
    """A command line that is not UTF-8 gets -ERR."""
    assert lines(Driver(make()).run(b"USER \xff\xfe\r\n")) == ["-ERR Invalid characters in command"]


def test_too_many_bad_commands_close_the_session():
    """After max_bad_commands errors the session is closed."""
    driver = Driver(make(max_bad_commands=3))
    out = lines(driver.run(b"FOO\r\nBAR\r\nBAZ\r\nCAPA\r\n"))
    assert out[-1] == "-ERR Too many bad commands, closing connection"
    assert isinstance(driver.events[-1], Close)


# -- line length ---------------------------------------------------------------------

def test_command_line_over_255_octets_is_refused():
    """RFC 2449 4: a command line over 255 octets (CRLF included) gets -ERR; the session goes on."""
    driver = logged_in()
    out = lines(driver.run(b"NOOP " + b"x" * 249 + b"\r\n"))  # 256 octets
    assert out == ["-ERR Line too long"]
    assert lines(driver.run(b"NOOP\r\n")) == ["+OK"]


def test_command_line_of_255_octets_is_parsed():
    """A 255-octet line is within the limit and parsed normally (here: a long USER name)."""
    driver = Driver(make())
    line = b"USER " + b"u" * 248 + b"\r\n"
    assert len(line) == 255
    assert lines(driver.run(line)) == ["+OK Send your password"]


def test_megabyte_line_refused_without_buffering_it():
    """A 1 MB line is thrown away as it arrives (never buffered) and answered -ERR."""
    driver = logged_in()
    for _ in range(20):
        driver.run(b"x" * 50_000)
        assert len(driver.machine._buffer) < 8192
    assert lines(driver.run(b"\r\nNOOP\r\n")) == ["-ERR Line too long", "+OK"]


def test_line_past_max_line_length_closes():
    """A line longer than limits.max_line_length ends the session."""
    driver = logged_in()
    driver.machine.config = MachineConfig(hostname="h", max_line_length=100_000)
    driver.run(b"x" * 50_000)
    out = lines(driver.run(b"x" * 60_000))
    assert out == ["-ERR Line too long"] and isinstance(driver.events[-1], Close)


def test_long_sasl_continuation_is_accepted():
    """RFC 5034 4: a SASL response line may exceed 255 octets."""
    driver = Driver(make(), password="p" * 600)
    driver.run(b"AUTH PLAIN\r\n")
    response = base64.b64encode(b"\0alice@example.test\0" + b"p" * 600)
    assert len(response) > 255
    assert lines(driver.run(response + b"\r\n"))[0].startswith("+OK Logged in")


# -- pipelining -----------------------------------------------------------------------

def test_pipelined_commands_answered_in_order():
    """RFC 2449 6.6: a pipelined batch gets its replies in command order, RETR bodies included."""
    driver = Driver(make())
    out = driver.run(b"USER a\r\nPASS secret\r\nSTAT\r\nRETR 1\r\nLIST 1\r\nDELE 1\r\nQUIT\r\n")
    assert out == (b"+OK Send your password\r\n+OK Logged in, 3 messages (100 octets)\r\n+OK 3 100\r\n"
                   b"+OK 28 octets\r\nSubject: one\r\n\r\nfirst body\r\n.\r\n+OK 1 28\r\n"
                   b"+OK Message 1 deleted\r\n+OK Logging out, 1 messages deleted\r\n")


def test_nothing_parsed_while_a_request_is_pending():
    """While a Login waits for its answer, next_event says PAUSED and later commands wait."""
    machine = make()
    machine.receive_data(b"USER a\r\nPASS secret\r\nSTAT\r\n")
    assert isinstance(machine.next_event(), Login)
    assert machine.next_event() is PAUSED
    assert machine.data_to_send() == b"+OK Send your password\r\n"
    assert machine.next_event() is PAUSED
    machine.login_succeeded(maildrop(), "a")
    assert machine.next_event() is NEED_DATA
    assert machine.data_to_send() == b"+OK Logged in, 3 messages (100 octets)\r\n+OK 3 100\r\n"


def test_large_body_is_sent_in_bounded_chunks():
    """data_to_send(limit) hands a big body out a chunk at a time, and the chunks join to the stuffed body."""
    machine = logged_in().machine
    body = b"Subject: big\r\n\r\n" + b"".join(b".line %d\r\n" % i for i in range(100_000))
    machine.receive_data(b"RETR 1\r\n")
    assert isinstance(machine.next_event(), Retrieve)
    machine.message_read(body)
    chunks = []
    while machine.output_pending:
        chunk = machine.data_to_send(65536)
        assert len(chunk) <= 2 * 65536
        chunks.append(chunk)
    wire = b"".join(chunks)
    assert wire.startswith(b"+OK 28 octets\r\nSubject: big\r\n\r\n..line 0\r\n")
    assert wire.endswith(b"..line 99999\r\n.\r\n")
    assert wire.count(b"\r\n..line ") == 100_000
    assert len(chunks) > 10


def test_message_failure_answers_and_session_continues():
    """A body the store cannot read gets the given -ERR; later commands work."""
    machine = logged_in().machine
    machine.receive_data(b"RETR 1\r\nNOOP\r\n")
    assert isinstance(machine.next_event(), Retrieve)
    machine.message_failed(replies.READ_FAILED)
    assert machine.next_event() is NEED_DATA
    assert machine.data_to_send() == replies.READ_FAILED + b"+OK\r\n"


def test_timeout_close_sends_reply_between_commands():
    """close() on idle timeout queues the -ERR and yields Close."""
    machine = logged_in().machine
    machine.close(replies.TIMEOUT, "timeout")
    assert machine.data_to_send() == replies.TIMEOUT
    assert machine.next_event() == Close("timeout")


def test_timeout_close_mid_body_sends_no_reply():
    """close() while a body is half sent drops the rest instead of writing -ERR into the body."""
    machine = logged_in().machine
    machine.receive_data(b"RETR 1\r\n")
    machine.next_event()
    machine.message_read(b"x" * 300_000)
    machine.data_to_send(1000)
    machine.close(replies.TIMEOUT, "timeout")
    assert machine.data_to_send() == b""
    assert isinstance(machine.next_event(), Close)
