"""An in-memory account store and a driver for IMAPSession unit tests."""

from __future__ import annotations

from twisted.internet import defer, task

from mailserverd.auth import AuthFailed
from mailserverd.imap.mailbox_view import RecentRegistry
from mailserverd.imap.parser import ClientLine, CommandParser, CommandReady, ContinuationNeeded
from mailserverd.imap.session import IMAPSession
from mailserverd.store.api import (Account, CopyResult, Mailbox, MailboxExists, MessageRef,
                                   NoSuchMailbox)

ALICE = Account(id=1, address="alice@example.test", shard=0)
MESSAGE = (b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\n"
           b"Subject: hello\r\n\r\nbody text\r\n")


class MemoryAuthenticator:
    def authenticate(self, username, password, remote_ip, protocol=""):
        if (username, password) == (ALICE.address, "secret"):
            return defer.succeed(ALICE)
        return defer.fail(AuthFailed())


class MemoryStore:
    """An account's mailboxes in memory, with the AsyncStore methods the session calls.

    INBOX starts with two messages (uid 1 unseen, uid 2 \\Seen); Sent is empty
    and unsubscribed. Every change takes a new modseq, as the real store does.
    """

    def __init__(self):
        self.modseq = 1
        self.next_id = 1
        self.boxes = {}  # name -> dict(id, uidvalidity, uidnext, subscribed, special_use, msgs)
        self.bodies = {}  # message id -> bytes
        self.subscribers = set()
        self.appended = []
        self.vanished = []  # (mailbox id, uid, modseq) of removed memberships
        self._box("INBOX", None, 7)
        self._box("Sent", "\\Sent", 8, subscribed=False)
        self.add("INBOX", MESSAGE)
        self.add("INBOX", MESSAGE, {"\\Seen"})

    @property
    def messages(self):
        """INBOX as uid -> (body, flags)."""
        return {uid: (self.bodies[m["id"]], m["flags"]) for uid, m in self.boxes["INBOX"]["msgs"].items()}

    def _box(self, name, special_use, uidvalidity, subscribed=True):
        self.boxes[name] = dict(id=len(self.boxes) + 10, uidvalidity=uidvalidity, uidnext=1,
                                subscribed=subscribed, special_use=special_use, msgs={})

    def _bump(self):
        self.modseq += 1
        for callback in list(self.subscribers):
            callback(1)
        return self.modseq

    def add(self, name, body, flags=(), notify=False):
        box = self.boxes[name]
        uid = box["uidnext"]
        box["uidnext"] += 1
        self.bodies[self.next_id] = body
        self.modseq += 1
        box["msgs"][uid] = dict(id=self.next_id, flags=frozenset(flags), modseq=self.modseq)
        self.next_id += 1
        if notify:
            for callback in list(self.subscribers):
                callback(1)
        return uid

    def remove(self, name, uid):
        del self.boxes[name]["msgs"][uid]
        self.modseq += 1
        self.vanished.append((self.boxes[name]["id"], uid, self.modseq))

    def _by_id(self, mailbox_id):
        for name, box in self.boxes.items():
            if box["id"] == mailbox_id:
                return name, box
        raise NoSuchMailbox(str(mailbox_id))

    def _ref(self, box, uid):
        m = box["msgs"][uid]
        return MessageRef(box["id"], uid, m["id"], len(self.bodies[m["id"]]), m["flags"], m["modseq"], 0.0)

    def _mailbox(self, name):
        if name not in self.boxes:
            raise NoSuchMailbox(name)
        box = self.boxes[name]
        unseen = sum(1 for m in box["msgs"].values() if "\\Seen" not in m["flags"])
        return Mailbox(box["id"], name, box["special_use"], box["uidvalidity"], box["uidnext"],
                       box["subscribed"], highestmodseq=self.modseq, exists=len(box["msgs"]),
                       unseen=unseen)

    def _call(self, fn, *args):
        try:
            return defer.succeed(fn(*args))
        except Exception as error:
            return defer.fail(error)

    def subscribe(self, account_id, callback):
        self.subscribers.add(callback)

    def unsubscribe(self, account_id, callback):
        self.subscribers.discard(callback)

    def get_mailbox(self, account, name):
        return self._call(self._mailbox, name)

    def list_mailboxes(self, account):
        return defer.succeed([self._mailbox(name) for name in sorted(self.boxes)])

    def list_messages(self, account, mailbox_id):
        _, box = self._by_id(mailbox_id)
        return defer.succeed([self._ref(box, uid) for uid in sorted(box["msgs"])])

    def read_messages(self, account, message_ids):
        return defer.succeed({mid: self.bodies[mid] for mid in message_ids})

    def message_structures(self, account, message_ids):
        """As the store: ENVELOPE/BODYSTRUCTURE as delivery computes them; ids in
        self.unstructured are left out, like mail stored before those columns."""
        from mailserverd.store.mail import Delivery, message_structure
        return defer.succeed({mid: message_structure(Delivery(self.bodies[mid], []))
                              for mid in message_ids
                              if mid in self.bodies and mid not in getattr(self, "unstructured", ())})

    def store_flags(self, account, mailbox_id, uids, flags, mode):
        _, box = self._by_id(mailbox_id)
        out = []
        for uid in uids:
            m = box["msgs"][uid]
            old = m["flags"]
            new = {"add": old | set(flags), "remove": old - set(flags), "replace": frozenset(flags)}[mode]
            if new != old:
                m["flags"] = frozenset(new)
                m["modseq"] = self._bump()
                out.append(self._ref(box, uid))
        return defer.succeed(out)

    def expunge(self, account, mailbox_id, uids):
        _, box = self._by_id(mailbox_id)
        gone = [uid for uid in uids if box["msgs"].pop(uid, None) is not None]
        modseq = self._bump()
        self.vanished.extend((mailbox_id, uid, modseq) for uid in gone)
        return defer.succeed(gone)

    def append(self, account, mailbox_name, body, flags=(), received_at=None):
        self.appended.append((mailbox_name, body, tuple(flags)))
        uid = self.add(mailbox_name, body, flags, notify=True)
        return defer.succeed(self._ref(self.boxes[mailbox_name], uid))

    def create_mailbox(self, account, name, special_use=None):
        if name in self.boxes:
            return defer.fail(MailboxExists(name))
        self._box(name, special_use, 99, subscribed=False)
        return defer.succeed(self._mailbox(name))

    def delete_mailbox(self, account, name):
        if name not in self.boxes:
            return defer.fail(NoSuchMailbox(name))
        del self.boxes[name]
        return defer.succeed(None)

    def rename_mailbox(self, account, old, new):
        if old not in self.boxes:
            return defer.fail(NoSuchMailbox(old))
        if new in self.boxes:
            return defer.fail(MailboxExists(new))
        for name in [n for n in self.boxes if n == old or n.startswith(old + "/")]:
            self.boxes[new + name[len(old):]] = self.boxes.pop(name)
        return defer.succeed(None)

    def set_subscribed(self, account, name, subscribed):
        if name not in self.boxes:
            return defer.fail(NoSuchMailbox(name)) if subscribed else defer.succeed(None)
        self.boxes[name]["subscribed"] = subscribed
        return defer.succeed(None)

    def list_subscriptions(self, account):
        return defer.succeed(sorted(name for name, box in self.boxes.items() if box["subscribed"]))

    def _copy(self, mailbox_id, uids, dest, move):
        _, source = self._by_id(mailbox_id)
        if dest not in self.boxes:
            raise NoSuchMailbox(dest)
        target = self.boxes[dest]
        pairs = []
        for uid in sorted(uids):
            m = source["msgs"][uid]
            new = self.add(dest, self.bodies[m["id"]], m["flags"])
            pairs.append((uid, new))
            if move:
                del source["msgs"][uid]
        modseq = self._bump()
        if move:
            self.vanished.extend((mailbox_id, uid, modseq) for uid, _ in pairs)
        return CopyResult(uidvalidity=target["uidvalidity"], pairs=pairs)

    def copy_messages(self, account, mailbox_id, uids, dest):
        return self._call(self._copy, mailbox_id, uids, dest, False)

    def move_messages(self, account, mailbox_id, uids, dest):
        return self._call(self._copy, mailbox_id, uids, dest, True)

    def mailbox_changes(self, account, mailbox_id, since):
        _, box = self._by_id(mailbox_id)
        changed = [self._ref(box, uid) for uid in sorted(box["msgs"]) if box["msgs"][uid]["modseq"] > since]
        vanished = [uid for box_id, uid, modseq in self.vanished if box_id == mailbox_id and modseq > since]
        return defer.succeed((self.modseq, changed, vanished))

    def usage(self, account):
        return defer.succeed(sum(len(b) for b in self.bodies.values()))


