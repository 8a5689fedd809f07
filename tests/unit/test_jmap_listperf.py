"""The mail-list fast paths of JMAP (headercache, jmapreads lookups by primary key,
mailbox_page by index walk) answer exactly what the plain paths answer. No timing."""

from __future__ import annotations

import pytest

from mailserverd.jmap import headercache
from mailserverd.jmap.email import HEADER_PROPS
from mailserverd.store import jmapreads
from mailserverd.store.api import DeliveryTarget
from tests.support.jmapstore import Session, make, result_of

LIST = ["id", "threadId", "mailboxIds", "keywords", "from", "subject", "receivedAt", "size", "preview",
        "hasAttachment", "to", "sentAt", "messageId"]
MESSAGE = (b"From: =?utf-8?q?Bj=C3=B6rn?= <bjorn@remote.test>, eve@remote.test\r\n"
           b"To: Alice <alice@example.test>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= %d\r\n"
           b"Date: Fri, 04 Dec 2026 09:30:00 +0100\r\nMessage-ID: <m%d@remote.test>\r\n\r\nbody %d\r\n")


@pytest.fixture
def env(tmp_path):
    store, accounts = make(tmp_path, users=("alice@example.test", "bob@example.test"))
    yield store, accounts
    store.store.close()


def deliver(store, account, body, mailbox="INBOX", at=None):
    refs = result_of(store.deliver(body, [DeliveryTarget(account, mailbox=mailbox)], at))
    return refs[0].message_id


def test_cached_header_properties_equal_parsed_ones(env, monkeypatch):
    """Email/get answers the same header properties from headercache (second and later
    gets) as parsed from the message (first get, and with the cache emptied), and
    the other properties too; bodies and header:... still read the message."""
    store, accounts = env
    monkeypatch.setattr(headercache, "CACHE", headercache.HeaderCache())
    alice = accounts["alice@example.test"]
    for n in range(3):
        deliver(store, alice, MESSAGE % (n, n, n), at=1_700_000_000 + n)
    session = Session(store, alice)
    ids = session.ok("Email/query", {"filter": {"inMailbox": session.ok("Mailbox/query", {
        "filter": {"role": "inbox"}})["ids"][0]}, "sort": [{"property": "receivedAt", "isAscending": False}]})["ids"]
    first = session.ok("Email/get", {"ids": ids, "properties": LIST})["list"]
    again = session.ok("Email/get", {"ids": ids, "properties": LIST})["list"]
    monkeypatch.setattr(headercache, "CACHE", headercache.HeaderCache())
    fresh = session.ok("Email/get", {"ids": ids, "properties": LIST})["list"]
    assert first == again == fresh
    assert first[0]["from"] == [{"name": "Björn", "email": "bjorn@remote.test"},
                                {"name": None, "email": "eve@remote.test"}]
    assert first[0]["subject"] == "Grüße 2" and first[0]["messageId"] == ["m2@remote.test"]
    full = session.ok("Email/get", {"ids": ids[:1], "properties": ["from", "header:Subject:asRaw", "textBody"],
                                    "fetchTextBodyValues": True})["list"][0]
    assert full["from"] == first[0]["from"] and full["header:Subject:asRaw"].strip().startswith("=?utf-8?")


def test_cached_values_are_each_answers_own(env, monkeypatch):
    """Changing an answer's from list or address object leaves the next answer as it was."""
    store, accounts = env
    monkeypatch.setattr(headercache, "CACHE", headercache.HeaderCache())
    alice = accounts["alice@example.test"]
    number = deliver(store, alice, MESSAGE % (1, 1, 1))
    session = Session(store, alice)
    got = session.ok("Email/get", {"ids": [f"e{number}"], "properties": ["from"]})["list"][0]
    got["from"][0]["name"] = "changed"
    got["from"].append({"name": None, "email": "x@y"})
    again = session.ok("Email/get", {"ids": [f"e{number}"], "properties": ["from"]})["list"][0]
    assert again["from"] == [{"name": "Björn", "email": "bjorn@remote.test"},
                             {"name": None, "email": "eve@remote.test"}]


