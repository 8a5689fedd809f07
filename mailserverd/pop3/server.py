"""The thin Twisted side of POP3: sockets, TLS, timeouts, locks and the store.

POP3ServerProtocol feeds bytes to the POP3Machine (protocol.py), writes what
it wants sent and answers its requests (Login, Retrieve, Update) from the
authenticator and the store. While an answer is pending the transport stops
reading, so pipelined commands wait in the kernel and are answered in order
(RFC 2449 6.6). Message bodies are written in chunks as the transport drains
(the protocol is a streaming producer for its own output).

build_factory(mode, settings, store, authenticator, tls) is what the service
tree calls; mode is "pop3" (STLS offered) or "pop3s" (the caller wraps the
port in TLS; the session is secure from its first byte).
"""

from __future__ import annotations

import weakref

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from ..auth import AuthFailed, plaintext_allowed
from ..smtp.ratelimit import ConnectionLimiter
from ..store.api import StoreError
from . import replies
from .events import NEED_DATA, PAUSED, Close, Login, MachineConfig, Retrieve, StartTLS, Update
from .maildrop import Maildrop
from .protocol import POP3Machine
from ..netio import set_no_delay

log = Logger(namespace="mailserverd.pop3")

MODES = ("pop3", "pop3s")
WRITE_CHUNK = 64 * 1024
# RETR/TOP read ahead: the bodies of the next live messages come in one store
# round trip (one SQL query, one RocksDB multi-get), bounded in count and bytes,
# so a client reading its maildrop in order costs one thread hop per batch.
READ_AHEAD_COUNT = 64
READ_AHEAD_BYTES = 2 * 1024 * 1024
INBOX = "INBOX"  # the maildrop (RFC 1939 1: the server's mailbox for the user)


class MaildropLocks:
    """RFC 1939 8: one exclusive-access lock per maildrop, held from login to the
    end of the session (UPDATE included). Process-wide: shared by every POP3
    listener of one store."""

    def __init__(self):
        self._held: set[int] = set()

    def acquire(self, account_id: int) -> bool:
        if account_id in self._held:
            return False
        self._held.add(account_id)
        return True

    def release(self, account_id: int) -> None:
        self._held.discard(account_id)

    def held(self, account_id: int) -> bool:
        return account_id in self._held


_LOCKS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # store -> MaildropLocks


def locks_for(store) -> MaildropLocks:
    """The lock table of one store, shared by pop3 and pop3s."""
    if store not in _LOCKS:
        _LOCKS[store] = MaildropLocks()
    return _LOCKS[store]


