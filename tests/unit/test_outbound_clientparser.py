"""The I/O-free SMTP client (outbound/clientparser.py): bytes in, commands out."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserverd.outbound.clientparser import (
    MAX_RCPT_PER_TRANSACTION, ClientSession, Close, Envelope, ProtocolError, Reply, ReplyParser, Send, StartTLS,
    dot_stuff, normalize_line_endings, orcpt_parameter, xtext)

BODY = b"From: a@here.test\r\nTo: b@there.test\r\nSubject: hi\r\n\r\nHello\r\n"
EHLO_FULL = (b"250-mx.there.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
             b"250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n")
EHLO_PLAIN = b"250-mx.there.test\r\n250 SIZE 1000000\r\n"


def envelope(**fields) -> Envelope:
    values = dict(sender="a@here.test", recipients=("b@there.test",), body=BODY)
    values.update(fields)
    return Envelope(**values)


def sent(actions) -> bytes:
    return b"".join(action.data for action in actions if isinstance(action, Send))


class Dialogue:
    """Feeds server lines to a session and keeps what the client sent."""

    def __init__(self, session: ClientSession):
        self.session = session
        self.actions: list = []

    def server(self, data: bytes) -> bytes:
        actions = self.session.receive(data)
        self.actions += actions
        return sent(actions)


def to_data(session: ClientSession, ehlo: bytes = EHLO_PLAIN) -> Dialogue:
    """Greeting and EHLO done, TLS not offered."""
    dialogue = Dialogue(session)
    assert dialogue.server(b"220 mx.there.test ESMTP\r\n") == b"EHLO me.here.test\r\n"
    return dialogue


# -- replies ------------------------------------------------------------------------------

def test_multiline_reply_is_one_reply():
    """Lines with "-" after the code continue a reply; the line with a space ends it (RFC 5321 4.2.1)."""
    replies = ReplyParser().feed(b"250-first\r\n250-second\r\n250 last\r\n")
    assert replies == [Reply(250, ("first", "second", "last"))]


def test_reply_split_across_reads_is_reassembled():
    """A reply arriving a byte at a time is parsed once complete."""
    parser = ReplyParser()
    data = b"550 5.1.1 No such user\r\n"
    found = [reply for byte in data for reply in parser.feed(bytes([byte]))]
    assert found == [Reply(550, ("5.1.1 No such user",))]


def test_enhanced_code_is_taken_from_the_first_line():
    """The RFC 3463 code is read from the reply text and left out of .text."""
    reply = ReplyParser().feed(b"550-5.1.1 No such\r\n550 5.1.1 user here\r\n")[0]
    assert (reply.enhanced, reply.text) == ("5.1.1", "No such user here")


def test_enhanced_code_of_another_class_is_ignored():
    """A 4xx reply whose text starts "5.1.1" has no enhanced code (class must match)."""
    assert ReplyParser().feed(b"450 5.1.1 odd\r\n")[0].enhanced == ""


def test_code_without_text_is_a_reply():
    """"250" alone (no text) is a valid reply line (RFC 5321 4.2)."""
    assert ReplyParser().feed(b"250\r\n") == [Reply(250, ("",))]


def test_bare_lf_ends_a_reply_line():
    """Servers that end lines with LF only are still understood."""
    assert ReplyParser().feed(b"220 hi\n") == [Reply(220, ("hi",))]


@pytest.mark.parametrize("data", [b"hello\r\n", b"25 x\r\n", b"250-a\r\n251 b\r\n", b"650 x\r\n"])
def test_malformed_reply_is_a_protocol_error(data):
    """A line that is not "ddd[ -]text", or a code change inside a multiline reply, is refused."""
    with pytest.raises(ProtocolError):
        ReplyParser().feed(data)


def test_overlong_reply_line_is_refused_before_its_end():
    """A reply line longer than the limit fails without waiting for its end."""
    with pytest.raises(ProtocolError):
        ReplyParser().feed(b"250 " + b"x" * 10000)


def test_endless_multiline_reply_is_refused():
    """A multiline reply may not have more than MAX_REPLY_LINES lines."""
    with pytest.raises(ProtocolError):
        ReplyParser().feed(b"250-x\r\n" * 1000)


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_any_bytes_give_replies_or_protocol_error(data):
    """Whatever a server sends, the parser answers with replies or ProtocolError, nothing else."""
    try:
        ReplyParser().feed(data)
    except ProtocolError:
        pass


# -- encodings ----------------------------------------------------------------------------

def test_dot_stuffing_doubles_leading_dots():
    """Every line starting with "." gets another, and the payload ends CRLF.CRLF (RFC 5321 4.5.2)."""
    assert dot_stuff(b".x\r\n..\r\nok.\r\n.\r\n") == b"..x\r\n...\r\nok.\r\n..\r\n.\r\n"


def test_line_endings_are_normalized():
    """Bare LF and bare CR become CRLF, and a missing final CRLF is added."""
    assert normalize_line_endings(b"a\nb\rc\r\nd") == b"a\r\nb\r\nc\r\nd\r\n"


def test_xtext_escapes_plus_equals_and_controls():
    """RFC 3461 4: '+', '=', space and non-ASCII bytes become +HH."""
    assert xtext("a+b=c d") == "a+2Bb+3Dc+20d"


def test_orcpt_utf8_uses_utf8_addr_xtext():
    """ORCPT=utf-8; carries non-ASCII as \\x{HEX} (RFC 6533 4)."""
    assert orcpt_parameter("utf-8;jösé@x.test") == "utf-8;j\\x{F6}s\\x{E9}@x.test"
    assert orcpt_parameter("rfc822;a+b@x.test") == "rfc822;a+2Bb@x.test"


# -- the session ----------------------------------------------------------------------------

def test_plain_delivery_in_lockstep():
    """Without PIPELINING the client waits for each reply: MAIL, RCPT, DATA, body, QUIT."""
    dialogue = to_data(ClientSession(envelope(), "me.here.test"))
    assert dialogue.server(EHLO_PLAIN) == f"MAIL FROM:<a@here.test> SIZE={len(BODY)}\r\n".encode()
    assert dialogue.server(b"250 ok\r\n") == b"RCPT TO:<b@there.test>\r\n"
    assert dialogue.server(b"250 ok\r\n") == b"DATA\r\n"
    assert dialogue.server(b"354 go\r\n") == BODY + b".\r\n"
    assert dialogue.server(b"250 2.0.0 queued as X\r\n") == b"QUIT\r\n"
    dialogue.server(b"221 bye\r\n")
    assert dialogue.actions[-1] == Close()
    outcome = dialogue.session.outcomes["b@there.test"]
    assert (outcome.status, outcome.code, outcome.enhanced, outcome.text) == ("delivered", 250, "2.0.0", "queued as X")


def test_pipelining_sends_mail_rcpts_and_data_in_one_write():
    """With PIPELINING, MAIL, every RCPT and DATA go in one write (RFC 2920 3.1)."""
    session = ClientSession(envelope(recipients=("b@there.test", "c@there.test")), "me.here.test",
                            tls_available=False)
    dialogue = to_data(session)
    group = dialogue.server(EHLO_FULL)
    assert group == (f"MAIL FROM:<a@here.test> SIZE={len(BODY)}\r\nRCPT TO:<b@there.test>\r\n"
                     "RCPT TO:<c@there.test>\r\nDATA\r\n").encode()
    assert len([a for a in dialogue.actions if isinstance(a, Send)]) == 2  # EHLO, then the group
    assert dialogue.server(b"250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n") == BODY + b".\r\n"
    dialogue.server(b"250 ok\r\n")
    assert session.outcomes["b@there.test"].status == "delivered"
    assert (session.outcomes["c@there.test"].status, session.outcomes["c@there.test"].enhanced) == ("failed", "5.1.1")


def test_pipelined_all_rcpts_refused_sends_no_body():
    """When every RCPT fails the body is not sent; a 354 anyway gets an empty "." (RFC 2920 3.1)."""
    session = ClientSession(envelope(), "me.here.test", tls_available=False)
    dialogue = to_data(session)
    dialogue.server(EHLO_FULL)
    assert dialogue.server(b"250 ok\r\n550 no\r\n354 go\r\n") == b".\r\n"
    assert dialogue.server(b"554 no valid recipients\r\n") == b"QUIT\r\n"
    assert session.outcomes["b@there.test"].status == "failed"


def test_ehlo_refused_falls_back_to_helo():
    """A 5xx to EHLO is answered with HELO, and the session goes on without extensions."""
    dialogue = to_data(ClientSession(envelope(), "me.here.test"))
    assert dialogue.server(b"502 what\r\n") == b"HELO me.here.test\r\n"
    assert dialogue.server(b"250 hello\r\n") == b"MAIL FROM:<a@here.test>\r\n"


def test_starttls_when_offered_then_ehlo_again():
    """STARTTLS is used when offered; after the handshake EHLO is sent again (RFC 3207 4.2)."""
    session = ClientSession(envelope(), "me.here.test")
    dialogue = to_data(session)
    assert dialogue.server(EHLO_FULL) == b"STARTTLS\r\n"
    actions = session.receive(b"220 go ahead\r\n")
    assert actions == [StartTLS()]
    assert sent(session.tls_started()) == b"EHLO me.here.test\r\n"
    assert session.extensions == {}
    assert dialogue.server(b"250-mx\r\n250 SIZE 10\r\n") == b"QUIT\r\n"  # body too big for SIZE 10
    assert session.tls_active


def test_bytes_after_starttls_reply_are_discarded():
    """Replies injected after the 220 to STARTTLS, in clear, are never read (RFC 3207 4.2)."""
    session = ClientSession(envelope(), "me.here.test")
    dialogue = to_data(session)
    dialogue.server(EHLO_FULL)
    assert session.receive(b"220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n") == [StartTLS()]
    assert sent(session.tls_started()) == b"EHLO me.here.test\r\n"
    assert dialogue.server(EHLO_PLAIN).startswith(b"MAIL FROM")


def test_starttls_refused_continues_in_clear():
    """Opportunistic TLS: a refused STARTTLS does not stop delivery."""
    dialogue = to_data(ClientSession(envelope(), "me.here.test"))
    dialogue.server(EHLO_FULL)
    assert dialogue.server(b"454 4.7.0 TLS not available\r\n").startswith(b"MAIL FROM:<a@here.test>")


def test_credentials_require_tls():
    """With a smarthost password and no STARTTLS offered, the client quits rather than send it in clear."""
    session = ClientSession(envelope(), "me.here.test", credentials=("u", "p"))
    dialogue = to_data(session)
    assert dialogue.server(EHLO_PLAIN) == b"QUIT\r\n"
    assert session.host_error.enhanced == "4.7.10"
    assert session.pending() == ["b@there.test"]


def test_auth_plain_after_tls():
    """AUTH PLAIN with an initial response (RFC 4954 4) follows the post-TLS EHLO."""
    session = ClientSession(envelope(), "me.here.test", credentials=("user@here.test", "pw"))
    dialogue = to_data(session)
    dialogue.server(b"250-mx\r\n250 STARTTLS\r\n")
    session.receive(b"220 go\r\n")
    session.tls_started()
    token = base64.b64encode(b"\0user@here.test\0pw").decode()
    assert dialogue.server(b"250-mx\r\n250 AUTH LOGIN PLAIN\r\n") == f"AUTH PLAIN {token}\r\n".encode()
    assert dialogue.server(b"235 2.7.0 ok\r\n").startswith(b"MAIL FROM")


def test_auth_refused_defers():
    """Refused smarthost credentials defer the mail (our configuration), never bounce it."""
    session = ClientSession(envelope(), "me.here.test", credentials=("u", "p"))
    dialogue = to_data(session)
    dialogue.server(b"250-mx\r\n250 STARTTLS\r\n")
    session.receive(b"220 go\r\n")
    session.tls_started()
    dialogue.server(b"250-mx\r\n250 AUTH PLAIN\r\n")
    assert dialogue.server(b"535 5.7.8 bad\r\n") == b"QUIT\r\n"
    assert session.host_error.status == "deferred" and session.pending() == ["b@there.test"]


def test_greeting_refusal_is_a_host_failure():
    """A 554 greeting makes the host unusable; the recipients stay pending for the next MX."""
    session = ClientSession(envelope(), "me.here.test")
    assert sent(session.receive(b"554 no service\r\n")) == b"QUIT\r\n"
    assert session.host_error.code == 554 and session.pending() == ["b@there.test"]


def test_mail_from_4xx_is_a_host_failure():
    """A 4xx to MAIL leaves every recipient pending, with the reply as the reason."""
    session = ClientSession(envelope(), "me.here.test")
    dialogue = to_data(session)
    dialogue.server(EHLO_PLAIN)
    assert dialogue.server(b"451 4.3.0 try later\r\n") == b"QUIT\r\n"
    assert session.host_error.code == 451 and session.pending() == ["b@there.test"]


def test_mail_from_5xx_fails_every_recipient():
    """A 5xx to MAIL fails all recipients, pipelined replies behind it are ignored."""
    session = ClientSession(envelope(recipients=("b@there.test", "c@there.test")), "me.here.test",
                            tls_available=False)
    dialogue = to_data(session)
    dialogue.server(EHLO_FULL)
    assert dialogue.server(b"550 5.7.1 sender refused\r\n503 no\r\n503 no\r\n554 no\r\n") == b"QUIT\r\n"
    assert {o.status for o in session.outcomes.values()} == {"failed"} and len(session.outcomes) == 2


def test_rcpt_4xx_is_deferred_for_that_recipient():
    """A 4xx to one RCPT defers that recipient while the others are delivered."""
    session = ClientSession(envelope(recipients=("b@there.test", "c@there.test")), "me.here.test",
                            tls_available=False)
    dialogue = to_data(session)
    dialogue.server(EHLO_FULL)
    dialogue.server(b"250 ok\r\n450 4.2.1 greylisted\r\n250 ok\r\n354 go\r\n250 ok\r\n")
    assert session.outcomes["b@there.test"].status == "deferred"
    assert session.outcomes["c@there.test"].status == "delivered"
    assert session.pending() == ["b@there.test"]


def test_data_final_4xx_defers_accepted_recipients():
    """A 4xx after the body defers the recipients it was for."""
    session = ClientSession(envelope(), "me.here.test", tls_available=False)
    dialogue = to_data(session)
    dialogue.server(EHLO_FULL)
    dialogue.server(b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert dialogue.server(b"451 4.3.0 disk full\r\n") == b"QUIT\r\n"
    assert session.pending() == ["b@there.test"]


def test_dsn_parameters_only_when_advertised():
    """NOTIFY/ORCPT/RET/ENVID are sent only to a server offering DSN (RFC 3461 4)."""
    dsn = dict(dsn=(("SUCCESS,FAILURE", "rfc822;b@there.test"),), ret="HDRS", envid="id+1")
    with_dsn = to_data(ClientSession(envelope(**dsn), "me.here.test", tls_available=False))
    group = with_dsn.server(EHLO_FULL)
    assert b"RET=HDRS ENVID=id+2B1" in group
    assert b"RCPT TO:<b@there.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@there.test\r\n" in group
    without = to_data(ClientSession(envelope(**dsn), "me.here.test"))
    assert without.server(EHLO_PLAIN) == f"MAIL FROM:<a@here.test> SIZE={len(BODY)}\r\n".encode()


def test_8bit_body_uses_8bitmime():
    """An 8-bit body is announced with BODY=8BITMIME when the server offers it (RFC 6152 2)."""
    body = BODY.replace(b"Hello", "Grüße".encode())
    dialogue = to_data(ClientSession(envelope(body=body), "me.here.test", tls_available=False))
    assert b"BODY=8BITMIME" in dialogue.server(EHLO_FULL)


def test_8bit_body_without_8bitmime_fails_with_563():
    """An 8-bit body is not sent to a server without 8BITMIME: it bounces with 5.6.3 (RFC 6152 3)."""
    body = BODY.replace(b"Hello", "Grüße".encode())
    session = ClientSession(envelope(body=body), "me.here.test")
    dialogue = to_data(session)
    assert dialogue.server(EHLO_PLAIN) == b"QUIT\r\n"
    assert (session.outcomes["b@there.test"].status, session.outcomes["b@there.test"].enhanced) == ("failed", "5.6.3")


def test_utf8_address_without_smtputf8_fails_with_567():
    """A non-ASCII address needs SMTPUTF8; without it the recipient fails with 5.6.7 (RFC 6531 3.2)."""
    session = ClientSession(envelope(recipients=("jösé@there.test",), smtputf8=True), "me.here.test")
    dialogue = to_data(session)
    assert dialogue.server(EHLO_PLAIN) == b"QUIT\r\n"
    assert session.outcomes["jösé@there.test"].enhanced == "5.6.7"


def test_utf8_address_with_smtputf8():
    """With SMTPUTF8 offered, MAIL carries SMTPUTF8 and the address goes as UTF-8."""
    dialogue = to_data(ClientSession(envelope(recipients=("jösé@there.test",), smtputf8=True), "me.here.test",
                                     tls_available=False))
    group = dialogue.server(EHLO_FULL)
    assert b" SMTPUTF8" in group.split(b"\r\n")[0]
    assert "RCPT TO:<jösé@there.test>".encode() in group


def test_message_over_remote_size_fails_with_534():
    """A message larger than the server's SIZE is not sent: 552 5.3.4 (RFC 1870 6)."""
    session = ClientSession(envelope(), "me.here.test")
    dialogue = to_data(session)
    assert dialogue.server(b"250-mx\r\n250 SIZE 20\r\n") == b"QUIT\r\n"
    assert (session.outcomes["b@there.test"].code, session.outcomes["b@there.test"].enhanced) == (552, "5.3.4")


