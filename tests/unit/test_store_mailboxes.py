"""Mailbox management and copies in the store (mailserverd/store/mailbox_ops.py),
on SQLite and on a real PostgreSQL: CREATE/DELETE/RENAME/SUBSCRIBE, COPY/MOVE
with COPYUID pairs, the per-mailbox change feed and batched reads."""

from __future__ import annotations

import pytest

from mailserverd.store.api import DeliveryTarget, MailboxExists, NoSuchMailbox, StoreError
from tests.unit.test_store import MESSAGE, deliver, store  # noqa: F401  (fixture)

OTHER = MESSAGE.replace(b"Hello there", b"Second")


@pytest.fixture
def alice(store):  # noqa: F811
    return store.add_account("alice@example.test", "pw")


def inbox(store, account):
    return store.mail.get_mailbox(account, "INBOX")


def test_create_then_duplicate_is_refused(store, alice):  # noqa: F811
    """create_mailbox makes an empty mailbox; the same name again (INBOX any case) is MailboxExists."""
    box = store.mail.create_mailbox(alice, "Work/2026")
    assert box.name == "Work/2026" and box.exists == 0 and box.uidnext == 1
    with pytest.raises(MailboxExists):
        store.mail.create_mailbox(alice, "Work/2026")
    with pytest.raises(MailboxExists):
        store.mail.create_mailbox(alice, "inbox")


def test_recreated_name_gets_larger_uidvalidity(store, alice):  # noqa: F811
    """A name deleted and created again gets a larger UIDVALIDITY (RFC 3501 2.3.1.1)."""
    first = store.mail.create_mailbox(alice, "Tmp").uidvalidity
    store.mail.delete_mailbox(alice, "Tmp")
    assert store.mail.create_mailbox(alice, "Tmp").uidvalidity > first


def test_delete_removes_messages_and_keeps_children(store, alice):  # noqa: F811
    """delete_mailbox drops the mailbox and its messages; a child mailbox stays; INBOX is refused."""
    store.mail.create_mailbox(alice, "A")
    store.mail.create_mailbox(alice, "A/B")
    deliver(store, MESSAGE, DeliveryTarget(alice, "A"))
    store.mail.delete_mailbox(alice, "A")
    names = {box.name for box in store.mail.list_mailboxes(alice)}
    assert "A" not in names and "A/B" in names
    assert store.mail.usage(alice) == 0
    with pytest.raises(StoreError):
        store.mail.delete_mailbox(alice, "INBOX")
    with pytest.raises(NoSuchMailbox):
        store.mail.delete_mailbox(alice, "A")


def test_rename_moves_children(store, alice):  # noqa: F811
    """rename_mailbox renames the mailbox and every child; a taken target is MailboxExists."""
    store.mail.create_mailbox(alice, "A")
    store.mail.create_mailbox(alice, "A/B")
    uidvalidity = store.mail.get_mailbox(alice, "A").uidvalidity
    store.mail.rename_mailbox(alice, "A", "Z")
    names = {box.name for box in store.mail.list_mailboxes(alice)}
    assert {"Z", "Z/B"} <= names and "A" not in names
    assert store.mail.get_mailbox(alice, "Z").uidvalidity == uidvalidity
    with pytest.raises(MailboxExists):
        store.mail.rename_mailbox(alice, "Z", "Sent")


def test_rename_inbox_moves_its_messages(store, alice):  # noqa: F811
    """Renaming INBOX moves its messages to the new name and leaves INBOX empty (RFC 3501 6.3.5)."""
    deliver(store, MESSAGE, DeliveryTarget(alice))
    store.mail.rename_mailbox(alice, "INBOX", "Old")
    assert inbox(store, alice).exists == 0
    assert store.mail.get_mailbox(alice, "Old").exists == 1


def test_copy_keeps_flags_and_answers_uid_pairs(store, alice):  # noqa: F811
    """copy_messages gives ascending new UIDs paired with the source UIDs and keeps flags."""
    deliver(store, MESSAGE, DeliveryTarget(alice, flags=frozenset({"\\Seen", "$Work"})))
    deliver(store, OTHER, DeliveryTarget(alice))
    source = inbox(store, alice)
    result = store.mail.copy_messages(alice, source.id, [2, 1], "Archive")
    archive = store.mail.get_mailbox(alice, "Archive")
    assert result.uidvalidity == archive.uidvalidity and result.pairs == [(1, 1), (2, 2)]
    refs = store.mail.list_messages(alice, archive.id)
    assert refs[0].flags == frozenset({"\\Seen", "$Work"})
    assert inbox(store, alice).exists == 2


