"""A twisted.web Request that limits its body and its time before buffering.

The Site (server.py) gives each path a body limit. A Content-Length over it
is answered 413 at once, before one body byte is read; a chunked body is
counted while it streams and cut off the same way. A request whose headers
and body have not all arrived within REQUEST_TIMEOUT seconds of its first
line (slowloris) is answered 408 and the connection closed. The answers are
JSON, like every other error of this listener.
"""

from __future__ import annotations

import json

from twisted.web import server

REQUEST_TIMEOUT = 30.0  # seconds from the request line to the last body byte
REASONS = {408: b"Request Timeout", 413: b"Content Too Large"}


class LimitedRequest(server.Request):
    def __init__(self, channel, queued=None):
        super().__init__(channel, queued)
        # No handler reads a form body: request.args is the query string only, and the
        # Content-Type of every POST is not parsed again through the email package (~4%
        # of the daemon's CPU on the JMAP benchmark).
        self._parsePOSTFormSubmission = False
        self._body_bytes = 0
        self._body_limit = 0
        self._refused = False
        site = getattr(channel, "site", None)
        reactor = getattr(site, "reactor", None)
        timeout = getattr(site, "request_timeout", REQUEST_TIMEOUT)
        self._deadline = reactor.callLater(timeout, self._too_slow) if reactor is not None else None

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        self._refuse(408, "requestTimeout", "the request did not arrive in time")

    def _refuse(self, status: int, kind: str, detail: str) -> None:
        """Answer at once and close: the rest of the request is never read. On the
        JMAP API an oversized body is an RFC 8620 3.6.1 "limit" problem (maxSizeRequest)."""
        self._cancel_deadline()
        if self._refused:
            return
        self._refused = True
        content_type, answer = b"application/json", {"type": kind, "detail": detail}
        if status == 413 and (getattr(self.channel, "_path", b"") or b"").split(b"?")[0] == b"/jmap/api":
            content_type = b"application/problem+json"
            answer = {"type": "urn:ietf:params:jmap:error:limit", "status": 413, "detail": detail,
                      "limit": "maxSizeRequest"}
        body = json.dumps(answer).encode() + b"\n"
        head = (b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n" % (status, REASONS[status], content_type, len(body)))
        self.channel.persistent = False
        transport = self.channel.transport
        if transport is not None:
            transport.write(head + body)
            transport.loseConnection()

    def gotLength(self, length):
        site = getattr(self.channel, "site", None)
        path = getattr(self.channel, "_path", b"") or b""
        self._body_limit = site.body_limit(path.split(b"?")[0]) if hasattr(site, "body_limit") else 65536
        if length is not None and length > self._body_limit:
            self.content = None
            self._refuse(413, "tooLarge", f"the body may have at most {self._body_limit} octets here")
            return
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._body_bytes += len(data)
        if self._body_bytes > self._body_limit:
            self._refuse(413, "tooLarge", f"the body may have at most {self._body_limit} octets here")
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        self._cancel_deadline()
        if self._refused:
            return
        super().requestReceived(command, path, version)

    def connectionLost(self, reason):
        self._cancel_deadline()
        super().connectionLost(reason)
