"""check.spamd: score each message with SpamAssassin's spamd (the spamc protocol).

Protocol (SpamAssassin's spamd/PROTOCOL, version 1.5): the request

    SYMBOLS SPAMC/1.5\\r\\n
    Content-length: <bytes>\\r\\n
    [User: <name>\\r\\n]
    \\r\\n
    <message>

gets "SPAMD/1.1 0 EX_OK", a "Spam: True ; 12.3 / 5.0" header, an empty line
and the names of the rules that hit, comma-separated; then spamd closes.

Options ([check.spamd]):

    socket, host, port  where spamd listens (port default 783)
    timeout             seconds for the whole exchange (default 30)
    user                the User: sent (whose preferences spamd applies); empty = none
    max_size            larger messages are not sent (spamc's default: 500K), they pass
    reject_score        a score at or above it is refused with 550 5.7.1; empty = never
    on_failure          tempfail (451 4.7.1, default) or accept when spamd is down or fails

Spam (spamd's own threshold) goes to Junk; every scored message gets
X-Spam-Status and X-Spam-Score headers, spam also X-Spam-Flag: YES.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

from twisted.logger import Logger

from mailserverd.checks.base import Check, CheckContext, Verdict, register_builtin
from mailserverd.config import parse_seconds, parse_size

from .daemonclient import (DaemonError, exchange, fail_safe, global_reactor as _global_reactor,
                           make_endpoint, parse_on_failure)

log = Logger(namespace="plugins.spamd")

SECTION = "check.spamd"
_STATUS = re.compile(rb"SPAMD/(\d+\.\d+) +(\d+) +([^\r\n]*)")
_SPAM = re.compile(rb"Spam: *(True|False|Yes|No) *; *(-?\d+(?:\.\d+)?) */ *(-?\d+(?:\.\d+)?)", re.I)
_RULE = re.compile(r"[A-Za-z0-9_]{1,60}")


@dataclasses.dataclass(frozen=True)
class SpamdResult:
    spam: bool
    score: float
    threshold: float
    rules: tuple[str, ...]


def symbols_request(message: bytes, user: str = "") -> bytes:
    """One SYMBOLS request (spamd/PROTOCOL: Content-length is required since 1.2)."""
    header = b"SYMBOLS SPAMC/1.5\r\nContent-length: %d\r\n" % len(message)
    if user:
        header += b"User: " + user.encode("ascii") + b"\r\n"
    return header + b"\r\n" + message


def parse_reply(reply: bytes) -> SpamdResult:
    """The verdict of a SYMBOLS reply; DaemonError for anything else (an error code,
    a cut-off reply)."""
    head, separator, body = reply.partition(b"\r\n\r\n")
    status = _STATUS.match(head)
    if status is None:
        raise DaemonError(f"unexpected reply {reply[:60]!r}")
    if status.group(2) != b"0":
        text = status.group(3)[:80].decode("ascii", "replace")
        raise DaemonError(f"spamd error {status.group(2).decode()} {text}")
    spam = _SPAM.search(head)
    if spam is None or not separator:
        raise DaemonError("reply without a Spam header")
    rules = tuple(rule for rule in body.decode("ascii", "replace").strip().split(",")
                  if _RULE.fullmatch(rule))
    return SpamdResult(spam.group(1).lower() in (b"true", b"yes"), float(spam.group(2)),
                       float(spam.group(3)), rules)


def spam_headers(result: SpamdResult) -> list[tuple[str, str]]:
    """SpamAssassin's own header names and format."""
    tests = ",".join(result.rules)[:900] or "none"
    headers = [("X-Spam-Status", f"{'Yes' if result.spam else 'No'}, score={result.score:.1f} "
                                 f"required={result.threshold:.1f} tests={tests}"),
               ("X-Spam-Score", f"{result.score:.1f}")]
    if result.spam:
        headers.insert(0, ("X-Spam-Flag", "YES"))
    return headers


class SpamdCheck(Check):
    name = SECTION

    def __init__(self, context: Optional[CheckContext] = None, socket: str = "", host: str = "",
                 port: str = "783", timeout: str = "30s", user: str = "", max_size: str = "500K",
                 reject_score: str = "", on_failure: str = "tempfail"):
        context = context or CheckContext()
        self.reactor = context.reactor or _global_reactor()
        self.clock = context.clock or self.reactor
        self.timeout = parse_seconds(timeout)
        self.max_size = parse_size(max_size)
        self.on_failure = parse_on_failure(SECTION, on_failure)
        if user and not re.fullmatch(r"[A-Za-z0-9._@+-]{1,64}", user):
            raise ValueError(f"[{SECTION}] user: not a user name: {user!r}")
        self.user = user
        try:
            self.reject_score = float(reject_score) if reject_score.strip() else None
        except ValueError:
            raise ValueError(f"[{SECTION}] reject_score: expected a number, got {reject_score!r}") from None
        self.endpoint, self.where = make_endpoint(self.reactor, SECTION, socket, host, port, self.timeout)

    def body(self, session, envelope, message: bytes):
        if len(message) > self.max_size:
            return None  # as spamc does: large mail is rarely spam and costly to score
        scoring = exchange(self.reactor, self.endpoint, symbols_request(message, self.user),
                           self.timeout, clock=self.clock)
        return scoring.addCallback(parse_reply).addCallbacks(
            lambda result: self._verdict(session, envelope, result),
            lambda failure: fail_safe(log, "spamd", self.where, self.on_failure, envelope, failure.value))

    def _verdict(self, session, envelope, result: SpamdResult):
        headers = spam_headers(result)
        if self.reject_score is not None and result.score >= self.reject_score:
            log.info("message {id} from {ip} refused: spamd score {score} >= {limit}", id=envelope.id,
                     ip=session.remote_ip, score=result.score, limit=self.reject_score)
            return Verdict.reject(550, "5.7.1", "Message refused as spam")
        if result.spam:
            log.info("message {id} from {ip} to Junk: spamd score {score}", id=envelope.id,
                     ip=session.remote_ip, score=result.score)
            return Verdict.quarantine(f"spamd score {result.score:.1f}", headers)
        return Verdict.accept(headers)


register_builtin(SpamdCheck.name, SpamdCheck)
