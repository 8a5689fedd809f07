"""Email/get, /changes, /query, /set and Thread/get (RFC 8621 3, 4) on a real
store: every property of a multipart message, body values, header forms,
keyword and mailbox updates seen by IMAP, and the change log."""

from __future__ import annotations

import pytest

from mailserverd.store.api import DeliveryTarget
from tests.support.jmapstore import Session, make, result_of

MULTIPART = (
    b"From: =?utf-8?q?Bj=C3=B6rn?= <bjorn@remote.test>\r\n"
    b"Sender: list@remote.test\r\n"
    b"To: Alice <alice@example.test>, carol@remote.test\r\n"
    b"Cc: dave@remote.test\r\n"
    b"Reply-To: replies@remote.test\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= and\r\n more\r\n"
    b"Date: Fri, 04 Dec 2026 09:30:00 +0100\r\n"
    b"Message-ID: <m1@remote.test>\r\n"
    b"In-Reply-To: <m0@remote.test>\r\n"
    b"References: <r1@remote.test> <m0@remote.test>\r\n"
    b"List-Unsubscribe: <mailto:unsub@remote.test>, <https://remote.test/u>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=X\r\n\r\n"
    b"--X\r\nContent-Type: multipart/alternative; boundary=Y\r\n\r\n"
    b"--Y\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Hall=C3=B6chen, plain text body\r\n"
    b"--Y\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hallo <b>html</b></p>\r\n"
    b"--Y--\r\n"
    b"--X\r\nContent-Type: application/pdf; name=report.pdf\r\nContent-Disposition: attachment; filename=report.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n"
    b"--X--\r\n")
PLAIN = b"From: x@remote.test\r\nSubject: %s\r\n\r\nhello %s\r\n"


@pytest.fixture
def env(tmp_path):
    store, accounts = make(tmp_path, users=("alice@example.test",))
    alice = accounts["alice@example.test"]
    yield store, alice, Session(store, alice)
    store.store.close()


def deliver(store, account, body, mailbox="INBOX", flags=(), at=None):
    refs = result_of(store.deliver(body, [DeliveryTarget(account, mailbox=mailbox, flags=frozenset(flags))], at))
    return f"e{refs[0].message_id}", refs[0]


def mailbox_ids(session):
    return {b["name"]: b["id"] for b in session.ok("Mailbox/get", {"ids": None})["list"]}


def test_get_every_property_of_a_multipart_message(env):
    """RFC 8621 4.1: metadata, header convenience properties, textBody/htmlBody/
    attachments by the 4.1.4 algorithm, bodyValues and the header:Name:form forms."""
    store, alice, session = env
    email_id, ref = deliver(store, alice, MULTIPART, flags={"\\Seen", "Work"}, at=1_700_000_000)
    email = session.ok("Email/get", {"ids": [email_id], "fetchAllBodyValues": True, "properties": [
        "id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt", "messageId", "inReplyTo",
        "references", "sender", "from", "to", "cc", "bcc", "replyTo", "subject", "sentAt", "hasAttachment",
        "preview", "bodyValues", "textBody", "htmlBody", "attachments", "bodyStructure",
        "header:List-Unsubscribe:asURLs", "header:Subject:asRaw", "header:to:asAddresses:all",
        "header:Date:asDate"]})["list"][0]
    assert email["id"] == email_id and email["threadId"] == f"t{ref.message_id}"
    assert email["mailboxIds"] == {mailbox_ids(session)["INBOX"]: True}
    assert email["keywords"] == {"$seen": True, "work": True}
    assert email["size"] == len(MULTIPART) and email["receivedAt"] == "2023-11-14T22:13:20Z"
    assert email["messageId"] == ["m1@remote.test"] and email["inReplyTo"] == ["m0@remote.test"]
    assert email["references"] == ["r1@remote.test", "m0@remote.test"]
    assert email["from"] == [{"name": "Björn", "email": "bjorn@remote.test"}]
    assert email["to"] == [{"name": "Alice", "email": "alice@example.test"},
                           {"name": None, "email": "carol@remote.test"}]
    assert email["sender"] == [{"name": None, "email": "list@remote.test"}] and email["bcc"] is None
    assert email["subject"] == "Grüße and more" and email["sentAt"] == "2026-12-04T09:30:00+01:00"
    assert email["hasAttachment"] is True and "plain text body" in email["preview"]
    text, html, attachments = email["textBody"], email["htmlBody"], email["attachments"]
    assert [p["type"] for p in text] == ["text/plain"] and [p["type"] for p in html] == ["text/html"]
    assert [(p["type"], p["name"], p["disposition"], p["size"]) for p in attachments] == [
        ("application/pdf", "report.pdf", "attachment", 9)]
    assert email["bodyValues"][text[0]["partId"]]["value"] == "Hallöchen, plain text body"
    assert email["bodyValues"][html[0]["partId"]]["value"] == "<p>Hallo <b>html</b></p>"
    structure = email["bodyStructure"]
    assert structure["type"] == "multipart/mixed" and structure["partId"] is None
    assert [p["type"] for p in structure["subParts"]] == ["multipart/alternative", "application/pdf"]
    assert email["header:List-Unsubscribe:asURLs"] == ["mailto:unsub@remote.test", "https://remote.test/u"]
    assert email["header:Subject:asRaw"] == " =?utf-8?q?Gr=C3=BC=C3=9Fe?= and\r\n more"
    assert len(email["header:to:asAddresses:all"]) == 1
    assert email["header:Date:asDate"] == "2026-12-04T09:30:00+01:00"


