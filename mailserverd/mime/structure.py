"""A non-recursive scan of a message's MIME tree, with limits.

iter_parts() walks raw bytes once, following multipart boundary parameters
(RFC 2046 5.1.1) with an explicit stack instead of recursion, and descends
into encapsulated messages (RFC 2046 5.2). It finds every entity the email
package would build, so limits checked here hold before that package (which
recurses once per level) ever sees the message.

Line ends are CRLF, LF or a bare CR, as Python's email parser accepts all three.
"""

from __future__ import annotations

import dataclasses
import email.message
import email.policy
import functools
import re
from typing import Callable, Iterator, Optional

from .headers import parse_content_type, parse_disposition

DEFAULT_MAX_HEADER_SIZE = 102400
DEFAULT_MAX_MIME_DEPTH = 100
DEFAULT_MAX_PARTS = 10000


class MessageTooComplex(ValueError):
    """The message exceeds a parsing limit; str(exc) is the reason, safe to show."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Part:
    """One MIME entity: the whole message (depth 0), a body part, or an encapsulated message.

    Offsets index the raw message: the entity's header is raw[header_start:body_start],
    its body raw[body_start:body_end] (RFC 2046 5.1.1: the line break before a
    boundary delimiter belongs to the delimiter, not to the body).
    """

    content_type: str
    params: dict
    disposition: str
    disposition_params: dict
    transfer_encoding: str
    header_start: int
    body_start: int
    body_end: int
    depth: int
    ancestors: tuple  # content types of the enclosing entities, outermost first

    @property
    def is_multipart(self) -> bool:
        return self.content_type.startswith("multipart/")


HeaderHook = Callable[[bytes], None]

# Python's email feedparser takes a line as a header line if it matches
# email.feedparser.headerRE; the first other line starts the body. One match of
# _HEADER_RUN is a whole run of such lines.
_HEADER_RUN = re.compile(rb"(?:(?:From |[\x21-\x39\x3b-\x7e]*:|[ \t])[^\r\n]*(?:\r\n|\r|\n|\Z))*")
_EMPTY_LINE = re.compile(rb"\r\n|\r|\n")
_FOLD = re.compile(rb"(?:\r\n|\r|\n)(?=[ \t])")
_MIME_SLOTS = {b"content-type": 0, b"content-disposition": 1, b"content-transfer-encoding": 2}
# A Content-* field at a line start the caller found (see _mime_fields).
_MIME_FIELD_AT = re.compile(rb"(content-(?:type|disposition|transfer-encoding))[ \t]*:"
                            rb"([^\r\n]*(?:(?:\r\n|\r|\n)[ \t][^\r\n]*)*)", re.I)
_LINE_ENDS = (10, 13)
MAX_BOUNDARY = 1000  # RFC 2046 5.1.1 allows 70; a longer one makes the message too complex


@dataclasses.dataclass
class _Open:
    """An entity whose end is not known yet."""

    content_type: str
    params: dict
    disposition: str
    disposition_params: dict
    transfer_encoding: str
    header_start: int
    body_start: int
    depth: int
    ancestors: tuple
    enclosing_frames: int  # how many multipart boundaries were open around it

    def close(self, body_end: int) -> Part:
        return Part(self.content_type, self.params, self.disposition, self.disposition_params,
                    self.transfer_encoding, self.header_start, self.body_start,
                    max(body_end, self.body_start), self.depth, self.ancestors)


def iter_parts(raw: bytes, *, max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
               max_mime_depth: int = DEFAULT_MAX_MIME_DEPTH, max_parts: int = DEFAULT_MAX_PARTS,
               header_hook: Optional[HeaderHook] = None,
               as_email_package: bool = False) -> Iterator[Part]:
    """Yield every entity of `raw` as its end becomes known (leaves in document order,
    containers after their contents).

    Raises MessageTooComplex, lazily, when an entity's header exceeds
    max_header_size, nesting exceeds max_mime_depth (the whole message is depth 0),
    there are more than max_parts entities or a boundary is longer than
    MAX_BOUNDARY. header_hook(header_bytes) sees the header section of every
    entity, nested messages included, before its fields are parsed, and may raise.

    With as_email_package, each entity's content type and boundary are those the
    email package itself derives from its Content-Type field (quirks included),
    so the structure walked is exactly the one that package would recurse into.
    """
    frames: list[_Frame] = []  # the open multiparts, outermost first
    open_entities: list[_Open] = []
    count = 0
    position = 0
    depth, ancestors, default_type = 0, (), "text/plain"

    while True:
        # Read one entity header at `position`, then any encapsulated message headers.
        while True:
            count += 1
            if count > max_parts:
                raise MessageTooComplex(f"more than {max_parts} MIME parts")
            if depth > max_mime_depth:
                raise MessageTooComplex(f"MIME nesting deeper than {max_mime_depth} levels")
            header_end, body_start, at_delimiter = _header_bounds(raw, position, frames,
                                                                  max_header_size)
            header = raw[position:header_end]
            if header_hook is not None:
                header_hook(header)
            fields = _mime_fields(header)
            content_type, params = parse_content_type(_unfold(fields[0]), default_type)
            boundary = params.get("boundary")
            # RFC 2046 5.1.1: a boundary cannot end in a space; the email package strips it too.
            boundary = None if boundary is None else boundary.rstrip().encode("utf-8", "surrogateescape")
            if as_email_package:
                content_type, boundary = _email_package_view(fields[0], default_type)
            disposition, disposition_params = parse_disposition(_unfold(fields[1]))
            encoding = _unfold(fields[2]) or b"7bit"
            open_entities.append(_Open(content_type, params, disposition, disposition_params,
                                       encoding.decode("ascii", "replace").strip().lower(),
                                       position, body_start, depth, ancestors, len(frames)))
            if at_delimiter:  # a boundary line ended the header: the body is empty
                break
            if content_type.startswith("multipart/") and boundary is not None:
                if len(boundary) > MAX_BOUNDARY:
                    raise MessageTooComplex(f"a MIME boundary is longer than {MAX_BOUNDARY} bytes")
                frames.append(_Frame(boundary, depth, content_type, ancestors))
                break
            # RFC 2046 5.2: message/* bodies are messages; the email package parses
            # all but delivery-status (RFC 3464 header blocks) as nested messages.
            if content_type.startswith("message/") and content_type != "message/delivery-status":
                position, depth = body_start, depth + 1
                ancestors, default_type = ancestors + (content_type,), "text/plain"
                continue
            break
        position = body_start

        # Find the next boundary line of any open multipart.
        while True:
            found = _next_delimiter(raw, position, frames)
            if found is None:
                for entity in reversed(open_entities):
                    yield entity.close(len(raw))
                return
            frame_number, (delimiter_start, next_line, closing) = found
            # Deeper multiparts left unterminated end here too, as in the email package.
            del frames[frame_number + 1:]
            while open_entities and open_entities[-1].enclosing_frames > frame_number:
                yield open_entities.pop().close(delimiter_start)
            position = next_line
            frame = frames[frame_number]
            frame.next = _STALE
            if closing:  # RFC 2046 5.1.1 close-delimiter: what follows is epilogue
                frames.pop()
                continue
            depth = frame.depth + 1
            ancestors = frame.ancestors + (frame.content_type,)
            # RFC 2046 5.1.5: in a digest, parts default to message/rfc822.
            default_type = "message/rfc822" if frame.content_type == "multipart/digest" else "text/plain"
            break


_STALE = object()


class _Frame:
    """An open multipart: its boundary and the next delimiter line found for it."""

    __slots__ = ("boundary", "depth", "content_type", "ancestors", "pattern", "next")

    def __init__(self, boundary: bytes, depth: int, content_type: str, ancestors: tuple):
        self.boundary, self.depth = boundary, depth
        self.content_type, self.ancestors = content_type, ancestors
        self.pattern = _delimiter_pattern(boundary)
        self.next = _STALE  # (delimiter_start, next_line, closing), None, or _STALE


@functools.lru_cache(maxsize=1024)
def _delimiter_pattern(boundary: bytes) -> re.Pattern:
    """RFC 2046 5.1.1: a delimiter is a line "--" boundary, "--" more for the close
    delimiter, then optional transport padding. The literal comes first so the
    search runs at memchr speed; the look-behind keeps it to line starts."""
    literal = re.escape(b"--" + boundary)
    return re.compile(literal + rb"(?<=[\r\n]" + literal + rb")(--)?[ \t]*(?:\r\n|\r|\n|\Z)")


def _search(frame: _Frame, raw: bytes, position: int, end: int):
    match = frame.pattern.search(raw, position, end)
    if match is None:
        return None
    start = match.start()
    # The line break before the delimiter belongs to it (RFC 2046 5.1.1).
    start -= 2 if raw[start - 2:start] == b"\r\n" else 1
    return max(start, position), match.end(), match.group(1) is not None


def _next_delimiter(raw: bytes, position: int, frames: list):
    """(frame number, (delimiter_start, next_line, closing)) of the first delimiter line
    of any open multipart at or after `position` (a line start), or None.

    Each frame remembers the delimiter it found, so every byte is searched at most
    once per enclosing multipart; an inner search stops where an outer delimiter
    starts, because the outer delimiter ends the inner multipart anyway.
    """
    end, best = len(raw), None
    for number, frame in enumerate(frames):
        if frame.next is _STALE:
            frame.next = _search(frame, raw, position, end)
        if frame.next is not None and frame.next[0] < end:
            end, best = frame.next[0], (number, frame.next)
    return best


def _header_bounds(raw: bytes, position: int, frames: list,
                   max_header_size: int) -> tuple[int, int, bool]:
    """(header_end, body_start, stopped_at_delimiter) of the header section at `position`."""
    run_end = _HEADER_RUN.match(raw, position).end()  # C speed; oversize is refused below
    if frames:
        # A delimiter line ends a part's header even where it looks like a header
        # line (a boundary may contain ":"), as in the email package.
        for frame in frames:
            if b":" in frame.boundary:
                match = frame.pattern.search(raw, position, run_end)
                if match is not None:
                    run_end = match.start()
        if raw.startswith(b"--", run_end) and any(
                frame.pattern.match(raw, run_end) for frame in frames):
            return run_end, run_end, True
    if run_end - position > max_header_size:
        raise MessageTooComplex(f"a header section exceeds {max_header_size} bytes")
    empty = _EMPTY_LINE.match(raw, run_end)
    if empty is not None:  # RFC 5322 2.1: the empty line ends the header section
        return run_end, empty.end(), False
    return run_end, run_end, False  # a non-header line or the end: the body starts here


def _mime_fields(header: bytes) -> list:
    """[Content-Type, Content-Disposition, Content-Transfer-Encoding] raw values, the
    first of each (names compared without regard to case, as the email package does).

    Candidates are found with bytes.find on a lower-cased copy and matched only
    where a line starts: a case-insensitive regex tried at every offset cost
    ~0.15 ms per header block, a tenth of a delivery's CPU."""
    fields: list = [None, None, None]
    lowered = header.lower()
    position = lowered.find(b"content-")
    while position >= 0:
        if position == 0 or header[position - 1] in _LINE_ENDS:
            match = _MIME_FIELD_AT.match(header, position)
            if match is not None:
                slot = _MIME_SLOTS[match.group(1).lower()]
                if fields[slot] is None:
                    fields[slot] = match.group(2)
        position = lowered.find(b"content-", position + 8)
    return fields


def _unfold(value: Optional[bytes]) -> Optional[bytes]:
    return None if value is None else _FOLD.sub(b"", value).strip(b" \t\r\n")


@functools.lru_cache(maxsize=4096)
def _email_package_view(value: Optional[bytes], default_type: str) -> tuple[str, Optional[bytes]]:
    """(content type, boundary or None) as email.feedparser derives them from this
    raw Content-Type value. Callers vet the value first (mime.limits): the email
    package's own parser recurses on nested comments."""
    message = email.message.EmailMessage(policy=email.policy.default)
    message.set_default_type(default_type)
    if value is not None:
        # email.parser.BytesParser decodes ASCII with surrogateescape, and
        # Policy.header_source_parse strips leading blanks and the final line end.
        message.set_raw("Content-Type", value.decode("ascii", "surrogateescape").lstrip(" \t"))
    content_type = message.get_content_type()
    if message.get_content_maintype() != "multipart":
        return content_type, None
    boundary = message.get_boundary()
    if boundary is None:
        return content_type, None
    try:
        return content_type, boundary.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        # Characters no surrogateescape-decoded line can contain: it never matches.
        return content_type, None
