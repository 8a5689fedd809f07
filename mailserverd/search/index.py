"""One shard's Whoosh index: written by the indexer thread alone, read by query threads.

A document per message row (key = message id), with the folded texts of
text.FIELDS. Flags and mailbox membership are never indexed (they stay in
SQL), so a flag change never rewrites the index. Lookups return message ids
that MAY contain a string (a superset): documents of deleted messages and
the lexicon terms of superseded documents only add candidates, which the
caller verifies exactly and intersects with the mailbox.

Substring lookups (RFC 3501 SEARCH matches substrings) scan a per-segment
copy of the lexicon held as one string; segments are immutable, so each
copy is built once per segment and dropped when a merge retires it.
"""

from __future__ import annotations

import bisect
import os
import shutil
import threading

from whoosh import fields, formats, index as windex
from whoosh.analysis import RegexTokenizer

from .text import FIELDS, TOKEN

MERGE_SEGMENTS = 24  # merge the smallest segments when the queue is idle and there are more
MAX_EXPANSION = 2000  # terms one word may expand to before the lookup gives up (no narrowing)
ANALYZER = RegexTokenizer(TOKEN.pattern)  # texts arrive folded (text.fold)


class WordSet(fields.FieldType):
    """A field indexed from a set of already folded tokens: existence postings only
    (no frequencies, positions or lengths; nothing is ranked), no analyzer pass."""

    def __init__(self):
        self.format = formats.Existence()
        self.analyzer = ANALYZER
        self.scorable = True  # else whoosh3 stats a length column file per posting
        self.stored = self.unique = False
        self.vector = None

    def index(self, value, **kwargs):
        words = value if isinstance(value, (set, frozenset, list, tuple)) else TOKEN.findall(value)
        return ((word.encode("utf-8"), 1, 1.0, b"") for word in set(words))


def make_schema() -> fields.Schema:
    text_fields = {name: WordSet() for name in FIELDS}
    return fields.Schema(key=fields.ID(unique=True), acct=fields.ID,
                         mid=fields.NUMERIC(bits=64, signed=False, stored=True, sortable=True),
                         scan=fields.ID, plain=WordSet(), **text_fields)


def merge_smallest(writer, segments):
    """Whoosh merge policy: past MERGE_SEGMENTS segments, merge the smallest into one so
    that about half of MERGE_SEGMENTS remain; large segments are rarely rewritten."""
    from whoosh.reading import SegmentReader

    if len(segments) <= MERGE_SEGMENTS:
        return list(segments)
    ordered = sorted(segments, key=lambda segment: segment.doc_count_all())
    cut = len(ordered) - MERGE_SEGMENTS // 2 + 1
    for segment in ordered[:cut]:
        reader = SegmentReader(writer.storage, writer.schema, segment)
        writer.add_reader(reader)
        reader.close()
    return ordered[cut:]


class IndexUnavailable(Exception):
    pass


class _Segment:
    """Lexicon copies and the docnum -> message id column of one immutable segment."""

    def __init__(self, reader):
        self.mids = list(reader.column_reader("mid"))
        self.lexicons: dict[str, tuple[list[str], str, list[int]]] = {}
        self.lock = threading.Lock()

    def lexicon(self, reader, field: str):
        with self.lock:
            entry = self.lexicons.get(field)
            if entry is None:
                terms = [term.decode("utf-8") if isinstance(term, bytes) else term
                         for term in reader.lexicon(field)]
                starts, position = [], 0
                for term in terms:
                    starts.append(position)
                    position += len(term) + 1
                entry = self.lexicons[field] = (terms, "\n".join(terms), starts)
            return entry


