"""GET /v1/openapi.json: the /v1 REST API (rest.py) as an OpenAPI 3.0 document."""

from __future__ import annotations


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {status: _json(_ref("Error"), text) for status, text in (
    ("400", "invalid arguments (type says which)"), ("401", "not authenticated"),
    ("403", "forbidden (e.g. forbiddenFrom)"), ("404", "notFound"), ("405", "methodNotAllowed"))}
ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
PAGING = [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500,
                                                      "default": 50}},
          {"name": "page_token", "in": "query", "schema": {"type": "string"},
           "description": "next_page_token of the previous page"}]
ADDRESS = {"type": "object", "properties": {"name": {"type": "string", "nullable": True},
                                            "email": {"type": "string"}}}
ADDRESSES = {"type": "array", "items": _ref("Address")}
SUMMARY = {"type": "object", "properties": {
    "id": {"type": "string"}, "thread_id": {"type": "string"},
    "folder_ids": {"type": "array", "items": {"type": "string"}},
    "is_read": {"type": "boolean"}, "is_flagged": {"type": "boolean"}, "is_draft": {"type": "boolean"},
    "subject": {"type": "string", "nullable": True}, "from": ADDRESSES, "to": ADDRESSES, "cc": ADDRESSES,
    "received_at": {"type": "string", "format": "date-time"}, "size": {"type": "integer"},
    "preview": {"type": "string"}, "has_attachment": {"type": "boolean"}}}
MESSAGE = {"allOf": [_ref("MessageSummary"), {"type": "object", "properties": {
    "bcc": ADDRESSES, "reply_to": ADDRESSES, "sent_at": {"type": "string", "nullable": True},
    "message_id": {"type": "string", "nullable": True}, "text": {"type": "string", "nullable": True},
    "html": {"type": "string", "nullable": True},
    "attachments": {"type": "array", "items": {"type": "object", "properties": {
        "blob_id": {"type": "string"}, "name": {"type": "string", "nullable": True},
        "type": {"type": "string"}, "size": {"type": "integer"}, "download_path": {"type": "string"}}}}}}]}
PAGE = {"type": "object", "properties": {"messages": {"type": "array", "items": _ref("MessageSummary")},
                                         "total": {"type": "integer"},
                                         "next_page_token": {"type": "string", "nullable": True}}}
RECIPIENTS = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"oneOf": [{"type": "string"},
                                                                                  _ref("Address")]}}]}
SEND = {"type": "object", "properties": {
    "from": {"type": "string", "description": "one of the account's identities; default its address"},
    "to": RECIPIENTS, "cc": RECIPIENTS, "bcc": RECIPIENTS, "subject": {"type": "string"},
    "text": {"type": "string"}, "html": {"type": "string"}, "in_reply_to": {"type": "string"},
    "attachments": {"type": "array", "items": {"type": "object", "required": ["blob_id"], "properties": {
        "blob_id": {"type": "string", "description": "from POST /jmap/upload/{accountId}/"},
        "name": {"type": "string"}, "type": {"type": "string"}}}}}}


def document() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {"title": "mailserverd REST API", "version": "1",
                 "description": "Plain JSON over the JMAP methods; ids are JMAP ids. Errors are "
                                "{type, detail}."},
        "security": [{"basic": []}, {"bearer": []}],
        "paths": {
            "/v1/messages": {"post": {
                "summary": "Send a message; a copy is kept in Sent",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Send")}}},
                "responses": dict(ERRORS, **{"201": _json({"type": "object", "properties": {
                    "id": {"type": "string"}, "submission_id": {"type": "string"},
                    "sent_at": {"type": "string"},
                    "delivery_status": {"type": "object", "additionalProperties": {
                        "type": "string", "enum": ["yes", "queued"]}}}}, "sent")})}},
            "/v1/folders": {"get": {"summary": "Every folder of the account", "responses": dict(ERRORS, **{
                "200": _json({"type": "object", "properties": {"folders": {"type": "array",
                                                                           "items": _ref("Folder")}}})})}},
            "/v1/folders/{id}/messages": {"get": {
                "summary": "A folder's messages, newest first",
                "parameters": [ID, *PAGING, {"name": "is_read", "in": "query",
                                             "schema": {"type": "boolean"}}],
                "responses": dict(ERRORS, **{"200": _json(_ref("Page"))})}},
            "/v1/messages/{id}": {
                "get": {"summary": "One message", "parameters": [ID],
                        "responses": dict(ERRORS, **{"200": _json(_ref("Message"))})},
                "patch": {"summary": "Mark read/flagged, or move (folder_id) or set folders (folder_ids)",
                          "parameters": [ID],
                          "requestBody": {"required": True, "content": {"application/json": {"schema": {
                              "type": "object", "properties": {
                                  "is_read": {"type": "boolean"}, "is_flagged": {"type": "boolean"},
                                  "folder_id": {"type": "string"},
                                  "folder_ids": {"type": "array", "items": {"type": "string"}}}}}}},
                          "responses": dict(ERRORS, **{"200": _json(_ref("Message"))})},
                "delete": {"summary": "Delete the message from every folder", "parameters": [ID],
                           "responses": dict(ERRORS, **{"204": {"description": "deleted"}})}},
            "/v1/search": {"get": {
                "summary": "Search: words, from:, to:, cc:, bcc:, subject:, body:, is:unread|read|flagged|unflagged, "
                           "in:FOLDER, has:attachment, before:/after:YYYY-MM-DD; quotes group words",
                "parameters": [{"name": "q", "in": "query", "required": True, "schema": {"type": "string"}},
                               *PAGING],
                "responses": dict(ERRORS, **{"200": _json(_ref("Page"))})}},
        },
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"},
                                "bearer": {"type": "http", "scheme": "bearer",
                                           "description": "mailserverctl token create ADDRESS"}},
            "schemas": {
                "Error": {"type": "object", "required": ["type", "detail"],
                          "properties": {"type": {"type": "string"}, "detail": {"type": "string"}}},
                "Address": ADDRESS, "MessageSummary": SUMMARY, "Message": MESSAGE, "Page": PAGE, "Send": SEND,
                "Folder": {"type": "object", "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"},
                    "parent_id": {"type": "string", "nullable": True},
                    "role": {"type": "string", "nullable": True},
                    "total": {"type": "integer"}, "unread": {"type": "integer"}}}}},
    }
