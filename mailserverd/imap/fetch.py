"""FETCH data items (RFC 9051 6.4.5), their grammar and their response labels."""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

from .lexer import ParseFailure, Reader

MAX_SECTION_PARTS = 32  # "1.2.3..." levels; MIME nesting deeper than this is not addressable
MAX_HEADER_FIELDS = 256  # names in one HEADER.FIELDS list

# RFC 5322 2.2: field-name = 1*ftext, printable US-ASCII except ":".
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
_ITEM_NAME = re.compile(rb"[A-Za-z0-9.]+")

SIMPLE_ITEMS = frozenset({
    "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
    "RFC822.TEXT", "BODY", "BODYSTRUCTURE", "UID",
    "MODSEQ",  # RFC 7162 3.1.5
})
# RFC 9051 6.4.5: the macros, each equivalent to a list of items.
MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
SECTION_TEXTS = ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME")


@dataclasses.dataclass(frozen=True)
class Section:
    """section-spec: part numbers, then HEADER / HEADER.FIELDS[.NOT] / TEXT / MIME.

    fields keep the client's spelling: the response echoes them (RFC 9051 7.5.2).
    """

    part: tuple = ()
    text: Optional[str] = None
    fields: tuple = ()

    def spec(self) -> str:
        pieces = [".".join(str(number) for number in self.part)] if self.part else []
        if self.text:
            pieces.append(self.text)
        spec = ".".join(pieces)
        if self.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            spec += " (" + " ".join(self.fields) + ")"
        return spec


@dataclasses.dataclass(frozen=True)
class FetchAtt:
    """One FETCH item.

    name is one of SIMPLE_ITEMS, or "BODY" / "BINARY" / "BINARY.SIZE" with a
    section. BODY without a section is the non-extensible BODYSTRUCTURE.
    partial is (start, count) from <start.count>. peek marks BODY.PEEK and
    BINARY.PEEK, which do not set \\Seen.
    """

    name: str
    section: Optional[Section] = None
    partial: Optional[tuple] = None
    peek: bool = False

    @property
    def sets_seen(self) -> bool:
        """RFC 9051 6.4.5: BODY[...], BINARY[...], RFC822 and RFC822.TEXT set \\Seen."""
        if self.name in ("RFC822", "RFC822.TEXT"):
            return True
        return self.section is not None and self.name in ("BODY", "BINARY") and not self.peek

    def label(self) -> str:
        """The item's name in the FETCH response (RFC 9051 7.5.2): ".PEEK" dropped,
        a partial shown by its origin only."""
        if self.section is None:
            return self.name
        if self.name == "BODY":
            text = "BODY[" + self.section.spec() + "]"
        else:
            text = self.name + "[" + self.section.spec() + "]"
        if self.partial is not None:
            text += "<%d>" % self.partial[0]
        return text


def parse_fetch_items(reader: Reader) -> tuple:
    """fetch-att list or macro after "FETCH seq SP"; returns FetchAtt items."""
    if reader.peek() == b"(":
        reader.pos += 1
        items = [parse_fetch_att(reader)]
        while not reader.accept(b")"):
            reader.sp()
            items.append(parse_fetch_att(reader))
        return tuple(items)
    start = reader.pos
    word = reader.match_pattern(_ITEM_NAME, "a fetch item").group().decode("ascii").upper()
    if word in MACROS and reader.peek() != b"[":
        return tuple(FetchAtt(name) for name in MACROS[word])
    reader.pos = start
    return (parse_fetch_att(reader),)


def parse_fetch_att(reader: Reader) -> FetchAtt:
    word = reader.match_pattern(_ITEM_NAME, "a fetch item").group().decode("ascii").upper()
    if reader.peek() != b"[":
        if word in SIMPLE_ITEMS:
            return FetchAtt(word)
        raise ParseFailure("unknown fetch item " + word[:40])
    if word in ("BODY", "BODY.PEEK"):
        section = _section(reader)
        return FetchAtt("BODY", section, _partial(reader), peek=word == "BODY.PEEK")
    if word in ("BINARY", "BINARY.PEEK"):  # RFC 3516 4.2
        section = Section(_binary_part(reader))
        return FetchAtt("BINARY", section, _partial(reader), peek=word == "BINARY.PEEK")
    if word == "BINARY.SIZE":
        return FetchAtt("BINARY.SIZE", Section(_binary_part(reader)))
    raise ParseFailure("unknown fetch item " + word[:40])


def _section(reader: Reader) -> Section:
    """section = "[" [section-spec] "]" (RFC 9051 9)."""
    reader.expect(b"[")
    if reader.accept(b"]"):
        return Section()
    part = _part_numbers(reader)
    text = None
    fields: tuple = ()
    if not part or reader.accept(b"."):
        word = reader.match_pattern(_ITEM_NAME, "a section text").group().decode("ascii").upper()
        if word not in SECTION_TEXTS or (word == "MIME" and not part):
            raise ParseFailure("invalid section " + word[:40])
        text = word
        if word.startswith("HEADER.FIELDS"):
            reader.sp()
            fields = _header_list(reader)
    reader.expect(b"]")
    return Section(part, text, fields)


def _part_numbers(reader: Reader) -> tuple:
    numbers: list[int] = []
    while reader.peek().isdigit():
        numbers.append(reader.nz_number())
        if len(numbers) > MAX_SECTION_PARTS:
            raise ParseFailure("section part number too deep")
        if not (reader.peek() == b"." and reader.peek(2)[1:].isdigit()):
            break
        reader.pos += 1
    return tuple(numbers)


def _binary_part(reader: Reader) -> tuple:
    """section-binary = "[" [section-part] "]" (RFC 3516 4.2)."""
    reader.expect(b"[")
    part = _part_numbers(reader)
    reader.expect(b"]")
    return part


def _header_list(reader: Reader) -> tuple:
    """header-list = "(" header-fld-name *(SP header-fld-name) ")"."""
    reader.expect(b"(")
    names = []
    while True:
        raw = reader.astring()
        if _FIELD_NAME.fullmatch(raw) is None:
            raise ParseFailure("invalid header field name")
        names.append(raw.decode("ascii"))
        if len(names) > MAX_HEADER_FIELDS:
            raise ParseFailure("too many header field names")
        if reader.accept(b")"):
            return tuple(names)
        reader.sp()


def _partial(reader: Reader) -> Optional[tuple]:
    """partial = "<" number "." nz-number ">" (RFC 9051 9)."""
    if not reader.accept(b"<"):
        return None
    start = reader.number()
    reader.expect(b".")
    count = reader.nz_number()
    reader.expect(b">")
    return (start, count)


def parse_fetch_modifiers(reader: Reader) -> tuple[Optional[int], bool]:
    """fetch-modifiers (RFC 7162 3.1.4.1, 3.2.6): CHANGEDSINCE and VANISHED."""
    changed_since: Optional[int] = None
    vanished = False
    reader.expect(b"(")
    while True:
        word = reader.atom_upper()
        if word == "CHANGEDSINCE" and changed_since is None:
            reader.sp()
            changed_since = reader.number64()
        elif word == "VANISHED" and not vanished:
            vanished = True
        else:
            raise ParseFailure("unknown fetch modifier " + word[:40])
        if reader.accept(b")"):
            break
        reader.sp()
    if vanished and changed_since is None:
        raise ParseFailure("VANISHED requires CHANGEDSINCE")  # RFC 7162 3.2.6
    return changed_since, vanished
