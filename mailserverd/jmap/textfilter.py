"""Text conditions of Email/query (RFC 8621 4.4.1: text, from, to, cc, bcc,
subject, body, header) through the one query layer IMAP SEARCH uses
(notes: search-api): each condition object's text part becomes an IMAP
SearchKey, the search index narrows it to candidates, and each candidate is
verified on its raw bytes by mailserverd.imap.search_eval (RFC 3501 6.4.4
substring, case-insensitive), so IMAP SEARCH and Email/query agree.
"""

from __future__ import annotations

import time

from ..imap import search_eval
from ..imap.search import SearchKey
from ..search.query import candidates
from ..store.api import MessageRef
from .api import MethodError

TEXT_KEYS = {"text": "TEXT", "from": "FROM", "to": "TO", "cc": "CC", "bcc": "BCC",
             "subject": "SUBJECT", "body": "BODY"}
READ_BATCH = 200  # raw messages read and verified at a time


def check_header(condition: dict) -> None:
    """header is [name] or [name, value] of strings (RFC 8621 4.4.1)."""
    value = condition.get("header")
    if value is None:
        return
    if not 1 <= len(value) <= 2 or not all(isinstance(v, str) for v in value) or not value[0] \
            or any(c <= " " or c == ":" for c in value[0]):
        raise MethodError("invalidArguments", "header is [name] or [name, value]")


def text_key(condition: dict):
    """The SearchKey of a condition object's text part, or None if it has none."""
    keys = [SearchKey(op, (condition[name],)) for name, op in TEXT_KEYS.items() if name in condition]
    if "header" in condition:
        header = condition["header"]
        # RFC 8621 4.4.1: [name] alone matches any message having the field, as
        # IMAP HEADER name "" does (RFC 3501 6.4.4).
        keys.append(SearchKey("HEADER", (header[0], header[1] if len(header) > 1 else "")))
    if not keys:
        return None
    return keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))


def _leaves(tree, out: list) -> None:
    """Collect the condition objects of tree that have a text part."""
    if isinstance(tree, tuple):
        for child in tree[1]:
            _leaves(child, out)
    elif tree is not None:
        key = text_key(tree)
        if key is not None:
            out.append((tree, key))


def _necessary(tree, item, test) -> bool:
    """False only if item fails tree whatever its text parts say: condition
    objects by their non-text part, AND/OR as such, NOT undecided (True)."""
    if isinstance(tree, tuple):
        operator, children = tree
        if operator == "NOT":
            return True
        found = (_necessary(child, item, test) for child in children)
        return all(found) if operator == "AND" else any(found)
    return tree is None or test(item, tree)


async def text_sets(ctx, tree, items: dict, test) -> dict:
    """{id(condition object): set of message ids whose text part matches} for
    every condition object of `tree` with a text part. items maps message id
    to its summary row; test(item, condition) decides the non-text part.
    Only messages that can still pass the tree's non-text conditions
    (_necessary: the mailbox, keywords, dates, size) are read and verified."""
    leaves: list = []
    _leaves(tree, leaves)
    if not leaves:
        return {}
    possible = {mid for mid, item in items.items() if _necessary(tree, item, test)}
    checks: dict[int, list] = {}
    for condition, key in leaves:
        found = await candidates(ctx.store, ctx.account, key)
        for mid in possible if found is None else possible & set(found):
            checks.setdefault(mid, []).append((condition, key))
    result = {id(condition): set() for condition, _key in leaves}
    now = time.time()
    ids = sorted(checks)
    for start in range(0, len(ids), READ_BATCH):
        batch = ids[start:start + READ_BATCH]
        raws = await ctx.store.read_messages(ctx.account, batch)
        for mid in batch:
            raw = raws.get(mid)
            if raw is None:
                continue  # expunged meanwhile
            item = items[mid]
            ref = MessageRef(mailbox_id=0, uid=0, message_id=mid, size=item["size"],
                             flags=frozenset(), modseq=0, received_at=item["received_at"])
            facts = search_eval.MessageFacts(seq=0, ref=ref, raw=raw, now=now)
            for condition, key in checks[mid]:
                if search_eval.evaluate(key, facts, max_uid=0, max_seq=0):
                    result[id(condition)].add(mid)
    return result
