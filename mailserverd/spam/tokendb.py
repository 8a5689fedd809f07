"""Token counts of the spam classifier in SQL (the directory database).

Tables (SQLAlchemy Core, SQLite and PostgreSQL alike), created by a
migration step of the directory schema (store/schema.py):

    spam_totals   owner, nspam, nham, revision      one row per database
    spam_tokens   owner, token, spam, ham           token = 63-bit hash of the text
    spam_trained  owner, digest, is_spam            what was trained, so a retrain
                                                    never counts a message twice

owner 0 is the global database; a positive owner is an account id (the
per-user database). Scoring a message costs one SELECT of the owners'
totals and at most one SELECT ... IN of its tokens not in the cache; the
cache of each owner is dropped when its revision changes, so training by
another process (mailserverctl spam train beside the daemon) is seen at the
next message. With totals_ttl > 0 (the daemon's check.spam) the totals, and
so the revisions, are themselves cached for that many seconds: a message
whose tokens are all cached then costs no SQL at all, training by this
TokenDB is seen at once, and training by another process within totals_ttl.
`cached_totals` answers from that cache alone (never blocks): the caller can
tell an empty database, whose score is known without tokenising, on the
reactor thread.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import threading
import time
from typing import Iterable, Optional

from sqlalchemy import (BigInteger, Boolean, Column, Float, Integer, LargeBinary, MetaData, Table,
                        and_, bindparam, case, select, update)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.engine import Connection, Engine

from . import classifier
from .classifier import Counts
from .tokenizer import message_digest, tokenize

GLOBAL = 0
TRAIN_ATTEMPTS = 5
SELECT_CHUNK = 500  # tokens per IN list (SQLite allows 32,766 parameters; keep statements small)

spam_meta = MetaData()

spam_totals = Table(
    "spam_totals", spam_meta,
    Column("owner", BigInteger, primary_key=True, autoincrement=False),
    Column("nspam", Integer, nullable=False, default=0),
    Column("nham", Integer, nullable=False, default=0),
    Column("revision", BigInteger, nullable=False, default=0),
)
spam_tokens = Table(
    "spam_tokens", spam_meta,
    Column("owner", BigInteger, primary_key=True, autoincrement=False),
    Column("token", BigInteger, primary_key=True, autoincrement=False),
    Column("spam", Integer, nullable=False, default=0),
    Column("ham", Integer, nullable=False, default=0),
)
spam_trained = Table(
    "spam_trained", spam_meta,
    Column("owner", BigInteger, primary_key=True, autoincrement=False),
    Column("digest", LargeBinary(16), primary_key=True),
    Column("is_spam", Boolean, nullable=False),
    Column("trained_at", Float, nullable=False),
)


def create_tables(conn: Connection) -> None:
    """The migration step (store/schema.py MIGRATIONS["directory"])."""
    spam_meta.create_all(conn)


def forget_owner(engine: Engine, owner: int) -> None:
    """Drop one account's database (its account is being removed; ids may be reused)."""
    if owner == GLOBAL:
        raise ValueError("the global database is not an account's")
    with engine.begin() as conn:
        for table in (spam_tokens, spam_totals, spam_trained):
            conn.execute(table.delete().where(table.c.owner == owner))


@functools.lru_cache(maxsize=1 << 16)  # common tokens recur in every message (~10 MB at most)
def token_hash(token: str) -> int:
    """A signed 64-bit key (BIGINT) for a token; collisions are negligible at 2^-63."""
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8", "replace"), digest_size=8).digest(),
                          "big", signed=True)


TRAINED, MOVED, ALREADY = "trained", "moved", "already trained"


