"""Mail files in and out: mbox (plain or gzip) and Maildir, streamed with bounded memory.

Reading (iter_source) yields SourceMessage objects whose raw bytes are in the
store's canonical form (RFC 5322 2.1: CRLF line ends). Problems are reported
in-band: a message with `error` set and empty `raw`, never an exception.

mbox dialect. The files we read and write are mboxo, the dialect of Python's
mailbox module, Postfix, mutt and the shared corpus: a body line beginning
"From " is written ">From ", and nothing else is quoted. The reader removes
one ">" from lines beginning exactly ">From " and leaves ">>From " alone (an
mboxrd reader would turn ">>>From" into ">>From"; the shared corpus has 15
such lines and no ">From " line, so only mboxo gives back every message as
Python's mailbox.mbox sees it). The writer quotes "From " as ">From ", so
export(import(file)) reproduces every message of an mboxo file byte for byte,
and import(export(message)) gives back every message import can produce.
What mboxo cannot express: a stored message with a line beginning ">From "
(from SMTP, say) exports as ">From " and re-imports as "From ".

A new message starts at a "From " line carrying a sender and a date (RFC 4155;
ctime or RFC 5322 form), as mutt requires; other "From " lines are body. The
empty line before a From_ line, and at the end of the file, is the separator,
not part of the message (as in Python's mailbox).

Line ends. Each LF, with any CRs just before it, becomes CRLF: a CR before LF
cannot be told apart from a CRLF line end once the file has been written with
LF ends, so it is taken as part of the line end. Every other CR (a bare CR
inside a line) is kept byte for byte and written back unchanged. A message
not ending in a line break gets CRLF. Writers emit LF line ends.
"""

from __future__ import annotations

import calendar
import dataclasses
import email.utils
import gzip
import os
import re
import socket
import time
import zlib
from typing import BinaryIO, Iterable, Iterator, Optional

DEFAULT_MAX_MESSAGE_SIZE = 25 * 1024 * 1024
_CHUNK = 64 * 1024  # longest piece of a line read at once; longer lines come in pieces
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_KEYWORDS_FILE = 64 * 1024


@dataclasses.dataclass(frozen=True)
class SourceMessage:
    """One message read from a mail file, or one problem found in it.

    raw: the message with CRLF line ends (b"" when error is set).
    flags: IMAP flags and keywords, e.g. {"\\Seen", "$Forwarded"}.
    internal_date: unix time from the mbox From_ line or the Maildir file's mtime.
    index: 1-based position of the message in the source.
    error: None, or why this message (or the rest of the source) was not read.
    """

    raw: bytes
    flags: frozenset = frozenset()
    internal_date: Optional[float] = None
    index: int = 0
    error: Optional[str] = None


