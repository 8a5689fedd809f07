"""Rendering IMAP server responses to bytes (RFC 9051 7 and 9 "response").

render() turns nested Python values into IMAP data: None -> NIL, int ->
number, str/bytes -> quoted string or literal, tuple/list -> parenthesised
list, Atom -> verbatim, Raw -> pre-rendered bytes (e.g. a cached
BODYSTRUCTURE), Concat -> items side by side without separators,
LiteralString -> always a literal. It is iterative, so a deeply nested
BODYSTRUCTURE cannot exhaust the interpreter stack. Every line ends in CRLF; text from elsewhere
is stripped of CR, LF and NUL so it can never end a response early.
"""

from __future__ import annotations

import datetime
import re
from typing import Iterable, Mapping, Optional, Sequence, Union

from . import mutf7
from .fetch import FetchAtt
from .sequence import compress

CRLF = b"\r\n"
MAX_QUOTED = 1024  # longer strings go out as literals

_ASTRING_ATOM = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\\x80-\xff]+')
_QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")
_UNSAFE_TEXT = re.compile(r"[\r\n\x00]+")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class Atom(str):
    """Sent verbatim: flags, keywords, NIL-free atoms such as capability names."""


class Raw(bytes):
    """Already rendered IMAP data, sent verbatim."""


class Concat(tuple):
    """Items written one after another with no space and no parentheses, as the
    bodies of a multipart BODYSTRUCTURE are (RFC 9051 9: 1*body SP subtype)."""


class LiteralString(bytes):
    """A string always sent as a literal {n}, whatever its content."""


class Literal8(bytes):
    """Binary content sent as literal8 ~{n} (RFC 3516 4.3), e.g. BINARY[] with NUL."""


Value = Union[None, int, str, bytes, Atom, Raw, Sequence]


# -- strings ------------------------------------------------------------------

def quoted(data: bytes) -> bytes:
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def string(value: Union[str, bytes]) -> bytes:
    """A string: quoted when it is short 7-bit text without CR/LF/NUL, else a literal."""
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(data) <= MAX_QUOTED and _QUOTABLE.fullmatch(data):
        if b'"' in data or b"\\" in data:
            return quoted(data)
        return b'"' + data + b'"'
    return literal(data)


def astring(value: Union[str, bytes]) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if _ASTRING_ATOM.fullmatch(data) and data.upper() != b"NIL":
        return data
    return string(data)


def nstring(value: Optional[Union[str, bytes]]) -> bytes:
    return b"NIL" if value is None else string(value)


def mailbox(name: str, utf8: bool = False) -> bytes:
    """A mailbox name on the wire: modified UTF-7 (RFC 3501 5.1.3) unless UTF8=ACCEPT."""
    if utf8:
        return astring(name)
    return astring(mutf7.encode(name))


def text(value: str) -> bytes:
    return _UNSAFE_TEXT.sub(" ", value).strip().encode("utf-8")


# -- data -----------------------------------------------------------------

def _scalar(item) -> bytes:
    kind = type(item)
    if kind is bytes:
        return string(item)
    if kind is int:
        return b"%d" % item
    if item is None:
        return b"NIL"
    if isinstance(item, Raw):
        return bytes(item)
    if isinstance(item, Literal8):
        return b"~{%d}\r\n" % len(item) + bytes(item)
    if isinstance(item, LiteralString):
        return literal(bytes(item))
    if isinstance(item, Atom):
        return item.encode("ascii")
    if isinstance(item, bool):
        raise TypeError("booleans have no IMAP form")
    if isinstance(item, int):
        return b"%d" % item
    if isinstance(item, (str, bytes, bytearray)):
        return string(item)
    raise TypeError("cannot render %r" % type(item).__name__)


def render(value: Value) -> bytes:
    """Render nested values (see the module docstring) without recursion."""
    out = bytearray()
    stack = [(iter((value,)), b" ", b"")]
    first = [True]
    while stack:
        iterator, separator, closing = stack[-1]
        try:
            item = next(iterator)
        except StopIteration:
            stack.pop()
            first.pop()
            out += closing
            continue
        if first[-1]:
            first[-1] = False
        else:
            out += separator
        if isinstance(item, Concat):
            stack.append((iter(item), b"", b""))
            first.append(True)
        elif isinstance(item, (list, tuple)):
            out += b"("
            stack.append((iter(item), b" ", b")"))
            first.append(True)
        else:
            out += _scalar(item)
    return bytes(out)


def flags(names: Iterable[str]) -> bytes:
    return b"(" + b" ".join(name.encode("ascii") for name in names) + b")"


