"""Email/query text conditions become IMAP SearchKeys (RFC 8621 4.4.1 -> RFC 3501 6.4.4)."""

from __future__ import annotations

import pytest

from mailserverd.imap.search import SearchKey
from mailserverd.jmap.api import MethodError
from mailserverd.jmap.email import FILTERS
from mailserverd.jmap.filters import parse_filter
from mailserverd.jmap.snippet import terms_of
from mailserverd.jmap.textfilter import check_header, text_key


def test_conditions_map_to_search_keys():
    """Each text condition maps to its IMAP key; several in one object are ANDed;
    header [name] is HEADER name "" (any message with the field); others are no text."""
    assert text_key({"body": "x"}) == SearchKey("BODY", ("x",))
    assert text_key({"text": "x"}) == SearchKey("TEXT", ("x",))
    assert text_key({"header": ["List-Id"]}) == SearchKey("HEADER", ("List-Id", ""))
    assert text_key({"from": "a", "bcc": "b", "inMailbox": "m1"}) == SearchKey(
        "AND", (SearchKey("FROM", ("a",)), SearchKey("BCC", ("b",))))
    assert text_key({"inMailbox": "m1", "notKeyword": "$seen"}) is None


@pytest.mark.parametrize("value", [[], ["a", "b", "c"], ["a b"], ["x:"], [""], ["X", 1]])
def test_bad_header_conditions(value):
    """header is [name] or [name, value] with a field name: anything else is invalidArguments."""
    with pytest.raises(MethodError) as raised:
        check_header({"header": value})
    assert raised.value.kind == "invalidArguments"


def test_snippet_terms_include_body():
    """SearchSnippet marks body terms too (they may show in the preview); NOT terms are not marked."""
    tree = parse_filter({"operator": "AND", "conditions": [
        {"body": "linux"}, {"operator": "NOT", "conditions": [{"text": "spam"}]}]}, FILTERS)
    assert terms_of(tree) == ["linux"]
