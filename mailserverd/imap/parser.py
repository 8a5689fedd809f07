"""The IMAP command parser: bytes in, events out, no I/O (h11 style).

    parser = CommandParser(ParserLimits.from_settings(settings))
    parser.receive(data)                    # from dataReceived
    while (event := parser.next_event()) is not None:
        ...                                 # CommandReady, ContinuationNeeded,
                                            # CommandError, ClientLine

The server pulls events one at a time, so it can stop pulling while a
command runs and later commands wait in the buffer (RFC 9051 5.5: the
server may process pipelined commands in order). State the server owns and
the parser needs: `authenticated` (literal limits, RFC 7888 4), `utf8`
(ENABLE UTF8=ACCEPT, RFC 6855), and expect_line() before reading an
AUTHENTICATE response or IDLE's DONE. After STARTTLS (RFC 9051 6.2.1) or
COMPRESS (RFC 4978 3) call take_buffer(): what the client sent after the
command in the clear is dropped, or handed to the decompressor.
"""

from __future__ import annotations

from typing import Optional, Union

from .events import ClientLine, CommandError, CommandReady, ContinuationNeeded
from .framing import Framer, ParserLimits
from .grammar import parse_command
from .lexer import ParseFailure, Reader

__all__ = ["CommandParser", "ParserLimits", "CommandReady", "ContinuationNeeded",
           "CommandError", "ClientLine", "Event"]

Event = Union[CommandReady, ContinuationNeeded, CommandError, ClientLine]


class CommandParser:
    def __init__(self, limits: ParserLimits = ParserLimits()):
        self._framer = Framer(limits)
        self.utf8 = False

    @property
    def limits(self) -> ParserLimits:
        return self._framer.limits

    @property
    def authenticated(self) -> bool:
        return self._framer.authenticated

    @authenticated.setter
    def authenticated(self, value: bool) -> None:
        self._framer.authenticated = value

    @property
    def buffered(self) -> int:
        return self._framer.buffered

    def receive(self, data: bytes) -> None:
        self._framer.receive(data)

    def expect_line(self) -> None:
        self._framer.expect_line()

    def take_buffer(self) -> bytes:
        return self._framer.take_buffer()

    def next_event(self) -> Optional[Event]:
        event = self._framer.next()
        if not isinstance(event, bytes):
            return event
        try:
            return CommandReady(parse_command(event, self.utf8))
        except ParseFailure as failure:
            return CommandError(_tag_of(event), failure.status, failure.text, failure.code)
        except RecursionError:  # defence in depth: every grammar rule is depth-capped
            return CommandError(_tag_of(event), "BAD", "Command nested too deeply")


def _tag_of(frame: bytes) -> str:
    reader = Reader(frame)
    try:
        tag = reader.tag()
        reader.sp()
        return tag
    except ParseFailure:
        return "*"
