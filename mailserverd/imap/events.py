"""What the IMAP command parser hands the server (see parser.CommandParser)."""

from __future__ import annotations

import dataclasses
from typing import Optional

from .commands import Command


@dataclasses.dataclass(frozen=True)
class CommandReady:
    """A complete, well-formed command."""

    command: Command


@dataclasses.dataclass(frozen=True)
class ContinuationNeeded:
    """The client sent a synchronizing literal we accept: send "+ ..." now
    (RFC 9051 7.5) or the client will wait forever."""

    tag: str


@dataclasses.dataclass(frozen=True)
class CommandError:
    """A command that is malformed or refused while parsing.

    Answer `tag status [code] text`. With fatal, the connection cannot be
    resynchronised (the client is sending data we will not read): send
    `* BYE` after the tagged answer and close.
    """

    tag: str
    status: str  # "BAD" or "NO"
    text: str
    code: Optional[str] = None
    fatal: bool = False


@dataclasses.dataclass(frozen=True)
class ClientLine:
    """One line after parser.expect_line(): an AUTHENTICATE response (RFC 9051
    6.2.2) or IDLE's DONE (RFC 2177). data is None if the line exceeded the
    line limit (it was discarded)."""

    data: Optional[bytes]
