"""The JMAP VacationResponse (RFC 8621 8) of each account and the senders it
answered (RFC 3834: at most one reply per sender per period).

Both tables live in the directory database (directory migration step 8,
store/schema.py). An account without a row has its vacation response off.
The state is the row's modseq. Changing the response forgets whom it
answered, so the new text reaches everyone once. Writes run on the store's
writer thread and are committed before their Deferred fires.
"""

from __future__ import annotations

from sqlalchemy import (BigInteger, Boolean, Column, Float, MetaData, String, Table, Text, delete, insert,
                        select, update)
from sqlalchemy.engine import Connection, Engine

vacation_meta = MetaData()
vacation_responses = Table(
    "vacation_responses", vacation_meta,
    Column("account_id", BigInteger, primary_key=True, autoincrement=False),
    Column("is_enabled", Boolean, nullable=False, default=False),
    Column("from_date", Float),  # unix time or NULL
    Column("to_date", Float),
    Column("subject", Text),
    Column("text_body", Text),
    Column("html_body", Text),
    Column("modseq", BigInteger, nullable=False),
)
vacation_replies = Table(
    "vacation_replies", vacation_meta,
    Column("account_id", BigInteger, primary_key=True, autoincrement=False),
    Column("sender", String(320), primary_key=True),  # lower case
    Column("replied_at", Float, nullable=False),
)
COLUMNS = {"isEnabled": "is_enabled", "fromDate": "from_date", "toDate": "to_date", "subject": "subject",
           "textBody": "text_body", "htmlBody": "html_body"}


def create_tables(conn: Connection) -> None:
    vacation_meta.create_all(conn)


def get(_mail, engine: Engine, account_id: int):
    """The account's row or None (AsyncStore.run_read passes the mail store)."""
    with engine.connect() as conn:
        return conn.execute(select(vacation_responses)
                            .where(vacation_responses.c.account_id == account_id)).first()


def put(engine: Engine, account_id: int, values: dict) -> int:
    """Store the changed columns (COLUMNS values); the new modseq. Forgets the senders answered."""
    with engine.begin() as conn:
        row = conn.execute(select(vacation_responses.c.modseq)
                           .where(vacation_responses.c.account_id == account_id)).first()
        modseq = (row.modseq if row else 0) + 1
        if row is None:
            conn.execute(insert(vacation_responses).values(**dict({"is_enabled": False}, **values),
                                                           account_id=account_id, modseq=modseq))
        else:
            conn.execute(update(vacation_responses).where(vacation_responses.c.account_id == account_id)
                         .values(modseq=modseq, **values))
        conn.execute(delete(vacation_replies).where(vacation_replies.c.account_id == account_id))
    return modseq


def claim_reply(engine: Engine, account_id: int, sender: str, now: float, period: float) -> bool:
    """True (and the reply is recorded) if `sender` was not answered within `period` seconds."""
    sender = sender.lower()
    with engine.begin() as conn:
        last = conn.execute(select(vacation_replies.c.replied_at).where(
            vacation_replies.c.account_id == account_id, vacation_replies.c.sender == sender)).scalar()
        if last is not None and now - last < period:
            return False
        if last is None:
            conn.execute(insert(vacation_replies).values(account_id=account_id, sender=sender,
                                                         replied_at=now))
        else:
            conn.execute(update(vacation_replies).where(
                vacation_replies.c.account_id == account_id, vacation_replies.c.sender == sender)
                .values(replied_at=now))
    return True


def forget_account(conn: Connection, account_id: int) -> None:
    """Drop a removed account's JMAP and HTTP rows (Identities, EmailSubmissions, VacationResponse
    and its replies, Bearer tokens, browser sessions), so nothing of it survives the account,
    even in a database migrated before account ids stopped being reused."""
    from .identities import identities
    from .sessions import browser_sessions
    from .submissions import email_submissions
    from .tokens import api_tokens
    for table, column in ((api_tokens, api_tokens.c.account_id),
                          (browser_sessions, browser_sessions.c.account_id),
                          (identities, identities.c.account_id),
                          (email_submissions, email_submissions.c.account_id),
                          (vacation_responses, vacation_responses.c.account_id),
                          (vacation_replies, vacation_replies.c.account_id)):
        conn.execute(delete(table).where(column == account_id))
