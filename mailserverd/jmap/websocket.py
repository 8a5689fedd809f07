"""GET /jmap/ws: JMAP over WebSocket (RFC 8887) with push, on autobahn.

web.py authenticates the upgrade request with JMAPResource._authenticate
(whatever way it authenticates: Basic, Bearer, cookie or ticket) and calls
upgrade(); only then is the connection handed from twisted.web to an
autobahn protocol, so an unauthenticated client gets a JSON 401 and no
upgrade. The "jmap" subprotocol is required (RFC 8887 4.2): without it the
answer is a JSON 400, no upgrade.

Messages are text frames of UTF-8 JSON (RFC 8887 4.3); a binary frame closes
the connection with 1003, a message over maxSizeRequest with 1009 (autobahn
refuses it while it streams, before it is buffered whole):
- {"@type": "Request", "id"?: ...} runs through api.process exactly like a
  POST to /jmap/api, under the same per-account limits (maxConcurrentRequests
  and the RUNNING_PER_ACCOUNT gate shared with HTTP), and is answered by
  {"@type": "Response", "requestId": id, ...} (4.3.2) or a problem details
  {"@type": "RequestError", "requestId": id, ...} (4.3.4).
- {"@type": "WebSocketPushEnable", "dataTypes": [...] | null, "pushState"?}
  (4.3.5.2) starts StateChange pushes (RFC 8620 7.1) from the same source as
  the EventSource (eventsource.py): the store's per-account commit hook and
  the state strings of the change log. A Request sent after it is answered
  only once the baseline is taken, so every change after that Response is
  pushed. With a pushState, the changes since that state are pushed at once.
- {"@type": "WebSocketPushDisable"} (4.3.5.3) stops them.
Closing the connection, either side, unsubscribes and drops every pending
answer. The connection lives as long as the credential that opened it
(pushguard.py): once the session is signed out or expires, the token is
revoked or expires, or the password changes, the server closes it with 1008
(policy violation, RFC 6455 7.4.1) and a reason, and reads no more messages. autobahn pings every AUTO_PING_INTERVAL seconds and drops a peer that
does not answer within AUTO_PING_TIMEOUT.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import defaultdict

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import defer
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper

from ..store import jmapreads
from . import api, session, state

log = Logger(namespace="mailserverd.jmap")

SUBPROTOCOL = "jmap"  # RFC 8887 4.2 (IANA WebSocket Subprotocol Name Registry)
MAX_SOCKETS_PER_ACCOUNT = 16
AUTO_PING_INTERVAL = 30.0  # seconds between pings the server sends
AUTO_PING_TIMEOUT = 20.0  # seconds a pong may take before the connection is dropped
OPEN_HANDSHAKE_TIMEOUT = 10.0
CLOSE_HANDSHAKE_TIMEOUT = 5.0
UNSUPPORTED_DATA = 1003  # RFC 6455 7.4.1
POLICY_VIOLATION = 1008  # RFC 6455 7.4.1: the credential that opened the connection is dead

# Live counts for /metrics (one daemon per process, like the search indexer's figures).
COUNTS = {"connections": 0, "push_listeners": 0}


def render_metrics() -> str:
    """Prometheus text: open JMAP WebSockets and their store push subscriptions."""
    lines = []
    for name, key, doc in (("mailserverd_jmap_websocket_connections", "connections",
                            "Open JMAP WebSocket connections."),
                           ("mailserverd_jmap_websocket_push_listeners", "push_listeners",
                            "JMAP WebSockets with push enabled (store change subscriptions).")):
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} gauge", f"{name} {COUNTS[key]}"]
    return "\n".join(lines) + "\n"


def _header_tokens(request, name: bytes) -> list[str]:
    values = request.requestHeaders.getRawHeaders(name, [])
    return [t.strip().lower() for v in values for t in v.decode("latin-1").split(",") if t.strip()]


def _valid_key(value: bytes | None) -> bool:
    try:
        return value is not None and len(base64.b64decode(value.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


class Hub:
    """The WebSockets of one JMAPResource (owner): the autobahn factory and who is connected."""

    def __init__(self, owner):
        self.owner = owner
        self.sockets: dict[int, set] = defaultdict(set)
        size = owner.limits["maxSizeRequest"]
        factory = WebSocketServerFactory()
        factory.protocol = JMAPSocket
        factory.setProtocolOptions(
            maxMessagePayloadSize=size, maxFramePayloadSize=size, autoFragmentSize=0,
            autoPingInterval=AUTO_PING_INTERVAL, autoPingTimeout=AUTO_PING_TIMEOUT,
            openHandshakeTimeout=OPEN_HANDSHAKE_TIMEOUT, closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT,
            webStatus=False, tcpNoDelay=True,
            failByDrop=False)  # a protocol error is a close frame with its code (1009, 1007), then the drop
        self.factory = factory

    def upgrade(self, request, account, credential=None) -> None:
        from .web import HTTPError
        if "websocket" not in _header_tokens(request, b"upgrade"):
            raise HTTPError(426, "upgradeRequired", "this is a WebSocket endpoint (RFC 8887)",
                            headers={b"upgrade": b"websocket", b"connection": b"Upgrade"})
        if "upgrade" not in _header_tokens(request, b"connection"):  # RFC 6455 4.2.1 item 4
            raise HTTPError(400, "badRequest", "a WebSocket handshake has Connection: Upgrade")
        if _header_tokens(request, b"sec-websocket-version") != ["13"]:  # RFC 6455 4.4
            raise HTTPError(426, "upgradeRequired", "WebSocket version 13 (RFC 6455) is required",
                            headers={b"sec-websocket-version": b"13"})
        if not _valid_key(request.getHeader(b"sec-websocket-key")):  # RFC 6455 4.2.1 item 5
            raise HTTPError(400, "badRequest", "Sec-WebSocket-Key is not 16 octets in base64")
        if SUBPROTOCOL not in _header_tokens(request, b"sec-websocket-protocol"):
            raise HTTPError(400, "badRequest", 'the "jmap" WebSocket subprotocol is required (RFC 8887 4.2)')
        self._check_origin(request)
        if getattr(request, "_disconnected", False) or request.channel.transport is None:
            return  # the client left while it was being authenticated
        if len(self.sockets[account.id]) >= MAX_SOCKETS_PER_ACCOUNT:
            if not self.sockets[account.id]:
                del self.sockets[account.id]
            raise HTTPError(429, "limit", f"at most {MAX_SOCKETS_PER_ACCOUNT} WebSockets per account")
        protocol = self.factory.buildProtocol(request.getClientAddress())
        protocol.hub, protocol.account, protocol.http_request = self, account, request
        protocol.credential = credential  # what opened it (pushguard.py); None: not watched
        self.sockets[account.id].add(protocol)
        COUNTS["connections"] += 1
        log.info("jmap websocket: open user={user} rip={ip}", user=account.address,
                 ip=getattr(request.getClientAddress(), "host", ""))
        try:
            _take_over(request, protocol)
        except Exception:
            self.gone(protocol)
            raise
        if not protocol.closed:
            self.owner.push_guard.watch(credential, protocol, protocol.revoke)

    def _check_origin(self, request) -> None:
        """Cross-site WebSocket hijacking: a browser sends the Basic credentials it has
        cached with any page's WebSocket (no CORS check applies), so a Basic upgrade
        whose Origin is neither this server's nor a configured CORS origin is refused.
        Cookies are checked in _authenticate (browser.py); Bearer tokens and tickets
        are never ambient, and clients outside a browser send no Origin."""
        from . import browser
        from .web import HTTPError
        origin = request.getHeader(b"origin")
        scheme = (request.getHeader(b"authorization") or b"").partition(b" ")[0].lower()
        if origin is None or scheme != b"basic":
            return
        origin = browser.normalize_origin(origin.decode("ascii", "replace"))
        if origin in self.owner.settings.http.cors_origins or origin in browser.own_origins(self.owner, request):
            return
        raise HTTPError(403, "forbidden", "a Basic-authenticated WebSocket is accepted only from this "
                        "server's own origin or a configured CORS origin")

    def gone(self, protocol) -> None:
        guard = getattr(self.owner, "push_guard", None)
        if guard is not None:
            guard.unwatch(protocol.credential, protocol)
        sockets = self.sockets.get(protocol.account.id)
        if sockets is not None and protocol in sockets:
            sockets.discard(protocol)
            COUNTS["connections"] -= 1
            if not sockets:
                del self.sockets[protocol.account.id]


def hub(owner) -> Hub:
    """The Hub of a JMAPResource, made on the first upgrade."""
    found = getattr(owner, "_websocket_hub", None)
    if found is None:
        found = owner._websocket_hub = Hub(owner)
    return found


def _take_over(request, protocol) -> None:
    """Move the request's connection from twisted.web to the WebSocket protocol and
    replay the handshake to it, as autobahn's WebSocketResource.render does; the
    HTTP channel stops being the transport's producer and its request never ends."""
    channel = request.channel
    transport, channel.transport = channel.transport, None
    transport.unregisterProducer()  # it was the HTTP channel
    if isinstance(transport, ProtocolWrapper):  # TLS
        transport.wrappedProtocol = protocol
    elif isinstance(getattr(transport, "protocol", None), ProtocolWrapper):
        transport.protocol.wrappedProtocol = protocol
    else:
        transport.protocol = protocol
    protocol.makeConnection(transport)
    transport.resumeProducing()  # the channel may have paused reading while it served the request
    head = [request.method + b" " + request.uri + b" HTTP/1.1"]
    for name, values in request.requestHeaders.getAllRawHeaders():
        head.append(name + b": " + b",".join(values))
    protocol.dataReceived(b"\r\n".join(head) + b"\r\n\r\n")


