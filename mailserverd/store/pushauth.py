"""Is the credential behind an open push connection still good? (jmap/pushguard.py)

An EventSource stream or a JMAP WebSocket is authenticated once, when it
opens, and may stay open for hours. jmap/pushguard.py remembers what
authenticated each one and asks dead() about all of them at once every
interval, whichever process or node made the change:

- ("session", id_sha256): a browser session (store/sessions.py): its row is
  gone (signed out, swept), expired (sliding or absolute), or its account was
  removed, re-created or given a new password (the credential digest differs);
- ("token", token_id): a Bearer token (store/tokens.py): revoked, expired, or
  its account is gone or another account now holds its address;
- ("account", account_id, digest): HTTP Basic: the account's credential
  digest (sessions.credential_digest: id, address, password hash) is not the
  one read when the connection opened (account_digest), i.e. the password
  changed or the account was removed.

One read transaction per call, IN lists of at most CHUNK keys, so the cost is
a few indexed queries per interval however many connections are open.
"""

from __future__ import annotations

from sqlalchemy import select

from . import schema
from .sessions import browser_sessions, credential_digest, expires_at
from .tokens import api_tokens

CHUNK = 500  # keys per IN list (SQLite's bound-parameter limit is far above this)


def _chunks(values: list):
    for start in range(0, len(values), CHUNK):
        yield values[start:start + CHUNK]


class _Row:
    def __init__(self, id, address, password_hash):  # noqa: A002 (the column names)
        self.id, self.address, self.password_hash = id, address, password_hash


def account_digest(store, account_id: int, address: str) -> str | None:
    """The credential digest of the account (read when a Basic push connection opens),
    None if no account with that id holds that address any more."""
    query = select(schema.accounts.c.id, schema.accounts.c.address, schema.accounts.c.password_hash) \
        .where(schema.accounts.c.id == account_id)
    with store.directory_engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None or row.address != address:
        return None
    return credential_digest(row)


def dead(store, credentials, now: float, lifetime: float, max_lifetime: float) -> set:
    """The credentials (tuples as in the module docstring) that no longer authenticate
    anything; a kind this module does not know counts as dead."""
    credentials = set(credentials)
    session_ids = sorted({c[1] for c in credentials if c[0] == "session"})
    token_ids = sorted({c[1] for c in credentials if c[0] == "token"})
    account_ids = sorted({c[1] for c in credentials if c[0] == "account"})
    live_sessions, live_tokens, digests = set(), set(), {}
    accounts = schema.accounts
    with store.directory_engine.connect() as conn:
        for chunk in _chunks(session_ids):
            query = (select(browser_sessions.c.id_sha256, browser_sessions.c.address,
                            browser_sessions.c.credential, browser_sessions.c.created_at,
                            browser_sessions.c.last_used_at, accounts.c.id.label("row_id"),
                            accounts.c.address.label("row_address"), accounts.c.password_hash)
                     .select_from(browser_sessions.outerjoin(accounts,
                                                             accounts.c.id == browser_sessions.c.account_id))
                     .where(browser_sessions.c.id_sha256.in_(chunk)))
            for row in conn.execute(query):
                if (row.row_id is not None and row.row_address == row.address
                        and row.credential == credential_digest(_Row(row.row_id, row.row_address,
                                                                     row.password_hash))
                        and now < expires_at(row.created_at, row.last_used_at, lifetime, max_lifetime)):
                    live_sessions.add(row.id_sha256)
        for chunk in _chunks(token_ids):
            query = (select(api_tokens.c.id, api_tokens.c.address, api_tokens.c.expires_at,
                            accounts.c.address.label("row_address"))
                     .select_from(api_tokens.outerjoin(accounts, accounts.c.id == api_tokens.c.account_id))
                     .where(api_tokens.c.id.in_(chunk)))
            for row in conn.execute(query):
                if row.row_address == row.address and (row.expires_at is None or row.expires_at > now):
                    live_tokens.add(row.id)
        for chunk in _chunks(account_ids):
            query = select(accounts.c.id, accounts.c.address, accounts.c.password_hash) \
                .where(accounts.c.id.in_(chunk))
            digests.update((row.id, credential_digest(row)) for row in conn.execute(query))
    out = set()
    for credential in credentials:
        kind = credential[0]
        if kind == "session":
            alive = credential[1] in live_sessions
        elif kind == "token":
            alive = credential[1] in live_tokens
        elif kind == "account":
            alive = digests.get(credential[1]) == credential[2]
        else:
            alive = False
        if not alive:
            out.add(credential)
    return out