def test_body_values_truncate_and_blobs_decode(env):
    """maxBodyValueBytes truncates on a character boundary (isTruncated); a part's
    blobId downloads its decoded octets."""
    store, alice, session = env
    email_id, _ = deliver(store, alice, MULTIPART)
    email = session.ok("Email/get", {"ids": [email_id], "properties": ["bodyValues", "attachments", "textBody"],
                                     "fetchTextBodyValues": True, "maxBodyValueBytes": 5})["list"][0]
    value = email["bodyValues"][email["textBody"][0]["partId"]]
    assert value == {"value": "Hall", "isEncodingProblem": False, "isTruncated": True}  # ö is 2 octets
    from mailserverd.jmap import blobs
    data = result_of(__import__("twisted.internet.defer", fromlist=["x"]).ensureDeferred(
        blobs.read(store, None, alice, email["attachments"][0]["blobId"])))
    assert data == b"%PDF-1.4\n"


def test_query_filters_sort_and_window(env):
    """Email/query: inMailbox, hasKeyword/notKeyword, size, dates, text; sort by
    receivedAt desc and subject; position/limit/anchor and calculateTotal."""
    store, alice, session = env
    ids = [deliver(store, alice, PLAIN % (s, s), flags=f, at=t)[0] for s, f, t in (
        (b"bravo", {"\\Flagged"}, 1000), (b"alpha", (), 2000), (b"charlie", (), 3000))]
    deliver(store, alice, PLAIN % (b"junk", b"junk"), mailbox="Junk", at=4000)
    inbox = mailbox_ids(session)["INBOX"]
    query = session.ok("Email/query", {"filter": {"inMailbox": inbox},
                                       "sort": [{"property": "receivedAt", "isAscending": False}],
                                       "calculateTotal": True})
    assert query["ids"] == ids[::-1] and query["total"] == 3
    by_subject = session.ok("Email/query", {"filter": {"inMailbox": inbox}, "sort": [{"property": "subject"}]})
    assert by_subject["ids"] == [ids[1], ids[0], ids[2]]
    assert session.ok("Email/query", {"filter": {"hasKeyword": "$flagged"}})["ids"] == [ids[0]]
    assert len(session.ok("Email/query", {"filter": {"notKeyword": "$flagged"}})["ids"]) == 3
    assert session.ok("Email/query", {"filter": {"after": "1970-01-01T00:25:00Z",
                                                  "before": "1970-01-01T00:45:00Z"}})["ids"] == [ids[1]]
    assert session.ok("Email/query", {"filter": {"text": "CHARLIE"}})["ids"] == [ids[2]]
    assert len(session.ok("Email/query", {"filter": {"inMailboxOtherThan": [inbox]}})["ids"]) == 1
    page = session.ok("Email/query", {"filter": {"inMailbox": inbox}, "sort": [{"property": "receivedAt"}],
                                      "anchor": ids[1], "anchorOffset": -1, "limit": 2})
    assert page["ids"] == ids[:2] and page["position"] == 0
    page = session.ok("Email/query", {"sort": [{"property": "receivedAt"}], "position": -2})
    assert page["position"] == 2 and len(page["ids"]) == 2
    errors = [session.call("Email/query", args)[1]["type"] for args in (
        {"anchor": "e999999"}, {"filter": {"before": "yesterday"}}, {"filter": {"bogus": 1}},
        {"sort": [{"property": "bogus"}]})]  # from is a sort now (test_jmap_audit)
    assert errors == ["anchorNotFound", "invalidArguments", "unsupportedFilter", "unsupportedSort"]


