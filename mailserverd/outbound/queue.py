"""The durable outbound queue: synchronous SQL over the directory engine.

Tables (store/schema.py, migration step 2): outbound_messages holds the
message and its body, so any node can deliver it (RocksDB is node-local);
outbound_deliveries is the claimable unit, one per (message, recipient
domain); outbound_recipients keeps each recipient's state and DSN request;
outbound_bounces counts hard, soft and complaint outcomes per address.

Claims are safe with several nodes on one database. A claim stamps a lease
(owner token + expiry) on each row it takes; a row whose lease expired (its
node died) is claimable again. PostgreSQL selects candidates with
SELECT ... FOR UPDATE SKIP LOCKED, so concurrent claimers never wait on or
take each other's rows; SQLite takes them with one conditional UPDATE, which
holds the database's single write lock from its first read.

A claim also moves the row's next_attempt_at to the end of its lease (the
row cannot be taken before then anyway), so the due-rows index
(held, next_attempt_at, id) never walks over rows that are leased: the claim
costs the same with 10,000 rows queued as with 500 (bench/outbound.py showed
4x before). record() sets the real retry time; release_claims() puts back the
due time the row had. A claim's own rows are found by their token through
ix_outbound_lease (store/schema.py, directory migration step 4).

Every function takes `now` (unix seconds) from the caller: no clock in here.
Writes start with a write statement so a SQLite transaction never has to
upgrade a stale read snapshot (SQLITE_BUSY_SNAPSHOT).
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Iterable

from sqlalchemy import and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from ..store.schema import (outbound_bounces as bounces, outbound_deliveries as deliveries,
                            outbound_messages as messages, outbound_recipients as recipients)

DEFAULT_LEASE = 900.0  # seconds a claim lasts: longer than any one SMTP attempt (RFC 5321 4.5.3.2)
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
HARD, SOFT, COMPLAINT = "hard", "soft", "complaint"
MAX_TEXT = 2000  # characters of a remote reply kept per recipient


def new_queue_id() -> str:
    """A queue id (upper-case hex, 60 random bits), the form SMTP's "queued as" shows."""
    return secrets.token_hex(8)[:15].upper()


@dataclasses.dataclass(frozen=True)
class QueuedRecipient:
    address: str
    notify: str | None = None  # RFC 3461 4.1 "NEVER" or e.g. "SUCCESS,FAILURE"
    orcpt: str | None = None  # RFC 3461 4.2 "rfc822;addr"


@dataclasses.dataclass(frozen=True)
class NewMessage:
    """What enqueue() stores: one message for recipients in one or more domains."""

    id: str
    sender: str  # "" = the null reverse-path (a DSN)
    body: bytes
    recipients: tuple[QueuedRecipient, ...]
    created_at: float
    smtputf8: bool = False
    eight_bit: bool = False
    ret: str | None = None
    envid: str | None = None


