"""mailserverd.webmail: the static-file resource of the bundled webmail and its
routing in the http listener's Root (no daemon, no browser)."""

from __future__ import annotations

import json
import os

from twisted.web.test.requesthelper import DummyRequest

from mailserverd.http.server import Root
from mailserverd.webmail import CSP, STATIC_DIR, WebmailResource, build, load


def get(resource, path: bytes, method=b"GET", headers=None):
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    request.path = path
    request.uri = path
    request.method = method
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [value])
    body = resource.render(request)
    return request.responseCode or 200, request.responseHeaders, body


def header(headers, name: bytes) -> bytes:
    values = headers.getRawHeaders(name)
    return values[0] if values else None


def test_every_file_is_served_with_its_type_and_strict_headers():
    """Each packaged file has a content type; every answer carries the CSP (no inline
    or foreign script, framing denied), X-Frame-Options DENY, nosniff, no referrer."""
    resource = WebmailResource()
    names = sorted(os.listdir(STATIC_DIR))
    assert {"index.html", "app.js", "jmap.js", "style.css", "sanitize.js", "reader.js"} <= set(names)
    assert set(load()) == {n for n in names if os.path.isfile(os.path.join(STATIC_DIR, n))}
    status, headers, body = get(resource, b"/")
    assert status == 200 and body.startswith(b"<!doctype html>")
    assert header(headers, b"content-type") == b"text/html; charset=utf-8"
    assert header(headers, b"content-security-policy") == CSP.encode()
    script_src = CSP.split("script-src ")[1].split(";")[0]
    assert script_src == "'self'"
    assert "frame-ancestors 'none'" in CSP and "default-src 'none'" in CSP
    assert header(headers, b"x-frame-options") == b"DENY"
    assert header(headers, b"x-content-type-options") == b"nosniff"
    assert header(headers, b"referrer-policy") == b"no-referrer"
    for name, kind in (("app.js", b"text/javascript; charset=utf-8"), ("style.css", b"text/css; charset=utf-8")):
        status, headers, body = get(resource, b"/webmail/" + name.encode())
        assert status == 200 and header(headers, b"content-type") == kind
        assert body == open(os.path.join(STATIC_DIR, name), "rb").read()


def test_etag_answers_304_and_cache_revalidates():
    """If-None-Match with the file's ETag (also weak, or in a list) is 304 with no
    body; Cache-Control no-cache makes the browser ask each time (RFC 9110 13.1.2)."""
    resource = WebmailResource()
    _status, headers, _body = get(resource, b"/webmail/jmap.js")
    etag = header(headers, b"etag")
    assert etag.startswith(b'"') and header(headers, b"cache-control") == b"no-cache"
    for value in (etag, b"W/" + etag, b'"other", ' + etag):
        status, _headers, body = get(resource, b"/webmail/jmap.js", headers={b"if-none-match": value})
        assert status == 304 and body == b""
    status, _headers, _body = get(resource, b"/webmail/jmap.js", headers={b"if-none-match": b'"stale"'})
    assert status == 200


def test_unknown_names_and_traversal_are_404_and_writes_405():
    """Only names of the packaged files are served: traversal, encoded dots, the
    Python module, hidden or nested names are 404; POST to a file is 405; both are JSON
    with a type, as every HTTP error (INTERFACE.md)."""
    resource = WebmailResource()
    for path in (b"/webmail/../__init__.py", b"/webmail/%2e%2e/__init__.py", b"/webmail/__init__.py",
                 b"/webmail/.hidden", b"/webmail/static/app.js", b"/webmail/app.js/", b"/webmail/nope.js",
                 b"/webmail/app.js%00"):
        status, headers, _body = get(resource, path)
        assert status == 404, path
        assert header(headers, b"content-type") == b"application/json"
        assert json.loads(_body)["type"] == "notFound"
        assert header(headers, b"content-security-policy")  # the error pages carry the headers too
    status, headers, body = get(resource, b"/webmail/app.js", method=b"POST")
    assert status == 405 and header(headers, b"allow") == b"GET, HEAD"
    assert json.loads(body)["type"] == "methodNotAllowed"


def test_root_routes_the_webmail_only_when_configured():
    """The listener's Root hands / and /webmail/* to the webmail resource when
    [http] webmail is on (build_factory gives it one) and answers 404 JSON otherwise."""
    on = Root(outbound=None, webmail=WebmailResource())
    status, _headers, body = get(on, b"/")
    assert status == 200 and b"/webmail/app.js" in body
    off = Root(outbound=None)
    for path in (b"/", b"/webmail/app.js"):
        status, headers, body = get(off, path)
        assert status == 404 and header(headers, b"content-type") == b"application/json"


def test_missing_files_turn_the_webmail_off_not_the_server(tmp_path):
    """A directory without index.html (a broken install) gives no webmail resource,
    logged, instead of an exception that would stop the http listener from starting."""
    (tmp_path / "app.js").write_text("export {};\n")
    assert build(str(tmp_path)) is None
    assert build(str(tmp_path / "absent")) is None
    assert isinstance(build(), WebmailResource)
