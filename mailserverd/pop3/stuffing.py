"""Multi-line response bodies (RFC 1939 3): CRLF lines, dot-stuffed, ended by ".".

DotStuffer works on a message in chunks of any size and gives exactly the
bytes it would give for the whole message at once: the only state that
crosses a chunk boundary is "at the start of a line" and a CR held back in
case its LF starts the next chunk. (twisted.mail.pop3 lost stuffing at 16 kB
chunk boundaries and turned CRLF into CR CR LF.)
"""

from __future__ import annotations

TERMINATOR = b".\r\n"


class DotStuffer:
    """feed(chunk) -> wire bytes; finish() -> the rest plus the terminating ".".

    Line ends are CRLF on the wire: stored messages are CRLF already, and a
    bare LF is sent as CRLF so that no client can see a line start that the
    stuffing missed.
    """

    def __init__(self):
        self._line_start = True
        self._held_cr = False

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        data = bytes(chunk)
        if self._held_cr:
            data = b"\r" + data
            self._held_cr = False
        if data.endswith(b"\r"):
            # Its LF may open the next chunk: decide this CR together with it.
            data = data[:-1]
            self._held_cr = True
            if not data:
                return b""
        if b"\n" in data:
            # Bare LF -> CRLF, CRLF unchanged.
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            # RFC 1939 3: a line beginning with "." gets one more "." in front.
            data = data.replace(b"\n.", b"\n..")
        if self._line_start and data.startswith(b"."):
            data = b"." + data
        self._line_start = data.endswith(b"\n")
        return data

    def finish(self) -> bytes:
        """Close the body: a held CR becomes a line end, a last line without one gets
        CRLF (RFC 1939 3: the terminator must start a line), then ".\\r\\n"."""
        if self._held_cr:
            self._held_cr = False
            self._line_start = True
            return b"\r\n" + TERMINATOR
        if not self._line_start:
            self._line_start = True
            return b"\r\n" + TERMINATOR
        return TERMINATOR


def stuff(message: bytes) -> bytes:
    """The whole multi-line body for `message` in one go (tests, small replies)."""
    stuffer = DotStuffer()
    return stuffer.feed(message) + stuffer.finish()


def _header_end(message: bytes) -> int:
    """Offset just past the blank line ending the header, or len(message) if none."""
    candidates = [at + length for at, length in ((message.find(b"\r\n\r\n"), 4), (message.find(b"\n\n"), 2))
                  if at >= 0]
    if message.startswith(b"\r\n"):
        candidates.append(2)
    elif message.startswith(b"\n"):
        candidates.append(1)
    return min(candidates) if candidates else len(message)


def top_of_message(message: bytes, lines: int) -> bytes:
    """RFC 1939 7 TOP: the header, the blank line after it, and `lines` body lines.

    A message with no body separator is all header; asking for more lines
    than the body has gives the whole message.
    """
    end = _header_end(message)
    for _ in range(lines):
        if end >= len(message):
            break
        newline = message.find(b"\n", end)
        end = len(message) if newline < 0 else newline + 1
    return message[:end]
