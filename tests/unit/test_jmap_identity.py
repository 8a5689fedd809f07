"""Identities (RFC 8621 6): one per address the account may send from (its own and
aliases delivering only to it, as SMTP submission decides), /set limited to those
addresses, stored properties, and /changes over creations, updates and destroys."""

from __future__ import annotations

import pytest

from mailserverd.jmap.api import CORE, MAIL, SUBMISSION
from tests.support.jmapstore import Session, make

USING = (CORE, MAIL, SUBMISSION)
ALICE, BOB = "alice@example.test", "bob@example.test"


@pytest.fixture
def env(tmp_path):
    store, accounts = make(tmp_path)
    store.store.directory.add_alias("sales@example.test", [ALICE])
    store.store.directory.add_alias("team@example.test", [ALICE, BOB])  # delivers to two: not Alice's
    yield store, accounts
    store.store.close()


def call(session, name, args):
    status, answer = session.request([[name, dict({"accountId": session.account_id}, **args), "0"]],
                                     using=USING)
    assert status == 200, answer
    return answer["methodResponses"][0]


def test_identities_are_the_addresses_the_account_may_send_from(env):
    """Identity/get lists the account's own address (mayDelete false) and its own alias,
    not an alias shared with another account; every property is there."""
    store, accounts = env
    alice = Session(store, accounts[ALICE])
    got = call(alice, "Identity/get", {"ids": None})[1]
    by_email = {item["email"]: item for item in got["list"]}
    assert set(by_email) == {ALICE, "sales@example.test"}
    assert by_email[ALICE]["mayDelete"] is False and by_email["sales@example.test"]["mayDelete"] is True
    assert by_email[ALICE] == {"id": by_email[ALICE]["id"], "name": "", "email": ALICE, "replyTo": None,
                               "bcc": None, "textSignature": "", "htmlSignature": "", "mayDelete": False}
    again = call(alice, "Identity/get", {"ids": None})[1]
    assert again["state"] == got["state"] and again["list"] == got["list"]  # no new rows on a second read
    bob = Session(store, accounts[BOB])
    assert [i["email"] for i in call(bob, "Identity/get", {"ids": None})[1]["list"]] == [BOB]


def test_set_creates_only_owned_addresses_and_stores_properties(env):
    """Identity/set: another user's address or a shared alias is forbiddenFrom; an owned
    one is created with its name, replyTo, bcc and signatures; updates are stored; email
    cannot change; the own-address Identity cannot be destroyed; /changes reports it all."""
    store, accounts = env
    alice = Session(store, accounts[ALICE])
    first = call(alice, "Identity/get", {"ids": None})[1]
    own = next(i["id"] for i in first["list"] if i["email"] == ALICE)
    answer = call(alice, "Identity/set", {"create": {
        "bob": {"email": BOB},
        "team": {"email": "team@example.test"},
        "bad": {"email": "Sales@example.test", "color": "red"},
        "ok": {"email": "Sales@Example.test", "name": "Alice Sales",
               "replyTo": [{"name": None, "email": "sales@example.test"}],
               "bcc": [{"name": "Archive", "email": "archive@example.test"}],
               "textSignature": "-- \nAlice", "htmlSignature": "<p>Alice</p>"}}})[1]
    assert answer["notCreated"]["bob"]["type"] == "forbiddenFrom"
    assert answer["notCreated"]["team"]["type"] == "forbiddenFrom"
    assert answer["notCreated"]["bad"]["type"] == "invalidProperties"
    new = answer["created"]["ok"]["id"]
    got = call(alice, "Identity/get", {"ids": [new, "i999"]})[1]
    assert got["notFound"] == ["i999"]
    assert got["list"][0] == {"id": new, "name": "Alice Sales", "email": "sales@example.test",
                              "replyTo": [{"name": None, "email": "sales@example.test"}],
                              "bcc": [{"name": "Archive", "email": "archive@example.test"}],
                              "textSignature": "-- \nAlice", "htmlSignature": "<p>Alice</p>",
                              "mayDelete": True}
    answer = call(alice, "Identity/set", {"ifInState": got["state"], "update": {
        own: {"name": "Alice", "bcc": None}, new: {"email": "x@example.test"}, "i999": {"name": "x"}},
        "destroy": [own]})[1]
    assert answer["updated"] == {own: None}
    assert answer["notUpdated"][new]["type"] == "invalidProperties"
    assert answer["notUpdated"]["i999"]["type"] == "notFound"
    assert answer["notDestroyed"][own]["type"] == "forbidden"
    stale = call(alice, "Identity/set", {"ifInState": got["state"], "destroy": [new]})[1]
    assert stale["type"] == "stateMismatch"
    changes = call(alice, "Identity/changes", {"sinceState": first["state"]})[1]
    assert changes["created"] == [new] and changes["updated"] == [own] and changes["destroyed"] == []
    middle = answer["newState"]
    destroyed = call(alice, "Identity/set", {"destroy": [new]})[1]
    assert destroyed["destroyed"] == [new]
    changes = call(alice, "Identity/changes", {"sinceState": middle})[1]
    assert changes["destroyed"] == [new] and changes["created"] == [] and changes["updated"] == []
    changes = call(alice, "Identity/changes", {"sinceState": first["state"]})[1]
    assert changes["created"] == [] and changes["destroyed"] == []  # created and gone: never seen
    paged = call(alice, "Identity/changes", {"sinceState": "0", "maxChanges": 1})[1]
    assert paged["hasMoreChanges"] is True
    assert call(alice, "Identity/changes", {"sinceState": "99"})[1]["type"] == "cannotCalculateChanges"


def test_removed_alias_takes_its_identity_away(env):
    """An alias removed by the admin: its Identity is reported destroyed by /changes."""
    store, accounts = env
    alice = Session(store, accounts[ALICE])
    before = call(alice, "Identity/get", {"ids": None})[1]
    sales = next(i["id"] for i in before["list"] if i["email"] == "sales@example.test")
    store.store.directory.remove_alias("sales@example.test")
    after = call(alice, "Identity/get", {"ids": None})[1]
    assert [i["email"] for i in after["list"]] == [ALICE]
    assert call(alice, "Identity/changes", {"sinceState": before["state"]})[1]["destroyed"] == [sales]


def test_identity_needs_the_submission_capability(env):
    """Without urn:ietf:params:jmap:submission in using, Identity/get is unknownMethod."""
    store, accounts = env
    alice = Session(store, accounts[ALICE])
    status, answer = alice.request([["Identity/get", {"accountId": alice.account_id}, "0"]],
                                   using=(CORE, MAIL))
    assert answer["methodResponses"][0][1]["type"] == "unknownMethod"
