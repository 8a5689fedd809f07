"""header:Name:asForm[:all] properties on Email/set create (RFC 8621 4.6), on the
Email and on its EmailBodyParts: each value encoded in its form (4.1.2) into the
header field's wire text.

asRaw is written as given (it must already be a legal field value); asText is
RFC 2047 encoded where it is not ASCII; asAddresses and asGroupedAddresses are
RFC 5322 address lists (display names RFC 2047 encoded); asMessageIds, asDate
and asURLs are "<id> <id>", an RFC 5322 date and "<url>, <url>". A form a known
field does not have (header:From:asDate) is refused, as is a field given twice
(header:From and from, or two forms of one name): invalidProperties.
"""

from __future__ import annotations

import datetime
import email.errors
import email.utils
import re
from email import policy
from email.headerregistry import Address, AddressHeader, Group, HeaderRegistry, UnstructuredHeader

from .emailparse import header_property
from .emailset import SetError

_ADDRESSES = HeaderRegistry(default_class=AddressHeader, use_default_map=False)
_TEXT = HeaderRegistry(default_class=UnstructuredHeader, use_default_map=False)
_ID = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+")  # no < > or space
_URL = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]+")


class _Written:
    """A header value the email package writes as it is (EmailPolicy keeps a value
    whose name matches and folds it by calling its fold())."""

    def __init__(self, name: str, text: str):
        self.name, self._text = name, text

    def fold(self, policy=None) -> str:
        return f"{self.name}:{self._text}\r\n"

    def __str__(self) -> str:
        return self._text.strip()


def _fold(header) -> str:
    """The folded wire text after "Name:" of a headerregistry header."""
    return header.fold(policy=policy.SMTP).split(":", 1)[1].rstrip("\r\n")


def _address(item, prop: str) -> Address:
    if not isinstance(item, dict) or not isinstance(item.get("email"), str) \
            or not isinstance(item.get("name") or "", str):
        raise _bad(f"{prop} holds EmailAddress objects", prop)
    try:
        return Address(display_name=item.get("name") or "", addr_spec=item["email"])
    except (ValueError, IndexError, TypeError, email.errors.MessageError):
        raise _bad(f"{item['email']!r} is not an address", prop)


def _bad(description: str, prop: str) -> SetError:
    return SetError("invalidProperties", description, [prop])


def _line(value, prop: str) -> str:
    if not isinstance(value, str) or "\r" in value or "\n" in value or "\0" in value:
        raise _bad(f"{prop} is one line of text", prop)
    return value


def encode(field: str, form: str, value, prop: str) -> str:
    """The wire text after "Field:" of one field instance holding value in form."""
    if form == "asRaw":
        if not isinstance(value, str) or re.search(r"\r(?!\n[ \t])|(?<!\r)\n|\r\n(?![ \t])|\0", value) \
                or not value.strip():
            raise _bad(f"{prop} is a field value, folded with CRLF and white space only", prop)
        if not value.isascii():  # written as given: no RFC 2047 encoding happens
            raise _bad(f"{prop} is ASCII as raw; asText encodes other text", prop)
        if any(len(line) > 900 for line in value.split("\r\n")):  # RFC 5322 2.1.1: 998 with the name
            raise _bad(f"{prop} has a line too long; fold it", prop)
        return value
    if form == "asText":
        return _fold(_TEXT(field, _line(value, prop)))
    if form in ("asAddresses", "asGroupedAddresses"):
        if not isinstance(value, list):
            raise _bad(f"{prop} is a list", prop)
        if form == "asAddresses":
            items = [_address(item, prop) for item in value]
        else:
            items = []
            for group in value:
                if not isinstance(group, dict) or not isinstance(group.get("addresses"), list) \
                        or not isinstance(group.get("name") or "", str):
                    raise _bad(f"{prop} holds EmailAddressGroup objects", prop)
                members = [_address(item, prop) for item in group["addresses"]]
                items.extend(members if group.get("name") is None
                             else [Group(_line(group["name"], prop), members)])
        if not items:
            raise _bad(f"{prop} holds at least one address", prop)
        return _fold(_ADDRESSES(field, items))
    if form == "asMessageIds":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and _ID.fullmatch(v)
                                                              for v in value):
            raise _bad(f"{prop} is a list of message ids without angle brackets", prop)
        return _fold(_TEXT(field, " ".join(f"<{v}>" for v in value)))
    if form == "asDate":
        try:
            moment = datetime.datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise _bad(f"{prop} is an RFC 3339 date with a time zone", prop)
        return " " + email.utils.format_datetime(moment)
    # asURLs
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and _URL.fullmatch(v)
                                                          for v in value):
        raise _bad(f"{prop} is a list of URLs", prop)
    return _fold(_TEXT(field, ", ".join(f"<{v}>" for v in value)))


def fields(spec: dict, taken: dict, refused: tuple = ()) -> list[tuple[str, str]]:
    """(field name, wire text) of each header:... property of spec that is not null,
    in the order given. taken maps the lower-case names of fields other properties
    of spec set to those properties (a clash is invalidProperties); refused names
    fields (or, ending in "-", prefixes) that may not be set as header:... here at all."""
    out, seen = [], {}
    for prop, value in spec.items():
        if not prop.startswith("header:"):
            continue
        parsed = header_property(prop)
        if parsed is None:  # malformed, or a form the field does not have (RFC 8621 4.1.2)
            raise _bad(f"{prop} is not a header property this field has", prop)
        field, form, every = parsed
        name = field.lower()
        if any(name == r or (r.endswith("-") and name.startswith(r)) for r in refused):
            raise _bad(f"{field} is set by the server or by other properties here", prop)
        clash = taken.get(name)
        if clash is not None and spec.get(clash) is None:
            clash = None
        if clash is not None or name in seen:
            raise SetError("invalidProperties", f"{field} is given twice", [prop, clash or seen[name]])
        seen[name] = prop
        if value is None:
            continue
        if every and not isinstance(value, list):
            raise _bad(f"{prop} is a list of values (:all)", prop)
        for item in (value if every else [value]):
            out.append((field, encode(field, form, item, prop)))
    return out


def add(message, written: list[tuple[str, str]]) -> None:
    """Append the fields to an email.message.Message, as encoded."""
    for field, text in written:
        message[field] = _Written(field, text)
