"""The IMAP4rev1 session (RFC 3501): state machine and commands over the store.

IMAPSession.handle(command) runs one parsed command and returns a Deferred
that fires when its tagged answer has been sent through `send(bytes)`. The
server (server.py) runs one command at a time, so untagged updates from
other sessions are only sent between commands (RFC 3501 5.2, 7.4.1).
"""

from __future__ import annotations


from twisted.internet import defer
from twisted.logger import Logger

from ..auth import AuthFailed
from ..auth.sasl import SASLError, b64decode, decode_plain
from ..mime.imapsection import IMAPMessage
from ..store.api import SYSTEM_FLAGS, NoSuchMailbox, StoreError
from . import commands, mutf7, responses
from .fetch import FetchAtt
from .mailbox_view import MailboxView

log = Logger(namespace="mailserverd.imap")

NOT_AUTHENTICATED, AUTHENTICATED, SELECTED, LOGOUT = "not-authenticated", "authenticated", "selected", "logout"
INBOX = "INBOX"
PERMANENT_FLAGS = SYSTEM_FLAGS + ("\\*",)
# Commands whose completion must not carry EXPUNGE (RFC 3501 7.4.1).
NO_EXPUNGE_COMMANDS = frozenset({"FETCH", "STORE", "SEARCH"})
ANY_STATE = frozenset({"CAPABILITY", "NOOP", "LOGOUT"})
NOT_AUTH_ONLY = frozenset({"LOGIN", "AUTHENTICATE", "STARTTLS"})
SELECTED_ONLY = frozenset({"CHECK", "CLOSE", "EXPUNGE", "FETCH", "STORE"})


