"""JMAP Identities (RFC 8621 6): who an account sends as, with its signatures.

One row per Identity in the directory database (directory migration step 6,
store/schema.py). An account has an Identity for each address it may send
from (its own address and the aliases that deliver only to it, the rule SMTP
submission applies: Directory.sender_addresses); sync() makes the missing
ones and tombstones those whose address the account no longer owns.

Changes (RFC 8620 5.2): each row carries the account-wide sequence number of
its last change (modseq) and of its creation; a destroyed Identity stays as a
tombstone so /changes can report it. The account's Identity state is the
highest modseq of its rows. Writes run on the store's writer thread (one at a
time per node) in one transaction, committed (SQLite synchronous=FULL) before
their Deferred fires, as store/tokens.py does for API tokens.
"""

from __future__ import annotations

import json

from sqlalchemy import (BigInteger, Boolean, Column, Index, Integer, MetaData, String, Table, Text,
                        func, insert, select, update)
from sqlalchemy.engine import Connection, Engine

ID = BigInteger().with_variant(Integer(), "sqlite")

identities_meta = MetaData()
identities = Table(
    "identities", identities_meta,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("account_id", BigInteger, nullable=False),
    Column("email", String(320), nullable=False),  # lower case, as sender_addresses gives it
    Column("name", Text, nullable=False, default=""),
    Column("reply_to", Text),  # JSON EmailAddress[] or NULL
    Column("bcc", Text),  # JSON EmailAddress[] or NULL
    Column("text_signature", Text, nullable=False, default=""),
    Column("html_signature", Text, nullable=False, default=""),
    Column("may_delete", Boolean, nullable=False, default=True),
    Column("destroyed", Boolean, nullable=False, default=False),
    Column("created_modseq", BigInteger, nullable=False),
    Column("modseq", BigInteger, nullable=False),
    Index("ix_identities_account", "account_id", "modseq"),
)

# JMAP property -> column, for the properties a client may set
COLUMNS = {"name": "name", "replyTo": "reply_to", "bcc": "bcc", "textSignature": "text_signature",
           "htmlSignature": "html_signature"}
_JSON_COLUMNS = ("reply_to", "bcc")


def create_tables(conn: Connection) -> None:
    identities_meta.create_all(conn)


def as_object(row) -> dict:
    """The Identity object (RFC 8621 6.1) of a live row."""
    return {"id": f"i{row.id}", "name": row.name, "email": row.email,
            "replyTo": json.loads(row.reply_to) if row.reply_to else None,
            "bcc": json.loads(row.bcc) if row.bcc else None,
            "textSignature": row.text_signature, "htmlSignature": row.html_signature,
            "mayDelete": bool(row.may_delete)}


def rows(_mail, engine: Engine, account_id: int) -> list:
    """Every row of the account, tombstones included (AsyncStore.run_read passes the mail store)."""
    with engine.connect() as conn:
        return conn.execute(select(identities).where(identities.c.account_id == account_id)
                            .order_by(identities.c.id)).all()


def state_of(found: list) -> int:
    return max((row.modseq for row in found), default=0)


def needs_sync(found: list, account_address: str, allowed: frozenset) -> bool:
    known = {row.email for row in found}
    return (any(address not in known for address in allowed)
            or any(not row.destroyed and row.email not in allowed for row in found))


def _next_modseq(conn: Connection, account_id: int) -> int:
    current = conn.execute(select(func.max(identities.c.modseq))
                           .where(identities.c.account_id == account_id)).scalar()
    return (current or 0) + 1


def _values(props: dict) -> dict:
    out = {}
    for prop, value in props.items():
        column = COLUMNS[prop]
        out[column] = json.dumps(value) if column in _JSON_COLUMNS and value is not None else value
    return out


def sync(engine: Engine, account_id: int, account_address: str, allowed: frozenset) -> None:
    """An Identity for each allowed address that never had one (the account's own address
    cannot be deleted); tombstones for live Identities whose address is no longer allowed."""
    with engine.begin() as conn:
        found = conn.execute(select(identities.c.id, identities.c.email, identities.c.destroyed)
                             .where(identities.c.account_id == account_id)).all()
        modseq = _next_modseq(conn, account_id)
        known = {row.email for row in found}
        for address in sorted(allowed - known):
            conn.execute(insert(identities).values(
                account_id=account_id, email=address, name="", text_signature="", html_signature="",
                may_delete=address != account_address, destroyed=False, created_modseq=modseq,
                modseq=modseq))
        gone = [row.id for row in found if not row.destroyed and row.email not in allowed]
        if gone:
            conn.execute(update(identities).where(identities.c.id.in_(gone))
                         .values(destroyed=True, modseq=modseq))


def apply(engine: Engine, account_id: int, creates: list, updates: list, destroys: list) -> dict:
    """One Identity/set in one transaction. creates: [(creation id, email, props)];
    updates: [(row id, props)]; destroys: [row id]. Returns {"created": {cid: row},
    "updated": [ids], "destroyed": [ids], "notUpdated": [ids], "notDestroyed": [ids],
    "forbidden": [ids]} (not updated or destroyed: no such live Identity)."""
    out = {"created": {}, "updated": [], "destroyed": [], "notUpdated": [], "notDestroyed": [],
           "forbidden": []}
    with engine.begin() as conn:
        modseq = _next_modseq(conn, account_id)
        live = {row.id: row for row in conn.execute(select(identities).where(
            identities.c.account_id == account_id, identities.c.destroyed.is_(False)))}
        for creation_id, email, props in creates:
            values = dict(name="", text_signature="", html_signature="")
            values.update(_values(props))
            new_id = conn.execute(insert(identities).values(
                account_id=account_id, email=email, may_delete=True, destroyed=False,
                created_modseq=modseq, modseq=modseq, **values)).inserted_primary_key[0]
            out["created"][creation_id] = conn.execute(
                select(identities).where(identities.c.id == new_id)).one()
        for row_id, props in updates:
            if row_id not in live:
                out["notUpdated"].append(row_id)
                continue
            conn.execute(update(identities).where(identities.c.id == row_id)
                         .values(modseq=modseq, **_values(props)))
            out["updated"].append(row_id)
        for row_id in destroys:
            if row_id not in live:
                out["notDestroyed"].append(row_id)
            elif not live[row_id].may_delete:
                out["forbidden"].append(row_id)
            else:
                conn.execute(update(identities).where(identities.c.id == row_id)
                             .values(destroyed=True, modseq=modseq))
                out["destroyed"].append(row_id)
    return out

