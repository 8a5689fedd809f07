"""The spam token database (mailserverd/spam/tokendb.py) on SQLite and PostgreSQL:
training, retraining without double counting, per-user owners, the revision-checked
cache, and the directory migration that creates its tables."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, event, inspect

from mailserverd.mailfiles import iter_source
from mailserverd.spam.tokendb import ALREADY, GLOBAL, MOVED, TRAINED, TokenDB, token_hash
from mailserverd.store import schema

DATA = os.path.join(os.path.dirname(__file__), "..", "data")


def messages(name: str, count: int) -> list[bytes]:
    found = [message.raw for message in iter_source(os.path.join(DATA, name)) if message.error is None]
    return found[:count]


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/directory.sqlite3"
    else:
        url = request.getfixturevalue("pg_database")()
    engine = create_engine(url)
    with engine.begin() as conn:
        schema.migrate(conn, "directory")  # the migration step creates the spam tables
    yield engine
    engine.dispose()


def test_migration_creates_the_spam_tables(engine):
    """The directory schema's spam step made spam_tokens, spam_totals and spam_trained."""
    names = set(inspect(engine).get_table_names())
    assert {"spam_tokens", "spam_totals", "spam_trained"} <= names


def test_train_counts_each_message_once_and_moves_it_between_classes(engine):
    """Retraining the same message is a no-op; training it as the other class moves its counts."""
    db = TokenDB(engine)
    spam = messages("spam-50.mbox", 3)
    assert db.train_many([(raw, True) for raw in spam]) == [TRAINED] * 3
    assert db.totals() == (3, 0)
    assert db.train(spam[0], True) == ALREADY
    assert db.totals() == (3, 0)
    before, _clues, _, _ = db.score(spam[0])
    assert db.train(spam[0], False) == MOVED
    assert db.totals() == (2, 1)
    after, _clues, nspam, nham = db.score(spam[0])
    assert (nspam, nham) == (2, 1) and after < before
    assert db.train(spam[0], True) == MOVED
    assert db.totals() == (3, 0)


def test_one_batch_with_a_duplicate_counts_it_once(engine):
    """An mbox holding the same message twice trains it once."""
    db = TokenDB(engine)
    raw = messages("ham-200.mbox", 1)[0]
    assert db.train_many([(raw, False), (raw, False)]) == [TRAINED, ALREADY]
    assert db.totals() == (0, 1)


def test_per_user_databases_are_separate_and_summed_when_scoring(engine):
    """Account 7's training is invisible to the global database and to account 8."""
    db = TokenDB(engine)
    spam = messages("spam-50.mbox", 5)
    db.train_many([(raw, True) for raw in spam], owner=7)
    assert db.totals(7) == (5, 0) and db.totals(GLOBAL) == (0, 0)
    assert db.score(spam[0], owners=[GLOBAL])[0] == 0.5
    assert db.score(spam[0], owners=[GLOBAL, 8])[0] == 0.5
    assert db.score(spam[0], owners=[GLOBAL, 7])[0] > 0.9


def test_scoring_uses_one_token_select_and_then_the_cache(tmp_path):
    """A second scoring of the same message reads only the totals (cached token counts);
    training by another TokenDB (another process) bumps the revision and is seen at once."""
    engine = create_engine(f"sqlite:///{tmp_path}/d.sqlite3")
    with engine.begin() as conn:
        schema.migrate(conn, "directory")
    scorer, trainer = TokenDB(engine), TokenDB(engine, cache_size=0)
    spam, ham = messages("spam-50.mbox", 10), messages("ham-200.mbox", 10)
    trainer.train_many([(raw, True) for raw in spam[:9]] + [(raw, False) for raw in ham[:9]])
    statements = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    scorer.score(spam[9])
    token_selects = [s for s in statements if "spam_tokens" in s]
    assert len(token_selects) == 1
    statements.clear()
    first = scorer.score(spam[9])[0]
    assert not [s for s in statements if "spam_tokens" in s]
    trainer.train(spam[9], True)
    assert scorer.score(spam[9])[0] >= first
    assert scorer.lookup([], [GLOBAL])[1:] == (10, 9)


def test_token_hash_is_a_signed_64_bit_integer():
    """Token keys fit BIGINT on both engines and differ for different tokens."""
    values = {token_hash(f"t{i}") for i in range(1000)}
    assert len(values) == 1000
    assert all(-2**63 <= value < 2**63 for value in values)


def test_totals_ttl_scores_without_sql_and_sees_training(tmp_path):
    """With totals_ttl, a message whose tokens are cached costs no SQL at all; training by
    this TokenDB is seen by the next message, training by another (another process) once
    totals_ttl has passed; cached_totals answers only while fresh, without SQL."""
    engine = create_engine(f"sqlite:///{tmp_path}/d.sqlite3")
    with engine.begin() as conn:
        schema.migrate(conn, "directory")
    now = [100.0]
    scorer = TokenDB(engine, totals_ttl=2.0, monotonic=lambda: now[0])
    trainer = TokenDB(engine, cache_size=0)
    spam, ham = messages("spam-50.mbox", 10), messages("ham-200.mbox", 10)
    assert scorer.cached_totals([GLOBAL]) is None  # never read yet
    assert scorer.totals_of([GLOBAL]) == {GLOBAL: (0, 0)}
    assert scorer.cached_totals([GLOBAL]) == {GLOBAL: (0, 0)}
    trainer.train_many([(raw, True) for raw in spam[:9]] + [(raw, False) for raw in ham[:9]])
    assert scorer.lookup([], [GLOBAL])[1:] == (0, 0)  # within totals_ttl: the cached figures
    now[0] += 2.0
    assert scorer.cached_totals([GLOBAL]) is None
    assert scorer.lookup([], [GLOBAL])[1:] == (9, 9)
    scorer.score(spam[9])
    statements = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    first = scorer.score(spam[9])[0]
    assert statements == []
    scorer.train(spam[9], True)  # our own training: seen at once
    statements.clear()
    assert scorer.lookup([], [GLOBAL])[1:] == (10, 9)
    assert scorer.score(spam[9])[0] >= first
