"""Command grammar: one framed command's bytes -> a typed Command (RFC 9051 9).

parse_command() raises lexer.ParseFailure; the caller turns it into a
tagged BAD (or NO for refusals such as invalid mailbox names).
"""

from __future__ import annotations

import re
from typing import Callable, Optional

from . import commands as c
from . import mutf7
from .fetch import parse_fetch_items, parse_fetch_modifiers
from .lexer import ParseFailure, Reader
from .search import parse_search_program, parse_search_returns

UID_COMMANDS = frozenset({"COPY", "MOVE", "FETCH", "SEARCH", "STORE", "EXPUNGE", "SORT", "THREAD"})
STATUS_ITEMS = frozenset({
    "MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN",  # RFC 3501 6.3.10
    "DELETED", "SIZE",  # RFC 9051 6.3.11, RFC 8438
    "HIGHESTMODSEQ",  # RFC 7162 3.1.9
    "APPENDLIMIT",  # RFC 7889 3.2
})
LIST_SELECTION = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
LIST_RETURNS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})
SORT_KEYS = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO",
                       "DISPLAYFROM", "DISPLAYTO"})  # RFC 5256 3, RFC 5957
MAX_ID_PAIRS = 30  # RFC 2971 3.3
MAX_ID_FIELD = 30
MAX_ID_VALUE = 1024
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")


class _Context:
    def __init__(self, tag: str, uid: bool, utf8: bool):
        self.tag = tag
        self.uid = uid
        self.utf8 = utf8


def parse_command(frame: bytes, utf8: bool = False) -> c.Command:
    """Parse one complete command. utf8: the client enabled UTF8=ACCEPT (RFC 6855)."""
    reader = Reader(frame)
    tag = reader.tag()
    reader.sp()
    word = reader.atom_upper()
    uid = False
    if word == "UID":
        reader.sp()
        word = reader.atom_upper()
        if word not in UID_COMMANDS:
            raise ParseFailure("UID cannot prefix " + word[:20])
        uid = True
    handler = _HANDLERS.get(word)
    if handler is None:
        raise ParseFailure("unknown command " + word[:20])
    command = handler(reader, _Context(tag, uid, utf8))
    reader.end()
    return command


# -- shared pieces ----------------------------------------------------------

def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseFailure(what + " must be UTF-8") from None


def _decode_name(raw: bytes, ctx: _Context) -> str:
    if ctx.utf8:  # RFC 6855 3: names are UTF-8 once UTF8=ACCEPT is enabled
        return _utf8(raw, "mailbox name")
    try:
        return mutf7.decode(raw)
    except mutf7.MUTF7Error as exc:
        raise ParseFailure("Invalid mailbox name: " + str(exc), "NO", "CANNOT") from None


def _mailbox(reader: Reader, ctx: _Context, trailing_separator_ok: bool = False) -> str:
    name = _decode_name(reader.astring(), ctx)
    if trailing_separator_ok and len(name) > 1 and name.endswith(mutf7.HIERARCHY_SEPARATOR):
        name = name[:-1]  # RFC 9051 6.3.4: "foo/" creates "foo"
    try:
        return mutf7.normalize_mailbox_name(name)
    except mutf7.InvalidMailboxName as exc:
        raise ParseFailure("Invalid mailbox name: " + str(exc), "NO", "CANNOT") from None


def _pattern(raw: bytes, ctx: _Context) -> str:
    try:
        try:
            text = _decode_name(raw, ctx)
        except ParseFailure:
            # A pattern that is not valid modified UTF-7 matches names literally
            # (it can only ever match nothing, which is not an error).
            text = raw.decode("ascii", "replace")
        return mutf7.normalize_pattern(text)
    except mutf7.InvalidMailboxName as exc:
        raise ParseFailure(str(exc)) from None


def _atom_list(reader: Reader) -> list[str]:
    """"(" [atom *(SP atom)] ")", upper-cased."""
    reader.expect(b"(")
    words: list[str] = []
    if reader.accept(b")"):
        return words
    while True:
        words.append(reader.atom_upper())
        if reader.accept(b")"):
            return words
        reader.sp()


# -- any state (RFC 9051 6.1) ----------------------------------------------

def _no_arguments(cls: type) -> Callable:
    return lambda reader, ctx: cls(ctx.tag)


def _login(reader: Reader, ctx: _Context) -> c.Command:
    reader.sp()
    username = _utf8(reader.astring(), "user name")
    reader.sp()
    password = _utf8(reader.astring(), "password")
    return c.Login(ctx.tag, username, password)