def test_set_keywords_and_mailboxes_show_in_imap(env):
    """Email/set keywords (patch keywords/$seen) and mailboxIds (move, add) write the
    store's flags and memberships, as IMAP sees them; destroy expunges."""
    store, alice, session = env
    email_id, ref = deliver(store, alice, PLAIN % (b"one", b"one"), flags={"Custom"})
    boxes = mailbox_ids(session)
    answer = session.ok("Email/set", {"update": {email_id: {"keywords/$seen": True, "keywords/$flagged": True}}})
    assert answer["updated"] == {email_id: None}, answer
    inbox = result_of(store.get_mailbox(alice, "INBOX"))
    flags = result_of(store.list_messages(alice, inbox.id))[0].flags
    assert flags == {"\\Seen", "\\Flagged", "Custom"}
    session.ok("Email/set", {"update": {email_id: {"keywords/$flagged": None}}})
    session.ok("Email/set", {"update": {email_id: {"mailboxIds": {boxes["Archive"]: True}}}})
    assert result_of(store.list_messages(alice, inbox.id)) == []
    archive = result_of(store.get_mailbox(alice, "Archive"))
    moved = result_of(store.list_messages(alice, archive.id))
    assert [m.message_id for m in moved] == [ref.message_id] and moved[0].flags == {"\\Seen", "Custom"}
    session.ok("Email/set", {"update": {email_id: {f"mailboxIds/{boxes['Trash']}": True}}})
    email = session.ok("Email/get", {"ids": [email_id], "properties": ["mailboxIds", "keywords"]})["list"][0]
    assert email == {"id": email_id, "mailboxIds": {boxes["Archive"]: True, boxes["Trash"]: True},
                     "keywords": {"$seen": True, "custom": True}}
    refused = session.ok("Email/set", {"update": {email_id: {"mailboxIds": {}}, "e999999": {"keywords": {}}},
                                       "create": {"x": {}}})
    assert refused["notUpdated"][email_id]["type"] == "invalidProperties"
    assert refused["notUpdated"]["e999999"]["type"] == "notFound"
    assert refused["notCreated"]["x"]["type"] == "invalidProperties"
    assert session.ok("Email/set", {"destroy": [email_id]})["destroyed"] == [email_id]
    assert session.ok("Email/get", {"ids": [email_id]})["notFound"] == [email_id]


def test_changes_and_threads(env):
    """Email/changes from the change log: created, updated (a flag set over IMAP),
    destroyed; maxChanges pages; Thread/get gives each email its own thread."""
    store, alice, session = env
    start = session.ok("Email/get", {"ids": []})["state"]
    first, ref = deliver(store, alice, PLAIN % (b"a", b"a"))
    second, _ = deliver(store, alice, PLAIN % (b"b", b"b"))
    changes = session.ok("Email/changes", {"sinceState": start})
    assert changes["created"] == [first, second] and changes["updated"] == []
    middle = changes["newState"]
    result_of(store.store_flags(alice, ref.mailbox_id, [ref.uid], ["\\Seen"], "add"))  # as IMAP STORE
    session.ok("Email/set", {"destroy": [second]})
    changes = session.ok("Email/changes", {"sinceState": middle})
    assert (changes["created"], changes["updated"], changes["destroyed"]) == ([], [first], [second])
    page = session.ok("Email/changes", {"sinceState": start, "maxChanges": 1})
    assert page["hasMoreChanges"] is True and page["created"] == [first]
    threads = session.ok("Thread/get", {"ids": [f"t{ref.message_id}", "t999999"]})
    assert threads["list"] == [{"id": f"t{ref.message_id}", "emailIds": [first]}]
    assert threads["notFound"] == ["t999999"]
    thread_changes = session.ok("Thread/changes", {"sinceState": start})
    assert thread_changes["created"] == [f"t{ref.message_id}"]


