"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 3). Every walk is
iterative: a References chain of any length cannot exhaust the stack.

Threads are nodes (number, children); number None is a dummy parent.
"""

from __future__ import annotations

import re
from itertools import count

from . import responses
from .sort import SortFacts

_MSGID = re.compile(rb"<([^<>\s]+)>")
_REPLY_SUBJECT = re.compile(r"^\s*(re|fwd?)\s*(\[[^\]]*\]\s*)*:", re.I)


def render_thread(threads) -> bytes:
    return responses.thread_response(threads)


def thread_orderedsubject(facts_list: list[SortFacts], uid: bool = False):
    """Group by base subject; the first message (by date) parents the rest."""
    groups: dict[str, list[SortFacts]] = {}
    for facts in sorted(facts_list, key=lambda f: (f.sent_date(), f.seq)):
        groups.setdefault(facts.base_subject, []).append(facts)
    threads = []
    for members in sorted(groups.values(), key=lambda g: (g[0].sent_date(), g[0].seq)):
        children = [(_number(f, uid), []) for f in members[1:]]
        threads.append((_number(members[0], uid), children))
    return threads


def _number(facts: SortFacts, uid: bool) -> int:
    return facts.ref.uid if uid else facts.seq


class _Container:
    __slots__ = ("facts", "parent", "children")

    def __init__(self):
        self.facts = None
        self.parent = None
        self.children: list = []

    def is_ancestor_of(self, other) -> bool:
        node = other
        while node is not None:
            if node is self:
                return True
            node = node.parent
        return False


def _link(parent: _Container, child: _Container) -> None:
    if child.parent is not None:
        child.parent.children.remove(child)
    child.parent = parent
    parent.children.append(child)


def _message_ids(value: bytes | None) -> list[str]:
    return [m.decode("latin-1") for m in _MSGID.findall(value or b"")]


def thread_references(facts_list: list[SortFacts], uid: bool = False):
    """RFC 5256 3 REFERENCES: link by Message-ID/References/In-Reply-To, prune
    dummies, group roots by base subject, sort siblings by date."""
    table: dict[str, _Container] = {}
    unique = count()
    for facts in sorted(facts_list, key=lambda f: f.seq):
        ids = _message_ids(facts.fields.get("message-id"))
        key = ids[0] if ids else None
        if key is None or (key in table and table[key].facts is not None):
            key = "\0unique%d" % next(unique)  # missing or duplicate Message-ID (1.A)
        container = table.setdefault(key, _Container())
        container.facts = facts
        references = _message_ids(facts.fields.get("references"))
        if not references:
            references = _message_ids(facts.fields.get("in-reply-to"))[:1]
        previous = None
        for ref_id in references:  # 1.B: link the chain, never making a loop
            node = table.setdefault(ref_id, _Container())
            if previous is not None and node.parent is None and not node.is_ancestor_of(previous) \
                    and node is not previous:
                _link(previous, node)
            previous = node
        # 1.C: the last reference is this message's parent: the old parent goes
        # first, and a parent that would make a loop is not linked at all.
        if container.parent is not None:
            container.parent.children.remove(container)
            container.parent = None
        if previous is not None and previous is not container and not container.is_ancestor_of(previous):
            _link(previous, container)
    roots = [c for c in table.values() if c.parent is None]
    roots = _prune(roots)
    roots = _group_by_subject(roots)
    _sort_tree(roots)
    return [_as_node(root, uid) for root in roots]


def _postorder(roots):
    out, stack = [], [(root, False) for root in reversed(roots)]
    while stack:
        node, done = stack.pop()
        if done:
            out.append(node)
            continue
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node.children))
    return out


def _prune(roots: list[_Container]) -> list[_Container]:
    """RFC 5256 3 step 3: drop empty dummies; promote a dummy's children,
    except a root dummy with several children."""
    root_set = set(map(id, roots))
    for node in _postorder(roots):
        if node.facts is not None:
            continue
        if not node.children:
            if node.parent is not None:
                node.parent.children.remove(node)
            continue
        if node.parent is None:
            continue  # root dummies are handled below
        parent = node.parent
        index = parent.children.index(node)
        for child in node.children:
            child.parent = parent
        parent.children[index:index + 1] = node.children
        node.children = []
    result = []
    for root in roots:
        if root.facts is None:
            if not root.children:
                continue
            if len(root.children) == 1:
                child = root.children[0]
                child.parent = None
                result.append(child)
                continue
        result.append(root)
    del root_set
    return result


def _date(node: _Container) -> tuple:
    """A thread's date: its message, or for a dummy the earliest child (step 4)."""
    if node.facts is not None:
        return (node.facts.sent_date(), node.facts.seq)
    return min((_date(child) for child in node.children), default=(0.0, 0))


def _subject_of(node: _Container) -> str:
    facts = node.facts if node.facts is not None else min(
        (c.facts for c in node.children if c.facts is not None),
        key=lambda f: (f.sent_date(), f.seq), default=None)
    return facts.base_subject if facts is not None else ""


def _is_reply(node: _Container) -> bool:
    return node.facts is not None and bool(_REPLY_SUBJECT.match(node.facts.text("subject")))


def _group_by_subject(roots: list[_Container]) -> list[_Container]:
    """RFC 5256 3 step 5: merge root threads that share a base subject."""
    roots = sorted(roots, key=_date)
    by_subject: dict[str, _Container] = {}
    result = []
    for root in roots:
        subject = _subject_of(root)
        if not subject or subject not in by_subject:
            if subject:
                by_subject[subject] = root
            result.append(root)
            continue
        first = by_subject[subject]
        if first.facts is None and root.facts is None:
            for child in list(root.children):
                _link(first, child)
        elif first.facts is None:
            _link(first, root)
        elif root.facts is None:
            _link(root, first)
            result[result.index(first)] = root
            by_subject[subject] = root
        elif _is_reply(root) and not _is_reply(first):
            _link(first, root)
        elif _is_reply(first) and not _is_reply(root):
            first_index = result.index(first)
            _link(root, first)
            result[first_index] = root
            by_subject[subject] = root
        else:
            dummy = _Container()
            index = result.index(first)
            _link(dummy, first)
            _link(dummy, root)
            result[index] = dummy
            by_subject[subject] = dummy
    return result


def _sort_tree(roots: list[_Container]) -> None:
    """Step 6: siblings in date order (ties by sequence number); roots likewise."""
    for node in _postorder(roots):
        node.children.sort(key=_date)
    roots.sort(key=_date)


def _as_node(root: _Container, uid: bool):
    converted = {}
    for node in _postorder([root]):
        number = _number(node.facts, uid) if node.facts is not None else None
        converted[id(node)] = (number, [converted[id(child)] for child in node.children])
    return converted[id(root)]
