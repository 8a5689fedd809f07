"""Learning from users (mailserverd/spam/learn.py) with an in-memory store: which copies
and moves train what, the prepend of our delivery stripped, and the store hook
AsyncStore.observe_copies firing after a committed COPY/MOVE."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import create_engine
from twisted.internet import defer

from mailserverd.spam.learn import JunkLearner, strip_own_prepend
from mailserverd.spam.tokendb import GLOBAL, TokenDB
from mailserverd.store import schema
from mailserverd.store.api import Account, CopyResult, Mailbox, MessageRef

ALICE = Account(id=5, address="alice@example.test", shard=0)
HOST = "mx.example.test"
MESSAGE = (b"Return-Path: <x@remote.test>\r\n"
           b"Received: from relay.remote.test ([198.51.100.1])\r\n"
           b"\tby mx.example.test (mailserverd) with ESMTP id A1\r\n"
           b"\tfor <alice@example.test>; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
           b"Authentication-Results: mx.example.test; spf=fail smtp.mailfrom=x@remote.test; dkim=none; "
           b"dmarc=fail header.from=remote.test\r\n"
           b"X-Spam-Status: No, score=0.100 required=0.90\r\n"
           b"From: x@remote.test\r\nSubject: cheap watches\r\nMessage-ID: <m1@remote.test>\r\n\r\n"
           b"Buy cheap replica watches today\r\n")


def box(id, name, special_use=None):
    return Mailbox(id=id, name=name, special_use=special_use, uidvalidity=1, uidnext=10, subscribed=True)


class FakeStore:
    """The few AsyncStore reads the learner uses, answering at once."""

    def __init__(self):
        self.boxes = [box(1, "INBOX"), box(2, "Junk", "\\Junk"), box(3, "Trash", "\\Trash"), box(4, "Work")]
        self.observers = []

    def observe_copies(self, callback):
        self.observers.append(callback)

    def list_mailboxes(self, account):
        return defer.succeed(self.boxes)

    def list_messages(self, account, mailbox_id):
        return defer.succeed([MessageRef(mailbox_id, 7, 70, len(MESSAGE), frozenset(), 1, 0.0)])

    def mailbox_changes(self, account, mailbox_id, since):
        return defer.succeed((1, [], []))  # nothing recent: the learner falls back to list_messages

    def read_messages(self, account, ids):
        return defer.succeed({message_id: MESSAGE for message_id in ids})


@dataclasses.dataclass
class FakeCheck:
    db: TokenDB
    per_user: bool = True


@pytest.fixture
def learner(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path}/d.sqlite3")
    with engine.begin() as conn:
        schema.migrate(conn, "directory")
    store = FakeStore()
    learner = JunkLearner(FakeCheck(TokenDB(engine)), store, HOST, run=lambda fn, *a: defer.maybeDeferred(fn, *a))
    learner.startService()
    yield learner
    engine.dispose()


def move(learner, source_id, dest, moved=True):
    for observer in learner.store.observers:
        observer(ALICE, source_id, dest, CopyResult(uidvalidity=1, pairs=[(3, 7)]), moved)


def test_move_into_junk_trains_spam_and_back_out_moves_it_to_ham(learner):
    """INBOX -> Junk: spam for the account; Junk -> Work: the same message becomes ham."""
    move(learner, 1, "Junk")
    assert learner.check.db.totals(ALICE.id) == (1, 0)
    assert learner.check.db.totals(GLOBAL) == (0, 0)
    move(learner, 2, "Work")
    assert learner.check.db.totals(ALICE.id) == (0, 1)
    move(learner, 1, "Junk", moved=False)  # a COPY counts like a MOVE
    assert learner.check.db.totals(ALICE.id) == (1, 0)


def test_moves_that_say_nothing_train_nothing(learner):
    """Junk -> Trash (deleting spam), INBOX -> Work, Junk -> Junk and unknown names train nothing."""
    for source, dest in ((2, "Trash"), (1, "Work"), (2, "Junk"), (1, "Nowhere"), (99, "Junk")):
        move(learner, source, dest)
    assert learner.check.db.totals(ALICE.id) == (0, 0)


def test_without_per_user_the_global_database_learns(learner):
    """per_user = no: a user's Junk move trains the global database."""
    learner.check.per_user = False
    move(learner, 1, "junk".capitalize())
    assert learner.check.db.totals(GLOBAL) == (1, 0)


def test_learned_tokens_match_what_scoring_saw(learner):
    """The stored copy trains without our Received/Return-Path, with check.auth's results
    taken from our own Authentication-Results field."""
    move(learner, 1, "Junk")
    db = learner.check.db
    counts, nspam, _ = db.lookup(["auth:dmarc:fail", "auth:spf:fail", "received:remote.test",
                                  "subject:cheap"], [ALICE.id])
    assert {"auth:dmarc:fail", "auth:spf:fail", "subject:cheap"} <= set(counts)
    assert "received:remote.test" not in counts


def test_strip_own_prepend_removes_only_our_top_fields():
    """Return-Path and our Received go; a Received by another host and the rest stay."""
    stripped = strip_own_prepend(MESSAGE, HOST)
    assert stripped.startswith(b"Authentication-Results:")
    foreign = b"Received: from a by other.host; date\r\nSubject: s\r\n\r\nb"
    assert strip_own_prepend(foreign, HOST) == foreign


def test_async_store_calls_copy_observers_after_commit(tmp_path):
    """AsyncStore.observe_copies: the callback sees account, source, dest, CopyResult and moved."""
    from mailserverd.store.service import AsyncStore

    class Reactor:
        def callFromThread(self, fn, *args):
            fn(*args)

    async_store = AsyncStore(None, Reactor())
    seen = []
    async_store.observe_copies(lambda *args: seen.append(args))
    result = CopyResult(uidvalidity=3, pairs=[(1, 2)])
    assert async_store._copied(result, ALICE, 1, "Junk", True) is result
    assert seen == [(ALICE, 1, "Junk", result, True)]
