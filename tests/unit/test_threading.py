"""Conversation ids assigned at delivery (store/threads.py, issue 12).

On the reply chains of tests/data/ham-200.mbox the threads agree with
RFC 5256 REFERENCES (JWZ, imap/thread.py), except where JWZ's step 5 merges
a non-reply without references by subject alone (we thread by subject only
for replies). Late parents merge threads; the subject fallback honours its
window.
"""

from __future__ import annotations

import collections
import email
import mailbox
import os

import pytest
from sqlalchemy import select

from mailserverd.imap import thread as jwz
from mailserverd.imap.sort import SortFacts, subject_info
from mailserverd.store import Store, schema
from mailserverd.store.api import DeliveryTarget, MessageRef
from mailserverd.store.mail import Delivery
from mailserverd.store.threads import SUBJECT_WINDOW

DATA = os.path.join(os.path.dirname(__file__), "..", "data")


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/directory.db", [f"sqlite:///{tmp_path}/shard-0.db"],
                  str(tmp_path / "blobs"))
    store.directory.add_domain("example.test")
    store.account = store.add_account("user@example.test", "pw")
    yield store
    store.close()


def _deliver(store, raws, received_at=None):
    items = [Delivery(raw, [DeliveryTarget(account=store.account)], received_at) for raw in raws]
    store.mail.deliver_many(items)
    return [item.result[0].message_id for item in items]


def _threads(store) -> dict:
    with store.shard_engines[0].connect() as conn:
        return dict(conn.execute(select(schema.messages.c.id, schema.messages.c.thread_id)).all())


def _mail(message_id, subject="Hello", in_reply_to=None, references=None):
    lines = [f"Message-ID: {message_id}", f"Subject: {subject}", "From: a@example.test"]
    if in_reply_to:
        lines.append(f"In-Reply-To: {in_reply_to}")
    if references:
        lines.append(f"References: {references}")
    return ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode()


def _header(raw: bytes) -> bytes:
    end = raw.find(b"\n\n")
    return raw[:end + 1] if end >= 0 else raw


def test_threads_match_jwz_on_real_reply_chains(store):
    """ham-200: each thread equals an RFC 5256 REFERENCES thread, or differs from it only by
    non-reply messages without references that JWZ merged on subject alone."""
    raws = [message.as_bytes() for message in mailbox.mbox(os.path.join(DATA, "ham-200.mbox"))]
    ids = _deliver(store, raws)
    thread_of = _threads(store)
    facts = [SortFacts.from_raw(n, MessageRef(0, n, mid, 0, frozenset(), 0, 0.0), _header(raw))
             for n, (mid, raw) in enumerate(zip(ids, raws), 1)]
    by_number = {f.seq: f.ref.message_id for f in facts}
    raw_of = dict(zip(ids, raws))
    ours = collections.defaultdict(set)
    for mid in ids:
        ours[thread_of[mid]].add(mid)
    ours = {frozenset(members) for members in ours.values()}

    def flatten(node):
        out, stack = set(), [node]
        while stack:
            number, children = stack.pop()
            if number is not None:
                out.add(by_number[number])
            stack.extend(children)
        return frozenset(out)

    theirs = {flatten(node) for node in jwz.thread_references(facts)}
    assert len(ours & theirs) >= 0.95 * len(theirs)
    multi = [t for t in ours if len(t) > 1]
    assert len(multi) >= 20  # the corpus really has reply chains

    def lone_non_reply(mid):
        message = email.message_from_bytes(raw_of[mid])
        return (not message["references"] and not message["in-reply-to"]
                and not subject_info(str(message["subject"] or ""))[1])
    for thread in theirs - ours:
        pieces = [ours_thread for ours_thread in ours if ours_thread & thread]
        assert all(piece <= thread for piece in pieces)
        singles = [piece for piece in pieces if len(piece) == 1 and lone_non_reply(next(iter(piece)))]
        assert len(pieces) - len(singles) <= 1, sorted(thread)


def test_late_parent_merges_threads(store):
    """Replies to two unknown parents arrive first, in two threads; the late parent <p2@x>
    (itself a reply to <p1@x>) links them into one id, the smaller; the grandparent joins it."""
    first = _deliver(store, [_mail("<c1@x>", "Re: Plan", "<p1@x>", "<p1@x>")])[0]
    second = _deliver(store, [_mail("<c2@x>", "Re: Other", "<p2@x>", "<p2@x>")])[0]
    threads = _threads(store)
    assert threads[first] != threads[second]
    parent = _deliver(store, [_mail("<p2@x>", "Plan", "<p1@x>", "<p1@x>")])[0]
    threads = _threads(store)
    assert threads[first] == threads[second] == threads[parent] == min(first, second)
    grandparent = _deliver(store, [_mail("<p1@x>", "Plan")])[0]
    assert _threads(store)[grandparent] == threads[first]


def test_subject_fallback_only_for_recent_replies(store):
    """A "Re:" without references joins the newest same-subject thread inside the window;
    a non-reply with the same subject, or a reply past the window, starts its own thread."""
    start = 1_000_000_000.0
    root = _deliver(store, [_mail("<r@x>", "Budget 2026")], received_at=start)[0]
    reply = _deliver(store, [_mail("<s@x>", "RE: Re: Budget 2026")], received_at=start + 3600)[0]
    same = _deliver(store, [_mail("<t@x>", "Budget 2026")], received_at=start + 7200)[0]
    late = _deliver(store, [_mail("<u@x>", "Re: Budget 2026")], received_at=start + SUBJECT_WINDOW * 3)[0]
    threads = _threads(store)
    assert threads[reply] == threads[root]
    assert threads[same] == same
    assert threads[late] == late


def test_duplicate_and_missing_message_ids(store):
    """A message without Message-ID and one repeating another's id still get thread ids; a
    reply in the same delivery batch as its parent joins it."""
    ids = _deliver(store, [b"Subject: none\r\n\r\nx\r\n", _mail("<d@x>"), _mail("<d@x>"),
                           _mail("<e@x>", "Re: Hello", "<d@x>")])
    threads = _threads(store)
    assert threads[ids[0]] == ids[0]
    assert threads[ids[1]] == threads[ids[2]] == threads[ids[3]] == ids[1]