def test_result_reference_query_then_get(env):
    """The RFC 8620 3.7 pattern a mail list uses: Email/query, then Email/get by #ids."""
    store, alice, session = env
    ids = [deliver(store, alice, PLAIN % (b"s%d" % n, b"x"), at=1000 + n)[0] for n in range(3)]
    status, answer = session.request([
        ["Email/query", {"accountId": session.account_id, "sort": [{"property": "receivedAt",
                                                                     "isAscending": False}], "limit": 2}, "q"],
        ["Email/get", {"accountId": session.account_id, "properties": ["subject", "threadId"],
                       "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"}}, "g"],
        ["Thread/get", {"accountId": session.account_id,
                        "#ids": {"resultOf": "g", "name": "Email/get", "path": "/list/*/threadId"}}, "t"],
    ])
    got = answer["methodResponses"]
    assert [e["subject"] for e in got[1][1]["list"]] == ["s2", "s1"]
    assert [t["emailIds"] for t in got[2][1]["list"]] == [[ids[2]], [ids[1]]]


def test_import_an_uploaded_message(env, tmp_path):
    """Email/import (RFC 8621 4.8): an upload becomes one Email in two mailboxes with
    its keywords and receivedAt, visible over IMAP; bad blobs and mailboxes are SetErrors."""
    from twisted.internet import defer
    from mailserverd.jmap.blobs import Uploads
    store, alice, _session = env
    uploads = Uploads(str(tmp_path / "uploads"), 1 << 20, run=lambda fn, *a: defer.maybeDeferred(fn, *a))
    session = Session(store, alice, uploads)
    blob_id = result_of(uploads.put(alice, PLAIN % (b"imported", b"imported")))
    boxes = mailbox_ids(session)
    answer = session.ok("Email/import", {"emails": {
        "a": {"blobId": blob_id, "mailboxIds": {boxes["Archive"]: True, boxes["Drafts"]: True},
              "keywords": {"$seen": True, "$draft": True}, "receivedAt": "2026-01-02T03:04:05Z"},
        "b": {"blobId": "u" + "0" * 64, "mailboxIds": {boxes["INBOX"]: True}},
        "c": {"blobId": blob_id, "mailboxIds": {"m999999": True}},
        "d": {"blobId": blob_id, "mailboxIds": {}}}})
    email_id = answer["created"]["a"]["id"]
    assert {k: v["type"] for k, v in answer["notCreated"].items()} == {
        "b": "blobNotFound", "c": "invalidProperties", "d": "invalidProperties"}
    email = session.ok("Email/get", {"ids": [email_id], "properties": [
        "mailboxIds", "keywords", "receivedAt", "subject", "threadId"]})["list"][0]
    assert answer["created"]["a"]["threadId"] == email["threadId"], "one threadId for the Email"
    assert email["mailboxIds"] == {boxes["Archive"]: True, boxes["Drafts"]: True}
    assert email["keywords"] == {"$seen": True, "$draft": True}
    assert email["receivedAt"] == "2026-01-02T03:04:05Z" and email["subject"] == "imported"
    archive = result_of(store.get_mailbox(alice, "Archive"))
    assert result_of(store.list_messages(alice, archive.id))[0].flags == {"\\Seen", "\\Draft"}


