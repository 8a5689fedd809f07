"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 3) and the thread
response syntax (RFC 5256 4), on synthetic and real (tests/data) messages."""

import calendar
import email.utils
import mailbox
import pathlib

import pytest

from mailserverd.imap.sort import SortFacts
from mailserverd.imap.thread import render_thread, thread_orderedsubject, thread_references
from mailserverd.mime.headers import split_header
from mailserverd.store.api import MessageRef

HAM = pathlib.Path(__file__).resolve().parents[1] / "data" / "ham-200.mbox"
BASE = calendar.timegm((2024, 1, 1, 0, 0, 0))


def message(seq, subject="topic", msgid=None, refs=None, irt=None, minute=None, uid=None):
    """A message whose Date: is `minute` minutes after BASE (default: seq)."""
    header = b"Subject: " + subject.encode() + b"\r\n"
    when = BASE + 60 * (seq if minute is None else minute)
    header += b"Date: " + _rfc5322_date(when) + b"\r\n"
    if msgid is not None:
        header += b"Message-ID: <" + msgid.encode() + b">\r\n"
    if refs is not None:
        header += b"References: " + b" ".join(b"<%s>" % r.encode() for r in refs) + b"\r\n"
    if irt is not None:
        header += b"In-Reply-To: <" + irt.encode() + b">\r\n"
    ref = MessageRef(mailbox_id=1, uid=uid or seq + 100, message_id=seq, size=10,
                     flags=frozenset(), modseq=1, received_at=0.0)
    return SortFacts.from_raw(seq, ref, header)


def _rfc5322_date(when: float) -> bytes:
    return email.utils.formatdate(when, usegmt=True).encode()


def rendered(threads) -> bytes:
    line = render_thread(threads)
    assert line.startswith(b"* THREAD") and line.endswith(b"\r\n")
    return line[len(b"* THREAD"):-2].strip()


def references(*messages, uid=False) -> bytes:
    return rendered(thread_references(list(messages), uid=uid))


def parse_threads(text: bytes) -> list:
    """RFC 5256 4 thread-list text back into (number, children) nodes (test helper)."""
    tokens = text.replace(b"(", b" ( ").replace(b")", b" ) ").split()
    position = 0

    def thread_list():
        nonlocal position
        assert tokens[position] == b"("
        position += 1
        numbers = []
        while tokens[position] not in (b"(", b")"):
            numbers.append(int(tokens[position]))
            position += 1
        nested = []
        while tokens[position] == b"(":
            nested.append(thread_list())
        assert tokens[position] == b")"
        position += 1
        if not numbers:
            return (None, nested)
        node = (numbers[-1], nested)
        for number in reversed(numbers[:-1]):
            node = (number, [node])
        return node

    threads = []
    while position < len(tokens):
        threads.append(thread_list())
    return threads


# -- rendering (RFC 5256 4) -------------------------------------------------------------

@pytest.mark.parametrize("text", [
    b"(2)(3 6 (4 23)(44 7 96))",
    b"((3)(5))",
    # RFC 5256 5 examples, ORDEREDSUBJECT and REFERENCES.
    b"(166)(167)(168)(169)(172)(170)(171)(173)(174 (175)(176)(178)(181)(180))(179)"
    b"(177 (183)(182)(188)(184)(185)(186)(187)(189))(190)(191)(192)(193)(194 195)"
    b"(196 (197)(198))(199)(200 202)(201)(203)(204)(205)(206 207)(208)",
    b"(166)(167)(168)(169)(172)((170)(179))(171)(173)((174)(175)(176)(178)(181)(180))"
    b"(177 (183)(182)(188 (184)(189))(185 186)(187))(190)(191)(192)(193)((194)(195 196))"
    b"(197 198)(199)(200 202)(201)(203)(204)(205 206 207)(208)",
])
def test_render_matches_rfc_examples(text):
    """Rendering the RFC 5256 example trees gives the RFC's text exactly."""
    assert rendered(parse_threads(text)) == text


