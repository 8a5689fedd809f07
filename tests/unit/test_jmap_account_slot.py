"""JMAPResource.account_slot: the per-account request slots /jmap/api, /v1 and the
WebSocket share: at most RUNNING_PER_ACCOUNT run at once, the rest wait in order,
and the bookkeeping is gone once the account has nothing in flight (no leak per account)."""

from __future__ import annotations

import types
from collections import defaultdict

from twisted.internet import defer

from mailserverd.jmap import api
from mailserverd.jmap.web import JMAPResource


def test_slots_queue_past_the_limit_and_leave_nothing_behind():
    """RUNNING_PER_ACCOUNT requests enter at once, one more waits until a slot is freed;
    `running` counts waiting and running ones; both maps are empty at the end, also
    after a request that raised."""
    owner = types.SimpleNamespace(running=defaultdict(int), gates={})
    account = types.SimpleNamespace(id=7)
    entered, gates = [], []

    async def request(n, fail=False):
        async with JMAPResource.account_slot(owner, account):
            entered.append(n)
            gate = defer.Deferred()
            gates.append(gate)
            await gate
            if fail:
                raise ValueError("boom")

    limit = api.RUNNING_PER_ACCOUNT
    done = [defer.ensureDeferred(request(n, fail=(n == 0))) for n in range(limit + 1)]
    assert entered == list(range(limit)) and owner.running[7] == limit + 1
    gates[0].callback(None)  # the first fails, freeing its slot for the waiting one
    assert entered == list(range(limit + 1))
    failures = []
    done[0].addErrback(failures.append)
    assert failures and failures[0].check(ValueError)
    for gate in gates[1:]:
        gate.callback(None)
    assert all(d.called for d in done)
    assert dict(owner.running) == {} and owner.gates == {}
