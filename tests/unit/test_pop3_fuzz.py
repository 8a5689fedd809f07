"""Fuzzing the POP3 machine: arbitrary input never raises, never hangs, and every
reply is a well-formed status line or multi-line block."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserverd.pop3.events import NEED_DATA, PAUSED, Close, Login, MachineConfig, Retrieve, StartTLS, Update
from mailserverd.pop3.maildrop import Maildrop
from mailserverd.pop3.protocol import MAX_QUEUED_REPLIES, POP3Machine
from mailserverd.pop3 import replies

BODY = b"Subject: s\r\n\r\n.\r\nbody\r\n"
WORDS = ["USER", "PASS", "AUTH", "PLAIN", "CAPA", "STLS", "QUIT", "STAT", "LIST", "RETR", "DELE",
         "NOOP", "RSET", "TOP", "UIDL", "APOP", "0", "1", "2", "3", "-1", "99999999999", "secret",
         "*", "AGFAAHNlY3JldA==", "=", "x" * 300]
LINES = st.lists(st.sampled_from(WORDS), min_size=0, max_size=4).map(lambda words: " ".join(words).encode())
NOISE = st.binary(max_size=40)


def drive(machine: POP3Machine, data: bytes, budget: int = 10_000) -> bytes:
    """Feed data and answer requests like the server; return what was written."""
    machine.receive_data(data)
    out = []
    for _ in range(budget):
        event = machine.next_event()
        out.append(machine.data_to_send(4096))
        if event is NEED_DATA:
            break
        if event is PAUSED:
            assert machine.waiting or machine.output_pending
            if machine.waiting:
                break
            continue
        if isinstance(event, Close):
            out.append(machine.data_to_send())
            break
        if isinstance(event, Login):
            if event.password == "secret":
                machine.login_succeeded(Maildrop(5, [(1, 1, len(BODY)), (2, 2, len(BODY))]), event.username)
            else:
                machine.login_failed(replies.AUTH_FAILED)
        elif isinstance(event, Retrieve):
            machine.message_read(BODY)
        elif isinstance(event, Update):
            machine.update_done()
        elif isinstance(event, StartTLS):
            machine.tls_started()
    else:
        raise AssertionError("the machine did not settle")
    return b"".join(out)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(LINES.map(lambda line: line + b"\r\n"), NOISE), max_size=25),
       st.booleans(), st.booleans())
def test_random_sessions_never_raise(pieces, plaintext, stls):
    """Any sequence of (mostly plausible) lines and noise is answered without an exception,
    and the output starts with the greeting and is made of CRLF lines."""
    machine = POP3Machine(MachineConfig(hostname="h.test", plaintext_auth_without_tls=plaintext,
                                        stls_available=stls, max_line_length=2000))
    wire = drive(machine, b"")
    for piece in pieces:
        wire += drive(machine, piece)
        if machine.closed:
            break
    assert wire.startswith(b"+OK h.test POP3 server ready\r\n")
    assert wire.endswith(b"\r\n")
    assert wire.count(b"\n") == wire.count(b"\r\n")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_in_transaction(data):
    """Random bytes after login never raise and are answered with CRLF lines only."""
    machine = POP3Machine(MachineConfig(hostname="h.test", plaintext_auth_without_tls=True))
    drive(machine, b"USER a\r\nPASS secret\r\n")
    wire = drive(machine, data)
    assert wire.count(b"\n") == wire.count(b"\r\n")


def test_pipelined_floods_wait_for_the_writer():
    """Thousands of pipelined LIST commands never queue much more than MAX_QUEUED_REPLIES of output."""
    machine = POP3Machine(MachineConfig(hostname="h.test", plaintext_auth_without_tls=True,
                                        max_bad_commands=0))
    drive(machine, b"USER a\r\nPASS secret\r\n")
    machine.receive_data(b"LIST\r\nUIDL\r\n" * 20_000)
    assert machine.next_event() is PAUSED
    first = machine.data_to_send()
    assert MAX_QUEUED_REPLIES <= len(first) < MAX_QUEUED_REPLIES + 200
