"""Adversarial input to the IMAP parser: BAD within milliseconds, bounded memory."""

import time
import tracemalloc

import pytest

from mailserverd.imap.parser import CommandError, CommandParser, ParserLimits

# As generous as settings.limits.max_line_length allows, so the nesting and
# count caps (not the line limit) are what refuse these commands.
WIDE = ParserLimits(max_line=2 * 1024 * 1024, max_command=4 * 1024 * 1024)


def first_event(data, limits=ParserLimits()):
    parser = CommandParser(limits)
    parser.authenticated = True
    started = time.perf_counter()
    parser.receive(data)
    event = parser.next_event()
    return event, time.perf_counter() - started


@pytest.mark.parametrize("prefix", [b"t SEARCH ", b"t FETCH 1 ", b"t STORE 1 FLAGS ",
                                    b't LIST "" ', b"t SELECT INBOX ", b"t APPEND INBOX ",
                                    b"t STATUS INBOX ", b"t ID ", b"t SORT "])
@pytest.mark.parametrize("limits", [ParserLimits(), WIDE], ids=["default", "wide"])
def test_100000_open_parentheses(prefix, limits):
    """100,000 "(" in any command is BAD quickly, never a RecursionError."""
    event, elapsed = first_event(prefix + b"(" * 100000 + b"\r\n", limits)
    assert isinstance(event, CommandError) and event.status == "BAD"
    assert elapsed < 0.5


def test_deeply_nested_search_within_line_limit():
    """OR/NOT/parenthesis nesting thousands deep in SEARCH is BAD quickly."""
    data = b"t SEARCH " + b"OR (NOT " * 5000 + b"ALL" + b") ALL" * 5000 + b"\r\n"
    event, elapsed = first_event(data, WIDE)
    assert isinstance(event, CommandError) and "nested" in event.text
    assert elapsed < 0.5


def test_one_megabyte_line():
    """A 1 MB line is BAD as soon as the line limit is passed."""
    parser = CommandParser()
    started = time.perf_counter()
    events = []
    for _ in range(16):
        parser.receive(b"t NOOP " + b"a" * 65536)
        while (event := parser.next_event()) is not None:
            events.append(event)
    assert time.perf_counter() - started < 0.5
    assert len(events) == 1 and events[0].status == "BAD"


def test_one_megabyte_line_memory_is_bounded():
    """Feeding a 4 MB line in 64 kB reads never holds more than a few reads."""
    parser = CommandParser()
    chunk = b"b" * 65536
    tracemalloc.start()
    try:
        for _ in range(64):
            parser.receive(chunk)
            while parser.next_event() is not None:
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 600 * 1024


def test_ten_thousand_header_field_names():
    """10,000 HEADER.FIELDS names is BAD (cap 256), with the line limit out of the way."""
    names = b" ".join(b"X-H%d" % i for i in range(10000))
    event, elapsed = first_event(b"t FETCH 1 BODY[HEADER.FIELDS (" + names + b")]\r\n", WIDE)
    assert isinstance(event, CommandError) and "header field" in event.text
    assert elapsed < 0.5


def test_section_200_parts_deep():
    """BODY[1.1.1...] 200 levels deep is BAD (cap 32)."""
    section = b".".join([b"1"] * 200)
    event, elapsed = first_event(b"t FETCH 1 BODY[" + section + b"]\r\n")
    assert isinstance(event, CommandError) and "deep" in event.text
    assert elapsed < 0.5


def test_huge_sequence_set():
    """A sequence set with more ranges than the cap is BAD."""
    ranges = b",".join(b"%d" % i for i in range(1, 20001))
    event, _ = first_event(b"t FETCH " + ranges + b" FLAGS\r\n", WIDE)
    assert isinstance(event, CommandError) and "ranges" in event.text


def test_oversized_numbers_are_bad():
    """Numbers beyond 32 bits (sequence numbers) or 63 bits (modseq) are BAD."""
    for data in (b"t FETCH 4294967296 FLAGS\r\n", b"t FETCH 1 BODY[]<99999999999.1>\r\n",
                 b"t SEARCH MODSEQ 9223372036854775808\r\n",
                 b"t SEARCH LARGER " + b"9" * 5000 + b"\r\n"):
        event, elapsed = first_event(data, WIDE)
        assert isinstance(event, CommandError), data
        assert elapsed < 0.5


def test_many_search_keys():
    """A flat program of 100,000 keys is refused by the key budget."""
    event, elapsed = first_event(b"t SEARCH " + b"SEEN " * 100000 + b"ALL\r\n", WIDE)
    assert isinstance(event, CommandError) and "too many" in event.text
    assert elapsed < 0.5
