"""Looking at and steering the outbound queue: what `mailserverctl queue` and /metrics read.

Synchronous SQL over the directory engine, like outbound/queue.py; `now`
always comes from the caller.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.engine import Engine

from ..store.schema import (outbound_bounces as bounces, outbound_deliveries as deliveries,
                            outbound_messages as messages, outbound_recipients as recipients)
from .queue import HARD, PENDING, discard

# Row states, as /metrics and `queue list` name them.
HELD, ACTIVE, DEFERRED, QUEUED = "held", "active", "deferred", "queued"
STATES = (QUEUED, DEFERRED, ACTIVE, HELD)


@dataclasses.dataclass(frozen=True)
class QueueEntry:
    message_id: str
    domain: str
    sender: str
    size: int
    created_at: float
    attempts: int
    next_attempt_at: float
    state: str
    pending: int  # recipients still to deliver
    last_error: str


@dataclasses.dataclass(frozen=True)
class RecipientState:
    address: str
    status: str
    code: int
    enhanced: str
    text: str
    remote_host: str
    notify: str | None
    orcpt: str | None


@dataclasses.dataclass(frozen=True)
class MessageDetail:
    message_id: str
    sender: str
    size: int
    created_at: float
    ret: str | None
    envid: str | None
    headers: bytes  # the message's header block, for `queue show`
    deliveries: tuple[tuple[QueueEntry, tuple[RecipientState, ...]], ...]


@dataclasses.dataclass(frozen=True)
class QueueStats:
    deliveries: int  # queue rows (message x domain)
    messages: int
    oldest_age: float  # seconds since the oldest queued message arrived; 0 if empty
    by_state: dict  # STATES -> count
    suppressed: int  # addresses hard-bounced within the suppression window


def _state(now: float):
    return case((deliveries.c.held.is_(True), HELD),
                (deliveries.c.lease_until > now, ACTIVE),
                (deliveries.c.attempts > 0, DEFERRED),
                else_=QUEUED)


def _entries(conn, now: float, where=None) -> list[QueueEntry]:
    pending = (select(func.count()).select_from(recipients)
               .where(recipients.c.delivery_id == deliveries.c.id, recipients.c.status == PENDING)
               .scalar_subquery())
    query = (select(deliveries.c.message_id, deliveries.c.domain, messages.c.sender, messages.c.size,
                    messages.c.created_at, deliveries.c.attempts, deliveries.c.next_attempt_at,
                    _state(now).label("state"), pending.label("pending"), deliveries.c.last_error)
             .join(messages, messages.c.id == deliveries.c.message_id)
             .order_by(messages.c.created_at, deliveries.c.message_id, deliveries.c.domain))
    if where is not None:
        query = query.where(where)
    return [QueueEntry(row.message_id, row.domain, row.sender, row.size, row.created_at, row.attempts,
                       row.next_attempt_at, row.state, row.pending, row.last_error or "")
            for row in conn.execute(query)]


def list_queue(engine: Engine, now: float) -> list[QueueEntry]:
    """Every delivery, oldest message first."""
    with engine.connect() as conn:
        return _entries(conn, now)


def show(engine: Engine, message_id: str, now: float) -> MessageDetail | None:
    with engine.connect() as conn:
        message = conn.execute(select(messages).where(messages.c.id == message_id)).first()
        if message is None:
            return None
        entries = _entries(conn, now, deliveries.c.message_id == message_id)
        rows = conn.execute(select(recipients, deliveries.c.domain)
                            .join(deliveries, deliveries.c.id == recipients.c.delivery_id)
                            .where(deliveries.c.message_id == message_id)
                            .order_by(recipients.c.address)).all()
    body = bytes(message.body)
    end = body.find(b"\r\n\r\n")
    headers = body if end < 0 else body[:end + 2]
    by_domain = {}
    for row in rows:
        by_domain.setdefault(row.domain, []).append(RecipientState(
            row.address, row.status, row.code, row.enhanced, row.text, row.remote_host, row.notify, row.orcpt))
    return MessageDetail(message.id, message.sender, message.size, message.created_at, message.ret,
                         message.envid, headers,
                         tuple((entry, tuple(by_domain.get(entry.domain, ()))) for entry in entries))


def retry(engine: Engine, message_id: str, now: float) -> int:
    """Make every delivery of the message due now; returns how many (0 = no such message)."""
    with engine.begin() as conn:
        return conn.execute(update(deliveries).where(deliveries.c.message_id == message_id,
                                                     deliveries.c.held.is_(False))
                            .values(next_attempt_at=now)).rowcount


def flush(engine: Engine, now: float) -> int:
    """Make every waiting delivery due now (Postfix `postqueue -f`); returns how many."""
    with engine.begin() as conn:
        # a leased row's next_attempt_at is its lease end (queue.claim): it is being tried now
        return conn.execute(update(deliveries).where(deliveries.c.held.is_(False),
                                                     deliveries.c.next_attempt_at > now,
                                                     or_(deliveries.c.lease_until.is_(None),
                                                         deliveries.c.lease_until <= now))
                            .values(next_attempt_at=now)).rowcount


def delete_message(engine: Engine, message_id: str) -> bool:
    """Remove the message without a bounce (Postfix `postsuper -d`)."""
    return discard(engine, message_id)


def stats(engine: Engine, now: float, suppress_for: float) -> QueueStats:
    with engine.connect() as conn:
        counts = dict(conn.execute(select(_state(now).label("state"), func.count())
                                   .group_by("state")).all())
        message_count, oldest = conn.execute(
            select(func.count(), func.min(messages.c.created_at))).one()
        suppressed = conn.execute(select(func.count()).select_from(bounces).where(
            bounces.c.kind == HARD, bounces.c.last_at >= now - suppress_for)).scalar() if suppress_for > 0 else 0
    by_state = {state: int(counts.get(state, 0)) for state in STATES}
    return QueueStats(deliveries=sum(by_state.values()), messages=int(message_count),
                      oldest_age=max(0.0, now - oldest) if oldest is not None else 0.0,
                      by_state=by_state, suppressed=int(suppressed))


def bounce_counts(engine: Engine) -> dict:
    """Addresses per bounce kind (hard, soft, complaint) ever recorded."""
    with engine.connect() as conn:
        return dict(conn.execute(select(bounces.c.kind, func.count()).group_by(bounces.c.kind)).all())


__all__ = ["list_queue", "show", "retry", "flush", "delete_message", "stats", "bounce_counts",
           "QueueEntry", "MessageDetail", "QueueStats", "STATES"]
