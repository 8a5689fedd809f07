"""Staged checks for incoming mail (STYLE.md 4; maddy's Check/CheckState).

A check may look at four stages, each optional:

    connection(session)                          a client connected
    sender(session, envelope)                    MAIL FROM was given
    recipient(session, envelope, recipient)      one RCPT TO was given
    body(session, envelope, message)             the whole message arrived

and return None (no opinion), a Verdict, or a Deferred of either. The chain
runs checks in order: the first reject wins; quarantine (deliver to Junk)
sticks; headers from every verdict are added to the delivered copy.

Session is per connection, Envelope per transaction (aiosmtpd's split).
Checks are found by name (e.g. "check.spf") among the built-ins and the
Python entry points of group "mailserverd.checks".
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from importlib import metadata
from typing import Any, Callable, Iterable, Optional

from twisted.internet import defer
from twisted.logger import Logger

from ..store.api import Account

log = Logger(namespace="mailserverd.checks")

ENTRY_POINT_GROUP = "mailserverd.checks"

ACCEPT = "accept"
QUARANTINE = "quarantine"
REJECT = "reject"

_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]{1,76}")  # RFC 5322 3.6.8 ftext
_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")  # RFC 3463 2
MAX_HEADER_VALUE = 8000


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a check decided. Build with Verdict.accept/quarantine/reject."""

    action: str = ACCEPT
    code: int = 250
    enhanced: str = "2.0.0"
    text: str = "OK"
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if self.action not in (ACCEPT, QUARANTINE, REJECT):
            raise ValueError(f"unknown verdict action {self.action!r}")
        if self.action == REJECT and not (400 <= self.code < 600 and self.enhanced[:1] == str(self.code)[0]):
            raise ValueError("a reject needs a 4xx or 5xx code with a matching enhanced code")
        if not _ENHANCED.fullmatch(self.enhanced):
            raise ValueError(f"bad enhanced status code {self.enhanced!r}")
        for name, value in self.headers:
            # A CR or LF in a value would let a check forge header lines; folding is ours.
            if not _FIELD_NAME.fullmatch(name) or re.search(r"[\r\n\x00]", value) or len(value) > MAX_HEADER_VALUE:
                raise ValueError(f"bad header from a check: {name!r}")

    @classmethod
    def accept(cls, headers: Iterable[tuple[str, str]] = ()) -> "Verdict":
        return cls(ACCEPT, headers=tuple(headers))

    @classmethod
    def quarantine(cls, reason: str = "quarantined", headers: Iterable[tuple[str, str]] = ()) -> "Verdict":
        return cls(QUARANTINE, text=reason, headers=tuple(headers))

    @classmethod
    def reject(cls, code: int, enhanced: str, text: str) -> "Verdict":
        return cls(REJECT, code, enhanced, text)

    @property
    def rejected(self) -> bool:
        return self.action == REJECT

    @property
    def quarantined(self) -> bool:
        return self.action == QUARANTINE


TEMPORARY_FAILURE = Verdict.reject(451, "4.7.0", "Temporary failure in message checks; try again later")


@dataclasses.dataclass(frozen=True)
class TLSInfo:
    version: str  # e.g. "TLSv1.3"
    cipher: str  # e.g. "TLS_AES_256_GCM_SHA384"


@dataclasses.dataclass
class Session:
    """One client connection."""

    id: str
    mode: str  # "smtp", "submission" or "submissions"
    remote_ip: str
    remote_port: int
    hostname: str  # our own host name
    helo: Optional[str] = None
    esmtp: bool = False
    tls: Optional[TLSInfo] = None
    account: Optional[Account] = None  # set by a successful AUTH
    data: dict = dataclasses.field(default_factory=dict)  # per-check scratch space, keyed by check name


@dataclasses.dataclass
class Recipient:
    address: str  # as resolved, e.g. "alice@example.test"
    params: Any  # smtp.syntax.RcptParams (NOTIFY, ORCPT kept for DSNs)
    accounts: tuple[Account, ...] = ()
    quarantine: bool = False
    headers: list = dataclasses.field(default_factory=list)  # from recipient-stage verdicts
    forward: tuple[str, ...] = ()  # remote addresses an alias (or our SRS address) forwards to


