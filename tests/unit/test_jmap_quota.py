"""Quotas (RFC 9425): the storage quota of `mailserverctl user quota` as one Quota
object whose used octets follow delivery, with /changes, /query, /queryChanges."""

from __future__ import annotations

import dataclasses

import pytest

from mailserverd.jmap.api import CORE, MAIL, QUOTA
from mailserverd.store.api import DeliveryTarget
from tests.support.jmapstore import Session, make, result_of

MESSAGE = b"From: a@remote.test\r\nSubject: q\r\n\r\n" + b"x" * 100 + b"\r\n"
USING = (CORE, MAIL, QUOTA)


@pytest.fixture
def env(tmp_path):
    store, accounts = make(tmp_path, users=("alice@example.test",))
    yield store, accounts["alice@example.test"]
    store.store.close()


def call(session, name, args):
    status, answer = session.request([[name, dict({"accountId": session.account_id}, **args), "0"]],
                                     using=USING)
    return answer["methodResponses"][0]


def test_quota_follows_usage_and_admin_changes(env):
    """No quota: no Quota object. With one: used octets count each delivery; /changes
    says created, then updated (used), then destroyed when the quota is lifted."""
    store, alice = env
    unlimited = Session(store, alice)
    empty = call(unlimited, "Quota/get", {"ids": None})[1]
    assert empty["list"] == []
    limited = Session(store, dataclasses.replace(alice, quota=10_000))
    quota = call(limited, "Quota/get", {"ids": None})[1]["list"]
    assert quota == [{"id": "q0", "resourceType": "octets", "used": 0, "hardLimit": 10_000, "scope": "account",
                      "name": "alice@example.test storage", "types": ["Email"],
                      "description": "bytes of stored mail, each copy counted"}]
    changes = call(limited, "Quota/changes", {"sinceState": empty["state"]})[1]
    assert changes["created"] == ["q0"]
    before = call(limited, "Quota/get", {"ids": ["q0"], "properties": ["used"]})[1]
    result_of(store.deliver(MESSAGE, [DeliveryTarget(alice)]))
    after = call(limited, "Quota/get", {"ids": ["q0", "nope"], "properties": ["used"]})[1]
    assert after["list"] == [{"id": "q0", "used": len(MESSAGE)}] and after["notFound"] == ["nope"]
    changes = call(limited, "Quota/changes", {"sinceState": before["state"]})[1]
    assert changes["updated"] == ["q0"] and changes["updatedProperties"] == ["used"]
    lifted = call(unlimited, "Quota/changes", {"sinceState": after["state"]})[1]
    assert lifted["destroyed"] == ["q0"]
    assert call(limited, "Quota/changes", {"sinceState": "x"})[1]["type"] == "cannotCalculateChanges"


def test_quota_query_and_capability(env):
    """Quota/query filters by type and scope; /queryChanges rebuilds the list; without
    the quota capability in using, Quota methods are unknownMethod."""
    store, alice = env
    limited = Session(store, dataclasses.replace(alice, quota=10_000))
    found = call(limited, "Quota/query", {"filter": {"type": "Email", "scope": "account"}})[1]
    assert found["ids"] == ["q0"]
    assert call(limited, "Quota/query", {"filter": {"type": "Calendar"}})[1]["ids"] == []
    changes = call(limited, "Quota/queryChanges", {"sinceQueryState": found["queryState"]})[1]
    assert changes["removed"] == ["q0"] and changes["added"] == [{"id": "q0", "index": 0}]
    status, answer = limited.request([["Quota/get", {"accountId": limited.account_id}, "0"]], using=(CORE, MAIL))
    assert answer["methodResponses"][0][1]["type"] == "unknownMethod"
