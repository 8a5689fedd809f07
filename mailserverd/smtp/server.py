"""The thin Twisted side of SMTP: sockets, TLS, timeouts, and the policy answers.

SMTPServerProtocol feeds bytes to the SMTPMachine (parser.py), writes what it
wants sent, and answers its requests (MAIL, RCPT, message, AUTH) from the
store, the authenticator, the limiters and the check chain. While an answer
is pending the transport is paused, so pipelined input waits in the kernel,
not in memory, and is parsed only after the answer is rendered (RFC 2920).

build_factory(mode, settings, store, authenticator, tls) is what the service
tree calls; mode is "smtp" (inbound MX), "submission" (STARTTLS + AUTH) or
"submissions" (implicit TLS + AUTH, the port is wrapped in TLS by the caller).
"""

from __future__ import annotations

import weakref

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from ..auth import AuthFailed, plaintext_allowed
from ..checks.base import DEFAULT_CHECKS, CheckChain, Envelope, Recipient, Session, TLSInfo, build_chain
from . import replies
from .addresses import decide_recipient, owns_address
from .data import MessageLimits
from .delivery import DeliveryPolicy, deliver_message, new_id
from .events import (NEED_DATA, PAUSED, AuthAttempt, Close, Connected, MachineConfig, MailFrom,
                     MessageReceived, MessageRefused, RcptTo, StartTLS)
from .parser import SMTPMachine
from .ratelimit import ConnectionLimiter, RateLimiter, TrustedNetworks
from .replies import Reply
from ..netio import set_no_delay

log = Logger(namespace="mailserverd.smtp")

MODES = ("smtp", "submission", "submissions")
AUTH_MECHANISMS = ("PLAIN", "LOGIN")
TEMPFAIL = Reply(451, "4.3.0", "Temporary local problem; try again later")

# One per-account submission budget however many submission listeners there are.
_ACCOUNT_LIMITERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _verdict_reply(verdict) -> Reply:
    return Reply(verdict.code, verdict.enhanced, verdict.text)


