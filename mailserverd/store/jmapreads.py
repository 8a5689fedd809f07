"""Read-only queries JMAP needs (mailserverd/jmap), on the account's shard.

Each function takes the synchronous MailStore and an Account and only reads;
AsyncStore.run_read runs them on the read pool. Every query is scoped to
the account, so another account's ids are simply absent.
"""

from __future__ import annotations

import functools
import json

from sqlalchemy import ARRAY, BigInteger, any_, bindparam, func, literal_column, select, text

from . import schema
from .rows import FLAG_COLUMNS

_IN_LIMIT = 500
SUMMARY_COLUMNS = ("id", "blob_id", "size", "received_at", "sent_at", "subject", "from_addr", "to_addr",
                   "cc_addr", "message_id_header", "in_reply_to", "references", "preview",
                   "has_attachment", "thread_id")


def _chunks(items: list, size: int = _IN_LIMIT):
    for start in range(0, len(items), size):
        yield items[start:start + size]


_FLAG_ITEMS = tuple(FLAG_COLUMNS.items())


def _member_columns():
    """A membership row as _flags reads it: message, mailbox, uid, keywords, flag columns."""
    mm = schema.mailbox_messages
    return (mm.c.message_id, mm.c.mailbox_id, mm.c.uid, mm.c.keywords) + tuple(mm.c[c] for _f, c in _FLAG_ITEMS)


def _flags(row) -> frozenset:
    return _flag_set(row[3], tuple(row[4:]))


@functools.lru_cache(maxsize=4096)  # a mailbox has few distinct flag combinations
def _flag_set(keywords: str, columns: tuple) -> frozenset:
    flags = {flag for (flag, _column), on in zip(_FLAG_ITEMS, columns) if on}
    if keywords:
        flags.update(k for k in keywords.split(" ") if k)
    return frozenset(flags)


def _ids_in(column, dialect: str):
    """column IN the list bound as the ONE parameter "ids" (_ids_value): an expanding
    IN (?, ?, ...) is re-rendered by SQLAlchemy on every execution, which cost as
    much as the query. SQLite reads a JSON array (json_each), PostgreSQL an array."""
    if dialect == "postgresql":
        return column == any_(bindparam("ids", type_=ARRAY(BigInteger)))
    return column.in_(select(literal_column("value")).select_from(func.json_each(bindparam("ids"))))


def _ids_value(conn, ids: list):
    return list(ids) if conn.dialect.name == "postgresql" else json.dumps(list(ids))


_BY_ID: dict[tuple, object] = {}  # (key, dialect) -> statement, built once per call site


def _rows_by_id(conn, account, columns, message_ids, where=None, key=None) -> list:
    """Rows of the account's messages among message_ids (columns, then account_id).

    The ids are looked up by primary key and the account is checked here: with
    "account_id = ? AND id IN (...)" SQLite's planner (no statistics) walks an
    (account_id, ...) index over every message of the account instead. key names
    the (columns, where) pair so its statement is built once."""
    msgs = schema.messages
    cache_key = None if key is None else (key, conn.dialect.name)
    query = _BY_ID.get(cache_key) if cache_key is not None else None
    if query is None:
        query = select(*columns, msgs.c.account_id).where(_ids_in(msgs.c.id, conn.dialect.name))
        if where is not None:
            query = query.where(where)
        if cache_key is not None:
            _BY_ID[cache_key] = query
    rows = []
    for chunk in _chunks(sorted(set(message_ids))):
        rows.extend(row for row in conn.execute(query, {"ids": _ids_value(conn, chunk)}).all()
                    if row[-1] == account.id)
    return rows


_STATES = select(
    select(schema.account_state.c.modseq).where(schema.account_state.c.account_id == bindparam("a"))
    .scalar_subquery(),
    select(schema.changes.c.modseq).where(schema.changes.c.account_id == bindparam("a"),
                                          schema.changes.c.kind == "Email")
    .order_by(schema.changes.c.modseq.desc()).limit(1).scalar_subquery())


def states(mail, account) -> dict:
    """{"all": the account's modseq, "Email": the modseq of its last Email change};
    0 where nothing was logged. The newest Email row is found walking the
    primary key (account_id, modseq) backwards, so this costs no scan."""
    with mail.engine(account).connect() as conn:  # one statement: both read from one snapshot
        row = conn.execute(_STATES, {"a": account.id}).first()
    return {"all": row[0] or 0, "Email": row[1] or 0}


