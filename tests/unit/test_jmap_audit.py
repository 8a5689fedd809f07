"""Gaps an audit of the JMAP mail methods against RFC 8620 / RFC 8621 found, each
pinned: header:Name:asForm properties on Email/set create (4.6), the
asGroupedAddresses form (4.1.2.4), "#creationId" keys answered by their ids
(RFC 8620 5.3), the Email/query sorts of 4.4.2 and /queryChanges refusing
what it cannot calculate."""

from __future__ import annotations

import pytest

from mailserverd.store.api import DeliveryTarget
from tests.support.jmapstore import Session, make, result_of

GROUPED = (b"From: Amy <amy@remote.test>\r\nTo: Team: t1@x.test, \"T, Two\" <t2@x.test>;, solo@x.test,"
           b" =?utf-8?q?Gr=C3=BCn?=:;\r\nSubject: grouped\r\n\r\nhello\r\n")


@pytest.fixture
def env(tmp_path):
    store, accounts = make(tmp_path, users=("alice@example.test",))
    alice = accounts["alice@example.test"]
    yield store, alice, Session(store, alice)
    store.store.close()


def deliver(store, account, body, flags=(), at=None):
    refs = result_of(store.deliver(body, [DeliveryTarget(account, mailbox="INBOX", flags=frozenset(flags))], at))
    return f"e{refs[0].message_id}"


def inbox(session):
    return next(b["id"] for b in session.ok("Mailbox/get", {"ids": None})["list"] if b["name"] == "INBOX")


def test_get_as_grouped_addresses(env):
    """RFC 8621 4.1.2.4: asGroupedAddresses keeps the groups (names decoded, an empty
    group too) and puts consecutive ungrouped addresses in one group named null;
    asAddresses flattens them."""
    store, alice, session = env
    email_id = deliver(store, alice, GROUPED)
    email = session.ok("Email/get", {"ids": [email_id], "properties": [
        "header:To:asGroupedAddresses", "header:To:asAddresses", "header:From:asGroupedAddresses:all"]})["list"][0]
    assert email["header:To:asGroupedAddresses"] == [
        {"name": "Team", "addresses": [{"name": None, "email": "t1@x.test"}, {"name": "T, Two", "email": "t2@x.test"}]},
        {"name": None, "addresses": [{"name": None, "email": "solo@x.test"}]},
        {"name": "Grün", "addresses": []}]
    assert [a["email"] for a in email["header:To:asAddresses"]] == ["t1@x.test", "t2@x.test", "solo@x.test"]
    assert email["header:From:asGroupedAddresses:all"] == [
        [{"name": None, "addresses": [{"name": "Amy", "email": "amy@remote.test"}]}]]


