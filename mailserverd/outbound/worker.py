"""OutboundService: the queue runner in the reactor (a child of the service tree).

It claims due deliveries (SQL on its own small thread pool, never on the
reactor thread), hands each to the transport (`deliver(domain, message)` ->
Deferred[list[RecipientResult]]), and records the per-recipient results:
delivered and 5xx are final, 4xx and connection failures retry on the
backoff schedule (schedule.py), and a recipient still deferred at the end
of the lifetime fails. Failures (and successes, when NOTIFY asks) go back to
the sender as an RFC 3464 DSN: into a local sender's INBOX through
AsyncStore.deliver, or queued with the null sender to a remote one; a null
sender is never sent a DSN (RFC 5321 4.5.5).

It is also what the SMTP submission path calls to queue mail (enqueue,
release, discard, is_suppressed), so protocol code never sees SQL. Every
time comes from the injected clock.
"""

from __future__ import annotations

import collections
import socket

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import threadpool
from twisted.python.failure import Failure

from ..store.api import DeliveryTarget
from . import queue, queueadmin
from .outcome import decide, orcpts
from .queue import Claimed, NewMessage, Outcome, QueuedRecipient
from .srs import SRS, SrsError, is_srs

log = Logger(namespace="mailserverd.outbound")

POLL_INTERVAL = 15.0  # seconds between looks at the queue when nothing wakes the worker
HELD_GRACE = 3600.0  # a held submission older than this never got its 250: drop it
STOP_GRACE = 20.0  # seconds a stopping worker waits for attempts in flight


class OutcomeRecorder:
    """Group commit of attempt outcomes: queue.record_many on the SQL thread, one
    transaction (one fsync) for every outcome that arrived while the previous group
    was being written. Each record() Deferred fires with its own answer only once
    its group is durable (an outcome is recorded before it is acted on). Should a
    group fail as a whole, its outcomes are retried one by one, so one bad outcome
    fails alone."""

    def __init__(self, run_blocking, engine, clock):
        self.run_blocking = run_blocking
        self.engine = engine
        self.clock = clock
        self._waiting: list[tuple[Claimed, Outcome, defer.Deferred]] = []
        self._writing = False
        self.groups = 0  # transactions written (tests, metrics)

    def record(self, item: Claimed, outcome: Outcome) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self._waiting.append((item, outcome, d))
        if not self._writing:
            self._write()
        return d

    def _write(self) -> None:
        group, self._waiting = self._waiting, []
        self._writing = True
        self.groups += 1
        d = self.run_blocking(queue.record_many, self.engine, [(item, outcome) for item, outcome, _ in group],
                              self.clock.seconds())
        d.addCallbacks(self._written, self._group_failed, callbackArgs=(group,), errbackArgs=(group,))

    def _written(self, answers, group) -> None:
        for (_item, _outcome, d), answer in zip(group, answers):
            d.callback(answer)
        self._next()

    def _group_failed(self, failure, group) -> None:
        if len(group) == 1:
            group[0][2].errback(failure)
            self._next()
            return
        remaining = list(group)

        def one(_=None):
            if not remaining:
                self._next()
                return
            item, outcome, d = remaining.pop(0)
            single = self.run_blocking(queue.record, self.engine, item, outcome, self.clock.seconds())
            single.addBoth(lambda result: (d.errback(result) if isinstance(result, Failure)
                                           else d.callback(result)))
            single.addBoth(one)
        one()

    def _next(self) -> None:
        self._writing = False
        if self._waiting:
            self._write()


class ThreadRunner:
    """Runs blocking SQL on a dedicated thread pool; returns Deferreds."""

    def __init__(self, reactor, threads: int = 2):
        self.reactor = reactor
        self.pool = threadpool.ThreadPool(minthreads=1, maxthreads=threads, name="outbound-sql")

    def start(self):
        self.pool.start()

    def stop(self):
        self.pool.stop()

    def __call__(self, fn, *args, **kwargs) -> defer.Deferred:
        from twisted.internet.threads import deferToThreadPool
        return deferToThreadPool(self.reactor, self.pool, fn, *args, **kwargs)


def build_transport(settings, reactor):
    """engineer T's Transport with the DKIM signer for our domains' keys."""
    from .dkim import DkimSigner
    from .transport import Transport
    return Transport(reactor, settings, dkim_signer=DkimSigner.from_data_dir(settings.server.data_dir))


