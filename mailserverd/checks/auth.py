"""check.auth: SPF, DKIM, DMARC and ARC on inbound mail, and one Authentication-Results.

Runs at the body stage of the inbound "smtp" listener only (authenticated
submission is not checked). All of its DNS goes through one CachingResolver
for `[dns] nameservers` (checks/dns.py), on a bounded thread pool of its own,
so the reactor never waits for DNS; a message of at most INLINE_MAX bytes whose
answers are all cached is evaluated on the reactor against the cache alone
(no thread hop), and handed to the pool after all if a lookup was missing. The verdict:

    DMARC disposition reject      550 5.7.1 at the end of DATA (RFC 7489 6.7)
    DMARC disposition quarantine  delivered to Junk
    otherwise                     accepted
and always (unless refused) ONE Authentication-Results header (RFC 8601),
authserv-id = [server] hostname, with spf= (HELO and MAIL FROM), dkim= (one
per signature), dmarc= and arc=. A temporary DNS failure gives temperror
and never refuses mail. DMARC failures are logged.

For the checks after it (check.spam), the results are left in
envelope.data["auth"], an AuthResults:

    spf         SpfResult for MAIL FROM (result, sender, domain)
    spf_helo    SpfResult for the HELO name
    dkim        [DkimResult, ...], one per signature, top first
                (result, domain, selector, b, identity)
    dmarc       DmarcResult (result, policy, disposition, spf_aligned, dkim_aligned)
    arc         ArcResult (result, instances, domain)
    from_domain the RFC5322.From domain ("" if none or several)
    aligned     True when DMARC passed (an aligned SPF or DKIM pass)
    mail_from   the reverse-path ("" for <>)
    dkim_pass_domains()  the d= of every signature that verified

Options ([check.auth]): dns_timeout (seconds per query, default 5), budget
(seconds of DNS per message for all checks together, default 10; past it the
remaining lookups give temperror), threads (the pool size, default 4),
arc_trusted (sealer domains, comma-separated, whose valid ARC chain turns a
DMARC reject/quarantine into delivery: RFC 7489 7.2 trusted_forwarder).
"""

from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass, field
from typing import Optional

from twisted.logger import Logger

from ..mime.headers import split_header
from . import arc as arcmod
from . import authresults, dkimverify, dmarc as dmarcmod, spf as spfmod
from .base import Check, CheckThreads, Envelope, Session, Verdict, register_builtin
from .dns import CachingResolver

log = Logger(namespace="mailserverd.checks.auth")

NAME = "check.auth"
MAX_FROM_DOMAINS = 5
MAX_FROM_TEXT = 4096  # characters of one From: field parsed for addresses
DEFAULT_BUDGET = 10.0  # seconds of DNS per message, all checks together; then temperror
INLINE_MAX = 64 * 1024  # messages evaluated on the reactor when their DNS answers are all cached
_DMARC_ORDER = {"reject": 3, "quarantine": 2, "none": 1}


@dataclass
class AuthResults:
    spf: spfmod.SpfResult
    spf_helo: spfmod.SpfResult
    dkim: list = field(default_factory=list)
    dmarc: dmarcmod.DmarcResult = dmarcmod.DmarcResult("none")
    arc: arcmod.ArcResult = arcmod.ArcResult("none")
    from_domain: str = ""
    aligned: bool = False
    mail_from: str = ""  # the reverse-path as given ("" for <>)

    def dkim_pass_domains(self) -> set[str]:
        return {result.domain for result in self.dkim if result.result == "pass"}


# A From field as mime.headers.FIELD_PATTERN finds fields (a line start, the name, the
# value with its folded continuation lines), matching only that name: the other fields
# of the header are skipped in C, not visited one by one (issue 10).
_FROM_FIELD = re.compile(rb"(?:^|(?<=\r))from[ \t]*:([^\r\n]*(?:(?:\r\n|\r|\n)[ \t][^\r\n]*)*)", re.M | re.I)


def from_domains(message: bytes, header: Optional[bytes] = None) -> list[str]:
    """The domains of the From: addresses (RFC 7489 6.6.1), lower-case, in order, deduplicated.

    header: the message's header section when the caller has split it already."""
    import email.utils
    if header is None:
        header, _ = split_header(message)
    found: list[str] = []
    for match in _FROM_FIELD.finditer(header):
        # split() drops the folding line breaks too (RFC 5322 2.2.3 unfolding)
        text = " ".join(match.group(1).decode("utf-8", "replace").split())
        if len(text) > MAX_FROM_TEXT:  # only the first few domains count (MAX_FROM_DOMAINS)
            text = text[:MAX_FROM_TEXT].rsplit(",", 1)[0]
        for _display, address in email.utils.getaddresses([text]):
            domain = address.rpartition("@")[2].strip().lower().rstrip(".>")
            if domain and domain not in found:
                found.append(domain)
    return found