def test_create_with_header_properties(env):
    """RFC 8621 4.6: header:Name:asForm properties set on create are written in their
    form (4.1.2; RFC 2047 words for non-ASCII text and names), :all as one field per
    value, header:Date replacing the generated Date, and read back the same."""
    store, alice, session = env
    created = session.ok("Email/set", {"create": {"h": {
        "mailboxIds": {inbox(session): True}, "subject": "headers",
        "header:X-Custom:asText": "héllo wörld",
        "header:List-Unsubscribe:asURLs": ["mailto:u@x.test", "https://x.test/u"],
        "header:Reply-To:asAddresses": [{"name": "Jürgen", "email": "j@x.test"}],
        "header:To:asGroupedAddresses": [{"name": "Team", "addresses": [{"name": None, "email": "t1@x.test"}]},
                                         {"name": None, "addresses": [{"email": "o@x.test"}]}],
        "header:X-Multi:asRaw:all": [" one", " two"], "header:Date:asDate": "2026-01-02T03:04:05+01:00",
        "header:X-Ids:asMessageIds": ["a@b.test"],
        "textBody": [{"partId": "1", "type": "text/plain"}], "bodyValues": {"1": {"value": "hi"}}}}})
    email_id = created["created"]["h"]["id"]
    email = session.ok("Email/get", {"ids": [email_id], "properties": [
        "header:X-Custom:asText", "header:List-Unsubscribe:asURLs", "replyTo", "header:To:asGroupedAddresses",
        "header:X-Multi:all", "sentAt", "header:X-Ids:asMessageIds", "header:Date:all", "header:X-Custom",
        "header:Reply-To"]})["list"][0]
    assert email["header:X-Custom:asText"] == "héllo wörld"
    assert email["header:X-Custom"] == " =?utf-8?q?h=C3=A9llo_w=C3=B6rld?="
    assert email["header:Reply-To"] == " =?utf-8?q?J=C3=BCrgen?= <j@x.test>"
    assert email["header:List-Unsubscribe:asURLs"] == ["mailto:u@x.test", "https://x.test/u"]
    assert email["replyTo"] == [{"name": "Jürgen", "email": "j@x.test"}]
    assert email["header:To:asGroupedAddresses"] == [
        {"name": "Team", "addresses": [{"name": None, "email": "t1@x.test"}]},
        {"name": None, "addresses": [{"name": None, "email": "o@x.test"}]}]
    assert email["header:X-Multi:all"] == [" one", " two"]
    assert email["sentAt"] == "2026-01-02T03:04:05+01:00" and len(email["header:Date:all"]) == 1
    assert email["header:X-Ids:asMessageIds"] == ["a@b.test"]


def test_create_header_properties_on_parts(env):
    """RFC 8621 4.6: header:... properties on bodyStructure parts and attachments become
    those parts' fields."""
    store, alice, session = env
    created = session.ok("Email/set", {"create": {"bs": {
        "mailboxIds": {inbox(session): True},
        "bodyStructure": {"type": "multipart/mixed", "subParts": [
            {"partId": "1", "type": "text/plain", "header:X-Part:asText": "ä"},
            {"partId": "2", "type": "text/plain", "disposition": "attachment", "name": "n.txt",
             "header:Content-Description:asText": "notes"}]},
        "bodyValues": {"1": {"value": "a"}, "2": {"value": "b"}}}}})
    email = session.ok("Email/get", {"ids": [created["created"]["bs"]["id"]], "properties": ["bodyStructure"],
                                     "bodyProperties": ["partId", "header:X-Part:asText",
                                                        "header:Content-Description:asText"]})["list"][0]
    first, second = email["bodyStructure"]["subParts"]
    assert first["header:X-Part:asText"] == "ä" and second["header:Content-Description:asText"] == "notes"


@pytest.mark.parametrize("spec, properties", [
    ({"from": [{"email": "a@x.test"}], "header:From:asAddresses": [{"email": "b@x.test"}]},
     ["header:From:asAddresses", "from"]),
    ({"sentAt": "2026-01-02T03:04:05Z", "header:date:asDate": "2026-01-02T03:04:05Z"},
     ["header:date:asDate", "sentAt"]),
    ({"header:X-A:asText": "a", "header:x-a:asRaw": " b"}, ["header:x-a:asRaw", "header:X-A:asText"]),
    ({"header:From:asDate": "2026-01-02T03:04:05Z"}, ["header:From:asDate"]),
    ({"header:List-Unsubscribe:asText": "x"}, ["header:List-Unsubscribe:asText"]),
    ({"header:Content-Type": " text/plain"}, ["header:Content-Type"]),
    ({"header:MIME-Version": " 1.0"}, ["header:MIME-Version"]),
    ({"header:X-A": " x\r\ny"}, ["header:X-A"]),
    ({"header:X-A": " h\u00e9llo"}, ["header:X-A"]),
    ({"header:X-A:asRaw": " " + "x" * 1000}, ["header:X-A:asRaw"]),
    ({"header:X-A:asText": "x\ny"}, ["header:X-A:asText"]),
    ({"header:X-A:asText:all": "not a list"}, ["header:X-A:asText:all"]),
    ({"header:X-A:asURLs": ["has space"]}, ["header:X-A:asURLs"]),
    ({"header:X-A:asMessageIds": ["<bracketed@x>"]}, ["header:X-A:asMessageIds"]),
    ({"header:X-A:asDate": "yesterday"}, ["header:X-A:asDate"]),
    ({"header:X-A:asAddresses": [{"email": "not an address"}]}, ["header:X-A:asAddresses"]),
    ({"header:X-A:asNothing": "x"}, ["header:X-A:asNothing"]),
])
def test_create_refuses_bad_header_properties(env, spec, properties):
    """RFC 8621 4.6: a field given twice (by a property and header:..., or two forms),
    a form the field does not have (4.1.2), Content-* and MIME-Version on the Email,
    and values not of their form are invalidProperties naming the properties."""
    store, alice, session = env
    answer = session.ok("Email/set", {"create": {"b": dict(spec, mailboxIds={inbox(session): True})}})
    assert answer["created"] is None
    assert answer["notCreated"]["b"]["type"] == "invalidProperties"
    assert answer["notCreated"]["b"]["properties"] == properties


