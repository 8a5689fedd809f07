"""A real store whose AsyncStore runs every read and write at once, in the
calling thread, so JMAP methods can be unit tested without a reactor."""

from __future__ import annotations

import json

from twisted.internet import defer

from mailserverd.jmap import api
from mailserverd.jmap import web  # noqa: F401  (registers every method)
from mailserverd.store import Store
from mailserverd.store.mail import Delivery
from mailserverd.store.service import AsyncStore, _Grouped, _Write
from mailserverd.store.writes import GroupWrite


class InlineReactor:
    def callFromThread(self, fn, *args, **kwargs):
        fn(*args, **kwargs)

    def seconds(self):
        return 0.0


class InlineStore(AsyncStore):
    def _read(self, fn, *args, **kwargs):
        return defer.maybeDeferred(fn, *args, **kwargs)

    def _write(self, fn, *args, **kwargs):
        item = _Write(defer.Deferred(), fn, args, kwargs)
        self._run_write(item)
        return item.deferred

    def _grouped(self, op, account, *args):
        item = _Grouped(defer.Deferred(), GroupWrite(op, account, args))
        self._commit_group([item])
        return item.deferred

    def deliver(self, body, targets, received_at=None, skip_duplicates=False):
        d = defer.Deferred()
        self._commit_deliveries([(d, Delivery(body, list(targets), received_at, skip_duplicates))])
        return d


def result_of(d):
    """The result of a Deferred that has already fired (raises its failure)."""
    out = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def make(tmp_path, users=("alice@example.test", "bob@example.test")):
    """(InlineStore, {address: Account}) on SQLite files under tmp_path, two shards."""
    store = Store(f"sqlite:///{tmp_path}/d.sqlite3",
                  [f"sqlite:///{tmp_path}/s0.sqlite3", f"sqlite:///{tmp_path}/s1.sqlite3"],
                  str(tmp_path / "blobs"))
    store.directory.add_domain("example.test")
    accounts = {user: store.add_account(user, "pw") for user in users}
    return InlineStore(store, InlineReactor()), accounts


class Session:
    """Runs JMAP requests for one account against the store."""

    def __init__(self, store, account, uploads=None):
        self.store = store
        self.account = account
        self.account_id = api.account_id_of(account)
        self.uploads = uploads

    def request(self, calls, using=api.CAPABILITIES):
        body = json.dumps({"using": list(using), "methodCalls": calls}).encode()
        ctx = api.Context(account=self.account, store=self.store, limits=dict(api.LIMITS), uploads=self.uploads)
        return result_of(defer.ensureDeferred(api.process(ctx, body, "s")))

    def call(self, name, args):
        """The response [name, arguments, id] of one call; accountId filled in."""
        args = dict({"accountId": self.account_id}, **args)
        status, answer = self.request([[name, args, "0"]])
        assert status == 200, answer
        return answer["methodResponses"][0]

    def ok(self, name, args):
        response = self.call(name, args)
        assert response[0] == name, response
        return response[1]