def evaluate(resolver: CachingResolver, ip: str, helo: Optional[str], mail_from: str, message: bytes,
             rng=None, budget: float = DEFAULT_BUDGET) -> AuthResults:
    """Every check for one message, within `budget` seconds of DNS. Blocking: run it off the reactor."""
    with resolver.budget(budget):
        return _evaluate(resolver, ip, helo, mail_from, message, rng)


def _evaluate(resolver, ip, helo, mail_from, message, rng) -> AuthResults:
    spf_helo = spfmod.check_helo(ip, helo, resolver.spf_lookup)
    if mail_from:
        spf = spfmod.check_mail_from(ip, mail_from, helo, resolver.spf_lookup)
    else:  # RFC 7208 2.4: the null reverse-path is checked as postmaster@HELO
        spf = spfmod.SpfResult(spf_helo.result, "mailfrom", spf_helo.sender, spf_helo.domain, spf_helo.reason)
    dkim = dkimverify.verify_all(message, resolver.dkim_txt)
    arc = arcmod.verify_chain(message, resolver.dkim_txt)
    domains = from_domains(message, split_header(message)[0])
    if not domains:
        dmarc = dmarcmod.DmarcResult("none", reason="no From: domain")
    else:
        # RFC 7489 6.6.1: several From domains; each is evaluated and the strictest wins
        outcomes = [dmarcmod.evaluate(domain, spf, dkim, resolver.txt, rng) for domain in domains[:MAX_FROM_DOMAINS]]
        dmarc = max(outcomes, key=lambda item: (_DMARC_ORDER[item.disposition], item.result != "pass"))
    return AuthResults(spf=spf, spf_helo=spf_helo, dkim=dkim, dmarc=dmarc, arc=arc,
                       from_domain=domains[0] if len(domains) == 1 else "",
                       aligned=dmarc.result == "pass", mail_from=mail_from)


def header_value(authserv_id: str, results: AuthResults) -> str:
    """RFC 8601 2.2 value of our one Authentication-Results field."""
    entries = []
    if results.spf_helo.domain:
        entries.append(authresults.resinfo("spf", results.spf_helo.result, [("smtp.helo", results.spf_helo.domain)]))
    if results.mail_from:  # for the null reverse-path the HELO result above is the answer
        entries.append(authresults.resinfo("spf", results.spf.result, [("smtp.mailfrom", results.spf.sender)]))
    for result in results.dkim:  # RFC 8601 2.7.1, RFC 6008 (header.b)
        entries.append(authresults.resinfo("dkim", result.result, [
            ("header.d", result.domain), ("header.i", result.identity),
            ("header.s", result.selector), ("header.b", result.b)]))
    if not results.dkim:
        entries.append("dkim=none")
    dmarc = results.dmarc
    comment = f"p={dmarc.policy} dis={dmarc.disposition}" if dmarc.result in ("pass", "fail") else ""
    if dmarc.reason.startswith("trusted_forwarder"):  # RFC 7489 7.2 override reason
        comment += f" override={dmarc.reason}"
    entries.append(authresults.resinfo("dmarc", dmarc.result, [("header.from", dmarc.from_domain)], comment=comment))
    arc = results.arc
    entries.append(authresults.resinfo("arc", arc.result,
                                       [("header.oldest-pass", str(arc.oldest_pass) if arc.oldest_pass else "")],
                                       comment=f"i={arc.instances}" if arc.instances else ""))
    return authresults.build_value(authserv_id, entries)