def test_set_answers_creation_ids_by_their_ids(env):
    """RFC 8620 5.3 (erratum 6607): an update or destroy keyed "#cid" acts on the record
    created as cid, and updated/destroyed name it by its id (as Cyrus does; the client
    has that id from "created"); an unknown "#cid" is notFound under its own key.
    Email/set and Mailbox/set alike."""
    store, alice, session = env
    account = session.account_id
    status, answer = session.request([
        ["Email/set", {"accountId": account, "create": {"k": {"mailboxIds": {inbox(session): True},
                                                              "subject": "x"}}}, "0"],
        ["Email/set", {"accountId": account, "update": {"#k": {"keywords/$seen": True}}}, "1"],
        ["Email/get", {"accountId": account, "ids": ["#k"], "properties": ["keywords"]}, "2"],
        ["Email/set", {"accountId": account, "destroy": ["#k", "#nope"]}, "3"],
        ["Mailbox/set", {"accountId": account, "create": {"m": {"name": "Made"}}}, "4"],
        ["Mailbox/set", {"accountId": account, "update": {"#m": {"name": "Renamed"}}}, "5"],
        ["Mailbox/set", {"accountId": account, "destroy": ["#m"]}, "6"]])
    assert status == 200
    made, updated, got, destroyed, box, renamed, gone = (r[1] for r in answer["methodResponses"])
    email_id, box_id = made["created"]["k"]["id"], box["created"]["m"]["id"]
    assert updated["updated"] == {email_id: None} and got["list"][0]["keywords"] == {"$seen": True}
    assert destroyed["destroyed"] == [email_id] and destroyed["notDestroyed"] == {"#nope": {"type": "notFound"}}
    assert renamed["updated"] == {box_id: None} and gone["destroyed"] == [box_id]