def test_parse_an_uploaded_message(env, tmp_path):
    """Email/parse (RFC 8621 4.9): an upload read as an Email, with null id/mailboxIds/
    keywords; its parts get blob ids that download the decoded part; unknown blobs
    are notFound."""
    from twisted.internet import defer
    from mailserverd.jmap import blobs
    store, alice, _session = env
    uploads = blobs.Uploads(str(tmp_path / "uploads"), 1 << 20, run=lambda fn, *a: defer.maybeDeferred(fn, *a))
    session = Session(store, alice, uploads)
    blob_id = result_of(uploads.put(alice, MULTIPART))
    answer = session.ok("Email/parse", {"blobIds": [blob_id, "u" + "1" * 64], "fetchTextBodyValues": True,
                                        "properties": ["id", "blobId", "subject", "from", "textBody",
                                                       "attachments", "bodyValues", "keywords", "size"]})
    email = answer["parsed"][blob_id]
    assert email["id"] is None and email["keywords"] is None and email["blobId"] == blob_id
    assert email["subject"] == "Grüße and more" and email["size"] == len(MULTIPART)
    assert email["bodyValues"][email["textBody"][0]["partId"]]["value"] == "Hallöchen, plain text body"
    assert answer["notFound"] == ["u" + "1" * 64]
    part = result_of(defer.ensureDeferred(blobs.read(store, uploads, alice, email["attachments"][0]["blobId"])))
    assert part == b"%PDF-1.4\n"


def test_create_a_draft_with_an_attachment(env, tmp_path):
    """Email/set create (RFC 8621 4.6) composes a MIME message from JMAP properties
    (addresses with non-ASCII names, text and HTML bodies, an uploaded attachment),
    stores it in Drafts with $draft, and reads back the same values; an update in
    the same request may name it "#cid"; a missing blob is blobNotFound."""
    from twisted.internet import defer
    from mailserverd.jmap.blobs import Uploads
    store, alice, _session = env
    uploads = Uploads(str(tmp_path / "uploads"), 1 << 20, run=lambda fn, *a: defer.maybeDeferred(fn, *a))
    session = Session(store, alice, uploads)
    blob_id = result_of(uploads.put(alice, b"%PDF-1.4 attachment"))
    drafts = mailbox_ids(session)["Drafts"]
    status, answer = session.request([["Email/set", {"accountId": session.account_id, "create": {"d": {
        "mailboxIds": {drafts: True}, "keywords": {"$draft": True},
        "from": [{"name": "Ålice", "email": "alice@example.test"}],
        "to": [{"name": None, "email": "bob@remote.test"}], "subject": "Entwurf — draft",
        "sentAt": "2026-12-05T10:00:00+01:00", "inReplyTo": ["orig@remote.test"],
        "textBody": [{"partId": "t", "type": "text/plain"}], "htmlBody": [{"partId": "h", "type": "text/html"}],
        "bodyValues": {"t": {"value": "Grüße\nzweite Zeile"}, "h": {"value": "<p>Grüße</p>"}},
        "attachments": [{"blobId": blob_id, "type": "application/pdf", "name": "plan.pdf"}]},
        "bad": {"mailboxIds": {drafts: True},
                "attachments": [{"blobId": "u" + "2" * 64, "type": "text/plain"}]}},
        "update": {"#d": {"keywords/$flagged": True}}}, "0"]])
    result = answer["methodResponses"][0][1]
    email_id = result["created"]["d"]["id"]
    assert result["notCreated"]["bad"]["type"] == "blobNotFound"
    assert result["notCreated"]["bad"]["notFound"] == ["u" + "2" * 64]
    assert result["updated"] == {email_id: None}, result  # "#d" answered by its id (RFC 8620 5.3)
    email = session.ok("Email/get", {"ids": [email_id], "fetchAllBodyValues": True, "properties": [
        "from", "to", "subject", "sentAt", "inReplyTo", "keywords", "mailboxIds", "textBody", "htmlBody",
        "attachments", "bodyValues", "messageId"]})["list"][0]
    assert email["from"] == [{"name": "Ålice", "email": "alice@example.test"}]
    assert email["to"] == [{"name": None, "email": "bob@remote.test"}]
    assert email["subject"] == "Entwurf — draft" and email["sentAt"] == "2026-12-05T10:00:00+01:00"
    assert email["inReplyTo"] == ["orig@remote.test"] and email["messageId"][0].endswith("@example.test")
    assert email["keywords"] == {"$draft": True, "$flagged": True} and email["mailboxIds"] == {drafts: True}
    assert email["bodyValues"][email["textBody"][0]["partId"]]["value"].strip() == "Grüße\nzweite Zeile"
    assert email["bodyValues"][email["htmlBody"][0]["partId"]]["value"].strip() == "<p>Grüße</p>"
    [attachment] = email["attachments"]
    assert (attachment["type"], attachment["name"], attachment["size"]) == ("application/pdf", "plan.pdf", 19)


