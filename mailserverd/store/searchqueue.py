"""The durable full-text index queue (issue 12) and the conversation table.

search_queue rows are written in the SAME transaction as the message rows
they describe (delivery, import, expunge of a message's last copy), so a
crash can never leave a stored message unknown to the indexer, nor a
destroyed one forgotten: mailserverd.search's indexer drains the queue in id
order, commits the Whoosh index, then deletes the rows it applied (a crash in
between replays them; applying twice is harmless).

Ops: "add" (index message_id), "del" (drop it), "reset" (drop every document
of account_id before the "add" rows that follow it: `mailserverctl reindex`).
While an "add" row is pending, searches treat its message as a candidate, so
results never depend on how far the indexer has got.

thread_refs maps every Message-ID an account has seen (its own or one it
referenced) to the conversation holding it (store/threads.py).
"""

from __future__ import annotations

from typing import Iterable

from sqlalchemy import (BigInteger, Column, Index, Integer, MetaData, String, Table, bindparam,
                        delete, func, insert, select, text)
from sqlalchemy.engine import Connection

ID = BigInteger().with_variant(Integer(), "sqlite")

search_meta = MetaData()

search_queue = Table(
    "search_queue", search_meta,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("account_id", BigInteger, nullable=False),
    Column("message_id", BigInteger, nullable=False),  # 0 for "reset"
    Column("op", String(8), nullable=False),  # add, del, reset
    Column("at", BigInteger, nullable=False, default=0),  # unix time enqueued (lag metric)
    Index("ix_search_queue_account", "account_id", "op"),
)

thread_refs = Table(
    "thread_refs", search_meta,
    Column("account_id", BigInteger, primary_key=True, autoincrement=False),
    Column("msgid", String(1000), primary_key=True),  # "<...>" as found in the field
    Column("thread_id", BigInteger, nullable=False),
    Index("ix_thread_refs_thread", "account_id", "thread_id"),
)


def create_tables(conn: Connection) -> None:
    """Shard migration step: the queue, thread_refs, and the lookups threading needs."""
    search_meta.create_all(conn)
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_messages_thread ON messages (account_id, thread_id)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_messages_subject_time "
                      "ON messages (account_id, received_at)"))


_INSERT = insert(search_queue)


def enqueue(conn: Connection, entries: Iterable[tuple[int, int, str]], now: float = 0) -> None:
    """Queue (account_id, message_id, op) rows inside the caller's transaction."""
    rows = [dict(account_id=a, message_id=m, op=op, at=int(now)) for a, m, op in entries]
    if rows:
        conn.execute(_INSERT, rows)


def enqueue_added(conn: Connection, account_ids: Iterable[int], message_ids: Iterable[int],
                  now: float = 0) -> None:
    enqueue(conn, [(a, m, "add") for a, m in zip(account_ids, message_ids)], now)


def enqueue_destroyed(conn: Connection, account_id: int, message_ids: Iterable[int],
                      now: float = 0) -> None:
    enqueue(conn, [(account_id, m, "del") for m in message_ids], now)


def enqueue_reindex(conn: Connection, account_id: int, now: float = 0) -> int:
    """A "reset" for the account, then an "add" for each of its messages; returns how many."""
    from .schema import messages
    enqueue(conn, [(account_id, 0, "reset")], now)
    result = conn.execute(insert(search_queue).from_select(
        ["account_id", "message_id", "op", "at"],
        select(messages.c.account_id, messages.c.id, text("'add'"), text(str(int(now))))
        .where(messages.c.account_id == account_id).order_by(messages.c.id)))
    return result.rowcount or 0


_PENDING = select(search_queue.c.message_id).where(search_queue.c.account_id == bindparam("a_id"),
                                                  search_queue.c.op == "add")


def pending_adds(conn: Connection, account_id: int) -> set[int]:
    """Messages of the account the indexer has not applied yet (search candidates)."""
    return set(conn.execute(_PENDING, {"a_id": account_id}).scalars())


def take(conn: Connection, limit: int) -> list:
    """The oldest `limit` queue rows (id, account_id, message_id, op, at)."""
    q = search_queue
    return conn.execute(select(q.c.id, q.c.account_id, q.c.message_id, q.c.op, q.c.at)
                        .order_by(q.c.id).limit(limit)).all()


def done(conn: Connection, first_id: int, last_id: int) -> None:
    conn.execute(delete(search_queue).where(search_queue.c.id >= first_id, search_queue.c.id <= last_id))


def depth(conn: Connection) -> tuple[int, int]:
    """(rows queued, enqueue time of the oldest or 0)."""
    q = search_queue
    count, oldest = conn.execute(select(func.count(), func.min(q.c.at))).one()
    return count or 0, oldest or 0


__all__ = ["search_queue", "thread_refs", "create_tables", "enqueue", "enqueue_added",
           "enqueue_destroyed", "enqueue_reindex", "pending_adds", "take", "done", "depth"]


# -- the hooks the store's transactions call (one line each in mail.py / writes.py) --------

def record_delivered(conn: Connection, rows: list[dict], ids: list[int], now: float) -> None:
    """Delivery/import transaction: thread ids (store/threads.py), then the index queue."""
    from .threads import assign_threads
    assign_threads(conn, rows, ids)
    enqueue_added(conn, (row["account_id"] for row in rows), ids, now)


def forget_account(conn: Connection, account_id: int) -> None:
    """Account purge transaction: its documents leave the index, its Message-IDs the thread map."""
    enqueue(conn, [(account_id, 0, "reset")])
    conn.execute(delete(search_queue).where(search_queue.c.account_id == account_id,
                                            search_queue.c.op != "reset"))
    conn.execute(delete(thread_refs).where(thread_refs.c.account_id == account_id))
