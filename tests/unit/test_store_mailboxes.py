"""Mailbox management and copies in the store (mailserverd/store/mailbox_ops.py),
on SQLite and on a real PostgreSQL: CREATE/DELETE/RENAME/SUBSCRIBE, COPY/MOVE
with COPYUID pairs and quota, the per-mailbox change feed and batched reads."""

from __future__ import annotations

import dataclasses

import pytest

from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import IntegrityError

from mailserverd.store import Store, schema
from mailserverd.store.api import (CopyResult, DeliveryTarget, MailboxExists, NoSuchMailbox,
                                   OverQuota, StoreError)
from mailserverd.store.blobs import blob_id_of
from mailserverd.store.mail import Delivery
from tests.unit.test_store import MESSAGE, deliver

OTHER = MESSAGE.replace(b"Hello there", b"Second").replace(b"<m1@", b"<m2@")


@pytest.fixture(params=["sqlite", "postgresql"])
def urls(request, tmp_path):
    """URLs of a directory and one shard (copies never cross shards): half the PostgreSQL set-up cost."""
    if request.param == "sqlite":
        return [f"sqlite:///{tmp_path}/directory.sqlite3", f"sqlite:///{tmp_path}/shard.sqlite3"]
    new_database = request.getfixturevalue("pg_database")
    return [new_database(), new_database()]


@pytest.fixture
def store(urls, tmp_path):
    store = Store(urls[0], urls[1:], str(tmp_path / "blobs"))
    store.directory.add_domain("example.test")
    yield store
    store.close()


@pytest.fixture
def alice(store):
    return store.add_account("alice@example.test", "pw")


def box(store, account, name="INBOX"):
    return store.mail.get_mailbox(account, name)


def names(store, account):
    return {mailbox.name for mailbox in store.mail.list_mailboxes(account)}


def uids(store, account, name):
    return [ref.uid for ref in store.mail.list_messages(account, box(store, account, name).id)]


def email_log(store, account, since):
    return [(row.op, row.mailbox_id, row.uid) for row in store.mail.changes_since(account, since)
            if row.kind == "Email"]


# -- CREATE ------------------------------------------------------------------------


def test_create_makes_an_empty_mailbox(store, alice):
    """create_mailbox returns the new, empty mailbox with its special-use attribute."""
    created = store.mail.create_mailbox(alice, "Work/2026", "\\Archive")
    assert (created.name, created.exists, created.uidnext) == ("Work/2026", 0, 1)
    assert box(store, alice, "Work/2026").special_use == "\\Archive"


def test_create_existing_name_is_refused(store, alice):
    """Creating a name that exists raises MailboxExists."""
    store.mail.create_mailbox(alice, "Work")
    with pytest.raises(MailboxExists):
        store.mail.create_mailbox(alice, "Work")


def test_create_inbox_in_any_case_is_refused(store, alice):
    """INBOX is case-insensitive (RFC 3501 5.1): creating "inbox" raises MailboxExists."""
    with pytest.raises(MailboxExists):
        store.mail.create_mailbox(alice, "inbox")


def test_create_under_inbox_any_case_is_one_name(store, alice):
    """"inbox/x" names INBOX/x: created once, found again in any case of INBOX."""
    store.mail.create_mailbox(alice, "inbox/Lists")
    assert box(store, alice, "INBOX/Lists").name == "INBOX/Lists"
    with pytest.raises(MailboxExists):
        store.mail.create_mailbox(alice, "Inbox/Lists")


def test_create_invalid_name_is_refused(store, alice):
    """A name with an empty level or a LIST wildcard is a StoreError, not a row."""
    for bad in ("a//b", "a/%", "x" * 600):
        with pytest.raises(StoreError):
            store.mail.create_mailbox(alice, bad)


def test_recreated_name_gets_larger_uidvalidity(store, alice):
    """A name deleted and created again gets a larger UIDVALIDITY (RFC 3501 2.3.1.1)."""
    first = store.mail.create_mailbox(alice, "Tmp").uidvalidity
    store.mail.delete_mailbox(alice, "Tmp")
    assert store.mail.create_mailbox(alice, "Tmp").uidvalidity > first