def test_search_snippets_mark_the_terms(env):
    """SearchSnippet/get (RFC 8621 5.1): subject and preview with the filter's text and
    subject terms in <mark>, HTML-escaped; null where nothing matches; unknown ids notFound."""
    store, alice, session = env
    email_id, _ = deliver(store, alice, b"From: x@remote.test\r\nSubject: Budget <draft> for 2027\r\n\r\n"
                                         b"the budget numbers are attached\r\n")
    answer = session.ok("SearchSnippet/get", {"filter": {"operator": "OR", "conditions": [
        {"text": "BUDGET"}, {"subject": "2027"}]}, "emailIds": [email_id, "e999999"]})
    assert answer["list"] == [{"emailId": email_id,
                               "subject": "<mark>Budget</mark> &lt;draft&gt; for <mark>2027</mark>",
                               "preview": "the <mark>budget</mark> numbers are attached"}]
    assert answer["notFound"] == ["e999999"]
    plain = session.ok("SearchSnippet/get", {"filter": {"subject": "nothing"}, "emailIds": [email_id]})
    assert plain["list"] == [{"emailId": email_id, "subject": None, "preview": None}]


def apply_query_changes(ids, changes):
    """What a client does with a /queryChanges answer (RFC 8620 5.6)."""
    removed = set(changes["removed"])
    ids = [i for i in ids if i not in removed]
    for item in sorted(changes["added"], key=lambda a: a["index"]):
        ids.insert(item["index"], item["id"])
    return ids


def test_query_changes_rebuild_the_current_results(env):
    """Email/queryChanges (RFC 8620 5.6): applying removed/added to the old result gives
    the new one after deliveries, a keyword change that moves an email in or out of a
    hasKeyword filter, and a destroy; tooManyChanges past maxChanges."""
    store, alice, session = env
    for n in range(4):
        deliver(store, alice, PLAIN % (b"s%d" % n, b"x"), at=1000 + n)
    inbox = mailbox_ids(session)["INBOX"]
    queries = [{"filter": {"inMailbox": inbox}, "sort": [{"property": "receivedAt", "isAscending": False}]},
               {"filter": {"notKeyword": "$seen"}, "sort": [{"property": "subject"}]}]
    before = [session.ok("Email/query", q) for q in queries]
    assert all(b["canCalculateChanges"] for b in before)
    ids = before[0]["ids"]
    deliver(store, alice, PLAIN % (b"new", b"x"), at=5000)
    session.ok("Email/set", {"update": {ids[1]: {"keywords/$seen": True}}, "destroy": [ids[2]]})
    for query, old in zip(queries, before):
        changes = session.ok("Email/queryChanges", dict(query, sinceQueryState=old["queryState"],
                                                        calculateTotal=True))
        now = session.ok("Email/query", query)["ids"]
        assert apply_query_changes(old["ids"], changes) == now and changes["total"] == len(now)
    refused = session.call("Email/queryChanges", dict(queries[0], sinceQueryState=before[0]["queryState"],
                                                      maxChanges=1))
    assert refused[1]["type"] == "tooManyChanges"


def test_mailbox_query_changes(env):
    """Mailbox/queryChanges: after a create, a rename that moves a mailbox in name order
    and a destroy, applying the answer to the old result gives the new one."""
    store, alice, session = env
    query = {"sort": [{"property": "name"}], "sortAsTree": True}
    old = session.ok("Mailbox/query", query)
    boxes = mailbox_ids(session)
    session.ok("Mailbox/set", {"create": {"a": {"name": "Aardvark"}},
                               "update": {boxes["Archive"]: {"name": "Zebra"}},
                               "destroy": [boxes["Junk"]]})
    changes = session.ok("Mailbox/queryChanges", dict(query, sinceQueryState=old["queryState"]))
    assert apply_query_changes(old["ids"], changes) == session.ok("Mailbox/query", query)["ids"]


def test_copy_has_no_other_account_to_copy_from(env):
    """Email/copy (RFC 8620 5.4): the same account is invalidArguments, another is
    fromAccountNotFound (an account reaches only itself)."""
    store, alice, session = env
    assert session.call("Email/copy", {"fromAccountId": session.account_id, "create": {}})[1]["type"] == \
        "invalidArguments"
    assert session.call("Email/copy", {"fromAccountId": "a999", "create": {}})[1]["type"] == "fromAccountNotFound"


