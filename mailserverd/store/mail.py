"""Mail rows on the shards: mailboxes, messages, flags, the change log.

Synchronous and thread-safe; AsyncStore calls it from its threads. Every
write that references a blob holds blobs.lock from the synced blob write to
the metadata commit, and purges check references under the same lock, so a
blob is never freed while a commit that needs it is in flight.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict, defaultdict
from typing import Iterable, Sequence

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from ..mime.imapsection import IMAPMessage
from ..mime.summary import summarize
from . import schema, searchqueue
from .api import (DEFAULT_MAILBOXES, SPECIAL_USE, Account, DeliveryTarget, Mailbox, MessageRef,
                  NoSuchMailbox, OverQuota, StoreError)
from .blobs import BlobStore, blob_id_of
from .mailbox_ops import MailboxOps, canonical_name, checked_name
from .rows import flag_columns, ref_of
from .writes import WriteOps



@dataclasses.dataclass
class Delivery:
    """One message for one or more targets, committed with others in a group."""

    body: bytes
    targets: Sequence[DeliveryTarget]
    received_at: float | None = None
    skip_duplicates: bool = False  # import: a body already in the mailbox is not added again
    result: list = dataclasses.field(default_factory=list)  # MessageRef per stored copy
    error: Exception | None = None


@dataclasses.dataclass(frozen=True)
class Change:
    """What subscribers (IMAP IDLE, JMAP push) hear after a commit."""

    account_id: int
    modseq: int


def message_structure(item: Delivery) -> tuple:
    """IMAP ENVELOPE and BODYSTRUCTURE (RFC 3501 7.4.2) of a delivery, computed
    once here for every copy: the per-copy prepend holds only trace and check
    fields (Return-Path, Received, Authentication-Results, X-Spam-*), which
    neither item reads, and leaves the header/body boundary where it was.
    (None, None) if the parser gives up: FETCH then parses the stored message."""
    prepend = item.targets[0].prepend if item.targets else b""
    try:
        message = IMAPMessage(prepend + item.body)
        return message.envelope(), message.bodystructure(True)
    except Exception:
        return None, None


class ExpungedCache:
    """Bodies of messages expunged recently, by (shard, message id).

    Other IMAP sessions keep showing a message until they are told of its
    expunge (RFC 3501 7.4.1) and may FETCH it meanwhile; RFC 2180 4.1.3 lets
    the server keep answering with the data. Bounded by bytes; per process.
    """

    def __init__(self, budget: int = 64 * 1024 * 1024):
        self.budget = budget
        self.used = 0
        self._entries: "OrderedDict[tuple, bytes]" = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, account: Account, rows, blobs: BlobStore) -> None:
        for row in rows:
            try:
                data = bytes(row.prepend) + blobs.get(row.blob_id)
            except KeyError:
                continue
            if len(data) > self.budget // 16:
                continue
            with self._lock:
                self._entries[(account.shard, row.id)] = data
                self.used += len(data)
                while self.used > self.budget:
                    _, old = self._entries.popitem(last=False)
                    self.used -= len(old)

    def get(self, account: Account, message_id: int):
        with self._lock:
            return self._entries.get((account.shard, message_id))


class MailStore(WriteOps, MailboxOps):
    def __init__(self, shards: Sequence[Engine], blobs: BlobStore, clock=time.time):
        self.shards = list(shards)
        self.blobs = blobs
        self.clock = clock
        self._ready_accounts: set[int] = set()  # accounts whose counters and mailboxes exist
        self.expunged = ExpungedCache()

    def engine(self, account: Account) -> Engine:
        return self.shards[account.shard]

    # Accounts

    def init_account(self, account: Account) -> None:
        """Create the account's counters and RFC 6154 mailboxes (idempotent)."""
        with self.engine(account).begin() as conn:
            self._ensure_account(conn, account)

    def _ensure_account(self, conn: Connection, account: Account) -> None:
        if account.id in self._ready_accounts:
            return
        if conn.execute(_SELECT_ACCOUNT_STATE, {"a_id": account.id}).first():
            self._ready_accounts.add(account.id)  # only rows already committed are cached
            return
        conn.execute(insert(schema.account_state).values(account_id=account.id, modseq=1, used_bytes=0))
        # UIDVALIDITY from the clock (RFC 3501 2.3.1.1: must change if UIDs are reused)
        uidvalidity = int(self.clock())
        for name in DEFAULT_MAILBOXES:
            conn.execute(insert(schema.mailboxes).values(
                account_id=account.id, name=name, special_use=SPECIAL_USE.get(name),
                uidvalidity=uidvalidity, uidnext=1, subscribed=True, modseq=1))

    def purge_account(self, account: Account) -> int:
        """Delete all of the account's mail rows; free blobs nobody references. Returns messages removed."""
        self._ready_accounts.discard(account.id)
        with self.blobs.lock:
            with self.engine(account).begin() as conn:
                rows = conn.execute(select(schema.messages.c.blob_id)
                                    .where(schema.messages.c.account_id == account.id)).scalars().all()
                freed = self._release_blobs(conn, rows)
                for table in (schema.mailbox_messages, schema.messages, schema.mailboxes,
                              schema.subscriptions, schema.changes, schema.account_state):
                    conn.execute(delete(table).where(table.c.account_id == account.id))
                searchqueue.forget_account(conn, account.id)
            self._free_unreferenced(account.shard, freed)
        return len(rows)

    # Delivery (group commit)

    def deliver_many(self, deliveries: Sequence[Delivery]) -> list[Change]:
        """Store several deliveries with one synced blob batch and one
        transaction per shard. Each Delivery gets .result or .error."""
        now = self.clock()
        summaries = {}
        structures = {}
        blobs = {}
        for item in deliveries:
            blob_id = blob_id_of(item.body)
            blobs[blob_id] = item.body
            if blob_id not in summaries:
                summaries[blob_id] = summarize(item.body)
                structures[blob_id] = message_structure(item)
        by_shard: dict[int, list[tuple[Delivery, DeliveryTarget]]] = defaultdict(list)
        for item in deliveries:
            for target in item.targets:
                by_shard[target.account.shard].append((item, target))
        self._precheck_cross_shard(by_shard)
        changes = []
        with self.blobs.lock:
            self.blobs.put_many(blobs)  # RocksDB WriteBatch, sync=True, before the metadata
            for shard, work in by_shard.items():
                try:
                    with self.shards[shard].begin() as conn:
                        changes.extend(self._insert_copies(conn, work, summaries, structures, now))
                except Exception as exc:  # the whole shard transaction rolled back
                    for item, _target in work:
                        item.error = item.error or exc
                        item.result = []
        return changes

    def _precheck_cross_shard(self, by_shard) -> None:
        """A delivery whose recipients live on several shards is checked on all
        of them (mailboxes, quota) before any shard commits, so a refusal on one
        does not leave copies on another (the client would retry and duplicate)."""
        spanning = {}
        for work in by_shard.values():
            for item, target in work:
                spanning.setdefault(id(item), set()).add(target.account.shard)
        for shard, work in by_shard.items():
            checks = [(item, target) for item, target in work if len(spanning[id(item)]) > 1]
            if checks:
                with self.shards[shard].begin() as conn:
                    self._plan_copies(conn, checks)

    def _insert_copies(self, conn, work, summaries, structures, now) -> list[Change]:
        """Plan every copy (mailbox, duplicate, quota), then write them in bulk:
        one counter update per account and mailbox, executemany inserts."""
        plans = self._plan_copies(conn, work)
        if not plans:
            return []
        by_account: dict[int, list] = defaultdict(list)
        by_mailbox: dict[int, list] = defaultdict(list)
        for plan in plans:
            by_account[plan["account"].id].append(plan)
            by_mailbox[plan["mailbox"].id].append(plan)
        changes = []
        for account_id, group in by_account.items():
            last = conn.execute(_BUMP_ACCOUNT, {"a_id": account_id, "n": len(group),
                                                "bytes": sum(p["size"] for p in group)}).scalar_one()
            for offset, plan in enumerate(group):
                plan["modseq"] = last - len(group) + 1 + offset
                changes.append(Change(account_id, plan["modseq"]))
        for mailbox_id, group in by_mailbox.items():
            next_uid = conn.execute(_BUMP_MAILBOX, {"m_id": mailbox_id, "n": len(group),
                                                    "m_modseq": max(p["modseq"] for p in group)}).scalar_one()
            for offset, plan in enumerate(group):
                plan["uid"] = next_uid - len(group) + offset  # RFC 3501 2.3.1.1: ascending
        rows = []
        for plan in plans:
            item, target = plan["item"], plan["target"]
            summary = summaries[plan["blob_id"]]
            rows.append(dict(
                account_id=plan["account"].id, blob_id=plan["blob_id"], prepend=target.prepend,
                size=plan["size"], received_at=item.received_at or now,
                sent_at=summary.date.timestamp() if summary.date else None,
                subject=summary.subject, from_addr=summary.from_, to_addr=summary.to,
                cc_addr=summary.cc, message_id_header=summary.message_id,
                in_reply_to=summary.in_reply_to, references=" ".join(summary.references),
                preview=summary.preview, has_attachment=summary.has_attachment,
                envelope=structures[plan["blob_id"]][0], bodystructure=structures[plan["blob_id"]][1]))
        ids = conn.execute(_INSERT_MESSAGES, rows).scalars().all()
        searchqueue.record_delivered(conn, rows, ids, now)  # thread ids + index queue, same transaction
        memberships, log = [], []
        for plan, message_id, row in zip(plans, ids, rows):
            columns, keywords = flag_columns(plan["target"].flags)
            memberships.append(dict(mailbox_id=plan["mailbox"].id, uid=plan["uid"],
                                    message_id=message_id, account_id=plan["account"].id,
                                    modseq=plan["modseq"], keywords=" ".join(sorted(keywords)),
                                    **columns))
            log.append(dict(account_id=plan["account"].id, modseq=plan["modseq"], kind="Email",
                            object_id=message_id, mailbox_id=plan["mailbox"].id, uid=plan["uid"],
                            op="created", at=now))
            plan["item"].result.append(MessageRef(
                mailbox_id=plan["mailbox"].id, uid=plan["uid"], message_id=message_id,
                size=plan["size"], flags=frozenset(plan["target"].flags), modseq=plan["modseq"],
                received_at=row["received_at"]))
        conn.execute(_INSERT_MEMBERSHIPS, memberships)
        conn.execute(_INSERT_CHANGES, log)
        self._add_blob_refs(conn, [(plan["blob_id"], len(plan["item"].body)) for plan in plans])
        return changes

    def _plan_copies(self, conn, work) -> list[dict]:
        """Resolve mailboxes, skip duplicates, check quotas; an item with any
        failing target stores nothing on this shard and gets .error."""
        mailboxes: dict[tuple[int, str], object] = {}
        present: dict[int, set[str]] = {}
        used: dict[int, int] = {}
        plans, failed = [], set()
        blob_ids = {id(item): blob_id_of(item.body) for item, _ in work}
        for item, target in work:
            if item.error is not None:
                failed.add(id(item))
                continue
            account = target.account
            key = (account.id, target.mailbox)
            try:
                if key not in mailboxes:
                    self._ensure_account(conn, account)
                    mailboxes[key] = self._mailbox_row(conn, account, target.mailbox)
            except NoSuchMailbox as exc:
                item.error = exc
                failed.add(id(item))
                continue
            mailbox = mailboxes[key]
            blob_id = blob_ids[id(item)]
            if item.skip_duplicates:
                if mailbox.id not in present:
                    present[mailbox.id] = self._blobs_in_mailbox(conn, mailbox.id, set(blob_ids.values()))
                if blob_id in present[mailbox.id]:
                    continue
                present[mailbox.id].add(blob_id)  # a repeat inside one batch is a duplicate too
            size = len(target.prepend) + len(item.body)
            if account.quota:
                if account.id not in used:
                    used[account.id] = self._used_bytes(conn, account)
                if used[account.id] + size > account.quota:
                    item.error = OverQuota(f"{account.address} is over quota")
                    failed.add(id(item))
                    continue
                used[account.id] += size
            plans.append(dict(item=item, target=target, account=account, mailbox=mailbox,
                              blob_id=blob_id, size=size))
        return [plan for plan in plans if id(plan["item"]) not in failed]

    def _blobs_in_mailbox(self, conn, mailbox_id: int, blob_ids: set[str]) -> set[str]:
        mm, msgs = schema.mailbox_messages, schema.messages
        return set(conn.execute(select(msgs.c.blob_id)
                                .join(mm, mm.c.message_id == msgs.c.id)
                                .where(mm.c.mailbox_id == mailbox_id,
                                       msgs.c.blob_id.in_(list(blob_ids)))).scalars())

    def _add_blob_refs(self, conn, blobs: list[tuple[str, int]]) -> None:
        counts: dict[str, int] = defaultdict(int)
        sizes = {}
        for blob_id, size in blobs:
            counts[blob_id] += 1
            sizes[blob_id] = size
        known = set(conn.execute(_KNOWN_BLOBS, {"ids": list(counts)}).scalars())
        if known:
            conn.execute(_ADD_BLOB_REFS, [{"b_id": b, "b_count": counts[b]} for b in known])
        new = [dict(blob_id=b, refs=counts[b], size=sizes[b]) for b in counts if b not in known]
        if new:
            conn.execute(_INSERT_BLOB_REFS, new)

    def _used_bytes(self, conn, account) -> int:
        return conn.execute(select(schema.account_state.c.used_bytes)
                            .where(schema.account_state.c.account_id == account.id)).scalar() or 0

    def _next_modseq(self, conn, account: Account, size_delta: int = 0) -> int:
        # UPDATE ... RETURNING takes the row lock on PostgreSQL, so several
        # nodes allocate modseqs without a race (RFC 7162 3.1: strictly increasing).
        state = schema.account_state
        return conn.execute(update(state).where(state.c.account_id == account.id)
                            .values(modseq=state.c.modseq + 1, used_bytes=state.c.used_bytes + size_delta)
                            .returning(state.c.modseq)).scalar_one()

    def _log(self, conn, account, modseq, kind, object_id, mailbox_id, uid, op) -> None:
        conn.execute(insert(schema.changes).values(
            account_id=account.id, modseq=modseq, kind=kind, object_id=object_id,
            mailbox_id=mailbox_id, uid=uid, op=op, at=self.clock()))

    def _release_blobs(self, conn, blob_ids: Iterable[str]) -> list[str]:
        """Drop one reference per id; returns ids whose count on this shard reached 0."""
        refs = schema.blob_refs
        counts: dict[str, int] = defaultdict(int)
        for blob_id in blob_ids:
            counts[blob_id] += 1
        released = []
        for blob_id, count in counts.items():
            left = conn.execute(update(refs).where(refs.c.blob_id == blob_id)
                                .values(refs=refs.c.refs - count).returning(refs.c.refs)).scalar()
            if left is not None and left <= 0:
                conn.execute(delete(refs).where(refs.c.blob_id == blob_id))
                released.append(blob_id)
        return released

    def _free_unreferenced(self, shard: int, blob_ids: list[str]) -> None:
        """Delete blobs no other shard references. Caller holds blobs.lock."""
        if not blob_ids:
            return
        still_used = set()
        for index, engine in enumerate(self.shards):
            if index == shard:
                continue
            with engine.connect() as conn:
                still_used.update(conn.execute(select(schema.blob_refs.c.blob_id)
                                               .where(schema.blob_refs.c.blob_id.in_(blob_ids))).scalars())
        self.blobs.delete_many(b for b in blob_ids if b not in still_used)

    # Mailboxes

    def _mailbox_row(self, conn, account: Account, name: str):
        name = canonical_name(name)
        row = conn.execute(_SELECT_MAILBOX, {"a_id": account.id, "m_name": name}).first()
        if row is None:
            raise NoSuchMailbox(f"no such mailbox: {name}")
        return row

    def _mailbox_with_counts(self, conn, row) -> Mailbox:
        mm = schema.mailbox_messages
        exists, unseen = conn.execute(
            select(func.count(), func.count().filter(mm.c.seen.is_(False)))
            .where(mm.c.mailbox_id == row.id)).one()
        size = conn.execute(select(func.coalesce(func.sum(schema.messages.c.size), 0))
                            .join(mm, mm.c.message_id == schema.messages.c.id)
                            .where(mm.c.mailbox_id == row.id)).scalar()
        return Mailbox(id=row.id, name=row.name, special_use=row.special_use,
                       uidvalidity=row.uidvalidity, uidnext=row.uidnext, subscribed=row.subscribed,
                       highestmodseq=row.modseq, exists=exists, unseen=unseen, size=size)

    def ensure_mailbox(self, account: Account, name: str) -> Mailbox:
        """The named mailbox, created (subscribed, fresh UIDVALIDITY) if it does not exist."""
        name = checked_name(name)
        with self.engine(account).begin() as conn:
            self._ensure_account(conn, account)
            try:
                row = self._mailbox_row(conn, account, name)
            except NoSuchMailbox:
                row = self._create_in(conn, account, name, subscribed=True)
            return self._mailbox_with_counts(conn, row)

    def list_mailboxes(self, account: Account) -> list[Mailbox]:
        with self.engine(account).begin() as conn:
            self._ensure_account(conn, account)
            rows = conn.execute(select(schema.mailboxes).where(schema.mailboxes.c.account_id == account.id)
                                .order_by(schema.mailboxes.c.name)).all()
            return [self._mailbox_with_counts(conn, row) for row in rows]

    def get_mailbox(self, account: Account, name: str) -> Mailbox:
        with self.engine(account).begin() as conn:
            self._ensure_account(conn, account)
            return self._mailbox_with_counts(conn, self._mailbox_row(conn, account, name))

    # Messages

    def list_messages(self, account: Account, mailbox_id: int) -> list[MessageRef]:
        mm, msgs = schema.mailbox_messages, schema.messages
        query = (select(mm, msgs.c.size, msgs.c.received_at)
                 .join(msgs, msgs.c.id == mm.c.message_id)
                 .where(mm.c.mailbox_id == mailbox_id, mm.c.account_id == account.id)
                 .order_by(mm.c.uid))
        with self.engine(account).connect() as conn:
            return [ref_of(row) for row in conn.execute(query)]

    def read_message(self, account: Account, message_id: int) -> bytes:
        with self.engine(account).connect() as conn:
            row = conn.execute(select(schema.messages.c.prepend, schema.messages.c.blob_id).where(
                schema.messages.c.id == message_id, schema.messages.c.account_id == account.id)).first()
        if row is None:
            raise StoreError("no such message")
        return bytes(row.prepend) + self.blobs.get(row.blob_id)

    def highest_modseq(self, account: Account) -> int:
        with self.engine(account).connect() as conn:
            return conn.execute(select(schema.account_state.c.modseq)
                                .where(schema.account_state.c.account_id == account.id)).scalar() or 0

    def changes_since(self, account: Account, modseq: int, limit: int = 10000) -> list:
        """Change-log rows after `modseq`, oldest first (IMAP QRESYNC, JMAP /changes)."""
        ch = schema.changes
        with self.engine(account).connect() as conn:
            return conn.execute(select(ch).where(ch.c.account_id == account.id, ch.c.modseq > modseq)
                                .order_by(ch.c.modseq).limit(limit)).all()

    def usage(self, account: Account) -> int:
        with self.engine(account).connect() as conn:
            return self._used_bytes(conn, account)


