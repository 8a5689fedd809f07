"""Incremental framing of IMAP commands: lines, literals and their limits.

A command is one or more lines joined by literals (RFC 9051 4.3): a line
ending in `{n}` (synchronizing: the client waits for "+"), `{n+}` (RFC 7888
LITERAL+: the octets follow at once) or `~{n}` (RFC 3516 literal8) is
followed by exactly n octets, then the command continues. The framer collects
one whole command, checking every size BEFORE asking for or buffering data,
so a client can never make us promise ("+") or hold more than the limits.

Nothing here decodes the command itself; grammar.py does that on the
complete frame. Memory is bounded by the limits: a line is cut off at
max_line, an unwanted literal is counted and dropped, never stored.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Union

from .events import ClientLine, CommandError, ContinuationNeeded


@dataclasses.dataclass(frozen=True)
class ParserLimits:
    """Sizes in octets. Defaults follow Dovecot's (imap_max_line_length 64k)."""

    max_line: int = 65536  # one line of a command, between literals
    max_literal: int = 65536  # one literal outside APPEND
    max_append: int = 25 * 1024 * 1024  # the APPEND message (APPENDLIMIT, RFC 7889)
    max_command: int = 1024 * 1024  # a whole command, literals included (APPEND: + max_append)
    max_preauth_literal: int = 4096  # any literal before authentication (RFC 7888 4)
    max_discard: int = 64 * 1024 * 1024  # refused LITERAL+ octets we read and drop, not close

    @classmethod
    def from_settings(cls, settings) -> "ParserLimits":
        """Limits from mailserverd.config Settings: APPEND follows max_message_size;
        a line never exceeds limits.max_line_length."""
        max_line = min(cls.max_line, settings.limits.max_line_length)
        return cls(max_line=max_line, max_append=settings.limits.max_message_size)


# The tail of a line announcing a literal; searched from the line's last "{".
_LITERAL_TAIL = re.compile(rb"(~?)\{([0-9]+)(\+?)\}\r?\n")
_LEADING_TAG = re.compile(rb'([^(){ \x00-\x1f\x7f%*"\\+\x80-\xff]+) ')
_APPEND = re.compile(rb'[^ ]+ APPEND[ \r\n]', re.I)
_TAIL_KEEP = 32  # octets of a discarded line kept to see a literal announced at its end

Frame = bytes
Event = Union[Frame, ClientLine, CommandError, ContinuationNeeded]


