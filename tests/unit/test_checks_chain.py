"""CheckChain (mailserverd/checks/base.py) without inlineCallbacks: synchronous stages
answer with an already-fired Deferred, a Deferred stage makes the rest wait, and every
kind of failure (raise, failed Deferred, a non-Verdict) is 451 4.7.0."""

from __future__ import annotations

from twisted.internet import defer

from mailserverd.checks.base import TEMPORARY_FAILURE, Check, CheckChain, Verdict


class Fixed(Check):
    def __init__(self, name, answer, calls):
        self.name, self.answer, self.calls = name, answer, calls

    def body(self, session, envelope, message):
        self.calls.append(self.name)
        answer = self.answer
        return answer() if callable(answer) else answer


def fired(d):
    box = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    return box[0]


def test_synchronous_checks_answer_at_once_merging_headers_and_quarantine():
    """None, accept and quarantine answered synchronously: the result has already fired,
    headers of all in order, quarantine (the first's reason) sticks."""
    calls = []
    chain = CheckChain([Fixed("a", None, calls), Fixed("b", Verdict.accept([("X-A", "1")]), calls),
                        Fixed("c", Verdict.quarantine("first", [("X-B", "2")]), calls),
                        Fixed("d", Verdict.quarantine("second"), calls)])
    verdict = fired(chain.run_body(None, None, b""))
    assert calls == ["a", "b", "c", "d"]
    assert verdict.quarantined and verdict.text == "first" and verdict.headers == (("X-A", "1"), ("X-B", "2"))
    assert fired(CheckChain([]).run_body(None, None, b"")) == Verdict.accept()


def test_a_deferred_check_holds_the_rest_and_a_reject_stops_the_chain():
    """Checks after a pending Deferred run only when it fires; a reject ends the chain."""
    calls = []
    pending = defer.Deferred()
    reject = Verdict.reject(550, "5.7.1", "no")
    chain = CheckChain([Fixed("a", pending, calls), Fixed("b", Verdict.accept([("X-B", "1")]), calls),
                        Fixed("c", reject, calls), Fixed("d", None, calls)])
    d = chain.run_body(None, None, b"")
    box = []
    d.addBoth(box.append)
    assert calls == ["a"] and not box
    pending.callback(Verdict.accept([("X-A", "1")]))
    assert calls == ["a", "b", "c"] and box == [reject]


def test_every_failure_is_a_temporary_failure():
    """A check that raises, returns a failed Deferred or a non-Verdict (either way) gives 451 4.7.0."""
    def boom():
        raise RuntimeError("broken filter")
    answers = [boom, lambda: defer.fail(RuntimeError("down")), "yes", lambda: defer.succeed(42)]
    for answer in answers:
        calls = []
        chain = CheckChain([Fixed("a", answer, calls), Fixed("b", None, calls)])
        assert fired(chain.run_body(None, None, b"")) is TEMPORARY_FAILURE
        assert calls == ["a"]
