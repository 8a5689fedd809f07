"""The outbound queue on SQLite and on a real PostgreSQL server: enqueue, claims,
leases, results, admin verbs, statistics; and the pure retry schedule."""

from __future__ import annotations

import threading
from collections import namedtuple

import pytest
from sqlalchemy import create_engine, event

from mailserverd.outbound import queue, queueadmin, schedule
from mailserverd.store import make_engine, schema

Result = namedtuple("Result", "recipient status code enhanced text remote_host")
BODY = b"From: alice@example.test\r\nTo: x@remote.test\r\nSubject: hi\r\n\r\nHello.\r\n"
T0 = 1_800_000_000.0
LIFETIME = 5 * 86400.0


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/directory.sqlite3"
    else:
        url = request.getfixturevalue("pg_database")()
    engine = make_engine(url)
    with engine.begin() as conn:
        schema.migrate(conn, "directory")
    yield engine
    engine.dispose()


def message(*addresses, sender="alice@example.test", message_id=None, at=T0, **kwargs):
    return queue.NewMessage(id=message_id or queue.new_queue_id(), sender=sender, body=BODY,
                            recipients=tuple(queue.QueuedRecipient(a) if isinstance(a, str) else a
                                             for a in addresses),
                            created_at=at, **kwargs)


def ok(address):
    return Result(address, "delivered", 250, "2.0.0", "OK", "mx.remote.test")


def deferred(address):
    return Result(address, "deferred", 451, "4.3.0", "try later", "mx.remote.test")


def failed(address):
    return Result(address, "failed", 550, "5.1.1", "no such user", "mx.remote.test")


def test_enqueue_makes_one_delivery_per_domain(engine):
    """Recipients are grouped by domain (case-insensitive): one claimable row per domain."""
    ids = queue.enqueue(engine, message("a@one.test", "b@ONE.test", "c@two.test"), LIFETIME)
    assert len(ids) == 2
    claimed = queue.claim(engine, "n1", T0, 10)
    assert sorted((c.domain, len(c.recipients)) for c in claimed) == [("one.test", 2), ("two.test", 1)]
    assert claimed[0].body == BODY and claimed[0].sender == "alice@example.test"


def test_enqueue_keeps_dsn_parameters(engine):
    """NOTIFY, ORCPT, RET and ENVID survive the queue for the DSN built later."""
    recipient = queue.QueuedRecipient("x@remote.test", "SUCCESS,FAILURE", "rfc822;X@remote.test")
    queue.enqueue(engine, message(recipient, ret="HDRS", envid="env-1", smtputf8=True), LIFETIME)
    [item] = queue.claim(engine, "n1", T0, 10)
    assert item.recipients == (recipient,)
    assert (item.ret, item.envid, item.smtputf8, item.eight_bit) == ("HDRS", "env-1", True, False)
    assert item.expires_at == T0 + LIFETIME


def test_claim_takes_only_due_rows(engine):
    """A delivery whose next attempt is in the future is not claimed."""
    queue.enqueue(engine, message("x@remote.test", at=T0 + 60), LIFETIME)
    assert queue.claim(engine, "n1", T0, 10) == []
    assert len(queue.claim(engine, "n1", T0 + 60, 10)) == 1


def test_claimed_rows_are_not_claimed_again_until_the_lease_expires(engine):
    """A leased row is invisible to other claimers; after the lease it is claimable again."""
    queue.enqueue(engine, message("x@remote.test"), LIFETIME)
    assert len(queue.claim(engine, "n1", T0, 10, lease=100)) == 1
    assert queue.claim(engine, "n2", T0 + 50, 10) == []
    [again] = queue.claim(engine, "n2", T0 + 101, 10)
    assert again.token.startswith("n2-")


def test_claim_respects_limit(engine):
    """At most `limit` rows per claim, oldest due first."""
    for n in range(5):
        queue.enqueue(engine, message("x@remote.test", at=T0 + n), LIFETIME)
    first = queue.claim(engine, "n1", T0 + 10, 2)
    assert [c.created_at for c in first] == [T0, T0 + 1]
    assert len(queue.claim(engine, "n1", T0 + 10, 10)) == 3


def test_two_claimers_never_get_the_same_row(engine):
    """Concurrent claimers (threads, separate connections) split the rows, never share one."""
    for _ in range(60):
        queue.enqueue(engine, message("x@remote.test"), LIFETIME)
    taken: list[list[int]] = [[], [], []]
    start = threading.Barrier(3)

    def run(slot):
        start.wait()
        while True:
            got = queue.claim(engine, f"n{slot}", T0, 4)
            if not got:
                return
            taken[slot].extend(c.delivery_id for c in got)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    everything = taken[0] + taken[1] + taken[2]
    assert len(everything) == 60 and len(set(everything)) == 60


