"""IMAP commands on mailboxes (RFC 3501 6.3, RFC 5258, RFC 5819, RFC 6154,
RFC 7162, RFC 9208): SELECT/EXAMINE, CREATE, DELETE, RENAME, (UN)SUBSCRIBE,
LIST, LSUB, STATUS, APPEND, quota, CLOSE/UNSELECT. A mixin of IMAPSession."""

from __future__ import annotations

from twisted.internet import defer

from ..mime.imapheader import canonical
from ..store.api import SPECIAL_USE, SYSTEM_FLAGS, MailboxExists, NoSuchMailbox
from . import responses
from .mailbox_view import MailboxView, recent_key
from .mutf7 import HIERARCHY_SEPARATOR

INBOX = "INBOX"
PERMANENT_FLAGS = SYSTEM_FLAGS + ("\\*",)
STATUS_ITEMS = frozenset({"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN",
                          "HIGHESTMODSEQ", "APPENDLIMIT"})
CREATABLE_USES = frozenset(SPECIAL_USE.values())


class MailboxCommands:
    # -- SELECT / EXAMINE (RFC 3501 6.3.1, RFC 7162 3.1.8 and 3.2.5) -----------------

    @defer.inlineCallbacks
    def do_select(self, command):
        had_mailbox = self.view is not None
        self.view = None
        self.state = "authenticated"
        if had_mailbox and "QRESYNC" in self.enabled:
            self.send(responses.untagged_status("OK", "Previous mailbox closed", "CLOSED"))
        if command.qresync is not None and "QRESYNC" not in self.enabled:
            return ("BAD", "QRESYNC must be enabled first", None)  # RFC 7162 3.2.5
        if command.condstore:
            self.condstore = True
        mailbox = yield self.store.get_mailbox(self.account, command.mailbox)
        refs = yield self.store.list_messages(self.account, mailbox.id)
        view = MailboxView(mailbox, refs, read_only=command.read_only,
                           recent_registry=self.recent_registry)
        self.send(responses.flags_response(SYSTEM_FLAGS + tuple(view.keywords)))
        self.send(responses.exists(view.exists))
        self.send(responses.recent(len(view.recent)))
        unseen = next((n for n, ref in enumerate(view.refs, 1) if "\\Seen" not in ref.flags), None)
        if unseen:
            self.send(responses.untagged_status("OK", "First unseen", "UNSEEN %d" % unseen))
        self.send(responses.untagged_status("OK", "UIDs valid", "UIDVALIDITY %d" % mailbox.uidvalidity))
        uidnext = max(mailbox.uidnext, view.largest_uid + 1)
        self.send(responses.untagged_status("OK", "Predicted next UID", "UIDNEXT %d" % uidnext))
        permanent = () if command.read_only else PERMANENT_FLAGS
        self.send(responses.untagged_status("OK", "Limited", "PERMANENTFLAGS " + responses.flags(
            permanent).decode("ascii")))
        # RFC 7162 3.1.2.1: every SELECT reports HIGHESTMODSEQ.
        self.send(responses.untagged_status("OK", "Highest", "HIGHESTMODSEQ %d" % view.highest_modseq))
        self.view = view
        self.state = "selected"
        self._dirty = False
        self._last_sync = self.clock.seconds()
        if command.qresync is not None and command.qresync.uidvalidity == mailbox.uidvalidity:
            yield self._qresync(view, command.qresync)
        code = "READ-ONLY" if command.read_only else "READ-WRITE"
        return ("OK", "EXAMINE completed" if command.read_only else "SELECT completed", code)

    @defer.inlineCallbacks
    def _qresync(self, view, params):
        """RFC 7162 3.2.5.2: VANISHED (EARLIER) and FETCH for what changed since modseq."""
        _highest, changed, vanished = yield self.store.mailbox_changes(
            self.account, view.mailbox.id, params.modseq)
        known = params.known_uids
        if known is not None:
            vanished = list(known.select(sorted(vanished), view.largest_uid or None))
        present = set(view.uids())
        vanished = [uid for uid in vanished if uid not in present]
        if vanished:
            self.send(responses.vanished(vanished, earlier=True))
        for ref in changed:
            number = view.number_of(ref.uid)
            if number is None:
                continue
            self.send(responses.fetch_response(number, [
                ("UID", ref.uid), ("FLAGS", view.flags_of(view.refs[number - 1])),
                ("MODSEQ", [view.refs[number - 1].modseq])]))

    def _close_view(self):
        self.view = None
        self.state = "authenticated"

    @defer.inlineCallbacks
    def do_close(self, command):
        view = self.view
        self._close_view()
        if not view.read_only:
            # RFC 3501 6.4.2: silently expunge \Deleted messages; no untagged EXPUNGE.
            fresh = yield self.store.list_messages(self.account, view.mailbox.id)
            deleted = [ref.uid for ref in fresh if "\\Deleted" in ref.flags]
            if deleted:
                yield self.store.expunge(self.account, view.mailbox.id, deleted)
        return ("OK", "CLOSE completed", None)

    def do_unselect(self, command):
        self._close_view()  # RFC 3691: like CLOSE without the expunge
        return defer.succeed(("OK", "UNSELECT completed", None))

    def do_check(self, command):
        self._dirty = True
        return defer.succeed(("OK", "CHECK completed", None))

    # -- CREATE / DELETE / RENAME / SUBSCRIBE (RFC 3501 6.3.3-6.3.7) -----------------

    @defer.inlineCallbacks
    def do_create(self, command):
        name = command.mailbox
        if name == INBOX:
            return ("NO", "INBOX always exists", "ALREADYEXISTS")
        special_use = None
        if command.special_use:
            # RFC 6154 5.1: one attribute per mailbox here; others get USEATTR.
            if len(command.special_use) > 1 or command.special_use[0] not in CREATABLE_USES:
                return ("NO", "Unsupported special-use attribute", "USEATTR")
            special_use = command.special_use[0]
        try:
            yield self.store.create_mailbox(self.account, name, special_use)
        except MailboxExists:
            return ("NO", "Mailbox already exists", "ALREADYEXISTS")
        # RFC 3501 6.3.3: the server SHOULD create the superior names needed.
        levels = name.split(HIERARCHY_SEPARATOR)
        for depth in range(1, len(levels)):
            try:
                yield self.store.create_mailbox(self.account, HIERARCHY_SEPARATOR.join(levels[:depth]))
            except MailboxExists:
                pass
        return ("OK", "CREATE completed", None)

    @defer.inlineCallbacks
    def do_delete(self, command):
        if command.mailbox == INBOX:
            return ("NO", "INBOX cannot be deleted", "CANNOT")
        if self.view is not None and self.view.mailbox.name == command.mailbox:
            self._close_view()  # its messages are gone; nothing left to show
        yield self.store.delete_mailbox(self.account, command.mailbox)
        return ("OK", "DELETE completed", None)

    @defer.inlineCallbacks
    def do_rename(self, command):
        if command.new == INBOX:
            return ("NO", "INBOX already exists", "ALREADYEXISTS")
        if command.old == command.new:
            return ("NO", "Names are the same", "ALREADYEXISTS")
        if command.new.startswith(command.old + HIERARCHY_SEPARATOR):
            return ("NO", "Cannot rename a mailbox into itself", "CANNOT")
        try:
            yield self.store.rename_mailbox(self.account, command.old, command.new)
        except MailboxExists:
            return ("NO", "Target mailbox already exists", "ALREADYEXISTS")
        return ("OK", "RENAME completed", None)

    @defer.inlineCallbacks
    def do_subscribe(self, command):
        yield self.store.set_subscribed(self.account, command.mailbox, True)
        return ("OK", "SUBSCRIBE completed", None)

    @defer.inlineCallbacks
    def do_unsubscribe(self, command):
        yield self.store.set_subscribed(self.account, command.mailbox, False)
        return ("OK", "UNSUBSCRIBE completed", None)

    # -- LIST / LSUB (RFC 3501 6.3.8-6.3.9, RFC 5258, RFC 5819, RFC 6154) ------------

    @defer.inlineCallbacks
    def do_list(self, command):
        patterns = [command.reference + pattern for pattern in command.patterns]
        if not command.extended and list(command.patterns) == [""]:
            # RFC 3501 6.3.8: an empty pattern asks for the delimiter and root.
            self.send(responses.list_response(["\\Noselect"], "", command="LIST"))
            return ("OK", "LIST completed", None)
        mailboxes = yield self.store.list_mailboxes(self.account)
        selection, returns = command.selection, command.returns
        subscribed = set()
        if "SUBSCRIBED" in selection or "SUBSCRIBED" in returns:
            subscribed = set((yield self.store.list_subscriptions(self.account)))
        for name, box, attributes, child_info in _listing(
                mailboxes, patterns, subscribed, "SUBSCRIBED" in selection,
                "RECURSIVEMATCH" in selection, command.extended):
            if "SPECIAL-USE" in selection and (box is None or not box.special_use):
                continue
            extended = [("CHILDINFO", ("SUBSCRIBED",))] if child_info else []
            self.send(responses.list_response(attributes, name, self.parser.utf8, extended=extended))
            if "STATUS" in returns and box is not None:
                # RFC 5819 2: STATUS follows the LIST line of each selectable mailbox.
                yield self._send_status(box, command.status_items)
        return ("OK", "LIST completed", None)

    @defer.inlineCallbacks
    def do_lsub(self, command):
        pattern = command.reference + command.pattern
        if command.pattern == "":
            self.send(responses.list_response(["\\Noselect"], "", command="LSUB"))
            return ("OK", "LSUB completed", None)
        subscribed = set((yield self.store.list_subscriptions(self.account)))
        for name in sorted(_with_parents(subscribed), key=_inbox_first):
            if not list_matches(pattern, name):
                continue
            if name in subscribed:
                self.send(responses.list_response([], name, self.parser.utf8, command="LSUB"))
            elif "%" in pattern:
                # RFC 3501 6.3.9: an unsubscribed parent of a match under "%" is \Noselect.
                self.send(responses.list_response(["\\Noselect"], name, self.parser.utf8,
                                                  command="LSUB"))
        return ("OK", "LSUB completed", None)

    # -- STATUS (RFC 3501 6.3.10, RFC 7162 3.1.6, RFC 7889 3) ------------------------

    @defer.inlineCallbacks
    def do_status(self, command):
        unknown = [item for item in command.items if item not in STATUS_ITEMS]
        if unknown:
            return ("BAD", "Unknown STATUS item " + unknown[0], None)
        mailbox = yield self.store.get_mailbox(self.account, command.mailbox)
        yield self._send_status(mailbox, command.items)
        return ("OK", "STATUS completed", None)

    @defer.inlineCallbacks
    def _send_status(self, mailbox, items):
        if "HIGHESTMODSEQ" in items:
            self._enable_condstore()
        recent = 0
        if "RECENT" in items:
            refs = yield self.store.list_messages(self.account, mailbox.id)
            recent = self.recent_registry.count_unclaimed(recent_key(mailbox), [ref.uid for ref in refs])
        values = {"MESSAGES": mailbox.exists, "RECENT": recent, "UIDNEXT": mailbox.uidnext,
                  "UIDVALIDITY": mailbox.uidvalidity, "UNSEEN": mailbox.unseen,
                  "HIGHESTMODSEQ": mailbox.highestmodseq, "APPENDLIMIT": self.max_message_size}
        self.send(responses.status_response(mailbox.name, {item: values[item] for item in items},
                                            self.parser.utf8))

    # -- APPEND (RFC 3501 6.3.11, RFC 4315 3) ----------------------------------------

    @defer.inlineCallbacks
    def do_append(self, command):
        if not command.message:
            return ("NO", "Empty message", None)
        if command.binary and b"\x00" in command.message:
            return ("NO", "NUL octets are not stored", "UNKNOWN-CTE")
        flags = [flag for flag in command.flags if flag != "\\Recent"]
        when = command.internal_date.timestamp() if command.internal_date else None
        try:
            mailbox = yield self.store.get_mailbox(self.account, command.mailbox)
        except NoSuchMailbox:
            return ("NO", "No such mailbox", "TRYCREATE")  # RFC 3501 6.3.11
        # Stored with CRLF line ends so RFC822.SIZE and BODY[] agree (RFC 3501 2.3.4).
        message = canonical(command.message)
        ref = yield self.store.append(self.account, command.mailbox, message, flags, when)
        self._dirty = True  # the store's notification comes after this resumes
        return ("OK", "APPEND completed", "APPENDUID %d %d" % (mailbox.uidvalidity, ref.uid))

    # -- QUOTA (RFC 9208) -------------------------------------------------------------

    @defer.inlineCallbacks
    def _quota_resources(self):
        used = yield self.store.usage(self.account)
        # STORAGE is counted in units of 1024 octets (RFC 9208 5.1).
        return {"STORAGE": ((used + 1023) // 1024, self.account.quota // 1024)}

    @defer.inlineCallbacks
    def do_getquotaroot(self, command):
        yield self.store.get_mailbox(self.account, command.mailbox)
        roots = [""] if self.account.quota else []
        self.send(responses.quotaroot_response(command.mailbox, roots, self.parser.utf8))
        if roots:
            self.send(responses.quota_response("", (yield self._quota_resources())))
        return ("OK", "GETQUOTAROOT completed", None)

    @defer.inlineCallbacks
    def do_getquota(self, command):
        if command.root != "" or not self.account.quota:
            return ("NO", "No such quota root", "NONEXISTENT")
        self.send(responses.quota_response("", (yield self._quota_resources())))
        return ("OK", "GETQUOTA completed", None)


def _inbox_first(name: str):
    return (name != INBOX, name)


def _with_parents(names) -> set:
    """The names plus every superior level of each ("a/b/c" -> "a", "a/b")."""
    out = set(names)
    for name in names:
        levels = name.split(HIERARCHY_SEPARATOR)
        for depth in range(1, len(levels)):
            out.add(HIERARCHY_SEPARATOR.join(levels[:depth]))
    return out


def _listing(mailboxes, patterns, subscribed: set, subscribed_only: bool, recursive_match: bool,
             extended: bool):
    """(name, mailbox or None, attributes, childinfo) for each LIST answer line.

    A name that is only an implied parent ("a" of "a/b") is listed when a
    pattern without "*" matches it, since "%" must show the hierarchy (RFC
    3501 6.3.8): as \\NonExistent for LIST-EXTENDED (RFC 5258 3.4), else \\Noselect.
    With (SUBSCRIBED RECURSIVEMATCH) a parent is listed with CHILDINFO when a
    subscribed descendant is not itself matched (RFC 5258 3.5).
    """
    by_name = {box.name: box for box in mailboxes}
    names = _with_parents(set(by_name) | subscribed)
    parents = {name.rpartition(HIERARCHY_SEPARATOR)[0] for name in _with_parents(set(by_name))}
    for name in sorted(names, key=_inbox_first):
        matching = [pattern for pattern in patterns if list_matches(pattern, name)]
        if not matching:
            continue
        box = by_name.get(name)
        child_info = False
        if subscribed_only:
            if name not in subscribed:
                prefix = name + HIERARCHY_SEPARATOR
                if not (recursive_match and any(
                        other.startswith(prefix) and not any(list_matches(p, other) for p in patterns)
                        for other in subscribed)):
                    continue
                child_info = True
        elif box is None and all("*" in pattern for pattern in matching):
            continue
        attributes = []
        if box is None:
            attributes.append("\\NonExistent" if extended else "\\Noselect")
        attributes.append("\\HasChildren" if name in parents else "\\HasNoChildren")
        if box is not None and box.special_use:
            attributes.append(box.special_use)  # RFC 6154 2
        if name in subscribed:
            attributes.append("\\Subscribed")
        yield name, box, attributes, child_info


def list_matches(pattern: str, name: str) -> bool:
    """RFC 3501 6.3.8: "*" matches anything, "%" anything but the delimiter;
    INBOX matches case-insensitively."""
    head, sep, tail = pattern.partition(HIERARCHY_SEPARATOR)
    if head.upper() == INBOX:
        pattern = INBOX + sep + tail
    return _match(pattern, name)


def _match(pattern: str, name: str) -> bool:
    # Dynamic programming, O(len(pattern) * len(name)): no backtracking blow-up.
    row = [False] * (len(name) + 1)
    row[len(name)] = True
    for i in range(len(pattern) - 1, -1, -1):
        char = pattern[i]
        new = [False] * (len(name) + 1)
        for j in range(len(name), -1, -1):
            if char == "*":
                new[j] = row[j] or (j < len(name) and new[j + 1])
            elif char == "%":
                new[j] = row[j] or (j < len(name) and name[j] != HIERARCHY_SEPARATOR and new[j + 1])
            else:
                new[j] = j < len(name) and name[j] == char and row[j + 1]
        row = new
    return row[0]
