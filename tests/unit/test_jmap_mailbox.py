"""Mailbox/get, /changes, /query and /set (RFC 8621 2) on a real store, and the
request layer around them (result references, ifInState)."""

from __future__ import annotations

import pytest

from mailserverd.store.api import DeliveryTarget
from tests.support.jmapstore import Session, make, result_of

MESSAGE = b"From: Bob <bob@remote.test>\r\nTo: alice@example.test\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def env(tmp_path):
    store, accounts = make(tmp_path, users=("alice@example.test",))
    alice = accounts["alice@example.test"]
    yield store, alice, Session(store, alice)
    store.store.close()


def boxes_by_name(session):
    listed = session.ok("Mailbox/get", {"ids": None})["list"]
    return {box["name"]: box for box in listed}


def test_default_mailboxes_have_roles_counts_and_rights(env):
    """RFC 8621 2.1: INBOX is role inbox, special-use mailboxes give their roles;
    counts follow delivery and \\Seen; INBOX may not be renamed or deleted."""
    store, alice, session = env
    result_of(store.deliver(MESSAGE, [DeliveryTarget(alice)]))
    result_of(store.deliver(MESSAGE + b"2", [DeliveryTarget(alice, flags=frozenset({"\\Seen"}))]))
    boxes = boxes_by_name(session)
    assert {name: box["role"] for name, box in boxes.items()} == {
        "INBOX": "inbox", "Drafts": "drafts", "Sent": "sent", "Junk": "junk", "Trash": "trash",
        "Archive": "archive"}
    inbox = boxes["INBOX"]
    assert (inbox["totalEmails"], inbox["unreadEmails"], inbox["totalThreads"], inbox["unreadThreads"]) == (2, 1, 2, 1)
    assert inbox["myRights"]["mayDelete"] is False and boxes["Junk"]["myRights"]["mayDelete"] is True
    assert inbox["parentId"] is None and inbox["isSubscribed"] is True


def test_set_create_rename_destroy_is_seen_by_imap(env):
    """Mailbox/set create (with parentId by creation id), update name/parent and destroy
    change the store's mailboxes, as IMAP LIST sees them."""
    store, alice, session = env
    answer = session.ok("Mailbox/set", {"create": {
        "p": {"name": "Projects", "isSubscribed": True},
        "c": {"name": "Child", "parentId": "#p"}}})
    assert set(answer["created"]) == {"p", "c"}, answer
    child = answer["created"]["c"]["id"]
    names = {box.name for box in result_of(store.list_mailboxes(alice))}
    assert {"Projects", "Projects/Child"} <= names
    boxes = boxes_by_name(session)
    assert boxes["Child"]["parentId"] == answer["created"]["p"]["id"]
    assert boxes["Projects"]["isSubscribed"] is True and boxes["Child"]["isSubscribed"] is False
    answer = session.ok("Mailbox/set", {"update": {child: {"name": "Renamed", "parentId": None}}})
    assert answer["updated"] == {child: None}, answer
    names = {box.name for box in result_of(store.list_mailboxes(alice))}
    assert "Renamed" in names and "Projects/Child" not in names
    answer = session.ok("Mailbox/set", {"destroy": [child]})
    assert answer["destroyed"] == [child]
    assert "Renamed" not in {box.name for box in result_of(store.list_mailboxes(alice))}


def test_set_refusals(env):
    """Bad names, a taken name, INBOX, a mailbox with children or with mail (without
    onDestroyRemoveEmails) and unknown ids are SetErrors, nothing changes."""
    store, alice, session = env
    boxes = boxes_by_name(session)
    inbox, junk = boxes["INBOX"]["id"], boxes["Junk"]["id"]
    result_of(store.deliver(MESSAGE, [DeliveryTarget(alice, mailbox="Junk")]))
    session.ok("Mailbox/set", {"create": {"k": {"name": "Kid", "parentId": boxes["Trash"]["id"]}}})
    answer = session.ok("Mailbox/set", {
        "create": {"a": {"name": "a/b"}, "b": {"name": ""}, "c": {"name": "Junk"}, "d": {"name": "x", "role": "inbox"}},
        "update": {inbox: {"name": "Other"}, "m999": {"name": "y"}},
        "destroy": [inbox, junk, boxes["Trash"]["id"], "m999"]})
    assert {k: v["type"] for k, v in answer["notCreated"].items()} == {
        "a": "invalidProperties", "b": "invalidProperties", "c": "invalidProperties", "d": "invalidProperties"}
    assert {k: v["type"] for k, v in answer["notUpdated"].items()} == {inbox: "forbidden", "m999": "notFound"}
    assert {k: v["type"] for k, v in answer["notDestroyed"].items()} == {
        inbox: "forbidden", junk: "mailboxHasEmail", boxes["Trash"]["id"]: "mailboxHasChild", "m999": "notFound"}
    answer = session.ok("Mailbox/set", {"destroy": [junk], "onDestroyRemoveEmails": True})
    assert answer["destroyed"] == [junk]


