"""IMAP commands on the selected mailbox's messages (RFC 3501 6.4, RFC 4315,
RFC 4731, RFC 5182, RFC 5256, RFC 6851, RFC 7162): FETCH, STORE, COPY, MOVE,
EXPUNGE, SEARCH, SORT, THREAD. A mixin of IMAPSession."""

from __future__ import annotations

from collections import OrderedDict

from twisted.internet import defer

from ..mime.imapsection import IMAPMessage
from ..store.api import NoSuchMailbox
from . import responses, search_eval, sort, thread
from .fetch import FetchAtt
from .sequence import compress

READ_BATCH = 50  # messages read from the store per round trip
STRUCTURE_BATCH = 500  # stored ENVELOPE/BODYSTRUCTURE pairs per round trip
STRUCTURE_ITEMS = frozenset({"ENVELOPE", "BODYSTRUCTURE"})
REF_ITEMS = frozenset({"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"})


class StructureCache:
    """ENVELOPE and BODYSTRUCTURE of recently fetched messages (immutable once
    stored), so re-fetching headers does not re-read and re-parse bodies."""

    def __init__(self, capacity: int = 20000):
        self.capacity = capacity
        self._entries: OrderedDict = OrderedDict()

    @staticmethod
    def key(account, ref) -> tuple:
        # Row ids can be reused after a delete; size and arrival time make a
        # reused id with different content a different key.
        return (account.shard, ref.message_id, ref.size, ref.received_at)

    def get(self, key):
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key, envelope: bytes, bodystructure: bytes) -> None:
        self._entries[key] = (envelope, bodystructure)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


STRUCTURES = StructureCache()


