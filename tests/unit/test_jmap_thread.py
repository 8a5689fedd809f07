"""Thread/get, Thread/changes, Email threadId and Email/query collapseThreads
(RFC 8621 3, 4.4) on the conversations the store assigns at delivery
(messages.thread_id, store/threads.py)."""

from __future__ import annotations

import pytest

from tests.support.jmapstore import Session, make
from tests.unit.test_jmap_email import deliver

ROOT = (b"From: bob@remote.test\r\nSubject: Plans\r\nMessage-ID: <root@remote.test>\r\n\r\nroot\r\n")
REPLY1 = (b"From: carol@remote.test\r\nSubject: Re: Plans\r\nMessage-ID: <r1@remote.test>\r\n"
          b"In-Reply-To: <root@remote.test>\r\nReferences: <root@remote.test>\r\n\r\none\r\n")
REPLY2 = (b"From: bob@remote.test\r\nSubject: Re: Plans\r\nMessage-ID: <r2@remote.test>\r\n"
          b"In-Reply-To: <r1@remote.test>\r\nReferences: <root@remote.test> <r1@remote.test>\r\n\r\ntwo\r\n")
REPLY3 = (b"From: dave@remote.test\r\nSubject: Re: Plans\r\nMessage-ID: <r3@remote.test>\r\n"
          b"In-Reply-To: <r2@remote.test>\r\nReferences: <root@remote.test> <r2@remote.test>\r\n\r\nthree\r\n")
OTHER = b"From: eve@remote.test\r\nSubject: Unrelated\r\nMessage-ID: <x@remote.test>\r\n\r\nother\r\n"
DAY = 1_790_000_000.0


@pytest.fixture
def env(tmp_path):
    store, accounts = make(tmp_path, users=("alice@example.test", "bob@example.test"))
    alice = accounts["alice@example.test"]
    yield store, alice, Session(store, alice), Session(store, accounts["bob@example.test"])
    store.store.close()


def chain(store, alice):
    """The root, two replies whose receivedAt order differs from delivery order, and an unrelated mail."""
    root, _ = deliver(store, alice, ROOT, at=DAY)
    late, _ = deliver(store, alice, REPLY1, at=DAY + 300)
    early, _ = deliver(store, alice, REPLY2, at=DAY + 100)
    other, _ = deliver(store, alice, OTHER, at=DAY + 200)
    return root, late, early, other


def thread_ids(session, ids):
    got = session.ok("Email/get", {"ids": ids, "properties": ["threadId"]})["list"]
    return {e["id"]: e["threadId"] for e in got}


def test_a_reply_chain_is_one_thread_sorted_by_received_at(env):
    """The 3 messages of a reply chain share a threadId whose Thread lists them oldest
    receivedAt first (RFC 8621 3); an unrelated message has a Thread of its own;
    unknown and other accounts' thread ids are notFound."""
    store, alice, session, bob = env
    root, late, early, other = chain(store, alice)
    threads = thread_ids(session, [root, late, early, other])
    assert threads[root] == threads[late] == threads[early] != threads[other]
    got = session.ok("Thread/get", {"ids": [threads[root], threads[other], "t999999"]})
    assert got["list"] == [{"id": threads[root], "emailIds": [root, early, late]},
                           {"id": threads[other], "emailIds": [other]}]
    assert got["notFound"] == ["t999999"]
    everything = session.ok("Thread/get", {"ids": None})["list"]
    assert sorted(t["id"] for t in everything) == sorted({threads[root], threads[other]})
    assert bob.ok("Thread/get", {"ids": [threads[root]]})["notFound"] == [threads[root]]


def test_collapse_threads_keeps_the_first_email_of_each_thread(env):
    """Email/query collapseThreads: true keeps one Email per Thread, the first in the
    query's sort order (RFC 8621 4.4); false keeps all. A collapsed query says
    canCalculateChanges false."""
    store, alice, session, _bob = env
    root, late, early, other = chain(store, alice)
    newest = [{"property": "receivedAt", "isAscending": False}]
    got = session.ok("Email/query", {"sort": newest, "collapseThreads": True, "calculateTotal": True})
    assert got["ids"] == [late, other] and got["total"] == 2 and got["collapseThreads"] is True
    assert got["canCalculateChanges"] is False  # a listed Email hangs on the rest of its Thread
    got = session.ok("Email/query", {"sort": [{"property": "receivedAt"}], "collapseThreads": True})
    assert got["ids"] == [root, other]
    assert len(session.ok("Email/query", {"collapseThreads": False})["ids"]) == 4


