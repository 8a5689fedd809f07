"""What the POP3 state machine hands to the code that drives it (h11 style).

Requests (Login, Retrieve, Update) need an answer: until it comes the
machine yields PAUSED and parses nothing further, so pipelined commands
(RFC 2449 6.6) are answered strictly in order. StartTLS is answered by
POP3Machine.tls_started(). Close means: send what is pending, then close.
"""

from __future__ import annotations

import dataclasses


class _Sentinel:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")  # feed more bytes with receive_data()
PAUSED = _Sentinel("PAUSED")  # an answer or queued output is pending: stop reading


@dataclasses.dataclass(frozen=True)
class Login:
    """USER/PASS or AUTH PLAIN: answer with login_succeeded(maildrop) or login_failed(reply)."""

    mechanism: str  # "USER" or "PLAIN"
    username: str
    password: str
    authzid: str = ""  # SASL authorization identity; "" = the same as username


@dataclasses.dataclass(frozen=True)
class Retrieve:
    """RETR (top_lines None) or TOP: answer with message_read(body) or message_failed(reply)."""

    number: int
    message_id: int
    top_lines: int | None = None


@dataclasses.dataclass(frozen=True)
class Update:
    """RFC 1939 6: QUIT in TRANSACTION; expunge these INBOX uids, then update_done()/update_failed()."""

    uids: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class StartTLS:
    """"+OK Begin TLS negotiation" is queued: send it, start TLS, then call tls_started()."""


@dataclasses.dataclass(frozen=True)
class Close:
    reason: str


@dataclasses.dataclass(frozen=True)
class MachineConfig:
    hostname: str
    stls_available: bool = False  # a certificate exists and TLS is not implicit
    tls_active: bool = False  # implicit TLS (pop3s): secure from the first byte
    plaintext_auth_without_tls: bool = False  # auth.plaintext_allowed(False, peer)
    max_line_length: int = 1024 * 1024  # past this an over-long line ends the session
    max_bad_commands: int = 20  # 0 = no limit
    max_auth_failures: int = 5  # per connection; the authenticator adds its own delay
