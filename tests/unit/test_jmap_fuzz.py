"""Hypothesis: every JMAP method given arbitrary JSON arguments answers with a
result or a named method error (RFC 8620 3.6.2), never serverFail (which
would mean an unhandled exception), and the store is left usable."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserverd.jmap import api
from mailserverd.store.api import DeliveryTarget
from tests.support.jmapstore import Session, make, result_of

MESSAGE = (b"From: Bob <bob@remote.test>\r\nTo: alice@example.test\r\nSubject: fuzz\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
           b"--b\r\nContent-Type: image/png; name=x.png\r\n\r\nPNG\r\n--b--\r\n")
KEYS = ["ids", "properties", "bodyProperties", "filter", "sort", "position", "anchor", "anchorOffset",
        "limit", "calculateTotal", "sinceState", "maxChanges", "create", "update", "destroy", "ifInState",
        "fetchAllBodyValues", "maxBodyValueBytes", "onDestroyRemoveEmails", "emails", "blobIds",
        "sinceQueryState", "emailIds", "fromAccountId", "sortAsTree", "filterAsTree", "collapseThreads",
        "inMailbox", "name", "parentId", "keywords", "mailboxIds", "operator", "conditions", "property",
        "isAscending", "#ids", "resultOf", "path", "text", "subject", "before", "after"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 2 ** 60), st.sampled_from(
    ["", "e1", "m1", "t1", "#a", "0", "1", "$seen", "INBOX", "x/y", "2026-01-01T00:00:00Z", "a1",
     "receivedAt", "subject", "name", "AND", "NOT", "/ids", "header:From:asAddresses", "u" + "0" * 64]))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)), max_leaves=12)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    store, accounts = make(tmp_path_factory.mktemp("fuzz"), users=("alice@example.test",))
    alice = accounts["alice@example.test"]
    for _ in range(2):
        result_of(store.deliver(MESSAGE, [DeliveryTarget(alice)]))
    yield Session(store, alice)
    store.store.close()


GET = ["ids", "properties"]
CHANGES = ["sinceState", "maxChanges"]
QUERY = ["filter", "sort", "position", "anchor", "anchorOffset", "limit", "calculateTotal"]
QUERY_CHANGES = ["filter", "sort", "sinceQueryState", "maxChanges", "upToId", "calculateTotal"]
SET = ["ifInState", "create", "update", "destroy"]
BODY = ["bodyProperties", "fetchTextBodyValues", "fetchHTMLBodyValues", "fetchAllBodyValues", "maxBodyValueBytes"]
ARGUMENTS = {  # the arguments each method knows, so most calls get past the unknown-argument check
    "Core/echo": KEYS, "Mailbox/get": GET, "Mailbox/changes": CHANGES,
    "Mailbox/query": QUERY + ["sortAsTree", "filterAsTree"],
    "Mailbox/queryChanges": QUERY_CHANGES + ["sortAsTree", "filterAsTree"],
    "Mailbox/set": SET + ["onDestroyRemoveEmails"], "Email/get": GET + BODY, "Email/changes": CHANGES,
    "Email/query": QUERY + ["collapseThreads"], "Email/queryChanges": QUERY_CHANGES + ["collapseThreads"],
    "Email/set": SET, "Email/import": ["ifInState", "emails"], "Email/parse": ["blobIds", "properties"] + BODY,
    "Email/copy": ["fromAccountId", "create", "ifInState", "onSuccessDestroyOriginal"],
    "Thread/get": GET, "Thread/changes": CHANGES, "SearchSnippet/get": ["filter", "emailIds"],
    "Quota/get": GET, "Quota/changes": CHANGES, "Quota/query": QUERY, "Quota/queryChanges": QUERY_CHANGES,
    "Identity/get": GET, "Identity/changes": CHANGES, "Identity/set": SET,
    "EmailSubmission/get": GET, "EmailSubmission/changes": CHANGES, "EmailSubmission/query": QUERY,
    "EmailSubmission/queryChanges": QUERY_CHANGES,
    "EmailSubmission/set": SET + ["onSuccessUpdateEmail", "onSuccessDestroyEmail"],
    "VacationResponse/get": GET, "VacationResponse/set": SET}


@st.composite
def calls(draw):
    name = draw(st.sampled_from(sorted(api.METHODS)))
    args = draw(st.dictionaries(st.sampled_from(ARGUMENTS[name]), JSON, max_size=4))
    return name, args


def test_every_method_has_fuzzed_arguments():
    """The fuzz below covers every registered method."""
    assert set(ARGUMENTS) == set(api.METHODS)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=calls())
def test_no_method_fails_on_arbitrary_arguments(session, call):
    """Any arguments: a result or a named error, never serverFail."""
    name, args = call
    args = dict(args, accountId=session.account_id)
    status, answer = session.request([[name, args, "0"]])
    assert status == 200
    response = answer["methodResponses"][0]
    assert not (response[0] == "error" and response[1]["type"] == "serverFail"), (name, args)


from mailserverd.jmap import email as jmap_email  # noqa: E402

IDS = st.sampled_from(["e1", "e2", "e3", "m1", "m2", "m3", "t1", "#c", "b1", "b1.1", "b1.2", "u" + "0" * 64])
PATCH_KEYS = st.sampled_from(["keywords", "mailboxIds", "keywords/$seen", "keywords/$flagged", "mailboxIds/m2",
                              "mailboxIds/m1", "keywords/a~1b", "subject", "name", "parentId", "isSubscribed",
                              "role", "sortOrder"])
PATCH_VALUES = st.one_of(st.none(), st.booleans(), st.just({}), st.just({"m1": True}), st.just({"$seen": True}),
                         st.text(max_size=8), st.just("m1"), st.just("#c"))
PROPS = st.lists(st.sampled_from(list(jmap_email.PROPERTIES) + ["header:Subject:asText", "header:X:all",
                                                                 "header:From:asAddresses:all", "bogus"]),
                 max_size=6)


@st.composite
def structured_calls(draw):
    kind = draw(st.sampled_from(["get", "set", "mailbox", "query", "parse", "import"]))
    if kind == "get":
        return "Email/get", {"ids": draw(st.lists(IDS, max_size=3)), "properties": draw(PROPS),
                             "fetchAllBodyValues": draw(st.booleans()),
                             "maxBodyValueBytes": draw(st.integers(0, 40))}
    if kind == "set":
        return "Email/set", {"update": draw(st.dictionaries(IDS, st.dictionaries(PATCH_KEYS, PATCH_VALUES,
                                                                                 max_size=3), max_size=2)),
                             "destroy": draw(st.lists(IDS, max_size=1))}
    if kind == "mailbox":
        return "Mailbox/set", {"create": {"c": draw(st.dictionaries(PATCH_KEYS, PATCH_VALUES, max_size=3))},
                               "update": draw(st.dictionaries(IDS, st.dictionaries(PATCH_KEYS, PATCH_VALUES,
                                                                                   max_size=2), max_size=1))}
    if kind == "query":
        condition = draw(st.dictionaries(st.sampled_from(sorted(jmap_email.FILTERS)), st.one_of(
            st.text(max_size=5), st.integers(0, 10 ** 6), st.booleans(), st.lists(IDS, max_size=2),
            st.just("2026-01-01T00:00:00Z")), max_size=2))
        return "Email/query", {"filter": condition, "sort": [{"property": draw(st.sampled_from(
            jmap_email.SORT_PROPERTIES)), "isAscending": draw(st.booleans())}],
            "position": draw(st.integers(-3, 3)), "limit": draw(st.integers(0, 3)),
            "anchor": draw(st.one_of(st.none(), IDS))}
    if kind == "parse":
        return "Email/parse", {"blobIds": draw(st.lists(IDS, max_size=2)), "properties": draw(PROPS)}
    return "Email/import", {"emails": {"c": {"blobId": draw(IDS), "mailboxIds": draw(st.dictionaries(
        IDS, st.just(True), max_size=2)), "keywords": draw(st.dictionaries(st.text(max_size=4), st.just(True),
                                                                         max_size=2))}}}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=structured_calls())
def test_no_method_fails_on_plausible_arguments(session, call):
    """Well-typed but odd arguments (ids of every kind, patches, header forms, filters)
    reach the deep code: still a result or a named error, never serverFail."""
    name, args = call
    status, answer = session.request([[name, dict(args, accountId=session.account_id), "0"]])
    response = answer["methodResponses"][0]
    assert not (response[0] == "error" and response[1]["type"] == "serverFail"), (name, args)
