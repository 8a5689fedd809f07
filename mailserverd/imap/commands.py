"""Typed IMAP commands, as the parser hands them to the server.

Every command has `tag` and a class attribute `name` (the command word, upper
case). Mailbox names are already decoded from modified UTF-7 (or UTF-8 after
ENABLE UTF8=ACCEPT) and validated (mutf7.normalize_mailbox_name); patterns
are decoded but keep their wildcards. SEARCH keys and FETCH items have their
own types in search.py and fetch.py.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import ClassVar, Optional

from .search import SearchKey
from .sequence import SequenceSet


@dataclasses.dataclass(frozen=True)
class Command:
    tag: str
    name: ClassVar[str] = ""


@dataclasses.dataclass(frozen=True)
class Capability(Command):
    """RFC 9051 6.1.1."""

    name: ClassVar[str] = "CAPABILITY"


@dataclasses.dataclass(frozen=True)
class Noop(Command):
    """RFC 9051 6.1.2."""

    name: ClassVar[str] = "NOOP"


@dataclasses.dataclass(frozen=True)
class Logout(Command):
    """RFC 9051 6.1.3."""

    name: ClassVar[str] = "LOGOUT"


@dataclasses.dataclass(frozen=True)
class StartTLS(Command):
    """RFC 9051 6.2.1; the server must drop bytes pipelined after it (parser.take_buffer())."""

    name: ClassVar[str] = "STARTTLS"


@dataclasses.dataclass(frozen=True)
class Check(Command):
    """RFC 3501 6.4.1."""

    name: ClassVar[str] = "CHECK"


@dataclasses.dataclass(frozen=True)
class Close(Command):
    """RFC 9051 6.4.1."""

    name: ClassVar[str] = "CLOSE"


@dataclasses.dataclass(frozen=True)
class Unselect(Command):
    """RFC 9051 6.4.2 (RFC 3691)."""

    name: ClassVar[str] = "UNSELECT"


@dataclasses.dataclass(frozen=True)
class Idle(Command):
    """RFC 2177; the server then calls parser.expect_line() to read DONE."""

    name: ClassVar[str] = "IDLE"


@dataclasses.dataclass(frozen=True)
class Namespace(Command):
    """RFC 2342."""

    name: ClassVar[str] = "NAMESPACE"


@dataclasses.dataclass(frozen=True)
class Login(Command):
    """RFC 9051 6.2.3."""

    username: str = ""
    password: str = ""
    name: ClassVar[str] = "LOGIN"


@dataclasses.dataclass(frozen=True)
class Authenticate(Command):
    """RFC 9051 6.2.2; initial_response (RFC 4959 SASL-IR) is the still-encoded
    base64 or b"=" for an empty response; None when absent."""

    mechanism: str = ""
    initial_response: Optional[bytes] = None
    name: ClassVar[str] = "AUTHENTICATE"


@dataclasses.dataclass(frozen=True)
class Enable(Command):
    """RFC 5161; capabilities upper-cased."""

    capabilities: tuple = ()
    name: ClassVar[str] = "ENABLE"


@dataclasses.dataclass(frozen=True)
class Id(Command):
    """RFC 2971; parameters None for "ID NIL"."""

    parameters: Optional[tuple] = None  # ((field, value-or-None), ...)
    name: ClassVar[str] = "ID"


@dataclasses.dataclass(frozen=True)
class Compress(Command):
    """RFC 4978."""

    mechanism: str = ""
    name: ClassVar[str] = "COMPRESS"


@dataclasses.dataclass(frozen=True)
class QResyncParams:
    """RFC 7162 3.2.5.1: the client's cached state for SELECT (QRESYNC ...)."""

    uidvalidity: int
    modseq: int
    known_uids: Optional[SequenceSet] = None
    known_sequences: Optional[SequenceSet] = None  # seq-match-data, first half
    known_sequence_uids: Optional[SequenceSet] = None  # seq-match-data, second half


@dataclasses.dataclass(frozen=True)
class Select(Command):
    """RFC 9051 6.3.2; EXAMINE (6.3.3) is the same with read_only."""

    mailbox: str = ""
    read_only: bool = False
    condstore: bool = False  # RFC 7162 3.1.8
    qresync: Optional[QResyncParams] = None
    name: ClassVar[str] = "SELECT"


@dataclasses.dataclass(frozen=True)
class Examine(Select):
    name: ClassVar[str] = "EXAMINE"


@dataclasses.dataclass(frozen=True)
class Create(Command):
    """RFC 9051 6.3.4; special_use from RFC 6154 5.1 CREATE-SPECIAL-USE."""

    mailbox: str = ""
    special_use: tuple = ()
    name: ClassVar[str] = "CREATE"


@dataclasses.dataclass(frozen=True)
class Delete(Command):
    """RFC 9051 6.3.5."""

    mailbox: str = ""
    name: ClassVar[str] = "DELETE"


@dataclasses.dataclass(frozen=True)
class Rename(Command):
    """RFC 9051 6.3.6."""

    old: str = ""
    new: str = ""
    name: ClassVar[str] = "RENAME"


