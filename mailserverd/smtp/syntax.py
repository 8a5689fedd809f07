"""Envelope syntax: paths, domains and ESMTP parameters (RFC 5321 4.1.2, 4.1.3).

Pure functions from str to typed values; every failure raises CommandError
carrying the reply the client gets. UTF-8 in addresses (RFC 6531 3.3) is
accepted only when the caller says SMTPUTF8 is in force.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from . import replies
from .replies import Reply


class CommandError(Exception):
    """A command the client got wrong; .reply is the exact answer to give."""

    def __init__(self, reply: Reply):
        super().__init__(str(reply))
        self.reply = reply


# RFC 5321 4.5.3.1: size limits of the envelope's parts, in octets.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256

# RFC 5322 3.2.3 atext; RFC 6531 3.3 adds UTF8-non-ascii (here: any non-ASCII code point).
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_ATOM_ASCII = re.compile(rf"[{_ATEXT}]+")
_ATOM_UTF8 = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+")
_DOT_STRING_ASCII = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_DOT_STRING_UTF8 = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+(?:\.[{_ATEXT}\u0080-\U0010ffff]+)*")
# RFC 5321 4.1.2 Quoted-string: qtextSMTP = %d32-33 / %d35-91 / %d93-126, quoted-pairSMTP = "\" %d32-126.
_QUOTED_ASCII = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*)"')
_QUOTED_UTF8 = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*)"')
_QUOTED_PAIR = re.compile(r"\\(.)")
# RFC 5321 4.1.2 sub-domain = Let-dig [Ldh-str]; RFC 6531 3.3 allows U-labels.
_SUB_DOMAIN_ASCII = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_SUB_DOMAIN_UTF8 = r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\u0080-\U0010ffff-]*[A-Za-z0-9\u0080-\U0010ffff])?"
_DOMAIN_ASCII = re.compile(rf"{_SUB_DOMAIN_ASCII}(?:\.{_SUB_DOMAIN_ASCII})*")
_DOMAIN_UTF8 = re.compile(rf"{_SUB_DOMAIN_UTF8}(?:\.{_SUB_DOMAIN_UTF8})*")
# RFC 5321 4.1.3 address literals; General-address-literal = Standardized-tag ":" 1*dcontent.
_LITERAL = re.compile(r"\[([\x21-\x5a\x5e-\x7e]{1,253})\]")
_GENERAL_TAG = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
# RFC 5321 4.1.2 esmtp-keyword and esmtp-value (RFC 6531 3.3 lets values carry UTF-8).
_PARAM = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+))?")
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")  # RFC 3461 4
_HEX_CHAR = re.compile(r"\+([0-9A-F]{2})")


def _is_ascii(text: str) -> bool:
    return text.isascii()


@dataclasses.dataclass(frozen=True)
class Path:
    """A parsed Mailbox with its (ignored) source route.

    local: the local part with quoting removed; quoted: it was a Quoted-string;
    domain: lower case, A-labels for internationalized names, or an address
    literal with its brackets ("[192.0.2.1]"); route: the A-d-l domains.
    """

    local: str
    domain: str
    quoted: bool = False
    route: tuple[str, ...] = ()

    @property
    def is_literal(self) -> bool:
        return self.domain.startswith("[")

    @property
    def address(self) -> str:
        """local@domain in canonical form: the local part re-quoted only if it must be."""
        local = self.local
        if not _DOT_STRING_UTF8.fullmatch(local):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{local}@{self.domain}"

    def __str__(self) -> str:
        return self.address


def parse_domain(text: str, utf8: bool) -> str:
    """A Domain (RFC 5321 4.1.2) in lower case, U-labels turned into A-labels (RFC 5890)."""
    pattern = _DOMAIN_UTF8 if utf8 else _DOMAIN_ASCII
    if not pattern.fullmatch(text):
        raise ValueError("bad domain")
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("bad internationalized domain") from None
    if len(text) > MAX_DOMAIN or any(len(label) > 63 for label in text.split(".")):
        raise ValueError("domain too long")
    return text.lower()


def parse_address_literal(text: str) -> str:
    """RFC 5321 4.1.3: "[IPv4]", "[IPv6:addr]" or "[tag:content]"; returned normalized."""
    match = _LITERAL.fullmatch(text)
    if not match:
        raise ValueError("bad address literal")
    inner = match.group(1)
    if inner.lower().startswith("ipv6:"):
        try:
            return f"[IPv6:{ipaddress.IPv6Address(inner[5:]).compressed}]"
        except ValueError:
            raise ValueError("bad IPv6 literal") from None
    if ":" in inner:
        tag, _, _content = inner.partition(":")
        if not _GENERAL_TAG.fullmatch(tag):
            raise ValueError("bad general address literal")
        return text
    try:
        # ipaddress rejects leading zeros and out-of-range octets, as RFC 5321 Snum does.
        return f"[{ipaddress.IPv4Address(inner)}]"
    except ValueError:
        raise ValueError("bad IPv4 literal") from None


def _parse_mailbox(text: str, utf8: bool, allow_at_in_local: bool) -> Path:
    """RFC 5321 4.1.2 Mailbox = Local-part "@" ( Domain / address-literal )."""
    quoted_re = _QUOTED_UTF8 if utf8 else _QUOTED_ASCII
    dot_re = _DOT_STRING_UTF8 if utf8 else _DOT_STRING_ASCII
    if text.startswith('"'):
        match = quoted_re.match(text)
        if not match or text[match.end():match.end() + 1] != "@":
            raise ValueError("bad quoted local part")
        local = _QUOTED_PAIR.sub(r"\1", match.group(1))
        quoted, domain_text = True, text[match.end() + 1:]
        raw_local = match.group(0)
    else:
        # The last "@" separates the domain; "a@b@local" parses only where the
        # caller wants to recognize it as a relay attempt (allow_at_in_local).
        raw_local, at, domain_text = text.rpartition("@")
        if not at:
            raise ValueError("no @ in address")
        pieces = raw_local.split("@") if allow_at_in_local else [raw_local]
        if not all(dot_re.fullmatch(piece) for piece in pieces):
            raise ValueError("bad local part")
        local, quoted = raw_local, False
    if len(raw_local.encode("utf-8")) > MAX_LOCAL_PART:
        raise ValueError("local part too long")
    if domain_text.startswith("["):
        domain = parse_address_literal(domain_text)
    else:
        domain = parse_domain(domain_text, utf8)
    return Path(local=local, domain=domain, quoted=quoted)


def parse_path(text: str, utf8: bool = False, allow_at_in_local: bool = False) -> Path:
    """RFC 5321 4.1.2 Path = "<" [ A-d-l ":" ] Mailbox ">". Raises ValueError."""
    if len(text.encode("utf-8")) > MAX_PATH + 2:
        raise ValueError("path too long")
    if not (text.startswith("<") and text.endswith(">")):
        raise ValueError("path must be in angle brackets")
    inner = text[1:-1]
    route: tuple[str, ...] = ()
    if inner.startswith("@"):
        # RFC 5321 4.1.2 A-d-l = At-domain *( "," At-domain ); C.: the route is to be ignored,
        # but we keep it so relay policy can refuse routes through foreign domains.
        route_text, colon, inner = inner.partition(":")
        if not colon:
            raise ValueError("source route without ':'")
        hops = []
        for hop in route_text.split(","):
            if not hop.startswith("@"):
                raise ValueError("bad source route")
            hops.append(parse_domain(hop[1:], utf8))
        route = tuple(hops)
    path = _parse_mailbox(inner, utf8, allow_at_in_local)
    return dataclasses.replace(path, route=route)


def split_path_and_params(argument: str) -> tuple[str, str]:
    """Separate "<path> params" (the path may hold spaces inside a quoted local part)."""
    if not argument.startswith("<"):
        raise CommandError(replies.SYNTAX_ERROR_ARGS)
    in_quotes = escaped = False
    for index, char in enumerate(argument):
        if escaped:
            escaped = False
        elif char == "\\" and in_quotes:
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char == ">" and not in_quotes:
            rest = argument[index + 1:]
            if rest and not rest.startswith(" "):
                raise CommandError(replies.SYNTAX_ERROR_ARGS)
            return argument[:index + 1], rest.strip(" ")
    raise CommandError(replies.SYNTAX_ERROR_ARGS)


def parse_params(text: str) -> dict[str, str | None]:
    """RFC 5321 4.1.2 Mail-parameters: keyword[=value] separated by spaces; keywords upper-cased."""
    params: dict[str, str | None] = {}
    for item in text.split(" "):
        if not item:
            continue
        match = _PARAM.fullmatch(item)
        if not match:
            raise CommandError(replies.SYNTAX_ERROR_ARGS)
        keyword = match.group(1).upper()
        if keyword in params:
            raise CommandError(replies.PARAM_DUPLICATE)
        params[keyword] = match.group(2)
    return params


def decode_xtext(value: str) -> str:
    """RFC 3461 4: xtext, "+XX" hex escapes for "+", "=" and non-printables."""
    if not value.isascii() or not _XTEXT.fullmatch(value):
        raise CommandError(replies.SYNTAX_ERROR_ARGS)
    return _HEX_CHAR.sub(lambda m: chr(int(m.group(1), 16)), value)


@dataclasses.dataclass(frozen=True)
class MailParams:
    size: int | None = None  # RFC 1870 SIZE
    body: str | None = None  # RFC 6152 BODY=7BIT / 8BITMIME
    smtputf8: bool = False  # RFC 6531 3.4
    ret: str | None = None  # RFC 3461 4.3 RET=FULL / HDRS
    envid: str | None = None  # RFC 3461 4.4 ENVID, decoded
    auth: str | None = None  # RFC 4954 5 AUTH=, decoded ("<>" when unknown)


@dataclasses.dataclass(frozen=True)
class RcptParams:
    notify: tuple[str, ...] | None = None  # RFC 3461 4.1: ("NEVER",) or SUCCESS/FAILURE/DELAY
    orcpt: tuple[str, str] | None = None  # RFC 3461 4.2: (addr-type, decoded address)


MAX_ENVID = 100  # RFC 3461 4.4
MAX_ORCPT = 500  # RFC 3461 4.2


def mail_params(raw: dict[str, str | None]) -> MailParams:
    fields: dict = {}
    for keyword, value in raw.items():
        if keyword == "SIZE":  # RFC 1870 3: size-value = 1*20DIGIT
            if value is None or not value.isdigit() or len(value) > 20:
                raise CommandError(replies.SYNTAX_ERROR_ARGS)
            fields["size"] = int(value)
        elif keyword == "BODY":  # RFC 6152 2; BINARYMIME (RFC 3030) is not offered
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                raise CommandError(replies.PARAM_UNKNOWN)
            fields["body"] = value.upper()
        elif keyword == "SMTPUTF8":  # RFC 6531 3.4: no value
            if value is not None:
                raise CommandError(replies.SYNTAX_ERROR_ARGS)
            fields["smtputf8"] = True
        elif keyword == "RET":  # RFC 3461 4.3
            if value is None or value.upper() not in ("FULL", "HDRS"):
                raise CommandError(replies.SYNTAX_ERROR_ARGS)
            fields["ret"] = value.upper()
        elif keyword == "ENVID":  # RFC 3461 4.4
            if value is None or len(value) > MAX_ENVID:
                raise CommandError(replies.SYNTAX_ERROR_ARGS)
            fields["envid"] = decode_xtext(value)
        elif keyword == "AUTH":  # RFC 4954 5
            if value is None:
                raise CommandError(replies.SYNTAX_ERROR_ARGS)
            fields["auth"] = value if value == "<>" else decode_xtext(value)
        else:
            raise CommandError(replies.PARAM_UNKNOWN)
    return MailParams(**fields)


def rcpt_params(raw: dict[str, str | None]) -> RcptParams:
    fields: dict = {}
    for keyword, value in raw.items():
        if keyword == "NOTIFY":  # RFC 3461 4.1: "NEVER" or a list of SUCCESS, FAILURE, DELAY
            if value is None:
                raise CommandError(replies.SYNTAX_ERROR_ARGS)
            items = tuple(item.upper() for item in value.split(","))
            valid = items == ("NEVER",) or (
                len(set(items)) == len(items) and set(items) <= {"SUCCESS", "FAILURE", "DELAY"})
            if not valid:
                raise CommandError(replies.SYNTAX_ERROR_ARGS)
            fields["notify"] = items
        elif keyword == "ORCPT":  # RFC 3461 4.2: addr-type ";" xtext
            if value is None or len(value) > MAX_ORCPT or ";" not in value:
                raise CommandError(replies.SYNTAX_ERROR_ARGS)
            addr_type, _, address = value.partition(";")
            if not _ATOM_ASCII.fullmatch(addr_type):
                raise CommandError(replies.SYNTAX_ERROR_ARGS)
            if addr_type.lower() == "utf-8":  # RFC 6533 3: utf-8-addr-xtext
                decoded = address
            else:
                decoded = decode_xtext(address)
            fields["orcpt"] = (addr_type.lower(), decoded)
        else:
            raise CommandError(replies.PARAM_UNKNOWN)
    return RcptParams(**fields)


_HELO_NAME = re.compile(r"[\x21-\x7e\u0080-\U0010ffff]{1,255}")


def parse_helo_name(argument: str) -> str:
    """The HELO/EHLO argument (RFC 5321 4.1.1.1: Domain or address-literal).

    Clients in the wild send bare IPs and names with underscores, so any one
    printable token is accepted; the Received header writer sanitizes it.
    """
    name = argument.split(" ", 1)[0]
    if not _HELO_NAME.fullmatch(name):
        raise CommandError(replies.SYNTAX_ERROR_ARGS)
    return name
