"""Message -> set of tokens for the statistical spam classifier.

In the manner of SpamBayes (Tim Peters' tokenizer): body words split on white
space, lower-cased, 3 to 12 characters (longer ones become a "skip" token of
their first character and length bucket); URLs and e-mail addresses broken
into their parts; header fields mined with a prefix naming the field, so
"subject:free" and "free" learn separately. Every clue is a token: header
presence, auth results, part types, HTML tags; the classifier learns how
much each one says, nothing here scores.

Bounded work: each text part is read up to MAX_PART_BYTES decoded, at most
MAX_PARTS leaves, so a huge or deeply nested message costs the same as a
normal one. Never raises on malformed input.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import unicodedata
from typing import Optional

from ..mime.headers import decode_bytes, decode_words, iter_fields, parse_content_type, split_header
from ..mime.structure import MessageTooComplex, iter_parts
from ..mime.text import decode_transfer, html_to_text
from .words import (MAX_BIGRAM_CHARS, NON_WORD_EDGES, bigrams, body_shape, bucket, charset_mismatch, cjk_tokens,
                    decode_text, subject_shape, words)

MAX_PART_BYTES = 64 * 1024  # decoded text read from one part
MAX_PARTS = 50
MAX_HEADER_FIELDS = 200
MAX_TOKENS = 5000
# Received hops mined, nearest first. Mail relayed by a mailing list carries the
# list's own hops on top; the sender's hops below them say where it came from.
MAX_RECEIVED = 6

# Fields we (or a later hop of ours) add: never evidence about the sender.
OWN_FIELDS = frozenset(("x-spam-score", "x-spam-status", "x-spam-flag", "x-spam-level",
                        "x-spam-checker-version", "x-spam-report", "authentication-results",
                        "arc-authentication-results", "return-path", "delivered-to", "x-original-to",
                        "status", "x-status", "x-keywords", "x-uid", "content-length", "lines"))
# Fields whose mere presence (and count) is a token, and fields whose value is.
# Other X- fields are not: relays and filters on the way add their own (X-Virus-Scanned,
# X-MIME-Autoconverted), which say which site the training mail passed, not who sent it.
PRESENCE_FIELDS = frozenset((
    "list-id", "list-unsubscribe", "list-unsubscribe-post", "list-post", "list-help", "list-archive",
    "list-subscribe", "mailing-list", "precedence", "in-reply-to", "references", "reply-to", "sender",
    "organization", "user-agent", "x-mailer", "x-priority", "x-msmail-priority", "importance",
    "mime-version", "date", "message-id", "cc", "to", "errors-to", "x-mimeole", "thread-index",
    "x-beenthere", "x-mailman-version", "x-loop", "dkim-signature", "feedback-id", "auto-submitted",
    "x-auto-response-suppress", "disposition-notification-to", "x-confirm-reading-to",
    "content-disposition", "x-originating-ip", "x-complaints-to", "x-abuse-info", "bcc",
))
VALUE_FIELDS = frozenset(("precedence", "x-priority", "x-msmail-priority", "importance",
                          "content-transfer-encoding", "mime-version", "auto-submitted"))

_URL = re.compile(r"(?:https?|ftp)://[^\s<>\"'()\[\]{}]{1,500}|www\.[a-z0-9-]{1,63}\.[^\s<>\"'()\[\]{}]{1,400}",
                  re.I)
_HREF = re.compile(r"""(?:href|src|action)\s*=\s*["']?([^"'\s>]{1,500})""", re.I)
_EMAIL = re.compile(r"[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")
_TAG = re.compile(r"<\s*([a-z][a-z0-9]{0,10})\b", re.I)
_URL_SPLIT = re.compile(r"[/?=&.:;%#+_~-]+")
_RECEIVED_FROM = re.compile(r"\bfrom\s+([^\s()\[\];]{1,255})", re.I)
_RECEIVED_IP = re.compile(r"[\[(](?:ipv6:)?(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.\d{1,3}[\])]")
_RECEIVED_BY = re.compile(r"\bby\s+([^\s()\[\];]{1,255})", re.I)
_DYNAMIC_HOST = re.compile(r"\d+[.-]\d+|\d{4,}|dsl|dial|dyn|pool|ppp|cable|adsl")
_WITH = re.compile(r"\bwith\s+([A-Za-z0-9-]{1,20})", re.I)
_MSGID_DOMAIN = re.compile(r"@([^>\s]{1,255})>?\s*$")
_HOSTNAME = re.compile(r"[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})+")
_SUBJECT_PREFIX = re.compile(r"\s*(?:\[[^\]]{1,40}\]\s*)?(re|aw|sv|fwd?|wg|tr)\s*(?:\[\d+\])?\s*:", re.I)
_CORE_FIELDS = {"from": "f", "to": "t", "subject": "s", "date": "d", "message-id": "i", "cc": "c",
                "reply-to": "r", "mime-version": "m", "content-type": "y"}
_URL_DIGITS = re.compile(r"\d+")
_HIDDEN_NOISE_TAGS = frozenset(("p", "br", "div", "span", "html", "body", "head", "title", "meta",
                                "td", "tr", "table", "b", "i", "a", "li", "ul", "hr", "pre"))


def tokenize(raw: bytes, auth: Optional[dict] = None) -> set[str]:
    """The set of tokens of one message (bytes, CRLF or LF line ends)."""
    tokens: set[str] = set()
    header, body_offset = split_header(raw)
    _header_tokens(header, tokens)
    _body_tokens(raw, tokens)
    if auth:
        _auth_tokens(auth, tokens)
    if len(tokens) > MAX_TOKENS:
        tokens = set(sorted(tokens)[:MAX_TOKENS])
    return tokens


def message_digest(raw: bytes) -> bytes:
    """What identifies a message across copies: its Message-ID field and its body.

    The header lines the server prepends on delivery (Return-Path, Received,
    X-Spam-*, Authentication-Results) are outside it, so the copy scored at
    DATA, the copy moved to Junk over IMAP and the copy in an mbox file share
    one digest: a retrain never counts one message twice.
    """
    header, body_offset = split_header(raw)
    message_id = b""
    for name, value in iter_fields(header):
        if name == "message-id":
            message_id = value.strip()
            break
    body = raw[body_offset:].replace(b"\r\n", b"\n").rstrip(b"\n")
    return hashlib.sha256(message_id + b"\0" + body).digest()[:16]


# -- headers --------------------------------------------------------------------

def _header_tokens(header: bytes, tokens: set[str]) -> None:
    counts: dict[str, int] = {}
    received_seen = 0
    first_hop = ""
    oldest_received = date_value = ""
    for index, (name, value) in enumerate(iter_fields(header)):
        if index >= MAX_HEADER_FIELDS:
            tokens.add("header:too-many")
            break
        if name in OWN_FIELDS:
            continue
        counts[name] = counts.get(name, 0) + 1
        if name == "subject":
            text = decode_words(value)
            words(text, tokens, "subject:")
            subject_shape(text, tokens, "subject")
            cjk_tokens(text, tokens, "subject:cjk:")
            _subject_prefix(text, tokens)
        elif name == "from":
            _address_tokens(value, tokens, "from")
        elif name == "reply-to":
            _address_tokens(value, tokens, "reply-to")
        elif name in ("to", "cc"):
            addresses = email.utils.getaddresses([decode_bytes(value)])
            tokens.add(f"{name}:count:{bucket(len(addresses))}")
            if any(not address for _name, address in addresses):
                tokens.add(f"{name}:no-address")
        elif name == "received":
            received_seen += 1
            text = decode_bytes(value)
            if received_seen <= MAX_RECEIVED:
                _received_tokens(text, tokens)
            if "127.0.0.1" not in text and "localhost" not in text.lower():
                first_hop = text
            oldest_received = text
        elif name == "message-id":
            match = _MSGID_DOMAIN.search(decode_bytes(value))
            tokens.add("message-id:@" + _domain_shape(match.group(1).lower()) if match else "message-id:invalid")
        elif name in ("x-mailer", "user-agent"):
            text = decode_bytes(value).lower()
            tokens.add("x-mailer:" + " ".join(text.split()[:3])[:40])
        elif name == "content-type":
            mime_type, params = parse_content_type(value)
            tokens.add("content-type:" + mime_type)
            if "charset" in params:
                tokens.add("charset:" + params["charset"].lower()[:30])
        elif name == "date":
            date_value = decode_bytes(value)
            _date_tokens(date_value, tokens)
        if name in VALUE_FIELDS:
            tokens.add(f"{name}:{decode_bytes(value).strip().lower()[:30]}")
    if first_hop:
        _origin_tokens(first_hop, tokens)
    if date_value and oldest_received:
        _date_skew_tokens(date_value, oldest_received, tokens)
    # The order a program writes the core fields in fingerprints the program.
    tokens.add("header:order:" + "".join(_CORE_FIELDS[name] for name in counts if name in _CORE_FIELDS))
    for name, count in counts.items():
        if name in PRESENCE_FIELDS or name.startswith("list-"):
            tokens.add(f"header:{name}:{min(count, 3)}")
    for name in ("date", "message-id", "to", "subject", "from"):
        if name not in counts:
            tokens.add(f"header:{name}:missing")
    if not counts:
        tokens.add("header:empty")


def _subject_prefix(text: str, tokens: set[str]) -> None:
    """Reply and forward markers ("Re:", "AW:", "Fwd:"), which the 3-character floor
    of words() drops, and whether the subject starts with one at all."""
    match = _SUBJECT_PREFIX.match(text)
    if match:
        tokens.add("subject:prefix:" + match.group(1).lower())
    else:
        tokens.add("subject:prefix:none")


def _address_tokens(value: bytes, tokens: set[str], prefix: str) -> None:
    text = decode_words(value)
    pairs = email.utils.getaddresses([text])
    if not pairs or not any(address for _name, address in pairs):
        tokens.add(f"{prefix}:no-address")
        return
    name, address = pairs[0]
    address = address.lower()
    local, _, domain = address.rpartition("@")
    if not local:
        tokens.add(f"{prefix}:no-domain")
    tokens.add(f"{prefix}:addr:{address[:80]}")
    tokens.add(f"{prefix}:local-shape:{_local_shape(local)}")
    for suffix in _domain_suffixes(domain):
        tokens.add(f"{prefix}:domain:{suffix}")
    if name:
        for word in name.lower().split()[:8]:
            tokens.add(f"{prefix}:name:{word.strip(NON_WORD_EDGES)[:20]}")
        if "@" in name:
            tokens.add(f"{prefix}:name-has-address")
    else:
        tokens.add(f"{prefix}:no-name")


def _local_shape(local: str) -> str:
    """A coarse shape of an address's local part: letters vs digits, length bucket."""
    digits = sum(char.isdigit() for char in local)
    return f"{'digits' if digits > 3 else 'alpha'}-{bucket(len(local))}"


def _received_tokens(value: str, tokens: set[str]) -> None:
    lower = value.lower()
    if "127.0.0.1" in lower or "localhost" in lower.split(" by ")[0]:
        return  # a hop inside one host (fetchmail, content filters)
    match = _RECEIVED_FROM.search(lower)
    if match:
        host = match.group(1).strip(".")
        if _HOSTNAME.fullmatch(host):
            for suffix in _domain_suffixes(host)[:3]:
                tokens.add("received:" + suffix)
        else:
            tokens.add("received:helo-shape:" + ("ip" if host.replace(".", "").isdigit() else "bare"))
    for a, b, c in _RECEIVED_IP.findall(lower)[:2]:
        tokens.add(f"received:{a}")
        tokens.add(f"received:{a}.{b}")
        tokens.add(f"received:{a}.{b}.{c}")
    if "may be forged" in lower:
        tokens.add("received:may-be-forged")
    if "unknown" in lower.split(" by ")[0]:
        tokens.add("received:unknown-host")
    match = _WITH.search(lower)
    if match:
        tokens.add("received:with:" + match.group(1))


def _origin_tokens(value: str, tokens: set[str]) -> None:
    """The oldest Received field outside one host: where the message entered the mail
    system (a list relay's own hops push the sender's below the ones mined above)."""
    lower = value.lower()
    match = _RECEIVED_FROM.search(lower)
    if match:
        host = match.group(1).strip(".")
        if _HOSTNAME.fullmatch(host):
            tokens.add("origin:" + _domain_shape(host))
            if _DYNAMIC_HOST.search(host.partition(".")[0]):
                tokens.add("origin:dynamic-host")
    for a, b, c in _RECEIVED_IP.findall(lower)[:1]:
        tokens.add(f"origin:{a}.{b}")
        tokens.add(f"origin:{a}.{b}.{c}")


def _date_tokens(value: str, tokens: set[str]) -> None:
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        tokens.add("date:invalid")
        return
    offset = parsed[9]
    if offset is None:
        tokens.add("date:no-zone")
    if not re.search(r"[+-]\d{4}", value):
        tokens.add("date:named-zone")


def _date_skew_tokens(date: str, received: str, tokens: set[str]) -> None:
    """The Date field against the time the oldest Received hop (RFC 5321 4.4: its
    date-time after the ";") took the message: a Date hours ahead of it or days
    behind comes from a forged or broken clock, rarely from a mail program
    (SpamAssassin's DATE_IN_FUTURE / DATE_IN_PAST). Time-ordered split 89.2 -> 90.0%."""
    stamp = received.rpartition(";")[2]
    written, taken = email.utils.parsedate_tz(date), email.utils.parsedate_tz(stamp)
    if written is None or taken is None:
        return
    try:
        skew = email.utils.mktime_tz(taken) - email.utils.mktime_tz(written)
    except (OverflowError, ValueError):
        return
    if skew < -3600:
        tokens.add("date:future")
    elif skew > 3 * 86400:
        tokens.add("date:past")


# -- body -------------------------------------------------------------------------

def _body_tokens(raw: bytes, tokens: set[str]) -> None:
    leaves = 0
    text_seen = False
    kinds: set[str] = set()
    try:
        for part in iter_parts(raw, max_parts=MAX_PARTS * 4):
            if part.is_multipart:
                tokens.add("part:" + part.content_type)
                continue
            leaves += 1
            if leaves > MAX_PARTS:
                tokens.add("part:too-many")
                break
            if part.depth:
                _part_header_tokens(part, tokens)
            if part.content_type in ("text/plain", "text/html") and part.disposition != "attachment":
                text_seen = True
                kinds.add(part.content_type)
                data = decode_transfer(raw[part.body_start:min(part.body_end, part.body_start + MAX_PART_BYTES * 4)],
                                       part.transfer_encoding, MAX_PART_BYTES)
                charset_mismatch(data[:MAX_PART_BYTES], part.params.get("charset"), part.content_type == "text/html",
                                 tokens)
                text = decode_text(data[:MAX_PART_BYTES], part.params.get("charset"), tokens)
                if part.content_type == "text/html":
                    _html_tokens(text, tokens)
                    text = html_to_text(text)
                _text_tokens(text, tokens)
    except MessageTooComplex:
        tokens.add("part:too-complex")
    if kinds == {"text/html"}:
        tokens.add("body:html-only")  # no plain alternative: most mail programs write one
    if not text_seen:
        tokens.add("body:no-text")


def _part_header_tokens(part, tokens: set[str]) -> None:
    tokens.add("part:" + part.content_type)
    tokens.add("cte:" + (part.transfer_encoding or "7bit"))
    charset = part.params.get("charset")
    if charset:
        tokens.add("charset:" + charset.lower()[:30])
    filename = part.disposition_params.get("filename") or part.params.get("name")
    if filename:
        extension = filename.rpartition(".")[2].lower()[:8] if "." in filename else ""
        tokens.add("filename:ext:" + (extension or "none"))


def _html_tokens(markup: str, tokens: set[str]) -> None:
    tags = {match.lower() for match in _TAG.findall(markup[:MAX_PART_BYTES])}
    for tag in tags - _HIDDEN_NOISE_TAGS:
        tokens.add("html:" + tag)
    for url in _HREF.findall(markup):
        _url_tokens(url, tokens)
    lower = markup.lower()
    if "display:none" in lower.replace(" ", "") or "visibility:hidden" in lower.replace(" ", ""):
        tokens.add("html:hidden-text")


def _text_tokens(text: str, tokens: set[str]) -> None:
    if not text.strip():
        tokens.add("body:empty-part")
        return
    if not text.isascii():
        folded = unicodedata.normalize("NFKC", text)  # full-width "ＦＲＥＥ" reads as "FREE"
        if folded != text:
            tokens.add("body:nfkc-changed")
            text = folded
    nonascii = 0 if text.isascii() else len(text) - len(text.encode("ascii", "ignore"))
    tokens.add(f"8bit%:{round(100 * nonascii / len(text), -1):.0f}")
    if "://" in text or "www." in text.lower():  # the scans below only when they can match
        for url in _URL.findall(text):
            _url_tokens(url, tokens)
        text = _URL.sub(" ", text)
    if "@" in text:
        for address in _EMAIL.findall(text):
            local, _, domain = address.lower().rpartition("@")
            tokens.add("email name:" + local[:30])
            for suffix in _domain_suffixes(domain)[:3]:
                tokens.add("email addr:" + suffix)
        text = _EMAIL.sub(" ", text)
    words(text, tokens, "")
    body_shape(text[:MAX_BIGRAM_CHARS], tokens)
    bigrams(text, tokens)
    cjk_tokens(text, tokens, "cjk:")


def _url_tokens(url: str, tokens: set[str]) -> None:
    url = url.lower()
    if url.startswith("mailto:"):
        tokens.add("url:mailto")
        return
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "http", url
    tokens.add("proto:" + scheme[:10])
    host, _, path = rest.partition("/")
    host = host.rpartition("@")[2].partition(":")[0]
    if "@" in rest.partition("/")[0]:
        tokens.add("url:has-userinfo")
    if host.replace(".", "").isdigit():
        tokens.add("url:ip-host")
    else:
        for suffix in _domain_suffixes(host):
            tokens.add("url:" + suffix)
    for piece in _URL_SPLIT.split(path)[:10]:
        if 2 < len(piece) <= 20:
            # ids and tracking numbers differ in every mail: keep their shape, not their value
            tokens.add("url:" + (_URL_DIGITS.sub("9", piece) if _URL_DIGITS.search(piece) else piece))
    if "%" in path:
        tokens.add("url:escaped")


# -- shared ----------------------------------------------------------------------

def _domain_suffixes(domain: str) -> list[str]:
    """'a.b.example.com' -> ['example.com', 'b.example.com', 'a.b.example.com'] (at most 4)."""
    labels = [label for label in domain.strip(".").split(".") if label][-6:]
    if not labels:
        return []
    suffixes = []
    for count in range(min(2, len(labels)), len(labels) + 1):
        suffixes.append(".".join(labels[-count:])[:80])
    return suffixes[:4]


def _domain_shape(domain: str) -> str:
    """The registered (organizational) domain: "mail.example.co.uk" -> "example.co.uk"
    by the public suffix list (RFC 7489 3.2), not the last two labels ("co.uk")."""
    from ..checks.dmarc import organizational_domain  # here: checks imports the store, which imports us

    return organizational_domain(domain)[:60]


def _auth_tokens(auth, tokens: set[str]) -> None:
    for method, results in auth_summary(auth).items():
        for value in results[:4]:
            tokens.add(f"auth:{method}:{value[:16]}")


def auth_summary(auth) -> dict[str, list[str]]:
    """{method: [result, ...]} from check.auth's AuthResults (envelope.data["auth"]),
    or from a dict of the same shape; anything else gives {}."""
    summary: dict[str, list[str]] = {}
    for method in ("spf", "dkim", "dmarc", "arc"):
        value = auth.get(method) if isinstance(auth, dict) else getattr(auth, method, None)
        if value is None:
            continue
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        results = []
        for item in items:
            result = item.get("result") if isinstance(item, dict) else getattr(item, "result", item)
            results.append(str(result).lower())
        summary[method] = results or ["none"]
    return summary


_RESINFO = re.compile(r"(?:^|;)\s*(spf|dkim|dmarc|arc)\s*=\s*([a-z]+)", re.I)


def auth_from_header(raw: bytes, authserv_id: str) -> dict[str, list[str]]:
    """The results our own Authentication-Results field (RFC 8601, authserv-id = ours)
    recorded on a stored message, in auth_summary's shape: what check.auth said at
    delivery, so learning from a stored copy sees the tokens scoring saw."""
    header, _ = split_header(raw)
    ours = authserv_id.lower().rstrip(".")
    for name, value in iter_fields(header):
        if name != "authentication-results":
            continue
        text = re.sub(r"\([^()]*\)", " ", decode_bytes(value))
        if text.split(";", 1)[0].strip().split()[:1] != [ours]:
            continue
        summary: dict[str, list[str]] = {}
        for method, result in _RESINFO.findall(text):
            summary.setdefault(method.lower(), []).append(result.lower())
        return summary
    return {}
