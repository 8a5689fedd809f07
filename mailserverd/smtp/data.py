"""Message content readers: DATA (RFC 5321 4.1.1.4) and BDAT (RFC 3030).

The DATA reader ends the message ONLY at <CRLF>.<CRLF> (RFC 5321 4.1.1.4).
Bare CR or LF, an over-long line, an oversized message or header block never
end it early and never drop back to command mode: the reader keeps consuming
to the real end of data and then reports one error (the smuggling defence of
Postfix's smtpd_forbid_bare_newline = reject).
"""

from __future__ import annotations

import re

from . import replies
from .replies import Reply

_BARE_NEWLINE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


class MessageLimits:
    """What a message must respect; values come from [limits]."""

    def __init__(self, max_message_size: int, max_header_size: int, max_line_length: int):
        self.max_message_size = max_message_size
        self.max_header_size = max_header_size
        self.max_line_length = max_line_length


class DataReader:
    """Consumes the bytes after "354" and reports the message when <CRLF>.<CRLF> arrives.

    feed(data) returns how many bytes it consumed (it holds back a tail that may
    be the start of the terminator, so call it again with more data appended);
    once `done` is True the rest of the input is commands again. Then `body`
    holds the unstuffed message (CRLF line ends) or `error` the one reply to give.
    Work per call is a few C-level scans, whatever the number of lines.
    """

    def __init__(self, limits: MessageLimits):
        self.limits = limits
        self.done = False
        self.error: Reply | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._at_line_start = True  # the DATA command's CRLF counts as the first line break
        self._line_length = 0  # octets of the current, unfinished line
        self._in_header = True
        self._header_size = 0

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)

    def _fail(self, reply: Reply) -> None:
        if self.error is None:  # the first problem is the one reported
            self.error = reply
        self._chunks = []  # nothing more is kept once the message is refused

    def feed(self, data: bytes) -> int:
        if self.done:
            return 0
        # RFC 5321 4.1.1.4: the mail data ends with the sequence <CRLF>.<CRLF>.
        if self._at_line_start and data.startswith(b".\r\n"):
            self.done = True
            return 3
        terminator = data.find(b"\r\n.\r\n")
        if terminator >= 0:
            self._region(data[:terminator + 2])
            self.done = True
            return terminator + 5
        # Hold back the last four octets: the terminator may start there. Never
        # split a CRLF, so a CR at the cut is not mistaken for a bare one.
        cut = max(len(data) - 4, 0)
        if cut and data[cut - 1] == 0x0D:
            cut -= 1
        if cut:
            self._region(data[:cut])
        return cut

    def _region(self, region: bytes) -> None:
        """Consecutive message octets that contain no terminator and split no CRLF."""
        starts_line = self._at_line_start
        self._at_line_start = region.endswith(b"\r\n")
        self._check_lines(region)
        if self._in_header:
            self._count_header(region, starts_line)
        # Inside a line (CRLFs removed) every CR or LF is a bare one (RFC 5321 2.3.8).
        if _BARE_NEWLINE.search(region):
            self._fail(replies.BARE_NEWLINE)
        if self.error is not None:
            return
        # RFC 5321 4.5.2: delete the first "." of every line that starts with one.
        if starts_line and region.startswith(b"."):
            region = region[1:]
        region = region.replace(b"\r\n.", b"\r\n")
        self._size += len(region)
        if self._size > self.limits.max_message_size:
            self._fail(replies.MESSAGE_TOO_BIG)
            return
        self._chunks.append(region)

    def _check_lines(self, region: bytes) -> None:
        cap = self.limits.max_line_length
        first = region.find(b"\r\n")
        if first < 0:
            self._line_length += len(region)
            if self._line_length > cap:
                self._fail(replies.DATA_LINE_TOO_LONG)
            return
        if self._line_length + first > cap:
            self._fail(replies.DATA_LINE_TOO_LONG)
        last = region.rfind(b"\r\n")
        if last - first > cap and max(map(len, region[first:last].split(b"\r\n"))) > cap:
            self._fail(replies.DATA_LINE_TOO_LONG)
        self._line_length = len(region) - last - 2

    def _count_header(self, region: bytes, starts_line: bool) -> None:
        # RFC 5322 2.1: the first empty line ends the header section.
        if starts_line and region.startswith(b"\r\n"):
            self._in_header = False
            return
        end = region.find(b"\r\n\r\n")
        if end >= 0:
            self._in_header = False
            self._header_size += end + 2
        else:
            self._header_size += len(region)
        if self._header_size > self.limits.max_header_size:
            self._fail(replies.HEADER_TOO_BIG)


def check_chunked_body(body: bytes, limits: MessageLimits) -> Reply | None:
    """The DATA reader's content rules applied to a message received with BDAT (RFC 3030).

    BDAT frames by octet count, so nothing can be smuggled, but the stored
    message must meet the same rules as one sent with DATA.
    """
    if len(body) > limits.max_message_size:
        return replies.MESSAGE_TOO_BIG
    if _BARE_NEWLINE.search(body):
        return replies.BARE_NEWLINE
    if body.startswith(b"\r\n"):
        header_size = 0
    else:
        end = body.find(b"\r\n\r\n")
        header_size = len(body) if end < 0 else end + 2
    if header_size > limits.max_header_size:
        return replies.HEADER_TOO_BIG
    if len(body) > limits.max_line_length and max(map(len, body.split(b"\r\n"))) > limits.max_line_length:
        return replies.DATA_LINE_TOO_LONG
    return None


class ChunkReader:
    """Consumes exactly `size` octets of one BDAT chunk (RFC 3030 2), keeping at most `room`."""

    def __init__(self, size: int, room: int):
        self.remaining = size
        self.room = room
        self.overflowed = False
        self._chunks: list[bytes] = []

    @property
    def done(self) -> bool:
        return self.remaining == 0

    @property
    def data(self) -> bytes:
        return b"".join(self._chunks)

    def feed(self, data: bytes) -> int:
        take = min(self.remaining, len(data))
        piece = data[:take]
        self.remaining -= take
        if not self.overflowed:
            if len(piece) > self.room:
                self.overflowed = True
                self._chunks = []
            else:
                self.room -= len(piece)
                self._chunks.append(piece)
        return take
