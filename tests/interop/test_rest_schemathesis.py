"""Interop: schemathesis (PyPI) generates requests from /v1/openapi.json of a running
daemon and checks every answer against the document: no 5xx, only documented status
codes and content types, bodies valid against the response schemas. A handful of
examples per operation keeps the file to seconds."""

from __future__ import annotations

import base64
import os
import smtplib

import pytest
import requests

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed: pip install -e '.[test]'")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

from tests.support.daemon import PASSWORD, MailServer  # noqa: E402

ALICE = "alice@example.test"
# per operation and mode (7 operations x 2 modes): the whole file in well under a minute;
# REST_FUZZ_EXAMPLES=500 for a longer hunt
MAX_EXAMPLES = int(os.environ.get("REST_FUZZ_EXAMPLES", "12"))
REQUEST_TIMEOUT = 10  # seconds for one request
HEADERS = {"Authorization": "Basic " + base64.b64encode(f"{ALICE}:{PASSWORD}".encode()).decode()}
CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.status_code_conformance,
          schemathesis.checks.content_type_conformance, schemathesis.checks.response_schema_conformance]


@pytest.fixture(scope="module")
def rest_server(request, tmp_path_factory):
    """One daemon (smtp, http) for the module, with a message in Alice's INBOX so the
    folder listings and search have something to return."""
    server = MailServer(tmp_path_factory.mktemp("mailserver"), ("smtp", "http"))
    server.copy_data_from(request.getfixturevalue("mailserver_seed_data"))
    server.start()
    try:
        message = ("From: Carol <carol@remote.test>\r\nTo: alice@example.test, dave@remote.test\r\n"
                   "Subject: schema\r\nMessage-ID: <schema@remote.test>\r\nMIME-Version: 1.0\r\n"
                   'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
                   "--b\r\nContent-Type: text/plain\r\n\r\nbody for schemathesis\r\n"
                   "--b\r\nContent-Type: text/html\r\n\r\n<p>html body</p>\r\n"
                   '--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="a.pdf"\r\n'
                   "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n")
        with smtplib.SMTP(*server.address("smtp"), timeout=10) as smtp:
            smtp.sendmail("carol@remote.test", [ALICE], message)
        yield server
    finally:
        server.stop()
        print(f"--- {server.conf_path}\n{server.log_tail(200)}")


@pytest.fixture(scope="module")
def rest_ids(rest_server):
    """{"folder": Alice's INBOX id, "message": the id of the message in it}."""
    host, port = rest_server.address("http")
    base = f"http://{host}:{port}"
    folders = requests.get(f"{base}/v1/folders", headers=HEADERS, timeout=REQUEST_TIMEOUT).json()["folders"]
    inbox = next(f["id"] for f in folders if f["role"] == "inbox")
    page = requests.get(f"{base}/v1/folders/{inbox}/messages", headers=HEADERS, timeout=REQUEST_TIMEOUT).json()
    return {"folder": inbox, "message": page["messages"][0]["id"]}


@pytest.fixture(scope="module")
def rest_schema(rest_server):
    host, port = rest_server.address("http")
    base = f"http://{host}:{port}"
    loaded = schemathesis.openapi.from_url(f"{base}/v1/openapi.json", timeout=REQUEST_TIMEOUT)
    loaded.config.update(base_url=base)
    return loaded


# Every operation of the document; test_every_operation_is_exercised keeps this equal to it.
OPERATIONS = [("POST", "/v1/messages"), ("GET", "/v1/folders"), ("GET", "/v1/folders/{id}/messages"),
              ("GET", "/v1/messages/{id}"), ("PATCH", "/v1/messages/{id}"), ("DELETE", "/v1/messages/{id}"),
              ("GET", "/v1/search")]


def test_every_operation_is_exercised(rest_schema):
    """The operations fuzzed below are exactly those /v1/openapi.json declares."""
    declared = sorted((op.ok().method.upper(), op.ok().path) for op in rest_schema.get_all_operations())
    assert declared == sorted(OPERATIONS)


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize("method,path", OPERATIONS)
def test_rest_api_conforms_to_its_openapi_document(rest_schema, rest_ids, method, path, mode):
    """Every generated request for the operation (valid by the document, or in negative mode
    invalid), authenticated as Alice with HTTP Basic, gets an answer that is not a 5xx,
    has a status code and content type the document declares for the operation, and a
    body valid against the declared schema."""
    operation = rest_schema[path][method]
    strategy = operation.as_strategy(GenerationMode(mode))
    if "{id}" in path:
        # random ids are all 404: half the cases name the real INBOX or message instead
        real = rest_ids["folder" if path.startswith("/v1/folders") else "message"]
        strategy = strategy | operation.as_strategy(GenerationMode(mode), path_parameters={"id": real})

    # pytest's own integration (schemathesis.pytest.from_fixture) needs an attribute pytest 9.2
    # removed, so the hypothesis strategy of each operation is driven here
    @given(case=strategy)
    @settings(max_examples=MAX_EXAMPLES, deadline=REQUEST_TIMEOUT * 1000, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        case.call_and_validate(headers=HEADERS, checks=CHECKS, timeout=REQUEST_TIMEOUT)
    run()