def create_indexes(conn) -> None:
    """Shard migration step (schema.MIGRATIONS): the indexes of the mail-list query
    (mailbox_page). The account's messages newest first with ties by ascending id,
    so LIMIT stops after the page without a sort; and memberships by (message,
    mailbox), so each candidate's "in this mailbox?" is one index probe."""
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_messages_received_desc "
                      "ON messages (account_id, received_at DESC, id)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_mm_message_mailbox "
                      "ON mailbox_messages (message_id, mailbox_id)"))


def with_states(mail, account, fn, *args):
    """(states(), fn(mail, account, *args)): the state first, then the data it goes
    with, in one trip to the read pool (jmap/state.py read)."""
    return states(mail, account), fn(mail, account, *args)


def _restricted(query, in_mailbox: bool, flags):
    """The account's messages (bind parameter "a"), in mailbox "box" when in_mailbox
    and with/without the flag columns. Correlated EXISTS, not IN (subquery): the
    planner then walks the sort index and probes ix_mm_message_mailbox per row,
    stopping at LIMIT, instead of first listing every member of the mailbox."""
    msgs, mm = schema.messages, schema.mailbox_messages
    query = query.where(msgs.c.account_id == bindparam("a"))
    if in_mailbox:
        query = query.where(select(mm.c.message_id).where(
            mm.c.message_id == msgs.c.id, mm.c.mailbox_id == bindparam("box"),
            mm.c.account_id == bindparam("a")).exists())
    for column, present in flags:  # a flag counts if any membership has it (JMAP keywords)
        flagged = select(mm.c.message_id).where(mm.c.message_id == msgs.c.id, mm.c.account_id == bindparam("a"),
                                                mm.c[column].is_(True)).exists()
        query = query.where(flagged if present else ~flagged)
    return query


_PAGES: dict[tuple, tuple] = {}  # statement shape -> (page statement, count statement), built once


def _page_statements(in_mailbox: bool, flags: tuple, sort_column: str, ascending: bool, limited: bool):
    key = (in_mailbox, flags, sort_column, ascending, limited)
    found = _PAGES.get(key)
    if found is None:
        msgs = schema.messages
        column = msgs.c[sort_column]
        page = _restricted(select(msgs.c.id), in_mailbox, flags)
        page = page.order_by(column.asc() if ascending else column.desc(), msgs.c.id.asc())
        page = page.offset(bindparam("offset", literal_execute=False))
        if limited:
            page = page.limit(bindparam("limit", literal_execute=False))
        count = _restricted(select(func.count()).select_from(msgs), in_mailbox, flags)
        found = _PAGES[key] = (page, count)
    return found


def mailbox_page(mail, account, mailbox_id, sort_column: str, ascending: bool, offset: int,
                 limit, total: bool, flags: tuple = ()):
    """(ids, total or None) of the account's messages (in one mailbox, or all when
    mailbox_id is None; flags: (flag column, present) pairs) ordered by a messages
    column, ties by ascending id: the common Email/query done in SQL with
    LIMIT/OFFSET instead of in Python."""
    page, count_of = _page_statements(mailbox_id is not None, tuple(flags), sort_column, ascending,
                                      limit is not None)
    params = {"a": account.id, "box": mailbox_id, "offset": offset, "limit": limit}
    with mail.engine(account).connect() as conn:
        ids = conn.execute(page, params).scalars().all()
        count = conn.execute(count_of, params).scalar() if total else None
    return ids, count


_MEMBERS = {dialect: select(*_member_columns()).where(
    schema.mailbox_messages.c.account_id == bindparam("a"),
    _ids_in(schema.mailbox_messages.c.message_id, dialect)) for dialect in ("sqlite", "postgresql")}


