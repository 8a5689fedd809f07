"""The indexer's start-up check, queue replay and metrics (mailserverd/search/indexer.py).

An index that lacks messages the store has, or holds messages the store no
longer has, is brought level by the start-up check (it queues the
difference); until the check is done searches are not narrowed (None, the
exact scan). `reindex` without an address queues every account.
"""

from __future__ import annotations

import pytest
from sqlalchemy import delete

from mailserverd.imap.search import SearchKey
from mailserverd.search import indexer
from mailserverd.search.indexer import SearchService, reindex, render_metrics
from mailserverd.search.query import candidates_in_thread
from mailserverd.store import Store, schema, searchqueue
from mailserverd.store.api import DeliveryTarget
from mailserverd.store.mail import Delivery


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/directory.db", [f"sqlite:///{tmp_path}/shard-0.db"],
                  str(tmp_path / "blobs"))
    store.directory.add_domain("example.test")
    store.account = store.add_account("user@example.test", "pw")
    store.other = store.add_account("other@example.test", "pw")
    yield store
    store.close()


def _deliver(store, subject, account=None):
    raw = f"Subject: {subject}\r\nFrom: x@example.test\r\n\r\nbody {subject}\r\n".encode()
    item = Delivery(raw, [DeliveryTarget(account=account or store.account)])
    store.mail.deliver_many([item])
    return item.result[0].message_id


def _drain(service):
    while service.drain_once(service.indexes[0]):
        pass


def test_startup_check_repairs_a_stale_index(store, tmp_path):
    """Messages stored without queue rows (a restored store) get indexed; a document
    whose message vanished without a queue row is removed; before the check, no narrowing."""
    service = SearchService(store, str(tmp_path), use_process=False)
    service._check(service.indexes[0])
    kept = _deliver(store, "alphaword")
    _drain(service)
    lost = _deliver(store, "betaword")
    with store.shard_engines[0].begin() as conn:
        conn.execute(delete(searchqueue.search_queue))  # as if the queue rows were lost
    _drain(service)
    with store.shard_engines[0].begin() as conn:  # the message row goes without a "del"
        conn.execute(delete(schema.mailbox_messages).where(schema.mailbox_messages.c.message_id == kept))
        conn.execute(delete(schema.messages).where(schema.messages.c.id == kept))
    fresh = SearchService(store, str(tmp_path), use_process=False)
    program = SearchKey("BODY", ("word",))
    assert candidates_in_thread(store.mail, fresh, store.account, program) is None  # not checked yet
    fresh._check(fresh.indexes[0])
    assert candidates_in_thread(store.mail, fresh, store.account, program) >= {lost}
    _drain(fresh)
    assert candidates_in_thread(store.mail, fresh, store.account, program) == {lost}
    assert fresh.indexes[0].indexed_ids() == {lost}


def test_reindex_all_accounts_and_metrics(store, tmp_path, monkeypatch):
    """`reindex` with no address queues every account's messages; /metrics text reports
    the queue depth, then zero once drained, and the documents indexed."""
    service = SearchService(store, str(tmp_path), use_process=False)
    monkeypatch.setattr(indexer, "_SERVICE", service)
    service._check(service.indexes[0])
    _deliver(store, "one")
    _deliver(store, "two", store.other)
    _drain(service)
    assert reindex(store, None) == 2
    text = render_metrics(fresh=True)
    assert "mailserverd_search_queue_depth 4" in text  # two resets, two adds
    _drain(service)
    text = render_metrics(fresh=True)
    assert "mailserverd_search_queue_depth 0" in text
    assert "mailserverd_search_documents 2" in text
    assert "mailserverd_search_lag_seconds 0.000" in text


def test_idle_merge_keeps_answers(store, tmp_path, monkeypatch):
    """Past MERGE_SEGMENTS segments, the idle step merges the smallest; lookups answer the same."""
    from mailserverd.search import index as index_module
    monkeypatch.setattr(index_module, "MERGE_SEGMENTS", 4)
    monkeypatch.setattr(indexer, "MERGE_SEGMENTS", 4)
    service = SearchService(store, str(tmp_path), use_process=False)
    service._check(service.indexes[0])
    ids = []
    for number in range(7):
        ids.append(_deliver(store, f"word{number}"))
        service.drain_once(service.indexes[0])  # one segment per message
    program = SearchKey("SUBJECT", ("word",))
    assert service.indexes[0].segment_count() == 7
    assert candidates_in_thread(store.mail, service, store.account, program) == set(ids)
    assert service.drain_once(service.indexes[0]) is False  # idle: merges
    assert service.indexes[0].segment_count() <= 3
    assert candidates_in_thread(store.mail, service, store.account, program) == set(ids)