class Client:
    """Drives an IMAPSession as server.py does, synchronously: commands one at a
    time, ClientLine events to the session while it awaits a line."""

    def __init__(self, plaintext_ok=True, with_tls=False, store=None, login_gate=None,
                 with_compress=False, registry=None):
        self.out = bytearray()
        self.store = store or MemoryStore()
        self.parser = CommandParser()
        self.clock = task.Clock()
        self.tls_started = False
        self.compress_leftover = None
        self.session = IMAPSession(self.out.extend, self.store, MemoryAuthenticator(), "127.0.0.1",
                                   self.parser, start_tls=self._start_tls if with_tls else None,
                                   plaintext_ok=plaintext_ok, clock=self.clock,
                                   login_gate=login_gate,
                                   start_compress=self._start_compress if with_compress else None)
        self.session.recent_registry = registry or RecentRegistry()

    def _start_tls(self):
        self.tls_started = True

    def _start_compress(self, leftover):
        self.compress_leftover = leftover

    def send(self, line: bytes) -> bytes:
        del self.out[:]
        self.parser.receive(line)
        while (event := self.parser.next_event()) is not None:
            if isinstance(event, ClientLine):
                self.session.client_line(event.data)
            elif isinstance(event, ContinuationNeeded):
                self.out.extend(b"+ Ready\r\n")
            else:
                assert isinstance(event, CommandReady), event
                self.session.handle(event.command)
        return bytes(self.out)

    def take(self) -> bytes:
        """What the session sent since the last send() (pushed updates)."""
        data = bytes(self.out)
        del self.out[:]
        return data

    def login(self):
        assert b"a OK" in self.send(b"a LOGIN alice@example.test secret\r\n")

    def select(self, name=b"INBOX"):
        self.login()
        assert b"s OK" in self.send(b"s SELECT " + name + b"\r\n")
