"""The session's maildrop snapshot: numbering, deletion marks, unique ids."""

from __future__ import annotations

import re

import pytest

from mailserverd.pop3.maildrop import Maildrop, NoSuchMessage, unique_id


def test_unique_id_fits_rfc_1939_syntax():
    """RFC 1939 7: a unique-id is 1-70 characters in 0x21-0x7E, even for the largest values."""
    uid = unique_id(2**32 - 1, 2**32 - 1)
    assert re.fullmatch(r"[\x21-\x7e]{1,70}", uid)


def test_numbers_follow_uid_order():
    """Messages are numbered 1..n in the order given (UID order), with their uidvalidity-uid ids."""
    drop = Maildrop(3, [(4, 40, 10), (7, 70, 20)])
    assert [(e.number, e.uid, e.unique_id) for e in drop.entries] == [(1, 4, "3-4"), (2, 7, "3-7")]


def test_deleted_uids_and_reset():
    """delete() marks, deleted_uids() lists the marked UIDs in order, reset() clears them."""
    drop = Maildrop(3, [(4, 40, 10), (7, 70, 20), (9, 90, 5)])
    drop.delete(3)
    drop.delete(1)
    assert drop.deleted_uids() == (4, 9) and drop.stat() == (1, 20)
    drop.reset()
    assert drop.deleted_uids() == () and drop.stat() == (3, 35)


@pytest.mark.parametrize("number", [0, 4, -1])
def test_out_of_range_numbers_are_refused(number):
    """A number outside 1..n raises NoSuchMessage."""
    with pytest.raises(NoSuchMessage):
        Maildrop(3, [(4, 40, 10), (7, 70, 20), (9, 90, 5)]).get(number)