def test_copy_to_missing_mailbox(store, alice):  # noqa: F811
    """Copying to a mailbox that does not exist raises NoSuchMailbox (the session says TRYCREATE)."""
    deliver(store, MESSAGE, DeliveryTarget(alice))
    with pytest.raises(NoSuchMailbox):
        store.mail.copy_messages(alice, inbox(store, alice).id, [1], "Nope")


def test_copy_then_expunge_source_keeps_the_copy(store, alice):  # noqa: F811
    """A copy shares the message row: expunging the original leaves the copy readable."""
    deliver(store, MESSAGE, DeliveryTarget(alice))
    source = inbox(store, alice)
    store.mail.copy_messages(alice, source.id, [1], "Archive")
    store.mail.expunge(alice, source.id, [1])
    archive = store.mail.get_mailbox(alice, "Archive")
    ref = store.mail.list_messages(alice, archive.id)[0]
    assert MESSAGE in store.mail.read_message(alice, ref.message_id)


def test_move_is_copy_plus_expunge(store, alice):  # noqa: F811
    """move_messages empties the source and logs the removal in the change log."""
    deliver(store, MESSAGE, DeliveryTarget(alice))
    source = inbox(store, alice)
    before = store.mail.highest_modseq(alice)
    result = store.mail.move_messages(alice, source.id, [1], "Trash")
    assert result.pairs == [(1, 1)]
    assert inbox(store, alice).exists == 0
    _highest, _changed, vanished = store.mail.mailbox_changes(alice, source.id, before)
    assert vanished == [1]


def test_mailbox_changes_reports_flag_changes(store, alice):  # noqa: F811
    """mailbox_changes lists refs whose modseq is newer than the one given."""
    deliver(store, MESSAGE, DeliveryTarget(alice))
    deliver(store, OTHER, DeliveryTarget(alice))
    source = inbox(store, alice)
    since = store.mail.highest_modseq(alice)
    store.mail.store_flags(alice, source.id, [2], ["\\Flagged"], "add")
    highest, changed, vanished = store.mail.mailbox_changes(alice, source.id, since)
    assert [ref.uid for ref in changed] == [2] and vanished == [] and highest > since


def test_read_messages_batch_is_account_scoped(store, alice):  # noqa: F811
    """read_messages returns several bodies at once and nothing of another account."""
    bob = store.add_account("bob@example.test", "pw")
    refs = deliver(store, MESSAGE, DeliveryTarget(alice))
    theirs = deliver(store, OTHER, DeliveryTarget(bob))
    got = store.mail.read_messages(alice, [refs[0].message_id, theirs[0].message_id])
    if bob.shard == alice.shard:
        assert list(got) == [refs[0].message_id]
    assert got[refs[0].message_id].endswith(MESSAGE)


def test_subscribe_and_unsubscribe(store, alice):  # noqa: F811
    """set_subscribed flips the flag; a name that does not exist can be subscribed too."""
    store.mail.set_subscribed(alice, "Sent", False)
    assert not store.mail.get_mailbox(alice, "Sent").subscribed
    store.mail.set_subscribed(alice, "Future", True)
    assert "Future" in store.mail.list_subscriptions(alice)
    assert store.mail.create_mailbox(alice, "Future").subscribed
    store.mail.set_subscribed(alice, "Future", False)
    assert "Future" not in store.mail.list_subscriptions(alice)


def test_created_mailbox_is_not_subscribed(store, alice):  # noqa: F811
    """CREATE does not subscribe (RFC 3501 6.3.3 leaves it to SUBSCRIBE)."""
    assert not store.mail.create_mailbox(alice, "Work").subscribed


def test_subscription_outlives_delete(store, alice):  # noqa: F811
    """Deleting a subscribed mailbox keeps its name subscribed (RFC 3501 6.3.6)."""
    store.mail.create_mailbox(alice, "Gone")
    store.mail.set_subscribed(alice, "Gone", True)
    store.mail.delete_mailbox(alice, "Gone")
    assert "Gone" in store.mail.list_subscriptions(alice)


def test_recently_expunged_message_stays_readable(store, alice):  # noqa: F811
    """A message expunged by one session can still be read by another that has
    not been told yet (RFC 2180 4.1.3); read_messages serves it from the cache."""
    refs = deliver(store, MESSAGE, DeliveryTarget(alice))
    store.mail.expunge(alice, inbox(store, alice).id, [refs[0].uid])
    assert store.mail.read_messages(alice, [refs[0].message_id])[refs[0].message_id].endswith(MESSAGE)
