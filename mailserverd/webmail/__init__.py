"""The bundled webmail: static files served at / (index.html) and
/webmail/<file> by the http and https listeners when `[http] webmail` is on.

The files are package data (mailserverd/webmail/static/, plain ES modules, no
build step); they are read once when the listener starts, so a request never
touches the disk, and only names found there are served (no path is ever
joined with request input, so there is no directory traversal). The webmail
talks JMAP and /auth/* on the same origin (docs: ../notes browser contract).

Every answer carries a strict Content-Security-Policy (CSP Level 3): scripts
only from this origin, never inline; HTML mail is rendered in a sandboxed
iframe (srcdoc), which inherits this policy, so the policy also confines the
mail: inline styles are allowed there (style-src 'unsafe-inline', mail depends
on them) and images from http(s) only after the user asks for them (the
reader strips remote image URLs until then). Plus X-Frame-Options DENY,
nosniff and no referrer; an ETag per file answers If-None-Match with 304
(RFC 9110 13.1.2) and Cache-Control no-cache makes the browser revalidate.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

from twisted.logger import Logger

log = Logger(namespace="mailserverd.webmail")

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob: https: http:; connect-src 'self'; frame-src 'self' blob:; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

HEADERS = {
    b"content-security-policy": CSP.encode(),
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cross-origin-opener-policy": b"same-origin",
    b"cross-origin-resource-policy": b"same-origin",
}

TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".json": b"application/json",
    ".png": b"image/png",
    ".svg": b"image/svg+xml",
    ".ico": b"image/x-icon",
    ".txt": b"text/plain; charset=utf-8",
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
ALLOWED = (b"GET", b"HEAD")


class StaticFile:
    __slots__ = ("body", "content_type", "etag")

    def __init__(self, body: bytes, content_type: bytes):
        self.body = body
        self.content_type = content_type
        self.etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'


def load(directory: str = STATIC_DIR) -> dict[str, StaticFile]:
    """name -> StaticFile for every servable file directly in directory."""
    files = {}
    for name in sorted(os.listdir(directory)):
        ext = os.path.splitext(name)[1].lower()
        path = os.path.join(directory, name)
        if not _NAME.match(name) or ext not in TYPES or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            files[name] = StaticFile(f.read(), TYPES[ext])
    return files


def _etag_matches(header: bytes | None, etag: bytes) -> bool:
    if not header:
        return False
    if header.strip() == b"*":
        return True
    tags = [t.strip() for t in header.split(b",")]
    return etag in tags or b"W/" + etag in tags


def build(directory: str = STATIC_DIR):
    """The WebmailResource, or None (logged) when the package's files are missing or
    unreadable: a broken webmail install must not keep the mail server from starting."""
    try:
        return WebmailResource(directory)
    except OSError as exc:
        log.error("webmail: not served, its files are missing or unreadable: {error}", error=exc)
        return None


class WebmailResource:
    """Answers GET/HEAD of / and /webmail/<name>; the listener's Root hands it those paths."""

    def __init__(self, directory: str = STATIC_DIR):
        self.files = load(directory)
        if "index.html" not in self.files:
            raise FileNotFoundError(f"the webmail has no index.html in {directory}")

    @staticmethod
    def handles(path: bytes) -> bool:
        return path == b"/" or path.startswith(b"/webmail/")

    def render(self, request) -> bytes:
        for name, value in HEADERS.items():
            request.setHeader(name, value)
        path = request.path
        name = "index.html" if path in (b"/", b"/webmail/") else path[len(b"/webmail/"):].decode("latin-1")
        static = self.files.get(name) if _NAME.match(name) else None
        if static is None:
            return self._error(request, 404, "notFound", "no such file")
        if request.method not in ALLOWED:
            request.setHeader(b"allow", b", ".join(ALLOWED))
            return self._error(request, 405, "methodNotAllowed", "only GET and HEAD are allowed here")
        request.setHeader(b"etag", static.etag)
        request.setHeader(b"cache-control", b"no-cache")
        if _etag_matches(request.getHeader(b"if-none-match"), static.etag):
            request.setResponseCode(304)
            return b""
        request.setHeader(b"content-type", static.content_type)
        request.setHeader(b"content-length", str(len(static.body)).encode())
        return static.body  # twisted.web sends no body for HEAD, keeping content-length

    @staticmethod
    def _error(request, status: int, kind: str, detail: str) -> bytes:
        """JSON with a type and a detail, as every HTTP error of the server (INTERFACE.md)."""
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps({"type": kind, "detail": detail}).encode() + b"\n"
