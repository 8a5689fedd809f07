"""Forwarding pieces without a daemon: alias resolution to remote targets and its validation
(store/directory.py), Delivered-To loop detection and the forward plan (smtp/delivery.py),
and ARC sealing of a forwarded copy (outbound/forward.py)."""

from __future__ import annotations

import dkim
import pytest

from mailserverd.checks.base import Envelope, Recipient
from mailserverd.outbound.forward import arc_seal, delivered_to
from mailserverd.smtp.delivery import forward_plan
from mailserverd.store import Store
from mailserverd.store.api import StoreError
from tests.support import mailauth


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/directory.sqlite3", [f"sqlite:///{tmp_path}/shard-0.sqlite3"],
                  str(tmp_path / "blobs"))
    store.directory.add_domain("example.test")
    yield store
    store.close()


def test_alias_targets_may_be_remote_and_mixed(store):
    """An alias reaches local accounts and remote addresses; a chain of local aliases is
    followed; the remote addresses come back once each, in order."""
    alice = store.add_account("alice@example.test", "pw")
    store.directory.add_alias("me@example.test", ["me@gmail.example"])
    store.directory.add_alias("team@example.test", ["alice@example.test", "me@example.test", "x@other.example"])
    assert store.directory.resolve_targets("me@example.test") == ([], ["me@gmail.example"])
    accounts, remote = store.directory.resolve_targets("team@example.test")
    assert [a.id for a in accounts] == [alice.id] and remote == ["me@gmail.example", "x@other.example"]
    assert [a.id for a in store.directory.resolve_recipient("team@example.test")] == [alice.id]
    # a remote address asked for directly is no forward (no open relay)
    assert store.directory.resolve_targets("me@gmail.example") == ([], [])


def test_alias_loops_are_refused_when_added(store):
    """An alias pointing to itself, or closing a cycle through other aliases, is refused."""
    store.directory.add_alias("a@example.test", ["b@example.test"])
    store.directory.add_alias("b@example.test", ["c@example.test", "far@remote.example"])
    with pytest.raises(StoreError, match="itself"):
        store.directory.add_alias("self@example.test", ["self@example.test"])
    with pytest.raises(StoreError, match="c@example.test -> a@example.test -> b@example.test -> c@example.test"):
        store.directory.add_alias("c@example.test", ["a@example.test"])


def test_forwarding_alias_is_not_a_sender_address(store):
    """An alias that also forwards elsewhere does not deliver only to the account, so the
    account may not send as it."""
    alice = store.add_account("alice@example.test", "pw")
    store.directory.add_alias("only@example.test", ["alice@example.test"])
    store.directory.add_alias("shared@example.test", ["alice@example.test", "her@gmail.example"])
    assert store.directory.sender_addresses(alice) == {"alice@example.test", "only@example.test"}


def test_delivered_to_and_the_forward_plan():
    """Delivered-To naming the alias stops its forward (a loop); quarantined mail is not
    forwarded; other forwarding recipients go ahead."""
    message = b"Delivered-To: <Me@Example.test>\r\nFrom: a@b.test\r\n\r\nhi\r\n"
    assert delivered_to(message) == {"me@example.test"}
    envelope = Envelope(id="X", mail_from="a@b.test", params=None, recipients=[
        Recipient("me@example.test", None, forward=("me@gmail.example",)),
        Recipient("team@example.test", None, forward=("x@other.example",)),
        Recipient("spam@example.test", None, forward=("y@other.example",), quarantine=True),
        Recipient("bob@example.test", None)])
    plan, looped = forward_plan(envelope, message, quarantined=False)
    assert [(r.address, targets) for r, targets in plan] == [("team@example.test", ("x@other.example",))]
    assert looped == ["me@example.test"]
    assert forward_plan(envelope, message, quarantined=True) == ([], [])


def test_arc_seal_of_a_forwarded_copy():
    """arc_seal adds i=1 cv=none from our Authentication-Results; the author's DKIM signature
    still verifies; without our Authentication-Results the message is left unsealed."""
    private, record = mailauth.rsa_key("fwd")
    raw = mailauth.sign(mailauth.message(), "example.com")
    ours = b"Authentication-Results: mx.example.test; dkim=pass header.d=example.com; arc=none\r\n"
    sealed = arc_seal(b"Delivered-To: me@example.test\r\n" + ours + raw, "example.test", "s1", private,
                      "mx.example.test", 1_796_000_000)
    records = {b"s1._domainkey.example.test.": record.encode(),
               b"sel._domainkey.example.com.": mailauth.key_record().encode()}

    def dnsfunc(name, timeout=5):
        return records.get(name)
    assert sealed.startswith(b"ARC-Seal: i=1; cv=none;")
    assert dkim.arc_verify(sealed, dnsfunc=dnsfunc)[0] == dkim.CV_Pass
    assert dkim.verify(sealed, dnsfunc=dnsfunc)
    unsealed = b"Delivered-To: me@example.test\r\n" + raw
    assert arc_seal(unsealed, "example.test", "s1", private, "mx.example.test", 1_796_000_000) == unsealed


def test_a_chain_ended_by_cv_fail_is_not_extended():
    """RFC 8617 5.1: when the newest ARC-Seal says cv=fail the chain is over; we add no set."""
    private, _record = mailauth.rsa_key("fwd")
    first = mailauth.arc_seal(mailauth.message(), "one.test", "mx.one.test")
    failed = mailauth.arc_seal(first, "two.test", "mx.two.test", results="arc=fail")
    assert b"cv=fail" in failed.split(b"\r\n", 1)[0]
    ours = b"Authentication-Results: mx.example.test; arc=fail\r\n" + failed
    assert arc_seal(ours, "example.test", "s1", private, "mx.example.test", 1_796_000_000) == ours
