"""SRS (mailserverd/outbound/srs.py): forward, reverse, expiry and tampering, with an injected clock."""

from __future__ import annotations

import os
import stat

import pytest

from mailserverd.outbound.srs import MAX_AGE, SRS, SrsError, is_srs, load_secrets

DAY = 86400


class Clock:
    def __init__(self, now: float = 1_796_000_000.0):
        self.now = now

    def seconds(self) -> float:
        return self.now


def local_part(address: str) -> str:
    return address.rpartition("@")[0]


def test_forward_and_reverse_round_trip():
    """SRS0=HHH=TT=domain=local@forwarder names the forwarder's domain; reversing it
    gives the original sender back, also after a relay lower-cased the local part."""
    srs = SRS([b"secret"], Clock())
    rewritten = srs.forward("Alice.Smith@sender.test", "example.test")
    assert rewritten.startswith("SRS0=") and rewritten.endswith("=sender.test=Alice.Smith@example.test")
    assert is_srs(local_part(rewritten))
    assert srs.reverse(local_part(rewritten)) == "Alice.Smith@sender.test"
    assert srs.reverse(local_part(rewritten).lower()) == "alice.smith@sender.test"


def test_null_sender_stays_null():
    """RFC 5321 4.5.5: a bounce has the null reverse-path, and forwarding keeps it null."""
    assert SRS([b"secret"], Clock()).forward("", "example.test") == ""


def test_local_part_with_equals_sign_survives():
    """The original local part may itself hold "=" (it is the last field, split off last)."""
    srs = SRS([b"secret"], Clock())
    rewritten = srs.forward("a=b@sender.test", "example.test")
    assert srs.reverse(local_part(rewritten)) == "a=b@sender.test"


def test_expiry_and_wrap():
    """An address is valid for MAX_AGE days and refused after; the day count wraps at 1024
    without making an old address look fresh."""
    clock = Clock()
    srs = SRS([b"secret"], clock)
    local = local_part(srs.forward("alice@sender.test", "example.test"))
    clock.now += MAX_AGE * DAY
    assert srs.reverse(local) == "alice@sender.test"
    clock.now += DAY
    with pytest.raises(SrsError, match="expired"):
        srs.reverse(local)
    clock.now = 1024 * DAY * 1000 + 1023 * DAY  # the last day before the counter wraps
    local = local_part(srs.forward("alice@sender.test", "example.test"))
    clock.now += 2 * DAY  # the counter has wrapped to 1
    assert srs.reverse(local) == "alice@sender.test"


def test_tampered_forged_or_foreign_addresses_are_refused():
    """A changed address, hash, timestamp, or a hash made with another secret fails; a
    second secret still verifies addresses made before a key rotation."""
    clock = Clock()
    old = SRS([b"old"], clock)
    local = local_part(old.forward("alice@sender.test", "example.test"))
    _tag, hhh, stamp, domain, user = local.split("=")
    for forged in (f"SRS0={hhh}={stamp}={domain}=mallory", f"SRS0={hhh}={stamp}=evil.test={user}",
                   f"SRS0=AAAAAAAA={stamp}={domain}={user}", f"SRS0={hhh}=AA={domain}={user}",
                   f"SRS0={hhh}={stamp}", "SRS0=", "SRS2=x=y=z=w", "alice"):
        with pytest.raises(SrsError):
            old.reverse(forged)
    with pytest.raises(SrsError, match="hash"):
        SRS([b"other"], clock).reverse(local)
    assert SRS([b"new", b"old"], clock).reverse(local) == "alice@sender.test"


def test_srs1_for_an_address_already_rewritten():
    """Forwarding an SRS0 address of another forwarder makes SRS1 (draft 3.2), which
    reverses to that forwarder's SRS0 address; forwarding SRS1 again keeps it short."""
    clock = Clock()
    first = SRS([b"first"], clock).forward("alice@sender.test", "fwd1.test")
    ours = SRS([b"ours"], clock)
    srs1 = ours.forward(first, "example.test")
    assert srs1.startswith("SRS1=") and "=fwd1.test==" in srs1
    assert ours.reverse(local_part(srs1)) == first
    again = ours.forward(srs1, "other.test")
    assert again.count("SRS") == 1 and ours.reverse(local_part(again)) == first
    with pytest.raises(SrsError):
        ours.reverse(local_part(srs1).replace("fwd1.test", "evil.test"))


def test_secret_made_on_first_use(tmp_path):
    """<data_dir>/srs/secret is created once, owner-only, and read back the same."""
    first = load_secrets(str(tmp_path))
    path = os.path.join(tmp_path, "srs", "secret")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_secrets(str(tmp_path)) == first and len(first[0]) == 64
    clock = Clock()
    made = SRS.from_data_dir(str(tmp_path), clock).forward("alice@sender.test", "example.test")
    assert SRS.from_data_dir(str(tmp_path), clock).reverse(local_part(made)) == "alice@sender.test"