def _authenticate(reader: Reader, ctx: _Context) -> c.Command:
    reader.sp()
    mechanism = reader.atom_upper()
    initial = None
    if reader.maybe_sp():  # RFC 4959 SASL-IR
        initial = reader.match_pattern(_BASE64, "base64 data").group()
        if not initial:
            raise ParseFailure("empty initial response")
    return c.Authenticate(ctx.tag, mechanism, initial)


def _enable(reader: Reader, ctx: _Context) -> c.Command:
    capabilities = []
    while reader.maybe_sp():
        capabilities.append(reader.atom_upper())
    if not capabilities:
        raise ParseFailure("ENABLE needs at least one capability")
    return c.Enable(ctx.tag, tuple(capabilities))


def _id(reader: Reader, ctx: _Context) -> c.Command:
    reader.sp()
    if reader.accept(b"NIL"):
        return c.Id(ctx.tag, None)
    reader.expect(b"(")
    pairs = []
    if not reader.accept(b")"):
        while True:
            field = reader.string()
            reader.sp()
            value = reader.nstring()
            if len(field) > MAX_ID_FIELD or (value is not None and len(value) > MAX_ID_VALUE):
                raise ParseFailure("ID field or value too long")
            pairs.append((field.decode("utf-8", "replace"),
                          None if value is None else value.decode("utf-8", "replace")))
            if len(pairs) > MAX_ID_PAIRS:
                raise ParseFailure("too many ID fields")
            if reader.accept(b")"):
                break
            reader.sp()
    return c.Id(ctx.tag, tuple(pairs))


def _compress(reader: Reader, ctx: _Context) -> c.Command:
    reader.sp()
    return c.Compress(ctx.tag, reader.atom_upper())


# -- authenticated state (RFC 9051 6.3) --------------------------------------

def _select(cls: type) -> Callable:
    def parse(reader: Reader, ctx: _Context) -> c.Command:
        reader.sp()
        mailbox = _mailbox(reader, ctx)
        condstore = False
        qresync = None
        if reader.maybe_sp():  # select-params (RFC 4466 2.1)
            reader.expect(b"(")
            while True:
                word = reader.atom_upper()
                if word == "CONDSTORE" and not condstore:
                    condstore = True
                elif word == "QRESYNC" and qresync is None:
                    reader.sp()
                    qresync = _qresync(reader)
                else:
                    raise ParseFailure("unknown SELECT parameter " + word[:20])
                if reader.accept(b")"):
                    break
                reader.sp()
        return cls(ctx.tag, mailbox, read_only=cls is c.Examine, condstore=condstore,
                   qresync=qresync)
    return parse


def _qresync(reader: Reader) -> c.QResyncParams:
    """RFC 7162 3.2.5: "(" uidvalidity SP mod-sequence-value [SP known-uids]
    [SP seq-match-data] ")"."""
    reader.expect(b"(")
    uidvalidity = reader.nz_number()
    reader.sp()
    modseq = reader.number64()
    known_uids = known_sequences = known_sequence_uids = None
    if reader.maybe_sp() and reader.peek() != b"(":
        known_uids = reader.sequence_set(allow_saved=False)
        reader.maybe_sp()
    if reader.accept(b"("):
        known_sequences = reader.sequence_set(allow_saved=False)
        reader.sp()
        known_sequence_uids = reader.sequence_set(allow_saved=False)
        reader.expect(b")")
    reader.expect(b")")
    return c.QResyncParams(uidvalidity, modseq, known_uids, known_sequences, known_sequence_uids)


def _create(reader: Reader, ctx: _Context) -> c.Command:
    reader.sp()
    mailbox = _mailbox(reader, ctx, trailing_separator_ok=True)
    special_use: tuple = ()
    if reader.maybe_sp():  # RFC 6154 3: create-param "USE" SP "(" use-attr ... ")"
        reader.expect(b"(")
        reader.expect(b"USE")
        reader.sp()
        special_use = reader.flag_list()
        reader.expect(b")")
    return c.Create(ctx.tag, mailbox, special_use)


def _one_mailbox(cls: type) -> Callable:
    def parse(reader: Reader, ctx: _Context) -> c.Command:
        reader.sp()
        return cls(ctx.tag, _mailbox(reader, ctx))
    return parse


def _rename(reader: Reader, ctx: _Context) -> c.Command:
    reader.sp()
    old = _mailbox(reader, ctx)
    reader.sp()
    return c.Rename(ctx.tag, old, _mailbox(reader, ctx, trailing_separator_ok=True))