def test_thread_changes_report_a_new_reply_and_a_destroyed_thread(env):
    """Thread/changes: a new reply updates its existing Thread; a new unrelated message
    creates one; destroying a Thread's only Email destroys the Thread, destroying its
    first Email updates it (and a reply arriving after that still updates, not creates,
    it); destroying a reply, whose Thread the store no longer knows
    once the row is gone, is cannotCalculateChanges rather than a missed update."""
    store, alice, session, _bob = env
    root, late, early, other = chain(store, alice)
    threads = thread_ids(session, [root, other])
    start = session.ok("Thread/get", {"ids": []})["state"]
    reply, _ = deliver(store, alice, REPLY3, at=DAY + 400)
    fresh, _ = deliver(store, alice, PLAIN_NEW, at=DAY + 500)
    changes = session.ok("Thread/changes", {"sinceState": start})
    fresh_thread = thread_ids(session, [fresh])[fresh]
    assert changes["updated"] == [threads[root]]
    assert changes["created"] == [fresh_thread] and changes["destroyed"] == []
    assert session.ok("Thread/get", {"ids": [threads[root]]})["list"][0]["emailIds"] == [root, early, late, reply]
    middle = changes["newState"]
    session.ok("Email/set", {"destroy": [other]})
    changes = session.ok("Thread/changes", {"sinceState": middle})
    assert (changes["created"], changes["updated"], changes["destroyed"]) == ([], [], [threads[other]])
    session.ok("Email/set", {"destroy": [root]})
    changes = session.ok("Thread/changes", {"sinceState": middle})
    assert changes["updated"] == [threads[root]] and changes["destroyed"] == [threads[other]]
    assert session.ok("Thread/get", {"ids": [threads[root]]})["list"][0]["emailIds"] == [early, late, reply]
    deliver(store, alice, REPLY4, at=DAY + 600)
    changes = session.ok("Thread/changes", {"sinceState": middle})
    assert changes["created"] == [] and changes["updated"] == [threads[root]]
    session.ok("Email/set", {"destroy": [reply]})
    error = session.call("Thread/changes", {"sinceState": middle})
    assert error[0] == "error" and error[1]["type"] == "cannotCalculateChanges"


REPLY4 = (b"From: erin@remote.test\r\nSubject: Re: Plans\r\nMessage-ID: <r4@remote.test>\r\n"
          b"References: <root@remote.test> <r3@remote.test>\r\n\r\nfour\r\n")
PLAIN_NEW = b"From: frank@remote.test\r\nSubject: Fresh\r\nMessage-ID: <f@remote.test>\r\n\r\nnew\r\n"


def test_thread_keyword_conditions_look_at_the_whole_thread(env):
    """allInThreadHaveKeyword / someInThreadHaveKeyword / noneInThreadHaveKeyword
    (RFC 8621 4.4.1) test every Email of each Email's Thread; such a query cannot
    calculate changes from the Email change log alone."""
    store, alice, session, _bob = env
    root, late, early, other = chain(store, alice)
    session.ok("Email/set", {"update": {root: {"keywords/$flagged": True}}})

    def query(condition):
        return set(session.ok("Email/query", {"filter": condition})["ids"])
    assert query({"someInThreadHaveKeyword": "$flagged"}) == {root, late, early}
    assert query({"noneInThreadHaveKeyword": "$flagged"}) == {other}
    assert query({"allInThreadHaveKeyword": "$flagged"}) == set()
    got = session.ok("Email/query", {"filter": {"operator": "NOT", "conditions": [
        {"someInThreadHaveKeyword": "$flagged"}]}})
    assert got["ids"] == [other] and got["canCalculateChanges"] is False
    session.ok("Email/set", {"update": {e: {"keywords/$flagged": True} for e in (late, early)}})
    assert query({"allInThreadHaveKeyword": "$flagged"}) == {root, late, early}
    assert query({"hasKeyword": "$flagged", "someInThreadHaveKeyword": "$flagged"}) == {root, late, early}


def test_mailbox_thread_counts_are_distinct_threads(env):
    """Mailbox totalThreads / unreadThreads count distinct Threads, not Emails (RFC 8621 2)."""
    store, alice, session, _bob = env
    root, late, early, other = chain(store, alice)
    session.ok("Email/set", {"update": {e: {"keywords/$seen": True} for e in (root, late, other)}})
    inbox = [b for b in session.ok("Mailbox/get", {"ids": None})["list"] if b["role"] == "inbox"][0]
    assert (inbox["totalEmails"], inbox["unreadEmails"], inbox["totalThreads"], inbox["unreadThreads"]) \
        == (4, 1, 2, 1)