class SMTPServerProtocol(protocol.Protocol, TimeoutMixin):
    def __init__(self, factory: "SMTPFactory"):
        self.factory = factory
        self.callLater = factory.clock.callLater  # TimeoutMixin uses it: an injectable clock
        self.machine: SMTPMachine | None = None
        self.session: Session | None = None
        self.envelope: Envelope | None = None
        self._counted = False
        self._pumping = False
        self._paused = False
        self._lost = False

    # -- connection lifecycle -------------------------------------------------

    def connectionMade(self):
        peer = self.transport.getPeer()
        set_no_delay(self.transport)
        ip = getattr(peer, "host", "unknown")
        factory = self.factory
        if not factory.connections.acquire(ip):
            log.info("smtp {mode}: refused connection from {ip}: too many connections",
                     mode=factory.mode, ip=ip)
            self.transport.write(replies.TOO_MANY_CONNECTIONS.render())
            self.transport.loseConnection()
            return
        self._counted = True
        self.session = Session(id=new_id(), mode=factory.mode, remote_ip=ip,
                               remote_port=getattr(peer, "port", 0), hostname=factory.hostname)
        secure = factory.mode == "submissions"
        self.machine = SMTPMachine(factory.machine_config(secure, plaintext_allowed(False, ip)))
        self.setTimeout(factory.timeout)
        self._pump()

    def dataReceived(self, data: bytes):
        if self.machine is None:
            return
        self.resetTimeout()
        self.machine.receive_data(data)
        self._pump()

    def connectionLost(self, reason=protocol.connectionDone):
        self._lost = True
        self.setTimeout(None)
        if self._counted:
            self.factory.connections.release(self.session.remote_ip)
            self._counted = False

    def timeoutConnection(self):
        # RFC 5321 4.5.3.2: the server may close an idle session; 421 says so first.
        if self.machine is not None:
            self.machine.close(replies.TIMEOUT, "timeout")
            self._pump()
        else:
            self.transport.loseConnection()

    # -- driving the machine ------------------------------------------------------

    def _pump(self):
        if self._pumping or self._lost:
            return  # an answer that fired synchronously: the running loop continues
        self._pumping = True
        try:
            while True:
                event = self.machine.next_event()
                out = self.machine.data_to_send()
                if out:
                    self.transport.write(out)
                if event is NEED_DATA:
                    self._resume()
                    return
                if event is PAUSED:
                    self._pause()
                    return
                if isinstance(event, Close):
                    self.setTimeout(None)
                    self.transport.loseConnection()
                    self._lost = True
                    return
                self._dispatch(event)
        finally:
            self._pumping = False

    def _pause(self):
        if not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    def _resume(self):
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()

    def _dispatch(self, event):
        if isinstance(event, StartTLS):
            self._start_tls()
            return
        if isinstance(event, MessageRefused):
            self._log_transaction(event.reply, size=None)
            self.envelope = None
            return
        handler = {Connected: self._connected, MailFrom: self._mail_from, RcptTo: self._rcpt_to,
                   MessageReceived: self._message, AuthAttempt: self._auth}[type(event)]
        d = defer.maybeDeferred(handler, event)
        d.addErrback(self._internal_error, event)
        d.addCallback(self._answer)
        d.addErrback(self._broken)

    def _broken(self, failure):
        # Only a bug gets here; a session stuck paused forever would be worse than a reset.
        log.failure("smtp: session {id} broken; closing", failure=failure, id=self.session.id)
        self._lost = True
        self.transport.abortConnection()

    def _answer(self, result):
        reply, account = result if isinstance(result, tuple) else (result, None)
        if self._lost:
            return
        self.resetTimeout()
        self.machine.respond(reply, account=account)
        self._pump()

    def _internal_error(self, failure, event):
        log.failure("smtp: error answering {event}", failure=failure, event=type(event).__name__)
        if isinstance(event, Connected):
            return Reply(421, "4.3.0", "Temporary local problem; closing connection")
        if isinstance(event, MessageReceived):
            return replies.STORE_FAILED
        return TEMPFAIL

    # -- STARTTLS (RFC 3207) ---------------------------------------------------------

    def _start_tls(self):
        self.transport.startTLS(self.factory.tls.server_context_factory())
        self.machine.tls_started()
        # RFC 3207 4.2: the client must start over; so does our view of it.
        self.session.helo = None
        self.session.esmtp = False
        self.session.account = None
        self.envelope = None

    def _tls_info(self) -> TLSInfo | None:
        if not self.machine.tls_active:
            return None
        try:
            connection = self.transport.getHandle()
            version, cipher = connection.get_protocol_version_name(), connection.get_cipher_name()
        except Exception:  # not an OpenSSL transport (e.g. a test double)
            return TLSInfo("TLS", "unknown")
        return TLSInfo(version or "TLS", cipher or "unknown")

    # -- answers ---------------------------------------------------------------------------

    @defer.inlineCallbacks
    def _connected(self, event):
        verdict = yield self.factory.chain.run_connection(self.session)
        if verdict.rejected:
            log.info("smtp {mode}: connection from {ip} refused: {text}", mode=self.factory.mode,
                     ip=self.session.remote_ip, text=verdict.text)
            return Reply(554 if verdict.code >= 500 else 421, verdict.enhanced, verdict.text)
        return self.machine.greeting()

    def _sync_session(self):
        self.session.helo = self.machine.helo_name
        self.session.esmtp = self.machine.esmtp
        self.session.tls = self._tls_info()

    @defer.inlineCallbacks
    def _mail_from(self, event: MailFrom):
        self._sync_session()
        sender = event.sender.address if event.sender is not None else ""
        reply, envelope = yield start_transaction(self.factory, self.session, sender, event.params)
        if envelope is not None:
            self.envelope = envelope
        return reply

    def _rcpt_to(self, event: RcptTo):
        return add_recipient(self.factory, self.session, self.envelope, event.recipient, event.params)

    @defer.inlineCallbacks
    def _message(self, event: MessageReceived):
        self._sync_session()
        envelope, self.envelope = self.envelope, None
        reply = yield deliver_message(self.factory.delivery, self.session, envelope, event.body)
        self._log_transaction(reply, size=len(event.body), envelope=envelope)
        return reply

    @defer.inlineCallbacks
    def _auth(self, event: AuthAttempt):
        try:
            account = yield self.factory.authenticator.authenticate(
                event.username, event.password, self.session.remote_ip, protocol=self.factory.mode)
        except AuthFailed:
            return replies.AUTH_FAILED  # the authenticator already waited out the penalty and logged
        except Exception:
            log.failure("smtp: authentication backend failed")
            return replies.AUTH_TEMPFAIL
        self.session.account = account
        return replies.AUTH_OK, account

    def _log_transaction(self, reply: Reply, size, envelope: Envelope | None = None):
        envelope = envelope or self.envelope
        session = self.session
        log.info("smtp {mode}: id={id} session={session} rip={ip} helo={helo} tls={tls} auth={auth} "
                 "from=<{sender}> rcpts={rcpts} size={size} result={result}",
                 mode=self.factory.mode, id=envelope.id if envelope else "-", session=session.id,
                 ip=session.remote_ip, helo=self.machine.helo_name,
                 tls=session.tls.version if session.tls else "no",
                 auth=session.account.address if session.account else "-",
                 sender=envelope.mail_from if envelope else "?",
                 rcpts=",".join(r.address for r in envelope.recipients) if envelope else "",
                 size=size if size is not None else "-", result=str(reply))