def test_sql_and_python_query_paths_agree(env):
    """The filters Email/query runs in SQL (inMailbox, hasKeyword/notKeyword on system
    keywords) give the same ids, order, totals and pages as the general path (the same
    filter wrapped in an AND operator), including a keyword set in another mailbox."""
    store, alice, session = env
    flag_sets = [(), ("\\Seen",), ("\\Flagged",), ("\\Seen", "\\Flagged"), ("\\Draft",), ("\\Answered",)]
    for n, flags in enumerate(flag_sets * 2):
        deliver(store, alice, PLAIN % (b"m%d" % n, b"x"), mailbox="INBOX" if n % 3 else "Archive",
                flags=flags, at=1000 + n * 7 % 13)
    boxes = mailbox_ids(session)
    first = session.ok("Email/query", {"filter": {"inMailbox": boxes["INBOX"]}})["ids"][0]
    session.ok("Email/set", {"update": {first: {f"mailboxIds/{boxes['Trash']}": True}}})
    trash = result_of(store.get_mailbox(alice, "Trash"))
    ref = result_of(store.list_messages(alice, trash.id))[0]
    result_of(store.store_flags(alice, trash.id, [ref.uid], ["\\Seen"], "add"))  # $seen via another mailbox
    filters = [{"inMailbox": boxes["INBOX"]}, {"notKeyword": "$seen"}, {"hasKeyword": "$FLAGGED"},
               {"inMailbox": boxes["INBOX"], "notKeyword": "$seen", "hasKeyword": "$flagged"},
               {"inMailbox": boxes["Archive"], "hasKeyword": "$draft"}, {"inMailbox": "m999999"}]
    for condition in filters:
        for sort in ([{"property": "receivedAt", "isAscending": False}], [{"property": "size"}], []):
            for window in ({"position": 0}, {"position": 1, "limit": 2}):
                args = dict(window, sort=sort, calculateTotal=True)
                fast = session.ok("Email/query", dict(args, filter=condition))
                slow = session.ok("Email/query", dict(args, filter={"operator": "AND", "conditions": [condition]}))
                assert (fast["ids"], fast["total"], fast["position"]) == \
                    (slow["ids"], slow["total"], slow["position"]), (condition, sort, window)


def test_every_property_of_corpus_mail(env):
    """Real mail (tests/data ham-200 and spam-50): Email/get of every property and
    header form, all body values, and Email/parse of the same blobs never fail and
    always give UTF-8 JSON."""
    import json
    import mailbox
    import os
    from mailserverd.jmap import email as jmap_email
    from mailserverd.store.mail import Delivery
    store, alice, session = env
    data = os.path.join(os.path.dirname(__file__), "..", "data")
    bodies = []
    for name in ("ham-200.mbox", "spam-50.mbox"):
        for message in mailbox.mbox(os.path.join(data, name)):
            bodies.append(message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    store.store.mail.deliver_many([Delivery(body, [DeliveryTarget(alice)]) for body in bodies])
    ids = session.ok("Email/query", {})["ids"]
    assert len(ids) == len(bodies)
    properties = list(jmap_email.PROPERTIES) + ["header:List-Unsubscribe:asURLs:all",
                                                 "header:Received:all", "header:X-Mailer:asDate:all",
                                                 "header:To:asAddresses"]  # Received has no asDate (RFC 8621 4.1.3)
    for start in range(0, len(ids), 50):
        got = session.call("Email/get", {"ids": ids[start:start + 50], "properties": properties,
                                         "fetchAllBodyValues": True, "maxBodyValueBytes": 200,
                                         "bodyProperties": list(jmap_email.BODY_PROPERTIES)})
        assert got[0] == "Email/get" and len(got[1]["list"]) == len(ids[start:start + 50]), got
        json.dumps(got, ensure_ascii=False).encode("utf-8")
        parsed = session.call("Email/parse", {"blobIds": [f"b{i[1:]}" for i in ids[start:start + 50]]})
        assert parsed[0] == "Email/parse" and not parsed[1]["notParsable"], parsed
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
