"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 3), rendered as the
RFC 5256 4 thread response.

Every walk is iterative (explicit stacks, no recursion), so a References
chain or a reply chain of any length cannot exhaust the interpreter's stack.

A thread is a node (number, children): number is a sequence number (a UID
for UID THREAD) or None for a dummy parent; children is a list of nodes.
"""

from __future__ import annotations

import re
from itertools import count
from typing import Optional

from ..mime.summary import MAX_MSG_ID
from . import responses
from .sort import SortFacts

MAX_REFERENCES = 10000  # ids read from one References field: the first and the last 9999
# msg-id (RFC 5322 3.6.4) as mime.summary.message_ids finds it, kept as bytes: ids are
# only compared (i;octet), and decoding millions of them dominated long threads.
_MSG_ID = re.compile(rb"<[^<>\s]{1,%d}>" % (MAX_MSG_ID - 2))
_BARE_ID = re.compile(rb"[^<>\s,;\"()]{1,%d}@[^<>\s,;\"()]{1,%d}" % (MAX_MSG_ID // 2, MAX_MSG_ID // 2))


def render_thread(threads: list) -> bytes:
    """`* THREAD (2)(3 6 (4 23)(44 7 96))\\r\\n` (RFC 5256 4)."""
    return responses.thread_response(threads)


def _number(facts: SortFacts, uid: bool) -> int:
    return facts.ref.uid if uid else facts.seq


def _date_order(facts: SortFacts) -> tuple:
    """RFC 5256 2.2: sent date, ties by sequence number."""
    return (facts.sent_date(), facts.seq)


# -- ORDEREDSUBJECT (RFC 5256 3) ---------------------------------------------------

def thread_orderedsubject(facts_list: list[SortFacts], uid: bool = False) -> list:
    """Sort by base subject then sent date, split into one thread per base
    subject, order threads by their first message's sent date; the first
    message parents the rest, which are siblings."""
    groups: dict[str, list[SortFacts]] = {}
    for facts in sorted(facts_list, key=_date_order):
        groups.setdefault(facts.base_subject, []).append(facts)
    threads = []
    for members in sorted(groups.values(), key=lambda group: _date_order(group[0])):
        children = [(_number(facts, uid), []) for facts in members[1:]]
        threads.append((_number(members[0], uid), children))
    return threads


# -- REFERENCES (RFC 5256 3) ---------------------------------------------------------

class _Container:
    """A message or a dummy (facts None) in the thread tree."""

    __slots__ = ("facts", "parent", "children")

    def __init__(self, facts: Optional[SortFacts] = None):
        self.facts = facts
        self.parent: Optional[_Container] = None
        self.children: list[_Container] = []

    def is_ancestor_of(self, other: "_Container") -> bool:
        """Whether self is `other` or above it (walks up: depth steps)."""
        if not self.children:
            return other is self  # a leaf is nobody's ancestor
        node = other
        while node is not None:
            if node is self:
                return True
            node = node.parent
        return False

    def sort_order(self) -> tuple:
        """A message's date order; a dummy's is its first child's (steps 4 and 6)."""
        if self.facts is not None:
            return _date_order(self.facts)
        first = min((child.sort_order() for child in self.children if child.facts is not None),
                    default=None)
        return first if first is not None else (0.0, 0)


def _link(parent: _Container, child: _Container) -> None:
    _unlink(child)
    child.parent = parent
    parent.children.append(child)


def _unlink(child: _Container) -> None:
    if child.parent is not None:
        child.parent.children.remove(child)
        child.parent = None


def message_ids(value: Optional[bytes], limit: int) -> list[bytes]:
    """The msg-ids of a Message-ID / In-Reply-To / References field, "<...>"
    included; ids without angle brackets (old mail) count when they hold "@".
    Past `limit`, the first id (the thread root) and the last limit - 1 are kept."""
    if not value:
        return []
    found = _MSG_ID.findall(value)
    if not found:
        found = [b"<" + bare + b">" for bare in _BARE_ID.findall(value)]
    if len(found) > limit:
        found = found[:1] + found[len(found) - limit + 1:] if limit > 1 else found[:1]
    return found


def _references(facts: SortFacts) -> list[bytes]:
    """RFC 5256 3 step 1: the References ids, else the first In-Reply-To id."""
    found = message_ids(facts.fields.get("references"), MAX_REFERENCES)
    if found:
        return found
    return message_ids(facts.fields.get("in-reply-to"), 1)[:1]


def thread_references(facts_list: list[SortFacts], uid: bool = False) -> list:
    """RFC 5256 3 REFERENCES, steps 1-6."""
    containers = _link_messages(facts_list)
    roots = [node for node in containers if node.parent is None]  # step 2
    roots = _prune(roots)  # step 3
    roots.sort(key=_Container.sort_order)  # step 4
    roots = _merge_by_subject(roots)  # step 5
    _sort_siblings(roots)  # step 6
    return [_as_node(root, uid) for root in roots]


