"""FETCH data items (RFC 9051 6.4.5): sections, partials, labels."""

import pytest

from mailserverd.imap.fetch import MAX_HEADER_FIELDS, MAX_SECTION_PARTS, FetchAtt, Section
from mailserverd.imap.parser import CommandError, CommandParser, CommandReady


def items(text):
    parser = CommandParser()
    parser.receive(b"t FETCH 1 " + text + b"\r\n")
    event = parser.next_event()
    assert isinstance(event, CommandReady), event
    return event.command.items


def error(text):
    parser = CommandParser()
    parser.receive(b"t FETCH 1 " + text + b"\r\n")
    event = parser.next_event()
    assert isinstance(event, CommandError), event
    return event


@pytest.mark.parametrize("name", ["ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER",
                                  "RFC822.SIZE", "RFC822.TEXT", "BODY", "BODYSTRUCTURE", "UID",
                                  "MODSEQ"])
def test_simple_items(name):
    """Each simple item parses alone and in a list."""
    assert items(name.lower().encode()) == (FetchAtt(name),)
    assert items(b"(" + name.encode() + b" UID)") == (FetchAtt(name), FetchAtt("UID"))


@pytest.mark.parametrize("macro,count", [(b"ALL", 4), (b"FAST", 3), (b"FULL", 5)])
def test_macros(macro, count):
    """ALL, FAST and FULL expand to their item lists."""
    assert len(items(macro)) == count


def test_body_sections():
    """BODY[], BODY[1.2], BODY[HEADER], BODY[1.TEXT], BODY[2.MIME]."""
    assert items(b"BODY[]") == (FetchAtt("BODY", Section()),)
    assert items(b"BODY[1.2]") == (FetchAtt("BODY", Section((1, 2))),)
    assert items(b"BODY[HEADER]") == (FetchAtt("BODY", Section((), "HEADER")),)
    assert items(b"BODY[1.TEXT]") == (FetchAtt("BODY", Section((1,), "TEXT")),)
    assert items(b"BODY[2.MIME]") == (FetchAtt("BODY", Section((2,), "MIME")),)


def test_header_fields_and_not():
    """HEADER.FIELDS and HEADER.FIELDS.NOT keep the field names as sent."""
    [att] = items(b"BODY.PEEK[HEADER.FIELDS (From \"To\" {2+}\r\nCc)]")
    assert att == FetchAtt("BODY", Section((), "HEADER.FIELDS", ("From", "To", "Cc")), peek=True)
    [att] = items(b"BODY[1.HEADER.FIELDS.NOT (Received)]")
    assert att.section == Section((1,), "HEADER.FIELDS.NOT", ("Received",))


def test_partial():
    """<start.count> is kept; the label shows only <start> (RFC 9051 7.5.2)."""
    [att] = items(b"BODY.PEEK[]<0.20>")
    assert att.partial == (0, 20) and att.label() == "BODY[]<0>"


def test_labels_drop_peek():
    """BODY.PEEK[...] is answered as BODY[...]; HEADER.FIELDS echo the list."""
    [att] = items(b"BODY.PEEK[1.HEADER.FIELDS (FROM TO)]")
    assert att.label() == "BODY[1.HEADER.FIELDS (FROM TO)]"
    assert items(b"BINARY.PEEK[1]<5.10>")[0].label() == "BINARY[1]<5>"
    assert items(b"BINARY.SIZE[2]")[0].label() == "BINARY.SIZE[2]"


def test_sets_seen():
    """BODY[] and RFC822 set \\Seen; BODY.PEEK and RFC822.HEADER do not."""
    assert items(b"BODY[]")[0].sets_seen and items(b"RFC822")[0].sets_seen
    assert not items(b"BODY.PEEK[]")[0].sets_seen
    assert not items(b"RFC822.HEADER")[0].sets_seen


def test_binary_items():
    """BINARY[part], BINARY.PEEK[], BINARY.SIZE[part] (RFC 3516)."""
    assert items(b"BINARY[1.2]") == (FetchAtt("BINARY", Section((1, 2))),)
    assert items(b"BINARY.PEEK[]")[0].peek
    assert error(b"BINARY[1.TEXT]").status == "BAD"


@pytest.mark.parametrize("text", [b"BODY[MIME]", b"BODY[0]", b"BODY[1.FOO]", b"BODY[HEADER.FIELDS]",
                                  b"BODY[HEADER.FIELDS ()]", b"BODY[]<1>", b"BODY[]<1.0>",
                                  b"BODY[", b"FOO", b"(FLAGS", b"BODY[1.]"])
def test_malformed_items_are_bad(text):
    """Malformed sections, partials or names get BAD."""
    assert error(text).status == "BAD"


def test_section_depth_cap():
    """BODY[1.1.1...] deeper than the cap is BAD; at the cap it parses."""
    ok = b".".join([b"1"] * MAX_SECTION_PARTS)
    assert items(b"BODY[" + ok + b"]")[0].section.part == (1,) * MAX_SECTION_PARTS
    assert error(b"BODY[" + ok + b".1]").status == "BAD"


def test_header_field_count_cap():
    """More than MAX_HEADER_FIELDS names in one list is BAD."""
    names = b" ".join(b"X-F%d" % i for i in range(MAX_HEADER_FIELDS + 1))
    assert error(b"BODY[HEADER.FIELDS (" + names + b")]").status == "BAD"


def test_header_field_name_with_colon_is_bad():
    """A field name cannot contain ":" (RFC 5322 2.2)."""
    assert error(b'BODY[HEADER.FIELDS ("a:b")]').status == "BAD"
