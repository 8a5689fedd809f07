"""GET /v1/openapi.json: the /v1 REST API (rest.py) as an OpenAPI 3.1 document.

tests/unit/test_rest_openapi.py keeps it equal to the code: the routes and methods
(rest.ROUTES less HEAD), the request fields (rest.SEND_FIELDS, rest.PATCH_FIELDS)
and the properties of every answer rest.py builds; tests/interop/
test_rest_schemathesis.py checks the running daemon against it.
"""

from __future__ import annotations

from . import rest


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _object(properties: dict, required=True) -> dict:
    """A JSON object with these properties, every one of them present when required."""
    out = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(properties)
    return out


def _nullable(kind: str, **more) -> dict:
    return {"type": [kind, "null"], **more}


STRING, INTEGER, BOOLEAN = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
DATE_TIME = {"type": "string", "format": "date-time"}
_ERROR_TEXT = {"400": "invalid arguments (type says which: invalidArguments, notJSON, noRecipients, "
                      "invalidProperties, ...)",
               "401": "not authenticated", "403": "forbidden (e.g. forbiddenFrom, forbiddenToSend)",
               "404": "notFound", "405": "methodNotAllowed",
               "413": "tooLarge: the body or the message is larger than the limits allow",
               "507": "overQuota: the account has no room for the message"}


def _errors(*extra: str) -> dict:
    """The error answers every operation can give, and the extra ones named."""
    return {code: _json(_ref("Error"), _ERROR_TEXT[code]) for code in ("400", "401", "403", "404", "405", *extra)}


def _body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


ID = {"name": "id", "in": "path", "required": True, "schema": STRING}
PAGING = [{"name": "limit", "in": "query",
           "schema": {"type": "integer", "minimum": 1, "maximum": rest.MAX_LIMIT, "default": rest.DEFAULT_LIMIT}},
          {"name": "page_token", "in": "query", "schema": STRING,
           "description": "next_page_token of the previous page"}]
ADDRESS = _object({"name": _nullable("string"), "email": STRING})
ADDRESSES = {"type": "array", "items": _ref("Address")}
SUMMARY = _object({
    "id": STRING, "thread_id": STRING,
    "folder_id": _nullable("string", description="the folder (the first of folder_ids when several)"),
    "folder_ids": {"type": "array", "items": STRING},
    "is_read": BOOLEAN, "is_flagged": BOOLEAN, "is_draft": BOOLEAN,
    "subject": _nullable("string"), "from": {"oneOf": [_ref("Address"), {"type": "null"}],
                                              "description": "the first From address"},
    "to": ADDRESSES, "cc": ADDRESSES, "received_at": DATE_TIME, "size": INTEGER,
    "preview": STRING, "has_attachment": BOOLEAN})
ATTACHMENT = _object({"blob_id": STRING, "name": _nullable("string"), "type": STRING, "size": INTEGER,
                      "download_path": STRING})
MESSAGE = {"allOf": [_ref("MessageSummary"), _object({
    "user_id": {"type": "string", "description": "the JMAP accountId"},
    "bcc": ADDRESSES, "reply_to": ADDRESSES, "sent_at": _nullable("string", format="date-time"),
    "message_id": _nullable("string"), "in_reply_to": _nullable("array", items=STRING),
    "text": _nullable("string"), "body": _nullable("string", description="the text body (same as text)"),
    "html": _nullable("string"), "attachments": {"type": "array", "items": ATTACHMENT}})]}
PAGE = _object({"messages": {"type": "array", "items": _ref("MessageSummary")}, "total": INTEGER,
                "next_page_token": _nullable("string")})
FOLDER = _object({"id": STRING, "name": STRING, "parent_id": _nullable("string"), "role": _nullable("string"),
                  "total": INTEGER, "unread": INTEGER})
RECIPIENTS = {"oneOf": [STRING, {"type": "array", "items": {"oneOf": [STRING, _ref("Address")]}}]}
SEND_PROPERTIES = {
    "from": {"type": "string", "description": "one of the account's identities; default its address"},
    "to": RECIPIENTS, "cc": RECIPIENTS, "bcc": RECIPIENTS, "subject": STRING,
    "text": STRING, "html": STRING, "in_reply_to": STRING,
    "attachments": {"type": "array", "items": {"type": "object", "required": ["blob_id"], "properties": {
        "blob_id": {"type": "string", "description": "from POST /jmap/upload/{accountId}/"},
        "name": STRING, "type": STRING}}}}
PATCH_PROPERTIES = {"is_read": BOOLEAN, "is_flagged": BOOLEAN,
                    "folder_id": {"type": "string", "description": "move to this one folder"},
                    "folder_ids": {"type": "array", "items": STRING, "minItems": 1}}
SENT = _object({"id": STRING, "submission_id": STRING, "sent_at": DATE_TIME,
                "delivery_status": {"type": "object", "additionalProperties": {
                    "type": "string", "enum": ["yes", "queued"]}}})


def document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "mailserverd REST API", "version": "1",
                 "description": "Plain JSON over the JMAP methods; ids are JMAP ids. Errors are "
                                "{type, detail}."},
        "security": [{"basic": []}, {"bearer": []}],
        "paths": {
            "/v1/messages": {"post": {
                "summary": "Send a message; a copy is kept in Sent",
                "requestBody": _body(_ref("Send")),
                "responses": dict(_errors("413", "507"), **{"201": _json(SENT, "sent")})}},
            "/v1/folders": {"get": {"summary": "Every folder of the account", "responses": dict(_errors(), **{
                "200": _json(_object({"folders": {"type": "array", "items": _ref("Folder")}}))})}},
            "/v1/folders/{id}/messages": {"get": {
                "summary": "A folder's messages, newest first",
                "parameters": [ID, *PAGING, {"name": "is_read", "in": "query", "schema": BOOLEAN}],
                "responses": dict(_errors(), **{"200": _json(_ref("Page"))})}},
            "/v1/messages/{id}": {
                "get": {"summary": "One message", "parameters": [ID],
                        "responses": dict(_errors(), **{"200": _json(_ref("Message"))})},
                "patch": {"summary": "Mark read/flagged, or move (folder_id) or set folders (folder_ids)",
                          "parameters": [ID],
                          "requestBody": _body({"type": "object", "minProperties": 1,
                                                "properties": PATCH_PROPERTIES}),
                          "responses": dict(_errors("413"), **{"200": _json(_ref("Message"))})},
                "delete": {"summary": "Move the message to Trash; from Trash, delete it for good",
                           "parameters": [ID],
                           "responses": dict(_errors(), **{"204": {"description": "deleted"}})}},
            "/v1/search": {"get": {
                "summary": "Search: words, from:, to:, cc:, bcc:, subject:, body:, is:unread|read|flagged|unflagged, "
                           "in:FOLDER, has:attachment, before:/after:YYYY-MM-DD; quotes group words",
                "parameters": [{"name": "q", "in": "query", "required": True, "schema": STRING}, *PAGING],
                "responses": dict(_errors(), **{"200": _json(_ref("Page"))})}},
        },
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"},
                                "bearer": {"type": "http", "scheme": "bearer",
                                           "description": "mailserverctl token create ADDRESS"}},
            "schemas": {
                "Error": {"type": "object", "required": ["type", "detail"],
                          "properties": {"type": STRING, "detail": STRING}},
                "Address": ADDRESS, "MessageSummary": SUMMARY, "Message": MESSAGE, "Page": PAGE,
                "Folder": FOLDER, "Send": {"type": "object", "properties": SEND_PROPERTIES}}},
    }