@implementer(IPushProducer)
class POP3ServerProtocol(protocol.Protocol, TimeoutMixin):
    def __init__(self, factory: "POP3Factory"):
        self.factory = factory
        self.callLater = factory.clock.callLater  # TimeoutMixin uses it: an injectable clock
        self.machine: POP3Machine | None = None
        self.remote_ip = "unknown"
        self.account = None  # the logged-in Account
        self.inbox = None  # the INBOX Mailbox snapshot taken at login
        self._bodies: dict[int, bytes] = {}  # read ahead, by message id; taken on use
        self._locked_account_id: int | None = None
        self._update_in_flight = False
        self._counted = False
        self._pumping = False
        self._read_paused = False
        self._write_paused = False
        self._producing = False
        self._lost = False
        self._end_reason = "disconnected"

    # -- connection lifecycle -------------------------------------------------

    def connectionMade(self):
        factory = self.factory
        self.remote_ip = getattr(self.transport.getPeer(), "host", "unknown")
        set_no_delay(self.transport)
        if not factory.connections.acquire(self.remote_ip):
            log.info("pop3 {mode}: refused connection from {ip}: too many connections",
                     mode=factory.mode, ip=self.remote_ip)
            self.transport.write(replies.TOO_MANY_CONNECTIONS)
            self.transport.loseConnection()
            return
        self._counted = True
        self.machine = POP3Machine(factory.machine_config(plaintext_allowed(False, self.remote_ip)))
        self.transport.registerProducer(self, True)
        self._producing = True
        self.setTimeout(factory.timeout)
        self._pump()

    def dataReceived(self, data: bytes):
        if self.machine is None or self._lost:
            return
        self.resetTimeout()
        self.machine.receive_data(data)
        self._pump()

    def connectionLost(self, reason=protocol.connectionDone):
        self._lost = True
        self.setTimeout(None)
        if self._counted:
            self._counted = False
            self.factory.connections.release(self.remote_ip)
            self._log_session()
        if not self._update_in_flight:
            self._release_lock()  # a dropped connection never reaches UPDATE: nothing is deleted

    def timeoutConnection(self):
        # RFC 1939 3: an idle session may be closed; it does not enter UPDATE.
        if self.machine is None:
            self.transport.loseConnection()
            return
        self.machine.close(replies.TIMEOUT, "timeout")
        self._pump()

    # -- output flow control (IPushProducer for our own writes) -------------------------

    def pauseProducing(self):
        self._write_paused = True

    def resumeProducing(self):
        self._write_paused = False
        if self.machine is not None and self.machine.output_pending:
            self.resetTimeout()  # the client is reading: not idle
        self._pump()

    def stopProducing(self):
        self._write_paused = True

    # -- driving the machine ------------------------------------------------------

    def _pump(self):
        if self._pumping or self._lost or self.machine is None:
            return  # an answer that fired synchronously: the running loop continues
        self._pumping = True
        try:
            while True:
                event = self.machine.next_event()
                if isinstance(event, Close):
                    self.transport.write(self.machine.data_to_send())
                    self._close(event.reason)
                    return
                self._flush()
                if event is NEED_DATA:
                    self._resume_reading()
                    return
                if event is PAUSED:
                    if self.machine.waiting or self.machine.output_pending:
                        self._pause_reading()
                        return  # an answer or resumeProducing() calls _pump again
                    continue
                self._dispatch(event)
        finally:
            self._pumping = False

    def _flush(self):
        while self.machine.output_pending and not self._write_paused and not self._lost:
            self.transport.write(self.machine.data_to_send(WRITE_CHUNK))

    def _close(self, reason: str):
        self._end_reason = reason
        self.setTimeout(None)
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _pause_reading(self):
        if not self._read_paused:
            self._read_paused = True
            self.transport.pauseProducing()

    def _resume_reading(self):
        if self._read_paused:
            self._read_paused = False
            self.transport.resumeProducing()

    def _dispatch(self, event):
        if isinstance(event, StartTLS):
            self._start_tls()
            return
        handler = {Login: self._login, Retrieve: self._retrieve, Update: self._update}[type(event)]
        d = defer.maybeDeferred(handler, event)
        d.addErrback(self._internal_error, event)
        d.addBoth(lambda _: self._pump())

    def _internal_error(self, failure, event):
        log.failure("pop3: error answering {event}", failure=failure, event=type(event).__name__)
        if self._lost or not self.machine.waiting:
            return
        if isinstance(event, Login):
            self.machine.login_failed(replies.SYS_TEMP, credentials_rejected=False)
        elif isinstance(event, Retrieve):
            self.machine.message_failed(replies.READ_FAILED)
        else:
            self.machine.update_failed()

    # -- STLS (RFC 2595 4) ----------------------------------------------------------------

    def _start_tls(self):
        # "+OK Begin TLS negotiation" went out in plaintext in _pump; every later byte is TLS.
        self.transport.startTLS(self.factory.tls.server_context_factory())
        self.machine.tls_started()

    # -- answers --------------------------------------------------------------------------

    @defer.inlineCallbacks
    def _login(self, event: Login):
        factory, machine = self.factory, self.machine
        try:
            account = yield factory.authenticator.authenticate(event.username, event.password, self.remote_ip,
                                                             protocol=factory.mode)
        except AuthFailed:
            # The authenticator has logged it and waited out the penalty. RFC 3206 4:
            # one [AUTH] reply whether the user is unknown or the password wrong.
            machine.login_failed(replies.AUTH_FAILED)
            return
        except Exception:
            log.failure("pop3: authentication backend failed")
            machine.login_failed(replies.SYS_TEMP, credentials_rejected=False)
            return
        if self._lost:
            return
        if event.authzid and event.authzid.lower() != account.address.lower():
            # RFC 4616 2: we grant no proxy authorization; refuse like a bad password.
            machine.login_failed(replies.AUTH_FAILED)
            return
        if not factory.locks.acquire(account.id):
            # RFC 2449 8.1.1: another session holds this maildrop.
            machine.login_failed(replies.IN_USE, credentials_rejected=False)
            return
        self._locked_account_id = account.id
        try:
            inbox = yield factory.store.get_mailbox(account, INBOX)
            refs = yield factory.store.list_messages(account, inbox.id)
        except Exception:
            log.failure("pop3: cannot open the maildrop of {user}", user=account.address)
            self._release_lock()
            if not self._lost:
                machine.login_failed(replies.SYS_TEMP, credentials_rejected=False)
            return
        if self._lost:
            return  # connectionLost released the lock
        self.account, self.inbox = account, inbox
        machine.login_succeeded(Maildrop.from_store(inbox, refs), account.address)

    def _read_ahead_ids(self, number: int) -> list[int]:
        """Message ids of live entries from `number` on, within the read-ahead bounds."""
        maildrop = self.machine.maildrop
        ids, octets = [], 0
        for entry in maildrop.entries[number - 1:]:
            if entry.number in maildrop.deleted and entry.number != number:
                continue
            if ids and (len(ids) >= READ_AHEAD_COUNT or octets + entry.size > READ_AHEAD_BYTES):
                break
            ids.append(entry.message_id)
            octets += entry.size
        return ids

    @defer.inlineCallbacks
    def _retrieve(self, event: Retrieve):
        body = self._bodies.pop(event.message_id, None)
        try:
            if body is None:
                self._bodies = yield self.factory.store.read_messages(
                    self.account, self._read_ahead_ids(event.number))
                body = self._bodies.pop(event.message_id, None)
            if body is None:
                raise StoreError("no such message")
        except StoreError:
            # Expunged by another protocol (IMAP, JMAP) since our snapshot.
            if not self._lost:
                self.machine.message_failed(replies.MESSAGE_GONE)
            return
        except Exception:
            log.failure("pop3: cannot read message {id} of {user}", id=event.message_id,
                        user=self.account.address)
            if not self._lost:
                self.machine.message_failed(replies.READ_FAILED)
            return
        if not self._lost:
            self.machine.message_read(body)

    @defer.inlineCallbacks
    def _update(self, event: Update):
        # RFC 1939 6: remove the marked messages; +OK only once that is durable.
        self._update_in_flight = True
        try:
            yield self.factory.store.expunge(self.account, self.inbox.id, list(event.uids))
        except Exception:
            log.failure("pop3: expunge failed for {user}", user=self.account.address)
            if not self._lost:
                self.machine.update_failed()
            return
        finally:
            self._update_in_flight = False
            self._release_lock()
        if not self._lost:
            self.machine.update_done()

    def _release_lock(self):
        if self._locked_account_id is not None:
            self.factory.locks.release(self._locked_account_id)
            self._locked_account_id = None

    def _log_session(self):
        machine = self.machine
        stats = machine.stats
        log.info("pop3 {mode}: rip={ip} user={user} tls={tls} retr={retr}/{octets} top={top} "
                 "dele={dele} auth_failures={failures} bad={bad} end={reason}",
                 mode=self.factory.mode, ip=self.remote_ip, user=machine.username or "-",
                 tls="yes" if machine.tls_active else "no", retr=stats.retrieved,
                 octets=stats.retrieved_octets, top=stats.top, dele=stats.deleted,
                 failures=stats.auth_failures, bad=stats.bad_commands,
                 reason=self._end_reason if machine.closed else "disconnected")


