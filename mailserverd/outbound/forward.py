"""Forwarding: mail for an alias with remote targets, and bounces to our SRS addresses.

What a forwarded copy is (docs/checks.md "Forwarding"):

    ARC-Seal / ARC-Message-Signature / ARC-Authentication-Results   our ARC set (RFC 8617 5.1)
    Delivered-To: <alias>                 loop detection, as Postfix writes it
    Received / Authentication-Results ... what a local copy gets (minus Return-Path)
    the message as received               its DKIM signatures still verify

sent from the SRS-rewritten envelope sender (srs.py; the null sender stays
null, a sender in one of our domains is kept: SPF passes for it here) to the
remote targets through the durable outbound queue, like submitted mail.

The ARC set is made with dkimpy's arc_sign and the RSA key the outbound DKIM
signer uses for the alias's domain (outbound/dkim.py; ARC knows rsa-sha256
only, RFC 8617 4.1.1 via RFC 6376 3.3). Its i= is one more than the highest
set present, its cv= what check.auth found for the incoming chain (none,
pass or fail: RFC 8617 5.1.1, 4.1.3); the ARC-Authentication-Results copies
our Authentication-Results. Not sealed, and said in the log: no DKIM key for
the domain, no Authentication-Results of ours (check.auth not in the chain),
a chain whose validation had a temporary DNS error (a cv= we cannot state),
more than 50 sets, or a chain whose newest seal already says cv=fail (RFC 8617
5.1: it cannot be extended). The previous sets stay as they are either way.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

import dkim
from twisted.internet import defer
from twisted.logger import Logger

from .dkim import DkimSigner
from .srs import SRS, SrsError, is_srs

log = Logger(namespace="mailserverd.outbound.forward")

# RFC 8617 4.1.2: the AMS signs like DKIM; these, when present (From always is). Not
# DKIM-Signature: dkimpy refuses to sign it (its SHOULD NOT list).
ARC_SIGNED_HEADERS = ("from", "to", "cc", "subject", "date", "message-id", "reply-to", "in-reply-to",
                      "references", "mime-version", "content-type", "content-transfer-encoding")
SEALABLE = ("none", "pass", "fail")  # cv= values (RFC 8617 4.1.3)
HEADER_SCAN_LIMIT = 1024 * 1024
_DELIVERED_TO = re.compile(rb"^delivered-to[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", re.I | re.M)
_FIELD_NAME = re.compile(rb"(?m)^([!-9;-~]+)[ \t]*:")


def _header(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n", 0, HEADER_SCAN_LIMIT)
    return message[:HEADER_SCAN_LIMIT] if end < 0 else message[:end + 2]


def delivered_to(message: bytes) -> set[str]:
    """The lower-case addresses of the message's Delivered-To fields (a forwarding loop
    shows as our alias among them: the copy we sent came back)."""
    found = set()
    for match in _DELIVERED_TO.finditer(_header(message)):
        value = b" ".join(match.group(1).split()).decode("utf-8", "replace").strip().strip("<>").lower()
        if value:
            found.add(value)
    return found


_ARC_SEAL = re.compile(rb"^arc-seal[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", re.I | re.M)
_TAG = re.compile(rb"(?:^|;)\s*(i|cv)\s*=\s*([A-Za-z0-9]+)", re.I)


def chain_terminated(message: bytes) -> bool:
    """True when the highest-instance ARC-Seal says cv=fail: RFC 8617 5.1 step 1, the chain
    already failed and no further ARC set is added."""
    highest, cv = 0, b""
    for match in _ARC_SEAL.finditer(_header(message)):
        tags = {name.lower(): value for name, value in _TAG.findall(b" ".join(match.group(1).split()))}
        try:
            instance = int(tags.get(b"i", b"0"))
        except ValueError:
            continue
        if instance > highest:
            highest, cv = instance, tags.get(b"cv", b"").lower()
    return cv == b"fail"


def arc_seal(message: bytes, domain: str, selector: str, private_key: bytes, authserv_id: str,
             timestamp: int) -> bytes:
    """The message with a new ARC set on top (RFC 8617 5.1), or unchanged when dkimpy makes
    none (no Authentication-Results of `authserv_id`, a chain it will not extend).
    Blocking CPU work: run it off the reactor. Raises dkim.DKIMException on bad input."""
    present = {name.decode("ascii").lower() for name in _FIELD_NAME.findall(_header(message))}
    if "from" not in present or chain_terminated(message):  # From must be signed (RFC 6376 5.4)
        return message
    include = [name.encode("ascii") for name in ARC_SIGNED_HEADERS if name in present]
    headers = dkim.arc_sign(message, selector.encode("ascii"), domain.encode("ascii"), private_key,
                            authserv_id.encode("ascii"), include_headers=include, timestamp=timestamp)
    return b"".join(headers) + message if headers else message


class Forwarder:
    """The forwarding side of the SMTP delivery path (one per SMTP factory).

    outbound: the OutboundService (new_message, enqueue, release, discard);
    store: the AsyncStore (is_local_domain); run(fn, *args) -> Deferred runs
    the sealing off the reactor (default: the reactor's thread pool)."""

    def __init__(self, data_dir: str, hostname: str, outbound, store, clock, signer: Optional[DkimSigner] = None,
                 srs: Optional[SRS] = None, run: Optional[Callable] = None, reactor=None):
        self.data_dir = data_dir
        self.hostname = hostname
        self.outbound = outbound
        self.store = store
        self.clock = clock
        self.signer = signer or DkimSigner(data_dir)
        self._srs = srs
        if run is None:
            from twisted.internet.threads import deferToThreadPool
            if reactor is None:
                from twisted.internet import reactor
            run = lambda fn, *args: deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)  # noqa: E731
        self.run = run

    @property
    def srs(self) -> SRS:
        if self._srs is None:  # the secret is made on first use, like the DKIM keys are by keygen
            self._srs = SRS.from_data_dir(self.data_dir, self.clock)
        return self._srs

    def reverse(self, local: str) -> str:
        """The original sender an SRS local part of ours stands for; SrsError otherwise."""
        return self.srs.reverse(local)

    @staticmethod
    def is_srs_return(address: str) -> bool:
        return is_srs(address.rpartition("@")[0])

    @defer.inlineCallbacks
    def envelope_sender(self, mail_from: str, domain: str):
        """Deferred[str]: the MAIL FROM of a copy forwarded by `domain` (SRS, see module docstring)."""
        if not mail_from:
            return ""
        local = yield self.store.is_local_domain(mail_from.rpartition("@")[2])
        return mail_from if local else self.srs.forward(mail_from, domain)

    def _sealing_key(self, domain: str):
        signing = self.signer.signing_domain(domain)
        if signing is None:
            return None, None
        for key in self.signer.keys_for(signing):
            if key.kind == "rsa":
                return signing, key
        return signing, None

    @defer.inlineCallbacks
    def prepare(self, session, envelope, alias: str, targets, prepend: bytes, message: bytes, now: float,
                queue_id: str):
        """Deferred[NewMessage]: the copy of `message` for `targets`, forwarded for `alias`.

        prepend: our Received and check header fields (what a local copy gets, without Return-Path)."""
        domain = alias.rpartition("@")[2]
        sender = yield self.envelope_sender(envelope.mail_from, domain)
        headers = prepend
        if getattr(session, "account", None) is not None and b"authentication-results" not in prepend.lower():
            # submission: what we checked is the SMTP AUTH (RFC 8601 2.7.4)
            headers += f"Authentication-Results: {self.hostname}; auth=pass smtp.auth={session.account.address}\r\n" \
                .encode("utf-8")
        if not self.is_srs_return(alias):
            headers = f"Delivered-To: {alias}\r\n".encode("utf-8") + headers
        body = headers + message
        body, sealed = yield self._sealed(body, domain, envelope, now)
        log.info("forward: id={id} for=<{alias}> from=<{sender}> to={targets} arc={sealed}", id=queue_id,
                 alias=alias, sender=sender, targets=",".join(f"<{t}>" for t in targets), sealed=sealed)
        params = envelope.params
        return self.outbound.new_message(
            sender, body, [(target, None, None) for target in targets], message_id=queue_id,
            smtputf8=bool(getattr(params, "smtputf8", False)),
            eight_bit=getattr(params, "body", None) == "8BITMIME",
            ret=getattr(params, "ret", None), envid=getattr(params, "envid", None))

    @defer.inlineCallbacks
    def _sealed(self, body: bytes, domain: str, envelope, now: float):
        """Deferred[(body, description)]: ARC-sealed when we can (module docstring)."""
        auth = envelope.data.get("auth")
        cv = auth.arc.result if auth is not None else "none"
        if cv not in SEALABLE:
            return body, f"unsealed (chain validation {cv})"
        signing, key = self._sealing_key(domain)
        if key is None:
            log.info("forward: no DKIM RSA key for {domain}; forwarded without an ARC seal "
                     "(mailserverctl dkim keygen {domain})", domain=domain)
            return body, "unsealed (no key)"
        try:
            sealed = yield self.run(arc_seal, body, signing, key.selector, key.private, self.hostname, int(now))
        except Exception as exc:  # dkimpy on hostile input (e.g. more than 50 sets): send it unsealed
            log.info("forward: ARC sealing for {domain} failed ({error}); forwarded unsealed",
                     domain=signing, error=f"{exc.__class__.__name__}: {exc}"[:200])
            return body, "unsealed (error)"
        if len(sealed) == len(body):
            return body, "unsealed (no From, no Authentication-Results of ours, or a chain ended by cv=fail)"
        return sealed, f"sealed d={signing} cv={cv}"


__all__ = ["Forwarder", "SrsError", "arc_seal", "delivered_to"]
