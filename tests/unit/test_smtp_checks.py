"""The staged check chain (checks/base.py): verdicts, ordering, failures, registry."""

from __future__ import annotations

from importlib import metadata

import pytest
from twisted.internet import defer

from mailserverd.checks import base
from mailserverd.checks.base import (Check, CheckChain, Envelope, HopCountCheck, Recipient, Session,
                                     UnknownCheck, Verdict, build_chain, load_check)


def result_of(d: defer.Deferred):
    box = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    return box[0]


SESSION = Session(id="s1", mode="smtp", remote_ip="192.0.2.7", remote_port=4000, hostname="mx.test")
ENVELOPE = Envelope(id="e1", mail_from="a@remote.test", params=None)


class Recording(Check):
    """A tiny test check: returns a fixed verdict at the body stage and records calls."""

    def __init__(self, name, verdict=None, deferred=False):
        self.name = name
        self.verdict = verdict
        self.deferred = deferred
        self.calls = []

    def body(self, session, envelope, message):
        self.calls.append(message)
        return defer.succeed(self.verdict) if self.deferred else self.verdict


def test_verdict_refuses_forged_header_lines_and_bad_codes():
    """A header value with CR/LF, or a reject with a 2xx code or mismatched class, is refused."""
    with pytest.raises(ValueError):
        Verdict.accept([("X-Spam", "no\r\nBcc: victim@x.test")])
    with pytest.raises(ValueError):
        Verdict.reject(250, "2.0.0", "not a reject")
    with pytest.raises(ValueError):
        Verdict.reject(550, "4.7.1", "class mismatch")


def test_empty_chain_accepts():
    """A chain without checks accepts with no headers."""
    verdict = result_of(CheckChain().run_body(SESSION, ENVELOPE, b"x"))
    assert verdict == Verdict.accept()


def test_first_reject_wins_and_later_checks_are_not_run():
    """The chain stops at the first reject and returns it unchanged."""
    reject = Verdict.reject(550, "5.7.1", "spam")
    later = Recording("later", Verdict.accept())
    chain = CheckChain([Recording("a", Verdict.accept([("X-A", "1")])), Recording("b", reject), later])
    assert result_of(chain.run_body(SESSION, ENVELOPE, b"x")) == reject
    assert later.calls == []


def test_quarantine_sticks_and_headers_are_merged_in_order():
    """A quarantine from any check survives later accepts; headers of all verdicts are kept in order."""
    chain = CheckChain([Recording("a", Verdict.accept([("X-A", "1")])),
                        Recording("b", Verdict.quarantine("spammy", [("X-Spam", "yes")]), deferred=True),
                        Recording("c", None), Recording("d", Verdict.accept([("X-D", "4")]))])
    verdict = result_of(chain.run_body(SESSION, ENVELOPE, b"x"))
    assert verdict.quarantined and verdict.text == "spammy"
    assert verdict.headers == (("X-A", "1"), ("X-Spam", "yes"), ("X-D", "4"))


def test_failing_check_gives_a_temporary_failure():
    """A check that raises (or fails its Deferred) makes the stage answer 451 4.7.0, never accept."""
    class Broken(Check):
        name = "broken"

        def sender(self, session, envelope):
            raise ConnectionError("filter daemon down")

    class BrokenLater(Check):
        name = "broken-later"

        def connection(self, session):
            return defer.fail(TimeoutError())

    assert result_of(CheckChain([Broken()]).run_sender(SESSION, ENVELOPE)) == base.TEMPORARY_FAILURE
    assert result_of(CheckChain([BrokenLater()]).run_connection(SESSION)) == base.TEMPORARY_FAILURE


def test_check_returning_a_non_verdict_is_a_temporary_failure():
    """A check returning something other than a Verdict or None counts as broken."""
    assert result_of(CheckChain([Recording("odd", "yes")]).run_body(SESSION, ENVELOPE, b"x")) \
        == base.TEMPORARY_FAILURE


def test_recipient_stage_receives_the_recipient():
    """run_recipient passes session, envelope and the one recipient to each check."""
    seen = []

    class PerRecipient(Check):
        name = "per-rcpt"

        def recipient(self, session, envelope, recipient):
            seen.append(recipient.address)
            return Verdict.quarantine() if recipient.address.startswith("junk") else None

    chain = CheckChain([PerRecipient()])
    assert result_of(chain.run_recipient(SESSION, ENVELOPE, Recipient("junk@l.test", None))).quarantined
    assert result_of(chain.run_recipient(SESSION, ENVELOPE, Recipient("ok@l.test", None))) == Verdict.accept()
    assert seen == ["junk@l.test", "ok@l.test"]


def test_registry_loads_builtins_and_refuses_unknown_names():
    """Built-in checks load by name with options; an unknown name raises UnknownCheck listing what exists."""
    check = load_check("check.hops", limit=3)
    assert isinstance(check, HopCountCheck) and check.limit == 3
    with pytest.raises(UnknownCheck, match="check.hops"):
        load_check("check.nonexistent")


def test_registry_loads_entry_points(monkeypatch):
    """A check published under the "mailserverd.checks" entry point group loads by its name."""
    entry = metadata.EntryPoint(name="check.plugin", value="mailserverd.checks.base:HopCountCheck",
                                group=base.ENTRY_POINT_GROUP)
    real = metadata.entry_points

    def fake(**selection):
        if selection.get("group") == base.ENTRY_POINT_GROUP:
            return metadata.EntryPoints([entry]).select(**selection)
        return real(**selection)

    monkeypatch.setattr(base.metadata, "entry_points", fake)
    chain = build_chain(["check.hops", "check.plugin"], {"check.plugin": {"limit": 7}})
    assert [check.limit for check in chain.checks] == [50, 7]
    assert "check.plugin" in base.available_checks()


@pytest.mark.parametrize("count, rejected", [(50, False), (51, True)])
def test_hop_count_check_refuses_looping_mail(count, rejected):
    """More than 50 Received fields (RFC 5321 6.3 loop detection) get 554 5.4.6."""
    message = b"Received: from x\r\n" * count + b"Subject: s\r\n\r\nReceived: in body\r\n"
    verdict = HopCountCheck().body(SESSION, ENVELOPE, message)
    assert (verdict is not None and verdict.code == 554 and verdict.enhanced == "5.4.6") == rejected