class MessageCommands:
    # -- addressing --------------------------------------------------------------------

    def _targets(self, command, sequence=None):
        """(number, ref) pairs a command's set names; "$" is the saved SEARCH result."""
        sequence = sequence or command.sequence
        view = self.view
        if sequence.saved:
            saved = set(self.saved_search or ())
            return [(number, ref) for number, ref in enumerate(view.refs, 1) if ref.uid in saved]
        if command.uid:
            return view.by_uid(sequence)
        return view.by_sequence(sequence)

    def _bad_sequence(self, command) -> bool:
        """RFC 3501 6.4.5: a message sequence number beyond EXISTS is an error."""
        if command.uid or command.sequence.saved:
            return False
        exists = self.view.exists
        return any(high > exists or low < 1 for low, high in command.sequence.resolve(max(exists, 1)))

    def _replace(self, ref) -> None:
        """Take a ref the store returned; a keyword this session has not been
        told of is announced in FLAGS first (RFC 3501 7.2.6)."""
        announcement = self.view.replace(ref)
        if announcement:
            self.send(announcement)

    # -- FETCH (RFC 3501 6.4.5, RFC 7162 3.1.4 and 3.2.6) ---------------------------------

    @defer.inlineCallbacks
    def do_fetch(self, command):
        if self._bad_sequence(command):
            return ("BAD", "Invalid message sequence number", None)
        if command.vanished and not (command.uid and "QRESYNC" in self.enabled
                                     and command.changed_since is not None):
            return ("BAD", "VANISHED needs UID FETCH, QRESYNC and CHANGEDSINCE", None)  # RFC 7162 3.2.6
        view = self.view
        items = list(command.items)
        if command.uid and not any(item.name == "UID" for item in items):
            items.insert(0, FetchAtt("UID"))  # RFC 3501 6.4.8
        if command.changed_since is not None or any(item.name == "MODSEQ" for item in items):
            self._enable_condstore()
            if not any(item.name == "MODSEQ" for item in items):
                items.append(FetchAtt("MODSEQ"))  # RFC 7162 3.1.4.1
        targets = self._targets(command)
        if command.changed_since is not None:
            targets = [(n, ref) for n, ref in targets if ref.modseq > command.changed_since]
            if command.vanished:
                yield self._send_vanished_earlier(command)
        sets_seen = not view.read_only and any(item.sets_seen for item in items)
        if sets_seen:
            unseen = [ref.uid for _, ref in targets if "\\Seen" not in ref.flags]
            if unseen:
                # RFC 3501 6.4.5: \Seen is set before the data goes out, so the
                # FETCH response carries the new FLAGS.
                changed = yield self.store.store_flags(self.account, view.mailbox.id, unseen,
                                                       ["\\Seen"], "add")
                for ref in changed:
                    self._replace(ref)
                if not any(item.name == "FLAGS" for item in items):
                    items.append(FetchAtt("FLAGS"))
        needs_raw = any(item.name not in REF_ITEMS and item.name not in STRUCTURE_ITEMS
                        for item in items)
        needs_structure = any(item.name in STRUCTURE_ITEMS for item in items)
        gone = False
        # Bodies are read 50 at a time; ENVELOPE/BODYSTRUCTURE alone come from the
        # columns stored at delivery, many per round trip, and no body is parsed.
        step = READ_BATCH if needs_raw else STRUCTURE_BATCH
        for start in range(0, len(targets), step):
            batch = targets[start:start + step]
            refs = [view.refs[number - 1] if view.number_of(ref.uid) == number else ref
                    for number, ref in batch]
            pairs, wanted = {}, []
            if needs_structure:
                pairs, wanted = yield self._load_structures(refs)
            if needs_raw:
                wanted = refs
            wanted_ids = {ref.message_id for ref in wanted}
            raws = {}
            if wanted:
                raws = yield self.store.read_messages(self.account, list(wanted_ids))
            for (number, _), ref in zip(batch, refs):
                raw = raws.get(ref.message_id)
                if ref.message_id in wanted_ids and raw is None:
                    gone = True  # expunged by another session; the view still shows it
                    continue
                message = IMAPMessage(raw) if raw is not None else None
                self.send(responses.fetch_response(number, self._fetch_values(
                    items, ref, message, pairs.get(ref.message_id))))
        if gone:
            # RFC 9051 7.1: some messages named were expunged meanwhile.
            return ("NO", "Some messages were expunged", "EXPUNGEISSUED")
        return ("OK", "FETCH completed", None)

    @defer.inlineCallbacks
    def _load_structures(self, refs):
        """Fill STRUCTURES from the store's columns; returns the refs still
        missing (stored before the columns existed, or expunged meanwhile),
        whose bodies must be read and parsed."""
        pairs, missing = {}, []
        for ref in refs:
            pair = STRUCTURES.get(STRUCTURES.key(self.account, ref))
            if pair is None:
                missing.append(ref)
            else:
                pairs[ref.message_id] = pair
        left = []
        if missing:
            stored = yield self.store.message_structures(self.account, [ref.message_id for ref in missing])
            for ref in missing:
                pair = stored.get(ref.message_id)
                if pair is None:
                    left.append(ref)
                else:
                    STRUCTURES.put(STRUCTURES.key(self.account, ref), *pair)
                    pairs[ref.message_id] = pair
        return pairs, left

    def _fetch_values(self, items, ref, message, cached=None) -> list:
        """(label, value) pairs for one message (RFC 3501 7.4.2); cached: its
        (ENVELOPE, BODYSTRUCTURE) when already known."""
        if cached is None and any(item.name in STRUCTURE_ITEMS for item in items):
            key = STRUCTURES.key(self.account, ref)
            cached = STRUCTURES.get(key)
            if cached is None:
                cached = (message.envelope(), message.bodystructure(True))
                STRUCTURES.put(key, *cached)
        out = []
        for item in items:
            name = item.name
            if name == "FLAGS":
                out.append((item, self.view.flags_of(ref)))
            elif name == "UID":
                out.append((item, ref.uid))
            elif name == "MODSEQ":
                out.append((item, [ref.modseq]))
            elif name == "INTERNALDATE":
                out.append((item, responses.Raw(responses.internal_date(ref.received_at))))
            elif name == "RFC822.SIZE":
                out.append((item, ref.size))
            elif name == "ENVELOPE":
                out.append((item, responses.Raw(cached[0])))
            elif name == "BODYSTRUCTURE":
                out.append((item, responses.Raw(cached[1])))
            else:
                out.append((item, _body_value(item, message)))
        return out

    @defer.inlineCallbacks
    def _send_vanished_earlier(self, command):
        _highest, _changed, vanished = yield self.store.mailbox_changes(
            self.account, self.view.mailbox.id, command.changed_since)
        vanished = list(command.sequence.select(sorted(vanished), self.view.largest_uid or None))
        present = set(self.view.uids())
        vanished = [uid for uid in vanished if uid not in present]
        if vanished:
            self.send(responses.vanished(vanished, earlier=True))

    # -- STORE (RFC 3501 6.4.6, RFC 7162 3.1.3) -------------------------------------------

    @defer.inlineCallbacks
    def do_store(self, command):
        if self._bad_sequence(command):
            return ("BAD", "Invalid message sequence number", None)
        view = self.view
        if view.read_only:
            return ("NO", "Mailbox is read-only", "READ-ONLY")
        targets = self._targets(command)
        flags = [flag for flag in command.flags if flag != "\\Recent"]
        modified = []
        if command.unchanged_since is not None:
            self._enable_condstore()
            fresh = yield self.store.list_messages(self.account, view.mailbox.id)
            current = {ref.uid: ref.modseq for ref in fresh}
            modified = [(n, ref) for n, ref in targets
                        if current.get(ref.uid, 0) > command.unchanged_since]
            targets = [(n, ref) for n, ref in targets
                       if current.get(ref.uid, 0) <= command.unchanged_since]
        changed_uids = set()
        if targets:
            changed = yield self.store.store_flags(self.account, view.mailbox.id,
                                                   [ref.uid for _, ref in targets], flags, command.mode)
            for ref in changed:
                self._replace(ref)
                changed_uids.add(ref.uid)
        for _, old in targets:
            number = view.number_of(old.uid)
            if number is None:
                continue
            ref = view.refs[number - 1]
            if command.silent and not (self.condstore and ref.uid in changed_uids):
                continue
            items = [] if command.silent else [("FLAGS", view.flags_of(ref))]
            if command.uid:
                items.insert(0, ("UID", ref.uid))
            if self.condstore:
                items.append(("MODSEQ", [ref.modseq]))
            self.send(responses.fetch_response(number, items))
        if modified:
            numbers = [ref.uid if command.uid else n for n, ref in modified]
            return ("OK", "Conditional STORE failed for some messages", "MODIFIED " + compress(numbers))
        return ("OK", "STORE completed", None)

    # -- COPY / MOVE (RFC 3501 6.4.7, RFC 4315 3, RFC 6851) ---------------------------------

    @defer.inlineCallbacks
    def do_copy(self, command):
        if self._bad_sequence(command):
            return ("BAD", "Invalid message sequence number", None)
        targets = self._targets(command)
        if not targets:
            return ("OK", "Nothing to copy", None)
        result = yield self._copy_or_move(self.store.copy_messages, targets, command.mailbox)
        self._dirty = True  # a copy into the selected mailbox must show up as EXISTS
        if isinstance(result, tuple):
            return result
        return ("OK", "COPY completed", _copyuid(result))

    @defer.inlineCallbacks
    def do_move(self, command):
        if self._bad_sequence(command):
            return ("BAD", "Invalid message sequence number", None)
        view = self.view
        if view.read_only:
            return ("NO", "Mailbox is read-only", "READ-ONLY")
        targets = self._targets(command)
        if not targets:
            return ("OK", "Nothing to move", None)
        result = yield self._copy_or_move(self.store.move_messages, targets, command.mailbox)
        if isinstance(result, tuple):
            return result
        # RFC 6851 4.3: COPYUID goes in an untagged OK before the expunges.
        self.send(responses.untagged_status("OK", "Moved", _copyuid(result)))
        self._send_expunged([source for source, _ in result.pairs])
        return ("OK", "MOVE completed", None)

    @defer.inlineCallbacks
    def _copy_or_move(self, operation, targets, destination):
        try:
            result = yield operation(self.account, self.view.mailbox.id,
                                     [ref.uid for _, ref in targets], destination)
        except NoSuchMailbox:
            return ("NO", "No such mailbox", "TRYCREATE")  # RFC 3501 6.4.7
        return result

    def _send_expunged(self, uids) -> None:
        if "QRESYNC" in self.enabled:
            gone = [uid for uid in uids if self.view.number_of(uid) is not None]
            self.view.remove_uids(gone)
            if gone:
                self.send(responses.vanished(gone))  # RFC 7162 3.2.10
            return
        for number in self.view.remove_uids(uids):
            self.send(responses.expunge(number))

    # -- EXPUNGE (RFC 3501 6.4.3, RFC 4315 2.1) -------------------------------------------

    @defer.inlineCallbacks
    def do_expunge(self, command):
        view = self.view
        if view.read_only:
            return ("NO", "Mailbox is read-only", "READ-ONLY")
        fresh = yield self.store.list_messages(self.account, view.mailbox.id)
        deleted = [ref.uid for ref in fresh if "\\Deleted" in ref.flags]
        if command.uids is not None:
            known = view.uids()
            allowed = set(command.uids.select(known, view.largest_uid)) if known else set()
            deleted = [uid for uid in deleted if uid in allowed]
        if deleted:
            removed = yield self.store.expunge(self.account, view.mailbox.id, deleted)
            self._send_expunged(removed or deleted)
        return ("OK", "EXPUNGE completed", None)

    # -- SEARCH / SORT / THREAD (RFC 3501 6.4.4, RFC 4731, RFC 5182, RFC 5256) -------------

    def _matching(self, program):
        """The (number, ref) pairs of the selected mailbox that satisfy `program` (index-narrowed)."""
        return search_eval.match_view(self.store, self.account, self.view, program,
                                      self.clock.seconds(), self.saved_search)

    @defer.inlineCallbacks
    def do_search(self, command):
        if search_eval.uses_modseq(command.key):
            self._enable_condstore()
        matches = yield self._matching(command.key)
        numbers = [ref.uid if command.uid else number for number, ref in matches]
        modseq = max((ref.modseq for _, ref in matches), default=None) \
            if search_eval.uses_modseq(command.key) else None
        returns = command.returns
        if returns is None:
            self.send(responses.search_response(numbers, modseq))
            return ("OK", "SEARCH completed", None)
        options = set(returns) or {"ALL"}  # RFC 4731 3.1: RETURN () means ALL
        if "SAVE" in options:
            self.saved_search = [ref.uid for _, ref in matches]  # RFC 5182 2.1
            options.discard("SAVE")
            if not options:
                return ("OK", "SEARCH completed, result saved", None)
        results = {}
        if "MIN" in options and numbers:
            results["MIN"] = min(numbers)
        if "MAX" in options and numbers:
            results["MAX"] = max(numbers)
        if "ALL" in options:
            results["ALL"] = numbers
        if "COUNT" in options:
            results["COUNT"] = len(numbers)
        if modseq is not None and numbers:
            if options <= {"MIN", "MAX"}:
                # RFC 7162 3.1.5: with only MIN/MAX, the MODSEQ of the messages returned.
                by_number = {(ref.uid if command.uid else n): ref.modseq for n, ref in matches}
                modseq = max(by_number[results[k]] for k in ("MIN", "MAX") if k in results)
            results["MODSEQ"] = modseq
        self.send(responses.esearch_response(command.tag, command.uid, results))
        return ("OK", "SEARCH completed", None)

    @defer.inlineCallbacks
    def _facts_for(self, matches):
        raws = {}
        for start in range(0, len(matches), READ_BATCH):
            chunk = [ref.message_id for _, ref in matches[start:start + READ_BATCH]]
            raws.update((yield self.store.read_messages(self.account, chunk)))
        return [sort.SortFacts.from_raw(number, ref, _header_block(raws.get(ref.message_id, b"")))
                for number, ref in matches]

    @defer.inlineCallbacks
    def do_sort(self, command):
        matches = yield self._matching(command.key)
        facts = yield self._facts_for(matches)
        ordered = sort.sort_messages(command.criteria, facts)
        numbers = [f.ref.uid if command.uid else f.seq for f in ordered]
        self.send(responses.sort_response(numbers))
        return ("OK", "SORT completed", None)

    @defer.inlineCallbacks
    def do_thread(self, command):
        algorithms = {"ORDEREDSUBJECT": thread.thread_orderedsubject,
                      "REFERENCES": thread.thread_references}
        algorithm = algorithms.get(command.algorithm)
        if algorithm is None:
            return ("BAD", "Unknown THREAD algorithm", None)
        matches = yield self._matching(command.key)
        facts = yield self._facts_for(matches)
        threads = algorithm(facts, uid=command.uid)
        self.send(thread.render_thread(threads))
        return ("OK", "THREAD completed", None)


def _header_block(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    return raw if end < 0 else raw[:end + 2]


def _copyuid(result) -> str:
    sources = compress(source for source, _ in result.pairs)
    destinations = compress(new for _, new in result.pairs)
    return "COPYUID %d %s %s" % (result.uidvalidity, sources, destinations)


def _body_value(item, message):
    name = item.name
    if name == "BODY" and item.section is None:
        return responses.Raw(message.bodystructure(False))
    if name == "BODY":
        section = item.section
        return responses.LiteralString(message.section(section.part, section.text, section.fields,
                                                       item.partial))
    if name == "RFC822":
        return responses.LiteralString(message.section())
    if name == "RFC822.HEADER":
        return responses.LiteralString(message.section((), "HEADER"))
    if name == "RFC822.TEXT":
        return responses.LiteralString(message.section((), "TEXT"))
    if name == "BINARY.SIZE":
        return message.binary_size(item.section.part)
    if name == "BINARY":
        data = message.binary(item.section.part, item.partial)
        return None if data is None else responses.Literal8(data)
    raise ValueError("unknown FETCH item " + name)
