"""VacationResponse (RFC 8621 8): the singleton's /get and /set, and the RFC 3834
rules that decide whether a delivered message gets an automatic reply."""

from __future__ import annotations

import email
import email.policy

import pytest

from mailserverd.jmap.api import CORE, MAIL, VACATION
from mailserverd.store import vacation as rows
from mailserverd.vacation import build_reply, may_answer
from tests.support.jmapstore import Session, make

USING = (CORE, MAIL, VACATION)
ALICE = "alice@example.test"


@pytest.fixture
def env(tmp_path):
    store, accounts = make(tmp_path, users=(ALICE,))
    yield store, accounts[ALICE]
    store.store.close()


def call(session, name, args):
    status, answer = session.request([[name, dict({"accountId": session.account_id}, **args), "0"]],
                                     using=USING)
    assert status == 200, answer
    return answer["methodResponses"][0]


def test_singleton_get_and_set(env):
    """Off with null fields until set; an update of "singleton" is stored (dates as
    UTCDate); create and destroy are singleton errors; a bad date is invalidProperties;
    a stale ifInState is stateMismatch."""
    store, alice = env
    session = Session(store, alice)
    got = call(session, "VacationResponse/get", {"ids": None})[1]
    assert got["list"] == [{"id": "singleton", "isEnabled": False, "fromDate": None, "toDate": None,
                            "subject": None, "textBody": None, "htmlBody": None}]
    answer = call(session, "VacationResponse/set", {
        "ifInState": got["state"],
        "update": {"singleton": {"isEnabled": True, "fromDate": "2026-12-01T00:00:00Z", "toDate": None,
                                 "subject": "Away", "textBody": "Back on Monday."}},
        "create": {"x": {}}, "destroy": ["singleton"]})[1]
    assert answer["updated"] == {"singleton": None} and answer["newState"] != got["state"]
    assert answer["notCreated"]["x"]["type"] == "singleton"
    assert answer["notDestroyed"]["singleton"]["type"] == "singleton"
    now = call(session, "VacationResponse/get", {"ids": ["singleton", "other"]})[1]
    assert now["notFound"] == ["other"]
    assert now["list"][0] == {"id": "singleton", "isEnabled": True, "fromDate": "2026-12-01T00:00:00Z",
                              "toDate": None, "subject": "Away", "textBody": "Back on Monday.", "htmlBody": None}
    bad = call(session, "VacationResponse/set", {"update": {"singleton": {"toDate": "tomorrow"}}})[1]
    assert bad["notUpdated"]["singleton"]["type"] == "invalidProperties"
    stale = call(session, "VacationResponse/set", {"ifInState": got["state"],
                                                   "update": {"singleton": {"isEnabled": False}}})[1]
    assert stale["type"] == "stateMismatch"


def test_one_reply_per_sender_per_period(env):
    """claim_reply: the first message of a sender is answered, the next within the period
    is not, one after it is; changing the response forgets whom it answered."""
    store, alice = env
    engine = store.store.directory_engine
    assert rows.claim_reply(engine, alice.id, "Carol@remote.test", 1000.0, 100.0)
    assert not rows.claim_reply(engine, alice.id, "carol@remote.test", 1050.0, 100.0)
    assert rows.claim_reply(engine, alice.id, "carol@remote.test", 1101.0, 100.0)
    rows.put(engine, alice.id, {"subject": "new text"})
    assert rows.claim_reply(engine, alice.id, "carol@remote.test", 1102.0, 100.0)


OWN = frozenset({ALICE})


@pytest.mark.parametrize("sender,fields,expected", [
    ("carol@remote.test", [("to", f"Alice <{ALICE}>")], True),
    ("carol@remote.test", [("cc", ALICE), ("auto-submitted", "no")], True),
    ("", [("to", ALICE)], False),  # null reverse-path
    (ALICE, [("to", ALICE)], False),  # herself
    ("carol@remote.test", [("to", "team@example.test")], False),  # came by Bcc or a list
    ("carol@remote.test", [("to", ALICE), ("auto-submitted", "auto-replied")], False),
    ("carol@remote.test", [("to", ALICE), ("list-id", "<news.remote.test>")], False),
    ("carol@remote.test", [("to", ALICE), ("list-unsubscribe", "<mailto:x@remote.test>")], False),
    ("carol@remote.test", [("to", ALICE), ("precedence", "bulk")], False),
    ("MAILER-DAEMON@remote.test", [("to", ALICE)], False),
    ("owner-news@remote.test", [("to", ALICE)], False),
    ("news-request@remote.test", [("to", ALICE)], False),
    ("noreply@remote.test", [("to", ALICE)], False),
])
def test_who_gets_an_automatic_reply(sender, fields, expected):
    """RFC 3834 2 and RFC 5230 4.5: no reply to null senders, oneself, auto-submitted or
    list mail, role addresses, or mail that does not name the account in To/Cc."""
    assert may_answer(sender, fields, OWN) is expected


def test_reply_headers():
    """RFC 3834 3 and 5: Auto-Submitted auto-replied, In-Reply-To/References of the
    original, the configured subject and text, addressed to the sender."""
    row = type("Row", (), {"subject": None, "text_body": "Away until Monday.", "html_body": None})()
    raw = build_reply(ALICE, "carol@remote.test", [("subject", "lunch?"), ("message-id", "<1@remote.test>")],
                      row, 1_780_000_000.0)
    reply = email.message_from_bytes(raw, policy=email.policy.default)
    assert reply["Auto-Submitted"] == "auto-replied" and reply["To"] == "carol@remote.test"
    assert reply["From"] == ALICE and reply["Subject"] == "Auto: lunch?"
    assert reply["In-Reply-To"] == "<1@remote.test>" and reply["References"] == "<1@remote.test>"
    assert reply.get_content().strip() == "Away until Monday."


def test_removed_account_leaves_no_jmap_rows(tmp_path):
    """`user remove` drops the account's Identities, EmailSubmissions and vacation rows, so
    a later account given the same id on SQLite starts with none of them."""
    store, accounts = make(tmp_path, users=(ALICE,))
    alice = accounts[ALICE]
    session = Session(store, alice)
    call(session, "VacationResponse/set", {"update": {"singleton": {"isEnabled": True}}})
    status, answer = session.request([["Identity/get", {"accountId": session.account_id}, "0"]],
                                     using=(CORE, MAIL, "urn:ietf:params:jmap:submission"))
    assert answer["methodResponses"][0][1]["list"]
    engine = store.store.directory_engine
    rows.claim_reply(engine, alice.id, "carol@remote.test", 1.0, 10.0)
    store.store.remove_account(ALICE)
    from mailserverd.store.identities import rows as identity_rows
    assert rows.get(None, engine, alice.id) is None and identity_rows(None, engine, alice.id) == []
    assert rows.claim_reply(engine, alice.id, "carol@remote.test", 2.0, 10.0)  # no reply remembered
    store.store.close()