class IMAPSession:
    """One client's session. `send` writes bytes; `start_tls` switches the transport
    to TLS (None when STARTTLS is not offered); plaintext_ok says whether LOGIN
    may be used on this connection before TLS."""

    def __init__(self, send, store, authenticator, remote_ip: str, parser,
                 start_tls=None, secure: bool = False, plaintext_ok: bool = False):
        self.send = send
        self.store = store
        self.authenticator = authenticator
        self.remote_ip = remote_ip
        self.parser = parser
        self.start_tls = start_tls
        self.secure = secure
        self.plaintext_ok = plaintext_ok
        self.state = NOT_AUTHENTICATED
        self.account = None
        self.view: MailboxView | None = None

    # -- capabilities -----------------------------------------------------------

    def _login_allowed(self) -> bool:
        return self.secure or self.plaintext_ok

    def capabilities(self) -> list[str]:
        names = ["IMAP4rev1"]
        if self.state == NOT_AUTHENTICATED:
            if self.start_tls is not None and not self.secure:
                names.append("STARTTLS")
            # AUTH=PLAIN is not advertised: AUTHENTICATE accepts only a SASL-IR
            # initial response, and the continuation exchange is not built.
            if not self._login_allowed():
                names.append("LOGINDISABLED")  # RFC 3501 6.2.3
        return names

    def greeting(self) -> bytes:
        return responses.untagged_status("OK", "mailserverd IMAP4rev1 ready",
                                         "CAPABILITY " + " ".join(self.capabilities()))

    # -- dispatch -----------------------------------------------------------------

    @defer.inlineCallbacks
    def handle(self, command: commands.Command):
        name, tag = command.name, command.tag
        if name == "EXAMINE":
            name = "SELECT"
        if name not in ANY_STATE:
            if name in NOT_AUTH_ONLY and self.state != NOT_AUTHENTICATED:
                self.send(responses.tagged(tag, "BAD", "Already authenticated"))
                return
            if name not in NOT_AUTH_ONLY and self.state == NOT_AUTHENTICATED:
                self.send(responses.tagged(tag, "BAD", "Log in first"))
                return
            if name in SELECTED_ONLY and self.state != SELECTED:
                self.send(responses.tagged(tag, "BAD", "No mailbox selected"))
                return
        handler = getattr(self, "do_" + name.lower().replace(".", "_"), None)
        if handler is None:
            self.send(responses.tagged(tag, "BAD", "Command not supported"))
            return
        try:
            outcome = yield handler(command)
            if outcome is None:  # the handler sent its own tagged answer (STARTTLS)
                return
            status, text, code = outcome
        except NoSuchMailbox:
            status, text, code = "NO", "No such mailbox", "NONEXISTENT"
        except StoreError as error:
            status, text, code = "NO", str(error) or "Refused", None
        if status == "OK" and self.state == SELECTED and name != "SELECT":
            yield self.send_updates(allow_expunge=name not in NO_EXPUNGE_COMMANDS)
        self.send(responses.tagged(tag, status, text, code))

    @defer.inlineCallbacks
    def send_updates(self, allow_expunge: bool = True):
        """Untagged EXISTS / EXPUNGE / FETCH FLAGS for changes made elsewhere."""
        if self.view is None:
            return
        fresh = yield self.store.list_messages(self.account, self.view.mailbox.id)
        for line in self.view.diff(list(fresh), allow_expunge):
            self.send(line)

    # -- any state (RFC 3501 6.1) ---------------------------------------------------

    def do_capability(self, command):
        self.send(responses.capability(self.capabilities()))
        return defer.succeed(("OK", "CAPABILITY completed", None))

    def do_noop(self, command):
        return defer.succeed(("OK", "NOOP completed", None))

    def do_logout(self, command):
        self.send(responses.bye("Logging out"))
        self.state = LOGOUT
        return defer.succeed(("OK", "LOGOUT completed", None))

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
        if command.initial_response is None:
            return ("NO", "Send the PLAIN response with the command (SASL-IR)", None)
        encoded = b"" if command.initial_response == b"=" else command.initial_response
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
        self.account = account
        self.state = AUTHENTICATED
        self.parser.authenticated = True
        return ("OK", "Logged in", None)

    # -- authenticated (RFC 3501 6.3) ----------------------------------------------

    @defer.inlineCallbacks
    def do_select(self, command):
        self.view = None
        self.state = AUTHENTICATED
        mailbox = yield self.store.get_mailbox(self.account, command.mailbox)
        refs = yield self.store.list_messages(self.account, mailbox.id)
        view = MailboxView(mailbox, refs, read_only=command.read_only)
        self.send(responses.flags_response(SYSTEM_FLAGS))
        self.send(responses.exists(view.exists))
        self.send(responses.recent(0))
        unseen = [number for number, ref in enumerate(view.refs, 1) if "\\Seen" not in ref.flags]
        if unseen:
            self.send(responses.untagged_status("OK", "First unseen", "UNSEEN %d" % unseen[0]))
        self.send(responses.untagged_status("OK", "UIDs valid", "UIDVALIDITY %d" % mailbox.uidvalidity))
        uidnext = max([mailbox.uidnext] + [uid + 1 for uid in view.uids()])
        self.send(responses.untagged_status("OK", "Predicted next UID", "UIDNEXT %d" % uidnext))
        permanent = () if command.read_only else PERMANENT_FLAGS
        self.send(responses.untagged_status("OK", "Limited", "PERMANENTFLAGS " + responses.flags(
            permanent).decode("ascii")))
        self.view = view
        self.state = SELECTED
        code = "READ-ONLY" if command.read_only else "READ-WRITE"
        return ("OK", "EXAMINE completed" if command.read_only else "SELECT completed", code)

    @defer.inlineCallbacks
    def do_list(self, command):
        if command.extended:
            return ("BAD", "LIST-EXTENDED is not supported", None)
        yield self._list("LIST", command.reference, command.patterns, subscribed_only=False)
        return ("OK", "LIST completed", None)

    @defer.inlineCallbacks
    def do_lsub(self, command):
        yield self._list("LSUB", command.reference, (command.pattern,), subscribed_only=True)
        return ("OK", "LSUB completed", None)

    @defer.inlineCallbacks
    def _list(self, verb, reference, patterns, subscribed_only):
        # RFC 3501 6.3.8: an empty pattern asks for the delimiter and root.
        if list(patterns) == [""]:
            self.send(responses.list_response(["\\Noselect"], "", command=verb))
            return
        mailboxes = yield self.store.list_mailboxes(self.account)
        names = {mailbox.name for mailbox in mailboxes}
        for mailbox in sorted(mailboxes, key=lambda box: (box.name != INBOX, box.name)):
            if subscribed_only and not mailbox.subscribed:
                continue
            if not any(list_matches(reference + pattern, mailbox.name) for pattern in patterns):
                continue
            attributes = []
            prefix = mailbox.name + mutf7.HIERARCHY_SEPARATOR
            if verb == "LIST":
                has_children = any(other.startswith(prefix) for other in names)
                attributes.append("\\HasChildren" if has_children else "\\HasNoChildren")
                if mailbox.special_use:
                    attributes.append(mailbox.special_use)  # RFC 6154 2
            self.send(responses.list_response(attributes, mailbox.name, self.parser.utf8, command=verb))

    @defer.inlineCallbacks
    def do_status(self, command):
        mailbox = yield self.store.get_mailbox(self.account, command.mailbox)
        values = {"MESSAGES": mailbox.exists, "RECENT": 0, "UIDNEXT": mailbox.uidnext,
                  "UIDVALIDITY": mailbox.uidvalidity, "UNSEEN": mailbox.unseen}
        items = {}
        for item in command.items:
            if item not in values:
                return ("BAD", "Unknown STATUS item " + item, None)
            items[item] = values[item]
        self.send(responses.status_response(mailbox.name, items, self.parser.utf8))
        return ("OK", "STATUS completed", None)

    @defer.inlineCallbacks
    def do_append(self, command):
        flags = [flag for flag in command.flags if flag != "\\Recent"]
        when = command.internal_date.timestamp() if command.internal_date else None
        try:
            yield self.store.get_mailbox(self.account, command.mailbox)
        except NoSuchMailbox:
            return ("NO", "No such mailbox", "TRYCREATE")  # RFC 3501 6.3.11
        yield self.store.append(self.account, command.mailbox, command.message, flags, when)
        return ("OK", "APPEND completed", None)

    # -- selected (RFC 3501 6.4) -----------------------------------------------------

    def do_check(self, command):
        return defer.succeed(("OK", "CHECK completed", None))

    @defer.inlineCallbacks
    def do_close(self, command):
        view = self.view
        if not view.read_only:
            deleted = [ref.uid for ref in view.refs if "\\Deleted" in ref.flags]
            if deleted:
                yield self.store.expunge(self.account, view.mailbox.id, deleted)
        self.view = None
        self.state = AUTHENTICATED
        return ("OK", "CLOSE completed", None)

    @defer.inlineCallbacks
    def do_expunge(self, command):
        view = self.view
        if view.read_only:
            return ("NO", "Mailbox is read-only", "READ-ONLY")
        fresh = yield self.store.list_messages(self.account, view.mailbox.id)
        deleted = [ref.uid for ref in fresh if "\\Deleted" in ref.flags]
        if deleted:
            yield self.store.expunge(self.account, view.mailbox.id, deleted)
        return ("OK", "EXPUNGE completed", None)

    def _targets(self, command):
        if command.uid:
            return self.view.by_uid(command.sequence)
        return self.view.by_sequence(command.sequence)

    def _bad_sequence(self, command) -> bool:
        """RFC 3501 6.4.5: a message sequence number beyond EXISTS is an error."""
        if command.uid:
            return False
        for start, end in command.sequence.resolve(max(self.view.exists, 1)):
            if max(start, end) > self.view.exists:
                return True
        return False

    @defer.inlineCallbacks
    def do_fetch(self, command):
        if self._bad_sequence(command):
            return ("BAD", "Invalid message sequence number", None)
        view = self.view
        items = list(command.items)
        if command.uid and not any(item.name == "UID" for item in items):
            items.insert(0, _UID_ITEM)  # RFC 3501 6.4.8
        sets_seen = not view.read_only and any(item.sets_seen for item in items)
        needs_message = any(item.name not in ("FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE")
                            for item in items)
        for number, ref in self._targets(command):
            message = None
            if needs_message or any(item.name == "RFC822.SIZE" for item in items):
                raw = yield self.store.read_message(self.account, ref.message_id)
                message = IMAPMessage(raw)
            if sets_seen and "\\Seen" not in ref.flags:
                changed = yield self.store.store_flags(self.account, view.mailbox.id, [ref.uid],
                                                       ["\\Seen"], "add")
                for new_ref in changed:
                    view.replace(new_ref)
                    ref = new_ref
                if not any(item.name == "FLAGS" for item in items):
                    items_out = fetch_values(items, ref, message) + [("FLAGS", _flag_atoms(ref))]
                    self.send(responses.fetch_response(number, items_out))
                    continue
            self.send(responses.fetch_response(number, fetch_values(items, ref, message)))
        return ("OK", "FETCH completed", None)

    @defer.inlineCallbacks
    def do_store(self, command):
        if self._bad_sequence(command):
            return ("BAD", "Invalid message sequence number", None)
        view = self.view
        if view.read_only:
            return ("NO", "Mailbox is read-only", "READ-ONLY")
        targets = self._targets(command)
        flags = [flag for flag in command.flags if flag != "\\Recent"]
        if targets:
            changed = yield self.store.store_flags(self.account, view.mailbox.id,
                                                   [ref.uid for _, ref in targets], flags, command.mode)
            for ref in changed:
                view.replace(ref)
        if not command.silent:
            numbers = {ref.uid: number for number, ref in enumerate(view.refs, 1)}
            for _, old in targets:
                number = numbers.get(old.uid)
                if number is None:
                    continue
                ref = view.refs[number - 1]
                items = [("FLAGS", _flag_atoms(ref))]
                if command.uid:
                    items.insert(0, ("UID", ref.uid))
                self.send(responses.fetch_response(number, items))
        return ("OK", "STORE completed", None)