@dataclasses.dataclass(frozen=True)
class Claimed:
    """One delivery a worker holds the lease on: its message and pending recipients."""

    delivery_id: int
    token: str
    message_id: str
    domain: str
    sender: str
    body: bytes
    created_at: float
    expires_at: float
    attempts: int  # attempts made before this claim
    smtputf8: bool
    eight_bit: bool
    ret: str | None
    envid: str | None
    recipients: tuple[QueuedRecipient, ...]
    due_at: float = 0.0  # next_attempt_at before the claim (release_claims puts it back)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one attempt decided, written by record() in one transaction.

    results: per recipient, objects with recipient/status/code/enhanced/text/
    remote_host (outbound.types.RecipientResult); status "deferred" keeps the
    recipient pending. retry_at: when to try the still-pending ones again.
    bounces: (address, kind, code, enhanced, text) to count. dsns: DSN
    messages for remote senders, enqueued in the same transaction.
    """

    results: tuple
    retry_at: float | None = None
    last_error: str = ""
    bounces: tuple = ()
    dsns: tuple[NewMessage, ...] = ()


def recipient_domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


# -- enqueue -------------------------------------------------------------------------

def _by_domain(message: NewMessage) -> dict[str, list[QueuedRecipient]]:
    by_domain: dict[str, list[QueuedRecipient]] = {}
    for recipient in message.recipients:
        group = by_domain.setdefault(recipient_domain(recipient.address), [])
        if all(other.address != recipient.address for other in group):
            group.append(recipient)
    return by_domain


def _insert_message(conn: Connection, message: NewMessage, lifetime: float, held: bool,
                    lease: tuple[str, float] | None = None) -> list[int]:
    conn.execute(insert(messages).values(
        id=message.id, sender=message.sender, body=message.body, size=len(message.body),
        created_at=message.created_at, smtputf8=message.smtputf8, eight_bit=message.eight_bit,
        ret=message.ret, envid=message.envid))
    ids = []
    for domain, group in _by_domain(message).items():
        values = dict(message_id=message.id, domain=domain, held=held, attempts=0,
                      next_attempt_at=message.created_at, expires_at=message.created_at + lifetime)
        if lease is not None:  # born claimed (enqueue_claimed): as claim() leaves a row
            values.update(lease_owner=lease[0], lease_until=lease[1], next_attempt_at=lease[1])
        delivery_id = conn.execute(insert(deliveries).values(**values)).inserted_primary_key[0]
        conn.execute(insert(recipients), [
            {"delivery_id": delivery_id, "address": r.address, "notify": r.notify, "orcpt": r.orcpt,
             "status": PENDING, "code": 0, "enhanced": "", "text": "", "remote_host": ""}
            for r in group])
        ids.append(delivery_id)
    return ids


def enqueue_claimed(engine: Engine, message: NewMessage, lifetime: float, owner: str, now: float,
                    lease: float = DEFAULT_LEASE) -> list[Claimed]:
    """enqueue() with the new deliveries already leased to `owner`, in the same transaction:
    a worker with free slots attempts them at once, with no claim transaction and no body
    read. Durable as enqueue(); if the node dies the lease runs out and any node claims them."""
    if not message.recipients:
        raise ValueError("a queued message needs at least one recipient")
    token = f"{owner[:40]}-{secrets.token_hex(8)}"
    with engine.begin() as conn:
        ids = _insert_message(conn, message, lifetime, False, (token, now + lease))
    return [Claimed(delivery_id=delivery_id, token=token, message_id=message.id, domain=domain,
                    sender=message.sender, body=message.body, created_at=message.created_at,
                    expires_at=message.created_at + lifetime, attempts=0, smtputf8=message.smtputf8,
                    eight_bit=message.eight_bit, ret=message.ret, envid=message.envid,
                    recipients=tuple(sorted(group, key=lambda r: r.address)), due_at=min(now, message.created_at))
            for delivery_id, (domain, group) in zip(ids, _by_domain(message).items())]


def domain_count(message: NewMessage) -> int:
    """How many deliveries (recipient domains) enqueue() makes of the message."""
    return len(_by_domain(message))


def enqueue(engine: Engine, message: NewMessage, lifetime: float, held: bool = False) -> list[int]:
    """Store the message durably (one transaction); returns its delivery ids.

    held: not claimable until release(): the submission path holds remote
    deliveries while it commits the local copies, so a failed local commit
    (the client gets 4xx and retries) never leaves a half-sent message.
    """
    if not message.recipients:
        raise ValueError("a queued message needs at least one recipient")
    with engine.begin() as conn:
        return _insert_message(conn, message, lifetime, held)


def release(engine: Engine, message_id: str) -> int:
    """Make a held message's deliveries claimable; returns how many."""
    with engine.begin() as conn:
        return conn.execute(update(deliveries).where(deliveries.c.message_id == message_id)
                            .values(held=False)).rowcount