class Framer:
    """Feed bytes with receive(); pull frames and events with next()."""

    def __init__(self, limits: ParserLimits = ParserLimits()):
        self.limits = limits
        self.authenticated = False
        self._buffer = bytearray()
        self._scanned = 0  # octets of _buffer known to hold no LF
        self._pieces: list[bytes] = []
        self._size = 0
        self._tag = "*"
        self._is_append = False
        self._literal_left = 0  # octets of an accepted literal still to come
        self._discard_left = 0  # octets of a refused LITERAL+ literal still to drop
        # The current line or command was answered already: drop it to its end.
        # "command": a refused command (its LITERAL+ octets are dropped too);
        # "plain": an over-long ClientLine.
        self._draining: Optional[str] = None
        self._line_mode = False  # the next line is a ClientLine, not a command
        self._closed = False

    # -- input ------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        if not self._closed:
            self._buffer += data

    @property
    def buffered(self) -> int:
        """Octets received and not yet framed: a transport can pause reading above a bound."""
        return len(self._buffer)

    def take_buffer(self) -> bytes:
        """Remove and return the unframed octets (for STARTTLS, RFC 9051 6.2.1, and
        COMPRESS, RFC 4978 3: what the client pipelined after them is not a command)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        self._scanned = 0
        return data

    def expect_line(self) -> None:
        """Hand the next line to the server as a ClientLine."""
        self._line_mode = True

    # -- output -------------------------------------------------------------

    def next(self) -> Optional[Event]:
        while not self._closed:
            if self._discard_left:
                if not self._buffer:
                    return None
                dropped = min(self._discard_left, len(self._buffer))
                del self._buffer[:dropped]
                self._discard_left -= dropped
                self._scanned = 0
                continue
            if self._literal_left:
                if not self._buffer:
                    return None
                taken = min(self._literal_left, len(self._buffer))
                self._pieces.append(bytes(self._buffer[:taken]))
                del self._buffer[:taken]
                self._literal_left -= taken
                self._scanned = 0
                continue
            newline = self._buffer.find(b"\n", self._scanned)
            if newline < 0:
                self._scanned = len(self._buffer)
                return self._wait_for_line_end()
            line = bytes(self._buffer[:newline + 1])
            del self._buffer[:newline + 1]
            self._scanned = 0
            if newline > self.limits.max_line and not self._draining:
                event = self._line_too_long(line)
            elif self._draining:
                event = self._drained_line(line)
            elif self._line_mode:
                self._line_mode = False
                return ClientLine(_strip_eol(line))
            else:
                event = self._command_line(line)
            if event is not None:
                return event
        return None

    def _wait_for_line_end(self) -> Optional[Event]:
        if self._draining:
            if len(self._buffer) > _TAIL_KEEP:
                del self._buffer[:-_TAIL_KEEP]
                self._scanned = len(self._buffer)
            return None
        if len(self._buffer) <= self.limits.max_line:
            return None
        # A line over our limit is refused now, not when (if ever) it ends.
        return self._line_too_long(None)

    def _line_too_long(self, line: Optional[bytes]) -> Event:
        """Refuse an over-long line; `line` is the whole line if it has ended,
        None if it is still arriving (the rest is dropped as it comes)."""
        if self._line_mode:
            self._line_mode = False
            if line is None:
                self._start_draining(plain=True)
                del self._buffer[:]
                self._scanned = 0
            return ClientLine(None)
        tag = self._tag if self._pieces else _leading_tag(line or self._buffer)
        self._tag = tag
        self._start_draining()
        if line is None and len(self._buffer) > _TAIL_KEEP:
            del self._buffer[:-_TAIL_KEEP]
            self._scanned = len(self._buffer)
        fatal = self._drained_line(line) if line is not None else None
        return fatal or CommandError(tag, "BAD", "Command line too long", "TOOBIG")

    def _command_line(self, line: bytes) -> Optional[Event]:
        if not self._pieces:
            if line in (b"\r\n", b"\n"):
                return None  # an empty line between commands is ignored
            self._tag = _leading_tag(line)
            self._is_append = _APPEND.match(line) is not None
        self._size += len(line)
        if self._size > self._command_cap():
            tag = self._tag
            self._start_draining()
            fatal = self._drained_line(line)
            return fatal or CommandError(tag, "BAD", "Command too long", "TOOBIG")
        announced = _literal_announced(line)
        if announced is None:
            self._pieces.append(line[:-2] if line.endswith(b"\r\n") else line[:-1])
            frame = b"".join(self._pieces)
            self._reset()
            return frame
        size, synchronizing = announced
        refusal = self._refuse_literal(size, synchronizing)
        if refusal is not None:
            if synchronizing:
                self._reset()  # the client waits for "+"; our answer ends the command
            elif size <= self.limits.max_discard:
                self._start_draining()
                self._discard_left = size
            else:
                self._closed = True
                refusal = dataclasses.replace(refusal, fatal=True)
            return refusal
        self._pieces.append(line if line.endswith(b"\r\n") else line[:-1] + b"\r\n")
        self._size += size
        self._literal_left = size
        if synchronizing:
            return ContinuationNeeded(self._tag)
        return None

    def _refuse_literal(self, size: int, synchronizing: bool) -> Optional[CommandError]:
        if not self.authenticated:
            cap = self.limits.max_preauth_literal
        elif self._is_append:
            cap = self.limits.max_append
        else:
            cap = self.limits.max_literal
        if size <= cap and self._size + size <= self._command_cap():
            return None
        if self.authenticated and self._is_append:
            # RFC 7889 4 (APPENDLIMIT): refused with NO [TOOBIG], before any "+".
            return CommandError(self._tag, "NO", "Message too large", "TOOBIG")
        kind = "synchronizing" if synchronizing else "non-synchronizing"
        return CommandError(self._tag, "BAD", "Literal too large (%s)" % kind, "TOOBIG")

    def _command_cap(self) -> int:
        cap = self.limits.max_command
        if self._is_append and self.authenticated:
            cap += self.limits.max_append
        return cap

    def _start_draining(self, plain: bool = False) -> None:
        self._pieces = []
        self._size = 0
        self._draining = "plain" if plain else "command"

    def _drained_line(self, line: bytes) -> Optional[Event]:
        """The end of a line of a refused command. If it announces a LITERAL+
        literal, those octets follow and are not commands: drop them too."""
        announced = None if self._draining == "plain" else _literal_announced(line[-_TAIL_KEEP:])
        if announced is not None and not announced[1]:
            size = announced[0]
            if size > self.limits.max_discard:
                self._closed = True
                return CommandError(self._tag, "BAD", "Literal too large", "TOOBIG", fatal=True)
            self._discard_left = size
            return None
        self._reset()
        return None

    def _reset(self) -> None:
        self._pieces = []
        self._size = 0
        self._draining = None
        self._tag = "*"
        self._is_append = False


def _literal_announced(line: bytes) -> Optional[tuple[int, bool]]:
    """(size, synchronizing) if the line ends with a literal announcement."""
    brace = line.rfind(b"{")
    if brace < 0:
        return None
    if brace > 0 and line[brace - 1] == 0x7E:  # "~": a literal8
        brace -= 1
    match = _LITERAL_TAIL.fullmatch(line, brace)
    if match is None:
        return None
    digits = match.group(2)
    size = int(digits) if len(digits) <= 20 else 1 << 70
    return size, match.group(3) != b"+"


def _leading_tag(data: bytes) -> str:
    match = _LEADING_TAG.match(bytes(data[:200]))
    return match.group(1).decode("ascii") if match else "*"


def _strip_eol(line: bytes) -> bytes:
    return line[:-2] if line.endswith(b"\r\n") else line[:-1]