def test_held_rows_wait_for_release(engine):
    """A held message (its submission not yet acknowledged) is claimable only after release()."""
    item = message("x@remote.test")
    queue.enqueue(engine, item, LIFETIME, held=True)
    assert queue.claim(engine, "n1", T0, 10) == []
    assert queue.release(engine, item.id) == 1
    assert len(queue.claim(engine, "n1", T0, 10)) == 1


def test_stale_held_messages_are_purged(engine):
    """Held messages older than the cutoff (their client got no 250) are dropped; newer ones stay."""
    old, new = message("x@remote.test", at=T0), message("x@remote.test", at=T0 + 100)
    queue.enqueue(engine, old, LIFETIME, held=True)
    queue.enqueue(engine, new, LIFETIME, held=True)
    assert queue.purge_stale_held(engine, T0 + 50) == 1
    assert [e.message_id for e in queueadmin.list_queue(engine, T0)] == [new.id]


def test_delivered_everywhere_removes_message_and_body(engine):
    """When every recipient is final the delivery and the message (its body) are gone."""
    queue.enqueue(engine, message("x@remote.test", "y@remote.test"), LIFETIME)
    [item] = queue.claim(engine, "n1", T0, 10)
    outcome = queue.Outcome(results=(ok("x@remote.test"), failed("y@remote.test")))
    assert queue.record(engine, item, outcome, T0 + 1)
    assert queueadmin.list_queue(engine, T0) == []
    assert queueadmin.stats(engine, T0, 0).messages == 0


def test_deferred_recipients_stay_with_the_retry_time(engine):
    """A deferred recipient stays pending with attempts+1 and the given retry time; a delivered one
    is not tried again."""
    queue.enqueue(engine, message("x@remote.test", "y@remote.test"), LIFETIME)
    [item] = queue.claim(engine, "n1", T0, 10)
    outcome = queue.Outcome(results=(ok("x@remote.test"), deferred("y@remote.test")),
                            retry_at=T0 + 60, last_error="451 4.3.0 try later")
    assert queue.record(engine, item, outcome, T0)
    assert queue.claim(engine, "n1", T0 + 59, 10) == []
    [again] = queue.claim(engine, "n1", T0 + 60, 10)
    assert [r.address for r in again.recipients] == ["y@remote.test"] and again.attempts == 1
    [entry] = queueadmin.list_queue(engine, T0)
    assert entry.last_error == "451 4.3.0 try later"


def test_record_with_a_lost_lease_writes_nothing(engine):
    """A worker whose lease expired and was re-claimed cannot overwrite the new holder's row."""
    queue.enqueue(engine, message("x@remote.test"), LIFETIME)
    [first] = queue.claim(engine, "n1", T0, 10, lease=10)
    [second] = queue.claim(engine, "n2", T0 + 11, 10)
    assert not queue.record(engine, first, queue.Outcome(results=(ok("x@remote.test"),)), T0 + 12)
    assert queue.record(engine, second, queue.Outcome(results=(ok("x@remote.test"),)), T0 + 12)


def test_release_claims_gives_rows_back(engine):
    """Leases given back without an attempt make the rows claimable at once, attempts unchanged."""
    queue.enqueue(engine, message("x@remote.test"), LIFETIME)
    claimed = queue.claim(engine, "n1", T0, 10)
    assert queue.release_claims(engine, claimed) == 1
    [again] = queue.claim(engine, "n2", T0, 10)
    assert again.attempts == 0


def test_record_enqueues_dsns_in_the_same_transaction(engine):
    """A DSN for a remote sender is queued (null sender) together with the result."""
    queue.enqueue(engine, message("x@remote.test", sender="carol@far.test"), LIFETIME)
    [item] = queue.claim(engine, "n1", T0, 10)
    dsn = queue.NewMessage(id=queue.new_queue_id(), sender="", body=b"report", created_at=T0,
                           recipients=(queue.QueuedRecipient("carol@far.test"),))
    queue.record(engine, item, queue.Outcome(results=(failed("x@remote.test"),), dsns=(dsn,)), T0)
    [entry] = queueadmin.list_queue(engine, T0)
    assert (entry.message_id, entry.sender, entry.domain) == (dsn.id, "", "far.test")


