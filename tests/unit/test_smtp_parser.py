"""The SMTP state machine, bytes in and replies out, no sockets."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserverd.smtp import replies
from mailserverd.smtp.data import MessageLimits
from mailserverd.smtp.events import (NEED_DATA, PAUSED, AuthAttempt, Close, Connected, MachineConfig,
                                     MailFrom, MessageReceived, MessageRefused, RcptTo, StartTLS)
from mailserverd.smtp.parser import SMTPMachine

LIMITS = MessageLimits(max_message_size=10_000, max_header_size=2_000, max_line_length=1_000)


def make(**overrides) -> SMTPMachine:
    config = MachineConfig(hostname="mx.example.test", limits=overrides.pop("limits", LIMITS), **overrides)
    machine = SMTPMachine(config)
    assert isinstance(machine.next_event(), Connected)
    machine.respond(machine.greeting())
    machine.data_to_send()
    return machine


def auto_answer(machine, event):
    if isinstance(event, MailFrom):
        machine.respond(replies.SENDER_OK)
    elif isinstance(event, RcptTo):
        machine.respond(replies.RECIPIENT_OK)
    elif isinstance(event, MessageReceived):
        machine.respond(replies.QUEUED)
    elif isinstance(event, AuthAttempt):
        if event.password == "secret":
            machine.respond(replies.AUTH_OK, account=event.username)
        else:
            machine.respond(replies.AUTH_FAILED)


def run(machine, data: bytes, answer=auto_answer):
    """Feed data, answer requests, return (events, reply lines)."""
    machine.receive_data(data)
    events = []
    while True:
        event = machine.next_event()
        if event is NEED_DATA or event is PAUSED:
            break
        events.append(event)
        if isinstance(event, (Close, StartTLS)):
            break
        answer(machine, event)
    return events, machine.data_to_send().decode("utf-8").splitlines()


def codes(lines):
    """"250 2.1.0 Sender OK" -> "250 2.1.0"; lines without an enhanced code -> "250"."""
    return [re.match(r"\d{3}(?:[ -][245]\.\d{1,3}\.\d{1,3}(?= |$))?", line).group(0).replace("-", " ")
            for line in lines]


def of_type(events, kind):
    return [event for event in events if isinstance(event, kind)]


TRANSACTION = b"EHLO client.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<b@local.test>\r\n"


# -- greeting, EHLO and sequencing ------------------------------------------

def test_first_event_is_connected_and_greeting_has_no_enhanced_code():
    """The session starts with a Connected request; the 220 greeting carries no enhanced code (RFC 2034)."""
    machine = SMTPMachine(MachineConfig(hostname="mx.example.test", limits=LIMITS))
    assert isinstance(machine.next_event(), Connected)
    assert machine.next_event() is PAUSED
    machine.respond(machine.greeting())
    assert machine.data_to_send() == b"220 mx.example.test ESMTP mailserverd\r\n"


def test_ehlo_inbound_advertises_exactly_the_working_extensions():
    """EHLO on the MX lists PIPELINING, SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, CHUNKING, STARTTLS and no AUTH (no DSN until bounces exist)."""
    _, lines = run(make(starttls=True), b"EHLO client.test\r\n")
    assert lines == ["250-mx.example.test", "250-PIPELINING", "250-SIZE 10000", "250-8BITMIME",
                     "250-SMTPUTF8", "250-ENHANCEDSTATUSCODES", "250-CHUNKING",
                     "250 STARTTLS"]


def test_ehlo_offers_auth_only_when_tls_is_on_or_plaintext_is_allowed():
    """AUTH PLAIN LOGIN appears after TLS, or before it only when plaintext auth is allowed (loopback)."""
    config = dict(starttls=True, auth_mechanisms=("PLAIN", "LOGIN"), require_auth=True)
    _, plain = run(make(**config), b"EHLO c\r\n")
    _, loopback = run(make(plaintext_auth_without_tls=True, **config), b"EHLO c\r\n")
    _, secure = run(make(tls_active=True, **config), b"EHLO c\r\n")
    assert not any("AUTH" in line for line in plain)
    assert loopback[-1] == "250 AUTH PLAIN LOGIN"
    assert secure[-1] == "250 AUTH PLAIN LOGIN" and not any("STARTTLS" in line for line in secure)


def test_helo_gets_one_line_and_parameters_after_helo_are_refused():
    """HELO is answered with one line; ESMTP parameters after HELO (not EHLO) get 555 5.5.4."""
    _, lines = run(make(), b"HELO client.test\r\nMAIL FROM:<a@b.test> SIZE=10\r\n")
    assert lines == ["250 mx.example.test", "555 5.5.4 Parameters need EHLO"]


def test_mail_before_helo_is_a_sequence_error():
    """MAIL before HELO/EHLO gets 503 5.5.1."""
    _, lines = run(make(), b"MAIL FROM:<a@b.test>\r\n")
    assert codes(lines) == ["503 5.5.1"]


def test_mail_before_auth_on_submission_needs_authentication():
    """On submission MAIL before AUTH gets 530 5.7.0."""
    machine = make(auth_mechanisms=("PLAIN", "LOGIN"), require_auth=True, tls_active=True)
    _, lines = run(machine, b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n")
    assert codes(lines)[-1] == "530 5.7.0"


def test_nested_mail_and_rcpt_without_mail_are_sequence_errors():
    """A second MAIL inside a transaction, and RCPT without MAIL, get 503 5.5.1."""
    _, lines = run(make(), b"EHLO c\r\nRCPT TO:<b@local.test>\r\nMAIL FROM:<a@b.test>\r\nMAIL FROM:<a@b.test>\r\n")
    assert codes(lines)[-3:] == ["503 5.5.1", "250 2.1.0", "503 5.5.1"]


def test_data_without_accepted_recipient_gets_554():
    """DATA after MAIL with every RCPT refused gets 554 5.5.1 (RFC 5321 3.3)."""
    def refuse_rcpt(machine, event):
        if isinstance(event, RcptTo):
            machine.respond(replies.UNKNOWN_USER)
        else:
            auto_answer(machine, event)
    _, lines = run(make(), TRANSACTION + b"DATA\r\n", refuse_rcpt)
    assert codes(lines)[-2:] == ["550 5.1.1", "554 5.5.1"]


def test_every_reply_after_the_greeting_carries_an_enhanced_code():
    """Every reply except EHLO/HELO lines and the 354 prompt starts with an RFC 3463 code."""
    script = (TRANSACTION + b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nNOOP\r\nRSET\r\nVRFY a\r\nEXPN a\r\n"
              b"HELP\r\nFOO\r\nDATA x\r\nQUIT\r\n")
    _, lines = run(make(), script)
    assert lines[6] == "250 CHUNKING"  # the end of the EHLO reply
    for line in lines[7:]:
        if line.startswith("354"):
            continue
        assert re.match(r"\d{3} [245]\.\d{1,3}\.\d{1,3} ", line), line


# -- pipelining ------------------------------------------------------------

def test_pipelined_commands_wait_for_each_answer_in_order():
    """While MAIL's answer is pending nothing further is parsed; replies come out in command order."""
    machine = make()
    machine.receive_data(TRANSACTION + b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nNOOP\r\n")
    while not isinstance(machine.next_event(), MailFrom):
        pass
    assert machine.next_event() is PAUSED
    assert machine.data_to_send().count(b"\r\n") == 7  # only the EHLO reply so far
    machine.respond(replies.SENDER_OK)
    rcpt = machine.next_event()
    assert isinstance(rcpt, RcptTo) and machine.next_event() is PAUSED
    machine.respond(replies.RECIPIENT_OK)
    message = machine.next_event()
    assert isinstance(message, MessageReceived) and message.body == b"Subject: x\r\n\r\nbody\r\n"
    assert machine.next_event() is PAUSED
    machine.respond(replies.QUEUED)
    assert machine.next_event() is NEED_DATA
    lines = machine.data_to_send().decode().splitlines()
    assert codes(lines) == ["250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "250 2.0.0"]


def test_rejected_mail_leaves_no_transaction_for_pipelined_rcpt():
    """A refused MAIL opens no transaction, so the pipelined RCPT gets 503 5.5.1."""
    def refuse_mail(machine, event):
        machine.respond(replies.RATE_LIMITED if isinstance(event, MailFrom) else replies.RECIPIENT_OK)
    events, lines = run(make(), TRANSACTION, refuse_mail)
    assert codes(lines)[-2:] == ["450 4.7.1", "503 5.5.1"] and not of_type(events, RcptTo)


# -- command lines -------------------------------------------------------------

def test_command_line_over_512_octets_gets_500_and_session_continues():
    """A command line longer than 512 octets (RFC 5321 4.5.3.1.4) gets 500 5.5.2; the next command works."""
    _, lines = run(make(), b"NOOP " + b"x" * 510 + b"\r\nNOOP\r\n")
    assert codes(lines) == ["500 5.5.2", "250 2.0.0"]


def test_endless_command_line_is_not_buffered_and_is_refused_once():
    """A line without end is discarded as it arrives (bounded memory) and answered once with 500 5.5.2."""
    machine = make()
    for _ in range(50):
        run(machine, b"A" * 10_000)
        assert len(machine._buffer) <= 20_000
    _, lines = run(machine, b"tail\r\nNOOP\r\n")
    assert codes(lines) == ["500 5.5.2", "250 2.0.0"]


def test_unknown_and_unimplemented_commands():
    """Unknown verbs get 500 5.5.2, known-but-unimplemented ones (TURN, ETRN) 502 5.5.1."""
    _, lines = run(make(), b"FOO\r\nTURN\r\nETRN x\r\n")
    assert codes(lines) == ["500 5.5.2", "502 5.5.1", "502 5.5.1"]


def test_control_characters_and_invalid_utf8_in_commands_get_500():
    """NUL, bare CR inside a line, and invalid UTF-8 in a command get 500 5.5.2."""
    _, lines = run(make(), b"NOOP \x00\r\nNO\rOP\r\nNOOP \xff\r\n")
    assert codes(lines) == ["500 5.5.2"] * 3


def test_vrfy_reveals_nothing_and_expn_is_refused():
    """VRFY gets 252 2.5.0 whatever the name; EXPN gets 502 5.5.1."""
    _, lines = run(make(), b"VRFY alice\r\nVRFY nobody\r\nEXPN staff\r\n")
    assert lines[0] == lines[1] and codes(lines) == ["252 2.5.0", "252 2.5.0", "502 5.5.1"]


@pytest.mark.parametrize("verb", [b"GET / HTTP/1.1", b"POST /x HTTP/1.0", b"CONNECT a:25 HTTP/1.1",
                                  b"HEAD / HTTP/1.1", b"PUT /x HTTP/1.1"])
def test_http_request_closes_the_session_at_once(verb):
    """An HTTP request line ends the session immediately; the following lines are never read."""
    events, lines = run(make(), verb + b"\r\nHost: x\r\n\r\nMAIL FROM:<a@b.test>\r\n")
    assert isinstance(events[-1], Close) and len(lines) == 1 and lines[0].startswith("221 2.7.0")


def test_too_many_bad_commands_closes_with_421():
    """The max_bad_commands-th error reply is followed by 421 4.7.0 and the session closes."""
    events, lines = run(make(max_bad_commands=3), b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n")
    assert codes(lines) == ["500 5.5.2", "500 5.5.2", "500 5.5.2", "421 4.7.0"]
    assert isinstance(events[-1], Close)


def test_quit_says_bye_and_closes():
    """QUIT gets 221 2.0.0 and a Close event."""
    events, lines = run(make(), b"QUIT\r\nNOOP\r\n")
    assert codes(lines) == ["221 2.0.0"] and events == [Close("QUIT")]


def test_554_greeting_serves_only_quit():
    """After a 554 greeting every command but QUIT gets 503 5.5.1 (RFC 5321 3.1)."""
    machine = SMTPMachine(MachineConfig(hostname="mx", limits=LIMITS))
    machine.next_event()
    machine.respond(replies.Reply(554, "5.7.1", "No service for you"))
    _, lines = run(machine, b"EHLO c\r\nQUIT\r\n")
    assert codes(lines) == ["554 5.7.1", "503 5.5.1", "221 2.0.0"]


def test_421_answer_closes_the_session():
    """An application answer with code 421 closes the session after it is sent."""
    def busy(machine, event):
        machine.respond(replies.Reply(421, "4.3.2", "Shutting down"))
    events, lines = run(make(), b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nNOOP\r\n", busy)
    assert codes(lines)[-1] == "421 4.3.2" and isinstance(events[-1], Close)


# -- MAIL and RCPT parameters ------------------------------------------------------

def test_mail_parameters_are_parsed():
    """SIZE, BODY, SMTPUTF8, RET, ENVID and AUTH are parsed into MailParams."""
    events, _ = run(make(), b"EHLO c\r\nMAIL FROM:<a@b.test> SIZE=100 BODY=8BITMIME SMTPUTF8 RET=HDRS "
                            b"ENVID=QQ+2Bx AUTH=<>\r\n")
    params = of_type(events, MailFrom)[0].params
    assert (params.size, params.body, params.smtputf8, params.ret, params.envid, params.auth) == \
        (100, "8BITMIME", True, "HDRS", "QQ+x", "<>")


def test_declared_size_over_the_limit_gets_552():
    """MAIL FROM with SIZE above the limit gets 552 5.3.4 (RFC 1870 6.1)."""
    _, lines = run(make(), b"EHLO c\r\nMAIL FROM:<a@b.test> SIZE=10001\r\n")
    assert codes(lines)[-1] == "552 5.3.4"


@pytest.mark.parametrize("params, expected", [
    (b"FOO=1", "555 5.5.4"), (b"BODY=BINARYMIME", "555 5.5.4"), (b"SIZE=1 SIZE=2", "501 5.5.4"),
    (b"SIZE=abc", "501 5.5.4"), (b"RET=ALL", "501 5.5.4"), (b"ENVID=a=b", "501 5.5.4"),
])
def test_bad_mail_parameters_get_precise_errors(params, expected):
    """Unknown parameters get 555 5.5.4; malformed or duplicate ones 501 5.5.4."""
    _, lines = run(make(), b"EHLO c\r\nMAIL FROM:<a@b.test> " + params + b"\r\n")
    assert codes(lines)[-1] == expected


def test_rcpt_dsn_parameters_are_parsed():
    """NOTIFY and ORCPT (RFC 3461) are parsed into RcptParams."""
    events, _ = run(make(), b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@local.test> NOTIFY=SUCCESS,DELAY "
                            b"ORCPT=rfc822;b+40local.test\r\n")
    params = of_type(events, RcptTo)[0].params
    assert params.notify == ("SUCCESS", "DELAY") and params.orcpt == ("rfc822", "b@local.test")
    assert of_type(events, MailFrom)[0].sender is None


@pytest.mark.parametrize("notify", [b"NEVER,SUCCESS", b"SOMETIMES", b"SUCCESS,SUCCESS"])
def test_bad_notify_values_get_501(notify):
    """NOTIFY=NEVER cannot be combined, and only SUCCESS, FAILURE, DELAY exist."""
    _, lines = run(make(), b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@l.test> NOTIFY=" + notify + b"\r\n")
    assert codes(lines)[-1] == "501 5.5.4"


def test_bare_postmaster_is_accepted_as_a_recipient():
    """RCPT TO:<Postmaster> without a domain is a valid recipient (RFC 5321 4.1.1.3)."""
    events, _ = run(make(), b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\n")
    assert of_type(events, RcptTo)[0].recipient.local == "postmaster"


def test_utf8_address_needs_smtputf8():
    """A non-ASCII address without SMTPUTF8 gets 553 5.6.7; with SMTPUTF8 it is accepted."""
    _, lines = run(make(), "EHLO c\r\nMAIL FROM:<jösé@b.test>\r\n".encode())
    events, _ = run(make(), "EHLO c\r\nMAIL FROM:<jösé@b.test> SMTPUTF8\r\n".encode())
    assert codes(lines)[-1] == "553 5.6.7"
    assert of_type(events, MailFrom)[0].sender.local == "jösé"


def test_bad_address_syntax_gets_501():
    """Malformed paths get 501 with 5.1.7 (sender) or 5.1.3 (recipient)."""
    _, lines = run(make(), b"EHLO c\r\nMAIL FROM:<a b@c>\r\nMAIL FROM:a@b.test\r\nMAIL FROM:<a@b.test>\r\n"
                           b"RCPT TO:<@>\r\n")
    assert codes(lines)[-4:] == ["501 5.1.7", "501 5.5.4", "250 2.1.0", "501 5.1.3"]


def test_recipient_limit_gets_452():
    """RCPT beyond max_recipients gets 452 4.5.3 and is not passed on."""
    events, lines = run(make(max_recipients=2), b"EHLO c\r\nMAIL FROM:<>\r\n" + b"RCPT TO:<b@l.test>\r\n" * 3)
    assert codes(lines)[-1] == "452 4.5.3" and len(of_type(events, RcptTo)) == 2


# -- DATA ---------------------------------------------------------------------

def test_data_is_dot_unstuffed():
    """A leading dot is removed from every line that starts with one (RFC 5321 4.5.2)."""
    events, _ = run(make(), TRANSACTION + b"DATA\r\n..hidden\r\n...two\r\n.\r\n")
    assert of_type(events, MessageReceived)[0].body == b".hidden\r\n..two\r\n"


def test_empty_message_ends_at_first_dot_line():
    """DATA followed directly by "." is an empty message."""
    events, _ = run(make(), TRANSACTION + b"DATA\r\n.\r\n")
    assert of_type(events, MessageReceived)[0].body == b""


SMUGGLING = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n", b"\r\n\x00.\r\n"]


@pytest.mark.parametrize("sequence", SMUGGLING, ids=repr)
def test_smuggling_sequence_never_ends_data_or_starts_a_second_message(sequence):
    """Only <CRLF>.<CRLF> ends DATA: a smuggled second transaction stays inside the one message."""
    smuggled = (b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@local.test>\r\nDATA\r\n"
                b"From: ceo@local.test\r\n\r\nsmuggled\r\n")
    payload = TRANSACTION + b"DATA\r\nSubject: a\r\n\r\nhello" + sequence + smuggled + b".\r\nNOOP\r\n"
    events, lines = run(make(), payload)
    assert len(of_type(events, MailFrom)) == 1
    assert len(of_type(events, MessageReceived)) + len(of_type(events, MessageRefused)) == 1
    assert codes(lines)[-1] == "250 2.0.0"  # the NOOP after the one real end of data
    if b"\x00" in sequence:
        assert b"evil@attacker.test" in of_type(events, MessageReceived)[0].body
    else:
        assert of_type(events, MessageRefused)[0].reply == replies.BARE_NEWLINE
        assert codes(lines)[-2] == "550 5.5.2"


@pytest.mark.parametrize("split", [1, 2, 3, 7])
def test_data_split_into_tiny_reads_gives_the_same_message(split):
    """Feeding DATA a few bytes at a time (terminator split across reads) yields the same body."""
    body = b"Subject: x\r\n\r\n..a\r\nb\r\n.\r\n"
    machine = make()
    events, _ = run(machine, TRANSACTION + b"DATA\r\n")
    for index in range(0, len(body), split):
        more, _ = run(machine, body[index:index + split])
        events += more
    assert of_type(events, MessageReceived)[0].body == b"Subject: x\r\n\r\n.a\r\nb\r\n"


def test_overlong_data_line_keeps_reading_to_the_end_and_rejects_once():
    """A DATA line over the cap never returns to command mode: commands after it stay body; one 552."""
    payload = (TRANSACTION + b"DATA\r\nSubject: x\r\n\r\n" + b"y" * 5_000 + b"\r\n"
               b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<v@local.test>\r\n.\r\nNOOP\r\n")
    events, lines = run(make(), payload)
    assert len(of_type(events, MailFrom)) == 1 and not of_type(events, MessageReceived)
    assert codes(lines)[-2:] == ["552 5.3.4", "250 2.0.0"]


def test_overlong_line_fed_in_pieces_is_rejected_without_buffering_it():
    """An endless DATA line is consumed as it arrives (bounded buffer) and rejected once at the end."""
    machine = make()
    run(machine, TRANSACTION + b"DATA\r\n")
    for _ in range(20):
        run(machine, b"z" * 999)
        assert len(machine._buffer) < 10
    _, lines = run(machine, b"\r\n.\r\n")
    assert codes(lines) == ["552 5.3.4"]


def test_message_over_size_limit_is_read_to_the_end_then_refused():
    """A message larger than max_message_size gets 552 5.3.4 after the real end of data."""
    lines_of_body = b"".join(b"line %05d\r\n" % n for n in range(2_000))
    events, lines = run(make(), TRANSACTION + b"DATA\r\n\r\n" + lines_of_body + b".\r\nNOOP\r\n")
    assert codes(lines)[-2:] == ["552 5.3.4", "250 2.0.0"]
    assert of_type(events, MessageRefused)[0].reply == replies.MESSAGE_TOO_BIG


def test_header_block_over_limit_is_refused():
    """A header section larger than max_header_size gets 552 5.3.4."""
    header = b"".join(b"X-Filler-%04d: %s\r\n" % (n, b"v" * 40) for n in range(100))
    _, lines = run(make(), TRANSACTION + b"DATA\r\n" + header + b"\r\nbody\r\n.\r\n")
    assert codes(lines)[-1] == "552 5.3.4"


def test_transaction_ends_after_the_message():
    """After a delivered message a new MAIL is accepted (no nested-MAIL error)."""
    _, lines = run(make(), TRANSACTION + b"DATA\r\nx\r\n.\r\nMAIL FROM:<>\r\n")
    assert codes(lines)[-1] == "250 2.1.0"


# -- BDAT (RFC 3030) ---------------------------------------------------------------

def test_bdat_chunks_form_one_message():
    """BDAT chunks are joined; each non-last chunk gets 250; BDAT LAST delivers."""
    events, lines = run(make(), TRANSACTION + b"BDAT 12\r\nSubject: x\r\nBDAT 9 LAST\r\n\r\nhello\r\n")
    assert of_type(events, MessageReceived)[0] == MessageReceived(b"Subject: x\r\n\r\nhello\r\n", chunked=True)
    assert codes(lines)[-2:] == ["250 2.0.0", "250 2.0.0"]


def test_bdat_content_is_never_read_as_commands():
    """Bytes counted by BDAT are data even when they look like commands or a DATA terminator."""
    chunk = b"\r\n.\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@l.test>\r\nDATA\r\n"
    events, _ = run(make(), TRANSACTION + b"BDAT %d LAST\r\n" % len(chunk) + chunk)
    assert len(of_type(events, MailFrom)) == 1 and of_type(events, MessageReceived)[0].body == chunk


def test_bdat_without_transaction_consumes_its_bytes_and_fails():
    """BDAT with no MAIL gets 503 5.5.1 after its bytes are skipped, so they never run as commands."""
    events, lines = run(make(), b"EHLO c\r\nBDAT 22\r\nMAIL FROM:<e@x.test>\r\nNOOP\r\n")
    assert codes(lines)[-2:] == ["503 5.5.1", "250 2.0.0"] and not of_type(events, MailFrom)


def test_bdat_over_size_limit_is_skipped_and_refused():
    """A BDAT chunk past max_message_size is consumed and refused with 552 5.3.4; the transaction ends."""
    events, lines = run(make(), TRANSACTION + b"BDAT 10001 LAST\r\n" + b"x" * 10_001 + b"RCPT TO:<c@l.test>\r\n")
    assert codes(lines)[-2:] == ["552 5.3.4", "503 5.5.1"]


def test_data_after_bdat_in_one_transaction_is_refused():
    """DATA after a BDAT chunk in the same transaction gets 503 5.5.1 (RFC 3030 3)."""
    _, lines = run(make(), TRANSACTION + b"BDAT 3\r\nabcDATA\r\n")
    assert codes(lines)[-1] == "503 5.5.1"


def test_bdat_with_bare_newline_is_refused():
    """A message sent with BDAT obeys the same bare CR/LF rule as DATA: 550 5.5.2."""
    _, lines = run(make(), TRANSACTION + b"BDAT 10 LAST\r\nSubj\nx\r\n\r\n")
    assert codes(lines)[-1] == "550 5.5.2"


def test_bdat_syntax_error_closes_the_session():
    """BDAT without a valid size cannot be skipped, so the session closes after 501 5.5.4."""
    events, lines = run(make(), TRANSACTION + b"BDAT many\r\nMAIL FROM:<e@x.test>\r\n")
    assert codes(lines)[-1] == "501 5.5.4" and isinstance(events[-1], Close)


# -- STARTTLS (RFC 3207) -----------------------------------------------------------

def test_starttls_discards_pipelined_bytes_and_resets_state():
    """Bytes after STARTTLS are dropped; after TLS, EHLO is needed again and STARTTLS is no longer offered."""
    machine = make(starttls=True)
    events, lines = run(machine, b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nSTARTTLS\r\nRSET\r\nMAIL FROM:<x@y.test>\r\n")
    assert isinstance(events[-1], StartTLS) and codes(lines)[-1] == "220 2.0.0"
    assert machine.next_event() is PAUSED
    machine.tls_started()
    events, lines = run(machine, b"MAIL FROM:<a@b.test>\r\nEHLO c\r\nSTARTTLS\r\n")
    assert codes(lines)[0] == "503 5.5.1" and "250-STARTTLS" not in lines
    assert codes(lines)[-1] == "503 5.5.1" and not of_type(events, MailFrom)


def test_starttls_forgets_authentication():
    """AUTH state from before STARTTLS is discarded (RFC 3207 4.2)."""
    machine = make(starttls=True, auth_mechanisms=("PLAIN",), plaintext_auth_without_tls=True, require_auth=True)
    run(machine, b"EHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    assert machine.authenticated == "alice"
    run(machine, b"STARTTLS\r\n")
    machine.tls_started()
    _, lines = run(machine, b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n")
    assert machine.authenticated is None and codes(lines)[-1] == "530 5.7.0"


def test_starttls_not_offered_gets_502():
    """STARTTLS where TLS is not available gets 502 5.5.1."""
    _, lines = run(make(), b"EHLO c\r\nSTARTTLS\r\n")
    assert codes(lines)[-1] == "502 5.5.1"


# -- AUTH (RFC 4954) ---------------------------------------------------------------

SUBMISSION = dict(auth_mechanisms=("PLAIN", "LOGIN"), require_auth=True, tls_active=True)


def test_auth_plain_with_initial_response():
    """AUTH PLAIN with an initial response yields AuthAttempt; success is 235 2.7.0."""
    events, lines = run(make(**SUBMISSION), b"EHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    assert of_type(events, AuthAttempt) == [AuthAttempt("PLAIN", "alice", "secret")]
    assert codes(lines)[-1] == "235 2.7.0"


def test_auth_login_exchange():
    """AUTH LOGIN asks Username: then Password: in base64 and yields AuthAttempt."""
    events, lines = run(make(**SUBMISSION), b"EHLO c\r\nAUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\n")
    assert lines[-3:] == ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", "235 2.7.0 Authentication successful"]
    assert of_type(events, AuthAttempt) == [AuthAttempt("LOGIN", "alice", "secret")]


def test_auth_plain_without_initial_response_gets_empty_challenge():
    """AUTH PLAIN without initial response gets "334 " and reads the response line."""
    _, lines = run(make(**SUBMISSION), b"EHLO c\r\nAUTH PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\n")
    assert lines[-2:] == ["334 ", "235 2.7.0 Authentication successful"]


def test_auth_failure_cancel_and_garbage():
    """Wrong password gets 535 5.7.8, "*" cancels with 501 5.0.0, bad base64 gets 501 5.5.2."""
    _, lines = run(make(**SUBMISSION), b"EHLO c\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\nAUTH LOGIN\r\n*\r\n"
                                       b"AUTH PLAIN !!!\r\n")
    assert codes(lines)[-4:] == ["535 5.7.8", "334", "501 5.0.0", "501 5.5.2"]


def test_overlong_sasl_response_ends_the_exchange():
    """A SASL response over 12,288 octets gets 500 5.5.2 and the next line is a command again."""
    events, lines = run(make(**SUBMISSION), b"EHLO c\r\nAUTH PLAIN\r\n" + b"A" * 13_000 + b"\r\nNOOP\r\n")
    assert codes(lines)[-3:] == ["334", "500 5.5.2", "250 2.0.0"] and not of_type(events, AuthAttempt)


def test_auth_for_another_identity_is_refused():
    """PLAIN with an authzid other than the user gets 535 5.7.8 without asking the authenticator."""
    events, lines = run(make(**SUBMISSION), b"EHLO c\r\nAUTH PLAIN Ym9iAGFsaWNlAHNlY3JldA==\r\n")
    assert codes(lines)[-1] == "535 5.7.8" and not of_type(events, AuthAttempt)


def test_auth_refused_on_inbound_without_tls_and_twice():
    """AUTH on the MX gets 503; without TLS off loopback 538 5.7.11; a second AUTH 503 5.5.1."""
    _, inbound = run(make(), b"EHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    _, plain = run(make(auth_mechanisms=("PLAIN",), starttls=True), b"EHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    _, twice = run(make(**SUBMISSION), b"EHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    assert codes(inbound)[-1] == "503 5.5.1"
    assert codes(plain)[-1] == "538 5.7.11"
    assert codes(twice)[-1] == "503 5.5.1"


def test_unknown_mechanism_gets_504():
    """AUTH with a mechanism not offered gets 504 5.5.4."""
    _, lines = run(make(**SUBMISSION), b"EHLO c\r\nAUTH CRAM-MD5\r\n")
    assert codes(lines)[-1] == "504 5.5.4"


# -- fuzzing ------------------------------------------------------------------------

PIECES = [b"EHLO c\r\n", b"HELO c\r\n", b"MAIL FROM:<a@b.test>\r\n", b"MAIL FROM:<>\r\n",
          b"RCPT TO:<b@l.test>\r\n", b"DATA\r\n", b"BDAT 5\r\n", b"BDAT 0 LAST\r\n", b"\r\n.\r\n",
          b".\r\n", b"RSET\r\n", b"NOOP\r\n", b"AUTH PLAIN\r\n", b"AUTH LOGIN\r\n", b"*\r\n",
          b"STARTTLS\r\n", b"\n", b"\r", b".", b"QUIT\r\n", b"VRFY x\r\n", b"BDAT 3 LAST\r\n"]
REPLY_LINE = re.compile(r"\d{3}[ -]")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=40)), max_size=30),
       st.integers(min_value=1, max_value=64))
def test_fuzzed_input_never_raises_and_replies_are_well_formed(pieces, read_size):
    """Arbitrary command mixes and bytes, in any read sizes, give only well-formed replies."""
    machine = make(starttls=True, auth_mechanisms=("PLAIN", "LOGIN"), plaintext_auth_without_tls=True,
                   max_bad_commands=0)
    data = b"".join(pieces)
    output = []
    for index in range(0, len(data), read_size):
        events, lines = run(machine, data[index:index + read_size])
        output += lines
        if events and isinstance(events[-1], StartTLS):
            machine.tls_started()
        if events and isinstance(events[-1], Close):
            break
    assert all(REPLY_LINE.match(line) for line in output)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=20))
def test_fuzzed_data_gives_the_same_result_for_any_read_split(body, sizes):
    """The message (or its refusal) does not depend on how the bytes are split into reads."""
    payload = body.replace(b"\r\n.\r\n", b"\r\n..\r\n") + b"\r\n.\r\n"

    def outcome(splits):
        machine = make()
        events, _ = run(machine, TRANSACTION + b"DATA\r\n")
        position, step = 0, 0
        while position < len(payload):
            size = splits[step % len(splits)]
            more, _ = run(machine, payload[position:position + size])
            events += more
            position += size
            step += 1
        return [e for e in events if isinstance(e, (MessageReceived, MessageRefused))]

    assert outcome(sizes) == outcome([len(payload)])
    assert len(outcome([len(payload)])) <= 1