def _list(reader: Reader, ctx: _Context) -> c.Command:
    """RFC 5258 6: LIST [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]."""
    reader.sp()
    extended = False
    selection: list[str] = []
    if reader.peek() == b"(":
        extended = True
        selection = _atom_list(reader)
        unknown = set(selection) - LIST_SELECTION
        if unknown:
            raise ParseFailure("unknown LIST selection option " + sorted(unknown)[0][:20])
        if "RECURSIVEMATCH" in selection and not set(selection) - {"RECURSIVEMATCH", "REMOTE"}:
            raise ParseFailure("RECURSIVEMATCH needs another selection option")  # RFC 5258 3
        reader.sp()
    reference = _pattern(reader.astring(), ctx)
    reader.sp()
    if reader.accept(b"("):
        extended = True
        patterns = [_pattern(reader.list_mailbox(), ctx)]
        while not reader.accept(b")"):
            reader.sp()
            patterns.append(_pattern(reader.list_mailbox(), ctx))
    else:
        patterns = [_pattern(reader.list_mailbox(), ctx)]
    returns: list[str] = []
    status_items: tuple = ()
    if reader.maybe_sp():
        extended = True
        reader.expect(b"RETURN")
        reader.sp()
        reader.expect(b"(")
        if not reader.accept(b")"):
            while True:
                option = reader.atom_upper()
                if option not in LIST_RETURNS:
                    raise ParseFailure("unknown LIST return option " + option[:20])
                if option == "STATUS":  # RFC 5819 2
                    reader.sp()
                    status_items = _status_items(reader)
                returns.append(option)
                if reader.accept(b")"):
                    break
                reader.sp()
    return c.List(ctx.tag, reference, tuple(patterns), frozenset(selection), frozenset(returns),
                  status_items, extended)


def _lsub(reader: Reader, ctx: _Context) -> c.Command:
    reader.sp()
    reference = _pattern(reader.astring(), ctx)
    reader.sp()
    return c.Lsub(ctx.tag, reference, _pattern(reader.list_mailbox(), ctx))


def _status_items(reader: Reader) -> tuple:
    items = _atom_list(reader)
    if not items:
        raise ParseFailure("STATUS needs at least one item")
    for item in items:
        if item not in STATUS_ITEMS:
            raise ParseFailure("unknown STATUS item " + item[:20])
    return tuple(items)


def _status(reader: Reader, ctx: _Context) -> c.Command:
    reader.sp()
    mailbox = _mailbox(reader, ctx)
    reader.sp()
    return c.Status(ctx.tag, mailbox, _status_items(reader))


def _append(reader: Reader, ctx: _Context) -> c.Command:
    """RFC 9051 6.3.12: mailbox [SP flag-list] [SP date-time] SP literal."""
    reader.sp()
    mailbox = _mailbox(reader, ctx)
    reader.sp()
    flags: tuple = ()
    internal_date = None
    if reader.peek() == b"(":
        flags = reader.flag_list()
        reader.sp()
    if reader.peek() == b'"':
        internal_date = reader.date_time()
        reader.sp()
    binary = reader.peek() == b"~"
    message = reader.literal(allow_binary=True)
    return c.Append(ctx.tag, mailbox, flags, internal_date, message, binary)


def _getquota(reader: Reader, ctx: _Context) -> c.Command:
    reader.sp()
    return c.GetQuota(ctx.tag, _utf8(reader.astring(), "quota root"))


# -- selected state (RFC 9051 6.4) --------------------------------------------

def _expunge(reader: Reader, ctx: _Context) -> c.Command:
    if not ctx.uid:
        return c.Expunge(ctx.tag)
    reader.sp()
    return c.Expunge(ctx.tag, reader.sequence_set())


def _search_like(reader: Reader) -> tuple[Optional[tuple], Optional[str]]:
    """[SP "RETURN" SP "(" ... ")"] SP ["CHARSET" SP astring SP]."""
    reader.sp()
    returns = None
    if reader.peek_upper(b"RETURN "):
        returns = parse_search_returns(reader)
        reader.sp()
    charset = None
    if reader.peek_upper(b"CHARSET "):
        reader.expect(b"CHARSET")
        reader.sp()
        charset = reader.astring().decode("ascii", "replace").upper()
        reader.sp()
    return returns, charset


def _search(reader: Reader, ctx: _Context) -> c.Command:
    returns, charset = _search_like(reader)
    key = parse_search_program(reader, charset)
    return c.Search(ctx.tag, key, charset, returns, ctx.uid)