def test_hard_bounces_suppress_for_the_window(engine):
    """An address with a hard bounce is suppressed for `window` seconds; soft bounces never."""
    queue.enqueue(engine, message("x@remote.test", "y@remote.test"), LIFETIME)
    [item] = queue.claim(engine, "n1", T0, 10)
    bounces = (("X@remote.test", queue.HARD, 550, "5.1.1", "no such user"),
               ("y@remote.test", queue.SOFT, 552, "5.2.2", "mailbox full"))
    queue.record(engine, item, queue.Outcome(results=(failed("x@remote.test"), failed("y@remote.test")),
                                             bounces=bounces), T0)
    assert queue.is_suppressed(engine, "x@REMOTE.test", T0 + 100, 3600)
    assert not queue.is_suppressed(engine, "x@remote.test", T0 + 3601, 3600)
    assert not queue.is_suppressed(engine, "y@remote.test", T0 + 100, 3600)
    assert queueadmin.bounce_counts(engine) == {"hard": 1, "soft": 1}


def test_retry_and_flush_make_rows_due_now(engine):
    """queue retry ID makes that message due; queue flush makes every waiting row due."""
    a, b = message("x@remote.test"), message("y@remote.test")
    for item in (a, b):
        queue.enqueue(engine, item, LIFETIME)
    for claimed in queue.claim(engine, "n1", T0, 10):
        queue.record(engine, claimed, queue.Outcome(results=(deferred(claimed.recipients[0].address),),
                                                    retry_at=T0 + 3600), T0)
    assert queueadmin.retry(engine, a.id, T0 + 10) == 1
    assert [c.message_id for c in queue.claim(engine, "n1", T0 + 10, 10)] == [a.id]
    assert queueadmin.flush(engine, T0 + 20) == 1
    assert [c.message_id for c in queue.claim(engine, "n1", T0 + 20, 10)] == [b.id]
    assert queueadmin.retry(engine, "NOSUCHID", T0) == 0


def test_delete_removes_message_and_recipients(engine):
    """queue delete ID removes every delivery of the message, silently."""
    item = message("x@one.test", "y@two.test")
    queue.enqueue(engine, item, LIFETIME)
    assert queueadmin.delete_message(engine, item.id)
    assert not queueadmin.delete_message(engine, item.id)
    assert queue.claim(engine, "n1", T0, 10) == []


def test_show_lists_deliveries_recipients_and_headers(engine):
    """queue show ID gives the envelope, per-domain state, per-recipient state and the headers."""
    item = message("x@one.test", queue.QueuedRecipient("y@two.test", "NEVER", None), envid="E1")
    queue.enqueue(engine, item, LIFETIME)
    detail = queueadmin.show(engine, item.id, T0)
    assert detail.envid == "E1" and detail.headers.endswith(b"Subject: hi\r\n")
    assert [(entry.domain, [r.address for r in rcpts]) for entry, rcpts in detail.deliveries] == [
        ("one.test", ["x@one.test"]), ("two.test", ["y@two.test"])]
    assert detail.deliveries[1][1][0].notify == "NEVER"
    assert queueadmin.show(engine, "NOSUCHID", T0) is None


def test_stats_count_states_and_oldest_age(engine):
    """Statistics: rows per state (queued, deferred, active, held), messages, oldest age."""
    queue.enqueue(engine, message("a@one.test", at=T0), LIFETIME)
    queue.enqueue(engine, message("b@two.test", at=T0 + 10), LIFETIME)
    queue.enqueue(engine, message("c@three.test", at=T0 + 20), LIFETIME, held=True)
    queue.enqueue(engine, message("d@four.test", at=T0 + 30), LIFETIME)
    [first, second] = queue.claim(engine, "n1", T0 + 30, 2)
    queue.record(engine, first, queue.Outcome(results=(deferred("a@one.test"),), retry_at=T0 + 90), T0 + 30)
    stats = queueadmin.stats(engine, T0 + 40, 0)
    assert stats.by_state == {"queued": 1, "deferred": 1, "active": 1, "held": 1}
    assert stats.deliveries == 4 and stats.messages == 4 and stats.oldest_age == 40
    assert queueadmin.stats(engine, T0, 0).by_state["active"] == 1


def test_sqlite_claims_do_not_collide_across_engines(tmp_path):
    """Two engines on one SQLite file (two processes, as far as SQLite knows) split the rows."""
    url = f"sqlite:///{tmp_path}/shared.sqlite3"
    engines = [make_engine(url), make_engine(url)]
    with engines[0].begin() as conn:
        schema.migrate(conn, "directory")
    for _ in range(20):
        queue.enqueue(engines[0], message("x@remote.test"), LIFETIME)
    seen = []
    for turn in range(20):
        seen += [c.delivery_id for c in queue.claim(engines[turn % 2], f"n{turn % 2}", T0, 3)]
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 20
    for item in engines:
        item.dispose()