class AuthCheck(Check):
    """SPF + DKIM + DMARC + ARC at the end of DATA for the inbound smtp listener."""

    name = NAME

    def __init__(self, context=None, dns_timeout: str | float = "5", budget: str | float = "10",
                 threads: str | int = "4", arc_trusted: str = "",
                 resolver: Optional[CachingResolver] = None, rng: Optional[random.Random] = None,
                 run=None):
        settings = getattr(context, "settings", None)
        self.authserv_id = settings.server.hostname if settings is not None else "localhost"
        nameservers = settings.dns.nameservers if settings is not None else ()
        timeout = float(dns_timeout)
        if not 0 < timeout <= 60:
            raise ValueError("[check.auth] dns_timeout must be between 0 and 60 seconds")
        self.budget = float(budget)
        if not 0 < self.budget <= 120:
            raise ValueError("[check.auth] budget must be between 0 and 120 seconds")
        self.threads = int(threads)
        if not 1 <= self.threads <= 64:
            raise ValueError("[check.auth] threads must be between 1 and 64")
        # RFC 8617 7.2 / RFC 7489 7.2 (local policy): forwarders whose valid ARC seal lifts a
        # DMARC failure (mailing lists that rewrite the subject or footer)
        self.arc_trusted = frozenset(part.strip().lower().rstrip(".") for part in arc_trusted.split(",")
                                     if part.strip())
        self.reactor = getattr(context, "reactor", None)
        self.resolver = resolver or CachingResolver(nameservers, timeout, clock=getattr(context, "clock", None))
        self.rng = rng or random.Random()
        # The public suffix list (RFC 7489 3.2 organizational domains) is read once per
        # process, ~0.1 s: at start, not on the first message's DMARC check.
        dmarcmod.organizational_domain("example.com")
        self._defer = CheckThreads("check-auth", self.threads, self.reactor, run)  # run: tests

    def body(self, session: Session, envelope: Envelope, message: bytes):
        if session.mode != "smtp" or session.account is not None:
            return None  # authenticated submission: the sender is ours (docs/checks.md)
        if len(message) <= INLINE_MAX and self._likely_cached(session, envelope, message):
            # Every answer it needs is probably cached: evaluate on the reactor against the
            # cache alone, which costs less than the thread hop (issue 10); any lookup that
            # was not cached after all voids the result, and it is done again in the pool.
            view = self.resolver.cache_only()
            results = evaluate(view, session.remote_ip, session.helo, envelope.mail_from, message,
                               self.rng, self.budget)
            if not view.missed:
                return self._verdict(results, session, envelope)
        d = self._defer(evaluate, self.resolver, session.remote_ip, session.helo, envelope.mail_from,
                        message, self.rng, self.budget)
        d.addCallback(self._verdict, session, envelope)
        return d

    def _likely_cached(self, session: Session, envelope: Envelope, message: bytes) -> bool:
        """The SPF records of HELO and MAIL FROM and the From domains' DMARC records are
        in the cache (a cheap guess that keeps cold messages off the speculative path)."""
        cached = self.resolver.is_cached
        if session.helo and not cached(session.helo, "TXT"):
            return False
        domain = envelope.mail_from.rpartition("@")[2]
        if domain and not cached(domain, "TXT"):
            return False
        return all(cached(f"_dmarc.{domain}", "TXT") for domain in from_domains(message)[:MAX_FROM_DOMAINS])

    def _verdict(self, results: AuthResults, session: Session, envelope: Envelope) -> Verdict:
        dmarc = results.dmarc
        if (dmarc.result == "fail" and dmarc.disposition != "none" and results.arc.result == "pass"
                and results.arc.domain in self.arc_trusted):
            log.info("{id}: DMARC fail for {domain} overridden: valid ARC chain sealed by trusted {sealer}",
                     id=envelope.id, domain=dmarc.from_domain, sealer=results.arc.domain)
            results.dmarc = dmarc = dataclasses.replace(
                dmarc, disposition="none", reason=f"trusted_forwarder {results.arc.domain}")
        envelope.data["auth"] = results
        header = ("Authentication-Results", header_value(self.authserv_id, results))
        if dmarc.result == "fail":
            log.info("{id}: DMARC fail for {domain} (p={policy}, disposition {disposition}) from {ip}; "
                     "SPF {spf} for {sender}; DKIM {dkim}",
                     id=envelope.id, domain=dmarc.from_domain, policy=dmarc.policy,
                     disposition=dmarc.disposition, ip=session.remote_ip, spf=results.spf.result,
                     sender=results.spf.sender or "<>",
                     dkim=", ".join(f"{item.result} d={item.domain}" for item in results.dkim) or "none")
        if dmarc.disposition == "reject":  # RFC 7489 6.7, 10.3: refuse in the SMTP transaction
            return Verdict.reject(550, "5.7.1", f"Message refused by the DMARC policy of {dmarc.from_domain}")
        if dmarc.disposition == "quarantine":
            return Verdict.quarantine(f"DMARC policy of {dmarc.from_domain}", headers=[header])
        return Verdict.accept([header])


register_builtin(NAME, AuthCheck)
