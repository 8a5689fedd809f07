"""API tokens for HTTP Bearer authentication (`mailserverctl token ...`).

A token is "msd_<id>_<secret>": the id names the row, the secret (32 random
bytes, URL-safe base64) is stored only as its SHA-256 (a slow hash buys
nothing for 256 random bits). A token belongs to an account by id and
address, so one issued to a removed account never opens a later account of
the same address. The table lives in the directory database (directory
migration step 5, store/schema.py).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

from sqlalchemy import BigInteger, Column, Float, MetaData, String, Table, delete, insert, select
from sqlalchemy.engine import Connection

from .api import Account, StoreError

tokens_meta = MetaData()
api_tokens = Table(
    "api_tokens", tokens_meta,
    Column("id", String(32), primary_key=True),  # public: shown by `token list`
    Column("account_id", BigInteger, nullable=False),
    Column("address", String(320), nullable=False, index=True),
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),  # unix time; NULL = never
)
_TOKEN = re.compile(r"^msd_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


def create_tables(conn: Connection) -> None:
    tokens_meta.create_all(conn)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def create(store, address: str, lifetime: float | None = None, clock=time.time) -> tuple[str, str]:
    """(token id, token) for the account at `address`; the token is shown only now."""
    account = store.directory.require_account(address)
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    now = clock()
    with store.directory_engine.begin() as conn:
        conn.execute(insert(api_tokens).values(
            id=token_id, account_id=account.id, address=account.address, secret_sha256=_digest(secret),
            created_at=now, expires_at=None if lifetime is None else now + lifetime))
    return token_id, f"msd_{token_id}_{secret}"


def list_tokens(store, address: str | None = None) -> list:
    """Rows (id, address, created_at, expires_at), oldest first; never a secret."""
    query = select(api_tokens.c.id, api_tokens.c.address, api_tokens.c.created_at, api_tokens.c.expires_at)
    if address is not None:
        query = query.where(api_tokens.c.address == store.directory.require_account(address).address)
    with store.directory_engine.connect() as conn:
        return conn.execute(query.order_by(api_tokens.c.created_at, api_tokens.c.id)).all()


def revoke(store, token_id: str) -> None:
    with store.directory_engine.begin() as conn:
        if not conn.execute(delete(api_tokens).where(api_tokens.c.id == token_id)).rowcount:
            raise StoreError(f"no such token: {token_id}")


def token_id_of(token: str) -> str | None:
    match = _TOKEN.match(token)
    return match.group(1) if match else None


def verify(store, token: str, now: float) -> Account | None:
    """The account a valid, unexpired token belongs to, else None."""
    match = _TOKEN.match(token)
    if not match:
        return None
    with store.directory_engine.connect() as conn:
        row = conn.execute(select(api_tokens).where(api_tokens.c.id == match.group(1))).first()
    if row is None or not hmac.compare_digest(row.secret_sha256, _digest(match.group(2))):
        return None
    if row.expires_at is not None and row.expires_at <= now:
        return None
    account = store.directory.get_account(row.address)
    if account is None or account.id != row.account_id:
        return None
    return account