def test_created_mailbox_is_not_subscribed(store, alice):
    """CREATE does not subscribe (RFC 3501 6.3.3 leaves it to SUBSCRIBE)."""
    assert not store.mail.create_mailbox(alice, "Work").subscribed


# -- DELETE ------------------------------------------------------------------------


def test_delete_removes_mailbox_and_keeps_children(store, alice):
    """delete_mailbox drops the mailbox; its child stays (RFC 3501 6.3.4)."""
    store.mail.create_mailbox(alice, "A")
    store.mail.create_mailbox(alice, "A/B")
    store.mail.delete_mailbox(alice, "A")
    assert "A" not in names(store, alice) and "A/B" in names(store, alice)


def test_delete_frees_messages_quota_and_blob(store, alice):
    """Deleting a mailbox deletes its messages: usage drops to 0 and the unshared blob is freed."""
    store.mail.create_mailbox(alice, "A")
    deliver(store, MESSAGE, DeliveryTarget(alice, "A"))
    store.mail.delete_mailbox(alice, "A")
    assert store.mail.usage(alice) == 0
    assert not store.blobs.exists(blob_id_of(MESSAGE))


def test_delete_keeps_blob_of_a_copy_elsewhere(store, alice):
    """A message copied to another mailbox survives the deletion of the original's mailbox."""
    store.mail.create_mailbox(alice, "A")
    deliver(store, MESSAGE, DeliveryTarget(alice, "A"))
    store.mail.copy_messages(alice, box(store, alice, "A").id, [1], "Archive")
    store.mail.delete_mailbox(alice, "A")
    ref = store.mail.list_messages(alice, box(store, alice, "Archive").id)[0]
    assert store.mail.read_message(alice, ref.message_id).endswith(MESSAGE)
    assert store.mail.usage(alice) == len(MESSAGE)


def test_delete_logs_mailbox_destroyed(store, alice):
    """DELETE logs a Mailbox "destroyed" change and one per message removed."""
    store.mail.create_mailbox(alice, "A")
    deliver(store, MESSAGE, DeliveryTarget(alice, "A"))
    mailbox_id = box(store, alice, "A").id
    since = store.mail.highest_modseq(alice)
    store.mail.delete_mailbox(alice, "A")
    log = [(r.kind, r.op, r.object_id if r.kind == "Mailbox" else r.uid)
           for r in store.mail.changes_since(alice, since)]
    assert log == [("Email", "destroyed", 1), ("Mailbox", "destroyed", mailbox_id)]


def test_delete_inbox_is_refused(store, alice):
    """DELETE INBOX (any case) is a StoreError and leaves INBOX in place."""
    with pytest.raises(StoreError):
        store.mail.delete_mailbox(alice, "inbox")
    assert "INBOX" in names(store, alice)


def test_delete_missing_mailbox(store, alice):
    """Deleting a name that does not exist raises NoSuchMailbox."""
    with pytest.raises(NoSuchMailbox):
        store.mail.delete_mailbox(alice, "Nope")


# -- RENAME ------------------------------------------------------------------------


def test_rename_moves_children_and_keeps_uidvalidity(store, alice):
    """rename_mailbox renames the mailbox and every child; ids and UIDVALIDITY stay."""
    store.mail.create_mailbox(alice, "A")
    store.mail.create_mailbox(alice, "A/B")
    store.mail.create_mailbox(alice, "AB")  # shares the prefix, not a child
    before = box(store, alice, "A/B")
    store.mail.rename_mailbox(alice, "A", "Z/Y")
    assert {"Z/Y", "Z/Y/B", "AB"} <= names(store, alice) and "A" not in names(store, alice)
    after = box(store, alice, "Z/Y/B")
    assert (after.id, after.uidvalidity) == (before.id, before.uidvalidity)


def test_rename_keeps_messages(store, alice):
    """A renamed mailbox keeps its messages and UIDs."""
    store.mail.create_mailbox(alice, "A")
    deliver(store, MESSAGE, DeliveryTarget(alice, "A"))
    store.mail.rename_mailbox(alice, "A", "B")
    assert uids(store, alice, "B") == [1]


def test_rename_onto_existing_is_refused(store, alice):
    """Renaming onto an existing name raises MailboxExists and changes nothing."""
    store.mail.create_mailbox(alice, "A")
    with pytest.raises(MailboxExists):
        store.mail.rename_mailbox(alice, "A", "Sent")
    assert "A" in names(store, alice)