def emails(mail, account, message_ids=None, with_keys: bool = False) -> dict[int, dict]:
    """Summary columns and memberships of the account's messages (all when
    message_ids is None), by id: each dict has SUMMARY_COLUMNS and
    "mailboxes" {mailbox id: (uid, flags frozenset)}; with_keys, also "raw_key"
    (blob id, prepend) as raw_keys() gives it."""
    msgs, mm = schema.messages, schema.mailbox_messages
    columns = [msgs.c[name] for name in SUMMARY_COLUMNS] + ([msgs.c.prepend] if with_keys else [])
    members_of = select(*_member_columns())
    with mail.engine(account).connect() as conn:
        if message_ids is None:
            rows = conn.execute(select(*columns).where(msgs.c.account_id == account.id)).all()
            members = conn.execute(members_of.where(mm.c.account_id == account.id)).all()
        else:
            rows = _rows_by_id(conn, account, columns, message_ids, key=("emails", with_keys))
            members = []
            for chunk in _chunks([row[0] for row in rows]):
                members.extend(conn.execute(_MEMBERS["postgresql" if conn.dialect.name == "postgresql" else "sqlite"],
                                            {"a": account.id, "ids": _ids_value(conn, chunk)}).all())
    found: dict[int, dict] = {}
    for row in rows:
        item = dict(zip(SUMMARY_COLUMNS, row))
        item["mailboxes"] = {}
        if with_keys:
            item["raw_key"] = (item["blob_id"], bytes(row[len(SUMMARY_COLUMNS)]))
        found[row[0]] = item
    for row in members:
        if row[0] in found:
            found[row[0]]["mailboxes"][row[1]] = (row[2], _flags(row))
    return found


def raw_keys(mail, account, message_ids) -> dict[int, tuple[str, bytes]]:
    """{message id: (blob id, prepend)} of the account's messages among message_ids:
    what a message's bytes are made of, never changed once stored (rows by
    primary key, _rows_by_id)."""
    msgs = schema.messages
    with mail.engine(account).connect() as conn:
        rows = _rows_by_id(conn, account, (msgs.c.id, msgs.c.blob_id, msgs.c.prepend), message_ids,
                           key=("raw_keys",))
    return {row[0]: (row[1], bytes(row[2])) for row in rows}


def raws_of(mail, account, keys: dict) -> dict[int, bytes]:
    """{message id: prepend + body} for raw_keys() output, as MailStore.read_messages
    gives them: a message expunged since comes from the expunged cache or is absent."""
    blobs = mail.blobs.get_many(sorted({blob_id for blob_id, _prepend in keys.values()}))
    found = {}
    for message_id, (blob_id, prepend) in keys.items():
        blob = blobs.get(blob_id)
        data = prepend + blob if blob is not None else mail.expunged.get(account, message_id)
        if data is not None:
            found[message_id] = data
    return found


def raw_messages(mail, account, message_ids) -> dict[int, bytes]:
    """prepend + body of the account's messages among message_ids (raw_keys, raws_of)."""
    return raws_of(mail, account, raw_keys(mail, account, message_ids))


def _thread_key():
    """A message's conversation: messages.thread_id (store/threads.py), or its own
    id for mail stored before threading (thread_id NULL)."""
    msgs = schema.messages
    return func.coalesce(msgs.c.thread_id, msgs.c.id)


def threads(mail, account, thread_ids=None) -> dict[int, list[int]]:
    """{thread id: its live message ids, oldest receivedAt first (ties: lower id)}
    for the account's threads (all when thread_ids is None; unknown ids are absent).
    RFC 8621 3: a Thread's emailIds are sorted by receivedAt, oldest first."""
    msgs = schema.messages
    key = _thread_key().label("thread")
    base = select(key, msgs.c.id, msgs.c.received_at).where(msgs.c.account_id == account.id)
    rows = []
    with mail.engine(account).connect() as conn:
        if thread_ids is None:
            rows = conn.execute(base).all()
        else:  # two lookups: an OR of both would be a walk over all the account's mail
            for chunk in _chunks(sorted(set(thread_ids))):
                rows.extend(conn.execute(base.where(msgs.c.thread_id.in_(chunk))).all())
            rows.extend(_rows_by_id(conn, account, (key, msgs.c.id, msgs.c.received_at), thread_ids,
                                    msgs.c.thread_id.is_(None)))
    found: dict[int, list] = {}
    for row in sorted(rows, key=lambda r: (r.received_at, r.id)):
        found.setdefault(row.thread, []).append(row.id)
    return found


