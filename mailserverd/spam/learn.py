"""Learning from users: a message copied or moved into the Junk mailbox (special
use \\Junk, RFC 6154) is trained as spam for its account, one copied or moved
out of Junk into any mailbox but Trash as ham (deleting spam says nothing).

JunkLearner is a child service of the root (service.build_service_tree). It
follows the store's committed COPY/MOVE operations (AsyncStore.observe_copies),
so IMAP and JMAP (Email/set mailboxIds) need not know about the filter. It reads the
new copies back, strips what our delivery prepended (Return-Path, our
Received; the X-Spam-* and Authentication-Results fields are ignored by the
tokenizer) and trains them off the reactor. Training is keyed by the
message's digest: moving a message back and forth moves its counts between
the classes, it never counts it twice.
"""

from __future__ import annotations

from typing import Optional

from twisted.application import service
from twisted.internet import defer, threads
from twisted.logger import Logger

from ..mime.headers import split_header
from .tokendb import GLOBAL
from .tokenizer import auth_from_header

log = Logger(namespace="mailserverd.spam")

JUNK = "\\Junk"
TRASH = "\\Trash"
MAX_TRAIN_PER_OPERATION = 1000  # a huge MOVE trains its first messages only; no unbounded work


def strip_own_prepend(raw: bytes, hostname: str) -> bytes:
    """The message without the Return-Path and Received field (by `hostname`) that
    our delivery put on top (smtp/delivery.py), so it tokenises as when it was scored."""
    header, _body_offset = split_header(raw)
    fields: list[tuple[int, int]] = []  # (start, end) of each field, continuation lines included
    position = 0
    while position < len(header) and len(fields) <= 3:
        end = header.find(b"\n", position)
        end = len(header) if end < 0 else end + 1
        if header[position:position + 1] in (b" ", b"\t") and fields:
            fields[-1] = (fields[-1][0], end)
        else:
            fields.append((position, end))
        position = end
    ours = f"by {hostname.lower()}".encode()
    cut = 0
    for start, end in fields[:3]:
        field = header[start:end]
        name = field.split(b":", 1)[0].strip().lower()
        if name == b"return-path":
            cut = end
        elif name == b"received" and ours in field.lower():
            cut = end
            break
        else:
            break
    return raw[cut:]


class JunkLearner(service.Service):
    name = "spam-learner"

    def __init__(self, check, async_store, hostname: str, run=None):
        self.check = check  # the SpamCheck: its TokenDB and per_user setting
        self.store = async_store
        self.hostname = hostname
        self._run = run or threads.deferToThread
        self.pending: set = set()

    def startService(self):
        super().startService()
        self.store.observe_copies(self.copied)

    def stopService(self):
        super().stopService()
        # let trainings in flight finish (they are short transactions)
        return defer.DeferredList(list(self.pending))

    def copied(self, account, source_mailbox_id: int, dest_name: str, result, moved: bool) -> None:
        """AsyncStore calls this after a COPY or MOVE committed (on the reactor thread)."""
        if not self.running or not getattr(result, "pairs", None):
            return
        d = self.learn(account, source_mailbox_id, dest_name, [new for _old, new in result.pairs])
        self.pending.add(d)
        d.addErrback(lambda failure: log.failure("learning from a move to/from Junk failed", failure))
        d.addBoth(lambda _: self.pending.discard(d))

    @defer.inlineCallbacks
    def learn(self, account, source_mailbox_id: int, dest_name: str, new_uids: list):
        boxes = yield self.store.list_mailboxes(account)
        source = next((box for box in boxes if box.id == source_mailbox_id), None)
        dest = _by_name(boxes, dest_name)
        if source is None or dest is None:
            return None
        into_junk, from_junk = dest.special_use == JUNK, source.special_use == JUNK
        if into_junk == from_junk or (from_junk and dest.special_use == TRASH):
            return None
        wanted = set(new_uids[:MAX_TRAIN_PER_OPERATION])
        # The copies carry the newest modseqs of the destination (RFC 7162): read only the
        # changes since a little before its highest, not a mailbox of 100,000 messages.
        since = max(0, dest.highestmodseq - 4 * len(wanted) - 64)
        _highest, changed, _vanished = yield self.store.mailbox_changes(account, dest.id, since)
        refs = [ref for ref in changed if ref.uid in wanted]
        if len(refs) < len(wanted):  # other writes came in between: read the whole list
            refs = [ref for ref in (yield self.store.list_messages(account, dest.id)) if ref.uid in wanted]
        ids = [ref.message_id for ref in refs]
        bodies = yield self.store.read_messages(account, ids)
        owner = account.id if self.check.per_user else GLOBAL
        trained = 0
        for message_id in ids:
            raw = bodies.get(message_id)
            if raw is None:
                continue
            outcome = yield self._run(self._train, raw, into_junk, owner)
            trained += outcome != "already trained"
        log.info("spam filter: {count} message(s) of {who} trained as {kind} (moved {direction} Junk)",
                 count=trained, who=account.address, kind="spam" if into_junk else "ham",
                 direction="into" if into_junk else "out of")
        return trained

    def _train(self, raw: bytes, spam: bool, owner: int) -> str:
        auth = auth_from_header(raw, self.hostname)
        return self.check.db.train(strip_own_prepend(raw, self.hostname), spam, owner, auth=auth or None)


def _by_name(boxes, name: str) -> Optional[object]:
    for box in boxes:
        if box.name == name or (name.upper() == "INBOX" and box.name.upper() == "INBOX"):
            return box
    return None


def build_learner(root, checks, async_store, settings) -> Optional[JunkLearner]:
    """Add a JunkLearner to the service tree when check.spam is in the chain with learn = yes."""
    check = next((item for item in getattr(checks, "checks", ()) if getattr(item, "name", "") == "check.spam"),
                 None)
    if check is None or not check.learn or check.db is None:
        return None
    learner = JunkLearner(check, async_store, settings.server.hostname)
    learner.setServiceParent(root)
    return learner