class ShardIndex:
    """The index of shard `number` under `path`."""

    def __init__(self, path: str, number: int):
        self.path = path
        self.number = number
        self.ix = None
        self.ready = False  # True once start-up found it consistent with the store
        self.max_mid = None  # highest message id indexed (writer side), None until known
        self.dirty = False  # committed since the last idle merge check (indexer thread)
        self._local = threading.local()
        self._segments: dict[str, _Segment] = {}
        self._segments_lock = threading.Lock()

    # -- opening (indexer thread) --------------------------------------------------

    def open(self) -> bool:
        """Open or create; returns False when it had to be created (missing or corrupt)."""
        try:
            if windex.exists_in(self.path):
                self.ix = windex.open_dir(self.path)
                if set(self.ix.schema.names()) != set(make_schema().names()):
                    raise ValueError("index of an older schema: rebuild")
                with self.ix.searcher() as searcher:  # reads the TOC and every segment's files
                    searcher.doc_count_all()
                    for reader, _ in searcher.reader().leaf_readers():
                        if reader.segment() is not None:
                            list(reader.column_reader("mid"))[:1]
                return True
        except Exception:
            shutil.rmtree(self.path, ignore_errors=True)
        os.makedirs(self.path, exist_ok=True)
        self.ix = windex.create_in(self.path, make_schema())
        return False

    def indexed_ids(self) -> set[int]:
        """Message ids of the live documents (start-up consistency check)."""
        ids = set()
        with self.ix.searcher() as searcher:
            for reader, _ in searcher.reader().leaf_readers():
                if reader.segment() is None:
                    continue
                column = list(reader.column_reader("mid"))
                ids.update(mid for docnum, mid in enumerate(column) if not reader.is_deleted(docnum))
        return ids

    def apply(self, adds: list[tuple[int, int, dict, bool]], deletes: list[int], resets: list[int],
              merge: bool = False) -> None:
        """One commit: resets (account ids) and deletes first, then adds
        (account id, message id, {field: folded token set}, scan). A message id
        above every id indexed so far cannot have a document yet and is simply
        added; others (a replayed queue, a reindex, a reused row id) replace
        theirs. Segments are merged only when asked (merge_due), not per commit."""
        if self.max_mid is None:
            self.max_mid = max((max(segment_mids, default=0) for segment_mids in self._all_mids()), default=0)
        writer = self.ix.writer(limitmb=64)
        try:
            for account_id in resets:
                writer.delete_by_term("acct", str(account_id))
            for message_id in deletes:
                writer.delete_by_term("key", str(message_id))
            for account_id, message_id, texts, scan in adds:
                add = writer.add_document if message_id > self.max_mid else writer.update_document
                add(key=str(message_id), acct=str(account_id), mid=message_id,
                    scan="1" if scan else "0", **texts)  # texts has "plain"
                self.max_mid = max(self.max_mid, message_id)
        except BaseException:
            writer.cancel()
            self.max_mid = None
            raise
        if merge:
            writer.commit(mergetype=merge_smallest)
        else:
            writer.commit(merge=False)

    def _all_mids(self):
        with self.ix.searcher() as searcher:
            for reader, _ in searcher.reader().leaf_readers():
                if reader.segment() is not None:
                    yield list(reader.column_reader("mid"))

    def segment_count(self) -> int:
        with self.ix.searcher() as searcher:
            return sum(1 for reader, _ in searcher.reader().leaf_readers() if reader.segment() is not None)

    def doc_count(self) -> int:
        return self.ix.doc_count() if self.ix is not None else 0

    def size_bytes(self) -> int:
        return sum(entry.stat().st_size for entry in os.scandir(self.path) if entry.is_file())

    # -- lookups (query threads) ---------------------------------------------------

    def _searcher(self):
        # Not Searcher.refresh(): its reader reuse keeps the old segments' deletion
        # sets (and, in whoosh-reloaded 2.7.5, the old segments themselves).
        searcher = getattr(self._local, "searcher", None)
        if searcher is None or not searcher.up_to_date():
            if searcher is not None:
                searcher.close()
            searcher = self._local.searcher = self.ix.searcher()
        return searcher

    def _leaves(self):
        """(segment reader, _Segment) of the current generation."""
        reader = self._searcher().reader()
        leaves = []
        with self._segments_lock:
            live = set()
            for segreader, _ in reader.leaf_readers():
                if segreader.segment() is None:  # EmptyReader: no segments yet
                    continue
                segid = segreader.segment().segment_id()
                live.add(segid)
                cached = self._segments.get(segid)
                if cached is None:
                    cached = self._segments[segid] = _Segment(segreader)
                leaves.append((segreader, cached))
            for segid in list(self._segments):
                if segid not in live:
                    del self._segments[segid]
        return leaves

    def warm(self, fields=FIELDS) -> None:
        """Build the lexicon copies of new segments now (the indexer does, when idle),
        so a query does not pay for them."""
        for segreader, segment in self._leaves():
            for field in fields:
                segment.lexicon(segreader, field)

    def lookup(self, field: str, conditions: list[tuple[str, str]]):
        """Message ids whose `field` has, for every (kind, token), a term equal to
        ("exact"), starting with ("prefix"), ending with ("suffix") or containing
        ("substring") the token; plus every "scan" document. A condition that
        expands to more than MAX_EXPANSION terms is left out (a superset still);
        None if all are."""
        found = self.lookup_proving(field, conditions, prove=False)
        return None if found is None else found[0]

    def lookup_proving(self, field: str, conditions: list[tuple[str, str]], prove: bool = True):
        """(maybe, proven): `maybe` as lookup() returns; `proven` the documents of
        it whose `field` text is unchanged by folding (text.document "plain"), for
        which a term hit proves the substring is there (query.py decides when)."""
        maybe: set[int] = set()
        proven: set[int] = set()
        for segreader, segment in self._leaves():
            docs = None
            for kind, token in conditions:
                terms = self._expand(segreader, segment, field, kind, token)
                if terms is None:
                    continue
                hits = set()
                for term in terms:
                    hits.update(segreader.postings(field, term).all_ids())
                docs = hits if docs is None else docs & hits
                if not docs:
                    break
            if docs is None:
                return None
            if docs and segreader.has_deletions():
                docs = {docnum for docnum in docs if not segreader.is_deleted(docnum)}
            mids = segment.mids
            if prove and docs and ("plain", field) in segreader:
                plain = set(segreader.postings("plain", field).all_ids())
                proven.update(mids[docnum] for docnum in docs & plain)
            if ("scan", "1") in segreader:
                docs = docs | set(segreader.postings("scan", "1").all_ids())
            maybe.update(mids[docnum] for docnum in docs)
        return maybe, proven

    def _expand(self, segreader, segment: _Segment, field: str, kind: str, token: str):
        if kind == "exact":
            return [token] if (field, token) in segreader else []
        terms, blob, starts = segment.lexicon(segreader, field)
        if kind == "prefix":
            first = bisect.bisect_left(terms, token)
            last = bisect.bisect_left(terms, token + "\U0010ffff")
            return terms[first:last] if last - first <= MAX_EXPANSION else None
        found, position = {}, blob.find(token)
        while position >= 0:
            index = bisect.bisect_right(starts, position) - 1
            term = terms[index]
            if kind == "substring" or term.endswith(token):
                found[index] = term
                if len(found) > MAX_EXPANSION:
                    return None
            position = blob.find(token, starts[index] + len(term) + 1)  # next term
        return list(found.values())


__all__ = ["ShardIndex", "IndexUnavailable", "make_schema", "MAX_EXPANSION"]