def test_rename_when_a_child_target_exists_is_refused(store, alice):
    """If a child's new name exists, the whole rename is refused (nothing renamed)."""
    for name in ("A", "A/B", "Z/B"):
        store.mail.create_mailbox(alice, name)
    with pytest.raises(MailboxExists):
        store.mail.rename_mailbox(alice, "A", "Z")
    assert {"A", "A/B", "Z/B"} <= names(store, alice) and "Z" not in names(store, alice)


def test_rename_missing_mailbox(store, alice):
    """Renaming a name that does not exist raises NoSuchMailbox."""
    with pytest.raises(NoSuchMailbox):
        store.mail.rename_mailbox(alice, "Nope", "Other")


def test_rename_inbox_moves_its_messages(store, alice):
    """Renaming INBOX moves its messages to the new mailbox (fresh UIDs, new
    UIDVALIDITY) and leaves INBOX empty (RFC 3501 6.3.5)."""
    deliver(store, MESSAGE, DeliveryTarget(alice))
    deliver(store, OTHER, DeliveryTarget(alice, flags=frozenset({"\\Seen"})))
    store.mail.expunge(alice, box(store, alice).id, [1])
    inbox_before = box(store, alice)
    store.mail.rename_mailbox(alice, "INBOX", "Old")
    old = box(store, alice, "Old")
    assert box(store, alice).exists == 0 and box(store, alice).id == inbox_before.id
    assert uids(store, alice, "Old") == [1] and old.uidvalidity != inbox_before.uidvalidity
    assert store.mail.list_messages(alice, old.id)[0].flags == {"\\Seen"}


def test_rename_inbox_leaves_its_children(store, alice):
    """INBOX's children are not moved when INBOX is renamed."""
    store.mail.create_mailbox(alice, "INBOX/Lists")
    store.mail.rename_mailbox(alice, "inbox", "Old")
    assert {"INBOX", "INBOX/Lists", "Old"} <= names(store, alice)
    assert "Old/Lists" not in names(store, alice)


def test_rename_inbox_onto_existing_is_refused(store, alice):
    """Renaming INBOX onto an existing name raises MailboxExists and moves nothing."""
    deliver(store, MESSAGE, DeliveryTarget(alice))
    with pytest.raises(MailboxExists):
        store.mail.rename_mailbox(alice, "INBOX", "Trash")
    assert box(store, alice).exists == 1


# -- SUBSCRIBE ---------------------------------------------------------------------


def test_unsubscribe_and_subscribe_existing(store, alice):
    """set_subscribed flips an existing mailbox's subscribed flag both ways."""
    store.mail.set_subscribed(alice, "Sent", False)
    assert not box(store, alice, "Sent").subscribed
    assert "Sent" not in store.mail.list_subscriptions(alice)
    store.mail.set_subscribed(alice, "Sent", True)
    assert box(store, alice, "Sent").subscribed


def test_subscribe_name_that_does_not_exist(store, alice):
    """A missing name can be subscribed (RFC 3501 6.3.6) and the mailbox created later is subscribed."""
    store.mail.set_subscribed(alice, "Future", True)
    assert "Future" in store.mail.list_subscriptions(alice)
    assert store.mail.create_mailbox(alice, "Future").subscribed


def test_unsubscribe_unknown_name_is_a_no_op(store, alice):
    """Unsubscribing a name neither subscribed nor existing succeeds and changes nothing."""
    before = store.mail.list_subscriptions(alice)
    store.mail.set_subscribed(alice, "Never", False)
    assert store.mail.list_subscriptions(alice) == before


def test_subscription_outlives_delete(store, alice):
    """Deleting a subscribed mailbox keeps its name subscribed (RFC 3501 6.3.6)."""
    store.mail.create_mailbox(alice, "Gone")
    store.mail.set_subscribed(alice, "Gone", True)
    store.mail.delete_mailbox(alice, "Gone")
    assert "Gone" in store.mail.list_subscriptions(alice)