def _link_messages(facts_list: list[SortFacts]) -> list[_Container]:
    """Step 1: one container per message and per referenced id, linked parent
    to child along each message's references."""
    table: dict[bytes, _Container] = {}
    unique = count()
    for facts in sorted(facts_list, key=lambda f: f.seq):
        ids = message_ids(facts.fields.get("message-id"), 1)
        key = ids[0] if ids else None
        # 1.A: a missing, invalid or duplicate Message-ID gets a unique one; the
        # first message (lowest sequence number) keeps a duplicated id.
        if key is None or (key in table and table[key].facts is not None):
            key = b"\0unique%d" % next(unique)
        container = table.get(key)
        if container is None:
            container = table[key] = _Container()
        container.facts = facts
        previous = None
        for reference in _references(facts):
            node = table.get(reference)
            if node is None:
                node = table[reference] = _Container()  # a dummy until its message turns up
            # 1.A: link each reference to the next, never replacing an existing
            # parent (the field may have been truncated) and never making a loop.
            if previous is not None and node.parent is None and node is not previous \
                    and not node.is_ancestor_of(previous):
                _link(previous, node)
            previous = node
        # 1.B: the last reference is the message's parent; an existing parent
        # link is broken first; a link that would make a loop is not made.
        _unlink(container)
        if previous is not None and not container.is_ancestor_of(previous):
            _link(previous, container)
    return list(table.values())


def _postorder(roots: list[_Container]) -> list[_Container]:
    """Every node under `roots`, children before their parent."""
    out: list[_Container] = []
    stack = [(root, False) for root in reversed(roots)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            out.append(node)
            continue
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node.children))
    return out


def _prune(roots: list[_Container]) -> list[_Container]:
    """Step 3: delete dummies without children (3.A); replace a dummy by its
    children (3.B), except that a dummy at the top level stays when it has
    several children (promoting them would make them children of the root)."""
    for node in _postorder(roots):  # children first, so promoted nodes are final
        if node.facts is not None or node.parent is None:
            continue
        parent = node.parent
        index = parent.children.index(node)
        for child in node.children:
            child.parent = parent
        parent.children[index:index + 1] = node.children
        node.children = []
        node.parent = None
    kept = []
    for root in roots:
        if root.facts is None:
            if not root.children:
                continue  # 3.A
            if len(root.children) == 1:  # 3.B: a single child may become a root
                child = root.children[0]
                child.parent = None
                kept.append(child)
                continue
        kept.append(root)
    return kept


def _thread_subject(node: _Container) -> tuple[str, bool]:
    """Step 5.B.i: the base subject of the message, or of a dummy's first child."""
    facts = node.facts
    if facts is None:
        facts = min((child.facts for child in node.children if child.facts is not None),
                    key=_date_order, default=None)
    if facts is None:
        return "", False
    return facts.base_subject, facts.is_reply_or_forward


def _is_reply(node: _Container) -> bool:
    return node.facts is not None and node.facts.is_reply_or_forward


def _merge_by_subject(roots: list[_Container]) -> list[_Container]:
    """Step 5: gather root threads that share a (non-empty) base subject."""
    subjects = [_thread_subject(root)[0] for root in roots]
    table: dict[str, _Container] = {}
    for root, subject in zip(roots, subjects):  # 5.B: one thread per subject
        if not subject:
            continue
        held = table.get(subject)
        if held is None:
            table[subject] = root
        elif held.facts is not None and (root.facts is None
                                         or (_is_reply(held) and not _is_reply(root))):
            table[subject] = root
    new_dummies = []
    for root, subject in zip(roots, subjects):  # 5.C: merge
        held = table.get(subject) if subject else None
        if held is None or held is root:
            continue
        if held.facts is None and root.facts is None:
            for child in list(root.children):
                _link(held, child)
        elif held.facts is None:
            _link(held, root)
        elif _is_reply(root) and not _is_reply(held):
            _link(held, root)
        else:
            dummy = _Container()
            _link(dummy, held)
            _link(dummy, root)
            table[subject] = dummy
            new_dummies.append(dummy)
    # A root merged into another thread now has a parent; a dummy root whose
    # children moved away is empty and gone. Step 6 puts the rest in order.
    return [root for root in roots + new_dummies
            if root.parent is None and (root.facts is not None or root.children)]


def _sort_siblings(roots: list[_Container]) -> None:
    """Step 6: sort every set of siblings by sent date, deepest first; a dummy
    (only at the top) sorts by its first child."""
    for node in _postorder(roots):
        node.children.sort(key=_Container.sort_order)
    roots.sort(key=_Container.sort_order)


def _as_node(root: _Container, uid: bool) -> tuple:
    converted: dict[int, tuple] = {}
    for node in _postorder([root]):
        number = _number(node.facts, uid) if node.facts is not None else None
        converted[id(node)] = (number, [converted.pop(id(child)) for child in node.children])
    return converted[id(root)]
