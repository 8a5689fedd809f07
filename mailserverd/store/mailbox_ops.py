"""Mailbox management and message copies on a shard (a mixin of MailStore).

IMAP CREATE/DELETE/RENAME/SUBSCRIBE (RFC 3501 6.3), COPY and MOVE with
UIDPLUS results (RFC 4315, RFC 6851), the per-mailbox change feed for
CONDSTORE/QRESYNC (RFC 7162) and batched reads. A copy is a second
membership of the same message row: the body is stored once, and a message
row goes away only when its last membership is expunged. Quota counts bytes
per membership (as Dovecot counts a copy), so a copy can be OverQuota.
"""

from __future__ import annotations

from typing import Iterable

from sqlalchemy import bindparam, delete, func, insert, select, update

from . import schema
from .api import CopyResult, Mailbox, MailboxExists, NoSuchMailbox, OverQuota, StoreError
from .rows import ref_of

INBOX = "INBOX"
MAX_NAME_LENGTH = 512
# Lists longer than this are not sent as one IN (...) clause: SQLite caps bound
# parameters (32,766), and a UID range scan filtered here costs less.
IN_CLAUSE_LIMIT = 500


def canonical_name(name: str) -> str:
    """RFC 3501 5.1: INBOX (and so the INBOX/ prefix) is case-insensitive."""
    head, sep, tail = name.partition("/")
    return INBOX + sep + tail if head.upper() == INBOX else name


def checked_name(name: str) -> str:
    """The canonical name, or StoreError for one the store will not hold: empty
    levels, "." or "..", controls, or the LIST wildcards (RFC 3501 5.1)."""
    name = canonical_name(name)
    if (len(name) > MAX_NAME_LENGTH or any(part in ("", ".", "..") for part in name.split("/"))
            or any(ord(ch) < 0x20 or ch in "\x7f*%" for ch in name)):
        raise StoreError(f"invalid mailbox name: {name!r}")
    return name


