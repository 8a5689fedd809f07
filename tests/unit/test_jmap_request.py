"""The JMAP request layer (RFC 8620 3) and the http listener's request limits:
parsing, result references with "*", limits, a slow body (408) and a chunked
body past its limit (413), with an injected clock."""

from __future__ import annotations

import json

import pytest
from twisted.internet import task
from twisted.internet.testing import StringTransport

from mailserverd.http.server import LimitedSite, Root
from mailserverd.jmap import api


def test_pointer_with_star_flattens_arrays():
    """RFC 8620 3.7: "*" maps over an array and flattens arrays of arrays."""
    value = {"list": [{"id": "a", "ids": ["x", "y"]}, {"id": "b", "ids": ["z"]}]}
    assert api.evaluate_pointer(value, "/list/*/id") == ["a", "b"]
    assert api.evaluate_pointer(value, "/list/*/ids") == ["x", "y", "z"]
    assert api.evaluate_pointer(value, "/list/1/id") == "b"
    for bad in ("/list/2/id", "/nope", "list", "/list/01/id", "/list/*/missing"):
        with pytest.raises(api._BadReference):
            api.evaluate_pointer(value, bad)


def test_reference_resolution_errors():
    """A reference to an unknown call id, the wrong method name, or both x and #x."""
    responses = [["Email/query", {"ids": ["e1"]}, "q"]]
    ref = {"resultOf": "q", "name": "Email/query", "path": "/ids"}
    assert api.resolve_references({"#ids": ref, "a": 1}, responses) == {"ids": ["e1"], "a": 1}
    for args, kind in (({"#ids": dict(ref, resultOf="zz")}, "invalidResultReference"),
                       ({"#ids": dict(ref, name="Email/get")}, "invalidResultReference"),
                       ({"#ids": {"resultOf": "q"}}, "invalidResultReference"),
                       ({"#ids": ref, "ids": []}, "invalidArguments")):
        with pytest.raises(api.MethodError) as caught:
            api.resolve_references(args, responses)
        assert caught.value.kind == kind


@pytest.mark.parametrize("body,kind", [
    (b"\xff\xfe", "notJSON"),
    (b"[" * 100_000, "notJSON"),
    (b'{"a": 1, "a": 2}', "notJSON"),
    (b'{"using": [], "methodCalls": [["Core/echo", {"x": NaN}, "0"]]}', "notJSON"),
    (b'{"using": [], "methodCalls": [["Core/echo", {"x": 1e999}, "0"]]}', "notJSON"),
    (b'{"using": [], "methodCalls": [["Core/echo", {"x": "\\ud800"}, "0"]]}', "notJSON"),
    (b'{"using": "x", "methodCalls": []}', "notRequest"),
    (b'{"using": [], "methodCalls": [["x", {}]]}', "notRequest"),
    (b'{"using": [], "methodCalls": [["x", [], "c"]]}', "notRequest"),
    (b'{"using": [], "methodCalls": [], "createdIds": {"a": 1}}', "notRequest"),
    (b'{"using": ["urn:ietf:params:jmap:calendars"], "methodCalls": []}', "unknownCapability"),
])
def test_parse_request_refusals(body, kind):
    """Each malformed request is the request-level error RFC 8620 3.6.1 names."""
    with pytest.raises(api.RequestError) as caught:
        api.parse_request(body, api.LIMITS)
    assert caught.value.kind == kind and caught.value.problem()["type"].endswith(kind)


def test_method_without_its_capability_is_unknown_method():
    """RFC 8620 3.6.2: a mail method when using lacks the mail capability is unknownMethod."""
    from tests.support.jmapstore import result_of
    from twisted.internet import defer
    ctx = api.Context(account=None, store=None, limits=dict(api.LIMITS))
    body = json.dumps({"using": [api.CORE], "methodCalls": [["Mailbox/get", {}, "0"]]}).encode()
    status, answer = result_of(defer.ensureDeferred(api.process(ctx, body, "s")))
    assert status == 200 and answer["methodResponses"][0][1]["type"] == "unknownMethod"


class _Outbound:
    counters = None

    def stats(self):
        raise AssertionError("not reached")


class _Jmap:
    def body_limit(self, path):
        return 100 if path == b"/jmap/api" else 0


def connect(clock):
    site = LimitedSite(Root(_Outbound()), jmap=_Jmap(), reactor=clock)
    protocol = site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_slow_request_gets_408_after_the_deadline():
    """A request whose body has not all arrived REQUEST_TIMEOUT seconds after its first
    line (slowloris) is answered 408 JSON and the connection closed."""
    clock = task.Clock()
    protocol, transport = connect(clock)
    protocol.dataReceived(b"POST /jmap/api HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"a\"")
    for _ in range(29):
        clock.advance(1)
        protocol.dataReceived(b" ")  # a byte a second keeps the idle timer happy, not the deadline
    assert transport.value() == b""
    clock.advance(1.5)
    assert transport.value().startswith(b"HTTP/1.1 408 ") and b'"requestTimeout"' in transport.value()
    assert transport.disconnecting


def test_chunked_body_past_the_limit_gets_413():
    """A chunked body is counted while it streams: past the path's limit, 413 at once."""
    clock = task.Clock()
    protocol, transport = connect(clock)
    protocol.dataReceived(b"POST /jmap/api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    protocol.dataReceived(b"40\r\n" + b"x" * 64 + b"\r\n")
    assert transport.value() == b""
    protocol.dataReceived(b"40\r\n" + b"x" * 64 + b"\r\n")
    answer = transport.value()
    assert answer.startswith(b"HTTP/1.1 413 ") and b'"maxSizeRequest"' in answer
    assert transport.disconnecting
    for call in clock.getDelayedCalls():
        call.cancel()