def discard(engine: Engine, message_id: str) -> bool:
    """Remove a message and all its deliveries (queue delete, or a held one given up)."""
    with engine.begin() as conn:
        conn.execute(delete(recipients).where(recipients.c.delivery_id.in_(
            select(deliveries.c.id).where(deliveries.c.message_id == message_id))))
        conn.execute(delete(deliveries).where(deliveries.c.message_id == message_id))
        return conn.execute(delete(messages).where(messages.c.id == message_id)).rowcount > 0


def purge_stale_held(engine: Engine, older_than: float) -> int:
    """Drop held messages created before `older_than`: their client never got a 250."""
    with engine.connect() as conn:
        ids = list(conn.execute(
            select(deliveries.c.message_id).distinct()
            .join(messages, messages.c.id == deliveries.c.message_id)
            .where(deliveries.c.held.is_(True), messages.c.created_at < older_than)).scalars())
    for message_id in ids:
        discard(engine, message_id)
    return len(ids)


# -- claims --------------------------------------------------------------------------

def _claimable(now: float):
    return and_(deliveries.c.held.is_(False), deliveries.c.next_attempt_at <= now,
                or_(deliveries.c.lease_until.is_(None), deliveries.c.lease_until < now))


def claim(engine: Engine, owner: str, now: float, limit: int, lease: float = DEFAULT_LEASE) -> list[Claimed]:
    """Take up to `limit` due deliveries, oldest due first; nobody else gets them until
    record() or release_claims(), or until the lease runs out."""
    if limit <= 0:
        return []
    token = f"{owner[:40]}-{secrets.token_hex(8)}"
    due = (select(deliveries.c.id).where(_claimable(now))
           .order_by(deliveries.c.next_attempt_at, deliveries.c.id).limit(limit))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            found = conn.execute(due.add_columns(deliveries.c.next_attempt_at)
                                 .with_for_update(skip_locked=True)).all()
            if not found:
                return []
            due_at = {row[0]: row[1] for row in found}
            target = deliveries.c.id.in_(list(due_at))
        else:  # SQLite: one statement holds the write lock from its first read
            # the subquery alone decides (same statement, same write lock); repeating the
            # due condition here made SQLite walk every due row of the index for the UPDATE
            target = deliveries.c.id.in_(due.scalar_subquery())
            due_at = {}  # claimed rows were due: due_at is `now` (release_claims makes them due again)
        conn.execute(update(deliveries).where(target).values(
            lease_owner=token, lease_until=now + lease, next_attempt_at=now + lease))
        rows = conn.execute(
            select(deliveries, messages.c.sender, messages.c.body, messages.c.created_at,
                   messages.c.smtputf8, messages.c.eight_bit, messages.c.ret, messages.c.envid)
            .join(messages, messages.c.id == deliveries.c.message_id)
            .where(deliveries.c.lease_owner == token).order_by(deliveries.c.id)).all()
        pending = conn.execute(
            select(recipients.c.delivery_id, recipients.c.address, recipients.c.notify, recipients.c.orcpt)
            .join(deliveries, deliveries.c.id == recipients.c.delivery_id)
            .where(deliveries.c.lease_owner == token, recipients.c.status == PENDING)
            .order_by(recipients.c.address)).all()
    by_delivery: dict[int, list[QueuedRecipient]] = {}
    for row in pending:
        by_delivery.setdefault(row.delivery_id, []).append(QueuedRecipient(row.address, row.notify, row.orcpt))
    return [Claimed(delivery_id=row.id, token=token, message_id=row.message_id, domain=row.domain,
                    sender=row.sender, body=bytes(row.body), created_at=row.created_at,
                    expires_at=row.expires_at, attempts=row.attempts, smtputf8=row.smtputf8,
                    eight_bit=row.eight_bit, ret=row.ret, envid=row.envid,
                    recipients=tuple(by_delivery.get(row.id, ())), due_at=min(now, due_at.get(row.id, now)))
            for row in rows]