def _flag_atoms(ref) -> list:
    return [responses.Atom(flag) for flag in sorted(ref.flags)]


def list_matches(pattern: str, name: str) -> bool:
    """RFC 3501 6.3.8: "*" matches anything, "%" anything but the delimiter;
    INBOX matches case-insensitively."""
    if name == INBOX:
        pattern = pattern if not pattern.upper().startswith(INBOX) else INBOX + pattern[len(INBOX):]
    return _match(pattern, 0, name, 0)


def _match(pattern: str, p: int, name: str, n: int) -> bool:
    # Dynamic programming, O(len(pattern) * len(name)): no backtracking blow-up.
    table = [[False] * (len(name) + 1) for _ in range(len(pattern) + 1)]
    table[len(pattern)][len(name)] = True
    for i in range(len(pattern) - 1, -1, -1):
        char = pattern[i]
        for j in range(len(name), -1, -1):
            if char == "*":
                table[i][j] = table[i + 1][j] or (j < len(name) and table[i][j + 1])
            elif char == "%":
                table[i][j] = table[i + 1][j] or (j < len(name) and name[j] != "/" and table[i][j + 1])
            else:
                table[i][j] = j < len(name) and name[j] == char and table[i + 1][j + 1]
    return table[p][n]


def fetch_values(items, ref, message) -> list:
    """(label, value) pairs for one message (RFC 3501 7.4.2)."""
    out = []
    for item in items:
        name = item.name
        if name == "FLAGS":
            out.append((item, _flag_atoms(ref)))
        elif name == "UID":
            out.append((item, ref.uid))
        elif name == "INTERNALDATE":
            out.append((item, responses.Raw(responses.internal_date(ref.received_at))))
        elif name == "RFC822.SIZE":
            out.append((item, message.size))
        elif name == "ENVELOPE":
            out.append((item, responses.Raw(message.envelope())))
        elif name == "BODYSTRUCTURE":
            out.append((item, responses.Raw(message.bodystructure(True))))
        elif name == "BODY" and item.section is None:
            out.append((item, responses.Raw(message.bodystructure(False))))
        elif name == "BODY":
            section = item.section
            data = message.section(section.part, section.text, section.fields, item.partial)
            out.append((item, responses.LiteralString(data)))
        elif name == "RFC822":
            out.append((item, responses.LiteralString(message.section())))
        elif name == "RFC822.HEADER":
            out.append((item, responses.LiteralString(message.section((), "HEADER"))))
        elif name == "RFC822.TEXT":
            out.append((item, responses.LiteralString(message.section((), "TEXT"))))
        elif name == "BINARY.SIZE":
            out.append((item, message.binary_size(item.section.part)))
        elif name == "BINARY":
            data = message.binary(item.section.part, item.partial)
            out.append((item, None if data is None else responses.Literal8(data)))
    return out


_UID_ITEM = FetchAtt("UID")