# Statements of the delivery hot path, built once: constructing SQLAlchemy
# expressions per message cost more than executing them.
_state, _boxes, _refs = schema.account_state, schema.mailboxes, schema.blob_refs
_SELECT_ACCOUNT_STATE = select(_state.c.account_id).where(_state.c.account_id == bindparam("a_id"))
_SELECT_MAILBOX = select(_boxes).where(_boxes.c.account_id == bindparam("a_id"),
                                       _boxes.c.name == bindparam("m_name"))
# UPDATE ... RETURNING takes the row lock on PostgreSQL, so several nodes
# allocate modseqs and UIDs without a race (RFC 7162 3.1, RFC 3501 2.3.1.1).
_BUMP_ACCOUNT = (update(_state).where(_state.c.account_id == bindparam("a_id"))
                 .values(modseq=_state.c.modseq + bindparam("n"),
                         used_bytes=_state.c.used_bytes + bindparam("bytes"))
                 .returning(_state.c.modseq))
_BUMP_MAILBOX = (update(_boxes).where(_boxes.c.id == bindparam("m_id"))
                 .values(uidnext=_boxes.c.uidnext + bindparam("n"), modseq=bindparam("m_modseq"))
                 .returning(_boxes.c.uidnext))
_INSERT_MESSAGES = insert(schema.messages).returning(schema.messages.c.id, sort_by_parameter_order=True)
_INSERT_MEMBERSHIPS = insert(schema.mailbox_messages)
_INSERT_CHANGES = insert(schema.changes)
_KNOWN_BLOBS = select(_refs.c.blob_id).where(_refs.c.blob_id.in_(bindparam("ids", expanding=True)))
_ADD_BLOB_REFS = (update(_refs).where(_refs.c.blob_id == bindparam("b_id"))
                  .values(refs=_refs.c.refs + bindparam("b_count")))
_INSERT_BLOB_REFS = insert(_refs)


__all__ = ["MailStore", "Delivery", "Change"]
