"""Per-request overhead choices of the http listener (issue 11's benchmark):
the access log's [http] access_log setting, the JSON encoder of JMAP answers,
and the search indexer counting its documents only after a change."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport

from mailserverd import config
from mailserverd.http.server import LimitedSite, Root
from mailserverd.jmap import web
from mailserverd.search.indexer import SearchService
from mailserverd.store import Store
from mailserverd.store.api import DeliveryTarget
from mailserverd.store.mail import Delivery


class _Outbound:
    counters = None

    def stats(self):
        return defer.succeed(SimpleNamespace(deliveries=0))


class _Lines:
    def __init__(self):
        self.lines = []

    def write(self, line):
        self.lines.append(line)


def _get(access_log, path: bytes):
    """One GET on a fresh connection; the access log lines written meanwhile."""
    clock = task.Clock()
    site = LimitedSite(Root(_Outbound()), reactor=clock, **({} if access_log is None else
                                                            {"access_log": access_log}))
    site._logFile, site._logDateTime = _Lines(), "[05/Dec/2026:15:00:00 +0000]"
    protocol = site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    for call in clock.getDelayedCalls():
        call.cancel()
    return transport.value(), site._logFile.lines


def test_access_log_errors_only_by_default():
    """By default ([http] access_log = errors) a 200 answer writes no access log line
    and a 404 writes the combined-format line, status included."""
    answer, lines = _get(None, b"/healthz")
    assert answer.startswith(b"HTTP/1.1 200 ") and lines == []
    answer, lines = _get(None, b"/nowhere")
    assert answer.startswith(b"HTTP/1.1 404 ") and len(lines) == 1
    assert '"GET /nowhere HTTP/1.1" 404 ' in lines[0]


def test_access_log_all_logs_every_request():
    """[http] access_log = all writes a line for a 200 answer as well."""
    answer, lines = _get("all", b"/healthz")
    assert answer.startswith(b"HTTP/1.1 200 ") and len(lines) == 1
    assert '"GET /healthz HTTP/1.1" 200 ' in lines[0]


def test_access_log_setting_parses():
    """The setting defaults to errors, takes errors or all, and refuses anything else."""
    assert config.parse_access_log(" All ") == "all"
    assert {key.name: key.default for key in config.SCHEMA["http"][1]}["access_log"] == "errors"
    with pytest.raises(ValueError):
        config.parse_access_log("none")


@pytest.mark.parametrize("value", [
    {"methodResponses": [["Email/get", {"list": [{"subject": "élan – 日本", "size": 12, "seen": True,
                                                 "x": None, "f": 1.5, "e": "a\"\\\n\u2028"}]}, "g"]],
     "sessionState": "s"},
    {1: "int key", "n": 2 ** 70},  # orjson refuses both alone; the json module answers
    [],
])
def test_json_answers_decode_to_the_same_values(value):
    """encode_json is compact UTF-8 JSON with a final newline, and decodes to what the
    json module's encoding decodes to (int keys become strings, big integers stay exact)."""
    body = web.encode_json(value)
    assert body.endswith(b"\n") and b"\\u00e9" not in body
    assert json.loads(body) == json.loads(json.dumps(value))


def test_indexer_counts_documents_only_after_a_change(tmp_path, monkeypatch):
    """stats() reads Whoosh doc_count once per index change, not on every refresh of
    an idle indexer; the count it reports follows each indexed message."""
    store = Store(f"sqlite:///{tmp_path}/directory.db", [f"sqlite:///{tmp_path}/shard-0.db"],
                  str(tmp_path / "blobs"))
    try:
        store.directory.add_domain("example.test")
        account = store.add_account("user@example.test", "pw")
        service = SearchService(store, str(tmp_path), use_process=False)
        index = service.indexes[0]
        service._check(index)
        calls = []
        real = index.doc_count
        monkeypatch.setattr(index, "doc_count", lambda: calls.append(1) or real())
        for round_ in range(1, 3):
            raw = f"Subject: n{round_}\r\nFrom: x@example.test\r\n\r\nbody\r\n".encode()
            store.mail.deliver_many([Delivery(raw, [DeliveryTarget(account=account)])])
            while service.drain_once(index):
                pass
            for _ in range(5):
                assert service.stats()["documents"] == round_
            assert len(calls) == round_
    finally:
        store.close()


def test_post_form_body_is_not_request_args():
    """request.args holds the query string only: a form-encoded POST body (Twisted
    would merge it) is left to the handler, which reads JSON."""
    from twisted.web import resource

    seen = []

    class Leaf(resource.Resource):
        isLeaf = True

        def render_POST(self, request):
            seen.append(dict(request.args))
            return b"ok"
    clock = task.Clock()
    site = LimitedSite(Leaf(), reactor=clock)
    protocol = site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    body = b"limit=5&x=1"
    protocol.dataReceived(b"POST /v1/messages?limit=2 HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: application/x-www-form-urlencoded\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    for call in clock.getDelayedCalls():
        call.cancel()
    assert transport.value().startswith(b"HTTP/1.1 200 ")
    assert seen == [{b"limit": [b"2"]}]
