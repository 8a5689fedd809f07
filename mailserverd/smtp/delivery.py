"""From a received message to a durable commit and the reply that promises it.

Order: structural limits (before anything parses the message), submission's
From: ownership, the body-stage checks, then ONE store.deliver() call for
every local copy, each with its own prepended Return-Path, Received and check
headers (the body blob is never rewritten). 250 only after that commit is
durable; any store failure is a 4xx, never a 250.

Remote recipients (submission only) go to the durable outbound queue with
their DSN parameters (RFC 3461) before the 250, and so do the forwarded
copies for aliases with remote targets and bounces to our SRS addresses
(outbound/forward.py; forward_plan() below says what is not forwarded).
With local copies too, or several queued copies, the queued messages are held
until everything is durable and only then released, so a 4xx never leaves
half the recipients served.
"""

from __future__ import annotations

import datetime
import email.utils
import re
import secrets

from twisted.internet import defer
from twisted.logger import Logger

from ..checks.base import Envelope, Session
from ..checks.authresults import remove_own as remove_own_results
from ..mime.headers import iter_fields, split_header
from ..mime.limits import MessageTooComplex, check_limits
from ..outbound.forward import delivered_to
from ..store.api import DeliveryTarget, OverQuota
from . import replies
from .addresses import owns_address
from .replies import Reply
from .syntax import parse_address_literal, parse_domain

log = Logger(namespace="mailserverd.smtp")

MAX_FOLDED_LINE = 78  # RFC 5322 2.1.1 SHOULD


def new_id() -> str:
    """A transaction id for Received headers and logs (not guessable, 60 bits)."""
    return secrets.token_hex(8)[:15].upper()


def protocol_name(session: Session, smtputf8: bool) -> str:
    """The Received "with" keyword: RFC 3848 (ESMTP[S][A]) and RFC 6531 3.7.3 (UTF8SMTP...)."""
    if not session.esmtp:
        return "SMTP"
    base = "UTF8SMTP" if smtputf8 else "ESMTP"
    return base + ("S" if session.tls else "") + ("A" if session.account else "")


def _ip_literal(ip: str) -> str:
    return f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"


def _helo_for_header(helo: str | None) -> str | None:
    """The HELO name if it is a Domain or address literal, else None (RFC 5321 4.4 From-domain)."""
    if not helo:
        return None
    try:
        return parse_address_literal(helo) if helo.startswith("[") else parse_domain(helo, utf8=False)
    except ValueError:
        return None


def fold(name: str, value: str) -> bytes:
    """One header field, folded at spaces (RFC 5322 2.2.3), CRLF-terminated."""
    lines: list[str] = []
    current = f"{name}:"
    for word in value.split(" "):
        if not word:
            continue
        if len(current) + 1 + len(word) > MAX_FOLDED_LINE and current.strip():
            lines.append(current)
            current = "\t" + word
        else:
            current += " " + word
    lines.append(current)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def received_header(session: Session, envelope: Envelope, recipient: str, now: float) -> bytes:
    """RFC 5321 4.4 time stamp line, with TLS details as a comment (as Postfix writes them)."""
    ip = _ip_literal(session.remote_ip)
    helo = _helo_for_header(session.helo)
    if helo is not None:
        from_part = f"from {helo} ({ip})"
    else:  # an unusable HELO is not repeated into the header
        from_part = f"from {ip} (unknown)"
    protocol = protocol_name(session, bool(getattr(envelope.params, "smtputf8", False)))
    lines = [f"Received: {from_part}", f"by {session.hostname} (mailserverd) with {protocol} id {envelope.id}"]
    if session.tls is not None:
        lines.append(f"(using {session.tls.version} with cipher {session.tls.cipher})")
    date = email.utils.format_datetime(datetime.datetime.fromtimestamp(now, datetime.timezone.utc))
    lines.append((f"for <{recipient}>; " if recipient else "; ") + date)
    # One clause per line, folded before each (RFC 5322 2.2.3), as Postfix writes it.
    return ("\r\n\t".join(lines) + "\r\n").encode("utf-8")


def return_path_header(mail_from: str) -> bytes:
    """RFC 5321 4.4: the final delivery adds Return-Path with the reverse-path."""
    return f"Return-Path: <{mail_from}>\r\n".encode("utf-8")


