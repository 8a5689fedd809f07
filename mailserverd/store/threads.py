"""Conversations: a thread id for each message at delivery and import (issue 12).

The thread is the connected component of the reference graph, as JWZ's
algorithm (RFC 5256 3 REFERENCES, steps 1-3) links it: a message joins the
thread of any Message-ID it carries or references (References, else
In-Reply-To), so a reply chain is one thread whatever order its messages
arrive in; a late parent that links two threads merges them (the smaller
thread id wins and the other's messages are renumbered in the same
transaction). Without any known reference, a reply ("Re:", RFC 5256 2.1
base subject) joins the newest message with the same base subject received
within SUBJECT_WINDOW; anything else starts a thread whose id is its own
message id. thread_refs (store/searchqueue.py) maps every Message-ID seen to
its thread, so each delivery costs one indexed lookup, not a scan.
"""

from __future__ import annotations

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection

from . import schema
from .searchqueue import thread_refs

SUBJECT_WINDOW = 30 * 24 * 3600.0  # seconds a subject-only reply may reach back
SUBJECT_SCAN = 200  # recent messages compared by base subject
MAX_KEYS = 100  # Message-IDs taken from one message (its own + the last 99 references)
MAX_ID = 998  # longest Message-ID kept (RFC 5322 line length)

_msgs = schema.messages
_LOOKUP = select(thread_refs.c.msgid, thread_refs.c.thread_id).where(
    thread_refs.c.account_id == bindparam("a_id"),
    thread_refs.c.msgid.in_(bindparam("keys", expanding=True)))
_SET_THREAD = update(_msgs).where(_msgs.c.id == bindparam("t_mid")).values(thread_id=bindparam("t_tid"))
_RENUMBER_MESSAGES = (update(_msgs).where(_msgs.c.account_id == bindparam("a_id"),
                                          _msgs.c.thread_id.in_(bindparam("old", expanding=True)))
                      .values(thread_id=bindparam("new")))
_RENUMBER_REFS = (update(thread_refs).where(thread_refs.c.account_id == bindparam("a_id"),
                                            thread_refs.c.thread_id.in_(bindparam("old", expanding=True)))
                  .values(thread_id=bindparam("new")))
_RECENT = (select(_msgs.c.subject, _msgs.c.thread_id)
           .where(_msgs.c.account_id == bindparam("a_id"), _msgs.c.received_at >= bindparam("since"),
                  _msgs.c.thread_id.is_not(None))
           .order_by(_msgs.c.received_at.desc()).limit(SUBJECT_SCAN))


def message_keys(row: dict) -> tuple[str, list[str]]:
    """(own Message-ID or "", referenced ids: References, else In-Reply-To)."""
    own = (row.get("message_id_header") or "")[:MAX_ID]
    refs = (row.get("references") or "").split()
    if not refs and row.get("in_reply_to"):
        refs = [row["in_reply_to"]]
    refs = [ref[:MAX_ID] for ref in refs[-(MAX_KEYS - 1):] if ref != own]
    return own, refs


def assign_threads(conn: Connection, rows: list[dict], ids: list[int]) -> None:
    """Give each inserted message (rows as inserted, ids their new message ids) a
    thread id, merging threads it links; runs inside the delivery transaction."""
    from ..imap.sort import subject_info

    for row, message_id in zip(rows, ids):
        account_id = row["account_id"]
        own, refs = message_keys(row)
        keys = list(dict.fromkeys([own] + refs if own else refs))
        known = dict(conn.execute(_LOOKUP, {"a_id": account_id, "keys": keys}).all()) if keys else {}
        threads = set(known.values())
        if not threads and subject_info(row.get("subject") or "")[1]:
            threads = _by_subject(conn, account_id, row, subject_info)
        thread = min(threads) if threads else message_id
        others = sorted(threads - {thread})
        if others:  # this message links threads: merge them into the smallest id
            params = {"a_id": account_id, "old": others, "new": thread}
            conn.execute(_RENUMBER_MESSAGES, params)
            conn.execute(_RENUMBER_REFS, params)
        new = [dict(account_id=account_id, msgid=key, thread_id=thread) for key in keys if key not in known]
        if new:
            conn.execute(insert(thread_refs), new)
        # Set at once: a later message of the same batch may find or renumber it.
        conn.execute(_SET_THREAD, {"t_mid": message_id, "t_tid": thread})


def _by_subject(conn: Connection, account_id: int, row: dict, subject_info) -> set[int]:
    base = subject_info(row.get("subject") or "")[0]
    if not base:
        return set()
    since = (row.get("received_at") or 0) - SUBJECT_WINDOW
    for subject, thread_id in conn.execute(_RECENT, {"a_id": account_id, "since": since}):
        if subject_info(subject or "")[0] == base:
            return {thread_id}
    return set()


__all__ = ["assign_threads", "message_keys", "SUBJECT_WINDOW"]
