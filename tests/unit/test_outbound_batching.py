"""Outbound worker batching with task.Clock: outcomes group-committed (one transaction per
group, each answer only after its group), claims in batches, wake-on-enqueue during a claim."""

from __future__ import annotations

from twisted.internet import defer, task

from mailserverd.outbound import queue
from mailserverd.outbound.worker import OutcomeRecorder


class HeldRunner:
    """run_blocking that runs fn only when the test says so (a busy SQL thread)."""

    def __init__(self):
        self.calls = []

    def __call__(self, fn, *args, **kwargs):
        d = defer.Deferred()
        self.calls.append((fn, args, kwargs, d))
        return d

    def finish(self, result=None, error=None):
        fn, args, kwargs, d = self.calls.pop(0)
        if error is not None:
            d.errback(error)
        else:
            d.callback(result if result is not None else fn.__name__)
        return fn, args


def test_outcomes_arriving_during_a_write_share_the_next_transaction():
    """The first outcome is written at once; the three that arrive meanwhile go in ONE
    record_many; nobody hears back before its own group is written."""
    runner, clock = HeldRunner(), task.Clock()
    recorder = OutcomeRecorder(runner, "engine", clock)
    answers = {}
    for name in "abcd":
        recorder.record(name, "outcome-" + name).addCallback(lambda ok, n=name: answers.__setitem__(n, ok))
    assert len(runner.calls) == 1 and answers == {}
    fn, args = runner.finish([True])
    assert fn is queue.record_many and [item for item, _ in args[1]] == ["a"]
    assert answers == {"a": True} and len(runner.calls) == 1
    fn, args = runner.finish([True, False, True])
    assert [item for item, _ in args[1]] == ["b", "c", "d"]
    assert answers == {"a": True, "b": True, "c": False, "d": True}
    assert recorder.groups == 2 and runner.calls == []


def test_a_failed_group_is_retried_one_by_one():
    """When a group's transaction fails, each outcome is recorded alone: only the bad one fails."""
    runner, clock = HeldRunner(), task.Clock()
    recorder = OutcomeRecorder(runner, "engine", clock)
    results = {}
    recorder.record("a", "oa").addCallback(lambda r: results.__setitem__("a", r))
    for name in "bc":
        recorder.record(name, "o" + name).addCallbacks(
            lambda r, n=name: results.__setitem__(n, r), lambda f, n=name: results.__setitem__(n, "error"))
    runner.finish([True])
    runner.finish(error=ValueError("bad outcome"))  # the group b, c
    fn, args = runner.finish(error=ValueError("bad outcome"))  # b alone
    assert fn is queue.record and args[1] == "b"
    fn, args = runner.finish(True)  # c alone
    assert args[1] == "c"
    assert results == {"a": True, "b": "error", "c": True}