def test_render_nothing():
    """No messages: the response is the bare `* THREAD`."""
    assert render_thread([]) == b"* THREAD\r\n"


def test_render_deep_chain_iteratively():
    """A 10,000-deep chain renders without recursion."""
    node = (10000, [])
    for number in range(9999, 0, -1):
        node = (number, [node])
    text = rendered([node])
    assert text == b"(" + b" ".join(b"%d" % n for n in range(1, 10001)) + b")"


# -- ORDEREDSUBJECT -----------------------------------------------------------------------

def test_orderedsubject_groups_by_base_subject_under_first_by_date():
    """One thread per base subject; its earliest message parents the rest as
    siblings; threads ordered by their first message's date."""
    messages = [message(1, "Re: alpha", minute=5), message(2, "beta", minute=1),
                message(3, "alpha", minute=2), message(4, "Fwd: ALPHA", minute=9),
                message(5, "[x] beta", minute=3), message(6, "gamma", minute=4)]
    assert rendered(thread_orderedsubject(messages)) == b"(2 5)(3 (1)(4))(6)"


def test_orderedsubject_ties_by_sequence_and_uid_numbers():
    """Equal dates keep sequence order; UID THREAD shows UIDs."""
    messages = [message(2, "x", minute=0), message(1, "x", minute=0)]
    assert rendered(thread_orderedsubject(messages)) == b"(1 2)"
    assert rendered(thread_orderedsubject(messages, uid=True)) == b"(101 102)"


# -- REFERENCES, step 1 ---------------------------------------------------------------------

def test_reply_chain_by_references_and_in_reply_to():
    """References links the chain; without it the first In-Reply-To id is the parent."""
    assert references(message(1, "a", "a"), message(2, "b", "b", refs=["a"]),
                      message(3, "c", "c", irt="b")) == b"(1 2 3)"


def test_references_preferred_over_in_reply_to():
    """When References holds ids, In-Reply-To is ignored."""
    assert references(message(1, "a", "a"), message(2, "b", "b"),
                      message(3, "c", "c", refs=["a"], irt="b")) == b"(1 3)(2)"


def test_duplicate_message_id_only_first_keeps_it():
    """A second message with the same Message-ID gets a unique id (1.A), so
    replies attach to the first."""
    assert references(message(1, "a", "same"), message(2, "b", "same"),
                      message(3, "c", "c", refs=["same"])) == b"(1 3)(2)"


def test_missing_message_id_is_unique():
    """Messages without a Message-ID are separate threads."""
    assert references(message(1, "a"), message(2, "b")) == b"(1)(2)"


def test_existing_parent_link_kept_along_references():
    """1.A: a reference that already has a parent keeps it, even if a later
    References field puts it elsewhere."""
    messages = [message(1, "a", "a"), message(2, "b", "b"), message(3, "c", "c"),
                message(4, "d", "d", refs=["a", "c"]),   # c under a
                message(5, "e", "e", refs=["b", "c"])]   # c stays under a
    assert references(*messages) == b"(1 3 (4)(5))(2)"


def test_last_reference_replaces_the_parent():
    """1.B: the message's own References decide its parent, breaking an older link."""
    messages = [message(1, "m1", "m1", refs=["x", "y"]),   # y under x, m1 under y
                message(2, "m2", "y", refs=["z"]),          # y moves under z
                message(3, "m3", "m3", refs=["x"])]
    assert references(*messages) == b"(2 1)(3)"


def test_no_references_means_no_parent():
    """1.B: a message without references becomes a root even if others referenced it."""
    messages = [message(1, "m1", "m1", refs=["a", "b"]), message(2, "m2", "b")]
    assert references(*messages) == b"(2 1)"


