"""SearchSnippet/get (RFC 8621 5.1): the subject and preview of each email with
the filter's search terms marked.

Terms are the values of the filter's text, subject and body conditions (the ones
Email/query matches as substrings, case-insensitively). A snippet is
HTML-escaped text with each match in <mark></mark>; null when nothing in
that field matches (5.1: "null if no match").
"""

from __future__ import annotations

import html
import re

from ..store import jmapreads
from .api import MethodError, method
from .core import check_account, check_known, parse_id
from .email import FILTERS, _validate_values
from .filters import parse_filter

TERM_FIELDS = ("text", "subject", "body")
MAX_TERMS = 20


def terms_of(tree) -> list[str]:
    """Search terms of a parsed filter (those under NOT excluded), longest first."""
    found: list[str] = []

    def walk(node, negated):
        if node is None:
            return
        if isinstance(node, tuple):
            for child in node[1]:
                walk(child, negated or node[0] == "NOT")
            return
        if not negated:
            found.extend(node[key] for key in TERM_FIELDS if isinstance(node.get(key), str) and node[key])
    walk(tree, False)
    return sorted(set(found), key=len, reverse=True)[:MAX_TERMS]


def highlight(text: str | None, terms: list[str]) -> str | None:
    if not text or not terms:
        return None
    pattern = re.compile("|".join(re.escape(term) for term in terms), re.IGNORECASE)
    pieces, position, matched = [], 0, False
    for match in pattern.finditer(text):
        pieces.append(html.escape(text[position:match.start()]))
        pieces.append("<mark>" + html.escape(match.group(0)) + "</mark>")
        position, matched = match.end(), True
    if not matched:
        return None
    pieces.append(html.escape(text[position:]))
    return "".join(pieces)


@method("SearchSnippet/get")
async def get(ctx, args):
    check_account(ctx, args)
    check_known(args, {"filter", "emailIds"})
    tree = parse_filter(args.get("filter"), FILTERS)
    _validate_values(tree)
    ids = args.get("emailIds")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise MethodError("invalidArguments", "emailIds is an array of ids")
    if len(ids) > ctx.limits["maxObjectsInGet"]:
        raise MethodError("requestTooLarge", f"more than {ctx.limits['maxObjectsInGet']} ids")
    numbers = {i: parse_id(i, "e") for i in dict.fromkeys(ids)}
    found = await ctx.store.run_read(jmapreads.emails, ctx.account,
                                     [n for n in numbers.values() if n is not None]) if numbers else {}
    terms = terms_of(tree)
    listed = [{"emailId": i, "subject": highlight(found[n]["subject"], terms),
               "preview": highlight(found[n]["preview"], terms)}
              for i, n in numbers.items() if n in found]
    return {"accountId": ctx.account_id, "list": listed,
            "notFound": [i for i, n in numbers.items() if n not in found] or None}