@dataclasses.dataclass
class Envelope:
    """One mail transaction (MAIL, RCPTs, message)."""

    id: str  # the transaction id shown in Received and logs
    mail_from: str  # "" for the null reverse-path
    params: Any  # smtp.syntax.MailParams (SIZE, BODY, SMTPUTF8, RET, ENVID)
    recipients: list[Recipient] = dataclasses.field(default_factory=list)
    quarantine: bool = False
    headers: list = dataclasses.field(default_factory=list)  # from sender- and body-stage verdicts
    data: dict = dataclasses.field(default_factory=dict)


class Check:
    """Base class: override the stages you need; each may return a Deferred."""

    name = "check.base"

    def connection(self, session: Session):
        return None

    def sender(self, session: Session, envelope: Envelope):
        return None

    def recipient(self, session: Session, envelope: Envelope, recipient: Recipient):
        return None

    def body(self, session: Session, envelope: Envelope, message: bytes):
        return None


class CheckChain:
    """Runs the checks of one stage in order and merges their verdicts."""

    def __init__(self, checks: Iterable[Check] = ()):
        self.checks = tuple(checks)

    def run_connection(self, session: Session) -> defer.Deferred:
        return self._run("connection", session)

    def run_sender(self, session: Session, envelope: Envelope) -> defer.Deferred:
        return self._run("sender", session, envelope)

    def run_recipient(self, session: Session, envelope: Envelope, recipient: Recipient) -> defer.Deferred:
        return self._run("recipient", session, envelope, recipient)

    def run_body(self, session: Session, envelope: Envelope, message: bytes) -> defer.Deferred:
        return self._run("body", session, envelope, message)

    def _run(self, stage: str, *args) -> defer.Deferred:
        # A plain loop, not inlineCallbacks: most stages of most checks answer None at
        # once, and those cost one call each; only a check that returns a Deferred
        # makes the rest of the chain wait for it (issue 10: the chain's own overhead).
        return _ChainRun(self.checks, stage, args).run(0)


class _ChainRun:
    """One pass of a stage through the chain: merges verdicts as they come."""

    __slots__ = ("checks", "stage", "args", "headers", "quarantine")

    def __init__(self, checks: tuple, stage: str, args: tuple):
        self.checks = checks
        self.stage = stage
        self.args = args
        self.headers: list[tuple[str, str]] = []
        self.quarantine: Optional[Verdict] = None

    def run(self, index: int) -> defer.Deferred:
        checks = self.checks
        while index < len(checks):
            check = checks[index]
            try:
                verdict = getattr(check, self.stage)(*self.args)
                if isinstance(verdict, defer.Deferred):
                    return verdict.addCallbacks(self._resume, self._errback, callbackArgs=(check, index),
                                                errbackArgs=(check,))
                final = self._merge(check, verdict)
            except Exception:
                return defer.succeed(self._failed(check))
            if final is not None:
                return defer.succeed(final)
            index += 1
        return defer.succeed(self._result())

    def _resume(self, verdict, check: Check, index: int):
        try:
            final = self._merge(check, verdict)
        except Exception:
            return self._failed(check)
        if final is not None:
            return final
        return self.run(index + 1)

    def _errback(self, failure, check: Check):
        log.failure("check {name} failed at stage {stage}", failure, name=check.name, stage=self.stage)
        return TEMPORARY_FAILURE

    def _failed(self, check: Check) -> Verdict:
        # A broken or unreachable filter must not let mail through unchecked,
        # nor lose it: the client retries later (STYLE.md 7: detail in the log).
        log.failure("check {name} failed at stage {stage}", name=check.name, stage=self.stage)
        return TEMPORARY_FAILURE

    def _merge(self, check: Check, verdict) -> Optional[Verdict]:
        """Take one check's answer; the chain's final verdict when it ends the run (a reject)."""
        if verdict is None:
            return None
        if not isinstance(verdict, Verdict):
            raise TypeError(f"{check.name}.{self.stage} returned {type(verdict).__name__}, not a Verdict")
        if verdict.rejected:
            return verdict
        self.headers.extend(verdict.headers)
        if verdict.quarantined and self.quarantine is None:
            self.quarantine = verdict
        return None

    def _result(self) -> Verdict:
        if self.quarantine is not None:
            return Verdict.quarantine(self.quarantine.text, self.headers)
        return Verdict.accept(self.headers)