# MAIL and RCPT policy as functions of the factory, so JMAP EmailSubmission (jmap/submission.py)
# sends through exactly the checks, limits and delivery of a submission listener.

@defer.inlineCallbacks
def start_transaction(factory: "SMTPFactory", session: Session, sender: str, params):
    """Deferred[(Reply, Envelope or None)] for MAIL FROM: sender ownership and the per-account
    rate limit on submission, the per-IP rate on the MX, then the sender-stage checks."""
    if factory.submission:
        if not sender:
            return replies.SENDER_NOT_OWNED, None
        allowed = yield factory.store.sender_addresses(session.account)
        if not owns_address(allowed, sender):
            return replies.SENDER_NOT_OWNED, None
        if not factory.account_rate.allow(session.account.address):
            return replies.RATE_LIMITED, None
    elif not factory.ip_rate.allow(session.remote_ip):
        return replies.RATE_LIMITED, None
    envelope = Envelope(id=new_id(), mail_from=sender, params=params)
    verdict = yield factory.chain.run_sender(session, envelope)
    if verdict.rejected:
        return _verdict_reply(verdict), None
    envelope.quarantine = verdict.quarantined
    envelope.headers.extend(verdict.headers)
    return replies.SENDER_OK, envelope


@defer.inlineCallbacks
def add_recipient(factory: "SMTPFactory", session: Session, envelope: Envelope, path, params):
    """Deferred[Reply] for RCPT TO: the recipient decision and the recipient-stage checks;
    an accepted recipient is appended to envelope.recipients."""
    decision = yield decide_recipient(factory.store, path, factory.hostname, factory.submission,
                                      factory.outbound, factory.forwarder)
    if not decision.reply.positive:
        log.info("smtp {mode}: rcpt <{rcpt}> from {ip} refused: {reply}", mode=factory.mode,
                 rcpt=path.address if path.domain else "Postmaster",
                 ip=session.remote_ip, reply=str(decision.reply))
        return decision.reply
    address = path.address if path.domain else decision.address
    recipient = Recipient(address=address, params=params, accounts=decision.accounts, forward=decision.forward)
    verdict = yield factory.chain.run_recipient(session, envelope, recipient)
    if verdict.rejected:
        return _verdict_reply(verdict)
    recipient.quarantine = verdict.quarantined
    recipient.headers.extend(verdict.headers)
    envelope.recipients.append(recipient)
    return replies.RECIPIENT_OK