def test_rename_carries_the_subscription(store, alice):
    """A subscribed mailbox is still subscribed under its new name."""
    store.mail.create_mailbox(alice, "A")
    store.mail.set_subscribed(alice, "A", True)
    store.mail.rename_mailbox(alice, "A", "B")
    assert box(store, alice, "B").subscribed and "A" not in store.mail.list_subscriptions(alice)


def test_removed_account_leaves_no_subscriptions(store, alice):
    """Removing an account also drops the subscriptions of names it had deleted."""
    store.mail.set_subscribed(alice, "Future", True)
    store.remove_account(alice.address)
    with store.mail.engine(alice).connect() as conn:
        assert conn.execute(select(schema.subscriptions)).all() == []


def test_v1_shard_database_is_migrated_with_its_subscriptions(urls, tmp_path):
    """A shard made before the subscriptions table (schema version 1) gets it when
    the store opens; its subscribed mailboxes stay subscribed and now outlive DELETE."""
    store = Store(urls[0], urls[1:], str(tmp_path / "blobs"))
    store.directory.add_domain("example.test")
    alice = store.add_account("alice@example.test", "pw")
    store.mail.create_mailbox(alice, "Old")
    store.mail.set_subscribed(alice, "Old", True)
    store.close()
    shard = create_engine(urls[1])
    with shard.begin() as conn:  # back to what version 1 left on disk
        conn.execute(text("DROP TABLE subscriptions"))
        conn.execute(text("UPDATE schema_version SET version = 1"))
    shard.dispose()
    store = Store(urls[0], urls[1:], str(tmp_path / "blobs"))
    try:
        with store.mail.engine(alice).connect() as conn:
            assert conn.execute(select(schema.schema_version.c.version)).scalar() == len(
                schema.MIGRATIONS["shard"])
        assert {"INBOX", "Old"} <= set(store.mail.list_subscriptions(alice))
        store.mail.delete_mailbox(alice, "Old")
        store.mail.set_subscribed(alice, "Future", True)
        assert {"Old", "Future"} <= set(store.mail.list_subscriptions(alice))
    finally:
        store.close()


# -- COPY / MOVE -------------------------------------------------------------------


def test_copy_keeps_flags_and_answers_uid_pairs(store, alice):
    """copy_messages gives ascending new UIDs paired with the source UIDs (RFC 4315
    COPYUID), keeps flags and leaves the source alone."""
    deliver(store, MESSAGE, DeliveryTarget(alice, flags=frozenset({"\\Seen", "$Work"})))
    deliver(store, OTHER, DeliveryTarget(alice))
    deliver(store, MESSAGE, DeliveryTarget(alice, "Archive"))  # Archive's UID 1 is taken
    result = store.mail.copy_messages(alice, box(store, alice).id, [2, 1, 99], "Archive")
    archive = box(store, alice, "Archive")
    assert result == CopyResult(uidvalidity=archive.uidvalidity, pairs=[(1, 2), (2, 3)])
    flags = {ref.uid: ref.flags for ref in store.mail.list_messages(alice, archive.id)}
    assert flags[2] == {"\\Seen", "$Work"} and flags[3] == frozenset()
    assert uids(store, alice, "INBOX") == [1, 2]


def test_copy_gives_new_modseqs(store, alice):
    """Each copy gets a modseq above every earlier one, and the log shows it created."""
    deliver(store, MESSAGE, DeliveryTarget(alice))
    since = store.mail.highest_modseq(alice)
    store.mail.copy_messages(alice, box(store, alice).id, [1], "Archive")
    archive = box(store, alice, "Archive")
    ref = store.mail.list_messages(alice, archive.id)[0]
    assert ref.modseq > since and archive.highestmodseq == ref.modseq
    assert email_log(store, alice, since) == [("created", archive.id, 1)]


def test_copy_shares_the_message(store, alice):
    """A copy shares the message row: expunging the original leaves the copy readable."""
    deliver(store, MESSAGE, DeliveryTarget(alice))
    store.mail.copy_messages(alice, box(store, alice).id, [1], "Archive")
    store.mail.expunge(alice, box(store, alice).id, [1])
    ref = store.mail.list_messages(alice, box(store, alice, "Archive").id)[0]
    assert store.mail.read_message(alice, ref.message_id).endswith(MESSAGE)
    assert store.blobs.exists(blob_id_of(MESSAGE))


