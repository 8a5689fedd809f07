"""Tables of the directory and of each shard (SQLAlchemy Core), and migrations.

One schema serves SQLite and PostgreSQL. The partition key is the account:
all of one account's mail rows live on the shard the directory names.
Migrations are numbered steps recorded in schema_version, so an upgrade
never needs a dump and reload (MIGRATIONS below; append, never edit).
"""

from __future__ import annotations

from sqlalchemy import (BigInteger, Boolean, Column, Float, ForeignKey, Index, Integer,
                        LargeBinary, MetaData, String, Table, Text, UniqueConstraint,
                        select, text)
from sqlalchemy.engine import Connection

# A BigInteger primary key that SQLite still treats as its rowid alias.
ID = BigInteger().with_variant(Integer(), "sqlite")

directory_meta = MetaData()

domains = Table(
    "domains", directory_meta,
    Column("name", String(255), primary_key=True),  # lower case, IDNA (A-labels)
    Column("created_at", Float, nullable=False),
)

accounts = Table(
    "accounts", directory_meta,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("address", String(320), nullable=False, unique=True),  # lower case
    Column("domain", String(255), ForeignKey("domains.name"), nullable=False, index=True),
    Column("password_hash", String(255), nullable=False),
    Column("quota", BigInteger, nullable=False, default=0),  # bytes; 0 = unlimited
    Column("shard", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
)

aliases = Table(
    "aliases", directory_meta,
    # "local@domain", or "@domain" for a catch-all
    Column("address", String(320), primary_key=True),
    Column("domain", String(255), ForeignKey("domains.name"), nullable=False, index=True),
    Column("targets", Text, nullable=False),  # comma-separated addresses
)

shard_meta = MetaData()

# Per-account counters: the change log's modseq (RFC 7162 3.1.1: per-mailbox
# HIGHESTMODSEQ may come from one per-account sequence) and used quota.
account_state = Table(
    "account_state", shard_meta,
    Column("account_id", BigInteger, primary_key=True, autoincrement=False),
    Column("modseq", BigInteger, nullable=False),
    Column("used_bytes", BigInteger, nullable=False),
)

mailboxes = Table(
    "mailboxes", shard_meta,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("account_id", BigInteger, nullable=False),
    Column("name", String(1024), nullable=False),  # UTF-8, "/"-separated
    Column("special_use", String(32)),  # RFC 6154, e.g. "\\Sent"
    Column("uidvalidity", BigInteger, nullable=False),
    Column("uidnext", BigInteger, nullable=False),
    Column("subscribed", Boolean, nullable=False, default=True),
    Column("modseq", BigInteger, nullable=False),  # last change to this mailbox's contents
    UniqueConstraint("account_id", "name", name="uq_mailbox_name"),
)

# One row per message; the body is a content-addressed blob, never rewritten.
messages = Table(
    "messages", shard_meta,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("account_id", BigInteger, nullable=False),
    Column("blob_id", String(64), nullable=False),  # sha256 hex of the body
    Column("prepend", LargeBinary, nullable=False, default=b""),  # headers we added
    Column("size", BigInteger, nullable=False),  # len(prepend) + len(body)
    Column("received_at", Float, nullable=False),
    Column("sent_at", Float),
    Column("thread_id", BigInteger),
    Column("subject", Text),
    Column("from_addr", Text),
    Column("to_addr", Text),
    Column("cc_addr", Text),
    Column("message_id_header", Text),
    Column("in_reply_to", Text),
    Column("references", Text),
    Column("preview", Text),
    Column("has_attachment", Boolean, nullable=False, default=False),
    # IMAP ENVELOPE and BODYSTRUCTURE (RFC 3501 7.4.2) as sent, computed once at
    # delivery; NULL for mail stored before shard migration 3 (FETCH parses it).
    Column("envelope", LargeBinary),
    Column("bodystructure", LargeBinary),
    Index("ix_messages_account_blob", "account_id", "blob_id"),
    Index("ix_messages_blob", "blob_id"),
)

# Membership of a message in a mailbox, with its IMAP UID, flags and modseq.
mailbox_messages = Table(
    "mailbox_messages", shard_meta,
    Column("mailbox_id", BigInteger, primary_key=True, autoincrement=False),
    Column("uid", BigInteger, primary_key=True, autoincrement=False),
    Column("message_id", BigInteger, nullable=False),
    Column("account_id", BigInteger, nullable=False),
    Column("modseq", BigInteger, nullable=False),
    Column("seen", Boolean, nullable=False, default=False),
    Column("answered", Boolean, nullable=False, default=False),
    Column("flagged", Boolean, nullable=False, default=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("draft", Boolean, nullable=False, default=False),
    Column("keywords", Text, nullable=False, default=""),  # space-separated
    Index("ix_mm_unseen", "mailbox_id", "seen"),
    Index("ix_mm_flagged", "mailbox_id", "flagged"),
    Index("ix_mm_message", "message_id"),
)

# The per-account change log read by IMAP CONDSTORE/QRESYNC and JMAP /changes.
changes = Table(
    "changes", shard_meta,
    Column("account_id", BigInteger, primary_key=True, autoincrement=False),
    Column("modseq", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),  # "Email" or "Mailbox"
    Column("object_id", BigInteger, nullable=False),  # message id or mailbox id
    Column("mailbox_id", BigInteger),  # for Email changes: the mailbox affected
    Column("uid", BigInteger),  # for Email changes: the UID in that mailbox
    Column("op", String(16), nullable=False),  # created, updated, destroyed
    Column("at", Float, nullable=False),
)

# How many messages of this shard reference each blob; the blob store frees
# a blob when no shard references it any more.
blob_refs = Table(
    "blob_refs", shard_meta,
    Column("blob_id", String(64), primary_key=True),
    Column("refs", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
)

# The outbound queue (directory database, shared by every node, so any node can
# deliver any message): the message with its body, one claimable delivery per
# (message, recipient domain), and each recipient's state. See outbound/queue.py.
outbound_meta = MetaData()

outbound_messages = Table(
    "outbound_messages", outbound_meta,
    Column("id", String(32), primary_key=True),  # the "queued as" id
    Column("sender", String(320), nullable=False),  # envelope MAIL FROM; "" = null sender
    Column("body", LargeBinary, nullable=False),  # full message, CRLF; in SQL so any node has it
    Column("size", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("smtputf8", Boolean, nullable=False, default=False),
    Column("eight_bit", Boolean, nullable=False, default=False),
    Column("ret", String(8)),  # RFC 3461 4.3 FULL / HDRS
    Column("envid", String(100)),  # RFC 3461 4.4
)

outbound_deliveries = Table(
    "outbound_deliveries", outbound_meta,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("message_id", String(32), ForeignKey("outbound_messages.id", ondelete="CASCADE"),
           nullable=False, index=True),
    Column("domain", String(255), nullable=False),
    Column("held", Boolean, nullable=False, default=False),  # not claimable until released
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("lease_owner", String(64)),  # claim token of the worker delivering it now
    Column("lease_until", Float),
    Column("last_error", Text),
    Index("ix_outbound_due", "held", "next_attempt_at"),
)

outbound_recipients = Table(
    "outbound_recipients", outbound_meta,
    Column("delivery_id", BigInteger, ForeignKey("outbound_deliveries.id", ondelete="CASCADE"),
           primary_key=True, autoincrement=False),
    Column("address", String(320), primary_key=True),
    Column("notify", String(40)),  # RFC 3461 4.1, e.g. "FAILURE,DELAY" or "NEVER"
    Column("orcpt", String(520)),  # RFC 3461 4.2 "addr-type;address"
    Column("status", String(16), nullable=False),  # pending, delivered, failed
    Column("code", Integer, nullable=False, default=0),
    Column("enhanced", String(16), nullable=False, default=""),
    Column("text", Text, nullable=False, default=""),
    Column("remote_host", String(255), nullable=False, default=""),
    Column("updated_at", Float),
)

# Bounce outcomes per address and kind (hard, soft, complaint: kept apart); a
# recent hard bounce suppresses further sending to the address.
outbound_bounces = Table(
    "outbound_bounces", outbound_meta,
    Column("address", String(320), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("first_at", Float, nullable=False),
    Column("last_at", Float, nullable=False),
    Column("code", Integer, nullable=False),
    Column("enhanced", String(16), nullable=False),
    Column("text", Text, nullable=False),
    Index("ix_outbound_bounces_last", "kind", "last_at"),
)

# Subscribed mailbox names that outlive their mailbox (RFC 3501 6.3.6: a
# server MUST NOT drop a subscription because the mailbox was deleted). A
# subscribed existing mailbox is marked by mailboxes.subscribed instead.
subscriptions_meta = MetaData()
subscriptions = Table(
    "subscriptions", subscriptions_meta,
    Column("account_id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", String(1024), primary_key=True),
)

version_meta = MetaData()
schema_version = Table(
    "schema_version", version_meta,
    Column("version", Integer, primary_key=True, autoincrement=False),
)


def _create(metadata: MetaData) -> callable:
    def step(conn: Connection) -> None:
        metadata.create_all(conn)
    return step


def _message_structure_columns(conn: Connection) -> None:
    """messages.envelope and messages.bodystructure (a fresh database has them from step 1)."""
    from sqlalchemy import inspect
    present = {column["name"] for column in inspect(conn).get_columns("messages")}
    kind = "BYTEA" if conn.dialect.name == "postgresql" else "BLOB"
    for name in ("envelope", "bodystructure"):
        if name not in present:
            conn.execute(text(f"ALTER TABLE messages ADD COLUMN {name} {kind}"))


def _spam_tables(conn: Connection) -> None:
    from ..spam.tokendb import create_tables  # the classifier's token tables (mailserverd/spam)
    create_tables(conn)


def _outbound_claim_indexes(conn: Connection) -> None:
    """Queue claims (outbound/queue.py): due rows in claim order, and a claim's rows by its token."""
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_outbound_claim "
                      "ON outbound_deliveries (held, next_attempt_at, id)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_outbound_lease ON outbound_deliveries (lease_owner)"))


def _search_tables(conn: Connection) -> None:
    """The full-text index queue and conversation table (store/searchqueue.py, issue 12)."""
    from .searchqueue import create_tables
    create_tables(conn)


def _api_tokens(conn: Connection) -> None:
    from .tokens import create_tables  # HTTP Bearer tokens (store/tokens.py)
    create_tables(conn)


def _sqlite_ids_never_reused(*tables: Table):
    """A step rebuilding `tables` on SQLite with AUTOINCREMENT; nothing on PostgreSQL.

    Without AUTOINCREMENT SQLite hands out max(rowid)+1, so deleting the newest
    row gives its id to the next insert; JMAP ids (RFC 8620 1.2) and accountIds
    must never name two different objects. PostgreSQL sequences never go back.
    """
    def step(conn: Connection) -> None:
        if conn.dialect.name != "sqlite":
            return
        from sqlalchemy import inspect
        for table in tables:
            ddl = conn.execute(text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"),
                               {"name": table.name}).scalar() or ""
            if "AUTOINCREMENT" in ddl.upper():
                continue
            present = [column["name"] for column in inspect(conn).get_columns(table.name)]
            # every index on the table, also those made in raw SQL by later steps (searchqueue)
            index_ddl = conn.execute(text("SELECT sql FROM sqlite_master WHERE type = 'index' "
                                          "AND tbl_name = :name AND sql IS NOT NULL"),
                                     {"name": table.name}).scalars().all()
            copy = MetaData()
            for key in table.foreign_keys:  # the referenced tables, so the copied keys resolve
                key.column.table.to_metadata(copy)
            rebuilt = table.to_metadata(copy, name=f"{table.name}_rebuilt")
            rebuilt.dialect_options["sqlite"]["autoincrement"] = True
            rebuilt.indexes.clear()  # remade from index_ddl once the old table is gone
            rebuilt.create(conn)
            names = ", ".join(f'"{name}"' for name in present)
            conn.execute(text(f'INSERT INTO "{rebuilt.name}" ({names}) SELECT {names} FROM "{table.name}"'))
            conn.execute(text(f'DROP TABLE "{table.name}"'))
            conn.execute(text(f'ALTER TABLE "{rebuilt.name}" RENAME TO "{table.name}"'))
            for ddl in index_ddl:
                conn.execute(text(ddl))
    return step


def _identities(conn: Connection) -> None:
    from .identities import create_tables  # JMAP Identities (store/identities.py)
    create_tables(conn)


def _email_submissions(conn: Connection) -> None:
    from .submissions import create_tables  # JMAP EmailSubmission records (store/submissions.py)
    create_tables(conn)


def _vacation(conn: Connection) -> None:
    from .vacation import create_tables  # JMAP VacationResponse and its replies (store/vacation.py)
    create_tables(conn)


def _browser_sessions(conn: Connection) -> None:
    from .sessions import create_tables  # the webmail's sign-in sessions (store/sessions.py)
    create_tables(conn)


def _jmap_list_indexes(conn: Connection) -> None:
    from .jmapreads import create_indexes  # the JMAP mail-list query's indexes (store/jmapreads.py)
    create_indexes(conn)


# Append new steps; never edit or reorder a released one.
MIGRATIONS = {
    "directory": [_create(directory_meta), _create(outbound_meta), _spam_tables, _outbound_claim_indexes,
                  _api_tokens, _identities, _email_submissions, _vacation, _browser_sessions,
                  _sqlite_ids_never_reused(accounts)],
    "shard": [_create(shard_meta), _create(subscriptions_meta), _message_structure_columns,
              _search_tables, _sqlite_ids_never_reused(mailboxes, messages), _jmap_list_indexes],
}


def migrate(conn: Connection, kind: str) -> int:
    """Bring a database of `kind` up to the newest schema; returns the version."""
    version_meta.create_all(conn)
    current = conn.execute(select(schema_version.c.version)).scalar()
    steps = MIGRATIONS[kind]
    if current is None:
        current = 0
        conn.execute(schema_version.insert().values(version=0))
    if current > len(steps):
        raise RuntimeError(f"{kind} database schema version {current} is newer than this "
                           f"mailserverd ({len(steps)}); upgrade mailserverd")
    for number in range(current, len(steps)):
        steps[number](conn)
        conn.execute(schema_version.update().values(version=number + 1))
    return len(steps)


def sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL and synchronous=FULL: a commit survives power loss (DESIGN: durable before 250)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


__all__ = ["domains", "accounts", "aliases", "account_state", "mailboxes", "messages",
           "mailbox_messages", "changes", "blob_refs", "outbound_messages", "outbound_deliveries",
           "outbound_recipients", "outbound_bounces", "migrate", "sqlite_pragmas", "text"]