class SMTPFactory(protocol.ServerFactory):
    noisy = False  # the listener service logs the port; one line per transaction is ours

    def __init__(self, mode: str, settings, store, authenticator, tls, chain: CheckChain, clock,
                 outbound=None, responder=None):
        if mode not in MODES:
            raise ValueError(f"unknown SMTP mode {mode!r}; expected one of {MODES}")
        self.mode = mode
        self.submission = mode != "smtp"
        self.settings = settings
        self.store = store
        self.authenticator = authenticator
        self.tls = tls
        self.chain = chain
        self.clock = clock
        self.outbound = outbound if self.submission else None  # the MX never relays
        # ...but forwards for admin-configured aliases and routes bounces to our SRS addresses
        self.forwarder = None
        if outbound is not None:
            from ..outbound.forward import Forwarder
            self.forwarder = Forwarder(settings.server.data_dir, settings.server.hostname, outbound, store, clock)
        self.hostname = settings.server.hostname
        self.timeout = settings.smtp.timeout
        limits = settings.limits
        self.limits = MessageLimits(limits.max_message_size, limits.max_header_size, limits.max_line_length)
        # Postfix smtpd_client_event_limit_exceptions = $mynetworks: trusted clients are exempt.
        trusted = TrustedNetworks(getattr(settings.smtp, "trusted_networks", ()))
        self.connections = ConnectionLimiter(limits.max_connections_per_ip, trusted)
        self.ip_rate = RateLimiter(settings.smtp.message_rate_per_ip, 60.0, clock, trusted)
        if store not in _ACCOUNT_LIMITERS:
            _ACCOUNT_LIMITERS[store] = RateLimiter(settings.smtp.submission_rate_per_account, 3600.0, clock)
        self.account_rate = _ACCOUNT_LIMITERS[store]
        self.delivery = DeliveryPolicy(store, chain, clock, limits.max_header_size, limits.max_mime_depth,
                                       submission=self.submission, outbound=self.outbound,
                                       responder=responder, forwarder=self.forwarder)

    def machine_config(self, secure: bool, plaintext_ok: bool) -> MachineConfig:
        limits = self.settings.limits
        return MachineConfig(
            hostname=self.hostname, limits=self.limits, max_recipients=limits.max_recipients,
            max_bad_commands=self.settings.smtp.max_bad_commands,
            starttls=self.tls is not None and self.mode != "submissions", tls_active=secure,
            auth_mechanisms=AUTH_MECHANISMS if self.submission else (),
            plaintext_auth_without_tls=plaintext_ok, require_auth=self.submission)

    def buildProtocol(self, addr):
        proto = SMTPServerProtocol(self)
        proto.factory = self
        return proto


def build_factory(mode: str, settings, store, authenticator, tls, checks: CheckChain | None = None,
                  clock=None, outbound=None, responder=None) -> SMTPFactory:
    """The protocol factory for one SMTP listener (see module docstring).

    checks: the chain every inbound and locally submitted message passes;
    default: the built-in checks (DEFAULT_CHECKS). clock: for timeouts and
    rate limits; default: the reactor. outbound: the OutboundService that
    submission queues remote recipients in; None = they get 451 4.3.2.
    responder: the vacation.VacationResponder told of local deliveries, or None.
    """
    if clock is None:
        from twisted.internet import reactor as clock
    if checks is None:
        checks = build_chain(DEFAULT_CHECKS)
    return SMTPFactory(mode, settings, store, authenticator, tls, checks, clock, outbound, responder)