def test_query_sorts_of_rfc_8621(env):
    """RFC 8621 4.4.2: from and to sort by the first address's name (else its email),
    hasKeyword/someInThreadHaveKeyword/allInThreadHaveKeyword by the Comparator's
    keyword (without it first when ascending); a keyword sort without keyword is
    invalidArguments. Keyword sorts change under the client, so Email/query says
    canCalculateChanges false and /queryChanges answers cannotCalculateChanges."""
    store, alice, session = env
    zed = deliver(store, alice, b"From: Zed <z@r.test>\r\nTo: a@x.test\r\nSubject: b\r\n\r\nhi\r\n", at=1000)
    amy = deliver(store, alice, b"From: Amy <a@r.test>\r\nTo: z@x.test\r\nSubject: a\r\n\r\nhi\r\n",
                  flags={"\\Flagged"}, at=2000)
    mid = deliver(store, alice, b"From: mid@r.test\r\nTo: Bob <m@x.test>\r\nSubject: c\r\n\r\nyo\r\n",
                  flags={"\\Flagged"}, at=1500)

    def ids(*sort):
        return session.ok("Email/query", {"sort": list(sort)})

    assert ids({"property": "from"})["ids"] == [amy, mid, zed]
    assert ids({"property": "to", "isAscending": False})["ids"] == [amy, mid, zed]
    flagged = ids({"property": "hasKeyword", "keyword": "$Flagged", "isAscending": False}, {"property": "receivedAt"})
    assert flagged["ids"] == [mid, amy, zed] and flagged["canCalculateChanges"] is False
    assert ids({"property": "someInThreadHaveKeyword", "keyword": "$flagged"})["ids"][0] == zed
    assert ids({"property": "allInThreadHaveKeyword", "keyword": "$flagged"})["ids"][0] == zed
    assert ids({"property": "from"})["canCalculateChanges"] is True
    error = session.call("Email/query", {"sort": [{"property": "hasKeyword"}]})
    assert error[0] == "error" and error[1]["type"] == "invalidArguments"
    for args in ({"sort": [{"property": "hasKeyword", "keyword": "$flagged"}]}, {"collapseThreads": True}):
        state = session.ok("Email/query", args)["queryState"]
        error = session.call("Email/queryChanges", dict(args, sinceQueryState=state))
        assert error[0] == "error" and error[1]["type"] == "cannotCalculateChanges", args
    state = session.ok("Email/query", {"sort": [{"property": "from"}]})["queryState"]
    assert session.ok("Email/queryChanges", {"sort": [{"property": "from"}], "sinceQueryState": state})["added"] == []


def test_html_body_value_not_cut_inside_a_tag(env):
    """RFC 8621 4.2: maxBodyValueBytes truncates a text/html value before a tag it
    would cut in two (and marks it isTruncated)."""
    store, alice, session = env
    email_id = deliver(store, alice, b"From: x@r.test\r\nSubject: h\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
                                     b"<p>Hi <a href=\"https://example.com/long\">link</a></p>\r\n")
    values = session.ok("Email/get", {"ids": [email_id], "properties": ["bodyValues"],
                                      "fetchHTMLBodyValues": True, "maxBodyValueBytes": 20})["list"][0]["bodyValues"]
    assert values == {"1": {"value": "<p>Hi ", "isEncodingProblem": False, "isTruncated": True}}


def test_import_and_parse_refuse_blobs_that_are_no_message(env, tmp_path):
    """RFC 8621 4.8/4.9: a blob without RFC 5322 header fields (empty, or arbitrary
    bytes) is invalidEmail to Email/import and notParsable to Email/parse; nothing is stored."""
    from twisted.internet import defer
    from mailserverd.jmap.blobs import Uploads
    store, alice, _session = env
    uploads = Uploads(str(tmp_path / "uploads"), 1 << 20, run=lambda fn, *a: defer.maybeDeferred(fn, *a))
    session = Session(store, alice, uploads)
    junk = result_of(uploads.put(alice, b"\x00\x01 not a message at all"))
    empty = result_of(uploads.put(alice, b""))
    box = inbox(session)
    answer = session.ok("Email/import", {"emails": {"j": {"blobId": junk, "mailboxIds": {box: True}},
                                                    "e": {"blobId": empty, "mailboxIds": {box: True}}}})
    assert answer["created"] is None and answer["oldState"] == answer["newState"]
    assert {k: v["type"] for k, v in answer["notCreated"].items()} == {"j": "invalidEmail", "e": "invalidEmail"}
    parsed = session.ok("Email/parse", {"blobIds": [junk, empty]})
    assert parsed["parsed"] is None and parsed["notParsable"] == [junk, empty]