_WHITESPACE = re.compile(r"\s+")


def from_addresses(message: bytes) -> list[str]:
    """Every address in every From: field (call only after mime.limits.check_limits)."""
    header, _ = split_header(message)
    found = []
    for name, value in iter_fields(header):
        if name == "from":
            text = _WHITESPACE.sub(" ", value.decode("utf-8", "replace"))
            found.extend(address for _name, address in email.utils.getaddresses([text]))
    return found


class DeliveryPolicy:
    """What delivery needs that does not change per message."""

    def __init__(self, store, chain, clock, max_header_size: int, max_mime_depth: int,
                 submission: bool, outbound=None, responder=None, forwarder=None):
        self.store = store
        self.forwarder = forwarder  # outbound.forward.Forwarder: alias forwards, SRS bounces; or None
        self.responder = responder  # vacation.VacationResponder: told of each durable local delivery
        self.outbound = outbound  # OutboundService: enqueue/release/discard; None = no remote delivery
        self.chain = chain
        self.clock = clock
        self.max_header_size = max_header_size
        self.max_mime_depth = max_mime_depth
        self.submission = submission


@defer.inlineCallbacks
def deliver_message(policy: DeliveryPolicy, session: Session, envelope: Envelope, message: bytes,
                    sent_copy: bool = True):
    """Deferred[Reply]: the answer to the end of DATA / BDAT LAST. sent_copy: a submission
    also appends the message to the sender's Sent (JMAP asks for it per submission)."""
    try:
        check_limits(message, max_header_size=policy.max_header_size, max_mime_depth=policy.max_mime_depth)
    except MessageTooComplex as exc:
        log.info("message {id} refused: {reason}", id=envelope.id, reason=exc.reason)
        return replies.MESSAGE_TOO_COMPLEX
    if policy.submission:
        allowed = yield policy.store.sender_addresses(session.account)
        addresses = from_addresses(message)
        if not addresses or not all(address and owns_address(allowed, address) for address in addresses):
            return replies.FROM_NOT_OWNED
    verdict = yield policy.chain.run_body(session, envelope, message)
    if verdict.rejected:
        return Reply(verdict.code, verdict.enhanced, verdict.text)
    # RFC 8601 5: an Authentication-Results field claiming our authserv-id comes from outside
    message = remove_own_results(message, session.hostname)
    quarantine_all = envelope.quarantine or verdict.quarantined
    check_headers = list(envelope.headers) + list(verdict.headers)
    now = policy.clock.seconds()
    targets = []
    seen_accounts = set()
    # decide_recipient lets a recipient without accounts through only when it is remote
    # (submission) or forwards (an alias with remote targets only, a bounce to our SRS address)
    remote = [recipient for recipient in envelope.recipients if not recipient.accounts and not recipient.forward]
    for recipient in envelope.recipients:
        for account in recipient.accounts:
            if account.id in seen_accounts:  # one copy per account, however many RCPTs reach it
                continue
            seen_accounts.add(account.id)
            prepend = (return_path_header(envelope.mail_from)
                       + received_header(session, envelope, recipient.address, now)
                       + b"".join(fold(name, value) for name, value in check_headers + recipient.headers))
            junk = quarantine_all or recipient.quarantine
            targets.append(DeliveryTarget(account=account, mailbox="Junk" if junk else "INBOX",
                                          prepend=prepend))
    forwards, looped = forward_plan(envelope, message, quarantine_all)
    if looped and not (targets or remote or forwards):
        return replies.FORWARDING_LOOP
    queued = []  # (OutboundService, NewMessage), each durable before the 250
    if remote:
        queued.append((policy.outbound, queued_message(policy, session, envelope, remote, message, now)))
    for number, (recipient, addresses) in enumerate(forwards, 1):
        prepend = (received_header(session, envelope, recipient.address, now)
                   + b"".join(fold(name, value) for name, value in check_headers + recipient.headers))
        try:
            item = yield policy.forwarder.prepare(session, envelope, recipient.address, addresses, prepend,
                                                  message, now, f"{envelope.id}F{number}")
        except Exception:
            log.failure("preparing the forwarded copy of {id} failed", id=envelope.id)
            return replies.STORE_FAILED
        queued.append((policy.forwarder.outbound, item))
    # several queued copies, or local ones too: held until all are durable, then released
    held = bool(queued and (targets or len(queued) > 1))
    enqueued = []
    for outbound, item in queued:
        try:
            yield outbound.enqueue(item, held=held)
        except Exception:
            log.failure("queueing {id} for remote recipients failed", id=item.id)
            for done_outbound, done_id in enqueued:
                yield _discard_held(done_outbound, done_id)
            return replies.STORE_FAILED
        enqueued.append((outbound, item.id))
    if targets:
        try:
            yield policy.store.deliver(message, targets)
        except Exception as exc:
            if held:
                for done_outbound, done_id in enqueued:
                    yield _discard_held(done_outbound, done_id)
            if isinstance(exc, OverQuota):
                return replies.MAILBOX_FULL
            log.failure("delivery of {id} failed", id=envelope.id)
            return replies.STORE_FAILED
    if held:
        for done_outbound, done_id in enqueued:
            try:
                yield done_outbound.release(done_id)
            except Exception:
                # the local copies are in, the remote ones would never go: the client must retry
                log.failure("releasing queued {id} failed", id=done_id)
                return replies.STORE_FAILED
    if targets and policy.responder is not None:  # RFC 3834 auto-replies; never delays or fails the 250
        policy.responder.delivered(envelope.mail_from, message, targets)
    if policy.submission and sent_copy:
        try:
            yield policy.store.append(session.account, "Sent", message, flags=("\\Seen",))
        except Exception:
            # The recipients have the message: a 4xx now would make the client send it twice.
            log.failure("copy of {id} to Sent failed", id=envelope.id)
    return Reply(250, "2.0.0", f"OK: queued as {envelope.id}")


