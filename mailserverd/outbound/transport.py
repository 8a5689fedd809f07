"""Transport: one delivery attempt of one message to one recipient domain.

`Transport(reactor, settings, ...).deliver(domain, message)` routes the
domain (MX, or the smarthost when one is configured), DKIM-signs the
message once, and tries the hosts best first: a connection failure, a
refused greeting or a 4xx leaves the recipients it concerned for the next
address/host; a 2xx or 5xx is final. Whatever is still undecided at the end
is "deferred", with the last reason heard. It fires with one RecipientResult
per recipient, in the message's order, and never fails.

At most `[outbound] max_per_destination` deliveries to one domain (or to
the smarthost) run at once; more wait their turn. Connections are reused:
a message done on a healthy connection leaves it in a ConnectionPool
(client.py) for the next message to the same host address, so a burst to
one destination costs one TCP connect, one TLS handshake and one EHLO per
connection, not per message. A pooled connection found dead before it
answered anything is not counted: the message goes on a fresh connection.
"""

from __future__ import annotations

import email.utils
import re

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from . import client
from .clientparser import DEFERRED, DELIVERED, ClientSession, Envelope, Outcome, normalize_line_endings
from .resolver import MailHost, MxResolver
from .types import FAILED, OutboundMessage, RecipientResult, RouteError, TemporaryRouteError

log = Logger(namespace="mailserverd.outbound.transport")

MAX_CONNECTIONS = 10  # connection attempts in one delivery (addresses over all hosts)
MAX_SESSIONS = 3      # of which this many may reach SMTP (Postfix's smtp_mx_session_limit is 2)
FROM_SCAN_LIMIT = 256 * 1024
MAX_FROM_HEADER = 4096
NO_HOST = Outcome(DEFERRED, 0, "4.4.1", "no mail host could be reached")


def parse_hostport(value, default_port: int) -> tuple[str, int] | None:
    """A smarthost setting: (host, port), "host:port", "[v6]:port", "host" or empty."""
    if not value:
        return None
    if isinstance(value, tuple):
        return value[0], int(value[1])
    text = str(value).strip()
    match = re.fullmatch(r"\[([^\]]+)\](?::(\d{1,5}))?|([^:\s]+)(?::(\d{1,5}))?", text)
    if not match:
        raise ValueError(f"not host:port: {text!r}")
    host = match.group(1) or match.group(3)
    port = match.group(2) or match.group(4)
    return host, int(port) if port else default_port


def author_domain(body: bytes, fallback: str) -> str:
    """The domain of the From header (what DMARC aligns DKIM with, RFC 7489 3.1.1), else the fallback."""
    end = body.find(b"\r\n\r\n", 0, FROM_SCAN_LIMIT)
    head = body[:FROM_SCAN_LIMIT if end < 0 else end + 2].decode("utf-8", "replace")
    match = re.search(r"(?im)^from[ \t]*:(.*(?:\r\n[ \t].*)*)", head)
    if match:
        _, address = email.utils.parseaddr(match.group(1).replace("\r\n", "")[:MAX_FROM_HEADER])
        if "@" in address:
            return address.rpartition("@")[2].strip().lower()
    return fallback.rpartition("@")[2].lower() if "@" in fallback else ""


