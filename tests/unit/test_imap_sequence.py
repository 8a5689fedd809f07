"""Sequence sets: resolution of "*", ordering, membership, compression."""

from mailserverd.imap.sequence import SequenceSet, compress


def test_resolve_star_and_reversed_ranges():
    """"*" is the largest number; "4:2" equals "2:4"; overlapping ranges merge."""
    seq = SequenceSet(((4, 2), (3, 6), (None, None), (9, 9)))
    assert seq.resolve(10) == [(2, 6), (9, 10)]


def test_contains():
    """Membership honours "*"."""
    seq = SequenceSet(((5, None),))
    assert seq.contains(7, 8) and not seq.contains(4, 8)


def test_select_uids():
    """select() picks existing numbers; "*" is the highest existing one (RFC 9051 6.4.8)."""
    uids = [3, 7, 9, 20]
    assert list(SequenceSet(((5, None),)).select(uids)) == [7, 9, 20]
    assert list(SequenceSet(((None, None),)).select(uids)) == [20]
    assert list(SequenceSet(((21, None),)).select(uids)) == [20]  # "21:*" is "20:21"


def test_str_round_trip():
    """str() gives the wire form back."""
    assert str(SequenceSet(((1, 3), (5, 5), (7, None)))) == "1:3,5,7:*"
    assert str(SequenceSet(saved=True)) == "$"


def test_compress():
    """compress() produces the shortest range text."""
    assert compress([7, 1, 2, 3, 5, 6]) == "1:3,5:7"
    assert compress([]) == ""
