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
KEY_FIELDS = {"SUBJECT": ("subject",), "FROM": ("from",), "TO": ("to",),
              "CC": ("cc",), "BCC": ("bcc",), "BODY": ("body",), "TEXT": ("headers", "body"),
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
    # Cheap conditions (a term, a sorted range) first; the lexicon scans after them.
    return sorted(out, key=lambda condition: condition[0] not in ("exact", "prefix"))


# Keys whose index field(s) hold exactly the text the key compares: a one-word needle
# found in a "plain" document there is proven present (text.PROVABLE).
PROVING_FIELDS = {"SUBJECT": ("subject",), "BODY": ("body",), "TEXT": ("headers", "body"),
                  "FROM": ("from",), "TO": ("to",), "CC": ("cc",), "BCC": ("bcc",)}


def provable(needle: str) -> bool:
    """A needle that is one run of word characters which folding leaves as case folding does."""
    folded = fold(needle)
    return bool(TOKEN.fullmatch(folded)) and folded == needle.casefold()


def text_candidates(key_op: str, needle: str, lookup: Lookup) -> Optional[set]:
    """Message ids that may satisfy one text key, or None."""
    def lookup_proving(field, wanted, _prove):
        found = lookup(field, wanted)
        return None if found is None else (found, set())
    found = key_sets(key_op, needle, lookup_proving)
    return None if found is None else found[0]


def key_sets(key_op: str, needle: str, lookup_proving) -> Optional[tuple[set, set]]:
    """(maybe, proven) for one text key: every message satisfying it is in maybe;
    every message in proven satisfies it. None if the index cannot narrow it."""
    wanted = conditions(needle)
    if wanted is None:
        return None
    prove = key_op in PROVING_FIELDS and provable(needle)
    maybe: set = set()
    proven: set = set()
    for field in KEY_FIELDS[key_op]:
        found = lookup_proving(field, wanted, prove)
        if found is None:
            return None
        maybe |= found[0]
        if prove:
            proven |= found[1]
    return maybe, proven


class Narrowing:
    """What the index says about one search program: `candidates` (a superset of
    the matches, or None) and, per text key node, (maybe, proven) sets, so the
    evaluator can settle a key without reading the message (known())."""

    def __init__(self, program, lookup_proving, pending: set):
        self.keys: dict[int, tuple[set, set]] = {}
        self.pending = pending
        self._lookup = lookup_proving
        self.candidates = self._narrow(program, 0)
        if self.candidates is not None:
            self.candidates |= pending

    def _narrow(self, key, depth: int) -> Optional[set]:
        op, args = key.op, key.args
        if depth > MAX_DEPTH:
            return None
        if op in KEY_FIELDS:
            found = key_sets(op, args[-1], self._lookup)
            if found is None:
                return None
            self.keys[id(key)] = found
            return found[0]
        if op == "NOT":  # its inner key's sets still settle the inner key
            self._narrow(args[0], depth + 1)
            return None
        if op == "AND":
            best = None
            for sub in args:
                found = self._narrow(sub, depth + 1)
                if found is not None:
                    best = set(found) if best is None else best & found
            return best
        if op == "OR":
            left = self._narrow(args[0], depth + 1)
            right = self._narrow(args[1], depth + 1)
            return None if left is None or right is None else left | right
        return None

    def known(self, message_id: int) -> dict:
        """{id(key): bool} for the text keys the index settles for this message."""
        if message_id in self.pending:
            return {}
        out = {}
        for key_id, (maybe, proven) in self.keys.items():
            if message_id in proven:
                out[key_id] = True
            elif message_id not in maybe:
                out[key_id] = False
        return out


def has_text_key(program, depth: int = 0) -> bool:
    if depth > MAX_DEPTH:
        return False
    if program.op in KEY_FIELDS:
        return True
    return program.op in ("AND", "OR") and any(has_text_key(sub, depth + 1) for sub in program.args)


__all__ = ["narrow", "conditions", "text_candidates", "has_text_key", "KEY_FIELDS"]


# -- entry points for protocol code (IMAP SEARCH here; JMAP: /work/notes/search-api.md) ---

def narrowing_in_thread(mail, search, account, program) -> Optional[Narrowing]:
    """On a store read thread: the Narrowing of `program` for `account`, or None.
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
        return Narrowing(program, index.lookup_proving, pending)
    except Exception:  # a damaged index must never fail a search: scan instead
        Logger(namespace="mailserverd.search").failure("search: index lookup failed; scanning")
        return None


def candidates_in_thread(mail, search, account, program) -> Optional[set]:
    """The message ids of `account` that may match `program`, or None (no narrowing)."""
    narrowing = narrowing_in_thread(mail, search, account, program)
    return None if narrowing is None else narrowing.candidates


def narrowing(async_store, account, program):
    """Deferred Narrowing (or None) of `program` for `account`, on the read pool."""
    from twisted.internet import defer

    search = getattr(async_store, "search", None)
    if search is None or not has_text_key(program):
        return defer.succeed(None)
    return async_store.run_read(narrowing_in_thread, search, account, program)


def candidates(async_store, account, program):
    """Deferred: a set of message ids holding every message of `account` that
    satisfies `program` (a SearchKey tree), or None when the index cannot
    narrow it. The caller verifies each candidate exactly."""
    return narrowing(async_store, account, program).addCallback(
        lambda found: None if found is None else found.candidates)
