"""Values passed between the outbound queue, the transport and the DSN builder.

The worker turns a claimed queue row into an OutboundMessage, the transport
answers with one RecipientResult per recipient, and routing failures are the
two exceptions below, each carrying the SMTP meaning it will have in a DSN.
"""

from __future__ import annotations

from dataclasses import dataclass

DELIVERED = "delivered"
DEFERRED = "deferred"
FAILED = "failed"


@dataclass(frozen=True)
class RecipientResult:
    """What became of one recipient in one delivery attempt."""

    recipient: str          # the envelope address as queued
    status: str             # "delivered" | "deferred" | "failed"
    code: int               # SMTP reply code; 0 when there was no reply (DNS / connection error)
    enhanced: str           # RFC 3463 "5.1.1" or ""
    text: str               # the remote reply text (joined lines) or our diagnosis
    remote_host: str = ""   # MX host name that answered ("" if none)
    remote_ip: str = ""


class RouteError(Exception):
    """A permanent routing failure: the mail bounces now.

    NXDOMAIN -> 550 5.1.2 (RFC 3463 "bad destination system address");
    null MX -> 556 5.1.10 (RFC 7505 3.2).
    """

    def __init__(self, code: int, enhanced: str, text: str):
        super().__init__(f"{code} {enhanced} {text}")
        self.code = code
        self.enhanced = enhanced
        self.text = text

    @classmethod
    def nxdomain(cls, domain: str) -> "RouteError":
        return cls(550, "5.1.2", f"domain {domain} does not exist")

    @classmethod
    def null_mx(cls, domain: str) -> "RouteError":
        return cls(556, "5.1.10", f"domain {domain} does not accept mail (null MX)")


class TemporaryRouteError(Exception):
    """A routing failure that may heal (SERVFAIL, timeout): the mail is deferred.

    Always 451 4.4.3 (RFC 3463 "directory server failure").
    """

    def __init__(self, text: str):
        super().__init__(text)
        self.code = 451
        self.enhanced = "4.4.3"
        self.text = text


@dataclass(frozen=True)
class OutboundMessage:
    """One message for one recipient domain, as the transport sends it."""

    queue_id: str           # for logs / Received
    sender: str             # envelope MAIL FROM ("" = null sender)
    recipients: tuple       # envelope RCPT TO addresses, all in one domain
    body: bytes             # full message, CRLF line endings, not yet DKIM-signed
    smtputf8: bool = False  # MAIL FROM needed SMTPUTF8
    eight_bit: bool = False  # BODY=8BITMIME needed
    dsn: tuple = ()         # per recipient (notify: str | None, orcpt: str | None), same order
    ret: str | None = None
    envid: str | None = None