class _ReadPause:
    """A streaming producer for the connection's own transport: a full send buffer
    pauses reading, a drained one resumes it."""

    def __init__(self, transport):
        self.transport = transport

    def pauseProducing(self):
        self.transport.pauseProducing()

    def resumeProducing(self):
        self.transport.resumeProducing()

    def stopProducing(self):
        pass


def encode_push_state(states: dict) -> str:
    return ".".join(states.get(kind, "") for kind in state.TYPES)


def decode_push_state(value) -> dict:
    """The states a pushState stands for; {} (everything is news) if it is not one of ours."""
    if not isinstance(value, str) or len(value) > 64:
        return {}
    parts = value.split(".")
    if len(parts) != len(state.TYPES) or not all(p == "" or p.isdigit() for p in parts):
        return {}
    return {kind: part for kind, part in zip(state.TYPES, parts) if part}


class JMAPSocket(WebSocketServerProtocol):
    hub = account = http_request = credential = None

    def __init__(self):
        super().__init__()
        self.closed = False
        self.push_types: set | None = None  # None: push is off
        self.sent: dict | None = None  # the states the client knows (None: baseline not read yet)
        self.reading = self.dirty = False
        self.baseline: defer.Deferred | None = None  # fires when the push baseline is known
        self.revoked = False  # the credential died: no more messages are read

    # -- the WebSocket lifecycle ------------------------------------------------------

    def onOpen(self):
        # Backpressure: while answers wait in the send buffer (a client that does not read),
        # stop reading its next messages, so its requests cannot pile up answers in memory.
        self.transport.registerProducer(_ReadPause(self.transport), True)

    def onConnect(self, request):
        if SUBPROTOCOL not in request.protocols:  # upgrade() checked; a replayed handshake is the same
            from autobahn.websocket.types import ConnectionDeny
            raise ConnectionDeny(400, 'the "jmap" subprotocol is required')
        return SUBPROTOCOL

    def onClose(self, wasClean, code, reason):
        if self.closed:
            return
        self.closed = True
        if self.account is not None:
            log.info("jmap websocket: closed user={user} code={code} clean={clean}",
                     user=self.account.address, code=code, clean=wasClean)
        self._push_off()
        if self.hub is not None:
            self.hub.gone(self)

    def revoke(self, reason: str) -> None:
        """The credential that opened the connection is dead (pushguard.py): stop
        pushing and reading, and close with 1008 and the reason."""
        if self.closed or self.revoked:
            return
        self.revoked = True
        log.info("jmap websocket: closing user={user}: {reason}", user=self.account.address, reason=reason)
        self._push_off()
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(POLICY_VIOLATION, reason.encode("utf-8")[:120])  # a close reason fits 123 octets
        elif self.state != self.STATE_CLOSED:
            self.dropConnection(abort=True)

    def onMessage(self, payload, isBinary):
        if self.closed or self.revoked:
            return
        if isBinary:  # RFC 8887 4.3: JMAP messages are text frames
            # sendClose takes only 1000 and 3000-4999; 1003 is a protocol code (RFC 6455 7.4.1)
            self.sendCloseFrame(UNSUPPORTED_DATA, b"JMAP over WebSocket takes text frames only")
            return
        d = defer.ensureDeferred(self._message(payload))
        d.addErrback(self._failed)

    def _failed(self, failure):
        log.failure("jmap websocket: a message failed", failure)
        self._send({"@type": "RequestError", "type": api.ERROR_PREFIX + "serverFail", "status": 500,
                    "detail": "the server failed; the error is logged"})

    def _send(self, obj: dict) -> None:
        if not self.closed and self.state == self.STATE_OPEN:  # not once a close frame went either way
            self.sendMessage(json.dumps(obj, ensure_ascii=False).encode(), isBinary=False)

    def _request_error(self, error: api.RequestError, request_id=None) -> None:
        answer = {"@type": "RequestError"}
        if request_id is not None:
            answer["requestId"] = request_id
        answer.update(error.problem())
        self._send(answer)

    # -- messages (RFC 8887 4.3) ------------------------------------------------------

    async def _message(self, payload: bytes) -> None:
        try:
            message = api.parse_json(payload)
        except api.RequestError as exc:
            return self._request_error(exc)
        if not isinstance(message, dict):
            return self._request_error(api.RequestError("notRequest", "a message is a JSON object"))
        request_id = message.get("id")
        if request_id is not None and not isinstance(request_id, str):
            return self._request_error(api.RequestError("notRequest", "id must be a string"))
        kind = message.get("@type")
        if kind == "Request":
            return await self._request(message, request_id)
        if kind == "WebSocketPushEnable":
            return self._push_enable(message, request_id)
        if kind == "WebSocketPushDisable":
            return self._push_off()
        self._request_error(api.RequestError(
            "notRequest", '@type must be "Request", "WebSocketPushEnable" or "WebSocketPushDisable"'),
            request_id)

    async def _request(self, message: dict, request_id) -> None:
        owner, account = self.hub.owner, self.account
        if self.baseline is not None and not self.baseline.called:
            await self._after_baseline()  # a Request after WebSocketPushEnable waits for its baseline
        if owner.running[account.id] >= owner.limits["maxConcurrentRequests"]:
            return self._request_error(api.RequestError(
                "limit", "too many concurrent requests", limit="maxConcurrentRequests"), request_id)
        # The same slots as POST /jmap/api (web.py _api): maxConcurrentRequests accepted,
        # RUNNING_PER_ACCOUNT running at once.
        async with owner.account_slot(account):
            if self.closed:
                return
            ctx = owner._context(self.http_request, account)
            status, answer = await api.process(ctx, message, session.session_state(account, owner.limits))
        head = {"@type": "Response" if status == 200 else "RequestError"}
        if request_id is not None:
            head["requestId"] = request_id
        head.update(answer)
        self._send(head)

    # -- push (RFC 8887 4.3.5; StateChange of RFC 8620 7.1) ------------------------------

    def _push_enable(self, message: dict, request_id) -> None:
        types = message.get("dataTypes")
        if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
            return self._request_error(api.RequestError(
                "notRequest", "dataTypes must be null or an array of type names"), request_id)
        push_state = message.get("pushState")
        if push_state is not None and not isinstance(push_state, str):
            return self._request_error(api.RequestError("notRequest", "pushState must be a string"),
                                       request_id)
        # Types this server has no state for (e.g. EmailDelivery) are never pushed.
        self.push_types = set(state.TYPES) if types is None else set(types) & set(state.TYPES)
        if self.baseline is None:
            self.hub.owner.store.subscribe(self.account.id, self.changed)
            COUNTS["push_listeners"] += 1
        if self.baseline is None or self.baseline.called:
            self.baseline = defer.Deferred()
        self.sent = None if push_state is None else decode_push_state(push_state)
        self.changed(self.account.id)

    def _after_baseline(self) -> defer.Deferred:
        waiter = defer.Deferred()
        self.baseline.addBoth(lambda result: (waiter.callback(None), result)[1])
        return waiter

    def _push_off(self) -> None:
        if self.baseline is None:
            return
        self.hub.owner.store.unsubscribe(self.account.id, self.changed)
        COUNTS["push_listeners"] -= 1
        baseline, self.baseline = self.baseline, None
        self.push_types = self.sent = None
        if not baseline.called:
            baseline.callback(None)

    def changed(self, _account_id) -> None:
        """The store's commit hook (as for EventSource and IMAP IDLE): read the states
        once, again if more commits came meanwhile, and push what moved."""
        if self.closed or self.push_types is None:
            return
        if self.reading:
            self.dirty = True
            return
        self.reading = True
        d = self.hub.owner.store.run_read(jmapreads.states, self.account)
        d.addCallback(self._compare)
        d.addErrback(lambda failure: log.failure("jmap websocket: reading states failed", failure))
        d.addBoth(self._read_done)

    def _read_done(self, _result) -> None:
        self.reading = False
        if self.baseline is not None and not self.baseline.called:
            self.baseline.callback(None)  # taken (or failed: then the next change is the baseline)
        if self.dirty and not self.closed:
            self.dirty = False
            self.changed(self.account.id)

    def _compare(self, found: dict) -> None:
        if self.push_types is None:
            return
        now = state.strings(found)
        if self.sent is None:  # the baseline: from here on every change is pushed
            self.sent = now
            return
        moved = {k: v for k, v in now.items() if k in self.push_types and self.sent.get(k) != v}
        if not moved:
            return
        self.sent = dict(self.sent, **moved)  # pushState: what this client has been told
        self._send({"@type": "StateChange", "changed": {api.account_id_of(self.account): moved},
                    "pushState": encode_push_state(self.sent)})