class CheckThreads:
    """A check's own bounded thread pool for work too heavy for the reactor.

    Started on first use and stopped when the reactor shuts down, so a check
    that never gets mail costs no threads. `run` (tests) replaces the pool:
    a function (fn, *args) -> Deferred.
    """

    def __init__(self, name: str, size: int, reactor=None, run: Optional[Callable] = None):
        self.name = name
        self.size = size
        self.reactor = reactor
        self._run = run
        self._pool = None

    def __call__(self, fn, *args) -> defer.Deferred:
        if self._run is not None:
            return self._run(fn, *args)
        from twisted.internet.threads import deferToThreadPool
        from twisted.python import threadpool
        if self.reactor is None:
            from twisted.internet import reactor
            self.reactor = reactor
        if self._pool is None:
            self._pool = threadpool.ThreadPool(minthreads=0, maxthreads=self.size, name=self.name)
            self._pool.start()
            self.reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
        return deferToThreadPool(self.reactor, self._pool, fn, *args)


# -- the registry -------------------------------------------------------------

class UnknownCheck(LookupError):
    """No built-in check and no entry point has this name."""


@dataclasses.dataclass
class CheckContext:
    """What the daemon hands a check factory that declares a `context` parameter.

    settings: the validated configuration (config.load_settings); store: the
    AsyncStore (None in unit tests that need none); reactor: for deferToThread
    and timeouts; clock: for rate and cache lifetimes (defaults to reactor).
    """

    settings: Any = None
    store: Any = None
    reactor: Any = None
    clock: Any = None


_BUILTINS: dict[str, Callable[..., Check]] = {}


def register_builtin(name: str, factory: Callable[..., Check]) -> None:
    _BUILTINS[name] = factory


def available_checks() -> list[str]:
    names = set(_BUILTINS)
    names.update(entry.name for entry in metadata.entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def _takes_context(factory) -> bool:
    try:
        return "context" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


# Where a check not registered yet is looked for, "check.NAME" -> module: a module
# of this package or of plugins/ (the top-level package of this checkout) that
# calls register_builtin() on import. Entry points come first; this fallback makes
# a plugin work from a checkout whose installed metadata predates it.
_MODULES_BY_NAME = ("mailserverd.checks.{}", "plugins.{}")


def _import_by_name(name: str):
    prefix, _, tail = name.partition(".")
    if prefix != "check" or not re.fullmatch(r"[a-z][a-z0-9_]*", tail):
        return None
    for template in _MODULES_BY_NAME:
        module_name = template.format(tail)
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name in (module_name, module_name.rpartition(".")[0]):
                continue  # no such module (or no plugins package): try the next place
            raise  # the module exists but an import inside it failed: say so
        if name in _BUILTINS:
            return _BUILTINS[name]
    return None


def load_check(name: str, context: Optional[CheckContext] = None, **options) -> Check:
    """Instantiate the check called `name`: a built-in, else an entry point of ENTRY_POINT_GROUP.

    options are the keyword arguments for the factory (from the [check.NAME]
    section of the configuration, as strings); a factory with a `context`
    parameter also gets the CheckContext.
    """
    factory = _BUILTINS.get(name)
    if factory is None:
        entries = metadata.entry_points(group=ENTRY_POINT_GROUP, name=name)
        if entries:
            factory = next(iter(entries)).load()
        else:
            factory = _import_by_name(name)
        if factory is None:
            raise UnknownCheck(f"unknown check {name!r}; available: {', '.join(available_checks())}")
    if _takes_context(factory):
        options["context"] = context if context is not None else CheckContext()
    check = factory(**options)
    if not isinstance(check, Check):
        raise TypeError(f"check {name!r} is not a mailserverd.checks.base.Check")
    return check


def build_chain(names: Iterable[str], options: Optional[dict[str, dict]] = None,
                context: Optional[CheckContext] = None) -> CheckChain:
    """A chain of the named checks, in order; options[name] are keyword arguments for one."""
    options = options or {}
    return CheckChain(load_check(name, context, **dict(options.get(name, {}))) for name in names)


# -- built-in checks -----------------------------------------------------------

_RECEIVED = re.compile(rb"^Received[ \t]*:", re.M | re.I)


class HopCountCheck(Check):
    """RFC 5321 6.3: a message with too many Received fields is looping; refuse it."""

    name = "check.hops"

    def __init__(self, limit: int | str = 50):  # Postfix hopcount_limit
        self.limit = int(limit)

    def body(self, session: Session, envelope: Envelope, message: bytes):
        end = message.find(b"\r\n\r\n")
        header = message if end < 0 else message[:end + 2]
        if len(_RECEIVED.findall(header)) > self.limit:
            return Verdict.reject(554, "5.4.6", "Too many hops (mail loop?)")
        return None


register_builtin(HopCountCheck.name, HopCountCheck)

DEFAULT_CHECKS = (HopCountCheck.name,)