def test_loops_are_not_created():
    """Mutual references (a -> b, b -> a) never make a loop."""
    messages = [message(1, "a", "a", refs=["b"]), message(2, "b", "b", refs=["a"])]
    assert references(*messages) == b"(2 1)"
    assert references(message(1, "self", "s", refs=["s"])) == b"(1)"
    assert references(message(1, "x", "x", refs=["p", "q", "p"])) == b"(1)"


# -- REFERENCES, step 3 (pruning) -------------------------------------------------------------

def test_dummy_inside_thread_is_replaced_by_children():
    """3.B: a missing message inside a thread: its children move up a level."""
    messages = [message(1, "a", "a"), message(2, "b", "b", refs=["a", "gone"]),
                message(3, "c", "c", refs=["a", "gone"])]
    assert references(*messages) == b"(1 (2)(3))"


def test_dummy_root_with_one_child_is_dropped():
    """3.B: a missing thread root with one child: the child is the root."""
    assert references(message(1, "a", "a", refs=["gone"])) == b"(1)"


def test_dummy_root_with_children_stays():
    """3.B: a missing thread root with several children stays, as nesting only."""
    messages = [message(1, "a", "a", refs=["gone"]), message(2, "b", "b", refs=["gone"])]
    assert references(*messages) == b"((1)(2))"


def test_chain_of_dummies_collapses():
    """Nested missing messages all disappear, their real descendants kept."""
    messages = [message(1, "a", "a", refs=["g1", "g2", "g3"]),
                message(2, "b", "b", refs=["g1", "g2", "g3", "g4"])]
    assert references(*messages) == b"((1)(2))"


# -- REFERENCES, steps 4-6 (ordering, subjects) -------------------------------------------------

def test_threads_and_siblings_sorted_by_date():
    """Roots and siblings go by sent date (a dummy by its first child), ties by number."""
    messages = [message(1, "p", "p", minute=10), message(2, "q", "q", refs=["p"], minute=30),
                message(3, "r", "r", refs=["p"], minute=20), message(4, "s", "s", minute=5),
                message(5, "t", "t", refs=["gone"], minute=1),
                message(6, "u", "u", refs=["gone"], minute=40)]
    assert references(*messages) == b"((5)(6))(4)(1 (3)(2))"


def test_subject_merge_reply_joins_original():
    """5.C: a root reply with the base subject of a non-reply root becomes its child."""
    messages = [message(1, "Re: hello", "r", minute=1), message(2, "hello", "o", minute=2)]
    assert references(*messages) == b"(2 1)"


def test_subject_merge_two_originals_get_a_dummy():
    """5.C: two non-reply roots with one subject become siblings under a dummy."""
    messages = [message(1, "hello", "a"), message(2, "hello", "b"), message(3, "other", "c")]
    assert references(*messages) == b"((1)(2))(3)"


def test_subject_merge_into_dummy_thread():
    """5.B/5.C: a dummy root is preferred; messages with its subject join it,
    and another dummy's children join it too."""
    messages = [message(1, "hello", "a", minute=1),
                message(2, "Re: hello", "b", refs=["gone1"], minute=2),
                message(3, "Re: hello", "c", refs=["gone1"], minute=3),
                message(4, "Re: hello", "d", refs=["gone2"], minute=4),
                message(5, "Re: hello", "e", refs=["gone2"], minute=5)]
    assert references(*messages) == b"((1)(2)(3)(4)(5))"


def test_subject_merge_skips_empty_subjects():
    """5.B.ii: threads without a subject are never merged."""
    messages = [message(1, "", "a"), message(2, "Re:", "b"), message(3, "", "c")]
    assert references(*messages) == b"(1)(2)(3)"


def test_subject_merge_needs_the_thread_root_subject():
    """Only roots merge: a reply deep in another thread is not pulled out."""
    messages = [message(1, "topic", "a"), message(2, "Re: topic", "b", refs=["a"]),
                message(3, "other", "c"), message(4, "Re: other", "d", refs=["c"]),
                message(5, "Re: topic", "e", refs=["c", "d"])]
    assert references(*messages) == b"(1 2)(3 4 5)"


