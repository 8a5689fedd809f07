"""The IMAP4rev1 session (RFC 3501): states, dispatch, authentication, push.

IMAPSession.handle(command) runs one parsed command and returns a Deferred
that fires when its tagged answer has been sent through `send(bytes)`. The
server (server.py) runs one command at a time, so untagged updates from
other sessions are only sent between commands (RFC 3501 5.2, 7.4.1) or
while the client IDLEs (RFC 2177). Mailbox commands live in
session_mailboxes.py, message commands in session_messages.py.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger

from ..auth import AuthFailed
from ..auth.sasl import SASLError, b64decode, decode_plain
from ..store.api import NoSuchMailbox, OverQuota, StoreError
from . import commands, responses
from .mailbox_view import RECENT
from .session_mailboxes import MailboxCommands
from .session_messages import MessageCommands

log = Logger(namespace="mailserverd.imap")

NOT_AUTHENTICATED, AUTHENTICATED, SELECTED, LOGOUT = "not-authenticated", "authenticated", "selected", "logout"
ANY_STATE = frozenset({"CAPABILITY", "NOOP", "LOGOUT", "ID", "COMPRESS"})
NOT_AUTH_ONLY = frozenset({"LOGIN", "AUTHENTICATE", "STARTTLS"})
SELECTED_ONLY = frozenset({"CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "FETCH", "STORE", "SEARCH",
                           "COPY", "MOVE", "SORT", "THREAD"})
# Commands whose completion must not carry EXPUNGE (RFC 3501 7.4.1; UID
# variants may, RFC 3501 7.4.1 last paragraph, but sequence numbers in their
# own untagged responses are computed first, so holding back is simpler).
NO_EXPUNGE_COMMANDS = frozenset({"FETCH", "STORE", "SEARCH", "SORT", "THREAD"})
# Changes made by another node reach this one only through the store; poll at
# most this often when nothing in this process said the account changed.
POLL_SECONDS = 5.0
IDLE_POLL_SECONDS = 30.0
IMPLEMENTATION = {"name": "mailserverd", "vendor": "mailserverd",
                  "support-url": "https://github.com/mailserverd/mailserverd"}
ENABLEABLE = frozenset({"CONDSTORE", "QRESYNC"})


class IMAPSession(MailboxCommands, MessageCommands):
    """One client's session.

    send writes bytes; start_tls switches the transport to TLS (None when
    STARTTLS is not offered); start_compress(leftover) switches it to DEFLATE
    (None: COMPRESS not offered); plaintext_ok says whether LOGIN may be used
    before TLS; login_gate(account) returns a release callable, or None when
    that user already has too many sessions from this address.
    """

    def __init__(self, send, store, authenticator, remote_ip: str, parser,
                 start_tls=None, secure: bool = False, plaintext_ok: bool = False,
                 start_compress=None, login_gate=None, settings=None, clock=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.send = send
        self.store = store
        self.authenticator = authenticator
        self.remote_ip = remote_ip
        self.parser = parser
        self.start_tls = start_tls
        self.secure = secure
        self.plaintext_ok = plaintext_ok
        self.start_compress = start_compress
        self.login_gate = login_gate
        self.clock = clock
        self.max_message_size = settings.limits.max_message_size if settings else 25 * 1024 * 1024
        self.state = NOT_AUTHENTICATED
        self.account = None
        self.view = None
        self.enabled: set[str] = set()
        self.condstore = False  # RFC 7162 3.1: on after ENABLE or the first CONDSTORE use
        self.saved_search: list[int] | None = None  # RFC 5182 SEARCHRES "$", as UIDs
        self.idling = False
        self.compressed = False
        self._dirty = True
        self._last_sync = 0.0
        self._line_waiter: defer.Deferred | None = None
        self._release_login = None
        self._idle_poll = None
        self._syncing: defer.Deferred | None = None
        self.recent_registry = RECENT

    # -- capabilities -----------------------------------------------------------

    def _login_allowed(self) -> bool:
        return self.secure or self.plaintext_ok

    def capabilities(self) -> list[str]:
        names = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE"]
        if self.state == NOT_AUTHENTICATED:
            if self.start_tls is not None and not self.secure:
                names.append("STARTTLS")
            if self._login_allowed():
                names.append("AUTH=PLAIN")
            else:
                names.append("LOGINDISABLED")  # RFC 3501 6.2.3
        else:
            names += ["NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE", "CHILDREN", "SPECIAL-USE",
                      "LIST-EXTENDED", "LIST-STATUS", "CONDSTORE", "QRESYNC", "ESEARCH",
                      "SEARCHRES", "SORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES",
                      "QUOTA", "QUOTA=RES-STORAGE", "APPENDLIMIT=%d" % self.max_message_size]
        if self.start_compress is not None and not self.compressed:
            names.append("COMPRESS=DEFLATE")
        return names

    def greeting(self) -> bytes:
        return responses.untagged_status("OK", "mailserverd IMAP4rev1 ready",
                                         "CAPABILITY " + " ".join(self.capabilities()))

    # -- what the server drives ------------------------------------------------------

    @property
    def awaiting_line(self) -> bool:
        """True while AUTHENTICATE waits for a response line or IDLE for DONE."""
        return self._line_waiter is not None

    def client_line(self, data: bytes | None) -> None:
        waiter, self._line_waiter = self._line_waiter, None
        if waiter is not None:
            waiter.callback(data)

    def _read_line(self) -> defer.Deferred:
        self.parser.expect_line()
        self._line_waiter = defer.Deferred()
        return self._line_waiter

    def connection_lost(self) -> None:
        if self.account is not None:
            self.store.unsubscribe(self.account.id, self._on_change)
        if self._release_login is not None:
            self._release_login()
            self._release_login = None
        self._stop_idle_poll()
        self.client_line(None)

    # -- dispatch -----------------------------------------------------------------

    @defer.inlineCallbacks
    def handle(self, command: commands.Command):
        name, tag = command.name, command.tag
        if name == "EXAMINE":
            name = "SELECT"
        refusal = self._state_refusal(name)
        if refusal:
            self.send(responses.tagged(tag, "BAD", refusal))
            return
        handler = getattr(self, "do_" + name.lower(), None)
        if handler is None:
            self.send(responses.tagged(tag, "BAD", "Command not supported"))
            return
        if self.state == SELECTED and self._dirty and name in NO_EXPUNGE_COMMANDS:
            # Another session changed the mailbox: FETCH, STORE and SEARCH answer from the
            # current flags, not the snapshot's (updates before the answer; expunges stay
            # held back, RFC 3501 7.4.1).
            try:
                yield self.send_updates(allow_expunge=False)
            except Exception:
                log.failure("imap: mailbox update failed")
        try:
            outcome = yield handler(command)
            if outcome is None:  # the handler sent its own tagged answer (STARTTLS, COMPRESS)
                return
            status, text, code = outcome
        except NoSuchMailbox:
            status, text, code = "NO", "Mailbox does not exist", "NONEXISTENT"
        except OverQuota:
            status, text, code = "NO", "Quota exceeded", "OVERQUOTA"
        except StoreError as error:
            status, text, code = "NO", str(error) or "Refused", None
        except Exception:
            log.failure("imap: {command} failed", command=name)
            status, text, code = "NO", "Internal error, try again", "SERVERBUG"
        if self.state == SELECTED and status != "BAD" and name != "SELECT":
            try:
                yield self.send_updates(allow_expunge=name not in NO_EXPUNGE_COMMANDS)
            except Exception:
                log.failure("imap: mailbox update failed")
        self.send(responses.tagged(tag, status, text, code))

    def _state_refusal(self, name: str) -> str | None:
        if name in ANY_STATE:
            return None
        if name in NOT_AUTH_ONLY and self.state != NOT_AUTHENTICATED:
            return "Already authenticated"
        if name not in NOT_AUTH_ONLY and self.state == NOT_AUTHENTICATED:
            return "Log in first"
        if name in SELECTED_ONLY and self.state != SELECTED:
            return "No mailbox selected"
        return None

    # -- push: untagged updates (RFC 3501 7.4.1, RFC 2177) -------------------------------

    def _on_change(self, _account_id) -> None:
        self._dirty = True
        if self.idling:
            self._sync_now()

    def _sync_now(self) -> None:
        if self._syncing is not None:
            return  # the running sync sees _dirty again when it finishes
        d = self._syncing = self.send_updates(allow_expunge=True)

        def done(result):
            self._syncing = None
            if self._dirty and self.idling:
                self._sync_now()
            return result
        d.addBoth(done)
        d.addErrback(lambda failure: log.failure("imap: push update failed", failure))

    @defer.inlineCallbacks
    def send_updates(self, allow_expunge: bool = True):
        """Untagged EXISTS / EXPUNGE / FETCH FLAGS for changes made elsewhere."""
        view = self.view
        if view is None:
            return
        now = self.clock.seconds()
        if not self._dirty and now - self._last_sync < POLL_SECONDS:
            return
        self._dirty = False
        self._last_sync = now
        highest, changed, vanished = yield self.store.mailbox_changes(
            self.account, view.mailbox.id, view.synced_modseq)
        if self.view is not view:
            return
        for line in view.sync(highest, list(changed), list(vanished), allow_expunge,
                              condstore=self.condstore, qresync="QRESYNC" in self.enabled):
            self.send(line)
        if view.synced_modseq < highest:
            self._dirty = True  # held back (RFC 3501 7.4.1): send after a later command

    def _start_idle_poll(self) -> None:
        def poll():
            self._dirty = True
            self._sync_now()
            self._idle_poll = self.clock.callLater(IDLE_POLL_SECONDS, poll)
        self._idle_poll = self.clock.callLater(IDLE_POLL_SECONDS, poll)

    def _stop_idle_poll(self) -> None:
        if self._idle_poll is not None and self._idle_poll.active():
            self._idle_poll.cancel()
        self._idle_poll = None

    # -- any state (RFC 3501 6.1) ---------------------------------------------------

    def do_capability(self, command):
        self.send(responses.capability(self.capabilities()))
        return defer.succeed(("OK", "CAPABILITY completed", None))

    def do_noop(self, command):
        if self.view is not None:
            self._dirty = True  # RFC 3501 6.1.2: NOOP is how clients poll
        return defer.succeed(("OK", "NOOP completed", None))

    def do_logout(self, command):
        self.send(responses.bye("Logging out"))
        self.state = LOGOUT
        return defer.succeed(("OK", "LOGOUT completed", None))

    def do_id(self, command):
        # RFC 2971 3.1: answered in any state; the client's fields are only logged.
        if command.parameters:
            log.info("imap: client id {fields} rip={ip}", fields=dict(command.parameters),
                     ip=self.remote_ip)
        self.send(responses.id_response(IMPLEMENTATION))
        return defer.succeed(("OK", "ID completed", None))

    def do_compress(self, command):
        # RFC 4978 3: one COMPRESS per connection; DEFLATE only.
        if self.start_compress is None:
            return defer.succeed(("BAD", "COMPRESS is not available", None))
        if self.compressed:
            return defer.succeed(("NO", "Compression already active", "COMPRESSIONACTIVE"))
        if command.mechanism.upper() != "DEFLATE":
            return defer.succeed(("BAD", "Unknown compression mechanism", None))
        self.send(responses.tagged(command.tag, "OK", "DEFLATE active"))
        self.compressed = True
        self.start_compress(self.parser.take_buffer())
        return defer.succeed(None)

    # -- not authenticated (RFC 3501 6.2) -------------------------------------------

    def do_starttls(self, command):
        if self.start_tls is None or self.secure:
            return defer.succeed(("BAD", "STARTTLS not available", None))
        # RFC 3501 6.2.1: the tagged OK goes in the clear, then TLS starts; bytes
        # the client pipelined after STARTTLS are discarded (injection defence).
        self.send(responses.tagged(command.tag, "OK", "Begin TLS negotiation now"))
        self.parser.take_buffer()
        self.start_tls()
        self.secure = True
        return defer.succeed(None)

    @defer.inlineCallbacks
    def do_login(self, command):
        if not self._login_allowed():
            return ("NO", "Use STARTTLS first", "PRIVACYREQUIRED")
        return (yield self._authenticate(command.username, command.password))

    @defer.inlineCallbacks
    def do_authenticate(self, command):
        if command.mechanism.upper() != "PLAIN":
            return ("NO", "Unsupported mechanism", None)
        if not self._login_allowed():
            return ("NO", "Use STARTTLS first", "PRIVACYREQUIRED")
        encoded = command.initial_response
        if encoded is None:
            # RFC 3501 6.2.2: an empty challenge, then one line of base64 or "*".
            self.send(responses.continuation_data(b""))
            encoded = yield self._read_line()
            if encoded is None:
                return ("BAD", "Response too long", None)
            encoded = encoded.rstrip(b"\r\n")
            if encoded == b"*":
                return ("BAD", "Authentication cancelled", None)
        elif encoded == b"=":
            encoded = b""  # RFC 4959 3: "=" is an empty initial response
        try:
            _authzid, username, password = decode_plain(b64decode(encoded))
        except (SASLError, ValueError):
            return ("BAD", "Malformed PLAIN response", None)
        return (yield self._authenticate(username, password))

    @defer.inlineCallbacks
    def _authenticate(self, username: str, password: str):
        try:
            account = yield self.authenticator.authenticate(username, password, self.remote_ip,
                                                            protocol="imap")
        except AuthFailed:
            return ("NO", "Authentication failed", "AUTHENTICATIONFAILED")
        except Exception:
            log.failure("imap: authentication backend failed")
            return ("NO", "Temporary failure, try again", "UNAVAILABLE")
        if self.login_gate is not None:
            release = self.login_gate(account)
            if release is None:
                return ("NO", "Too many connections for this user from this address", "LIMIT")
            self._release_login = release
        self.account = account
        self.state = AUTHENTICATED
        self.parser.authenticated = True
        self.store.subscribe(account.id, self._on_change)
        # RFC 3501 7.1: capabilities change after login; say so in the OK.
        return ("OK", "Logged in", "CAPABILITY " + " ".join(self.capabilities()))

    # -- authenticated (RFC 3501 6.3) ------------------------------------------------

    def do_enable(self, command):
        # RFC 5161 3.1: ENABLE lists what it turned on now; unknown names are ignored.
        newly = [name for name in command.capabilities
                 if name in ENABLEABLE and name not in self.enabled]
        for name in newly:
            self.enabled.add(name)
        if "QRESYNC" in newly and "CONDSTORE" not in self.enabled:
            self.enabled.add("CONDSTORE")  # RFC 7162 3.2.3: QRESYNC implies CONDSTORE
        if self.enabled & ENABLEABLE:
            self._enable_condstore()
        self.send(responses.enabled(newly))
        return defer.succeed(("OK", "ENABLE completed", None))

    def _enable_condstore(self) -> None:
        """RFC 7162 3.1: the first CONDSTORE-enabling command in a selected
        mailbox is answered with its HIGHESTMODSEQ."""
        if self.condstore:
            return
        self.condstore = True
        if self.view is not None:
            self.send(responses.untagged_status("OK", "Highest", "HIGHESTMODSEQ %d"
                                                % self.view.highest_modseq))

    def do_namespace(self, command):
        self.send(responses.namespace_response())  # RFC 2342 5: one personal namespace
        return defer.succeed(("OK", "NAMESPACE completed", None))

    @defer.inlineCallbacks
    def do_idle(self, command):
        """RFC 2177: updates flow while the client waits, until it sends DONE."""
        self.send(responses.continuation("idling"))
        self.idling = True
        self._start_idle_poll()
        try:
            self._dirty = True
            self._sync_now()
            line = yield self._read_line()
        finally:
            self.idling = False
            self._stop_idle_poll()
        if self._syncing is not None:
            yield self._syncing
        if line is None or line.rstrip(b"\r\n").upper() != b"DONE":
            return ("BAD", "Expected DONE", None)
        return ("OK", "IDLE terminated", None)