def test_copy_to_missing_mailbox(store, alice):
    """Copying to a mailbox that does not exist raises NoSuchMailbox (the session says TRYCREATE)."""
    deliver(store, MESSAGE, DeliveryTarget(alice))
    with pytest.raises(NoSuchMailbox):
        store.mail.copy_messages(alice, box(store, alice).id, [1], "Nope")


def test_copy_of_no_existing_uids_is_empty(store, alice):
    """Copying UIDs that are not in the mailbox copies nothing and uses no UID."""
    result = store.mail.copy_messages(alice, box(store, alice).id, [5], "Archive")
    assert result.pairs == [] and box(store, alice, "Archive").uidnext == 1


def test_copy_counts_against_quota(store, alice):
    """A copy counts its bytes; one that would exceed the quota is OverQuota and copies nothing."""
    deliver(store, MESSAGE, DeliveryTarget(alice))
    limited = dataclasses.replace(alice, quota=2 * len(MESSAGE))
    store.mail.copy_messages(limited, box(store, alice).id, [1], "Archive")
    assert store.mail.usage(alice) == 2 * len(MESSAGE)
    with pytest.raises(OverQuota):
        store.mail.copy_messages(limited, box(store, alice).id, [1], "Trash")
    assert box(store, alice, "Trash").exists == 0 and store.mail.usage(alice) == 2 * len(MESSAGE)


def test_expunging_a_copy_returns_its_bytes(store, alice):
    """Expunging one copy of a shared message lowers usage by that copy's size."""
    deliver(store, MESSAGE, DeliveryTarget(alice))
    store.mail.copy_messages(alice, box(store, alice).id, [1], "Archive")
    store.mail.expunge(alice, box(store, alice, "Archive").id, [1])
    assert store.mail.usage(alice) == len(MESSAGE)


def test_move_expunges_the_source(store, alice):
    """move_messages puts the messages in the destination and removes them from the source."""
    deliver(store, MESSAGE, DeliveryTarget(alice))
    deliver(store, OTHER, DeliveryTarget(alice))
    result = store.mail.move_messages(alice, box(store, alice).id, [1, 2], "Trash")
    assert result.pairs == [(1, 1), (2, 2)]
    assert uids(store, alice, "INBOX") == [] and uids(store, alice, "Trash") == [1, 2]


def test_move_logs_creations_and_removals(store, alice):
    """MOVE logs the destination memberships created and the source memberships
    removed ("updated": the message lives on), each with its own modseq."""
    deliver(store, MESSAGE, DeliveryTarget(alice))
    since = store.mail.highest_modseq(alice)
    inbox_id, trash_id = box(store, alice).id, box(store, alice, "Trash").id
    store.mail.move_messages(alice, inbox_id, [1], "Trash")
    assert email_log(store, alice, since) == [("created", trash_id, 1), ("updated", inbox_id, 1)]
    assert store.mail.highest_modseq(alice) == since + 2


def test_move_does_not_change_usage(store, alice):
    """A move neither adds bytes nor is refused at a full quota."""
    deliver(store, MESSAGE, DeliveryTarget(alice))
    full = dataclasses.replace(alice, quota=len(MESSAGE))
    store.mail.move_messages(full, box(store, alice).id, [1], "Trash")
    assert store.mail.usage(alice) == len(MESSAGE)


def test_move_is_atomic(store, alice):
    """If the move's last write fails (here its change row collides with one
    already in the log), neither the copy nor the expunge is kept."""
    deliver(store, MESSAGE, DeliveryTarget(alice))
    taken = store.mail.highest_modseq(alice) + 2  # the modseq the removal will get
    with store.mail.engine(alice).begin() as conn:
        conn.execute(schema.changes.insert().values(
            account_id=alice.id, modseq=taken, kind="Email", object_id=0, op="updated", at=0.0))
    with pytest.raises(IntegrityError):
        store.mail.move_messages(alice, box(store, alice).id, [1], "Trash")
    assert uids(store, alice, "INBOX") == [1] and uids(store, alice, "Trash") == []
    assert box(store, alice, "Trash").uidnext == 1


