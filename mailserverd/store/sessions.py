"""Browser sessions: the webmail's sign-in cookie (jmap/browser.py, POST /auth/login).

The cookie value is a secret of 32 random bytes (URL-safe base64); the table
keeps only its SHA-256, so a copy of the database opens no session (a slow
hash buys nothing for 256 random bits). A session belongs to an account by
id and address and remembers a digest of the account's credential row (id,
address, password hash): a session whose account was removed, made again
under the same address, or given a new password no longer opens anything,
whether or not the change happened in this process (mailserverctl with the
daemon stopped, another node). Expiry is sliding (`lifetime` seconds since
last use) and absolute (`max_lifetime` since sign-in); both are passed in,
so a changed setting applies to existing sessions. The table lives in the
directory database (a directory migration step, store/schema.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets

from sqlalchemy import (BigInteger, Column, Float, MetaData, String, Table, and_, delete, insert, or_,
                        select, update)
from sqlalchemy.engine import Connection

from . import schema
from .api import Account, StoreError

sessions_meta = MetaData()
browser_sessions = Table(
    "browser_sessions", sessions_meta,
    Column("id_sha256", String(64), primary_key=True),  # SHA-256 hex of the cookie's secret
    Column("account_id", BigInteger, nullable=False, index=True),
    Column("address", String(320), nullable=False),
    Column("credential", String(64), nullable=False),  # credential_digest() of the account row
    Column("created_at", Float, nullable=False),  # unix time of the sign-in
    Column("last_used_at", Float, nullable=False),  # renewed at most every RENEW_INTERVAL (browser.py)
)
MAX_PER_ACCOUNT = 50  # a new sign-in beyond this ends the account's least recently used session
_SECRET = re.compile(r"^[A-Za-z0-9_-]{43}$")


@dataclasses.dataclass(frozen=True)
class Session:
    account: Account
    id_sha256: str
    created_at: float
    last_used_at: float
    expires_at: float  # the earlier of the sliding and the absolute limit


def create_tables(conn: Connection) -> None:
    sessions_meta.create_all(conn)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def valid_secret(secret: str) -> bool:
    return bool(_SECRET.match(secret))


def credential_digest(row) -> str:
    """A digest of what a session must still match: the account's id, address and
    password hash (argon2, salted: every password change makes a new one)."""
    material = f"{row.id}\0{row.address}\0{row.password_hash}".encode("utf-8", "surrogateescape")
    return hashlib.sha256(material).hexdigest()


def expires_at(created_at: float, last_used_at: float, lifetime: float, max_lifetime: float) -> float:
    return min(last_used_at + lifetime, created_at + max_lifetime)


def create(store, account: Account, now: float, lifetime: float, max_lifetime: float,
           keep: int = MAX_PER_ACCOUNT) -> tuple[str, Session]:
    """(secret, Session) for a freshly authenticated account; the secret is shown only now.
    Expired sessions of every account are swept at the same time (sign-ins are rare)."""
    secret = secrets.token_urlsafe(32)
    with store.directory_engine.begin() as conn:
        row = conn.execute(select(schema.accounts).where(schema.accounts.c.id == account.id)).first()
        if row is None or row.address != account.address:
            raise StoreError(f"no such account: {account.address}")
        _sweep_expired(conn, now, lifetime, max_lifetime)
        kept = conn.execute(select(browser_sessions.c.id_sha256)
                            .where(browser_sessions.c.account_id == account.id)
                            .order_by(browser_sessions.c.last_used_at.desc())).scalars().all()
        if len(kept) >= keep:
            conn.execute(delete(browser_sessions).where(browser_sessions.c.id_sha256.in_(kept[keep - 1:])))
        conn.execute(insert(browser_sessions).values(
            id_sha256=digest(secret), account_id=account.id, address=account.address,
            credential=credential_digest(row), created_at=now, last_used_at=now))
    return secret, Session(account, digest(secret), now, now, expires_at(now, now, lifetime, max_lifetime))


def lookup(store, secret: str, now: float, lifetime: float, max_lifetime: float) -> Session | None:
    """The live session the secret names, else None; a dead one (expired, its account
    gone or its password changed) is deleted on the way."""
    if not valid_secret(secret):
        return None
    id_sha256 = digest(secret)
    query = (select(browser_sessions, schema.accounts.c.id.label("row_id"),
                    schema.accounts.c.address.label("row_address"), schema.accounts.c.password_hash,
                    schema.accounts.c.shard, schema.accounts.c.quota)
             .select_from(browser_sessions.outerjoin(schema.accounts,
                                                     schema.accounts.c.id == browser_sessions.c.account_id))
             .where(browser_sessions.c.id_sha256 == id_sha256))
    with store.directory_engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    live = (row.row_id is not None and row.row_address == row.address
            and secrets.compare_digest(row.credential, credential_digest(_AccountRow(row)))
            and now < expires_at(row.created_at, row.last_used_at, lifetime, max_lifetime))
    if not live:
        with store.directory_engine.begin() as conn:
            conn.execute(delete(browser_sessions).where(browser_sessions.c.id_sha256 == id_sha256))
        return None
    account = Account(id=row.row_id, address=row.row_address, shard=row.shard, quota=row.quota)
    return Session(account, id_sha256, row.created_at, row.last_used_at,
                   expires_at(row.created_at, row.last_used_at, lifetime, max_lifetime))


class _AccountRow:
    def __init__(self, row):
        self.id, self.address, self.password_hash = row.row_id, row.row_address, row.password_hash


def touch(store, id_sha256: str, now: float) -> None:
    """Renew the sliding expiry (browser.py calls it at most once a RENEW_INTERVAL)."""
    with store.directory_engine.begin() as conn:
        conn.execute(update(browser_sessions).where(browser_sessions.c.id_sha256 == id_sha256)
                     .values(last_used_at=now))


def revoke(store, secret: str) -> bool:
    """Delete the session (sign-out); False if there was none."""
    if not valid_secret(secret):
        return False
    with store.directory_engine.begin() as conn:
        return bool(conn.execute(delete(browser_sessions)
                                 .where(browser_sessions.c.id_sha256 == digest(secret))).rowcount)


def purge(store, now: float, lifetime: float, max_lifetime: float) -> int:
    """Delete every dead session: expired, or whose account was removed or changed its
    password (after an admin change); returns how many."""
    query = (select(browser_sessions.c.id_sha256, browser_sessions.c.address, browser_sessions.c.credential,
                    schema.accounts.c.id.label("row_id"), schema.accounts.c.address.label("row_address"),
                    schema.accounts.c.password_hash)
             .select_from(browser_sessions.outerjoin(schema.accounts,
                                                     schema.accounts.c.id == browser_sessions.c.account_id)))
    with store.directory_engine.begin() as conn:
        removed = _sweep_expired(conn, now, lifetime, max_lifetime)
        stale = [row.id_sha256 for row in conn.execute(query)
                 if row.row_id is None or row.row_address != row.address
                 or row.credential != credential_digest(_AccountRow(row))]
        for start in range(0, len(stale), 500):
            conn.execute(delete(browser_sessions).where(browser_sessions.c.id_sha256.in_(stale[start:start + 500])))
    return removed + len(stale)


def _sweep_expired(conn: Connection, now: float, lifetime: float, max_lifetime: float) -> int:
    return conn.execute(delete(browser_sessions).where(or_(
        browser_sessions.c.last_used_at <= now - lifetime,
        browser_sessions.c.created_at <= now - max_lifetime))).rowcount


def count(store, account_id: int | None = None) -> int:
    query = select(browser_sessions.c.id_sha256)
    if account_id is not None:
        query = query.where(and_(browser_sessions.c.account_id == account_id))
    with store.directory_engine.connect() as conn:
        return len(conn.execute(query).all())