@dataclasses.dataclass(frozen=True)
class Subscribe(Command):
    """RFC 9051 6.3.7."""

    mailbox: str = ""
    name: ClassVar[str] = "SUBSCRIBE"


@dataclasses.dataclass(frozen=True)
class Unsubscribe(Command):
    """RFC 9051 6.3.8."""

    mailbox: str = ""
    name: ClassVar[str] = "UNSUBSCRIBE"


@dataclasses.dataclass(frozen=True)
class List(Command):
    """RFC 9051 6.3.9 with LIST-EXTENDED (RFC 5258) and LIST-STATUS (RFC 5819).

    selection: upper-cased selection options (SUBSCRIBED, REMOTE,
    RECURSIVEMATCH, SPECIAL-USE); returns: upper-cased return options
    (SUBSCRIBED, CHILDREN, SPECIAL-USE, STATUS); status_items: the STATUS
    attributes asked for with RETURN (STATUS (...)).
    """

    reference: str = ""
    patterns: tuple = ()
    selection: frozenset = frozenset()
    returns: frozenset = frozenset()
    status_items: tuple = ()
    extended: bool = False  # selection or return options were given
    name: ClassVar[str] = "LIST"


@dataclasses.dataclass(frozen=True)
class Lsub(Command):
    """RFC 3501 6.3.9."""

    reference: str = ""
    pattern: str = ""
    name: ClassVar[str] = "LSUB"


@dataclasses.dataclass(frozen=True)
class Status(Command):
    """RFC 9051 6.3.11; items upper-cased."""

    mailbox: str = ""
    items: tuple = ()
    name: ClassVar[str] = "STATUS"


@dataclasses.dataclass(frozen=True)
class Append(Command):
    """RFC 9051 6.3.12; binary is True for a literal8 (RFC 3516 4.4)."""

    mailbox: str = ""
    flags: tuple = ()
    internal_date: Optional[datetime.datetime] = None
    message: bytes = b""
    binary: bool = False
    name: ClassVar[str] = "APPEND"


@dataclasses.dataclass(frozen=True)
class Expunge(Command):
    """RFC 9051 6.4.3; UID EXPUNGE (6.4.9, RFC 4315) sets uids."""

    uids: Optional[SequenceSet] = None
    name: ClassVar[str] = "EXPUNGE"


@dataclasses.dataclass(frozen=True)
class Search(Command):
    """RFC 9051 6.4.4; returns (RFC 4731 ESEARCH) is None without RETURN,
    else the upper-cased options (an empty RETURN () means ALL)."""

    key: SearchKey = None
    charset: Optional[str] = None
    returns: Optional[tuple] = None
    uid: bool = False
    name: ClassVar[str] = "SEARCH"


@dataclasses.dataclass(frozen=True)
class Fetch(Command):
    """RFC 9051 6.4.5 with CHANGEDSINCE / VANISHED (RFC 7162 3.1.4, 3.2.6)."""

    sequence: SequenceSet = None
    items: tuple = ()  # FetchAtt, macros expanded
    changed_since: Optional[int] = None
    vanished: bool = False
    uid: bool = False
    name: ClassVar[str] = "FETCH"


@dataclasses.dataclass(frozen=True)
class Store(Command):
    """RFC 9051 6.4.6; mode is "replace", "add" or "remove" (FLAGS, +FLAGS, -FLAGS)."""

    sequence: SequenceSet = None
    mode: str = "replace"
    silent: bool = False
    flags: tuple = ()
    unchanged_since: Optional[int] = None  # RFC 7162 3.1.3
    uid: bool = False
    name: ClassVar[str] = "STORE"


@dataclasses.dataclass(frozen=True)
class Copy(Command):
    """RFC 9051 6.4.7."""

    sequence: SequenceSet = None
    mailbox: str = ""
    uid: bool = False
    name: ClassVar[str] = "COPY"


@dataclasses.dataclass(frozen=True)
class Move(Command):
    """RFC 6851 3.1."""

    sequence: SequenceSet = None
    mailbox: str = ""
    uid: bool = False
    name: ClassVar[str] = "MOVE"


@dataclasses.dataclass(frozen=True)
class GetQuota(Command):
    """RFC 9208 4.2.1."""

    root: str = ""
    name: ClassVar[str] = "GETQUOTA"


@dataclasses.dataclass(frozen=True)
class GetQuotaRoot(Command):
    """RFC 9208 4.2.2."""

    mailbox: str = ""
    name: ClassVar[str] = "GETQUOTAROOT"


@dataclasses.dataclass(frozen=True)
class Sort(Command):
    """RFC 5256 3; criteria are (reverse, key) pairs, key upper-cased;
    returns as in Search (RFC 5267 ESORT)."""

    criteria: tuple = ()
    charset: str = "UTF-8"
    key: SearchKey = None
    returns: Optional[tuple] = None
    uid: bool = False
    name: ClassVar[str] = "SORT"


@dataclasses.dataclass(frozen=True)
class Thread(Command):
    """RFC 5256 3; algorithm upper-cased (REFERENCES, ORDEREDSUBJECT)."""

    algorithm: str = ""
    charset: str = "UTF-8"
    key: SearchKey = None
    uid: bool = False
    name: ClassVar[str] = "THREAD"

