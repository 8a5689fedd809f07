"""Token families: tokens of one message that repeat one piece of evidence.

The chi-square combining in classifier.py treats every clue as independent.
Some tokens are not: a mailing list manager adds List-Id, List-Post,
List-Help, List-Subscribe, List-Unsubscribe, List-Archive (RFC 2369, RFC 2919),
Precedence, Errors-To, X-BeenThere and X-Mailman-Version together, so ten
clues say one thing ("relayed by a list"); and a host or address is mined at
several depths ("url:sourceforge.net", "url:lists.sourceforge.net",
"received:usw-sf-list1.sourceforge.net"). Counted ten times, one such fact
outweighs the words of the message, which is how spam relayed by a list read
as ham. As SpamBayes does for a word and the word pair it starts ("tiling"),
the classifier keeps only the strongest clue of each family.

IP prefixes ("received:216", "received:216.136") stay apart: collapsing them
too cost a misfiled ham in cross-validation (a short auto-reply whose /16 was
its only hammy header clue) and caught no more spam.
"""

from __future__ import annotations

# Fields a list manager writes together (RFC 2369 3, RFC 2919 3; Mailman, Majordomo,
# ezmlm and Sympa add the last ones). As the tokenizer names their presence and values.
LIST_FAMILY = frozenset((
    "header:list-id:1", "header:list-unsubscribe:1", "header:list-post:1", "header:list-help:1",
    "header:list-archive:1", "header:list-subscribe:1", "header:list-unsubscribe-post:1",
    "header:x-beenthere:1", "header:x-mailman-version:1", "header:precedence:1", "header:errors-to:1",
    "header:x-loop:1", "header:mailing-list:1", "precedence:bulk", "precedence:list",
))
# Tokens naming a domain at several depths (tokenizer._domain_suffixes), by the text
# before their first ":" (From and Reply-To: only their "domain:" tokens).
NESTED_HEADS = frozenset(("received", "origin", "url", "email addr", "from", "reply-to"))


def token_family(token: str) -> str:
    """The family a token belongs to: itself unless it is one of the kinds above."""
    if token in LIST_FAMILY:
        return "family:list"
    head, sep, rest = token.partition(":")
    if not sep or head not in NESTED_HEADS:  # most tokens: words, pairs, other fields
        return token
    if head in ("from", "reply-to"):
        if not rest.startswith("domain:"):
            return token
        head, rest = head + ":domain", rest[len("domain:"):]
    labels = rest.split(".")
    if len(labels) < 2 or rest.replace(".", "").isdigit():  # a path piece, an IP prefix
        return token
    return f"{head}:{'.'.join(labels[-2:])}"  # a domain: its last two labels