class POP3Factory(protocol.ServerFactory):
    def __init__(self, mode: str, settings, store, authenticator, tls, clock):
        if mode not in MODES:
            raise ValueError(f"unknown POP3 mode {mode!r}; expected one of {MODES}")
        self.mode = mode
        self.settings = settings
        self.store = store
        self.authenticator = authenticator
        self.tls = tls
        self.clock = clock
        self.hostname = settings.server.hostname
        self.timeout = settings.pop3.timeout
        self.connections = ConnectionLimiter(settings.limits.max_connections_per_ip)
        self.locks = locks_for(store)

    def machine_config(self, plaintext_ok: bool) -> MachineConfig:
        return MachineConfig(hostname=self.hostname,
                             stls_available=self.tls is not None and self.mode == "pop3",
                             tls_active=self.mode == "pop3s",
                             plaintext_auth_without_tls=plaintext_ok,
                             max_line_length=self.settings.limits.max_line_length)

    def buildProtocol(self, addr):
        return POP3ServerProtocol(self)


def build_factory(mode: str, settings, store, authenticator, tls, clock=None) -> POP3Factory:
    """The protocol factory for one POP3 listener (see module docstring).

    clock: for idle timeouts; default: the reactor.
    """
    if clock is None:
        from twisted.internet import reactor as clock
    return POP3Factory(mode, settings, store, authenticator, tls, clock)