def test_move_of_many_uids(store, alice):
    """A move of more UIDs than one IN clause takes (600) keeps every pair in order."""
    bodies = [MESSAGE + b"%d\r\n" % n for n in range(600)]
    store.mail.deliver_many([Delivery(body, [DeliveryTarget(alice)]) for body in bodies])
    result = store.mail.move_messages(alice, box(store, alice).id, range(1, 601), "Trash")
    assert result.pairs == [(n, n) for n in range(1, 601)]
    assert box(store, alice).exists == 0


# -- change feed and batched reads -------------------------------------------------


def test_mailbox_changes_reports_changed_refs(store, alice):
    """mailbox_changes lists the refs of the mailbox whose modseq is above since."""
    deliver(store, MESSAGE, DeliveryTarget(alice))
    deliver(store, OTHER, DeliveryTarget(alice))
    inbox = box(store, alice)
    since = store.mail.highest_modseq(alice)
    store.mail.store_flags(alice, inbox.id, [2], ["\\Flagged"], "add")
    highest, changed, vanished = store.mail.mailbox_changes(alice, inbox.id, since)
    assert [(ref.uid, ref.flags) for ref in changed] == [(2, {"\\Flagged"})]
    assert vanished == [] and highest == store.mail.highest_modseq(alice)


def test_mailbox_changes_reports_vanished_uids(store, alice):
    """UIDs expunged or moved away after since are vanished; earlier ones are not (RFC 7162 3.2.10)."""
    for n in range(4):
        deliver(store, MESSAGE + b"%d\r\n" % n, DeliveryTarget(alice))
    inbox = box(store, alice)
    store.mail.expunge(alice, inbox.id, [1])
    since = store.mail.highest_modseq(alice)
    store.mail.expunge(alice, inbox.id, [2])
    store.mail.move_messages(alice, inbox.id, [4], "Trash")
    _highest, changed, vanished = store.mail.mailbox_changes(alice, inbox.id, since)
    assert vanished == [2, 4] and changed == []


def test_mailbox_changes_ignore_a_deleted_namesakes_history(store, alice):
    """A mailbox created after another was deleted reports none of the old one's expunges."""
    store.mail.create_mailbox(alice, "A")
    deliver(store, MESSAGE, DeliveryTarget(alice, "A"))
    store.mail.delete_mailbox(alice, "A")
    again = store.mail.create_mailbox(alice, "A")
    assert store.mail.mailbox_changes(alice, again.id, 0)[2] == []


def test_read_messages_batch_is_account_scoped(store, alice):
    """read_messages returns several bodies at once, and nothing of another account."""
    bob = store.add_account("bob@example.test", "pw")
    first = deliver(store, MESSAGE, DeliveryTarget(alice))[0]
    second = deliver(store, OTHER, DeliveryTarget(alice, "Archive"))[0]
    theirs = deliver(store, OTHER + b"bob\r\n", DeliveryTarget(bob))[0]
    got = store.mail.read_messages(alice, [first.message_id, second.message_id, theirs.message_id])
    assert got == {first.message_id: MESSAGE, second.message_id: OTHER}


def test_read_messages_of_no_ids(store, alice):
    """read_messages of an empty list is an empty dict."""
    assert store.mail.read_messages(alice, []) == {}


def test_recently_expunged_message_stays_readable(store, alice):
    """A message expunged by one session can still be read by another that has
    not been told yet (RFC 2180 4.1.3); read_messages serves it from the cache."""
    ref = deliver(store, MESSAGE, DeliveryTarget(alice))[0]
    store.mail.expunge(alice, box(store, alice).id, [ref.uid])
    assert store.mail.read_messages(alice, [ref.message_id]) == {ref.message_id: MESSAGE}


def test_message_summaries_return_stored_headers(store, alice):
    """message_summaries gives each message's summary columns without reading its body."""
    ref = deliver(store, MESSAGE, DeliveryTarget(alice))[0]
    summary = store.mail.message_summaries(alice, [ref.message_id, 12345])
    assert list(summary) == [ref.message_id]
    row = summary[ref.message_id]
    assert row["subject"] == "Hello there" and row["message_id_header"] == "<m1@remote.test>"
    assert "carol@remote.test" in row["from_addr"] and "alice@example.test" in row["to_addr"]
    assert set(row) == {"subject", "from_addr", "to_addr", "cc_addr", "sent_at",
                        "message_id_header", "in_reply_to", "references"}