def test_unknown_creation_id_fails_one_object_not_the_method(env):
    """RFC 8620 5.3: a "#cid" no creation made, in mailboxIds or parentId, fails that
    creation or update (invalidProperties) and not the whole call: an Email created
    beside it in the same call was stored and is reported (it was a method-level
    invalidArguments, so the client never learnt the stored Email's id)."""
    store, alice, session = env
    answer = session.ok("Email/set", {"create": {"ok": {"mailboxIds": {inbox(session): True}, "subject": "kept"},
                                                 "bad": {"mailboxIds": {"#nobox": True}}}})
    kept = answer["created"]["ok"]["id"]
    assert answer["notCreated"]["bad"]["type"] == "invalidProperties"
    assert session.ok("Email/query", {})["ids"] == [kept]
    answer = session.ok("Email/set", {"update": {kept: {"mailboxIds/#nobox": True}}})
    assert answer["notUpdated"][kept]["properties"] == ["mailboxIds"]
    answer = session.ok("Mailbox/set", {"create": {"x": {"name": "X", "parentId": "#nobox"}}})
    assert answer["notCreated"]["x"]["properties"] == ["parentId"]


@pytest.mark.parametrize("prop", ["header:From:asDate", "header:Subject:asAddresses", "header:Received:asDate",
                                  "header:Date:asText", "header:List-Post:asMessageIds", "header:To:asURLs:all"])
def test_get_refuses_a_form_the_field_does_not_have(env, prop):
    """RFC 8621 4.1.3: fetching a forbidden form (header:From:asDate) is invalidArguments,
    in properties and in bodyProperties; fields RFC 5322/2369 do not define take any form."""
    store, alice, session = env
    email_id = deliver(store, alice, GROUPED)
    for args in ({"properties": [prop]}, {"properties": ["bodyStructure"], "bodyProperties": [prop]}):
        error = session.call("Email/get", dict(args, ids=[email_id]))
        assert error[0] == "error" and error[1]["type"] == "invalidArguments", (prop, error)
    fine = session.ok("Email/get", {"ids": [email_id], "properties": [
        "header:X-Anything:asDate", "header:List-Id:asAddresses", "header:Content-Type:asText", "header:From:asRaw"]})
    assert fine["list"][0]["header:From:asRaw"] == " Amy <amy@remote.test>"


def test_create_header_properties_on_text_and_html_body(env):
    """RFC 8621 4.6: header:... properties of the textBody and htmlBody parts go on
    those parts (on the Email when it is one part; then a field the Email sets too is
    invalidProperties); Content-Type there is refused (the part's type makes it)."""
    store, alice, session = env
    box = inbox(session)
    answer = session.ok("Email/set", {"create": {
        "two": {"mailboxIds": {box: True}, "header:X-Top:asText": "top",
                "textBody": [{"partId": "1", "type": "text/plain", "header:X-Text:asText": "tx"}],
                "htmlBody": [{"partId": "2", "type": "text/html", "header:X-Html:asText": "hx"}],
                "bodyValues": {"1": {"value": "plain"}, "2": {"value": "<p>h</p>"}}},
        "one": {"mailboxIds": {box: True}, "textBody": [{"partId": "1", "header:X-Text:asText": "only"}],
                "bodyValues": {"1": {"value": "p"}}},
        "clash": {"mailboxIds": {box: True}, "header:X-Text:asText": "a",
                  "textBody": [{"partId": "1", "header:X-Text:asText": "b"}], "bodyValues": {"1": {"value": "p"}}},
        "ctype": {"mailboxIds": {box: True}, "textBody": [{"partId": "1", "header:Content-Type": " text/html"}],
                  "bodyValues": {"1": {"value": "p"}}}}})
    assert {k: v["type"] for k, v in answer["notCreated"].items()} == {"clash": "invalidProperties",
                                                                       "ctype": "invalidProperties"}
    props = ["header:X-Top:asText", "header:X-Text:asText", "textBody", "htmlBody"]
    body = ["partId", "header:X-Text:asText", "header:X-Html:asText"]
    two = session.ok("Email/get", {"ids": [answer["created"]["two"]["id"]], "properties": props,
                                   "bodyProperties": body})["list"][0]
    assert two["header:X-Top:asText"] == "top" and two["header:X-Text:asText"] is None
    assert two["textBody"][0]["header:X-Text:asText"] == "tx" and two["htmlBody"][0]["header:X-Html:asText"] == "hx"
    one = session.ok("Email/get", {"ids": [answer["created"]["one"]["id"]], "properties": props,
                                   "bodyProperties": body})["list"][0]
    assert one["header:X-Text:asText"] == "only" and one["textBody"][0]["header:X-Text:asText"] == "only"


