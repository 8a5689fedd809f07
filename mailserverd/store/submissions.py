"""JMAP EmailSubmission records (RFC 8621 7): what was sent, when, to whom.

One row per EmailSubmission in the directory database (directory migration
step 7, store/schema.py), written after the message was handed to local
delivery and the outbound queue. Changes are tracked as for Identities
(store/identities.py): each row carries the account-wide sequence number of
its creation and last change, and a destroyed record stays as a tombstone.
Writes run on the store's writer thread and are committed before their
Deferred fires.
"""

from __future__ import annotations

import json

from sqlalchemy import (BigInteger, Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text,
                        func, insert, select, update)
from sqlalchemy.engine import Connection, Engine

ID = BigInteger().with_variant(Integer(), "sqlite")

submissions_meta = MetaData()
email_submissions = Table(
    "email_submissions", submissions_meta,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("account_id", BigInteger, nullable=False),
    Column("identity_id", BigInteger, nullable=False),
    Column("email_id", BigInteger, nullable=False),  # the message row (shard) that was sent
    Column("thread_id", BigInteger, nullable=False),
    Column("envelope", Text, nullable=False),  # JSON Envelope (RFC 8621 7.1)
    Column("send_at", Float, nullable=False),
    Column("undo_status", String(16), nullable=False),
    Column("delivery_status", Text, nullable=False),  # JSON {address: DeliveryStatus}
    Column("queue_id", String(32), nullable=False),  # the "queued as" id, in the logs too
    Column("destroyed", Boolean, nullable=False, default=False),
    Column("created_modseq", BigInteger, nullable=False),
    Column("modseq", BigInteger, nullable=False),
    Index("ix_email_submissions_account", "account_id", "modseq"),
)


def create_tables(conn: Connection) -> None:
    submissions_meta.create_all(conn)


def rows(_mail, engine: Engine, account_id: int) -> list:
    """Every row of the account, tombstones included (AsyncStore.run_read passes the mail store)."""
    with engine.connect() as conn:
        return conn.execute(select(email_submissions).where(email_submissions.c.account_id == account_id)
                            .order_by(email_submissions.c.id)).all()


def _next_modseq(conn: Connection, account_id: int) -> int:
    current = conn.execute(select(func.max(email_submissions.c.modseq))
                           .where(email_submissions.c.account_id == account_id)).scalar()
    return (current or 0) + 1


def record(engine: Engine, account_id: int, identity_id: int, email_id: int, thread_id: int, envelope: dict,
           send_at: float, delivery_status: dict, queue_id: str) -> int:
    """Store one sent EmailSubmission (undoStatus final: nothing is held for undo); its row id."""
    with engine.begin() as conn:
        modseq = _next_modseq(conn, account_id)
        return conn.execute(insert(email_submissions).values(
            account_id=account_id, identity_id=identity_id, email_id=email_id, thread_id=thread_id,
            envelope=json.dumps(envelope), send_at=send_at, undo_status="final",
            delivery_status=json.dumps(delivery_status), queue_id=queue_id, destroyed=False,
            created_modseq=modseq, modseq=modseq)).inserted_primary_key[0]


def destroy(engine: Engine, account_id: int, row_ids: list) -> list:
    """Tombstone the account's live records among row_ids; the ids destroyed."""
    with engine.begin() as conn:
        modseq = _next_modseq(conn, account_id)
        live = [row.id for row in conn.execute(
            select(email_submissions.c.id).where(email_submissions.c.account_id == account_id,
                                                 email_submissions.c.destroyed.is_(False),
                                                 email_submissions.c.id.in_(row_ids)))]
        if live:
            conn.execute(update(email_submissions).where(email_submissions.c.id.in_(live))
                         .values(destroyed=True, modseq=modseq))
    return live
