"""The EventSource push stream (RFC 8620 7.3) with an inline store and a fake
clock: the ready mark, state events only for the asked types and only when
their state moved, ping events, closeafter=state, argument checks and cleanup."""

from __future__ import annotations

import json

import pytest
from twisted.internet import defer, task

from mailserverd.jmap import eventsource
from mailserverd.jmap.api import account_id_of
from mailserverd.store.api import DeliveryTarget
from tests.support.jmapstore import make, result_of

MESSAGE = b"From: a@remote.test\r\nSubject: hi\r\n\r\nbody\r\n"


class FakeRequest:
    def __init__(self, args):
        self.args = {k.encode(): [v.encode()] for k, v in args.items()}
        self.written = []
        self.finished = False
        self.code = None
        self.headers = {}
        self._finish = defer.Deferred()

    def setResponseCode(self, code):
        self.code = code

    def setHeader(self, name, value):
        self.headers[name] = value

    def write(self, data):
        self.written.append(data)

    def finish(self):
        self.finished = True
        self._finish.callback(None)

    def notifyFinish(self):
        return self._finish

    def events(self):
        out = []
        for chunk in self.written:
            text = chunk.decode()
            if text.startswith("event: "):
                name, data = text.split("\n")[:2]
                out.append((name[len("event: "):], json.loads(data[len("data: "):])))
        return out


@pytest.fixture
def env(tmp_path):
    store, accounts = make(tmp_path, users=("alice@example.test",))
    yield store, accounts["alice@example.test"]
    store.store.close()


def open_stream(store, account, clock, **args):
    source = eventsource.EventSource(store, clock)
    request = FakeRequest(dict({"types": "*", "closeafter": "no", "ping": "0"}, **args))
    source.open(request, account, account_id_of(account))
    return source, request


def test_state_event_after_delivery_only_for_moved_types(env):
    """After ": ready", a delivery pushes one StateChange with Email, Mailbox and Thread;
    a stream asking only for Mailbox gets only Mailbox."""
    store, alice = env
    clock = task.Clock()
    _source, request = open_stream(store, alice, clock)
    _source2, mailbox_only = open_stream(store, alice, clock, types="Mailbox")
    assert request.written == [b": ready\n\n"] and request.code == 200
    assert request.headers[b"content-type"].startswith(b"text/event-stream")
    result_of(store.deliver(MESSAGE, [DeliveryTarget(alice)]))
    [(name, change)] = request.events()
    assert name == "state" and change["@type"] == "StateChange"
    assert set(change["changed"][account_id_of(alice)]) == {"Email", "Mailbox", "Thread"}
    [(_name, change)] = mailbox_only.events()
    assert set(change["changed"][account_id_of(alice)]) == {"Mailbox"}


def test_ping_and_closeafter(env):
    """ping=N sends {"interval": N} every N seconds (at least 5); closeafter=state ends
    the response after the first state event and unsubscribes from the store."""
    store, alice = env
    clock = task.Clock()
    source, request = open_stream(store, alice, clock, ping="1", closeafter="state")
    clock.advance(5)
    assert request.events() == [("ping", {"interval": 5})]
    result_of(store.deliver(MESSAGE, [DeliveryTarget(alice)]))
    assert request.finished and request.events()[-1][0] == "state"
    assert alice.id not in source.streams and not store._subscribers.get(alice.id)
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("args", [{"types": "Email,Bogus"}, {"closeafter": "never"}, {"ping": "-1"}])
def test_bad_arguments(env, args):
    """Unknown types, closeafter values or a non-numeric ping are a 400 HTTPError."""
    store, alice = env
    from mailserverd.jmap.web import HTTPError
    with pytest.raises(HTTPError) as caught:
        open_stream(store, alice, task.Clock(), **args)
    assert caught.value.status == 400
