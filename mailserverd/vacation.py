"""Vacation replies (RFC 8621 8 VacationResponse, sent as RFC 3834 says).

VacationResponder.delivered() is called by SMTP delivery (smtp/delivery.py)
after a message is durably in local mailboxes. For each account whose
VacationResponse is enabled and in its date window it answers the envelope
sender once per PERIOD (RFC 5230 4.6: 7 days by default), and never:
  - a null reverse-path, or a sender that is the account itself (RFC 3834 2);
  - a message that is Auto-Submitted (other than "no", RFC 3834 5), from a
    list (List-Id and the RFC 2369 List-* fields) or with Precedence
    bulk/list/junk (RFC 3834 2);
  - MAILER-DAEMON, owner-*, *-request and similar role senders (RFC 5230 4.5);
  - a message that does not name one of the account's addresses in To or Cc
    (RFC 3834 2: it came by Bcc or through a list);
  - a copy filed to Junk.
The reply has "Auto-Submitted: auto-replied", In-Reply-To and References of
the original, and the null reverse-path (RFC 3834 3.1.5, 4), so it cannot
start a loop; remote senders get it through the outbound queue (DKIM-signed
there), local ones directly.
"""

from __future__ import annotations

import datetime
import email.utils
import re
from email import policy
from email.message import EmailMessage

from twisted.internet import defer
from twisted.logger import Logger

from .mime.headers import iter_fields, split_header
from .store import vacation as rows_
from .store.api import DeliveryTarget

log = Logger(namespace="mailserverd.vacation")

PERIOD = 7 * 24 * 3600.0
_LIST_FIELDS = {"list-id", "list-help", "list-subscribe", "list-unsubscribe", "list-post", "list-owner",
                "list-archive"}
_ROLE_SENDER = re.compile(r"^(mailer-daemon|postmaster|listserv|majordomo|owner-.*|.*-request|.*-owner|"
                          r"no-?reply|.*-bounces?)$", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def _fields(message: bytes) -> list[tuple[str, str]]:
    header, _ = split_header(message)
    return [(name, _WHITESPACE.sub(" ", value.decode("utf-8", "replace")).strip())
            for name, value in iter_fields(header)]


def may_answer(sender: str, fields: list, own: frozenset) -> bool:
    """RFC 3834 2 / RFC 5230 4.5: may this message get an automatic reply at all?"""
    if not sender or "@" not in sender or sender.lower() in own:
        return False
    if _ROLE_SENDER.match(sender.rpartition("@")[0]):
        return False
    named = set()
    for name, value in fields:
        if name == "auto-submitted" and value.split(";")[0].strip().lower() != "no":
            return False
        if name in _LIST_FIELDS:
            return False
        if name == "precedence" and value.lower() in ("bulk", "list", "junk"):
            return False
        if name in ("to", "cc"):
            named.update(address.lower() for _n, address in email.utils.getaddresses([value]))
    return bool(named & own)


def build_reply(account_address: str, sender: str, fields: list, row, now: float) -> bytes:
    """The RFC 3834 3 auto-reply: From the account, To the envelope sender."""
    first = {}
    for name, value in fields:
        first.setdefault(name, value)
    original = first.get("subject", "")
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = account_address
    message["To"] = sender
    message["Subject"] = row.subject or ("Auto: " + original if original else "Auto-reply")
    message["Date"] = email.utils.format_datetime(datetime.datetime.fromtimestamp(now, datetime.timezone.utc))
    message["Message-ID"] = email.utils.make_msgid(domain=account_address.rpartition("@")[2])
    message_id = first.get("message-id")
    if message_id:
        message["In-Reply-To"] = message_id
        message["References"] = (first.get("references", "") + " " + message_id).strip()
    message["Auto-Submitted"] = "auto-replied"  # RFC 3834 5
    text = row.text_body
    if text is None and not row.html_body:
        text = "I am away and will read your message when I am back."
    if text is not None:
        message.set_content(text)
        if row.html_body:
            message.add_alternative(row.html_body, subtype="html")
    else:
        message.set_content(row.html_body, subtype="html")
    return message.as_bytes()


class VacationResponder:
    """Answers delivered mail for accounts on vacation (see the module docstring)."""

    def __init__(self, store, outbound, clock, period: float = PERIOD):
        self.store = store  # AsyncStore
        self.outbound = outbound  # OutboundService, or None (remote senders get no reply)
        self.clock = clock
        self.period = period

    def delivered(self, mail_from: str, message: bytes, targets) -> defer.Deferred:
        """Called after a durable local delivery; never fails (problems are logged)."""
        fields = None
        work = []
        for target in targets:
            if target.mailbox == "Junk" or not mail_from:
                continue
            fields = fields if fields is not None else _fields(message)
            d = defer.ensureDeferred(self._answer(target.account, mail_from, fields))
            d.addErrback(lambda failure, a=target.account: log.failure(
                "vacation reply for {account} failed", failure, account=a.address))
            work.append(d)
        return defer.gatherResults(work) if work else defer.succeed(None)

    async def _answer(self, account, sender: str, fields: list) -> bool:
        engine = self.store.store.directory_engine
        row = await self.store.run_read(rows_.get, engine, account.id)
        now = self.clock.seconds()
        if row is None or not row.is_enabled or (row.from_date is not None and now < row.from_date) \
                or (row.to_date is not None and now >= row.to_date):
            return False
        own = frozenset(a.lower() for a in await self.store.sender_addresses(account))
        if not may_answer(sender, fields, own):
            return False
        claimed = await self.store.run_write(rows_.claim_reply, engine, account.id, sender, now, self.period)
        if not claimed:
            return False
        reply = build_reply(account.address, sender, fields, row, now)
        domain = sender.rpartition("@")[2].lower()
        if await self.store.is_local_domain(domain):
            accounts = await self.store.resolve_recipient(sender)
            if accounts:
                await self.store.deliver(reply, [DeliveryTarget(account=a, prepend=b"Return-Path: <>\r\n")
                                                 for a in accounts])
        elif self.outbound is not None:
            await self.outbound.enqueue(self.outbound.new_message("", reply, [(sender, None, None)]))
        else:
            return False
        log.info("vacation: replied for {account} to <{sender}>", account=account.address, sender=sender)
        return True