def test_uid_thread_shows_uids():
    """UID THREAD renders UIDs instead of sequence numbers."""
    messages = [message(1, "a", "a", uid=7), message(2, "b", "b", refs=["a"], uid=9)]
    assert references(*messages, uid=True) == b"(7 9)"


# -- bounded work -----------------------------------------------------------------------------

def test_ten_thousand_deep_reply_chain():
    """10,000 messages each replying to the previous: one thread, no recursion."""
    messages = [message(1, "deep", "m1")]
    messages += [message(n, "Re: deep", "m%d" % n, irt="m%d" % (n - 1)) for n in range(2, 10001)]
    text = references(*messages)
    assert text == b"(" + b" ".join(b"%d" % n for n in range(1, 10001)) + b")"


def test_ten_thousand_id_references_field():
    """One References field of 10,000 ids (all missing) collapses to the message."""
    refs = ["r%d@x" % n for n in range(10000)]
    messages = [message(1, "a", "a", refs=refs), message(2, "b", "b", refs=refs[:5000])]
    assert references(*messages) == b"((1)(2))"



def test_long_thread_with_full_references_stays_fast():
    """1,000 messages each listing every earlier id in References (a real long
    thread): ids are compared as bytes, never decoded one by one, so one chain
    comes back quickly (1,000 x 500 ids)."""
    messages = [message(n, "Re: long", "m%d" % n, refs=["m%d" % k for k in range(1, n)])
                for n in range(1, 1001)]
    assert references(*messages) == b"(" + b" ".join(b"%d" % n for n in range(1, 1001)) + b")"


def test_message_ids_compare_as_octets():
    """RFC 5256 3: ids are matched exactly (i;octet): <A@x> does not parent <a@x>'s reply."""
    messages = [message(1, "x", "A@x"), message(2, "y", "b@x", irt="a@x")]
    assert references(*messages) == b"(1)(2)"

# -- real mail (tests/data/ham-200.mbox) --------------------------------------------------------

@pytest.fixture(scope="module")
def ham():
    facts = {}
    for number, entry in enumerate(mailbox.mbox(HAM), 1):
        raw = entry.as_bytes()
        header, _ = split_header(raw)
        ref = MessageRef(mailbox_id=1, uid=number, message_id=number, size=len(raw),
                         flags=frozenset(), modseq=1, received_at=0.0)
        facts[number] = SortFacts.from_raw(number, ref, header)
    return facts


def test_ham_reply_chain_through_missing_parent(ham):
    """Messages 5, 6, 8: 5 answers a message not present, 6 answers 5 by
    In-Reply-To, 8 answers 6 by References: one chain."""
    assert rendered(thread_references([ham[5], ham[6], ham[8]])) == b"(5 6 8)"


def test_ham_siblings_under_missing_root(ham):
    """Messages 1 and 14 answer the same missing message (through a chain of
    missing ancestors): siblings under a dummy."""
    assert rendered(thread_references([ham[1], ham[14]])) == b"((1)(14))"


def test_ham_subject_grouping(ham):
    """"The case for spam" (15) gathers the replies whose parents are missing
    (70, 72) or that start their own chain (41 73 75), ordered by date."""
    picked = [ham[n] for n in (15, 70, 41, 73, 75, 72)]
    assert rendered(thread_references(picked)) == b"(15 (70)(41 73 75)(72))"


def test_ham_whole_mailbox_has_every_message_once(ham):
    """Threading all 200 messages mentions each number exactly once."""
    text = rendered(thread_references(list(ham.values())))
    numbers = [int(token) for token in text.replace(b"(", b" ").replace(b")", b" ").split()]
    assert sorted(numbers) == list(range(1, 201))
    ordered = rendered(thread_orderedsubject(list(ham.values())))
    numbers = [int(token) for token in ordered.replace(b"(", b" ").replace(b")", b" ").split()]
    assert sorted(numbers) == list(range(1, 201))
