"""Flag changes and expunges on a shard, and the group commit of such writes
(a mixin of MailStore).

The writer thread (store/service.py) hands run_group() every IMAP STORE,
EXPUNGE, COPY, MOVE, the \\Seen of a FETCH and POP3 UPDATE waiting in its
queue: they share one transaction per shard, so one commit (one fsync with
SQLite synchronous=FULL) makes the lot durable, and each caller hears only
after that commit. The statements are built once and each write is a few
executemany calls, never one round trip per row.

A grouped write refuses (StoreError: NoSuchMailbox, OverQuota, a bad flag
mode) before it changes anything, so a refusal is reported to its caller
alone and the rest of the group still commits. Any other failure rolls the
shard's transaction back and its writes are retried one by one.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Iterable, Sequence

from sqlalchemy import bindparam, delete, insert, select, update
from twisted.logger import Logger

from . import schema, searchqueue
from .api import Account, MessageRef, StoreError
from .rows import FLAG_COLUMNS, flag_columns, ref_of

log = Logger()

FLAG_MODES = ("add", "remove", "replace")
GROUPED_OPS = ("store_flags", "expunge", "copy_messages", "move_messages")
_IN_LIMIT = 500  # ids per IN (...) clause (SQLite caps bound parameters)


@dataclasses.dataclass
class GroupWrite:
    """One write of a group: getattr(MailStore, op)(account, *args); gets .result or .error."""

    op: str
    account: Account
    args: tuple
    result: object = None
    error: Exception | None = None


def _chunks(items: list, size: int = _IN_LIMIT):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class WriteOps:
    # -- one write in its own transaction ---------------------------------------------

    def store_flags(self, account: Account, mailbox_id: int, uids: Iterable[int],
                    flags: Iterable[str], mode: str) -> list[MessageRef]:
        """RFC 3501 6.4.6: mode "add", "remove" or "replace"; each changed row gets a new modseq."""
        with self.engine(account).begin() as conn:
            return self._store_flags_in(conn, account, mailbox_id, uids, flags, mode)

    def expunge(self, account: Account, mailbox_id: int, uids: Iterable[int]) -> list[int]:
        """Remove the memberships; messages left in no mailbox are deleted and
        their blobs released. Returns the UIDs actually removed."""
        with self.blobs.lock:
            with self.engine(account).begin() as conn:
                removed, freed = self._remove_memberships(conn, account, mailbox_id, uids)
            self._free_unreferenced(account.shard, freed)
        return removed

    # -- group commit -----------------------------------------------------------------

    def run_group(self, items: Sequence[GroupWrite]) -> None:
        """Commit several writes with one transaction per shard (see module docstring)."""
        by_shard: dict[int, list[GroupWrite]] = defaultdict(list)
        for item in items:
            by_shard[item.account.shard].append(item)
        with self.blobs.lock:
            for shard, work in by_shard.items():
                freed: list[str] = []
                try:
                    with self.shards[shard].begin() as conn:
                        for item in work:
                            try:
                                item.result, item_freed = self._grouped_in(conn, item)
                            except StoreError as exc:  # refused before it wrote anything
                                item.error = exc
                            else:
                                freed.extend(item_freed)
                except Exception:
                    log.failure("grouped write failed; retrying its writes one by one")
                    self._run_alone(work)
                    continue
                self._free_after_commit(shard, freed)

    def _grouped_in(self, conn, item: GroupWrite) -> tuple[object, list[str]]:
        account, args = item.account, item.args
        if item.op == "store_flags":
            return self._store_flags_in(conn, account, *args), []
        if item.op == "expunge":
            return self._remove_memberships(conn, account, *args)
        if item.op in ("copy_messages", "move_messages"):
            mailbox_id, uids, dest = args
            target = self._mailbox_row(conn, account, dest)
            return self._copy_in(conn, account, mailbox_id, list(uids), target,
                                 move=item.op == "move_messages"), []
        raise ValueError(f"not a grouped write: {item.op}")

    def _run_alone(self, work: Sequence[GroupWrite]) -> None:
        for item in work:
            item.result, item.error = None, None
            try:
                item.result = getattr(self, item.op)(item.account, *item.args)
            except Exception as exc:
                item.error = exc

    def _free_after_commit(self, shard: int, freed: list[str]) -> None:
        """The commit is durable; a blob left behind here is only space (never data loss)."""
        try:
            self._free_unreferenced(shard, sorted(set(freed)))
        except Exception:
            log.failure("freeing unreferenced blobs failed")

    # -- the writes, inside the caller's transaction ------------------------------------

    def _store_flags_in(self, conn, account: Account, mailbox_id: int, uids: Iterable[int],
                        flags: Iterable[str], mode: str) -> list[MessageRef]:
        if mode not in FLAG_MODES:
            raise StoreError(f"bad flag mode {mode!r}")
        flags = frozenset(flags)
        changes = []
        for row in self._members(conn, account, mailbox_id, list(uids)):
            ref = ref_of(row)
            new = {"add": ref.flags | flags, "remove": ref.flags - flags, "replace": flags}[mode]
            if new != ref.flags:
                changes.append((ref, frozenset(new)))
        if not changes:
            return []
        # One modseq per changed message (RFC 7162 3.1), allocated in one UPDATE ... RETURNING.
        last = conn.execute(_BUMP_MODSEQ, {"a_id": account.id, "n": len(changes), "bytes": 0}).scalar_one()
        modseq = last - len(changes) + 1
        now = self.clock()
        params, entries, changed = [], [], []
        for ref, new in changes:
            columns, keywords = flag_columns(new)
            params.append(dict({f"f_{column}": value for column, value in columns.items()},
                               f_mailbox=mailbox_id, f_uid=ref.uid, f_modseq=modseq,
                               f_keywords=" ".join(sorted(keywords))))
            entries.append(dict(account_id=account.id, modseq=modseq, kind="Email",
                                object_id=ref.message_id, mailbox_id=mailbox_id, uid=ref.uid,
                                op="updated", at=now))
            changed.append(dataclasses.replace(ref, flags=new, modseq=modseq))
            modseq += 1
        conn.execute(_UPDATE_FLAGS, params)
        conn.execute(_MAILBOX_MODSEQ, {"m_id": mailbox_id, "m_modseq": last})
        conn.execute(_INSERT_CHANGE, entries)
        return changed

    def _remove_memberships(self, conn, account: Account, mailbox_id: int,
                            uids: Iterable[int] | None) -> tuple[list[int], list[str]]:
        """Expunge uids (all when None) inside the caller's transaction (which holds blobs.lock).
        Each removed membership gets a modseq and a change row ("destroyed"
        when it was the message's last mailbox); its bytes leave the quota
        (a copy counted them). Returns (UIDs removed, blob ids to free once
        the transaction has committed)."""
        mm, msgs = schema.mailbox_messages, schema.messages
        rows = self._members(conn, account, mailbox_id, None if uids is None else list(uids))
        if not rows:
            return [], []
        conn.execute(_DELETE_MEMBERSHIP, [{"d_mailbox": mailbox_id, "d_uid": row.uid} for row in rows])
        message_ids = sorted({row.message_id for row in rows})
        still_in = set()
        for chunk in _chunks(message_ids):
            still_in.update(conn.execute(select(mm.c.message_id).where(mm.c.message_id.in_(chunk))
                                         .distinct()).scalars())
        # The last removed membership of a message left in no mailbox destroys it.
        last_row = {row.message_id: index for index, row in enumerate(rows)}
        last = conn.execute(_BUMP_MODSEQ, {"a_id": account.id, "n": len(rows),
                                           "bytes": -sum(row.size for row in rows)}).scalar_one()
        modseq = last - len(rows) + 1
        now = self.clock()
        entries = []
        for index, row in enumerate(rows):
            gone = row.message_id not in still_in and last_row[row.message_id] == index
            entries.append(dict(account_id=account.id, modseq=modseq, kind="Email",
                                object_id=row.message_id, mailbox_id=mailbox_id, uid=row.uid,
                                op="destroyed" if gone else "updated", at=now))
            modseq += 1
        conn.execute(_INSERT_CHANGE, entries)
        conn.execute(_MAILBOX_MODSEQ, {"m_id": mailbox_id, "m_modseq": last})
        orphans = [message_id for message_id in message_ids if message_id not in still_in]
        freed: list[str] = []
        if orphans:
            gone_rows = []
            for chunk in _chunks(orphans):
                gone_rows.extend(conn.execute(select(msgs.c.id, msgs.c.blob_id, msgs.c.size, msgs.c.prepend)
                                              .where(msgs.c.id.in_(chunk))).all())
                conn.execute(delete(msgs).where(msgs.c.id.in_(chunk)))
            searchqueue.enqueue_destroyed(conn, account.id, orphans, now)  # leaves the index
            self.expunged.keep(account, gone_rows, self.blobs)
            freed = self._release_blobs(conn, [row.blob_id for row in gone_rows])
        return [row.uid for row in rows], freed


# Statements built once (constructing SQLAlchemy expressions per call cost
# more than running them); executemany where there is one row per message.
_state, _boxes, _mm = schema.account_state, schema.mailboxes, schema.mailbox_messages
# UPDATE ... RETURNING takes the row lock on PostgreSQL, so several nodes
# allocate modseqs without a race (RFC 7162 3.1: strictly increasing).
_BUMP_MODSEQ = (update(_state).where(_state.c.account_id == bindparam("a_id"))
                .values(modseq=_state.c.modseq + bindparam("n"),
                        used_bytes=_state.c.used_bytes + bindparam("bytes"))
                .returning(_state.c.modseq))
_MAILBOX_MODSEQ = update(_boxes).where(_boxes.c.id == bindparam("m_id")).values(modseq=bindparam("m_modseq"))
_UPDATE_FLAGS = (update(_mm).where(_mm.c.mailbox_id == bindparam("f_mailbox"), _mm.c.uid == bindparam("f_uid"))
                 .values(modseq=bindparam("f_modseq"), keywords=bindparam("f_keywords"),
                         **{column: bindparam(f"f_{column}") for column in FLAG_COLUMNS.values()}))
_DELETE_MEMBERSHIP = delete(_mm).where(_mm.c.mailbox_id == bindparam("d_mailbox"),
                                       _mm.c.uid == bindparam("d_uid"))
_INSERT_CHANGE = insert(schema.changes)


__all__ = ["WriteOps", "GroupWrite", "GROUPED_OPS", "FLAG_MODES"]
