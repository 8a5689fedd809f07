"""Sequence sets (RFC 9051 9 "sequence-set"; "$" from RFC 5182 SEARCHRES)."""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator, Optional

MAX_NUMBER = 0xFFFFFFFF  # RFC 9051 9: number is a 32-bit unsigned integer
MAX_RANGES = 10000


@dataclasses.dataclass(frozen=True)
class SequenceSet:
    """Ranges of message sequence numbers or UIDs, as the client wrote them.

    Each range is (first, last) with None standing for "*" (the largest number
    in use). `saved` is True for "$", the result SEARCH RETURN (SAVE) kept.
    """

    ranges: tuple = ()
    saved: bool = False

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Ranges with "*" replaced by `largest`, each ordered low to high
        (RFC 9051 9: "2:4" and "4:2" are the same), merged and sorted."""
        spans = []
        for first, last in self.ranges:
            low = largest if first is None else first
            high = largest if last is None else last
            if low > high:
                low, high = high, low
            spans.append((low, high))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for low, high in spans:
            if merged and low <= merged[-1][1] + 1:
                if high > merged[-1][1]:
                    merged[-1] = (merged[-1][0], high)
            else:
                merged.append((low, high))
        return merged

    def contains(self, number: int, largest: int) -> bool:
        for low, high in self.resolve(largest):
            if low <= number <= high:
                return True
        return False

    def select(self, numbers: Iterable[int], largest: Optional[int] = None) -> Iterator[int]:
        """The members of `numbers` (ascending) inside the set; "*" means `largest`,
        by default the last of `numbers` (RFC 9051 6.4.8: for UIDs, "*" is the
        highest UID in the mailbox)."""
        numbers = list(numbers)
        if largest is None:
            largest = numbers[-1] if numbers else 0
        spans = self.resolve(largest)
        index = 0
        for number in numbers:
            while index < len(spans) and spans[index][1] < number:
                index += 1
            if index == len(spans):
                return
            if spans[index][0] <= number:
                yield number

    def __str__(self) -> str:
        if self.saved:
            return "$"
        return format_ranges(self.ranges)


def format_ranges(ranges: Iterable[tuple[Optional[int], Optional[int]]]) -> str:
    parts = []
    for first, last in ranges:
        left = "*" if first is None else str(first)
        if first == last:
            parts.append(left)
        else:
            parts.append(left + ":" + ("*" if last is None else str(last)))
    return ",".join(parts)


def compress(numbers: Iterable[int]) -> str:
    """Shortest sequence-set text for the given numbers: [1,2,3,7] -> "1:3,7"."""
    ordered = sorted(set(numbers))
    ranges: list[tuple[int, int]] = []
    for number in ordered:
        if ranges and number == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], number)
        else:
            ranges.append((number, number))
    return format_ranges(ranges)