def _sort(reader: Reader, ctx: _Context) -> c.Command:
    """RFC 5256 3 / RFC 5267 3.2: SORT [RETURN (...)] SP (criteria) SP charset SP keys."""
    reader.sp()
    returns = None
    if reader.peek_upper(b"RETURN "):
        returns = parse_search_returns(reader)
        reader.sp()
    words = _atom_list(reader)
    criteria = []
    reverse = False
    for word in words:
        if word == "REVERSE" and not reverse:
            reverse = True
            continue
        if word not in SORT_KEYS:
            raise ParseFailure("unknown sort key " + word[:20])
        criteria.append((reverse, word))
        reverse = False
    if reverse or not criteria:
        raise ParseFailure("invalid sort criteria")
    reader.sp()
    charset = reader.astring().decode("ascii", "replace").upper()
    reader.sp()
    key = parse_search_program(reader, charset)
    return c.Sort(ctx.tag, tuple(criteria), charset, key, returns, ctx.uid)


def _thread(reader: Reader, ctx: _Context) -> c.Command:
    reader.sp()
    algorithm = reader.atom_upper()
    reader.sp()
    charset = reader.astring().decode("ascii", "replace").upper()
    reader.sp()
    key = parse_search_program(reader, charset)
    return c.Thread(ctx.tag, algorithm, charset, key, ctx.uid)


def _fetch(reader: Reader, ctx: _Context) -> c.Command:
    reader.sp()
    sequence = reader.sequence_set()
    reader.sp()
    items = parse_fetch_items(reader)
    changed_since, vanished = None, False
    if reader.maybe_sp():
        changed_since, vanished = parse_fetch_modifiers(reader)
        if vanished and not ctx.uid:
            raise ParseFailure("VANISHED needs UID FETCH")  # RFC 7162 3.2.6
    return c.Fetch(ctx.tag, sequence, items, changed_since, vanished, ctx.uid)


def _store(reader: Reader, ctx: _Context) -> c.Command:
    """RFC 9051 6.4.6, RFC 7162 3.1.3 (UNCHANGEDSINCE)."""
    reader.sp()
    sequence = reader.sequence_set()
    reader.sp()
    unchanged_since = None
    if reader.accept(b"("):
        reader.expect(b"UNCHANGEDSINCE")
        reader.sp()
        unchanged_since = reader.number64()
        reader.expect(b")")
        reader.sp()
    mode = "replace"
    if reader.accept(b"+"):
        mode = "add"
    elif reader.accept(b"-"):
        mode = "remove"
    reader.expect(b"FLAGS")
    silent = reader.accept(b".SILENT")
    reader.sp()
    if reader.peek() == b"(":
        flags = reader.flag_list()
    else:
        flags_list = [reader.flag()]
        while reader.maybe_sp():
            flags_list.append(reader.flag())
        flags = tuple(flags_list)
    return c.Store(ctx.tag, sequence, mode, silent, flags, unchanged_since, ctx.uid)


def _copy_like(cls: type) -> Callable:
    def parse(reader: Reader, ctx: _Context) -> c.Command:
        reader.sp()
        sequence = reader.sequence_set()
        reader.sp()
        return cls(ctx.tag, sequence, _mailbox(reader, ctx), ctx.uid)
    return parse


_HANDLERS: dict[str, Callable[[Reader, _Context], c.Command]] = {
    "CAPABILITY": _no_arguments(c.Capability),
    "NOOP": _no_arguments(c.Noop),
    "LOGOUT": _no_arguments(c.Logout),
    "STARTTLS": _no_arguments(c.StartTLS),
    "LOGIN": _login,
    "AUTHENTICATE": _authenticate,
    "ENABLE": _enable,
    "ID": _id,
    "COMPRESS": _compress,
    "NAMESPACE": _no_arguments(c.Namespace),
    "IDLE": _no_arguments(c.Idle),
    "SELECT": _select(c.Select),
    "EXAMINE": _select(c.Examine),
    "CREATE": _create,
    "DELETE": _one_mailbox(c.Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _one_mailbox(c.Subscribe),
    "UNSUBSCRIBE": _one_mailbox(c.Unsubscribe),
    "LIST": _list,
    "LSUB": _lsub,
    "STATUS": _status,
    "APPEND": _append,
    "GETQUOTA": _getquota,
    "GETQUOTAROOT": _one_mailbox(c.GetQuotaRoot),
    "CHECK": _no_arguments(c.Check),
    "CLOSE": _no_arguments(c.Close),
    "UNSELECT": _no_arguments(c.Unselect),
    "EXPUNGE": _expunge,
    "SEARCH": _search,
    "SORT": _sort,
    "THREAD": _thread,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy_like(c.Copy),
    "MOVE": _copy_like(c.Move),
}