def thread_of(mail, account, message_ids) -> dict[int, int]:
    """{message id: thread id} of the account's live messages among message_ids."""
    msgs = schema.messages
    with mail.engine(account).connect() as conn:
        rows = _rows_by_id(conn, account, (msgs.c.id, _thread_key()), message_ids, key=("thread_of",))
    return {row[0]: row[1] for row in rows}


def thread_changes(mail, account, since: int, max_changes: int | None):
    """Thread changes after modseq `since` (RFC 8621 3.2), derived from the Email
    changes of the same window: (up_to, has_more, created, updated, destroyed)
    thread ids, or None when they cannot be told (the caller answers
    cannotCalculateChanges, RFC 8620 5.2, and the client resyncs).

    The thread of every live changed Email is created when the message it is
    named after (its first: a thread id is its starter's message id, and a
    merge keeps the older id) was created in the window, else updated. A destroyed Email's row is gone, so
    its thread is known only when the thread carried its id (it started the
    thread: a thread id is its first message's id, store/threads.py): updated
    while live messages still carry that id, destroyed when none does but
    thread_refs still maps a Message-ID to it. Otherwise (a destroyed reply in an
    older thread, or mail without Message-ID) the answer is None rather than a
    missed update. Over-reported updates are allowed (RFC 8620 5.2)."""
    from .searchqueue import thread_refs
    up_to, has_more, created, updated, destroyed = email_changes(mail, account, since, max_changes)
    fresh = set(created)
    of = thread_of(mail, account, created + updated)
    members = threads(mail, account, set(of.values()) | set(destroyed)) if of or destroyed else {}
    new, changed, gone = [], [], []
    for thread in dict.fromkeys(of[i] for i in created + updated if i in of):
        (new if thread in fresh else changed).append(thread)
    lost = [d for d in destroyed if d not in members]
    started = set()
    if lost:
        with mail.engine(account).connect() as conn:
            for chunk in _chunks(lost):
                started.update(conn.execute(select(thread_refs.c.thread_id).where(
                    thread_refs.c.account_id == account.id, thread_refs.c.thread_id.in_(chunk))).scalars())
    for message_id in destroyed:
        if message_id in members:
            if message_id not in new and message_id not in changed:
                changed.append(message_id)
        elif message_id in started:
            gone.append(message_id)
        else:
            return None
    if max_changes is not None and len(new) + len(changed) + len(gone) > max_changes:
        return None
    return up_to, has_more, new, changed, gone


def message_blob(mail, account, message_id: int):
    """(prepend, blob id) of one of the account's messages, or None."""
    msgs = schema.messages
    with mail.engine(account).connect() as conn:
        row = conn.execute(select(msgs.c.prepend, msgs.c.blob_id).where(
            msgs.c.id == message_id, msgs.c.account_id == account.id)).first()
    return None if row is None else (bytes(row.prepend), row.blob_id)


def email_changes(mail, account, since: int, max_changes: int | None):
    """Email changes after modseq `since` (RFC 8620 5.2), oldest first:
    (up_to modseq, has_more, created ids, updated ids, destroyed ids).

    An Email is "created" if its first log row is after since, "destroyed" if
    it no longer exists; one created and destroyed in the window is left out.
    With max_changes, the window ends at the modseq where the count of distinct
    ids would pass it."""
    ch, msgs = schema.changes, schema.messages
    with mail.engine(account).connect() as conn:
        rows = conn.execute(select(ch.c.modseq, ch.c.object_id).where(
            ch.c.account_id == account.id, ch.c.kind == "Email", ch.c.modseq > since)
            .order_by(ch.c.modseq)).all()
        up_to, has_more, seen = (rows[-1].modseq if rows else since), False, {}
        for row in rows:
            if row.object_id not in seen and max_changes is not None and len(seen) >= max_changes:
                has_more = True
                break
            seen[row.object_id] = row.modseq
            up_to = row.modseq
        if has_more:  # a window never ends inside one modseq's rows
            seen = {k: v for k, v in seen.items() if v <= up_to}
        ids = list(seen)
        first, alive = {}, set()
        for chunk in _chunks(ids):
            first.update(conn.execute(select(ch.c.object_id, func.min(ch.c.modseq)).where(
                ch.c.account_id == account.id, ch.c.kind == "Email", ch.c.object_id.in_(chunk))
                .group_by(ch.c.object_id)).all())
            alive.update(row[0] for row in _rows_by_id(conn, account, (msgs.c.id,), chunk))
    created, updated, destroyed = [], [], []
    for object_id in ids:
        new = first.get(object_id, 0) > since
        if object_id in alive:
            (created if new else updated).append(object_id)
        elif not new:
            destroyed.append(object_id)
    return up_to, has_more, created, updated, destroyed