def release_claims(engine: Engine, claimed: Iterable[Claimed]) -> int:
    """Give back leases without an attempt (a stopping worker that never started them)."""
    count = 0
    with engine.begin() as conn:
        for item in claimed:
            count += conn.execute(update(deliveries).where(
                deliveries.c.id == item.delivery_id, deliveries.c.lease_owner == item.token)
                .values(lease_owner=None, lease_until=None, next_attempt_at=item.due_at)).rowcount
    return count


def record(engine: Engine, claimed: Claimed, outcome: Outcome, now: float) -> bool:
    """Write one attempt's results; False (and nothing written) if the lease was lost.

    Recipients delivered or failed are final; when none is pending the
    delivery goes, and the message with its body when it has no delivery left.
    """
    return record_many(engine, [(claimed, outcome)], now)[0]


def record_many(engine: Engine, items, now: float) -> list[bool]:
    """record() for several (claimed, outcome) pairs in ONE transaction (one fsync):
    the worker's group commit of attempt outcomes. One answer per pair, in order."""
    with engine.begin() as conn:
        return [_record(conn, claimed, outcome, now) for claimed, outcome in items]


def _record(conn: Connection, claimed: Claimed, outcome: Outcome, now: float) -> bool:
    results = list(outcome.results)
    still_pending = any(result.status == "deferred" for result in results)
    mine = and_(deliveries.c.id == claimed.delivery_id, deliveries.c.lease_owner == claimed.token)
    values = dict(attempts=claimed.attempts + 1, lease_owner=None, lease_until=None,
                  last_error=outcome.last_error[:MAX_TEXT] or None)
    if still_pending:
        if outcome.retry_at is None:
            raise ValueError("deferred recipients need a retry time")
        values["next_attempt_at"] = outcome.retry_at
    else:
        values["next_attempt_at"] = now  # undo the claim's push (rows left, if any, are due)
    if conn.execute(update(deliveries).where(mine).values(**values)).rowcount != 1:
        return False
    for result in results:
        status = PENDING if result.status == "deferred" else result.status
        conn.execute(update(recipients).where(
            recipients.c.delivery_id == claimed.delivery_id, recipients.c.address == result.recipient)
            .values(status=status, code=result.code, enhanced=result.enhanced,
                    text=result.text[:MAX_TEXT], remote_host=result.remote_host or "", updated_at=now))
    _count_bounces(conn, outcome.bounces, now)
    for dsn in outcome.dsns:
        _insert_message(conn, dsn, claimed.expires_at - claimed.created_at, held=False)
    left = conn.execute(select(func.count()).select_from(recipients).where(
        recipients.c.delivery_id == claimed.delivery_id, recipients.c.status == PENDING)).scalar()
    if not left:
        conn.execute(delete(recipients).where(recipients.c.delivery_id == claimed.delivery_id))
        conn.execute(delete(deliveries).where(deliveries.c.id == claimed.delivery_id))
        conn.execute(delete(messages).where(
            messages.c.id == claimed.message_id,
            ~exists(select(deliveries.c.id).where(deliveries.c.message_id == claimed.message_id))))
    return True


# -- bounces and suppression -----------------------------------------------------------

def _count_bounces(conn: Connection, items, now: float) -> None:
    for address, kind, code, enhanced, text in items:
        key = and_(bounces.c.address == address.lower(), bounces.c.kind == kind)
        changed = conn.execute(update(bounces).where(key).values(
            count=bounces.c.count + 1, last_at=now, code=code, enhanced=enhanced,
            text=text[:MAX_TEXT])).rowcount
        if not changed:
            conn.execute(insert(bounces).values(address=address.lower(), kind=kind, count=1, first_at=now,
                                                last_at=now, code=code, enhanced=enhanced, text=text[:MAX_TEXT]))


def is_suppressed(engine: Engine, address: str, now: float, window: float) -> bool:
    """True if `address` hard-bounced within the last `window` seconds."""
    if window <= 0:
        return False
    with engine.connect() as conn:
        return conn.execute(select(bounces.c.address).where(
            bounces.c.address == address.lower(), bounces.c.kind == HARD,
            bounces.c.last_at >= now - window)).first() is not None
