"""ENVELOPE and BODYSTRUCTURE computed once at delivery (issue 10), kept in
messages.envelope/.bodystructure by shard migration 3, and what FETCH reads
instead of parsing the body; on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, select, text

from mailserverd.mime.imapsection import IMAPMessage
from mailserverd.store import Store, schema
from mailserverd.store.api import DeliveryTarget
from mailserverd.store.mail import Delivery

MULTIPART = (b"From: Carol <carol@remote.test>\r\nTo: alice@example.test, Bob <bob@example.test>\r\n"
             b"Subject: =?utf-8?q?caf=C3=A9?=\r\nDate: Sat, 05 Dec 2026 10:00:00 +0000\r\n"
             b"Message-ID: <m1@remote.test>\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=xyz\r\n\r\n"
             b"--xyz\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n"
             b"--xyz\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
             b"JVBERi0=\r\n--xyz--\r\n")
PREPEND = (b"Return-Path: <carol@remote.test>\r\n"
           b"Received: from remote.test by mx.example.test; Sat, 05 Dec 2026 10:00:01 +0000\r\n")


def make_store(request, tmp_path, kind):
    if kind == "sqlite":
        urls = [f"sqlite:///{tmp_path}/directory.sqlite3", f"sqlite:///{tmp_path}/shard-0.sqlite3"]
    else:
        new_database = request.getfixturevalue("pg_database")
        urls = [new_database(), new_database()]
    store = Store(urls[0], urls[1:], str(tmp_path / "blobs"))
    store.directory.add_domain("example.test")
    return store, urls


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_delivery_stores_what_fetch_would_compute(request, tmp_path, kind):
    """Each copy's stored ENVELOPE/BODYSTRUCTURE equal IMAPMessage(prepend + body)'s, whatever
    its own prepend (trace fields never change either item)."""
    store, _urls = make_store(request, tmp_path, kind)
    try:
        alice = store.add_account("alice@example.test", "pw")
        bob = store.add_account("bob@example.test", "pw")
        item = Delivery(MULTIPART, [DeliveryTarget(alice, prepend=PREPEND),
                                    DeliveryTarget(bob, prepend=b"Received: by other\r\n")])
        store.mail.deliver_many([item])
        for account, ref in zip((alice, bob), item.result):
            raw = store.mail.read_message(account, ref.message_id)
            expected = IMAPMessage(raw)
            stored = store.mail.message_structures(account, [ref.message_id])
            assert stored == {ref.message_id: (expected.envelope(), expected.bodystructure(True))}
        assert store.mail.message_structures(bob, [item.result[0].message_id]) == {}  # alice's
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_migration_3_adds_the_columns_and_old_rows_read_as_absent(request, tmp_path, kind):
    """A shard at schema version 2 (no structure columns) gains them on open; messages stored
    before have NULL and are left out of message_structures (FETCH parses those)."""
    store, urls = make_store(request, tmp_path, kind)
    alice = store.add_account("alice@example.test", "pw")
    old = Delivery(MULTIPART, [DeliveryTarget(alice)])
    store.mail.deliver_many([old])
    store.close()
    shard = create_engine(urls[1])
    with shard.begin() as conn:  # back to what version 2 left on disk
        conn.execute(text("ALTER TABLE messages DROP COLUMN envelope"))
        conn.execute(text("ALTER TABLE messages DROP COLUMN bodystructure"))
        conn.execute(text("UPDATE schema_version SET version = 2"))
    shard.dispose()
    store = Store(urls[0], urls[1:], str(tmp_path / "blobs"))
    try:
        with store.mail.engine(alice).connect() as conn:
            assert conn.execute(select(schema.schema_version.c.version)).scalar() == len(
                schema.MIGRATIONS["shard"])
        new = Delivery(MULTIPART + b"again\r\n", [DeliveryTarget(alice)])
        store.mail.deliver_many([new])
        ids = [old.result[0].message_id, new.result[0].message_id]
        assert set(store.mail.message_structures(alice, ids)) == {ids[1]}
    finally:
        store.close()