def mailbox_changes(mail, account, since: int, max_changes: int | None):
    """Mailbox changes after modseq `since`: (up_to, has_more, created, updated,
    counts_only, destroyed), ids; counts_only are mailboxes whose only change
    is their messages (RFC 8621 2.2 updatedProperties). With max_changes the
    window ends before the modseq that would bring one id too many."""
    ch, boxes = schema.changes, schema.mailboxes
    with mail.engine(account).connect() as conn:
        now = conn.execute(select(schema.account_state.c.modseq).where(
            schema.account_state.c.account_id == account.id)).scalar() or 0
        rows = conn.execute(select(ch.c.modseq, ch.c.kind, ch.c.object_id, ch.c.mailbox_id, ch.c.op).where(
            ch.c.account_id == account.id, ch.c.modseq > since, ch.c.modseq <= now)
            .order_by(ch.c.modseq)).all()
        alive = set(conn.execute(select(boxes.c.id).where(boxes.c.account_id == account.id)).scalars())
    born, touched, counted = set(), {}, {}
    up_to, has_more = now, False
    for row in rows:
        box = row.object_id if row.kind == "Mailbox" else row.mailbox_id
        if box is None:
            continue
        if (max_changes is not None and box not in touched and box not in counted
                and len(set(touched) | set(counted)) >= max_changes):
            up_to, has_more = row.modseq - 1, True
            break
        if row.kind == "Mailbox":
            touched[box] = True
            if row.op == "created":
                born.add(box)
        else:
            counted[box] = True
    # modseqs are unique per account, so the rows read so far are the window
    return _classify(up_to, has_more, born, touched, counted, alive)


def _classify(up_to, has_more, born, touched, counted, alive):
    created = [i for i in touched if i in born and i in alive]
    updated = [i for i in touched if i not in born and i in alive]
    destroyed = [i for i in touched if i not in born and i not in alive]
    counts_only = [i for i in counted if i in alive and i not in touched]
    return up_to, has_more, created, updated, counts_only, destroyed


def mailboxes(mail, account) -> list[dict]:
    """The account's mailboxes with JMAP counts (RFC 8621 2.1): total emails, unread
    ones (neither \\Seen nor \\Draft), and the distinct threads of each (threads,
    unread_threads: threads with an unread Email in this mailbox), in two queries."""
    boxes, mm = schema.mailboxes, schema.mailbox_messages
    mail.init_account(account)  # the default mailboxes of an account never used yet
    with mail.engine(account).connect() as conn:
        rows = conn.execute(select(boxes.c.id, boxes.c.name, boxes.c.special_use, boxes.c.subscribed)
                            .where(boxes.c.account_id == account.id).order_by(boxes.c.name)).all()
        unread = (mm.c.seen.is_(False) & mm.c.draft.is_(False))
        thread = _thread_key()
        counts = {row.mailbox_id: (row.total, row.unread, row.threads, row.unread_threads)
                  for row in conn.execute(
            select(mm.c.mailbox_id, func.count().label("total"), func.count().filter(unread).label("unread"),
                   func.count(thread.distinct()).label("threads"),
                   func.count(thread.distinct()).filter(unread).label("unread_threads"))
            .select_from(mm.join(schema.messages, schema.messages.c.id == mm.c.message_id))
            .where(mm.c.account_id == account.id).group_by(mm.c.mailbox_id))}
    out = []
    for row in rows:
        total, unread_count, threads_count, unread_threads = counts.get(row.id, (0, 0, 0, 0))
        out.append(dict(id=row.id, name=row.name, special_use=row.special_use, subscribed=bool(row.subscribed),
                        total=total, unread=unread_count, threads=threads_count, unread_threads=unread_threads))
    return out
