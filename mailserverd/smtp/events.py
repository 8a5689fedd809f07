"""What the SMTP state machine hands to the code that drives it (h11 style).

Requests (Connected, MailFrom, RcptTo, MessageReceived, AuthAttempt) need an
answer: the machine yields PAUSED until SMTPMachine.respond() is called.
StartTLS is answered by SMTPMachine.tls_started(). MessageRefused is for the
log only. Close means: send what is pending, then close the connection.
"""

from __future__ import annotations

import dataclasses

from .data import MessageLimits
from .replies import Reply
from .syntax import MailParams, Path, RcptParams


class _Sentinel:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")  # feed more bytes with receive_data()
PAUSED = _Sentinel("PAUSED")  # waiting for respond() / tls_started(): stop reading


@dataclasses.dataclass(frozen=True)
class Connected:
    """A new connection: answer with the greeting, or a 421/554 refusal."""


@dataclasses.dataclass(frozen=True)
class MailFrom:
    sender: Path | None  # None is the null reverse-path "<>"
    params: MailParams


@dataclasses.dataclass(frozen=True)
class RcptTo:
    recipient: Path  # for a bare "<Postmaster>" (RFC 5321 4.1.1.3): local "postmaster", domain ""
    params: RcptParams


@dataclasses.dataclass(frozen=True)
class MessageReceived:
    body: bytes  # unstuffed, CRLF line ends, within every limit
    chunked: bool  # True if it came with BDAT (RFC 3030)


@dataclasses.dataclass(frozen=True)
class MessageRefused:
    """The content broke a rule; the reply has already been queued (for the log)."""

    reply: Reply


@dataclasses.dataclass(frozen=True)
class AuthAttempt:
    mechanism: str
    username: str
    password: str


@dataclasses.dataclass(frozen=True)
class StartTLS:
    """"220 Ready to start TLS" is queued: send it, start TLS, then call tls_started()."""


@dataclasses.dataclass(frozen=True)
class Close:
    reason: str


@dataclasses.dataclass(frozen=True)
class MachineConfig:
    hostname: str
    limits: MessageLimits
    max_recipients: int = 100
    max_bad_commands: int = 10  # 0 = no limit
    starttls: bool = False  # STARTTLS can be offered (a certificate exists, TLS not implicit)
    tls_active: bool = False  # implicit TLS: secure from the first byte
    auth_mechanisms: tuple[str, ...] = ()  # () = no AUTH (inbound MX)
    plaintext_auth_without_tls: bool = False  # auth.plaintext_allowed(False, peer)
    require_auth: bool = False  # submission: MAIL needs AUTH first
