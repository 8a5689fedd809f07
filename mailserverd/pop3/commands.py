"""POP3 command lines as text: keyword, arguments and the strict number rules.

RFC 1939 3: a keyword of 3-4 characters, arguments separated by single
spaces, each up to 40 characters. Anything else is a syntax error, answered
with -ERR by the machine, never guessed at.
"""

from __future__ import annotations

import dataclasses
import re

MAX_COMMAND_LINE = 255  # RFC 2449 4: octets including CRLF
MAX_ARGUMENT = 40  # RFC 1939 3
_KEYWORD = re.compile(r"[A-Za-z]{3,4}")
_NUMBER = re.compile(r"[0-9]{1,10}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NUMBER = 2**31 - 1


class CommandSyntaxError(ValueError):
    """str() is the text of the -ERR reply."""


@dataclasses.dataclass(frozen=True)
class Command:
    keyword: str  # upper case
    args: tuple[str, ...]
    rest: str  # everything after "KEYWORD " verbatim (PASS allows spaces, RFC 1939 7)


def decode_line(raw: bytes) -> str:
    """The one bytes -> str boundary for command lines: strip CRLF (or a bare LF),
    require UTF-8 without control characters."""
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandSyntaxError("Invalid characters in command") from None
    if _CONTROL.search(text):
        raise CommandSyntaxError("Invalid characters in command")
    return text


def parse_command(text: str) -> Command:
    keyword, space, rest = text.partition(" ")
    if not _KEYWORD.fullmatch(keyword):
        raise CommandSyntaxError("Unknown command")
    args = tuple(rest.split(" ")) if space else ()
    return Command(keyword.upper(), args, rest)


def check_arguments(command: Command, minimum: int, maximum: int, longest: int = MAX_ARGUMENT) -> None:
    """Argument count and shape; `longest` is raised for user names and SASL data,
    which real clients send longer than RFC 1939's 40 characters."""
    if not minimum <= len(command.args) <= maximum:
        raise CommandSyntaxError(f"Wrong number of arguments for {command.keyword}")
    for arg in command.args:
        if not arg:
            raise CommandSyntaxError("Arguments are separated by a single space")
        if len(arg) > longest:
            raise CommandSyntaxError("Argument too long")


def parse_number(text: str, minimum: int) -> int:
    """A decimal number >= minimum: digits only, no sign, at most 10 digits and 2**31-1."""
    if not _NUMBER.fullmatch(text):
        raise CommandSyntaxError(f"Invalid number: {text[:MAX_ARGUMENT]}")
    value = int(text)
    if value < minimum or value > MAX_NUMBER:
        raise CommandSyntaxError(f"Number out of range: {text}")
    return value


def parse_message_number(text: str) -> int:
    """RFC 1939 5: message numbers start at 1."""
    return parse_number(text, 1)
