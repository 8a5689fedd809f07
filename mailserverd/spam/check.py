"""check.spam: the built-in statistical spam filter, and DNSBL at connection time.

Body stage (inbound "smtp" listener only; authenticated submission is ours):
the message is tokenised once (with check.auth's results when it ran before
us, envelope.data["auth"]) and scored against the global token database plus
each recipient account's own (per_user), off the reactor on a small thread
pool. Three-way verdict per account, SpamBayes style:

    score <  ham_cutoff                 ham     INBOX, X-Spam-Status: No
    ham_cutoff <= score < spam_cutoff   unsure  INBOX, X-Spam-Status: Unsure
    score >= spam_cutoff                spam    Junk (quarantine), X-Spam-Status: Yes
    score >= reject_score               refused 550 5.7.1 at the end of DATA (the
                                        global database alone must agree)

and X-Spam-Score: the score (0.000-1.000) on every copy. Until a database has
min_trained messages of each class, nothing is called spam (an untrained
filter never quarantines). When recipients' accounts disagree, each copy gets
its own headers and folder; a refusal needs them all to agree.

Mail from an address the account has written to (its Sent mailbox; see
correspondents.py) is never sent to Junk or refused on the score alone unless
DMARC failed: it stays in INBOX as unsure, marked "known-sender".

Connection stage: when dnsbl_zones is set, the client address is looked up in
each zone (RFC 5782); a listing refuses the connection with 554 5.7.1
(dnsbl_action = reject) or adds dnsbl_score to the message's score (= score).

Options ([check.spam], strings): see OPTIONS below and docs/checks.md.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from twisted.internet import defer
from twisted.logger import Logger

from ..checks.base import Check, CheckThreads, Envelope, Session, Verdict, register_builtin
from . import classifier, dnsbl
from .tokendb import GLOBAL, TokenDB
from .correspondents import Correspondents, sender_address
from .tokenizer import auth_summary, tokenize

log = Logger(namespace="mailserverd.spam")

NAME = "check.spam"
STATUS = {classifier.HAM: "No", classifier.UNSURE: "Unsure", classifier.SPAM: "Yes"}


def _fraction(name: str, text: str, allow_empty: bool = False) -> Optional[float]:
    if allow_empty and not str(text).strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"[check.spam] {name} must be a number between 0 and 1, not {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"[check.spam] {name} must be between 0 and 1, not {text!r}")
    return value


def _yes(name: str, text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("yes", "true", "on", "1"):
        return True
    if value in ("no", "false", "off", "0"):
        return False
    raise ValueError(f"[check.spam] {name} must be yes or no, not {text!r}")


def _list(text: str) -> list[str]:
    return [item.strip().lower() for item in str(text).replace(",", " ").split() if item.strip()]


@dataclasses.dataclass(frozen=True)
class Result:
    """The classification of one message for one account (or the global db alone)."""

    account: object
    score: float
    label: str  # classifier.HAM / UNSURE / SPAM
    reject: bool
    trained: bool
    clues: tuple = ()
    known_sender: bool = False  # spam by score, kept out of Junk: the account wrote to the sender

    def headers(self, spam_cutoff: float) -> list[tuple[str, str]]:
        status = f"{STATUS[self.label]}, score={self.score:.3f} required={spam_cutoff:.2f}"
        if not self.trained:
            status += " untrained"
        if self.known_sender:
            status += " known-sender"
        return [("X-Spam-Status", status), ("X-Spam-Score", f"{self.score:.3f}")]


class SpamCheck(Check):
    name = NAME

    def __init__(self, context=None, ham_cutoff="0.20", spam_cutoff="0.90", reject_score="0.9999",
                 min_trained="10", per_user="yes", user_weight="1", disabled_users="", learn="yes",
                 known_senders="yes", dnsbl_zones="", dnsbl_action="reject", dnsbl_score="0.5", dns_timeout="3",
                 threads="2", cache_size="200000", refresh="2", db: Optional[TokenDB] = None, resolver=None,
                 run=None):
        self.ham_cutoff = _fraction("ham_cutoff", ham_cutoff)
        self.spam_cutoff = _fraction("spam_cutoff", spam_cutoff)
        if self.ham_cutoff > self.spam_cutoff:
            raise ValueError("[check.spam] ham_cutoff must not exceed spam_cutoff")
        self.reject_score = _fraction("reject_score", reject_score, allow_empty=True)
        if self.reject_score is not None and self.reject_score < self.spam_cutoff:
            raise ValueError("[check.spam] reject_score must be at least spam_cutoff (or empty: never refuse)")
        self.min_trained = _count("min_trained", min_trained)
        self.per_user = _yes("per_user", per_user)
        try:
            self.user_weight = float(user_weight)
        except ValueError:
            raise ValueError(f"[check.spam] user_weight must be a number, not {user_weight!r}") from None
        if not 0 < self.user_weight <= 100:
            raise ValueError("[check.spam] user_weight must be above 0 and at most 100")
        self.disabled_users = frozenset(_list(disabled_users))
        self.learn = _yes("learn", learn)
        self.known_senders = _yes("known_senders", known_senders)
        self.dnsbl_zones = _list(dnsbl_zones)
        if dnsbl_action not in ("reject", "score"):
            raise ValueError(f"[check.spam] dnsbl_action must be reject or score, not {dnsbl_action!r}")
        self.dnsbl_action = dnsbl_action
        self.dnsbl_score = _fraction("dnsbl_score", dnsbl_score)
        timeout = float(dns_timeout)
        if not 0 < timeout <= 60:
            raise ValueError("[check.spam] dns_timeout must be between 0 and 60 seconds")
        self.threads = _count("threads", threads)
        if not 1 <= self.threads <= 64:
            raise ValueError("[check.spam] threads must be between 1 and 64")
        try:
            refresh_seconds = float(refresh)
        except ValueError:
            raise ValueError(f"[check.spam] refresh must be a number of seconds, not {refresh!r}") from None
        if not 0 <= refresh_seconds <= 3600:
            raise ValueError("[check.spam] refresh must be between 0 and 3600 seconds")
        settings = getattr(context, "settings", None)
        self.hostname = settings.server.hostname if settings is not None else "localhost"
        self.reactor = getattr(context, "reactor", None)
        if db is None:
            store = getattr(context, "store", None)
            engine = getattr(getattr(store, "store", None), "directory_engine", None)
            # Without a store (a chain built only to validate the configuration) there is
            # nothing to score against: the check then has no opinion.
            # refresh: how long the databases' totals (and revisions) are trusted before
            # SQL is asked again, so that scoring a message needs no SQL in the common case;
            # training by another process (mailserverctl spam train) is seen within it.
            db = (TokenDB(engine, cache_size=_count("cache_size", cache_size), totals_ttl=refresh_seconds)
                  if engine is not None else None)
        self.db = db
        store = getattr(context, "store", None)
        self.correspondents = None
        if self.known_senders and store is not None and hasattr(store, "message_summaries"):
            clock = getattr(context, "clock", None) or self.reactor
            self.correspondents = Correspondents(store, clock.seconds if hasattr(clock, "seconds") else clock)
        if resolver is None and self.dnsbl_zones:
            from ..checks.dns import CachingResolver
            nameservers = settings.dns.nameservers if settings is not None else ()
            resolver = CachingResolver(nameservers, timeout, clock=getattr(context, "clock", None))
        self.resolver = resolver
        self._defer = CheckThreads("check-spam", self.threads, self.reactor, run)  # run: tests

    # -- plumbing ------------------------------------------------------------------

    def owners(self, account) -> tuple[list[int], dict]:
        """The databases an account's mail is scored against, and their weights."""
        if account is None or not self.per_user:
            return [GLOBAL], {}
        return [GLOBAL, account.id], {account.id: self.user_weight}

    def enabled_for(self, account) -> bool:
        return account is None or account.address.lower() not in self.disabled_users

    # -- connection stage: DNSBL ------------------------------------------------------

    def connection(self, session: Session):
        if not self.dnsbl_zones or session.mode != "smtp":
            return None
        d = self._defer(dnsbl.lookup, self.resolver, session.remote_ip, self.dnsbl_zones)
        d.addCallback(self._dnsbl_verdict, session)
        return d

    def _dnsbl_verdict(self, found, session: Session):
        hits, failures = found
        for zone in failures:
            log.info("DNSBL {zone}: temporary failure looking up {ip}; not counted", zone=zone, ip=session.remote_ip)
        if not hits:
            return None
        zones = ", ".join(zone for zone, _code in hits)
        log.info("DNSBL: {ip} listed in {zones}", ip=session.remote_ip, zones=zones)
        if self.dnsbl_action == "reject":
            # RFC 5782 4: the client gets the list's name so a wrongly listed sender can act
            return Verdict.reject(554, "5.7.1", f"Service unavailable; client host {session.remote_ip} "
                                                f"is listed in {hits[0][0]}")
        session.data[NAME] = {"dnsbl": [zone for zone, _code in hits]}
        return None

    # -- body stage -------------------------------------------------------------------

    def body(self, session: Session, envelope: Envelope, message: bytes):
        if session.mode != "smtp" or session.account is not None or self.db is None:
            return None  # authenticated submission: the sender is ours
        accounts = []
        seen = set()
        for recipient in envelope.recipients:
            for account in recipient.accounts:
                if account.id not in seen:
                    seen.add(account.id)
                    accounts.append(account)
        scored = [account for account in accounts if self.enabled_for(account)]
        if accounts and not scored:
            return None
        targets = scored if self.per_user else [None]
        if not targets:
            targets = [None]
        auth = envelope.data.get("auth")  # check.auth's results, absent when it is not in the chain
        listed = bool(session.data.get(NAME, {}).get("dnsbl"))
        some_exempt = len(scored) < len(accounts)
        owners = list(dict.fromkeys(owner for account in targets for owner in self.owners(account)[0]))
        cached = self.db.cached_totals(owners)
        if cached is not None and not any(nspam or nham for nspam, nham in cached.values()):
            # Nothing trained in any of these databases (known without SQL): every token
            # is unknown, so the score is known without tokenising, and no thread is needed.
            # Nor a log line: X-Spam-Status says "untrained" (a line per message to say that
            # nothing is trained cost as much as the rest of the check).
            spared = self._spare_known_senders(self._empty_results(targets, listed), message, auth)
            if isinstance(spared, defer.Deferred):
                return spared.addCallback(self._verdict, envelope, some_exempt, True)
            return self._verdict(spared, envelope, some_exempt, True)
        d = self._defer(self.classify, message, targets, auth, listed)
        d.addCallback(self._spare_known_senders, message, auth)
        d.addCallback(self._verdict, envelope, some_exempt)
        return d

    def _spare_known_senders(self, results: list[Result], message: bytes, auth):
        """Results with spam from someone the account wrote to turned unsure (read only
        when something was called spam: ham costs no look at the Sent mailbox)."""
        spam = [result for result in results if result.label == classifier.SPAM and result.account is not None]
        # RFC 7489: a From: that failed DMARC may be forged; it earns no exemption
        if (self.correspondents is None or not spam
                or (auth is not None and "fail" in auth_summary(auth).get("dmarc", []))):
            return results
        sender = sender_address(message)
        if not sender:
            return results
        d = defer.gatherResults([self.correspondents.known(result.account) for result in spam])

        def spare(known_sets):
            spared = {id(result) for result, known in zip(spam, known_sets) if sender in known}
            return [dataclasses.replace(result, label=classifier.UNSURE, reject=False, known_sender=True)
                    if id(result) in spared else result for result in results]
        return d.addCallback(spare)

    def classify(self, message: bytes, targets, auth=None, listed: bool = False) -> list[Result]:
        """Blocking: tokenise once, score for each target account (None = global only).

        A refusal needs the global database alone to agree (reject_score reached
        without the account's own training): one user's Junk moves may send a
        sender's mail to that user's Junk, never bounce it."""
        owners = list(dict.fromkeys(owner for account in targets for owner in self.owners(account)[0]))
        if not any(nspam or nham for nspam, nham in self.db.totals_of(owners).values()):
            return self._empty_results(targets, listed)  # nothing trained: no token can count
        tokens = tokenize(message, auth)
        by_hash = self.db.hashes(tokens)  # once per message, whatever the number of databases
        global_counts, global_spam, global_ham = self.db.lookup(tokens, [GLOBAL], by_hash=by_hash)
        global_value, global_clues = classifier.score(tokens, global_counts, global_spam, global_ham,
                                                      self.db.options)
        global_trained = global_spam >= self.min_trained and global_ham >= self.min_trained
        results = []
        for account in targets:
            owners, weights = self.owners(account)
            if len(owners) == 1:
                counts, nspam, nham = global_counts, global_spam, global_ham
                value, clues = global_value, global_clues
            else:
                user_counts, user_spam, user_ham = self.db.lookup(tokens, owners[1:], weights, by_hash=by_hash)
                nspam, nham = global_spam + user_spam, global_ham + user_ham
                if not (user_counts or user_spam or user_ham):
                    value, clues = global_value, global_clues  # an empty own database adds nothing
                else:
                    counts = _merge(global_counts, user_counts)
                    value, clues = classifier.score(tokens, counts, nspam, nham, self.db.options)
            results.append(self._result(account, value, clues, nspam, nham, global_value, global_trained, listed))
        return results

    def _empty_results(self, targets, listed: bool) -> list[Result]:
        """What classify gives when every database is empty: no token is known, so
        classifier.score is (0.5, no clues) for everyone; no tokenising needed."""
        empty = 0.5  # classifier.score with no clues
        trained = self.min_trained <= 0
        return [self._result(account, empty, [], 0, 0, empty, trained, listed) for account in targets]

    def _result(self, account, value: float, clues, nspam, nham, global_value: float, global_trained: bool,
                listed: bool) -> Result:
        if listed:
            value = min(1.0, value + self.dnsbl_score)
        trained = nspam >= self.min_trained and nham >= self.min_trained
        label = classifier.verdict(value, self.ham_cutoff, self.spam_cutoff)
        if label == classifier.SPAM and not trained:
            label = classifier.UNSURE  # an untrained filter never quarantines
        reject = (global_trained and self.reject_score is not None and value >= self.reject_score
                  and min(1.0, global_value + (self.dnsbl_score if listed else 0.0)) >= self.reject_score)
        return Result(account, value, label, reject, trained, tuple(clues[:8]))

    def _verdict(self, results: list[Result], envelope: Envelope, some_exempt: bool = False,
                 quiet: bool = False):
        envelope.data["spam"] = results
        for result in () if quiet else results:
            log.info("{id}: spam filter {label} score {score:.3f} for {who}; clues {clues}",
                     id=envelope.id, label=result.label, score=result.score,
                     who=getattr(result.account, "address", "all"),
                     clues=", ".join(f"{token}={prob:.2f}" for token, prob in result.clues[:5]))
        if all(result.reject for result in results) and not some_exempt:
            return Verdict.reject(550, "5.7.1", "Message refused as spam")
        first = results[0]
        headers = first.headers(self.spam_cutoff)
        if not some_exempt and all(r.label == first.label and r.headers(self.spam_cutoff) == headers
                                   for r in results):
            if first.label == classifier.SPAM:
                return Verdict.quarantine("classified as spam", headers)
            return Verdict.accept(headers)
        # The accounts disagree: each recipient's copy gets its own account's verdict.
        by_account = {result.account.id: result for result in results if result.account is not None}
        for recipient in envelope.recipients:
            result = next((by_account[a.id] for a in recipient.accounts if a.id in by_account), None)
            if result is None:
                continue
            recipient.headers.extend(result.headers(self.spam_cutoff))
            if result.label == classifier.SPAM:
                recipient.quarantine = True
        return None


def _merge(first: dict, second: dict) -> dict:
    merged = dict(first)
    for token, counts in second.items():
        known = merged.get(token)
        merged[token] = counts if known is None else classifier.Counts(known.spam + counts.spam,
                                                                       known.ham + counts.ham)
    return merged


def _count(name: str, text) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError(f"[check.spam] {name} must be a whole number, not {text!r}") from None
    if value < 0:
        raise ValueError(f"[check.spam] {name} must not be negative")
    return value


register_builtin(NAME, SpamCheck)