def dsn_functions():
    """(build_dsn, should_notify, classify) from outbound/dsn.py and outbound/classify.py."""
    from .classify import classify
    from .dsn import build_dsn, should_notify
    return build_dsn, should_notify, classify


class OutboundService(service.Service):
    name = "outbound"

    def __init__(self, settings, engine, store, reactor, transport=None, clock=None, run_blocking=None,
                 node: str | None = None, poll_interval: float = POLL_INTERVAL,
                 lease: float = queue.DEFAULT_LEASE, dsn=None):
        """engine: the directory engine; store: the AsyncStore (local DSNs); clock: seconds() and
        callLater() (default: reactor); run_blocking(fn, *args) -> Deferred (default: a thread pool);
        dsn: (build_dsn, should_notify, classify), default from outbound/dsn.py and classify.py."""
        self.settings = settings
        self.engine = engine
        self.store = store
        self.reactor = reactor
        self.clock = clock or reactor
        self.transport = transport
        self._runner = None
        if run_blocking is None:
            self._runner = ThreadRunner(reactor)
            run_blocking = self._runner
        self.run_blocking = run_blocking
        self.node = node or f"{settings.server.hostname}/{socket.gethostname()}"
        self.poll_interval = poll_interval
        self.lease = lease
        self._dsn = dsn
        outbound = settings.outbound
        self.lifetime = outbound.lifetime
        self.concurrency = max(1, outbound.concurrency)
        self.suppress_for = outbound.suppress_for
        self.counters: collections.Counter = collections.Counter()
        self._inflight: dict[int, defer.Deferred] = {}
        self._timer = None
        self._claiming = False
        self._again = False
        self._maybe_more = False
        self._stopping = False
        self._recorder = OutcomeRecorder(run_blocking, engine, self.clock)
        self._reserved = 0  # slots promised to enqueue_claimed calls not finished yet
        # claim again once this many slots are free (claims in batches, not one row per finished attempt)
        self.claim_batch = max(1, self.concurrency // 4)

    # -- life cycle -------------------------------------------------------------------

    def startService(self):
        super().startService()
        self._stopping = False
        if self._runner is not None:
            self._runner.start()
        if self.transport is None:
            try:
                self.transport = build_transport(self.settings, self.reactor)
            except ImportError as exc:  # a partial install: keep the mail, say so loudly
                log.critical("outbound: no SMTP transport ({reason}); queued mail waits until one exists",
                             reason=str(exc))
        if self._dsn is None:
            try:
                self._dsn = dsn_functions()
            except ImportError as exc:  # without bounce handling an attempt could not be recorded
                log.critical("outbound: no DSN builder ({reason}); queued mail waits until one exists",
                             reason=str(exc))
        d = self.run_blocking(queue.purge_stale_held, self.engine, self.now() - HELD_GRACE)
        d.addErrback(lambda failure: log.failure("outbound: purging stale held messages failed", failure))
        d.addBoth(lambda _: self.wake())

    def stopService(self):
        """Claim nothing new; wait (STOP_GRACE at most) for attempts in flight to be recorded."""
        super().stopService()
        self._stopping = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        waiting = defer.DeferredList(list(self._inflight.values()), consumeErrors=True)
        done = defer.Deferred()
        timeout = self.clock.callLater(STOP_GRACE, lambda: done.called or done.callback(None))
        waiting.addBoth(lambda _: done.called or done.callback(None))

        def stopped(_):
            if timeout.active():
                timeout.cancel()
            if self._inflight:
                log.warn("outbound: stopped with {n} attempt(s) in flight; their leases expire",
                         n=len(self._inflight))
            close_idle = getattr(self.transport, "close_idle", None)
            if close_idle is not None:
                close_idle()  # QUIT the pooled SMTP connections
            if self._runner is not None:
                self._runner.stop()
        return done.addCallback(stopped)

    def now(self) -> float:
        return self.clock.seconds()

    # -- the submission side (SMTP delivery calls these) -------------------------------

    def enqueue(self, message: NewMessage, held: bool = False) -> defer.Deferred:
        """Deferred[list[int]] once the message is durable; not held: the worker is woken.

        With free slots, the deliveries are stored already leased to this worker
        (queue.enqueue_claimed) and attempted as soon as they are durable: no claim
        transaction, no re-read of the body. Otherwise the worker claims them as usual."""
        wanted = queue.domain_count(message)
        free = self.concurrency - len(self._inflight) - self._reserved
        if held or wanted > free or self._stopping or not self.running or self.transport is None \
                or self._dsn is None:
            d = self.run_blocking(queue.enqueue, self.engine, message, self.lifetime, held)
            if not held:
                d.addCallback(self._woken)
            return d
        self._reserved += wanted
        d = self.run_blocking(queue.enqueue_claimed, self.engine, message, self.lifetime, self.node,
                              self.now(), self.lease)

        def stored(claimed: list[Claimed]):
            self._reserved -= wanted
            if self._stopping:
                self.run_blocking(queue.release_claims, self.engine, claimed).addErrback(
                    lambda failure: log.failure("outbound: releasing claims failed", failure))
            else:
                for item in claimed:
                    self._inflight[item.delivery_id] = defer.Deferred()  # fired by _done
                    self._attempt(item)
            return [item.delivery_id for item in claimed]

        def failed(failure):
            self._reserved -= wanted
            return failure
        return d.addCallbacks(stored, failed)

    def release(self, message_id: str) -> defer.Deferred:
        return self.run_blocking(queue.release, self.engine, message_id).addCallback(self._woken)

    def discard(self, message_id: str) -> defer.Deferred:
        return self.run_blocking(queue.discard, self.engine, message_id)

    def is_suppressed(self, address: str) -> defer.Deferred:
        """Deferred[bool]: did `address` hard-bounce within [outbound] suppress_for?"""
        return self.run_blocking(queue.is_suppressed, self.engine, address, self.now(), self.suppress_for)

    def stats(self) -> defer.Deferred:
        return self.run_blocking(queueadmin.stats, self.engine, self.now(), self.suppress_for)

    def new_message(self, sender: str, body: bytes, recipients, message_id: str | None = None,
                    **kwargs) -> NewMessage:
        """A message to enqueue(); recipients: (address, notify, orcpt) triples (RFC 3461 4.1, 4.2)."""
        return NewMessage(id=message_id or queue.new_queue_id(), sender=sender, body=body,
                          recipients=tuple(QueuedRecipient(*item) for item in recipients),
                          created_at=self.now(), **kwargs)

    def _woken(self, result):
        self.wake()
        return result

    # -- the loop ---------------------------------------------------------------------

    def wake(self) -> None:
        """Look at the queue now (new mail, a retry or flush by the admin)."""
        if self._stopping or not self.running:
            return
        if self._claiming:
            self._again = True
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.clock.callLater(0, self._tick)

    def _schedule(self, delay: float) -> None:
        if self._stopping:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        free = self.concurrency - len(self._inflight) - self._reserved
        if self._stopping or self._claiming or self.transport is None or self._dsn is None:
            return
        if free <= 0:
            self._schedule(self.poll_interval)  # a finished attempt wakes us sooner
            return
        self._claiming = True
        self._again = False
        d = self.run_blocking(queue.claim, self.engine, self.node, self.now(), free, self.lease)
        d.addCallbacks(self._claimed, self._claim_failed, callbackArgs=(free,))

    def _claim_failed(self, failure) -> None:
        self._claiming = False
        log.failure("outbound: claiming from the queue failed", failure)
        self._schedule(self.poll_interval)

    def _claimed(self, claimed: list[Claimed], asked: int) -> None:
        self._claiming = False
        if self._stopping:
            self.run_blocking(queue.release_claims, self.engine, claimed).addErrback(
                lambda failure: log.failure("outbound: releasing claims failed", failure))
            return
        for item in claimed:
            self._inflight[item.delivery_id] = defer.Deferred()  # fired by _done
            self._attempt(item)
        # a full claim means more may be due: claim again as soon as a slot is free
        self._maybe_more = self._again or len(claimed) >= asked
        if self._maybe_more and len(self._inflight) < self.concurrency:
            self._schedule(0)
        else:
            self._schedule(self.poll_interval)

    def _attempt(self, item: Claimed) -> defer.Deferred:
        d = defer.maybeDeferred(self.transport.deliver, item.domain, self._message(item))
        d.addErrback(self._transport_failed, item)
        d.addCallback(self._finish, item)
        d.addErrback(lambda failure: log.failure("outbound: recording {id} failed", failure, id=item.message_id))
        d.addBoth(self._done, item)
        return d

    def _message(self, item: Claimed):
        from .types import OutboundMessage
        return OutboundMessage(queue_id=item.message_id, sender=item.sender,
                               recipients=tuple(r.address for r in item.recipients), body=item.body,
                               smtputf8=item.smtputf8, eight_bit=item.eight_bit,
                               dsn=tuple((r.notify, r.orcpt) for r in item.recipients),
                               ret=item.ret, envid=item.envid)

    def _transport_failed(self, failure, item: Claimed):
        # The transport promises never to fail; if it does, retry rather than lose or bounce the mail.
        log.failure("outbound: transport failed on {id} to {domain}", failure, id=item.message_id,
                    domain=item.domain)
        return []

    def _done(self, result, item: Claimed):
        finished = self._inflight.pop(item.delivery_id, None)
        if finished is not None:
            finished.callback(None)
        free = self.concurrency - len(self._inflight)
        if self._maybe_more and not self._stopping and not self._claiming and \
                (free >= self.claim_batch or not self._inflight):
            self._schedule(0)
        return None

    @defer.inlineCallbacks
    def _finish(self, results, item: Claimed):
        build_dsn, should_notify, classify = self._dsn
        now = self.now()
        decision = decide(item, results, now, classify, should_notify)
        dsns = ()
        if decision.notify:
            report = build_dsn(reporting_mta=self.settings.server.hostname, original=item.body,
                               sender=item.sender, results=list(decision.notify), queued_at=item.created_at,
                               now=now, ret=item.ret, envid=item.envid, orcpts=orcpts(item))
            dsns = yield self._route_dsn(item, report, now)
        outcome = Outcome(results=decision.results, retry_at=decision.retry_at, last_error=decision.last_error,
                          bounces=decision.bounces, dsns=dsns)
        recorded = yield self._recorder.record(item, outcome)
        if not recorded:
            log.warn("outbound: lease on {id} to {domain} was lost; another worker has it",
                     id=item.message_id, domain=item.domain)
            return
        for result in decision.results:
            self.counters[("recipients", result.status)] += 1
            log.info("outbound: id={id} to=<{rcpt}> status={status} reply={reply} host={host}",
                     id=item.message_id, rcpt=result.recipient, status=result.status,
                     reply=f"{result.code} {result.enhanced} {result.text}".strip(), host=result.remote_host or "-")
        for _address, kind, *_ in decision.bounces:
            self.counters[("bounces", kind)] += 1
        self.counters[("attempts", "total")] += 1

    def _srs_original(self, sender: str) -> str:
        """The original sender behind an SRS address of ours (outbound/srs.py), or ""."""
        if not is_srs(sender.rpartition("@")[0]):
            return ""
        try:
            return SRS.from_data_dir(self.settings.server.data_dir, self.clock).reverse(sender.rpartition("@")[0])
        except (SrsError, OSError):
            return ""

    @defer.inlineCallbacks
    def _route_dsn(self, item: Claimed, report: bytes, now: float):
        """Deliver the DSN to a local sender's INBOX now; for a remote sender return the
        NewMessage to queue with the results (one transaction)."""
        sender = item.sender
        accounts = yield self.store.resolve_recipient(sender)
        if accounts:
            prepend = b"Return-Path: <>\r\n"  # RFC 3464 2: a DSN has the null reverse-path
            try:
                yield self.store.deliver(report, [DeliveryTarget(account=a, mailbox="INBOX", prepend=prepend)
                                                  for a in accounts], received_at=now)
                self.counters[("dsns", "local")] += 1
            except Exception:
                log.failure("outbound: DSN for {id} to local sender <{sender}> not stored",
                            id=item.message_id, sender=sender)
            return ()
        local_domain = yield self.store.is_local_domain(sender.rpartition("@")[2])
        original = self._srs_original(sender) if local_domain else ""
        if original:  # a forwarded copy (outbound/forward.py) bounced: report to whoever sent it to us
            sender, local_domain = original, False
        if local_domain:
            log.warn("outbound: DSN for {id} dropped: local sender <{sender}> does not exist",
                     id=item.message_id, sender=sender)
            return ()
        self.counters[("dsns", "remote")] += 1
        return (NewMessage(id=queue.new_queue_id(), sender="", body=report, created_at=now,
                           recipients=(QueuedRecipient(sender),)),)