def iter_source(path: str, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Iterator[SourceMessage]:
    """Messages of an mbox, a gzip-compressed mbox (detected by its magic number,
    not its name) or a Maildir (a directory with cur/, new/ and tmp/)."""
    if os.path.isdir(path):
        if is_maildir(path):
            yield from iter_maildir(path, max_message_size)
        else:
            yield SourceMessage(b"", index=1, error=f"{path} is a directory but not a Maildir "
                                                   f"(it needs cur/, new/ and tmp/)")
        return
    try:
        handle = open(path, "rb")
    except OSError as exc:
        yield SourceMessage(b"", index=1, error=f"cannot open {path}: {exc.strerror or exc}")
        return
    with handle:
        try:
            compressed = handle.peek(2)[:2] == _GZIP_MAGIC
        except OSError as exc:
            yield SourceMessage(b"", index=1, error=f"cannot read {path}: {exc.strerror or exc}")
            return
        if compressed:
            with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
                yield from iter_mbox(stream, max_message_size)
        else:
            yield from iter_mbox(handle, max_message_size)


def is_maildir(path: str) -> bool:
    return all(os.path.isdir(os.path.join(path, sub)) for sub in ("cur", "new", "tmp"))


# --- mbox reading --------------------------------------------------------------

_MONTHS = {name: number for number, name in enumerate(
    (b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec"),
    start=1)}
_WEEKDAY = rb"(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*,?[ \t]+"
_MONTH = rb"(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*"
_TIME = rb"(\d{1,2}):(\d\d)(?::(\d\d))?"
# RFC 4155 2: "From " sender date, the date in ctime form ("Thu Aug 22 12:36:23 2002",
# optionally with a zone before or after the year) or, from some writers, RFC 5322 form.
_FROM_CTIME = re.compile(rb"From [^ \t]*[ \t]+(?:" + _WEEKDAY + rb")?" + _MONTH + rb"[ \t]+(\d{1,2})[ \t]+"
                         + _TIME + rb"[ \t]+(?:([a-z]{1,5}|[+-]\d{4})[ \t]+)?(\d{4})(?:[ \t]+([+-]\d{4}))?",
                         re.I)
_FROM_RFC5322 = re.compile(rb"From [^ \t]*[ \t]+(?:" + _WEEKDAY + rb")?(\d{1,2})[ \t]+" + _MONTH
                           + rb"[ \t]+(\d{4})[ \t]+" + _TIME + rb"(?:[ \t]+([+-]\d{4}))?", re.I)
_NOT_A_FROM_LINE = object()


def _from_line_date(line: bytes):
    """The unix time of an mbox From_ line (zone-less dates are taken as UTC),
    or _NOT_A_FROM_LINE if `line` (without its line end) is not one."""
    match = _FROM_CTIME.match(line)
    if match:
        month, day, hour, minute, second, zone, year, zone_after = match.groups()
    else:
        match = _FROM_RFC5322.match(line)
        if not match:
            return _NOT_A_FROM_LINE
        day, month, year, hour, minute, second, zone_after = match.groups()
        zone = None
    try:
        stamp = calendar.timegm((int(year), _MONTHS[month[:3].lower()], int(day), int(hour),
                                 int(minute), int(second or 0)))
    except (ValueError, OverflowError):
        return None  # a From_ line with an impossible date: still a separator
    for offset in (zone_after, zone):
        if offset and offset[:1] in b"+-" and offset[1:].isdigit():
            minutes = int(offset[1:3]) * 60 + int(offset[3:5])
            stamp -= minutes * 60 if offset[:1] == b"+" else -minutes * 60
            break
    return float(stamp)


def iter_mbox(stream: BinaryIO, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Iterator[SourceMessage]:
    """Messages of an mboxo stream, read in pieces of at most 64 KiB (see the module doc).

    A message over max_message_size is skipped and reported, and reading goes on.
    Text before the first From_ line, or a stream that fails mid-way (truncated or
    corrupt gzip), ends the reading: the complete messages before it are yielded,
    then one SourceMessage with `error`; the message cut short is not yielded.
    """
    reader = _MboxReader(max_message_size)
    while True:
        try:
            chunk = stream.readline(_CHUNK)
        except (EOFError, zlib.error, OSError) as exc:  # gzip.BadGzipFile is an OSError
            if reader.index:
                detail = f"message {reader.index} is cut short and was not read"
            else:
                detail = "no message could be read"
            yield SourceMessage(b"", index=max(reader.index, 1),
                                error=f"the file is damaged ({_describe(exc)}); {detail}")
            return
        if not chunk:
            break
        finished = reader.feed(chunk)
        if finished is not None:
            yield finished
            if finished.error and reader.stopped:
                return
    finished = reader.finish()
    if finished is not None:
        yield finished


def _describe(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "compressed data ends early"
    return str(exc) or type(exc).__name__


class _MboxReader:
    """The mbox state machine: feed it pieces of lines as readline(limit) returns them."""

    def __init__(self, max_message_size: int):
        self.max_message_size = max_message_size
        self.index = 0  # the message being read, 1-based; 0 before the first From_ line
        self.stopped = False
        self.at_line_start = True
        self.held_crs = 0  # CRs at the end of a line piece: dropped if the line ends right after
        self.pending_blank = False  # an empty line that may turn out to be the separator
        self._reset(None)

    def _start(self, internal_date: Optional[float]) -> None:
        self.index += 1
        self._reset(internal_date)

    def _reset(self, internal_date: Optional[float]) -> None:
        self.pieces: list[bytes] = []
        self.size = 0
        self.too_big = False
        self.in_header = True
        self.flags: set[str] = set()
        self.internal_date = internal_date

    def feed(self, chunk: bytes) -> Optional[SourceMessage]:
        ends_line = chunk.endswith(b"\n")
        content = chunk[:-1] if ends_line else chunk
        at_line_start = self.at_line_start
        self.at_line_start = ends_line
        if at_line_start and ends_line:
            line = content.rstrip(b"\r")
            if line.startswith(b"From "):
                date = _from_line_date(line)
                if date is not _NOT_A_FROM_LINE:
                    finished = self._finish_message() if self.index else None
                    self._start(date)
                    self.pending_blank = False
                    return finished
            if not line:  # an empty line
                if self.index == 0:
                    return None  # empty lines before the first message are harmless
                if self.pending_blank:
                    self._append(b"\r\n")
                self.pending_blank = True
                self.in_header = False
                return None
        if self.index == 0:
            self.stopped = True
            return SourceMessage(b"", index=1, error="not an mbox file: it does not begin "
                                                     "with a From_ line")
        if self.pending_blank:
            self._append(b"\r\n")
            self.pending_blank = False
        if at_line_start:
            if content.startswith(b">From "):
                content = content[1:]  # mboxo: one ">" was added to "From " by the writer
            if self.in_header:
                self._note_status(content)
        if ends_line:
            line = content.rstrip(b"\r")
            piece = b"\r" * self.held_crs + line if line else b""
            self.held_crs = 0
            self._append(piece + b"\r\n")
        else:
            kept = content.rstrip(b"\r")
            if kept:
                self._append(b"\r" * self.held_crs + kept)
                self.held_crs = len(content) - len(kept)
            else:
                self.held_crs += len(content)
        return None

    def finish(self) -> Optional[SourceMessage]:
        """The last message, at the end of the stream."""
        if self.index == 0 or self.stopped:
            return None
        self.held_crs = 0  # CRs at the very end are line-end noise too
        if self.pieces and not self.at_line_start:
            self._append(b"\r\n")
        return self._finish_message()

    def _append(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.too_big:
            return
        if self.size > self.max_message_size:
            self.too_big = True
            self.pieces = []
            return
        self.pieces.append(piece)

    def _finish_message(self) -> SourceMessage:
        if self.too_big:
            return SourceMessage(b"", index=self.index, internal_date=self.internal_date,
                                 error=f"message {self.index} is larger than "
                                       f"{self.max_message_size} bytes; skipped")
        raw = b"".join(self.pieces)
        self.pieces = []
        if not raw:
            return SourceMessage(b"", index=self.index, error=f"message {self.index} is empty; skipped")
        return SourceMessage(raw, frozenset(self.flags), self.internal_date, self.index)

    def _note_status(self, line: bytes) -> None:
        """Flags from the Status: and X-Status: fields mutt and Dovecot write into mbox
        messages (the fields themselves stay in the message)."""
        name, colon, value = line.partition(b":")
        if not colon:
            return
        name = name.strip().lower()
        if name == b"status":
            if b"R" in value:
                self.flags.add("\\Seen")
        elif name == b"x-status":
            for letter, flag in ((b"A", "\\Answered"), (b"F", "\\Flagged"), (b"T", "\\Draft"),
                                 (b"D", "\\Deleted")):
                if letter in value:
                    self.flags.add(flag)


# --- Maildir reading -----------------------------------------------------------

# Maildir info ":2," letters (cr.yp.to/proto/maildir.html; P as in mutt and Dovecot).
_FLAG_LETTERS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered",
                 "S": "\\Seen", "T": "\\Deleted"}
_LETTER_OF_FLAG = {flag.lower(): letter for letter, flag in _FLAG_LETTERS.items()}
_LINE_END = re.compile(rb"\r*\n")
_DIGIT_RUNS = re.compile(r"\d+|\D+")


def iter_maildir(path: str, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Iterator[SourceMessage]:
    """Messages in new/ and cur/ (tmp/ holds deliveries in progress), oldest first
    by the delivery time that starts each file name. Flags come from the ":2," info
    (new/ messages have none); lower-case letters are keywords named in Dovecot's
    dovecot-keywords file."""
    keywords = _read_keywords(path)
    entries: list[tuple[tuple, str, str]] = []
    for sub in ("new", "cur"):
        try:
            with os.scandir(os.path.join(path, sub)) as listing:
                for entry in listing:
                    if not entry.name.startswith(".") and entry.is_file():
                        entries.append((_delivery_order(entry.name), entry.name, sub))
        except OSError as exc:
            yield SourceMessage(b"", index=1, error=f"cannot list {path}/{sub}: {exc.strerror or exc}")
            return
    entries.sort()
    for index, (_order, name, sub) in enumerate(entries, start=1):
        flags = maildir_flags(name, keywords) if sub == "cur" else frozenset()
        yield _read_maildir_file(os.path.join(path, sub, name), index, flags, max_message_size)


def _delivery_order(name: str) -> tuple:
    """Sort key for Maildir names "seconds.M<usec>P<pid>Q<n>.host:2,...": numbers compare
    as numbers (writers do not pad microseconds), the rest as text."""
    unique = name.partition(":")[0]
    return tuple((0, int(run), "") if run.isdigit() else (1, 0, run) for run in _DIGIT_RUNS.findall(unique))


def _read_maildir_file(file_path: str, index: int, flags: frozenset,
                       max_message_size: int) -> SourceMessage:
    try:
        with open(file_path, "rb") as handle:
            mtime = os.fstat(handle.fileno()).st_mtime
            data = handle.read(max_message_size + 1)
    except OSError as exc:  # e.g. a mail client moved it meanwhile
        return SourceMessage(b"", index=index, error=f"cannot read {file_path}: {exc.strerror or exc}")
    raw = canonical_line_ends(data)
    if len(data) > max_message_size or len(raw) > max_message_size:
        return SourceMessage(b"", index=index, error=f"message {index} ({os.path.basename(file_path)}) "
                                                     f"is larger than {max_message_size} bytes; skipped")
    if not raw:
        return SourceMessage(b"", index=index, error=f"message {index} ({os.path.basename(file_path)}) "
                                                     f"is empty; skipped")
    return SourceMessage(raw, flags, mtime, index)


def canonical_line_ends(data: bytes) -> bytes:
    """LF (with any CRs just before it) -> CRLF; a final line without one gets CRLF."""
    data = _LINE_END.sub(b"\r\n", data)
    if data and not data.endswith(b"\n"):
        data = data.rstrip(b"\r") + b"\r\n"
    return data


def maildir_flags(name: str, keywords: Optional[dict] = None) -> frozenset:
    """IMAP flags of a Maildir file name "unique:2,FLAGS"."""
    _unique, separator, info = name.rpartition(":2,")
    if not separator:
        return frozenset()
    flags = set()
    for letter in info:
        if letter in _FLAG_LETTERS:
            flags.add(_FLAG_LETTERS[letter])
        elif keywords and letter in keywords:
            flags.add(keywords[letter])
    return frozenset(flags)


def _read_keywords(path: str) -> dict:
    """Dovecot's dovecot-keywords: lines "N keyword", N 0..25 meaning letters a..z."""
    try:
        with open(os.path.join(path, "dovecot-keywords"), "rb") as handle:
            text = handle.read(_MAX_KEYWORDS_FILE).decode("utf-8", "replace")
    except OSError:
        return {}
    keywords = {}
    for line in text.splitlines():
        number, _space, keyword = line.strip().partition(" ")
        if number.isdigit() and int(number) < 26 and _valid_keyword(keyword):
            keywords[chr(ord("a") + int(number))] = keyword
    return keywords


def _valid_keyword(keyword: str) -> bool:
    # RFC 3501 9: flag-keyword = atom (no controls, space or atom-specials).
    return bool(keyword) and not any(c in '(){ %*"\\]' or ord(c) < 0x21 or ord(c) > 0x7E
                                     for c in keyword)


# --- writing -------------------------------------------------------------------

def _lf_line_ends(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n")


class MboxWriter:
    """Writes mboxo to a binary file object (not closed by close()).

    Each message: "From MAILER-DAEMON <ctime in UTC of internal_date or now>",
    the message with LF line ends and "From " lines quoted as ">From ", a line end
    if it lacked one, then the empty separator line. mbox keeps no flags: adding
    Status: fields would change the message, so `flags` is accepted and ignored.
    """

    def __init__(self, fileobj: BinaryIO):
        self.file = fileobj
        self.count = 0

    def write(self, raw: bytes, flags: Iterable[str] = (), internal_date: Optional[float] = None) -> None:
        when = time.time() if internal_date is None else internal_date
        try:
            stamp = time.asctime(time.gmtime(when))
        except (OverflowError, OSError, ValueError):
            stamp = time.asctime(time.gmtime())
        body = _lf_line_ends(raw)
        if body.startswith(b"From "):
            body = b">" + body
        body = body.replace(b"\nFrom ", b"\n>From ")
        ending = b"\n" if body.endswith(b"\n") else b"\n\n"
        self.file.write(b"From MAILER-DAEMON " + stamp.encode("ascii") + b"\n" + body + ending)
        self.count += 1

    def close(self) -> None:
        self.file.flush()

    def __enter__(self) -> "MboxWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class MaildirWriter:
    """Writes a Maildir: each message to tmp/, fsync, then renamed into cur/ with
    ":2,<flags>" info (flag letters in ASCII order) and its mtime set to the
    internal date. Keywords other than $Forwarded get letters a..z recorded in
    dovecot-keywords (26 at most; more are dropped). close() fsyncs cur/ so the
    renames survive a crash.
    """

    def __init__(self, path: str):
        self.path = path
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)
        self.keywords = {keyword: letter for letter, keyword in _read_keywords(path).items()}
        self.count = 0
        self._host = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"
        self._sequence = 0

    def write(self, raw: bytes, flags: Iterable[str] = (), internal_date: Optional[float] = None) -> str:
        """Store one message; returns its file name in cur/."""
        now = time.time()
        self._sequence += 1
        # cr.yp.to/proto/maildir.html: time, then a part unique on this host, then the host.
        unique = f"{int(now)}.M{int(now * 1e6) % 1000000:06d}P{os.getpid()}Q{self._sequence}.{self._host}"
        name = unique + ":2," + "".join(sorted(self._letters(flags)))
        temporary = os.path.join(self.path, "tmp", unique)
        with open(temporary, "xb") as handle:
            handle.write(_lf_line_ends(raw))
            handle.flush()
            os.fsync(handle.fileno())
        if internal_date is not None:
            os.utime(temporary, (internal_date, internal_date))
        os.rename(temporary, os.path.join(self.path, "cur", name))
        self.count += 1
        return name

    def _letters(self, flags: Iterable[str]) -> set[str]:
        letters = set()
        for flag in flags:
            letter = _LETTER_OF_FLAG.get(flag.lower())
            if letter is None and not flag.startswith("\\") and _valid_keyword(flag):
                letter = self._keyword_letter(flag)
            if letter:
                letters.add(letter)
        return letters

    def _keyword_letter(self, keyword: str) -> Optional[str]:
        letter = self.keywords.get(keyword)
        if letter is None and len(self.keywords) < 26:
            used = set(self.keywords.values())
            letter = next(chr(code) for code in range(ord("a"), ord("z") + 1) if chr(code) not in used)
            self.keywords[keyword] = letter
            self._save_keywords()
        return letter

    def _save_keywords(self) -> None:
        lines = sorted((ord(letter) - ord("a"), keyword) for keyword, letter in self.keywords.items())
        temporary = os.path.join(self.path, "tmp", f"dovecot-keywords.{os.getpid()}")
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.writelines(f"{number} {keyword}\n" for number, keyword in lines)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, os.path.join(self.path, "dovecot-keywords"))

    def close(self) -> None:
        for directory in (os.path.join(self.path, "cur"), self.path):
            descriptor = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

    def __enter__(self) -> "MaildirWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