def test_cache_is_bounded_and_keyed_by_content():
    """At most size messages are kept, the oldest dropped first; a key with another
    prepend is another message."""
    cache = headercache.HeaderCache(size=2)
    raw = b"Subject: one\r\n\r\nx"
    for n in range(3):
        assert cache.values((f"b{n}", b""), raw, ["subject"], HEADER_PROPS) == {"subject": "one"}
    assert cache.values(("b0", b""), None, ["subject"], HEADER_PROPS) is None
    assert cache.values(("b2", b""), None, ["subject"], HEADER_PROPS) == {"subject": "one"}
    assert cache.values(("b2", b"X: y\r\n"), None, ["subject"], HEADER_PROPS) is None
    assert cache.values(("b2", b""), None, ["subject", "from"], HEADER_PROPS) is None  # from not known


def test_lookups_by_id_keep_to_the_account(tmp_path):
    """emails, raw_keys, raws, thread_of and threads never return another account's
    message on the same shard, whatever ids are asked for."""
    store, accounts = make(tmp_path, users=("a@example.test", "b@example.test", "c@example.test"))
    try:
        by_shard = {}
        for account in accounts.values():
            by_shard.setdefault(account.shard, []).append(account)
        alice, bob = next(pair for pair in by_shard.values() if len(pair) >= 2)[:2]
        mine = deliver(store, alice, MESSAGE % (1, 1, 1))
        theirs = deliver(store, bob, MESSAGE % (2, 2, 2))
        assert mine != theirs
        mail = store.store.mail
        assert set(jmapreads.emails(mail, alice, [mine, theirs])) == {mine}
        assert set(jmapreads.raw_keys(mail, alice, [mine, theirs])) == {mine}
        assert set(jmapreads.raw_messages(mail, alice, [mine, theirs])) == {mine}
        assert set(jmapreads.thread_of(mail, alice, [mine, theirs])) == {mine}
        assert set(jmapreads.threads(mail, alice, [mine, theirs])) == {mine}
        assert jmapreads.email_changes(mail, bob, 0, None)[2] == [theirs]
    finally:
        store.store.close()


def test_mailbox_page_agrees_with_sorting_in_python(env):
    """mailbox_page (index walk with EXISTS) gives the ids sorting all memberships in
    Python gives: receivedAt both ways with ties by ascending id, offsets, totals,
    flag conditions, a mailbox of another account and no mailbox."""
    store, accounts = env
    alice, bob = accounts["alice@example.test"], accounts["bob@example.test"]
    times = [5, 3, 5, 1, 3, 5, 2]
    numbers = [deliver(store, alice, MESSAGE % (n, n, n), "INBOX" if n % 3 else "Archive", at=1000 + t)
               for n, t in enumerate(times)]
    deliver(store, bob, MESSAGE % (9, 9, 9))
    mail = store.store.mail
    found = jmapreads.emails(mail, alice, numbers)
    boxes = {row["name"]: row["id"] for row in jmapreads.mailboxes(mail, alice)}
    for box in (boxes["INBOX"], boxes["Archive"], None, 999_999):
        members = [i for i in numbers if box is None or box in found[i]["mailboxes"]]
        for ascending in (True, False):
            ordered = sorted(members, key=lambda i: (found[i]["received_at"] * (1 if ascending else -1), i))
            for offset, limit in ((0, None), (0, 2), (1, 3), (9, 5)):
                expected = ordered[offset:None if limit is None else offset + limit]
                got = jmapreads.mailbox_page(mail, alice, box, "received_at", ascending, offset, limit, True)
                assert got == (expected, len(members))
    seen = [i for i in numbers if "\\Seen" in next(iter(found[i]["mailboxes"].values()))[1]]
    unseen = jmapreads.mailbox_page(mail, alice, None, "id", True, 0, None, True, (("seen", False),))
    assert unseen == ([i for i in numbers if i not in seen], len(numbers) - len(seen))


