"""What the index holds for a message, and the folding shared by index and queries.

fold() is case folding (str.casefold, as IMAP SEARCH compares), then NFKD
with combining marks dropped (accent-insensitive). It maps each character on
its own, so if a needle is a substring of a text, fold(needle) is a
substring of fold(text); tokens are maximal runs of word characters (\\w, any
script), so every word token of a folded needle is found in the folded text
as a whole token, a token suffix (the needle's first word) or a token
prefix (its last word). query.py relies on exactly that to narrow without
losing a match.

The texts indexed per field are the very texts imap/search_eval.MessageFacts
searches (decoded Subject, address forms, all header lines, decoded body
text of every text part including HTML as visible text and text
attachments), plus attachment file names for JMAP.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from ..imap.search_eval import MessageFacts
from ..mime.headers import decode_words
from ..mime.structure import MessageTooComplex, iter_parts
from ..store.api import MessageRef

TOKEN = re.compile(r"\w+")
FIELDS = ("subject", "from", "to", "cc", "bcc", "headers", "body", "attachments")
ADDRESS_FIELDS = ("from", "to", "cc", "bcc")
# Fields holding exactly the case-folded text a SEARCH key compares (query.py proofs).
PROVABLE = ("subject", "from", "to", "cc", "bcc", "headers", "body")
MAX_TOKEN = 240  # longer runs (encoded junk) make the document "scan" (always a candidate)


@lru_cache(maxsize=1)
def _marks() -> re.Pattern:
    """Every combining mark (general category M*), built once; marks live only in
    planes 0, 1 and 14 (variation selectors)."""
    ranges, start = [], None
    for code in list(range(0x300, 0x20000)) + list(range(0xE0000, 0xE1000)):
        is_mark = unicodedata.category(chr(code))[0] == "M"
        if is_mark and start is None:
            start = code
        elif not is_mark and start is not None:
            ranges.append((start, code - 1))
            start = None
    return re.compile("[%s]" % "".join("%s-%s" % (re.escape(chr(a)), re.escape(chr(b))) for a, b in ranges))


def fold(text: str) -> str:
    """Case- and accent-insensitive form, character by character (see module docstring)."""
    folded = text.casefold()
    if folded.isascii():
        return folded
    return _marks().sub("", unicodedata.normalize("NFKD", folded))


def tokens(text: str) -> list[str]:
    """Word tokens of already folded text."""
    return TOKEN.findall(text)


_REF = MessageRef(mailbox_id=0, uid=0, message_id=0, size=0, flags=frozenset(), modseq=0, received_at=0.0)


def document(raw: bytes) -> tuple[dict, bool]:
    """({field: set of folded tokens}, scan) for a message; scan means some text could not
    be tokenised faithfully (a token longer than MAX_TOKEN), so the message
    must be a candidate for every text search."""
    facts = MessageFacts(seq=0, ref=_REF, raw=raw)
    texts = {
        "subject": "\n".join(facts.header_values("subject")),
        "headers": facts.header_text(),
        "body": facts.body_text(),
        "attachments": "\n".join(attachment_names(raw)),
    }
    for name in ADDRESS_FIELDS:
        texts[name] = "\n".join(facts.address_texts(name))
    words, plain = {}, set()
    for name, value in texts.items():
        folded = fold(value)
        if folded == value and name in PROVABLE:
            plain.add(name)
        words[name] = set(TOKEN.findall(folded))
    words["plain"] = plain
    scan = any(len(token) > MAX_TOKEN for value in words.values() for token in value)
    # "plain" lists the PROVABLE fields whose text folding leaves unchanged (no accents,
    # ligatures...): there a term containing a one-word needle proves the substring.
    return words, scan


def attachment_names(raw: bytes) -> list[str]:
    """filename (RFC 2183) or name parameters of the message's parts, decoded."""
    names = []
    try:
        for part in iter_parts(raw):
            name = part.disposition_params.get("filename") or part.params.get("name")
            if name:
                names.append(decode_words(name) if "=?" in name else name)
    except MessageTooComplex:
        pass
    return names


__all__ = ["fold", "tokens", "document", "FIELDS", "TOKEN", "attachment_names"]