def _dsn_request(params) -> tuple[str | None, str | None]:
    """RFC 3461 4.1 NOTIFY and 4.2 ORCPT of one RCPT, as the queue stores them."""
    notify = getattr(params, "notify", None)
    orcpt = getattr(params, "orcpt", None)
    return (",".join(notify) if notify else None, f"{orcpt[0]};{orcpt[1]}" if orcpt else None)


def queued_message(policy: DeliveryPolicy, session: Session, envelope: Envelope, remote, message: bytes,
                   now: float):
    """The outbound queue's copy: our Received line (RFC 5321 4.4; no "for", which would
    expose Bcc recipients to the others) on top of the message as submitted."""
    params = envelope.params
    recipients = [(recipient.address, *_dsn_request(recipient.params)) for recipient in remote]
    body = received_header(session, envelope, "", now) + message
    return policy.outbound.new_message(
        envelope.mail_from, body, recipients, message_id=envelope.id,
        smtputf8=bool(getattr(params, "smtputf8", False)),
        eight_bit=getattr(params, "body", None) == "8BITMIME",
        ret=getattr(params, "ret", None), envid=getattr(params, "envid", None))


def forward_plan(envelope: Envelope, message: bytes, quarantined: bool):
    """([(recipient, remote targets)], [looping aliases]): the forwards to queue.

    Policy (docs/checks.md "Forwarding"): a message the checks quarantine is not
    forwarded (its local targets get it in Junk; a forward-only alias drops it
    with a log line): we do not send spam on under our name. An alias whose
    Delivered-To is already in the message is a forwarding loop (the copy we
    sent came back): not forwarded again; Received counting (check.hops) bounds
    loops that lose Delivered-To."""
    plan, looped = [], []
    seen = None
    for recipient in envelope.recipients:
        if not recipient.forward:
            continue
        if quarantined or recipient.quarantine:
            log.info("forward: {id} for <{alias}> not forwarded to {targets}: quarantined by the checks",
                     id=envelope.id, alias=recipient.address, targets=",".join(recipient.forward))
            continue
        if seen is None:
            seen = delivered_to(message)
        if recipient.address.lower() in seen:
            log.info("forward: {id} for <{alias}> not forwarded: forwarding loop (Delivered-To present)",
                     id=envelope.id, alias=recipient.address)
            looped.append(recipient.address)
            continue
        plan.append((recipient, recipient.forward))
    return plan, looped


@defer.inlineCallbacks
def _discard_held(outbound, message_id: str):
    try:
        yield outbound.discard(message_id)
    except Exception:  # the worker purges stale held messages on its next start
        log.failure("discarding held {id} failed", id=message_id)
