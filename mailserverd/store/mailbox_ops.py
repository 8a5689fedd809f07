"""Mailbox management and message copies on a shard (a mixin of MailStore).

IMAP CREATE/DELETE/RENAME/SUBSCRIBE (RFC 3501 6.3), COPY and MOVE with
UIDPLUS results (RFC 4315, RFC 6851), the per-mailbox change feed for
CONDSTORE/QRESYNC (RFC 7162) and batched reads. A copy is a second
membership of the same message row: the body is stored once, and a message
row goes away only when its last membership is expunged.
"""

from __future__ import annotations

from typing import Iterable

from sqlalchemy import and_, delete, func, insert, select, update

from . import schema
from .api import CopyResult, Mailbox, MailboxExists, NoSuchMailbox, StoreError

INBOX = "INBOX"


def _canonical(name: str) -> str:
    head, sep, tail = name.partition("/")
    return INBOX + sep + tail if head.upper() == INBOX else name


class MailboxOps:
    # -- mailboxes -------------------------------------------------------------------

    def create_mailbox(self, account, name: str, special_use: str | None = None) -> Mailbox:
        """A new mailbox (fresh UIDVALIDITY); MailboxExists if the name is taken."""
        name = _canonical(name)
        with self.engine(account).begin() as conn:
            self._ensure_account(conn, account)
            try:
                self._mailbox_row(conn, account, name)
                raise MailboxExists(f"mailbox exists: {name}")
            except NoSuchMailbox:
                pass
            modseq = self._next_modseq(conn, account)
            subs = schema.subscriptions
            # A name subscribed before it existed (or after a DELETE) stays subscribed.
            subscribed = conn.execute(delete(subs).where(
                subs.c.account_id == account.id, subs.c.name == name)).rowcount > 0
            mailbox_id = conn.execute(insert(schema.mailboxes).values(
                account_id=account.id, name=name, special_use=special_use,
                uidvalidity=self._new_uidvalidity(conn, account), uidnext=1,
                subscribed=subscribed, modseq=modseq)).inserted_primary_key[0]
            self._log(conn, account, modseq, "Mailbox", mailbox_id, None, None, "created")
            return self._mailbox_with_counts(conn, self._mailbox_row(conn, account, name))

    def _new_uidvalidity(self, conn, account) -> int:
        """RFC 3501 2.3.1.1: a name reused after DELETE must get a larger UIDVALIDITY."""
        boxes, ch = schema.mailboxes, schema.changes
        live = conn.execute(select(func.max(boxes.c.uidvalidity))
                            .where(boxes.c.account_id == account.id)).scalar()
        # A deleted mailbox's UIDVALIDITY is kept in its "destroyed" change row.
        gone = conn.execute(select(func.max(ch.c.uid)).where(
            ch.c.account_id == account.id, ch.c.kind == "Mailbox", ch.c.op == "destroyed")).scalar()
        return max(int(self.clock()), (live or 0) + 1, (gone or 0) + 1)

    def delete_mailbox(self, account, name: str) -> None:
        """Remove a mailbox and its memberships; children stay (RFC 3501 6.3.4)."""
        name = _canonical(name)
        if name == INBOX:
            raise StoreError("INBOX cannot be deleted")
        mm = schema.mailbox_messages
        with self.engine(account).begin() as conn:
            row = self._mailbox_row(conn, account, name)
            uids = list(conn.execute(select(mm.c.uid).where(mm.c.mailbox_id == row.id)).scalars())
        if uids:
            self.expunge(account, row.id, uids)
        with self.engine(account).begin() as conn:
            conn.execute(delete(schema.mailboxes).where(schema.mailboxes.c.id == row.id))
            if row.subscribed:
                self._remember_subscription(conn, account, name)
            modseq = self._next_modseq(conn, account)
            self._log(conn, account, modseq, "Mailbox", row.id, None, row.uidvalidity, "destroyed")

    def rename_mailbox(self, account, old: str, new: str) -> None:
        """Rename old and its children (RFC 3501 6.3.5); INBOX moves its messages instead."""
        old, new = _canonical(old), _canonical(new)
        if old == INBOX:
            return self._rename_inbox(account, new)
        boxes = schema.mailboxes
        with self.engine(account).begin() as conn:
            self._mailbox_row(conn, account, old)
            rows = conn.execute(select(boxes.c.id, boxes.c.name).where(
                boxes.c.account_id == account.id)).all()
            names = {r.name for r in rows}
            moving = [r for r in rows if r.name == old or r.name.startswith(old + "/")]
            for r in moving:
                target = new + r.name[len(old):]
                if target in names:
                    raise MailboxExists(f"mailbox exists: {target}")
            subs = schema.subscriptions
            for r in moving:
                modseq = self._next_modseq(conn, account)
                conn.execute(update(boxes).where(boxes.c.id == r.id)
                             .values(name=new + r.name[len(old):]))
                conn.execute(delete(subs).where(subs.c.account_id == account.id,
                                                subs.c.name == new + r.name[len(old):]))
                self._log(conn, account, modseq, "Mailbox", r.id, None, None, "updated")

    def _rename_inbox(self, account, new: str) -> None:
        """RFC 3501 6.3.5: renaming INBOX moves its messages to a new mailbox; INBOX stays, empty."""
        self.create_mailbox(account, new)
        with self.engine(account).connect() as conn:
            inbox = self._mailbox_row(conn, account, INBOX)
            uids = list(conn.execute(select(schema.mailbox_messages.c.uid).where(
                schema.mailbox_messages.c.mailbox_id == inbox.id)).scalars())
        if uids:
            self.move_messages(account, inbox.id, uids, new)

    def set_subscribed(self, account, name: str, subscribed: bool) -> None:
        """RFC 3501 6.3.6-6.3.7: names may be subscribed whether or not they exist."""
        name = _canonical(name)
        subs = schema.subscriptions
        with self.engine(account).begin() as conn:
            self._ensure_account(conn, account)
            conn.execute(delete(subs).where(subs.c.account_id == account.id, subs.c.name == name))
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
        return self._copy(account, mailbox_id, uids, dest, move=False)

    def move_messages(self, account, mailbox_id: int, uids: Iterable[int], dest: str) -> CopyResult:
        """RFC 6851: copy and expunge the source in one transaction."""
        return self._copy(account, mailbox_id, uids, dest, move=True)

    def _copy(self, account, mailbox_id, uids, dest, move: bool) -> CopyResult:
        mm, boxes = schema.mailbox_messages, schema.mailboxes
        uids = sorted(set(uids))
        with self.engine(account).begin() as conn:
            target = self._mailbox_row(conn, account, _canonical(dest))
            rows = conn.execute(select(mm).where(
                mm.c.mailbox_id == mailbox_id, mm.c.account_id == account.id,
                mm.c.uid.in_(uids)).order_by(mm.c.uid)).all()
            if not rows:
                return CopyResult(uidvalidity=target.uidvalidity, pairs=[])
            first_modseq = self._next_modseq(conn, account)
            # One modseq per new membership (and per removal when moving), as deliveries do.
            state = schema.account_state
            extra = len(rows) * (2 if move else 1) - 1
            if extra:
                conn.execute(update(state).where(state.c.account_id == account.id)
                             .values(modseq=state.c.modseq + extra))
            next_uid = conn.execute(update(boxes).where(boxes.c.id == target.id)
                                    .values(uidnext=boxes.c.uidnext + len(rows))
                                    .returning(boxes.c.uidnext)).scalar_one() - len(rows)
            now = self.clock()
            memberships, log, pairs = [], [], []
            modseq = first_modseq
            for offset, row in enumerate(rows):
                uid = next_uid + offset
                values = {c: getattr(row, c) for c in ("seen", "answered", "flagged", "deleted",
                                                          "draft", "keywords")}
                memberships.append(dict(mailbox_id=target.id, uid=uid, message_id=row.message_id,
                                        account_id=account.id, modseq=modseq, **values))
                log.append(dict(account_id=account.id, modseq=modseq, kind="Email",
                                object_id=row.message_id, mailbox_id=target.id, uid=uid,
                                op="created", at=now))
                pairs.append((row.uid, uid))
                modseq += 1
            conn.execute(insert(mm), memberships)
            conn.execute(update(boxes).where(boxes.c.id == target.id).values(modseq=modseq - 1))
            if move:
                for row in rows:
                    conn.execute(delete(mm).where(mm.c.mailbox_id == mailbox_id, mm.c.uid == row.uid))
                    log.append(dict(account_id=account.id, modseq=modseq, kind="Email",
                                    object_id=row.message_id, mailbox_id=mailbox_id, uid=row.uid,
                                    op="updated", at=now))
                    modseq += 1
                conn.execute(update(boxes).where(boxes.c.id == mailbox_id).values(modseq=modseq - 1))
            conn.execute(insert(schema.changes), log)
            return CopyResult(uidvalidity=target.uidvalidity, pairs=pairs)

    # -- reads -----------------------------------------------------------------------

    def read_messages(self, account, message_ids: Iterable[int]) -> dict[int, bytes]:
        """prepend + body of several messages of the account; a message expunged
        meanwhile comes from the expunged cache or is absent from the result."""
        msgs = schema.messages
        ids = list(set(message_ids))
        if not ids:
            return {}
        with self.engine(account).connect() as conn:
            rows = conn.execute(select(msgs.c.id, msgs.c.prepend, msgs.c.blob_id).where(
                msgs.c.account_id == account.id, msgs.c.id.in_(ids))).all()
        found = {}
        for row in rows:
            try:
                found[row.id] = bytes(row.prepend) + self.blobs.get(row.blob_id)
            except KeyError:
                continue  # expunged by another session since the rows were read
        for message_id in ids:
            if message_id not in found:
                data = self.expunged.get(account, message_id)
                if data is not None:
                    found[message_id] = data
        return found

    def mailbox_changes(self, account, mailbox_id: int, since: int):
        """(highest modseq, refs changed after since, UIDs removed after since) (RFC 7162 3.2.5)."""
        mm, msgs, ch = schema.mailbox_messages, schema.messages, schema.changes
        with self.engine(account).connect() as conn:
            # The position first: a change committed while we read has a larger
            # modseq and is reported by the next call (perhaps twice: harmless).
            highest = conn.execute(select(schema.account_state.c.modseq).where(
                schema.account_state.c.account_id == account.id)).scalar() or 0
            changed = conn.execute(select(mm, msgs.c.size, msgs.c.received_at)
                                   .join(msgs, msgs.c.id == mm.c.message_id)
                                   .where(mm.c.mailbox_id == mailbox_id, mm.c.account_id == account.id,
                                          mm.c.modseq > since).order_by(mm.c.uid)).all()
            logged = set(conn.execute(select(ch.c.uid).where(
                ch.c.account_id == account.id, ch.c.modseq > since, ch.c.mailbox_id == mailbox_id,
                ch.c.kind == "Email", ch.c.op.in_(("updated", "destroyed")))).scalars())
            present = set(conn.execute(select(mm.c.uid).where(
                and_(mm.c.mailbox_id == mailbox_id, mm.c.uid.in_(list(logged))))).scalars()) if logged else set()
        from .mail import _ref
        return highest, [_ref(row) for row in changed], sorted(logged - present)

    def message_summaries(self, account, message_ids: Iterable[int]) -> dict[int, dict]:
        msgs = schema.messages
        columns = ("subject", "from_addr", "to_addr", "cc_addr", "sent_at", "message_id_header",
                   "in_reply_to", "references")
        with self.engine(account).connect() as conn:
            rows = conn.execute(select(msgs.c.id, *(msgs.c[c] for c in columns)).where(
                msgs.c.account_id == account.id, msgs.c.id.in_(list(message_ids)))).all()
        return {row.id: {c: getattr(row, c) for c in columns} for row in rows}


__all__ = ["MailboxOps"]