def test_query_then_get_by_reference_reads_ahead_with_the_same_answer(env, monkeypatch):
    """Email/query followed by Email/get of its /ids (RFC 8620 3.7) answers what the two
    calls answer apart; the read-ahead serves only that next call: a get after
    an Email/set in between sees the change."""
    store, accounts = env
    alice = accounts["alice@example.test"]
    for n in range(4):
        deliver(store, alice, MESSAGE % (n, n, n), at=1_700_000_000 + n)
    session = Session(store, alice)
    inbox = session.ok("Mailbox/query", {"filter": {"role": "inbox"}})["ids"][0]
    query = {"accountId": session.account_id, "filter": {"inMailbox": inbox},
             "sort": [{"property": "receivedAt", "isAscending": False}], "limit": 3}
    reference = {"resultOf": "q", "name": "Email/query", "path": "/ids"}
    reads = []
    real = headercache.page_and_get
    monkeypatch.setattr(headercache, "page_and_get", lambda *a: reads.append(a) or real(*a))
    for props in (LIST, ["id", "keywords"], ["subject", "textBody"]):
        get = {"accountId": session.account_id, "properties": props}
        _status, together = session.request([["Email/query", query, "q"],
                                              ["Email/get", dict(get, **{"#ids": reference}), "g"]])
        ids = together["methodResponses"][0][1]["ids"]
        apart = session.ok("Email/get", dict(get, ids=ids))
        assert together["methodResponses"][1][1] == apart
    assert len(reads) == 3
    first = together["methodResponses"][0][1]["ids"][0]
    _status, answer = session.request([
        ["Email/query", query, "q"],
        ["Email/set", {"accountId": session.account_id, "update": {first: {"keywords/$flagged": True}}}, "s"],
        ["Email/get", {"accountId": session.account_id, "properties": ["keywords"], "#ids": reference}, "g"]])
    assert answer["methodResponses"][2][1]["list"][0]["keywords"] == {"$flagged": True}
    _status, answer = session.request([
        ["Email/query", query, "q"],
        ["Email/get", {"accountId": session.account_id, "properties": ["bogus"], "#ids": reference}, "g"]])
    assert answer["methodResponses"][1] == ["error", {"type": "invalidArguments",
                                                      "description": "unknown property bogus"}, "g"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_list_reads_on_both_databases(request, tmp_path, backend):
    """The mail-list statements (state, page by index walk, rows by id with the
    account check, the Email/get read-ahead) run and agree on SQLite and on a real
    PostgreSQL server, whose migration creates the same indexes."""
    from mailserverd.store import Store
    from mailserverd.store.mail import Delivery
    if backend == "sqlite":
        urls = [f"sqlite:///{tmp_path}/d.sqlite3", f"sqlite:///{tmp_path}/s0.sqlite3"]
    else:
        new_database = request.getfixturevalue("pg_database")
        urls = [new_database(), new_database()]
    store = Store(urls[0], urls[1:], str(tmp_path / "blobs"))
    try:
        store.directory.add_domain("example.test")
        alice, bob = store.add_account("alice@example.test", "pw"), store.add_account("bob@example.test", "pw")
        def put(n, account):
            item = Delivery(MESSAGE % (n, n, n), [DeliveryTarget(account)], received_at=1000 + n % 3)
            store.mail.deliver_many([item])
            return item.result[0].message_id
        numbers = [put(n, alice) for n in range(5)]
        theirs = put(9, bob)
        mail = store.mail
        inbox = next(row["id"] for row in jmapreads.mailboxes(mail, alice) if row["name"] == "INBOX")
        expected = sorted(numbers, key=lambda n: (-(1000 + numbers.index(n) % 3), n))
        assert jmapreads.mailbox_page(mail, alice, inbox, "received_at", False, 1, 3, True) == (expected[1:4], 5)
        states = jmapreads.states(mail, alice)
        assert states["all"] >= states["Email"] > 0
        ids, total, (found, raws, headers) = headercache.page_and_get(
            mail, alice, (inbox, "received_at", False, 0, None, False, ()), "headers", ["subject"], HEADER_PROPS)
        assert ids == expected and total is None and raws == {} and set(found) == set(headers) == set(numbers)
        assert set(jmapreads.emails(mail, alice, numbers + [theirs])) == set(numbers)
        assert set(jmapreads.threads(mail, alice, numbers)) == set(jmapreads.thread_of(mail, alice, numbers).values())
    finally:
        store.close()


def test_get_with_null_ids_lists_every_email(env, monkeypatch):
    """Email/get with ids null (RFC 8620 5.1) answers every Email as the get by ids does,
    header properties included; more Emails than maxObjectsInGet is requestTooLarge."""
    from mailserverd.jmap import api
    store, accounts = env
    alice = accounts["alice@example.test"]
    numbers = [deliver(store, alice, MESSAGE % (n, n, n)) for n in range(3)]
    session = Session(store, alice)
    every = session.ok("Email/get", {"ids": None, "properties": LIST})
    by_id = session.ok("Email/get", {"ids": [f"e{n}" for n in numbers], "properties": LIST})
    assert every["list"] == by_id["list"] and every["notFound"] == [] and every["state"] == by_id["state"]
    monkeypatch.setitem(api.LIMITS, "maxObjectsInGet", 2)
    assert session.call("Email/get", {"ids": None})[1]["type"] == "requestTooLarge"