def test_subject_sort_uses_the_base_subject(env):
    """RFC 8621 4.4.2: subject sorts by the base subject (RFC 5256 2.1): "Re: [list] b"
    sorts as "b", between "a" and "c"."""
    store, alice, session = env
    ids = {subject: deliver(store, alice, b"From: x@r.test\r\nSubject: %s\r\n\r\nhi\r\n" % subject)
           for subject in (b"c", b"Re: [list] b", b"a")}
    answer = session.ok("Email/query", {"sort": [{"property": "subject"}]})
    assert answer["ids"] == [ids[b"a"], ids[b"Re: [list] b"], ids[b"c"]]


def test_body_structure_root_cannot_repeat_an_email_field(env):
    """RFC 8621 4.6: the bodyStructure root part shares the Email's header, so a field
    both set (header:X-A on each, or subject and header:Subject on the root) is
    invalidProperties; a field only the root sets is written."""
    store, alice, session = env
    box = inbox(session)
    root = {"type": "text/plain", "partId": "1", "header:X-A:asText": "root"}
    answer = session.ok("Email/set", {"create": {
        "twice": {"mailboxIds": {box: True}, "header:X-A:asText": "email", "bodyStructure": root,
                  "bodyValues": {"1": {"value": "x"}}},
        "subject": {"mailboxIds": {box: True}, "subject": "s", "bodyValues": {"1": {"value": "x"}},
                    "bodyStructure": {"type": "text/plain", "partId": "1", "header:Subject:asText": "t"}},
        "fine": {"mailboxIds": {box: True}, "bodyStructure": root, "bodyValues": {"1": {"value": "x"}}}}})
    assert {k: v["properties"] for k, v in answer["notCreated"].items()} == {
        "twice": ["bodyStructure"], "subject": ["bodyStructure"]}
    email = session.ok("Email/get", {"ids": [answer["created"]["fine"]["id"]],
                                     "properties": ["header:X-A:asText:all"]})["list"][0]
    assert email["header:X-A:asText:all"] == ["root"]


def test_mailbox_query_changes_without_mailbox_changes(env):
    """RFC 8620 5.6: with no Mailbox created, changed or destroyed since the query
    (a delivery only moves counts), Mailbox/queryChanges has no changes, so a small
    maxChanges is no tooManyChanges; after a creation the whole list is re-sent."""
    store, alice, session = env
    state = session.ok("Mailbox/query", {})["queryState"]
    deliver(store, alice, b"From: a@b.test\r\nSubject: x\r\n\r\nx\r\n")
    quiet = session.ok("Mailbox/queryChanges", {"sinceQueryState": state, "maxChanges": 1, "calculateTotal": True})
    assert quiet["removed"] == [] and quiet["added"] == [] and quiet["total"] == 6
    made = session.ok("Mailbox/set", {"create": {"n": {"name": "New"}}})["created"]["n"]["id"]
    busy = session.ok("Mailbox/queryChanges", {"sinceQueryState": state})
    assert made in busy["removed"] and made in [a["id"] for a in busy["added"]]
    error = session.call("Mailbox/queryChanges", {"sinceQueryState": state, "maxChanges": 1})
    assert error[0] == "error" and error[1]["type"] == "tooManyChanges"