class TokenDB:
    """Train and score against the token tables of one engine. Thread-safe; blocking
    (call from a thread, never the reactor)."""

    def __init__(self, engine: Engine, cache_size: int = 200_000, options: classifier.Options = classifier.Options(),
                 clock=time.time, totals_ttl: float = 0.0, monotonic=time.monotonic):
        self.engine = engine
        self.options = options
        self.cache_size = cache_size
        self.clock = clock
        self.totals_ttl = float(totals_ttl)
        self.monotonic = monotonic
        self._lock = threading.Lock()
        # owner -> (revision, OrderedDict[token hash] = (spam, ham)); LRU of owners too
        self._cache: collections.OrderedDict = collections.OrderedDict()
        # owner -> (read at (monotonic), nspam, nham, revision or None when no row)
        self._totals: dict[int, tuple[float, int, int, Optional[int]]] = {}
        self._totals_generation = 0  # bumped by forget_totals: a read begun before it is not cached

    def create_tables(self) -> None:
        with self.engine.begin() as conn:
            create_tables(conn)

    # -- scoring -------------------------------------------------------------------

    def score(self, raw: bytes, owners: Iterable[int] = (GLOBAL,), auth: Optional[dict] = None,
              weights: Optional[dict] = None):
        """(score, clues, nspam, nham) of a message against the sum of the owners' databases."""
        tokens = tokenize(raw, auth)
        counts, nspam, nham = self.lookup(tokens, owners, weights)
        value, clues = classifier.score(tokens, counts, nspam, nham, self.options)
        return value, clues, nspam, nham

    @staticmethod
    def hashes(tokens: Iterable[str]) -> dict[int, str]:
        """{token_hash: token}: hand it to lookup() when one message is looked up more than once."""
        return {token_hash(token): token for token in tokens}

    def lookup(self, tokens: Iterable[str], owners: Iterable[int] = (GLOBAL,),
               weights: Optional[dict] = None, by_hash: Optional[dict[int, str]] = None) -> tuple[dict, float, float]:
        """({token: Counts}, nspam, nham) summed over owners (each times weights[owner], default 1).

        by_hash: hashes(tokens), when the caller has it already."""
        owners = list(dict.fromkeys(owners))
        weights = weights or {}
        if by_hash is None:
            by_hash = self.hashes(tokens)
        with self.engine.connect() as conn:
            totals = self._read_totals(conn, owners)
            nspam = sum(totals[o][0] * weights.get(o, 1.0) for o in owners)
            nham = sum(totals[o][1] * weights.get(o, 1.0) for o in owners)
            summed: dict[str, list] = {}
            for owner in owners:
                if totals[owner][2] is None:
                    continue  # nothing trained: every count is zero
                found = self._owner_counts(conn, owner, totals[owner][2], list(by_hash))
                weight = weights.get(owner, 1.0)
                for key, (spam, ham) in found.items():
                    if spam or ham:
                        entry = summed.setdefault(by_hash[key], [0.0, 0.0])
                        entry[0] += spam * weight
                        entry[1] += ham * weight
        return {token: Counts(spam, ham) for token, (spam, ham) in summed.items()}, nspam, nham

    def cached_totals(self, owners: Iterable[int] = (GLOBAL,)) -> Optional[dict[int, tuple[int, int]]]:
        """{owner: (nspam, nham)} from the totals cache when every owner's entry is
        younger than totals_ttl, else None. Never touches SQL (safe on the reactor)."""
        if self.totals_ttl <= 0:
            return None
        now = self.monotonic()
        found = {}
        for owner in owners:
            entry = self._totals.get(owner)
            if entry is None or now - entry[0] >= self.totals_ttl:
                return None
            found[owner] = (entry[1], entry[2])
        return found

    def _read_totals(self, conn, owners: list[int]) -> dict[int, tuple[int, int, Optional[int]]]:
        """{owner: (nspam, nham, revision or None)}: fresh cache entries, one SELECT for the rest."""
        now = self.monotonic()
        found = {}
        if self.totals_ttl > 0:
            for owner in owners:
                entry = self._totals.get(owner)
                if entry is not None and now - entry[0] < self.totals_ttl:
                    found[owner] = entry[1:]
        stale = [owner for owner in owners if owner not in found]
        if stale:
            generation = self._totals_generation
            rows = {row.owner: row for row in conn.execute(
                select(spam_totals).where(spam_totals.c.owner.in_(stale)))}
            for owner in stale:
                row = rows.get(owner)
                found[owner] = (row.nspam, row.nham, row.revision) if row is not None else (0, 0, None)
            if self.totals_ttl > 0:
                with self._lock:
                    if generation != self._totals_generation:
                        return found  # trained meanwhile: these figures may predate it
                    if len(self._totals) > 4096:  # per-user entries of accounts seen long ago
                        self._totals = {o: e for o, e in self._totals.items() if now - e[0] < self.totals_ttl}
                    for owner in stale:
                        self._totals[owner] = (now,) + found[owner]
        return found

    def totals_of(self, owners: Iterable[int]) -> dict[int, tuple[int, int]]:
        """{owner: (nspam, nham)} (through the totals cache). Blocking when it must read SQL."""
        owners = list(dict.fromkeys(owners))
        with self.engine.connect() as conn:
            return {owner: (nspam, nham) for owner, (nspam, nham, _revision) in self._read_totals(conn, owners).items()}

    def forget_totals(self, owner: Optional[int] = None) -> None:
        """Drop cached totals (of one owner, or all): the next lookup reads them again."""
        with self._lock:
            self._totals_generation += 1
            if owner is None:
                self._totals.clear()
            else:
                self._totals.pop(owner, None)

    def _owner_counts(self, conn, owner: int, revision: int, keys: list[int]) -> dict[int, tuple]:
        with self._lock:
            entry = self._cache.get(owner)
            if entry is None or entry[0] != revision:
                entry = (revision, collections.OrderedDict())
                self._cache[owner] = entry
            self._cache.move_to_end(owner)
            cache = entry[1]
            found = {}
            missing = []
            for key in keys:
                hit = cache.get(key)
                if hit is None:
                    missing.append(key)
                else:
                    found[key] = hit
        fetched = {key: (0, 0) for key in missing}  # absent rows are cached as zero counts
        for start in range(0, len(missing), SELECT_CHUNK):
            chunk = missing[start:start + SELECT_CHUNK]
            for row in conn.execute(select(spam_tokens.c.token, spam_tokens.c.spam, spam_tokens.c.ham).where(
                    and_(spam_tokens.c.owner == owner, spam_tokens.c.token.in_(chunk)))):
                fetched[row.token] = (row.spam, row.ham)
        found.update(fetched)
        if self.cache_size and fetched:
            with self._lock:
                current = self._cache.get(owner)
                if current is not None and current[0] == revision:
                    cache = current[1]
                    cache.update(fetched)
                    while len(cache) > self.cache_size:
                        cache.popitem(last=False)
                    while len(self._cache) > 64:  # owners kept: the global db and recent users
                        self._cache.popitem(last=False)
        return found

    def totals(self, owner: int = GLOBAL) -> tuple[int, int]:
        with self.engine.connect() as conn:
            row = conn.execute(select(spam_totals).where(spam_totals.c.owner == owner)).first()
        return (row.nspam, row.nham) if row else (0, 0)

    # -- training --------------------------------------------------------------------

    def train(self, raw: bytes, spam: bool, owner: int = GLOBAL, auth: Optional[dict] = None) -> str:
        """Train one message; TRAINED, MOVED (was trained as the other class) or ALREADY."""
        return self.train_many([(raw, spam)], owner, auth=auth)[0]

    def train_many(self, items: Iterable[tuple[bytes, bool]], owner: int = GLOBAL,
                   auth: Optional[dict] = None) -> list[str]:
        """Train a batch in one transaction; one result per item, in order."""
        prepared = []
        for raw, spam in items:
            prepared.append((message_digest(raw), bool(spam), tokenize(raw, auth)))
        return self._apply(prepared, owner)

    def _apply(self, prepared, owner: int) -> list[str]:
        # Another process may train at the same moment: a clash on a new row (or
        # SQLite's busy snapshot) rolls the batch back; it is then simply redone.
        try:
            for attempt in range(TRAIN_ATTEMPTS):
                try:
                    return self._apply_once(prepared, owner)
                except (IntegrityError, OperationalError):
                    if attempt == TRAIN_ATTEMPTS - 1:
                        raise
                    time.sleep(0.05 * (attempt + 1))
            raise AssertionError("unreachable")
        finally:
            self.forget_totals(owner)  # our own training is seen by the next message

    def _apply_once(self, prepared, owner: int) -> list[str]:
        results = []
        now = self.clock()
        with self.engine.begin() as conn:
            digests = list({digest for digest, _spam, _tokens in prepared})
            known = {}
            for start in range(0, len(digests), SELECT_CHUNK):
                for row in conn.execute(select(spam_trained.c.digest, spam_trained.c.is_spam).where(
                        and_(spam_trained.c.owner == owner,
                             spam_trained.c.digest.in_(digests[start:start + SELECT_CHUNK])))):
                    known[bytes(row.digest)] = row.is_spam
            deltas: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0])
            dspam = dham = 0
            new_rows, moved_rows = [], []
            for digest, spam, tokens in prepared:
                previous = known.get(digest)
                if previous is not None and previous == spam:
                    results.append(ALREADY)
                    continue
                sign_index = 0 if spam else 1
                for token in tokens:
                    key = token_hash(token)
                    deltas[key][sign_index] += 1
                    if previous is not None:
                        deltas[key][1 - sign_index] -= 1
                if spam:
                    dspam += 1
                else:
                    dham += 1
                if previous is None:
                    new_rows.append({"owner": owner, "digest": digest, "is_spam": spam, "trained_at": now})
                    results.append(TRAINED)
                else:
                    dspam -= 0 if spam else 1
                    dham -= 1 if spam else 0
                    moved_rows.append((digest, spam))
                    results.append(MOVED)
                known[digest] = spam
            if not new_rows and not moved_rows:
                return results
            if new_rows:
                conn.execute(spam_trained.insert(), new_rows)
            for digest, spam in moved_rows:
                conn.execute(update(spam_trained).where(and_(spam_trained.c.owner == owner,
                                                             spam_trained.c.digest == digest))
                             .values(is_spam=spam, trained_at=now))
            self._add_counts(conn, owner, deltas)
            self._add_totals(conn, owner, dspam, dham)
        return results

    def _add_counts(self, conn, owner: int, deltas: dict) -> None:
        keys = list(deltas)
        existing = set()
        for start in range(0, len(keys), SELECT_CHUNK):
            existing.update(row.token for row in conn.execute(select(spam_tokens.c.token).where(
                and_(spam_tokens.c.owner == owner, spam_tokens.c.token.in_(keys[start:start + SELECT_CHUNK])))))
        inserts = [{"owner": owner, "token": key, "spam": max(spam, 0), "ham": max(ham, 0)}
                   for key, (spam, ham) in deltas.items() if key not in existing and (spam > 0 or ham > 0)]
        if inserts:
            conn.execute(spam_tokens.insert(), inserts)
        updates = [{"o": owner, "t": key, "ds": spam, "dh": ham}
                   for key, (spam, ham) in deltas.items() if key in existing and (spam or ham)]
        if updates:
            def clamp(column, delta):  # never below zero, whatever was trained before
                value = column + bindparam(delta)
                return case((value < 0, 0), else_=value)
            statement = (update(spam_tokens)
                         .where(and_(spam_tokens.c.owner == bindparam("o"), spam_tokens.c.token == bindparam("t")))
                         .values(spam=clamp(spam_tokens.c.spam, "ds"), ham=clamp(spam_tokens.c.ham, "dh")))
            conn.execute(statement, updates)

    def _add_totals(self, conn, owner: int, dspam: int, dham: int) -> None:
        exists = conn.execute(select(spam_totals.c.owner).where(spam_totals.c.owner == owner)).first()
        if exists is None:
            conn.execute(spam_totals.insert().values(owner=owner, nspam=max(dspam, 0), nham=max(dham, 0),
                                                     revision=1))
            return
        # increments in SQL, so two trainers at once (daemon and mailserverctl) add up
        conn.execute(update(spam_totals).where(spam_totals.c.owner == owner).values(
            nspam=case((spam_totals.c.nspam + dspam < 0, 0), else_=spam_totals.c.nspam + dspam),
            nham=case((spam_totals.c.nham + dham < 0, 0), else_=spam_totals.c.nham + dham),
            revision=spam_totals.c.revision + 1))
