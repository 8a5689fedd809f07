"""EmailSubmission/queryChanges (RFC 8621 7.4, RFC 8620 5.6) on records written
straight through the store: applying the answer to the old results gives the
new ones, for filters and sorts, across creations and destroys."""

from __future__ import annotations

import pytest

from mailserverd.store import submissions
from tests.support.jmapstore import Session, make

ENVELOPE = {"mailFrom": {"email": "alice@example.test", "parameters": None},
            "rcptTo": [{"email": "bob@example.test", "parameters": None}]}


@pytest.fixture
def env(tmp_path):
    store, accounts = make(tmp_path)
    alice = accounts["alice@example.test"]
    yield store, alice, Session(store, alice)
    store.store.close()


def record(store, account, email_id, send_at):
    return submissions.record(store.store.directory_engine, account.id, 1, email_id, email_id, ENVELOPE,
                              send_at, {}, "q1")


def error(session, name, args) -> str:
    response = session.call(name, args)
    assert response[0] == "error", response
    return response[1]["type"]


def apply_changes(ids, answer):
    """The client side of RFC 8620 5.6: drop removed, insert added at their index."""
    kept = [i for i in ids if i not in set(answer["removed"])]
    for item in sorted(answer["added"], key=lambda a: a["index"]):
        kept.insert(item["index"], item["id"])
    return kept


QUERIES = [{}, {"sort": [{"property": "sentAt", "isAscending": False}]},
           {"filter": {"emailIds": ["e2", "e4", "e5"]}, "sort": [{"property": "emailId"}]},
           {"filter": {"after": "2023-11-14T22:13:21Z"}}]


@pytest.mark.parametrize("query", QUERIES)
def test_query_changes_rebuild_the_current_results(env, query):
    """canCalculateChanges is true; after creations and a destroy, old results + changes
    = new results, total included; the answer's states are the query states."""
    store, alice, session = env
    for n in (1, 2, 3):
        record(store, alice, n, 1_700_000_000 + n)
    before = session.ok("EmailSubmission/query", dict(query))
    assert before["canCalculateChanges"] is True
    for n in (4, 5):
        record(store, alice, n, 1_700_000_000 - n)
    submissions.destroy(store.store.directory_engine, alice.id, [2])
    after = session.ok("EmailSubmission/query", dict(query))
    changes = session.ok("EmailSubmission/queryChanges", dict(
        query, sinceQueryState=before["queryState"], calculateTotal=True))
    assert changes["oldQueryState"] == before["queryState"]
    assert changes["newQueryState"] == after["queryState"] != before["queryState"]
    assert apply_changes(before["ids"], changes) == after["ids"]
    assert changes["total"] == len(after["ids"])
    again = session.ok("EmailSubmission/queryChanges", dict(query, sinceQueryState=after["queryState"]))
    assert again["removed"] == [] and again["added"] == []


def test_query_changes_errors(env):
    """A state never given is cannotCalculateChanges; more changes than maxChanges is
    tooManyChanges; an unknown filter is unsupportedFilter, a
    mistyped argument invalidArguments."""
    store, alice, session = env
    state = session.ok("EmailSubmission/query", {})["queryState"]
    for n in (1, 2, 3):
        record(store, alice, n, 1_700_000_000 + n)
    assert error(session, "EmailSubmission/queryChanges", {"sinceQueryState": "999"}) == "cannotCalculateChanges"
    assert error(session, "EmailSubmission/queryChanges", {"sinceQueryState": "x"}) == "cannotCalculateChanges"
    assert error(session, "EmailSubmission/queryChanges",
                         {"sinceQueryState": state, "maxChanges": 2}) == "tooManyChanges"
    assert error(session, "EmailSubmission/queryChanges",
                         {"sinceQueryState": state, "filter": {"bogus": 1}}) == "unsupportedFilter"
    assert error(session, "EmailSubmission/queryChanges", {"sinceQueryState": 3}) == "invalidArguments"
    assert error(session, "EmailSubmission/queryChanges", {"sinceQueryState": state, "upToId": 5}) == "invalidArguments"


def test_another_account_sees_no_changes(env):
    """Bob's queryChanges never lists Alice's submissions."""
    store, alice, _session = env
    bob = Session(store, store.store.directory.require_account("bob@example.test"))
    state = bob.ok("EmailSubmission/query", {})["queryState"]
    record(store, alice, 1, 1_700_000_000)
    changes = bob.ok("EmailSubmission/queryChanges", {"sinceQueryState": state})
    assert changes["removed"] == [] and changes["added"] == []
