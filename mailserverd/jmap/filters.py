"""/query filters and sorts (RFC 8620 5.5): FilterOperator trees of
FilterConditions, and Comparators."""

from __future__ import annotations

from .api import MethodError

MAX_FILTER_NODES = 200
COLLATIONS = ("i;unicode-casemap",)


def parse_filter(value, known: dict):
    """A checked filter tree: None, ("AND"|"OR"|"NOT", [children]) or a condition
    dict. known maps each condition property to the types its value may have."""
    count = [0]

    def walk(node, depth):
        count[0] += 1
        if count[0] > MAX_FILTER_NODES or depth > 20:
            raise MethodError("unsupportedFilter", "the filter is too large")
        if not isinstance(node, dict):
            raise MethodError("invalidArguments", "a filter is an object")
        if "operator" in node:
            if set(node) != {"operator", "conditions"} or node["operator"] not in ("AND", "OR", "NOT") \
                    or not isinstance(node["conditions"], list):
                raise MethodError("invalidArguments", "a FilterOperator has operator and conditions")
            return node["operator"], [walk(child, depth + 1) for child in node["conditions"]]
        for key, item in node.items():
            if key not in known:
                raise MethodError("unsupportedFilter", f"unknown filter condition {key}")
            if not isinstance(item, known[key]) or (isinstance(item, bool) and bool not in known[key]):
                raise MethodError("invalidArguments", f"bad value for filter condition {key}")
        return node
    return None if value is None else walk(value, 0)


def matches(tree, test) -> bool:
    """Evaluate a parsed filter; test(condition dict) decides one condition."""
    if tree is None:
        return True
    if isinstance(tree, tuple):
        operator, children = tree
        if operator == "AND":
            return all(matches(child, test) for child in children)
        if operator == "OR":
            return any(matches(child, test) for child in children)
        return not any(matches(child, test) for child in children)
    return test(tree)


def parse_sort(value, allowed: tuple, keyword_props: tuple = ()) -> list[tuple[str, bool]]:
    """[(property, isAscending)] of a sort argument; unsupportedSort for others. A
    property of keyword_props takes the Comparator's "keyword" (RFC 8621 4.4.2) and
    comes back as "property keyword" (a keyword holds no space)."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 10:
        raise MethodError("invalidArguments", "sort is an array of Comparators")
    out = []
    for comparator in value:
        if not isinstance(comparator, dict) or not isinstance(comparator.get("property"), str):
            raise MethodError("invalidArguments", "a Comparator has a property")
        # Other members are ignored: jmapc 0.4 puts the /query window arguments
        # (position, anchorOffset, calculateTotal) into each Comparator.
        if comparator["property"] not in allowed:
            raise MethodError("unsupportedSort", f"cannot sort by {comparator['property']}")
        if comparator.get("collation", COLLATIONS[0]) not in COLLATIONS:
            raise MethodError("unsupportedSort", f"unknown collation {comparator['collation']}")
        ascending = comparator.get("isAscending", True)
        if not isinstance(ascending, bool):
            raise MethodError("invalidArguments", "isAscending is a boolean")
        prop = comparator["property"]
        if prop in keyword_props:
            keyword = comparator.get("keyword")
            if not isinstance(keyword, str) or not _keyword(keyword):
                raise MethodError("invalidArguments", f"sorting by {prop} takes a keyword")
            prop = f"{prop} {keyword.lower()}"
        out.append((prop, ascending))
    return out


def _keyword(value: str) -> bool:
    """RFC 8621 4.1.1 keyword characters (IMAP atom characters, no "]")."""
    return 0 < len(value) <= 255 and all("\x21" <= c <= "\x7e" and c not in '(){]%*"\\' for c in value)
