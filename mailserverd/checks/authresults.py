"""The Authentication-Results header field (RFC 8601), and removal of forged ones.

`build_value(authserv_id, results)` is the field value (no name, no CRLF;
delivery folds it), e.g.

    mx.example.net; spf=pass smtp.mailfrom=alice@example.com;
     dkim=pass header.d=example.com header.s=sel header.b=AbCdEfGh;
     dmarc=pass header.from=example.com; arc=none

`remove_own(message, authserv_id)` drops every Authentication-Results field
of the incoming header whose authserv-id is ours (RFC 8601 5: a forged one
would claim our verdicts); other ADMDs' fields stay.
"""

from __future__ import annotations

import re
from typing import Iterable

# RFC 2045 5.1 token: no SPACE, CTLs or tspecials
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
# RFC 8601 2.2 pvalue may be [[local-part] "@"] domain-name without quoting
_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*"
_ADDRESS = re.compile(rf"(?:{_DOT_ATOM})?@[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


MAX_PVALUE = 120  # characters of one property value: ten hostile signatures still fit one field


def pvalue(text: str) -> str:
    """A property value: as is when a token or an address, else a quoted-string (RFC 5322 3.2.4)."""
    text = _UNSAFE.sub("", text)[:MAX_PVALUE]
    if text and (_TOKEN.fullmatch(text) or _ADDRESS.fullmatch(text)):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def resinfo(method: str, result: str, properties: Iterable[tuple[str, str]] = (),
            reason: str = "", comment: str = "") -> str:
    """RFC 8601 2.2 resinfo: "method=result [(comment)] [reason=...] ptype.property=pvalue..."."""
    parts = [f"{method}={result}"]
    if comment:
        parts.append("(" + re.sub(r"[()\\\x00-\x1f\x7f]", "", comment)[:100] + ")")
    if reason:
        parts.append(f"reason={pvalue(reason[:100])}")
    parts += [f"{name}={pvalue(value)}" for name, value in properties if value]
    return " ".join(parts)


def build_value(authserv_id: str, results: Iterable[str]) -> str:
    """The whole field value; "none" when no method ran (RFC 8601 2.2)."""
    results = list(results)
    return f"{authserv_id}; " + ("; ".join(results) if results else "none")


_FIELD = re.compile(rb"^authentication-results[ \t]*:", re.I)


def authserv_id_of(value: bytes) -> str:
    """The authserv-id of a field value (RFC 8601 2.2), comments and version skipped."""
    text = value.decode("utf-8", "replace")
    text = re.sub(r"\([^()]*\)", " ", text)  # CFWS comments (one level is what is seen)
    first = text.split(";", 1)[0].strip()
    return first.split()[0].lower().rstrip(".") if first.split() else ""


def remove_own(message: bytes, authserv_id: str) -> bytes:
    """The message without incoming Authentication-Results fields claiming `authserv_id`."""
    end = message.find(b"\r\n\r\n")
    header_end = len(message) if end < 0 else end + 2
    if b"authentication-results" not in message[:header_end].lower():
        return message  # the usual case: nothing to copy
    ours = authserv_id.lower().rstrip(".")
    fields: list[list[bytes]] = []
    for line in message[:header_end].split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:  # a continuation line (RFC 5322 2.2.3)
            fields[-1].append(line)
        else:
            fields.append([line])
    kept = [field for field in fields
            if not (_FIELD.match(field[0])
                    and authserv_id_of(b" ".join(field).split(b":", 1)[1]) == ours)]
    if len(kept) == len(fields):
        return message
    return b"\r\n".join(line for field in kept for line in field) + message[header_end:]
