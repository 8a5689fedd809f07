"""FETCH ENVELOPE/BODYSTRUCTURE from the columns stored at delivery (issue 10):
no body is read or parsed when they are there; mail stored before them is
parsed as before, with the same answer."""

from __future__ import annotations

from mailserverd.imap import session_messages
from mailserverd.imap.session_messages import StructureCache
from tests.support.imapmemory import Client, MemoryStore

OTHER = (b"From: Carol <carol@remote.test>\r\nTo: alice@example.test\r\nSubject: report\r\n"
         b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
         b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b--\r\n")


class CountingStore(MemoryStore):
    def __init__(self):
        super().__init__()
        self.bodies_read = 0

    def read_messages(self, account, message_ids):
        self.bodies_read += len(list(message_ids))
        return super().read_messages(account, message_ids)


def fetch(store, command: bytes, monkeypatch) -> bytes:
    monkeypatch.setattr(session_messages, "STRUCTURES", StructureCache())  # cold
    client = Client(store=store)
    client.select()
    return client.send(command)


def test_envelope_and_bodystructure_come_from_stored_columns(monkeypatch):
    """FETCH 1:* (ENVELOPE BODYSTRUCTURE) reads no body when the store has both items."""
    store = CountingStore()
    store.add("INBOX", OTHER)
    reply = fetch(store, b"f FETCH 1:* (ENVELOPE BODYSTRUCTURE)\r\n", monkeypatch)
    assert store.bodies_read == 0
    assert reply.count(b"ENVELOPE (") == 3 and b'"report"' in reply
    assert b'("text" "plain"' in reply and b'"mixed" ("boundary" "b")' in reply
    assert reply.endswith(b"f OK FETCH completed\r\n")


def test_mail_without_stored_structures_is_parsed_with_the_same_answer(monkeypatch):
    """Messages stored before the columns existed are read and parsed: byte-identical output."""
    stored, parsed = CountingStore(), CountingStore()
    for store in (stored, parsed):
        store.add("INBOX", OTHER)
    parsed.unstructured = {1, 2, 3}
    first = fetch(stored, b"f FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE)\r\n", monkeypatch)
    second = fetch(parsed, b"f FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE)\r\n", monkeypatch)
    assert first == second and stored.bodies_read == 0 and parsed.bodies_read == 3


def test_body_items_still_read_the_body(monkeypatch):
    """ENVELOPE with BODY[HEADER.FIELDS (SUBJECT)] reads bodies (the section needs them)."""
    store = CountingStore()
    reply = fetch(store, b"f FETCH 1 (ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n", monkeypatch)
    assert store.bodies_read == 1 and b"Subject: hello" in reply and b"ENVELOPE (" in reply