def internal_date(when: Union[float, datetime.datetime]) -> bytes:
    """date-time (RFC 9051 9): "dd-Mon-yyyy hh:mm:ss +zzzz"; a unix time is shown in UTC."""
    if not isinstance(when, datetime.datetime):
        when = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    offset = when.utcoffset() or datetime.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return ('"%02d-%s-%04d %02d:%02d:%02d %s%02d%02d"' % (
        when.day, _MONTHS[when.month - 1], when.year, when.hour, when.minute, when.second,
        sign, minutes // 60, minutes % 60)).encode("ascii")


# -- status responses (RFC 9051 7.1) ----------------------------------------

def _status_line(prefix: bytes, status: str, message: str, code: Optional[str]) -> bytes:
    line = prefix + b" " + status.encode("ascii") + b" "
    if code:
        line += b"[" + text(code).replace(b"]", b"") + b"] "
    return line + (text(message) or b"done") + CRLF


def tagged(tag: str, status: str, message: str, code: Optional[str] = None) -> bytes:
    """`tag OK|NO|BAD [code] text` (RFC 9051 7.1)."""
    return _status_line(tag.encode("ascii"), status, message, code)


def untagged_status(status: str, message: str, code: Optional[str] = None) -> bytes:
    """`* OK|NO|BAD|PREAUTH|BYE [code] text`."""
    return _status_line(b"*", status, message, code)


def bye(message: str) -> bytes:
    return untagged_status("BYE", message)


def continuation(message: str = "Ready") -> bytes:
    """`+ text` (RFC 9051 7.5)."""
    return b"+ " + (text(message) or b"Ready") + CRLF


def continuation_data(base64_data: bytes) -> bytes:
    """`+ base64` for an AUTHENTICATE challenge (RFC 9051 6.2.2)."""
    return b"+ " + base64_data + CRLF


def untagged(data: Union[bytes, str]) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return b"* " + data + CRLF


# -- server data (RFC 9051 7.2-7.5) -----------------------------------------

def capability(names: Iterable[str]) -> bytes:
    return untagged("CAPABILITY " + " ".join(names))


def enabled(names: Iterable[str]) -> bytes:
    """RFC 5161 3.2."""
    return untagged(" ".join(["ENABLED", *names]))


def exists(count: int) -> bytes:
    return b"* %d EXISTS\r\n" % count


def recent(count: int) -> bytes:
    return b"* %d RECENT\r\n" % count


def expunge(sequence_number: int) -> bytes:
    return b"* %d EXPUNGE\r\n" % sequence_number


def vanished(uids: Iterable[int], earlier: bool = False) -> bytes:
    """RFC 7162 3.2.10."""
    prefix = b"* VANISHED (EARLIER) " if earlier else b"* VANISHED "
    return prefix + compress(uids).encode("ascii") + CRLF


def flags_response(names: Iterable[str]) -> bytes:
    return b"* FLAGS " + flags(names) + CRLF


def list_response(attributes: Iterable[str], name: str, utf8: bool = False,
                  extended: Sequence = (), command: str = "LIST",
                  delimiter: Optional[str] = mutf7.HIERARCHY_SEPARATOR) -> bytes:
    """`* LIST (attrs) "/" name [extended items]` (RFC 9051 7.3.1, RFC 5258 9).

    extended: (tag, value) pairs such as ("CHILDINFO", ("SUBSCRIBED",)) or
    ("OLDNAME", (name,)); values render as IMAP data.
    """
    line = (command.encode("ascii") + b" " + flags(attributes) + b" " + nstring(delimiter)
            + b" " + mailbox(name, utf8))
    if extended:
        items = []
        for tag_name, value in extended:
            items.append(quoted(tag_name.encode("ascii")) + b" " + render(value))
        line += b" (" + b" ".join(items) + b")"
    return untagged(line)


def status_response(name: str, items: Mapping[str, int], utf8: bool = False) -> bytes:
    """`* STATUS name (MESSAGES 3 UNSEEN 1)` (RFC 9051 7.2.4)."""
    pairs = b" ".join(b"%s %d" % (key.encode("ascii"), value) for key, value in items.items())
    return untagged(b"STATUS " + mailbox(name, utf8) + b" (" + pairs + b")")


def search_response(numbers: Iterable[int], modseq: Optional[int] = None) -> bytes:
    """`* SEARCH 2 3 [(MODSEQ n)]` (RFC 3501 7.2.5, RFC 7162 3.1.5)."""
    line = b"SEARCH" + b"".join(b" %d" % number for number in numbers)
    if modseq is not None:
        line += b" (MODSEQ %d)" % modseq
    return untagged(line)


def esearch_response(tag: Optional[str], uid: bool, results: Mapping[str, object]) -> bytes:
    """`* ESEARCH (TAG "a") UID MIN 1 ALL 1:3,5` (RFC 4731 3.1). results maps
    MIN/MAX/COUNT/MODSEQ to ints and ALL to an iterable of numbers; an empty
    ALL is left out, as the RFC requires."""
    line = b"ESEARCH"
    if tag is not None:
        line += b" (TAG " + quoted(tag.encode("ascii")) + b")"
    if uid:
        line += b" UID"
    for key, value in results.items():
        if key == "ALL":
            numbers = compress(value)
            if numbers:
                line += b" ALL " + numbers.encode("ascii")
        elif value is not None:
            line += b" %s %d" % (key.encode("ascii"), value)
    return untagged(line)


def sort_response(numbers: Iterable[int], modseq: Optional[int] = None) -> bytes:
    """`* SORT 5 3 4` (RFC 5256 4)."""
    line = b"SORT" + b"".join(b" %d" % number for number in numbers)
    if modseq is not None:
        line += b" (MODSEQ %d)" % modseq
    return untagged(line)


def thread_response(threads: Sequence) -> bytes:
    """`* THREAD (2)(3 6 (4 23)(44 7 96))` (RFC 5256 4).

    Each thread is a node (number, children), children a list of nodes; a
    number of None is a dummy parent (RFC 5256 2.2), shown as nesting only.
    A single child continues the chain; several children are each nested.
    """
    out = bytearray(b"THREAD ")
    for root in threads:
        out += b"("
        stack: list = [("node", root)]
        while stack:
            kind, value = stack.pop()
            if kind == "open":
                out += b"("
                continue
            if kind == "close":
                out += b")"
                continue
            number, children = value
            if number is not None:
                if not out.endswith(b"("):
                    out += b" "
                out += b"%d" % number
            if len(children) == 1 and number is not None:
                stack.append(("node", children[0]))
            elif children:
                if number is not None:
                    out += b" "
                for child in reversed(children):
                    stack += [("close", None), ("node", child), ("open", None)]
        out += b")"
    return untagged(bytes(out).rstrip(b" "))


def namespace_response(personal: Optional[Sequence] = (("", "/"),),
                       other: Optional[Sequence] = None,
                       shared: Optional[Sequence] = None) -> bytes:
    """`* NAMESPACE (("" "/")) NIL NIL` (RFC 2342 5)."""
    def group(entries: Optional[Sequence]) -> bytes:
        if not entries:
            return b"NIL"
        return b"(" + b"".join(b"(" + string(prefix) + b" " + nstring(delimiter) + b")"
                               for prefix, delimiter in entries) + b")"
    return untagged(b"NAMESPACE " + group(personal) + b" " + group(other) + b" " + group(shared))


def id_response(parameters: Optional[Mapping[str, Optional[str]]]) -> bytes:
    """`* ID ("name" "mailserverd" ...)` or `* ID NIL` (RFC 2971 3.2)."""
    if not parameters:
        return untagged(b"ID NIL")
    pairs = b" ".join(string(key) + b" " + nstring(value) for key, value in parameters.items())
    return untagged(b"ID (" + pairs + b")")


def quota_response(root: str, resources: Mapping[str, tuple[int, int]]) -> bytes:
    """`* QUOTA "" (STORAGE 10 512)` (RFC 9208 5.1); (usage, limit) per resource."""
    items = b" ".join(b"%s %d %d" % (name.encode("ascii"), usage, limit)
                      for name, (usage, limit) in resources.items())
    return untagged(b"QUOTA " + astring(root) + b" (" + items + b")")


def quotaroot_response(name: str, roots: Iterable[str], utf8: bool = False) -> bytes:
    """`* QUOTAROOT INBOX ""` (RFC 9208 5.2)."""
    return untagged(b" ".join([b"QUOTAROOT", mailbox(name, utf8), *(astring(r) for r in roots)]))


def fetch_response(sequence_number: int, items: Sequence[tuple[Union[str, FetchAtt], Value]]
                   ) -> bytes:
    """`* n FETCH (label value ...)` (RFC 9051 7.5.2). A label is a FetchAtt (its
    response name is used) or a str such as "UID"; values render as IMAP data."""
    parts = []
    for label, value in items:
        name = label.label() if isinstance(label, FetchAtt) else label
        parts.append(name.encode("ascii") + b" " + render(value))
    return b"* %d FETCH (" % sequence_number + b" ".join(parts) + b")" + CRLF
