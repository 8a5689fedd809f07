"""The HTTP listener: GET /metrics (Prometheus text), GET /healthz, and JMAP
(/.well-known/jmap and /jmap/..., mailserverd/jmap/web.py).

Every other path is 404 and a known path with another method is 405; errors
are JSON {"type": ..., "detail": ...} as INTERFACE.md promises. Handlers never
block: queue statistics come from the OutboundService, which runs its SQL
on its own thread pool. Bodies are limited per path and requests in time
before anything is buffered (request.py).
"""

from __future__ import annotations

import json
import os

from twisted.logger import Logger
from twisted.web import resource, server

from ..outbound import metrics
from ..jmap.websocket import render_metrics as websocket_metrics  # open JMAP WebSockets, push listeners
from ..search.indexer import render_metrics as search_metrics  # index queue depth and lag (issue 12)
from .request import REQUEST_TIMEOUT, LimitedRequest

log = Logger(namespace="mailserverd.http")

IDLE_TIMEOUT = 60  # seconds an idle HTTP connection stays open
JSON = b"application/json"
ALLOWED = (b"GET", b"HEAD")


def error_body(request, status: int, kind: str, detail: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", JSON)
    return json.dumps({"type": kind, "detail": detail}).encode() + b"\n"


class Root(resource.Resource):
    """A leaf: dispatches on the exact path, so /metrics/ or /metrics/x are 404 too."""

    isLeaf = True

    def __init__(self, outbound, jmap=None, webmail=None):
        super().__init__()
        self.outbound = outbound
        self.jmap = jmap
        self.webmail = webmail  # mailserverd.webmail.WebmailResource when [http] webmail is on
        self.routes = {b"/metrics": self._metrics, b"/healthz": self._healthz}

    def render(self, request):
        handler = self.routes.get(request.path)
        is_jmap = (request.path == b"/.well-known/jmap" or request.path.startswith(b"/jmap/")
                   or request.path.startswith(b"/v1/")  # the REST API runs on the JMAP methods
                   or request.path.startswith(b"/auth/"))  # browser sign-in (jmap/browser.py)
        if self.jmap is not None and is_jmap:
            return self.jmap.render(request)
        if self.webmail is not None and self.webmail.handles(request.path):
            return self.webmail.render(request)  # / and /webmail/<file>
        if handler is None:
            return error_body(request, 404, "notFound", "no resource at this path")
        if request.method not in ALLOWED:
            request.setHeader(b"allow", b", ".join(ALLOWED))
            return error_body(request, 405, "methodNotAllowed", "only GET and HEAD are allowed here")
        request.setHeader(b"cache-control", b"no-store")
        d = self.outbound.stats()
        d.addCallbacks(handler, self._failed, callbackArgs=(request,), errbackArgs=(request,))
        d.addCallback(self._send, request)
        d.addErrback(lambda failure: log.failure("http: answering {path} failed", failure, path=request.path))
        return server.NOT_DONE_YET

    def _metrics(self, stats, request) -> bytes:
        request.setHeader(b"content-type", metrics.CONTENT_TYPE.encode())
        return (metrics.render(stats, self.outbound.counters) + search_metrics() + websocket_metrics()).encode()

    def _healthz(self, stats, request) -> bytes:
        request.setHeader(b"content-type", JSON)
        return json.dumps({"status": "ok", "queue": stats.deliveries}).encode() + b"\n"

    def _failed(self, failure, request) -> bytes:
        log.failure("http: the queue database did not answer", failure)
        return error_body(request, 503, "serviceUnavailable", "the queue database did not answer")

    def _send(self, body: bytes, request) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        request.setHeader(b"content-length", str(len(body)).encode())
        if request.method != b"HEAD":
            request.write(body)
        request.finish()


class LimitedSite(server.Site):
    """A Site whose requests are LimitedRequest: body_limit(path) octets at most."""

    requestFactory = LimitedRequest
    request_timeout = REQUEST_TIMEOUT

    def __init__(self, root, jmap=None, reactor=None, access_log: str = "errors", **kwargs):
        super().__init__(root, reactor=reactor, **kwargs)
        self.jmap = jmap
        self.access_log = access_log  # [http] access_log: "errors" or "all"

    def log(self, request) -> None:
        """The combined-format access log line twisted.web writes as a request finishes:
        by default only for answers of status 400 and up (formatting and writing a line
        for each of hundreds of JMAP requests a second cost ~10% of the daemon's CPU)."""
        if self.access_log == "all" or request.code >= 400:
            super().log(request)

    def body_limit(self, path: bytes) -> int:
        limit = self.jmap.body_limit(path) if self.jmap is not None else 0
        return limit or 65536


def build_factory(mode: str, settings, store, authenticator, tls, outbound=None, reactor=None,
                  checks=None, responder=None) -> server.Site:
    """The Site for the http or https listener (mode; the endpoint does the TLS);
    outbound: the OutboundService; checks: the check chain JMAP EmailSubmission's
    mail passes, as SMTP submission's does (default: the built-in checks)."""
    if outbound is None:
        raise ValueError("the http listener needs the outbound service for /metrics and /healthz")
    if reactor is None:
        from twisted.internet import reactor
    from ..jmap.web import JMAPResource
    from ..smtp.server import build_factory as smtp_factory
    submitter = smtp_factory("submission", settings, store, authenticator, None, checks, clock=reactor,
                             outbound=outbound, responder=responder)  # shares the per-account rate limit
    jmap = JMAPResource(store, authenticator, settings, reactor,
                        os.path.join(settings.server.data_dir, "jmap-uploads"), submitter=submitter)
    from ..webmail import build as build_webmail
    webmail = build_webmail() if settings.http.webmail else None  # None: / and /webmail/ are 404
    site = LimitedSite(Root(outbound, jmap, webmail), jmap=jmap, reactor=reactor, timeout=IDLE_TIMEOUT,
                       access_log=settings.http.access_log)
    site.displayTracebacks = False
    return site