class Transport:
    def __init__(self, reactor, settings, tls_client_context_factory=None, resolver=None, dkim_signer=None,
                 timeouts: client.Timeouts = client.Timeouts(), pool: "client.ConnectionPool | None | bool" = True):
        """pool: True (a ConnectionPool on this reactor, the default), a pool, or None (one
        connection per message)."""
        outbound = settings.outbound
        self.reactor = reactor
        self.port = outbound.port
        self.helo_name = settings.server.hostname
        self.timeouts = timeouts
        self.max_per_destination = max(1, int(getattr(outbound, "max_per_destination", 4)))
        self.smarthost = parse_hostport(getattr(outbound, "smarthost", ""), outbound.port)
        user = getattr(outbound, "smarthost_user", "") or ""
        self.credentials = (user, getattr(outbound, "smarthost_password", "") or "") if user else None
        self.tls_context_factory = tls_client_context_factory or client.default_tls_context_factory()
        self.resolver = resolver or MxResolver(reactor, settings.dns.nameservers, local_names=(self.helo_name,))
        self.dkim_signer = dkim_signer
        self._limits: dict[str, defer.DeferredSemaphore] = {}
        self.pool = client.ConnectionPool(reactor) if pool is True else pool or None

    def close_idle(self) -> None:
        """QUIT the pooled idle connections (the service is stopping)."""
        if self.pool is not None:
            self.pool.close_all()

    # -- the contract ---------------------------------------------------------------------

    def deliver(self, domain: str, message: OutboundMessage) -> defer.Deferred:
        """Deferred[list[RecipientResult]], one per message.recipients, in order; never fails."""
        key = "smarthost" if self.smarthost else domain.lower()
        limit = self._limits.get(key)
        if limit is None:
            limit = self._limits[key] = defer.DeferredSemaphore(self.max_per_destination)
        d = limit.run(self._deliver, domain, message)
        d.addErrback(self._unexpected, domain, message)
        d.addBoth(self._release_limit, key, limit)
        return d

    def _release_limit(self, result, key: str, limit: defer.DeferredSemaphore):
        if limit.tokens == limit.limit and not limit.waiting and self._limits.get(key) is limit:
            del self._limits[key]
        return result

    def _unexpected(self, failure, domain: str, message: OutboundMessage):
        log.failure("outbound: delivery of {id} to {domain} failed unexpectedly", failure,
                    id=message.queue_id, domain=domain)
        outcome = Outcome(DEFERRED, 0, "4.3.0", "internal error during delivery")
        return [_result(recipient, outcome) for recipient in message.recipients]

    # -- one delivery ---------------------------------------------------------------------

    @defer.inlineCallbacks
    def _deliver(self, domain: str, message: OutboundMessage):
        try:
            if self.smarthost:
                hosts = yield self.resolver.route_host(self.smarthost[0])
            else:
                hosts = yield self.resolver.route(domain)
        except RouteError as exc:
            log.info("outbound: {id} to {domain}: {code} {enhanced} {text}", id=message.queue_id,
                     domain=domain, code=exc.code, enhanced=exc.enhanced, text=exc.text)
            outcome = Outcome(FAILED, exc.code, exc.enhanced, exc.text)
            return [_result(recipient, outcome) for recipient in message.recipients]
        except TemporaryRouteError as exc:
            outcome = Outcome(DEFERRED, exc.code, exc.enhanced, exc.text)
            return [_result(recipient, outcome) for recipient in message.recipients]
        body = yield self._signed(normalize_line_endings(message.body), message)
        port = self.smarthost[1] if self.smarthost else self.port
        results = yield self._try_hosts(hosts, port, message, body)
        return results

    @defer.inlineCallbacks
    def _signed(self, body: bytes, message: OutboundMessage):
        """The body with our DKIM signatures, signed once whatever the number of hosts tried."""
        if self.dkim_signer is None:
            return body
        domain = author_domain(body, message.sender)
        if not domain:
            return body
        try:
            signed = yield deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                             self.dkim_signer.sign, body, domain)
        except Exception:
            # an unsigned message still beats an undelivered one; the log says why
            log.failure("outbound: DKIM signing of {id} for {domain} failed; sending unsigned",
                        id=message.queue_id, domain=domain)
            return body
        return signed

    @defer.inlineCallbacks
    def _try_hosts(self, hosts: list[MailHost], port: int, message: OutboundMessage, body: bytes):
        final: dict[str, tuple[Outcome, str, str]] = {}     # delivered or failed
        deferred: dict[str, tuple[Outcome, str, str]] = {}  # the latest 4xx per recipient
        last_error, last_host, last_ip = NO_HOST, "", ""
        dsn = dict(zip(message.recipients, message.dsn))
        connections = sessions = 0
        for host in hosts:
            for address in host.addresses:
                pending = [r for r in message.recipients if r not in final]
                if not pending or connections >= MAX_CONNECTIONS or sessions >= MAX_SESSIONS:
                    break
                connections += 1
                envelope = Envelope(sender=message.sender, recipients=tuple(pending), body=body,
                                    smtputf8=message.smtputf8, eight_bit=message.eight_bit,
                                    dsn=tuple(dsn.get(r, (None, None)) for r in pending) if message.dsn else (),
                                    ret=message.ret, envid=message.envid)
                credentials = self.credentials if self.smarthost else None
                key = (address, port, credentials)
                session = yield self._reuse(key, envelope)
                if session is None:
                    session = ClientSession(envelope, self.helo_name, tls_available=True, credentials=credentials,
                                            keep_open=self.pool is not None)
                    session = yield client.attempt(self.reactor, address, port, session, self.tls_context_factory,
                                                   self.timeouts, pool=self.pool, key=key)
                if session.tls_failed and credentials is None:
                    # opportunistic TLS (RFC 7435 4): a failed handshake is retried once in clear
                    log.info("outbound: {id} via {host} [{ip}]: TLS handshake failed ({error}); retrying "
                             "without TLS", id=message.queue_id, host=host.name, ip=address,
                             error=session.host_error.text if session.host_error else "")
                    session = ClientSession(envelope, self.helo_name, tls_available=False)
                    session = yield client.attempt(self.reactor, address, port, session, None, self.timeouts)
                if session.replies:
                    sessions += 1  # the server spoke SMTP
                for recipient, outcome in session.outcomes.items():
                    target = deferred if outcome.status == DEFERRED else final
                    target[recipient] = (outcome, host.name, address)
                if session.host_error is not None:
                    last_error, last_host, last_ip = session.host_error, host.name, address
                if session.host_error is not None or any(o.status != DELIVERED for o in session.outcomes.values()):
                    # (all delivered: the worker's per-recipient line says it, with the host)
                    log.info("outbound: {id} via {host} [{ip}]: {summary}", id=message.queue_id, host=host.name,
                             ip=address, summary=_summary(session))
        results = []
        for recipient in message.recipients:
            if recipient in final:
                results.append(_result(recipient, *final[recipient]))
            elif recipient in deferred:
                results.append(_result(recipient, *deferred[recipient]))
            else:
                results.append(_result(recipient, last_error, last_host, last_ip))
        return results


    @defer.inlineCallbacks
    def _reuse(self, key, envelope: Envelope):
        """The session of `envelope` sent on a pooled connection to key, or None when there is
        none or the pooled one died before answering (the server timed it out)."""
        while self.pool is not None:
            connection = self.pool.take(key)
            if connection is None:
                return None
            session = yield connection.reuse(envelope)
            if session.replies or session.host_error is None:
                return session
        return None


def _result(recipient: str, outcome: Outcome, host: str = "", ip: str = "") -> RecipientResult:
    return RecipientResult(recipient=recipient, status=outcome.status, code=outcome.code,
                           enhanced=outcome.enhanced, text=outcome.text, remote_host=host, remote_ip=ip)


def _summary(session: ClientSession) -> str:
    counts: dict[str, int] = {}
    for outcome in session.outcomes.values():
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    parts = [f"{status} {count}" for status, count in sorted(counts.items())]
    if session.host_error is not None:
        error = session.host_error
        parts.append(f"host error {error.code} {error.enhanced} {error.text}")
    return ", ".join(parts) or "nothing decided"