def test_many_recipients_go_in_transactions_of_100():
    """More than 100 recipients are split into several transactions on one connection, with RSET between."""
    recipients = tuple(f"r{i}@there.test" for i in range(MAX_RCPT_PER_TRANSACTION + 5))
    session = ClientSession(envelope(recipients=recipients), "me.here.test", tls_available=False)
    dialogue = to_data(session)
    first = dialogue.server(EHLO_FULL)
    assert first.count(b"RCPT TO") == MAX_RCPT_PER_TRANSACTION
    dialogue.server(b"250 ok\r\n" + b"250 ok\r\n" * MAX_RCPT_PER_TRANSACTION + b"354 go\r\n")
    second = dialogue.server(b"250 ok\r\n")
    assert second.startswith(b"RSET\r\nMAIL FROM") and second.count(b"RCPT TO") == 5
    dialogue.server(b"250 reset\r\n250 ok\r\n" + b"250 ok\r\n" * 5 + b"354 go\r\n")
    assert dialogue.server(b"250 ok\r\n") == b"QUIT\r\n"
    assert len(session.outcomes) == len(recipients) and not session.pending()


def test_452_too_many_recipients_are_sent_in_the_next_transaction():
    """Recipients refused with 452 after others were taken get another transaction (RFC 5321 4.5.3.1.10)."""
    session = ClientSession(envelope(recipients=("b@there.test", "c@there.test")), "me.here.test",
                            tls_available=False)
    dialogue = to_data(session)
    dialogue.server(EHLO_FULL)
    dialogue.server(b"250 ok\r\n250 ok\r\n452 4.5.3 too many\r\n354 go\r\n")
    again = dialogue.server(b"250 ok\r\n")
    assert b"RCPT TO:<c@there.test>" in again and b"RCPT TO:<b@there.test>" not in again
    dialogue.server(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n")
    assert session.outcomes["c@there.test"].status == "delivered"


def test_connection_lost_leaves_recipients_pending():
    """A connection lost before the final reply leaves the recipients for another host or a retry."""
    session = ClientSession(envelope(), "me.here.test")
    dialogue = to_data(session)
    dialogue.server(EHLO_PLAIN)
    session.connection_lost("reset by peer")
    assert session.host_error.code == 0 and session.pending() == ["b@there.test"]


def test_timeout_closes_and_names_the_stage():
    """A reply that does not come closes the connection with the stage in the reason."""
    session = ClientSession(envelope(), "me.here.test")
    to_data(session)
    assert session.timed_out() == [Close()]
    assert "ehlo" in session.host_error.text


def test_garbage_from_server_closes():
    """A malformed reply closes the connection at once (no QUIT to a broken peer)."""
    session = ClientSession(envelope(), "me.here.test")
    assert session.receive(b"HTTP/1.1 400 Bad Request\r\n") == [Close()]
    assert session.host_error.text.startswith("protocol error")


def test_replies_after_close_are_ignored():
    """Once the session has closed, whatever else the server sends does nothing."""
    session = ClientSession(envelope(), "me.here.test")
    assert session.receive(b"554 go away\r\n221 bye\r\n250 extra\r\n") == [Send(b"QUIT\r\n"), Close()]
    assert session.receive(b"250 more\r\n") == []


# -- the socket side (outbound/client.py) over a fake transport and an injected clock ----------

def client_protocol(session):
    from twisted.internet import defer, task
    from twisted.internet.testing import StringTransport

    from mailserverd.outbound.client import SmtpClientProtocol, Timeouts
    clock = task.Clock()
    finished = defer.Deferred()
    protocol = SmtpClientProtocol(session, clock, None, Timeouts(greeting=300, command=300), finished)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport, clock, finished


def test_protocol_times_out_waiting_for_the_greeting():
    """No greeting within the RFC 5321 4.5.3.2.1 five minutes: the connection is aborted, recipients pending."""
    from twisted.python.failure import Failure
    session = ClientSession(envelope(), "me.here.test")
    protocol, transport, clock, finished = client_protocol(session)
    clock.advance(299)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnecting or transport.disconnected
    protocol.connectionLost(Failure(ConnectionError("aborted")))
    assert finished.called and "greeting" in session.host_error.text
    assert session.pending() == ["b@there.test"]


def test_protocol_writes_commands_and_rearms_its_timer():
    """Each reply answered resets the timer; the client's commands reach the transport in order."""
    session = ClientSession(envelope(), "me.here.test")
    protocol, transport, clock, finished = client_protocol(session)
    clock.advance(200)
    protocol.dataReceived(b"220 hi\r\n")
    assert transport.value() == b"EHLO me.here.test\r\n"
    clock.advance(200)  # 400 s since connecting, 200 since the last reply: still waiting
    assert not transport.disconnecting
    assert clock.getDelayedCalls()
