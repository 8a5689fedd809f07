"""Email/get's reads, and the header properties of a mail list remembered per
message content (RFC 8621 4.1.3 convenience properties).

A mail list asks Email/get for from, subject and the like of the same Emails
again and again; each is parsed from the message's header (emailparse), which
means reading the whole message from the blob store and running the address
parser. A message's bytes never change once stored (the blob is
content-addressed, the prepend written once), so the parsed values are kept
under (blob id, prepend): exactly what parsing would give again, for any
account and any store. Only the HEADER_PROPS of email.py are kept, at most
SIZE messages, the oldest forgotten first; an Email/get that needs anything
else from the message (headers, header:..., the body) reads it as before.
"""

from __future__ import annotations

import threading

from ..store import jmapreads
from .emailparse import header_value, top_header

SIZE = 20_000  # messages; a few hundred bytes each


class HeaderCache:
    def __init__(self, size: int = SIZE):
        self.size = size
        self._items: dict[tuple[str, bytes], dict] = {}
        self._lock = threading.Lock()  # filled from the store's read threads

    def values(self, key, raw: bytes | None, props: list[str], forms: dict) -> dict | None:
        """{prop: value} of props for the message `key`, parsing raw for those not
        known yet (None when some are unknown and raw is None)."""
        known = self._items.get(key)
        if known is not None and all(p in known for p in props):
            return known
        if raw is None:
            return None
        header = top_header(raw)
        fresh = dict(known or {})
        for prop in props:
            if prop not in fresh:
                fresh[prop] = header_value(header, *forms[prop], False)
        with self._lock:
            if key not in self._items and len(self._items) >= self.size:
                del self._items[next(iter(self._items))]
            self._items[key] = fresh
        return fresh


CACHE = HeaderCache()


def read_for_get(mail, account, numbers, mode: str, props: list[str], forms: dict):
    """(emails, raws, headers) for Email/get, run on the read pool in one trip:
    emails(numbers); {id: raw message} when mode is "raw" (body or other header
    properties wanted); {id: {prop: value}} of the cached header props when mode
    is "headers", reading only the messages not remembered yet. A message whose
    bytes cannot be read is absent from raws / headers (notFound)."""
    found = jmapreads.emails(mail, account, numbers, with_keys=mode == "headers")
    if mode == "none" or not found:
        return found, {}, {}
    if mode == "raw":
        return found, jmapreads.raw_messages(mail, account, list(found)), {}
    keys = {n: item.pop("raw_key") for n, item in found.items()}
    headers = {n: CACHE.values(key, None, props, forms) for n, key in keys.items()}
    missing = {n: keys[n] for n, value in headers.items() if value is None}
    raws = jmapreads.raws_of(mail, account, missing) if missing else {}
    for number in missing:
        headers[number] = CACHE.values(keys[number], raws[number], props, forms) if number in raws else None
    return found, {}, {n: value for n, value in headers.items() if value is not None}


def page_and_get(mail, account, page: tuple, mode: str, props: list[str], forms: dict):
    """(ids, total, read_for_get of those ids): an Email/query page and the Email/get
    that follows it by reference, in one trip to the read pool (email.py _read_ahead)."""
    ids, count = jmapreads.mailbox_page(mail, account, *page)
    return ids, count, read_for_get(mail, account, ids, mode, props, forms)


def copied(value):
    """A cached value for one answer: lists and address objects are the answer's own."""
    if isinstance(value, list):
        return [dict(item) if isinstance(item, dict) else item for item in value]
    return value
