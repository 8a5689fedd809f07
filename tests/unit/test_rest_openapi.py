"""/v1/openapi.json (mailserverd/jmap/openapi.py) stays equal to the code of the /v1
REST API (mailserverd/jmap/rest.py): routes, methods, request fields, the properties of
every answer, and the error statuses. tests/interop/test_rest_schemathesis.py checks the
running daemon's answers against the same document."""

from __future__ import annotations

from mailserverd.jmap import openapi, rest

EMAIL = {"id": "e1", "threadId": "t1", "mailboxIds": {"m2": True, "m1": True}, "keywords": {"$seen": True},
         "size": 10, "receivedAt": "2026-12-05T10:00:00Z", "subject": "s",
         "from": [{"name": None, "email": "a@example.test"}], "to": [], "cc": None, "preview": "p",
         "hasAttachment": True, "bcc": None, "replyTo": None, "sentAt": None, "messageId": ["x@y"],
         "inReplyTo": None, "textBody": [{"partId": "1", "type": "text/plain"}], "htmlBody": [],
         "attachments": [{"blobId": "b1", "name": "a.pdf", "type": "application/pdf", "size": 3}],
         "bodyValues": {"1": {"value": "hello\n"}}}


def schema(name: str) -> dict:
    return openapi.document()["components"]["schemas"][name]


def properties(node: dict) -> dict:
    """The properties of a schema, through $ref and allOf."""
    if "$ref" in node:
        return properties(schema(node["$ref"].rsplit("/", 1)[1]))
    out = dict(node.get("properties", {}))
    for part in node.get("allOf", []):
        out.update(properties(part))
    return out


def required(node: dict) -> set:
    if "$ref" in node:
        return required(schema(node["$ref"].rsplit("/", 1)[1]))
    out = set(node.get("required", []))
    for part in node.get("allOf", []):
        out |= required(part)
    return out


def test_document_is_openapi_3_1_with_the_code_routes():
    """The document is OpenAPI 3.1 and names exactly rest.ROUTES with their methods (HEAD
    goes with GET and is not listed); no schema uses 3.0's nullable."""
    document = openapi.document()
    assert document["openapi"] == "3.1.0"
    declared = {path: sorted(method.upper() for method in operations)
                for path, operations in document["paths"].items()}
    assert declared == {path: sorted(set(methods) - {"HEAD"}) for path, methods in rest.ROUTES.items()}
    assert "nullable" not in repr(document)


def test_request_fields_are_the_accepted_ones():
    """POST /v1/messages and PATCH /v1/messages/{id} declare exactly the fields rest.py accepts."""
    paths = openapi.document()["paths"]
    assert set(properties(schema("Send"))) == set(rest.SEND_FIELDS)
    patch = paths["/v1/messages/{id}"]["patch"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(properties(patch)) == set(rest.PATCH_FIELDS)


def test_answers_have_exactly_the_declared_properties():
    """summary(), full() and folder() build objects whose keys are the declared properties,
    all of them required: the message shape of the issue (id, user_id, folder_id, from
    {name, email}, to, cc, subject, body, html, attachments, is_read, received_at) included."""
    summary = rest.summary(EMAIL)
    assert set(summary) == set(properties(schema("MessageSummary"))) == required(schema("MessageSummary"))
    full = rest.full(EMAIL, "a1")
    assert set(full) == set(properties(schema("Message"))) == required(schema("Message"))
    assert {"id", "user_id", "folder_id", "from", "to", "cc", "subject", "body", "html", "attachments",
            "is_read", "received_at"} <= set(full)
    assert full["from"] == {"name": None, "email": "a@example.test"} and full["folder_id"] == "m1"
    assert full["body"] == full["text"] == "hello\n" and full["user_id"] == "a1"
    attachment = properties(schema("Message"))["attachments"]["items"]
    assert set(full["attachments"][0]) == set(attachment["properties"]) == set(attachment["required"])
    box = {"id": "m1", "name": "INBOX", "parentId": None, "role": "inbox", "totalEmails": 1, "unreadEmails": 0}
    assert set(rest.folder(box)) == set(properties(schema("Folder"))) == required(schema("Folder"))
    assert rest.summary(dict(EMAIL, **{"from": None, "mailboxIds": {}}))["from"] is None


def test_every_error_status_the_code_gives_is_declared():
    """Each status rest.py maps a JMAP error to is declared by some operation, 400, 401, 403,
    404 and 405 by every one, and every error answer is the Error schema."""
    operations = [op for path in openapi.document()["paths"].values() for op in path.values()]
    declared = set().union(*(op["responses"] for op in operations))
    assert {str(status) for status in rest._STATUS.values()} <= declared
    for op in operations:
        assert {"400", "401", "403", "404", "405"} <= set(op["responses"])
        for status, answer in op["responses"].items():
            if status >= "400":
                assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
