"""Narrowing a search to candidate messages through the index (issue 12).

narrow(program, lookup) walks an IMAP SEARCH program (imap/search.py
SearchKey tree) and returns a set of message ids containing every message
the program can match, or None when the index cannot narrow it (NOT of a
text key, a string without any word character, an index that is not ready).
The caller keeps only its own messages in the set and evaluates the program
exactly on each (imap/search_eval.py), so the answer is the exhaustive
scan's, only cheaper: RFC 3501 6.4.4 substring semantics are preserved.

Why a string's candidates are complete: see text.py. For a folded needle
with word tokens t1..tk, a text containing it has t2..tk-1 as whole tokens,
t1 as a token suffix (or whole, if the needle starts with a non-word
character) and tk as a token prefix (or whole); a single token may sit
anywhere inside a text token.
"""

from __future__ import annotations

from typing import Callable, Optional

from .text import TOKEN, fold

# SEARCH key -> index fields whose union holds every text the key compares.
KEY_FIELDS = {"SUBJECT": ("subject",), "FROM": ("addresses",), "TO": ("addresses",),
              "CC": ("addresses",), "BCC": ("addresses",), "BODY": ("body",), "TEXT": ("headers", "body"),
              "HEADER": ("headers",)}
MAX_NEEDLE = 4096  # characters of a needle used for narrowing (verification uses all of it)
MAX_DEPTH = 64

Lookup = Callable[[str, list], Optional[set]]  # (field, conditions) -> ids or None


def conditions(needle: str) -> Optional[list[tuple[str, str]]]:
    """(kind, token) pairs a text must satisfy to contain `needle`; None if it has no word."""
    folded = fold(needle[:MAX_NEEDLE])  # a text holding the needle holds its prefix too
    words = [(m.start(), m.end(), m.group()) for m in TOKEN.finditer(folded)]
    if not words:
        return None
    out = []
    for index, (start, end, word) in enumerate(words):
        open_left = index == 0 and start == 0
        open_right = index == len(words) - 1 and end == len(folded)
        kind = {(False, False): "exact", (False, True): "prefix",
                (True, False): "suffix", (True, True): "substring"}[(open_left, open_right)]
        out.append((kind, word))
    # Cheap conditions first; a substring/suffix scan only when nothing else narrows.
    cheap = [c for c in out if c[0] in ("exact", "prefix")]
    return cheap or out[:1]


def text_candidates(key_op: str, needle: str, lookup: Lookup) -> Optional[set]:
    """Message ids that may satisfy one text key, or None."""
    wanted = conditions(needle)
    if wanted is None:
        return None
    result: set = set()
    for field in KEY_FIELDS[key_op]:
        found = lookup(field, wanted)
        if found is None:
            return None
        result |= found
    return result


def narrow(program, lookup: Lookup, depth: int = 0) -> Optional[set]:
    """Candidates for a whole SearchKey tree (see module docstring), or None."""
    op, args = program.op, program.args
    if depth > MAX_DEPTH:
        return None
    if op in KEY_FIELDS:
        return text_candidates(op, args[-1], lookup)
    if op == "AND":
        best = None
        for sub in args:
            found = narrow(sub, lookup, depth + 1)
            if found is not None:
                best = found if best is None else best & found
        return best
    if op == "OR":
        left = narrow(args[0], lookup, depth + 1)
        if left is None:
            return None
        right = narrow(args[1], lookup, depth + 1)
        return None if right is None else left | right
    return None  # NOT, flags, dates, sizes, sets: SQL/ref facts, evaluated exactly


def has_text_key(program, depth: int = 0) -> bool:
    if depth > MAX_DEPTH:
        return False
    if program.op in KEY_FIELDS:
        return True
    return program.op in ("AND", "OR") and any(has_text_key(sub, depth + 1) for sub in program.args)


__all__ = ["narrow", "conditions", "text_candidates", "has_text_key", "KEY_FIELDS"]


# -- entry points for protocol code (IMAP SEARCH here; JMAP: /work/notes/search-api.md) ---

def candidates_in_thread(mail, search, account, program) -> Optional[set]:
    """On a store read thread: the message ids of `account` that may match, or None.
    Pending queue rows are read BEFORE the index is opened, so a message the
    indexer applies meanwhile is seen in one or the other."""
    from twisted.logger import Logger
    from ..store import searchqueue

    index = search.indexes[account.shard]
    if not index.ready:
        return None
    try:
        with mail.engine(account).connect() as conn:
            pending = searchqueue.pending_adds(conn, account.id)
        found = narrow(program, index.lookup)
    except Exception:  # a damaged index must never fail a search: scan instead
        Logger(namespace="mailserverd.search").failure("search: index lookup failed; scanning")
        return None
    return None if found is None else found | pending


def candidates(async_store, account, program):
    """Deferred: a set of message ids holding every message of `account` that
    satisfies `program` (a SearchKey tree), or None when the index cannot
    narrow it. The caller verifies each candidate exactly."""
    from twisted.internet import defer

    search = getattr(async_store, "search", None)
    if search is None or not has_text_key(program):
        return defer.succeed(None)
    return async_store.run_read(candidates_in_thread, search, account, program)