# -- the schedule (pure) ----------------------------------------------------------

def test_backoff_follows_the_documented_steps():
    """1m, 5m, 15m, 30m, 1h, 2h, 4h, then every 4h."""
    delays = [schedule.backoff_delay(n) for n in range(1, 10)]
    assert delays == [60, 300, 900, 1800, 3600, 7200, 14400, 14400, 14400]


def test_next_attempt_never_passes_expiry():
    """The last retry lands on the expiry instant; at or after it the message gives up (None)."""
    lifetime = 3 * 3600.0
    assert schedule.next_attempt_at(T0, 6, T0 + 2.5 * 3600, lifetime) == T0 + lifetime
    assert schedule.next_attempt_at(T0, 7, T0 + lifetime, lifetime) is None


def test_full_schedule_for_five_days():
    """A message that never succeeds is tried at the backoff steps, then 4-hourly, until 5 days."""
    times = schedule.schedule(T0, LIFETIME)
    offsets = [t - T0 for t in times]
    assert offsets[:8] == [0, 60, 360, 1260, 3060, 6660, 13860, 28260]
    assert offsets[-1] == LIFETIME
    assert all(b - a <= 14400 for a, b in zip(offsets, offsets[1:]))
    assert len(times) == 37


def test_batch_claim_takes_due_rows_in_order_then_the_rest(engine):
    """A claim takes up to `limit` due rows, oldest due first; the next claim continues after
    them (the leased rows are skipped by the index, not re-read), and none is taken twice."""
    ids = []
    for number in range(25):
        item = message(f"u{number}@remote{number}.test", at=T0 + number)
        queue.enqueue(engine, item, LIFETIME)
        ids.append(item.id)
    first = queue.claim(engine, "n1", T0 + 100, 10)
    second = queue.claim(engine, "n1", T0 + 100, 10)
    third = queue.claim(engine, "n1", T0 + 100, 10)
    assert [c.message_id for c in first + second + third] == ids
    assert (len(first), len(second), len(third)) == (10, 10, 5)
    assert queue.claim(engine, "n1", T0 + 100, 10) == []
    assert all(c.due_at <= T0 + 100 for c in first)


def test_claimed_rows_come_back_when_the_lease_ends(engine):
    """A claim pushes the row's due time to the lease end: claimable again exactly then (a dead
    node's work is not lost), and release_claims makes it due at once."""
    queue.enqueue(engine, message("x@remote.test"), LIFETIME)
    [item] = queue.claim(engine, "n1", T0, 10, lease=60)
    assert queue.claim(engine, "n2", T0 + 59, 10) == []
    [again] = queue.claim(engine, "n2", T0 + 61, 10, lease=60)
    assert queue.release_claims(engine, [again]) == 1
    assert [c.message_id for c in queue.claim(engine, "n3", T0 + 62, 10)] == [item.message_id]


def test_record_many_writes_every_outcome_in_one_transaction(engine):
    """record_many records several attempts in one commit, one answer each; a lost lease
    answers False for that item only."""
    for number in range(3):
        queue.enqueue(engine, message(f"x{number}@remote.test"), LIFETIME)
    claimed = queue.claim(engine, "n1", T0, 10, lease=10)
    [stolen] = [c for c in claimed if c.recipients[0].address == "x2@remote.test"]
    queue.release_claims(engine, [stolen])
    queue.claim(engine, "n2", T0, 10)  # n2 now holds x2
    commits = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    answers = queue.record_many(engine, [(c, queue.Outcome(results=(ok(c.recipients[0].address),)))
                                         for c in claimed], T0 + 1)
    assert answers == [c is not stolen for c in claimed]
    assert len(commits) == 1
    assert [e.message_id for e in queueadmin.list_queue(engine, T0 + 1)] == [stolen.message_id]


def test_claim_uses_the_due_index(engine):
    """The claim's due-rows query is served by an index (migration step: ix_outbound_claim)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            names = {row[1] for row in conn.execute(text("PRAGMA index_list(outbound_deliveries)"))}
        else:
            names = set(conn.execute(text(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'outbound_deliveries'")).scalars())
    assert {"ix_outbound_claim", "ix_outbound_lease"} <= names
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            plan = " ".join(str(row[-1]) for row in conn.execute(text(
                "EXPLAIN QUERY PLAN SELECT id FROM outbound_deliveries WHERE held = 0 AND "
                "next_attempt_at <= 1 ORDER BY next_attempt_at, id LIMIT 16")))
        assert "ix_outbound_claim" in plan and "TEMP B-TREE" not in plan
