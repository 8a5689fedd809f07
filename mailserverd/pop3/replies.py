"""POP3 status lines (RFC 1939 3) with RFC 2449 8 response codes, rendered to bytes."""

from __future__ import annotations

MAX_REPLY_LINE = 512  # RFC 2449 4: responses up to 512 octets including CRLF


def _line(text: str) -> bytes:
    # One line per reply: a CR or LF inside text would forge a protocol line.
    text = text.replace("\r", " ").replace("\n", " ")
    return text.encode("utf-8")[:MAX_REPLY_LINE - 2] + b"\r\n"


def ok(text: str = "") -> bytes:
    return _line(f"+OK {text}" if text else "+OK")


def err(text: str, code: str = "") -> bytes:
    """`-ERR [CODE] text`; code is an RFC 2449 8 / RFC 3206 response code such as "AUTH"."""
    return _line(f"-ERR [{code}] {text}" if code else f"-ERR {text}")


# RFC 3206 4: [AUTH] for bad credentials: one reply whether the user exists or not.
AUTH_FAILED = err("Authentication failed", "AUTH")
# RFC 2595 2.2 / RFC 8314: no cleartext passwords on an unprotected connection.
PLAINTEXT_REFUSED = err("Plaintext authentication disallowed on non-secure connection", "AUTH")
# RFC 2449 8.1.1: another session holds the maildrop lock.
IN_USE = err("Maildrop already locked by another session", "IN-USE")
# RFC 3206 5: a temporary system problem; retrying later may work.
SYS_TEMP = err("Temporary server problem, try again later", "SYS/TEMP")
UPDATE_FAILED = err("Some deleted messages not removed, try again later", "SYS/TEMP")
READ_FAILED = err("Cannot read the message now, try again later", "SYS/TEMP")
MESSAGE_GONE = err("Message was removed by another session")
TIMEOUT = err("Disconnected for inactivity")
LINE_TOO_LONG = err("Line too long")
TOO_MANY_BAD = err("Too many bad commands, closing connection")
TOO_MANY_AUTH_FAILURES = err("Too many authentication failures, closing connection", "AUTH")
TOO_MANY_CONNECTIONS = err("Too many connections from your address", "SYS/TEMP")