def test_changes_report_created_counts_and_destroyed(env):
    """Mailbox/changes from the change log: a created mailbox, a delivery (counts only:
    updatedProperties) and a destroy; maxChanges splits the window (hasMoreChanges)."""
    store, alice, session = env
    start = session.ok("Mailbox/get", {"ids": []})["state"]
    made = session.ok("Mailbox/set", {"create": {"n": {"name": "New"}}})["created"]["n"]["id"]
    changes = session.ok("Mailbox/changes", {"sinceState": start})
    assert changes["created"] == [made] and changes["updated"] == [] and changes["destroyed"] == []
    middle = changes["newState"]
    result_of(store.deliver(MESSAGE, [DeliveryTarget(alice)]))
    changes = session.ok("Mailbox/changes", {"sinceState": middle})
    inbox = boxes_by_name(session)["INBOX"]["id"]
    assert changes["updated"] == [inbox] and changes["updatedProperties"] == [
        "totalEmails", "unreadEmails", "totalThreads", "unreadThreads"]
    session.ok("Mailbox/set", {"destroy": [made]})
    changes = session.ok("Mailbox/changes", {"sinceState": middle})
    assert changes["destroyed"] == [made] and changes["updated"] == [inbox]
    since, pages, seen = start, 0, []
    while True:  # one id per page at most; New (created and destroyed) is never shown
        page = session.ok("Mailbox/changes", {"sinceState": since, "maxChanges": 1})
        ids = page["created"] + page["updated"] + page["destroyed"]
        assert len(ids) <= 1
        seen += ids
        pages, since = pages + 1, page["newState"]
        if not page["hasMoreChanges"]:
            break
    assert set(seen) <= {inbox, made} and inbox in seen and pages >= 2
    assert session.call("Mailbox/changes", {"sinceState": "99999"})[1]["type"] == "cannotCalculateChanges"
    assert session.call("Mailbox/changes", {"sinceState": "junk"})[1]["type"] == "cannotCalculateChanges"


def test_query_filters_sorts_and_references(env):
    """Mailbox/query by role, name and parentId, sorted by name, feeding Mailbox/get
    through a result reference (RFC 8620 3.7); sortAsTree puts parents first."""
    store, alice, session = env
    session.ok("Mailbox/set", {"create": {"a": {"name": "Alpha"}}})
    alpha = boxes_by_name(session)["Alpha"]["id"]
    session.ok("Mailbox/set", {"create": {"z": {"name": "aaa", "parentId": alpha}}})
    status, answer = session.request([
        ["Mailbox/query", {"accountId": session.account_id, "filter": {"hasAnyRole": False},
                           "sort": [{"property": "name"}]}, "q"],
        ["Mailbox/get", {"accountId": session.account_id, "properties": ["name"],
                         "#ids": {"resultOf": "q", "name": "Mailbox/query", "path": "/ids"}}, "g"],
        ["Mailbox/query", {"accountId": session.account_id, "filter": {"role": "trash"}}, "t"],
        ["Mailbox/query", {"accountId": session.account_id, "sort": [{"property": "name"}],
                           "sortAsTree": True, "filter": {"operator": "NOT",
                                                          "conditions": [{"hasAnyRole": True}]}}, "tree"],
        ["Mailbox/query", {"accountId": session.account_id, "sort": [{"property": "color"}]}, "bad"],
    ])
    responses = {r[2]: r for r in answer["methodResponses"]}
    assert [box["name"] for box in responses["g"][1]["list"]] == ["aaa", "Alpha"]
    assert len(responses["t"][1]["ids"]) == 1
    names = {b["id"]: b["name"] for b in session.ok("Mailbox/get", {"ids": None})["list"]}
    assert [names[i] for i in responses["tree"][1]["ids"]] == ["Alpha", "aaa"]
    assert responses["bad"][1]["type"] == "unsupportedSort"


def test_if_in_state_mismatch(env):
    """RFC 8620 5.3: Mailbox/set with a stale ifInState is stateMismatch and changes nothing."""
    store, alice, session = env
    old = session.ok("Mailbox/get", {"ids": []})["state"]
    session.ok("Mailbox/set", {"create": {"a": {"name": "A"}}})
    response = session.call("Mailbox/set", {"ifInState": old, "create": {"b": {"name": "B"}}})
    assert response[1]["type"] == "stateMismatch"
    assert "B" not in boxes_by_name(session)