def _chunks(items: list, size: int = IN_CLAUSE_LIMIT):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class MailboxOps:
    # -- mailboxes -------------------------------------------------------------------

    def create_mailbox(self, account, name: str, special_use: str | None = None) -> Mailbox:
        """A new, empty mailbox with a fresh UIDVALIDITY; MailboxExists if the name is taken."""
        name = checked_name(name)
        with self.engine(account).begin() as conn:
            self._ensure_account(conn, account)
            return self._mailbox_with_counts(conn, self._create_in(conn, account, name, special_use))

    def _create_in(self, conn, account, name: str, special_use: str | None = None,
                   subscribed: bool = False):
        """Insert the mailbox row in the caller's transaction; returns it."""
        try:
            self._mailbox_row(conn, account, name)
            raise MailboxExists(f"mailbox exists: {name}")
        except NoSuchMailbox:
            pass
        modseq = self._next_modseq(conn, account)
        # RFC 3501 6.3.3 leaves subscribing to SUBSCRIBE, but a name subscribed
        # before it existed (or before a DELETE) stays subscribed.
        subscribed = self._take_subscription(conn, account, name) or subscribed
        mailbox_id = conn.execute(insert(schema.mailboxes).values(
            account_id=account.id, name=name, special_use=special_use,
            uidvalidity=self._new_uidvalidity(conn, account), uidnext=1,
            subscribed=subscribed, modseq=modseq)).inserted_primary_key[0]
        self._log(conn, account, modseq, "Mailbox", mailbox_id, None, None, "created")
        return self._mailbox_row(conn, account, name)

    def _new_uidvalidity(self, conn, account) -> int:
        """RFC 3501 2.3.1.1: a name reused after DELETE must get a larger UIDVALIDITY."""
        boxes, ch = schema.mailboxes, schema.changes
        live = conn.execute(select(func.max(boxes.c.uidvalidity))
                            .where(boxes.c.account_id == account.id)).scalar()
        # A deleted mailbox's UIDVALIDITY is kept in the uid column of its "destroyed" change row.
        gone = conn.execute(select(func.max(ch.c.uid)).where(
            ch.c.account_id == account.id, ch.c.kind == "Mailbox", ch.c.op == "destroyed")).scalar()
        return max(int(self.clock()), (live or 0) + 1, (gone or 0) + 1)

    def delete_mailbox(self, account, name: str) -> None:
        """Remove a mailbox and its messages in one transaction (blob references
        released as by expunge); children stay (RFC 3501 6.3.4)."""
        name = canonical_name(name)
        if name == INBOX:
            raise StoreError("INBOX cannot be deleted")
        with self.blobs.lock:
            with self.engine(account).begin() as conn:
                row = self._mailbox_row(conn, account, name)
                _removed, freed = self._remove_memberships(conn, account, row.id, None)
                conn.execute(delete(schema.mailboxes).where(schema.mailboxes.c.id == row.id))
                if row.subscribed:  # RFC 3501 6.3.6: the subscription outlives the mailbox
                    self._remember_subscription(conn, account, name)
                modseq = self._next_modseq(conn, account)
                self._log(conn, account, modseq, "Mailbox", row.id, None, row.uidvalidity, "destroyed")
            self._free_unreferenced(account.shard, freed)

    def rename_mailbox(self, account, old: str, new: str) -> None:
        """RFC 3501 6.3.5: rename old and every old/... child to new/...; the
        mailbox ids and so the UIDVALIDITYs stay. Renaming INBOX instead moves
        its messages to a new mailbox and leaves INBOX (and its children) in place."""
        old, new = canonical_name(old), checked_name(new)
        if old == INBOX:
            return self._rename_inbox(account, new)
        boxes = schema.mailboxes
        with self.engine(account).begin() as conn:
            self._mailbox_row(conn, account, old)
            rows = conn.execute(select(boxes.c.id, boxes.c.name, boxes.c.subscribed).where(
                boxes.c.account_id == account.id)).all()
            names = {r.name for r in rows}
            moving = [r for r in rows if r.name == old or r.name.startswith(old + "/")]
            renames = [(r, new + r.name[len(old):]) for r in moving]
            for _row, target in renames:
                if target in names:
                    raise MailboxExists(f"mailbox exists: {target}")
            for r, target in renames:
                modseq = self._next_modseq(conn, account)
                subscribed = self._take_subscription(conn, account, target) or r.subscribed
                conn.execute(update(boxes).where(boxes.c.id == r.id)
                             .values(name=target, subscribed=subscribed))
                self._log(conn, account, modseq, "Mailbox", r.id, None, None, "updated")

    def _rename_inbox(self, account, new: str) -> None:
        """RFC 3501 6.3.5: INBOX's messages move to a new mailbox (fresh UIDs and
        UIDVALIDITY) in one transaction; INBOX stays, empty."""
        with self.engine(account).begin() as conn:
            target = self._create_in(conn, account, new)
            inbox = self._mailbox_row(conn, account, INBOX)
            self._copy_in(conn, account, inbox.id, None, target, move=True)

    def set_subscribed(self, account, name: str, subscribed: bool) -> None:
        """RFC 3501 6.3.6-6.3.7: a name may be subscribed whether or not it exists
        (it then shows in LSUB / LIST (SUBSCRIBED)); unsubscribing an unknown name is a no-op."""
        name = canonical_name(name)
        if subscribed:
            name = checked_name(name)
        with self.engine(account).begin() as conn:
            self._ensure_account(conn, account)
            self._take_subscription(conn, account, name)
            try:
                row = self._mailbox_row(conn, account, name)
            except NoSuchMailbox:
                if subscribed:
                    self._remember_subscription(conn, account, name)
                return
            conn.execute(update(schema.mailboxes).where(schema.mailboxes.c.id == row.id)
                         .values(subscribed=subscribed))

    def _remember_subscription(self, conn, account, name: str) -> None:
        conn.execute(insert(schema.subscriptions).values(account_id=account.id, name=name))

    def _take_subscription(self, conn, account, name: str) -> bool:
        """Drop the remembered subscription of a name without a mailbox; True if there was one."""
        subs = schema.subscriptions
        return conn.execute(delete(subs).where(subs.c.account_id == account.id,
                                               subs.c.name == name)).rowcount > 0

    def list_subscriptions(self, account) -> list[str]:
        """Every subscribed name, existing or not, sorted."""
        boxes, subs = schema.mailboxes, schema.subscriptions
        with self.engine(account).connect() as conn:
            names = set(conn.execute(select(boxes.c.name).where(
                boxes.c.account_id == account.id, boxes.c.subscribed.is_(True))).scalars())
            names.update(conn.execute(select(subs.c.name).where(
                subs.c.account_id == account.id)).scalars())
        return sorted(names)

    # -- copies ----------------------------------------------------------------------

    def copy_messages(self, account, mailbox_id: int, uids: Iterable[int], dest: str) -> CopyResult:
        """RFC 3501 6.4.7 with RFC 4315 COPYUID pairs; flags are copied, each copy
        gets a new modseq. NoSuchMailbox for a missing dest; OverQuota if the
        copies' bytes do not fit. UIDs not in the mailbox are skipped."""
        with self.engine(account).begin() as conn:
            target = self._mailbox_row(conn, account, canonical_name(dest))
            return self._copy_in(conn, account, mailbox_id, list(uids), target, move=False)

    def move_messages(self, account, mailbox_id: int, uids: Iterable[int], dest: str) -> CopyResult:
        """RFC 6851: copy and expunge the source in one transaction (quota unchanged)."""
        with self.engine(account).begin() as conn:
            target = self._mailbox_row(conn, account, canonical_name(dest))
            return self._copy_in(conn, account, mailbox_id, list(uids), target, move=True)

    def _members(self, conn, account, mailbox_id: int, uids: Iterable[int] | None):
        """Membership rows (joined with the message size) of the mailbox, by ascending
        uid; all of them when uids is None."""
        mm, msgs = schema.mailbox_messages, schema.messages
        query = (select(mm, msgs.c.size, msgs.c.received_at)
                 .join(msgs, msgs.c.id == mm.c.message_id)
                 .where(mm.c.mailbox_id == mailbox_id, mm.c.account_id == account.id)
                 .order_by(mm.c.uid))
        if uids is None:
            return conn.execute(query).all()
        wanted = set(uids)
        if not wanted:
            return []
        if len(wanted) <= IN_CLAUSE_LIMIT:
            return conn.execute(query.where(mm.c.uid.in_(sorted(wanted)))).all()
        rows = conn.execute(query.where(mm.c.uid >= min(wanted), mm.c.uid <= max(wanted))).all()
        return [row for row in rows if row.uid in wanted]

    def _copy_in(self, conn, account, mailbox_id: int, uids: list[int] | None, target,
                 move: bool) -> CopyResult:
        mm, boxes, state = schema.mailbox_messages, schema.mailboxes, schema.account_state
        rows = self._members(conn, account, mailbox_id, uids)
        if not rows:
            return CopyResult(uidvalidity=target.uidvalidity, pairs=[])
        added = 0 if move else sum(row.size for row in rows)
        if added and account.quota and self._used_bytes(conn, account) + added > account.quota:
            raise OverQuota(f"{account.address} is over quota")
        # One modseq per new membership and per removal (RFC 7162 3.1), allocated
        # in one UPDATE ... RETURNING, which also locks the counter row on PostgreSQL.
        count = len(rows) * (2 if move else 1)
        modseq = conn.execute(update(state).where(state.c.account_id == account.id)
                              .values(modseq=state.c.modseq + count,
                                      used_bytes=state.c.used_bytes + added)
                              .returning(state.c.modseq)).scalar_one() - count + 1
        # RFC 3501 2.3.1.1: new UIDs ascend in the source order (RFC 4315 COPYUID).
        next_uid = conn.execute(update(boxes).where(boxes.c.id == target.id)
                                .values(uidnext=boxes.c.uidnext + len(rows))
                                .returning(boxes.c.uidnext)).scalar_one() - len(rows)
        now = self.clock()
        memberships, log, pairs = [], [], []
        for offset, row in enumerate(rows):
            uid = next_uid + offset
            flags = {c: getattr(row, c) for c in ("seen", "answered", "flagged", "deleted",
                                                     "draft", "keywords")}
            memberships.append(dict(mailbox_id=target.id, uid=uid, message_id=row.message_id,
                                    account_id=account.id, modseq=modseq, **flags))
            log.append(dict(account_id=account.id, modseq=modseq, kind="Email",
                            object_id=row.message_id, mailbox_id=target.id, uid=uid,
                            op="created", at=now))
            pairs.append((row.uid, uid))
            modseq += 1
        conn.execute(insert(mm), memberships)
        conn.execute(update(boxes).where(boxes.c.id == target.id).values(modseq=modseq - 1))
        if move:
            conn.execute(delete(mm).where(mm.c.mailbox_id == bindparam("m_id"),
                                          mm.c.uid == bindparam("m_uid")),
                         [{"m_id": mailbox_id, "m_uid": row.uid} for row in rows])
            for row in rows:
                # The message lives on in the destination: for JMAP it is "updated"
                # (its mailboxIds changed); mailbox_changes reports the UID as vanished.
                log.append(dict(account_id=account.id, modseq=modseq, kind="Email",
                                object_id=row.message_id, mailbox_id=mailbox_id, uid=row.uid,
                                op="updated", at=now))
                modseq += 1
            conn.execute(update(boxes).where(boxes.c.id == mailbox_id).values(modseq=modseq - 1))
        conn.execute(insert(schema.changes), log)
        return CopyResult(uidvalidity=target.uidvalidity, pairs=pairs)

    # -- reads -----------------------------------------------------------------------

    def read_messages(self, account, message_ids: Iterable[int]) -> dict[int, bytes]:
        """prepend + body of several messages of the account, by message id. A
        message expunged meanwhile comes from the expunged cache (RFC 2180 4.1.3)
        or is absent from the result, as is another account's message."""
        msgs = schema.messages
        ids = sorted(set(message_ids))
        rows = []
        with self.engine(account).connect() as conn:
            for chunk in _chunks(ids):
                rows.extend(conn.execute(_SELECT_BODIES, {"a_id": account.id, "ids": chunk}).all())
        found = {}
        blobs = self.blobs.get_many(sorted({row.blob_id for row in rows}))
        for row in rows:
            blob = blobs.get(row.blob_id)
            if blob is not None:  # else expunged by another session since the rows were read
                found[row.id] = bytes(row.prepend) + blob
        for message_id in ids:
            if message_id not in found:
                data = self.expunged.get(account, message_id)
                if data is not None:
                    found[message_id] = data
        return found

    def mailbox_changes(self, account, mailbox_id: int, since: int):
        """(highest modseq, refs of the mailbox with modseq > since, UIDs removed
        from it after since) for CONDSTORE/QRESYNC (RFC 7162 3.2.5, 3.2.10)."""
        mm, ch = schema.mailbox_messages, schema.changes
        with self.engine(account).connect() as conn:
            # The position first: a change committed while we read has a larger
            # modseq and is reported by the next call (perhaps twice: harmless).
            highest = conn.execute(select(schema.account_state.c.modseq).where(
                schema.account_state.c.account_id == account.id)).scalar() or 0
            changed = conn.execute(select(mm, schema.messages.c.size, schema.messages.c.received_at)
                                   .join(schema.messages, schema.messages.c.id == mm.c.message_id)
                                   .where(mm.c.mailbox_id == mailbox_id, mm.c.account_id == account.id,
                                          mm.c.modseq > since).order_by(mm.c.uid)).all()
            # A mailbox id freed by DELETE may be given to a new mailbox: only
            # changes after this mailbox was created belong to it.
            born = conn.execute(select(func.max(ch.c.modseq)).where(
                ch.c.account_id == account.id, ch.c.kind == "Mailbox", ch.c.object_id == mailbox_id,
                ch.c.op == "created")).scalar() or 0
            logged = set(conn.execute(select(ch.c.uid).where(
                ch.c.account_id == account.id, ch.c.modseq > max(since, born),
                ch.c.mailbox_id == mailbox_id, ch.c.kind == "Email",
                ch.c.op.in_(("updated", "destroyed")))).scalars())
            present = {row.uid for row in self._members(conn, account, mailbox_id, logged)}
        return highest, [ref_of(row) for row in changed], sorted(logged - present)

    def message_summaries(self, account, message_ids: Iterable[int]) -> dict[int, dict]:
        """The summary columns stored at delivery, by message id, for SORT/THREAD
        without reading bodies; sent_at is unix time or None."""
        msgs = schema.messages
        columns = ("subject", "from_addr", "to_addr", "cc_addr", "sent_at", "message_id_header",
                   "in_reply_to", "references")
        found = {}
        with self.engine(account).connect() as conn:
            for chunk in _chunks(sorted(set(message_ids))):
                for row in conn.execute(select(msgs.c.id, *(msgs.c[c] for c in columns)).where(
                        msgs.c.account_id == account.id, msgs.c.id.in_(chunk))):
                    found[row.id] = {c: getattr(row, c) for c in columns}
        return found

    def message_structures(self, account, message_ids: Iterable[int]) -> dict[int, tuple]:
        """(ENVELOPE, BODYSTRUCTURE) bytes stored at delivery, by message id, for
        FETCH without reading or parsing bodies. Messages stored before those
        columns existed (NULL) and other accounts' messages are absent."""
        msgs = schema.messages
        found = {}
        with self.engine(account).connect() as conn:
            for chunk in _chunks(sorted(set(message_ids))):
                for row in conn.execute(_SELECT_STRUCTURES, {"a_id": account.id, "ids": chunk}):
                    if row.envelope is not None and row.bodystructure is not None:
                        found[row.id] = (bytes(row.envelope), bytes(row.bodystructure))
        return found


_SELECT_BODIES = (select(schema.messages.c.id, schema.messages.c.prepend, schema.messages.c.blob_id)
                  .where(schema.messages.c.account_id == bindparam("a_id"),
                         schema.messages.c.id.in_(bindparam("ids", expanding=True))))
_SELECT_STRUCTURES = (select(schema.messages.c.id, schema.messages.c.envelope, schema.messages.c.bodystructure)
                      .where(schema.messages.c.account_id == bindparam("a_id"),
                             schema.messages.c.id.in_(bindparam("ids", expanding=True))))

__all__ = ["MailboxOps", "canonical_name", "checked_name"]
