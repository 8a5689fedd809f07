"""check.spam (mailserverd/spam/check.py): verdicts and headers, the untrained filter,
refusal above reject_score, per-user databases and disagreeing recipients, options,
and DNSBL at connection time with an injected resolver."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine
from twisted.internet import defer

from mailserverd.checks.base import Envelope, Recipient, Session, load_check
from mailserverd.checks.dns import Answer, TempDnsError
from mailserverd.mailfiles import iter_source
from mailserverd.spam.check import SpamCheck
from mailserverd.spam.dnsbl import reversed_name
from mailserverd.spam.tokendb import TokenDB
from mailserverd.store.api import Account
from mailserverd.store import schema

DATA = os.path.join(os.path.dirname(__file__), "..", "data")
ALICE = Account(id=1, address="alice@example.test", shard=0)
BOB = Account(id=2, address="bob@example.test", shard=0)


def messages(name: str) -> list[bytes]:
    return [message.raw for message in iter_source(os.path.join(DATA, name)) if message.error is None]


HAM, SPAM = messages("ham-200.mbox"), messages("spam-100.mbox")


def synchronous(fn, *args):
    return defer.maybeDeferred(fn, *args)


def result_of(d):
    if d is None or not isinstance(d, defer.Deferred):
        return d
    box = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    return box[0]


@pytest.fixture
def db(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path}/directory.sqlite3")
    with engine.begin() as conn:
        schema.migrate(conn, "directory")
    yield TokenDB(engine)
    engine.dispose()


@pytest.fixture
def trained(db):
    db.train_many([(raw, False) for raw in HAM[:150]] + [(raw, True) for raw in SPAM[:80]])
    return db


def session(mode="smtp", ip="8.8.8.9"):
    return Session(id="s", mode=mode, remote_ip=ip, remote_port=1, hostname="mx.example.test")


def envelope(*accounts):
    recipients = [Recipient(address=account.address, params=None, accounts=(account,)) for account in accounts]
    return Envelope(id="e", mail_from="x@remote.test", params=None, recipients=recipients)


def make(db, **options):
    options.setdefault("reject_score", "")  # tests of refusal set it themselves
    return SpamCheck(db=db, run=synchronous, **options)


def headers(verdict):
    return dict(verdict.headers)


def test_untrained_filter_never_quarantines(db):
    """With nothing trained, spam and ham alike are delivered (unsure at most) with headers."""
    check = make(db)
    for raw in SPAM[:10] + HAM[:10]:
        verdict = result_of(check.body(session(), envelope(ALICE), raw))
        assert verdict.action == "accept"
        status = headers(verdict)["X-Spam-Status"]
        assert status.startswith(("No", "Unsure")) and "untrained" in status


def test_trained_filter_quarantines_spam_and_passes_ham(trained):
    """Held-out spam goes to Junk with X-Spam-Status: Yes and its score; ham is accepted."""
    check = make(trained)
    spam_verdicts = [result_of(check.body(session(), envelope(ALICE), raw)) for raw in SPAM[80:]]
    ham_verdicts = [result_of(check.body(session(), envelope(ALICE), raw)) for raw in HAM[150:]]
    assert sum(v.quarantined for v in spam_verdicts) >= 14
    assert not any(v.quarantined or v.rejected for v in ham_verdicts)
    caught = next(v for v in spam_verdicts if v.quarantined)
    assert headers(caught)["X-Spam-Status"].startswith("Yes, score=")
    assert float(headers(caught)["X-Spam-Score"]) >= 0.9
    assert all(headers(v)["X-Spam-Status"].startswith(("No", "Unsure")) for v in ham_verdicts)


def test_reject_score_refuses_at_data_with_550(trained):
    """Above reject_score the message is refused 550 5.7.1; reject_score empty never refuses."""
    check = make(trained, reject_score="0.95")
    verdicts = [result_of(check.body(session(), envelope(ALICE), raw)) for raw in SPAM[80:]]
    refused = [v for v in verdicts if v.rejected]
    assert refused and refused[0].code == 550 and refused[0].enhanced == "5.7.1"
    never = make(trained)
    assert not any(result_of(never.body(session(), envelope(ALICE), raw)).rejected for raw in SPAM[80:])


def test_default_reject_score_refuses_only_near_certain_spam_and_never_untrained(db):
    """The default reject_score (0.9999) refuses confident spam of a trained filter; an
    untrained filter refuses nothing, even a message it has seen as spam once."""
    default = SpamCheck(db=db, run=synchronous)
    assert default.reject_score == 0.9999
    db.train(SPAM[0], True)
    assert not result_of(default.body(session(), envelope(ALICE), SPAM[0])).rejected
    db.train_many([(raw, False) for raw in HAM[:150]] + [(raw, True) for raw in SPAM[:80]])
    verdicts = [result_of(default.body(session(), envelope(ALICE), raw)) for raw in SPAM[:80]]
    assert sum(v.rejected for v in verdicts) > 40


def test_submission_and_disabled_users_are_not_scored(trained):
    """Authenticated submission and accounts in disabled_users get no verdict at all."""
    check = make(trained, disabled_users="alice@example.test")
    assert result_of(check.body(session(mode="submission"), envelope(ALICE), SPAM[90])) is None
    assert result_of(check.body(session(), envelope(ALICE), SPAM[90])) is None
    assert result_of(check.body(session(), envelope(BOB), SPAM[90])).quarantined


def test_per_user_training_changes_only_that_users_verdict(db):
    """Bob trained a message's kind as spam: his copy goes to Junk, Alice's (global only) stays."""
    db.train_many([(raw, False) for raw in HAM[:20]])
    db.train_many([(raw, False) for raw in HAM[20:40]], owner=BOB.id)
    db.train_many([(raw, True) for raw in SPAM[:40]], owner=BOB.id)
    check = make(db, min_trained="10")
    env = envelope(ALICE, BOB)
    verdict = result_of(check.body(session(), env, SPAM[95]))
    assert verdict is None  # the accounts disagree: per-recipient decisions
    alice, bob = env.recipients
    assert not alice.quarantine and bob.quarantine
    assert dict(bob.headers)["X-Spam-Status"].startswith("Yes")
    assert dict(alice.headers)["X-Spam-Status"].startswith(("No", "Unsure"))


def test_auth_results_absent_or_present_are_both_fine(trained):
    """envelope.data["auth"] may be missing (no check.auth) or a results object."""
    check = make(trained)
    env = envelope(ALICE)
    env.data["auth"] = {"spf": "fail", "dkim": [], "dmarc": "fail"}
    assert result_of(check.body(session(), env, HAM[160])).action == "accept"


@pytest.mark.parametrize("options, message", [
    ({"spam_cutoff": "1.5"}, "spam_cutoff"),
    ({"ham_cutoff": "0.95"}, "ham_cutoff must not exceed"),
    ({"reject_score": "0.5"}, "reject_score must be at least"),
    ({"per_user": "maybe"}, "per_user"),
    ({"dnsbl_action": "drop"}, "dnsbl_action"),
    ({"min_trained": "-1"}, "min_trained"),
    ({"refresh": "soon"}, "refresh"),
    ({"refresh": "-1"}, "refresh"),
])
def test_bad_options_are_refused_with_the_key_named(db, options, message):
    """A malformed [check.spam] option stops start-up with a message naming it."""
    with pytest.raises(ValueError, match=message):
        make(db, **options)


def test_load_check_finds_check_spam_by_name(db):
    """check.spam is found by name like every built-in (checks/spam.py registers it)."""
    assert isinstance(load_check("check.spam", db=db), SpamCheck)


class FakeResolver:
    def __init__(self, listed=(), failing=()):
        self.listed, self.failing, self.names = set(listed), set(failing), []

    def query(self, name, rdtype):
        self.names.append(name)
        zone = name.split(".", 4)[-1]
        if zone in self.failing:
            raise TempDnsError(name)
        if name in self.listed:
            return Answer((FakeRecord("127.0.0.2"),))
        return Answer((), nxdomain=True)


class FakeRecord:
    def __init__(self, address):
        self.address = address


def test_dnsbl_is_off_by_default(db):
    """No zones: no lookups, no verdict at connection time."""
    assert make(db).connection(session()) is None


def test_dnsbl_listing_refuses_the_connection_with_554(db):
    """A listed client (RFC 5782 reversed query) is refused 554 5.7.1 naming the list."""
    resolver = FakeResolver(listed={"9.8.8.8.bl.example"})
    check = make(db, dnsbl_zones="bl.example, other.example", resolver=resolver)
    verdict = result_of(check.connection(session()))
    assert verdict.rejected and verdict.code == 554 and verdict.enhanced == "5.7.1"
    assert "bl.example" in verdict.text
    assert result_of(check.connection(session(ip="8.8.8.10"))) is None
    assert result_of(check.connection(session(ip="127.0.0.1"))) is None  # never looked up
    assert not any(name.startswith("1.0.0.127") for name in resolver.names)


def test_dnsbl_score_mode_adds_to_the_score_and_failures_are_not_listings(trained):
    """dnsbl_action = score: a listing raises the score by dnsbl_score; a SERVFAIL is no listing."""
    resolver = FakeResolver(listed={"9.8.8.8.bl.example"}, failing={"down.example"})
    check = make(trained, dnsbl_zones="bl.example down.example", dnsbl_action="score",
                 dnsbl_score="0.5", resolver=resolver)
    listed, clean = session(), session(ip="8.8.8.10")
    assert result_of(check.connection(listed)) is None
    assert result_of(check.connection(clean)) is None
    ham = HAM[170]
    plain = float(headers(result_of(check.body(clean, envelope(ALICE), ham)))["X-Spam-Score"])
    raised = float(headers(result_of(check.body(listed, envelope(ALICE), ham)))["X-Spam-Score"])
    assert raised == pytest.approx(min(1.0, plain + 0.5), abs=0.002)


def test_reversed_names_for_ipv4_and_ipv6():
    """RFC 5782 2.1 and 2.4: octets and nibbles in reverse order under the zone."""
    assert reversed_name("192.0.2.99", "bl.example") is None  # documentation range: not global
    assert reversed_name("8.8.4.4", "bl.example") == "4.4.8.8.bl.example"
    name = reversed_name("2001:4860:4860::8888", "bl.example")
    assert name.startswith("8.8.8.8.0.0.0.0") and name.endswith("0.6.8.4.1.0.0.2.bl.example")
    assert reversed_name("not an ip", "bl.example") is None


def test_a_users_own_training_never_makes_a_refusal(db):
    """A message only Bob's training calls spam goes to his Junk, but is not refused: a
    refusal needs the global database alone to reach reject_score."""
    db.train_many([(raw, False) for raw in HAM[:30]] + [(raw, True) for raw in SPAM[:30]])
    newsletter = (b"From: news@club.example\r\nSubject: Club newsletter, autumn edition\r\n"
                  b"Message-ID: <n1@club.example>\r\n\r\nMeetings resume on Tuesday evenings in the "
                  b"village hall; bring your allotment vegetables for the harvest display.\r\n")
    for number in range(12):
        db.train(newsletter.replace(b"<n1@", b"<n%d@" % (number + 2)), True, owner=BOB.id)
    check = make(db, reject_score="0.9")
    verdict = result_of(check.body(session(), envelope(BOB), newsletter))
    assert verdict.quarantined and not verdict.rejected


class SentStore:
    """A store whose account has one message in Sent, to `to_addr`."""

    def __init__(self, to_addr):
        from mailserverd.store.api import Mailbox, MessageRef
        self.boxes = [Mailbox(1, "INBOX", None, 1, 1, True), Mailbox(4, "Sent", "\\Sent", 1, 2, True, exists=1)]
        self.refs = [MessageRef(4, 1, 40, 100, frozenset(), 1, 0.0)]
        self.to_addr = to_addr
        self.reads = 0

    def list_mailboxes(self, account):
        self.reads += 1
        return defer.succeed(self.boxes)

    def list_messages(self, account, mailbox_id):
        return defer.succeed(self.refs if mailbox_id == 4 else [])

    def message_summaries(self, account, ids):
        return defer.succeed({40: {"to_addr": self.to_addr, "cc_addr": ""}})


class Clock:
    now = 1000.0

    def seconds(self):
        return self.now


def test_mail_from_someone_the_user_wrote_to_is_never_junked_unless_dmarc_failed(trained):
    """A spammy message whose From: is in Alice's Sent recipients stays in INBOX (unsure,
    known-sender); with a DMARC failure the exemption is void. The Sent mailbox is read
    once per TTL."""
    from mailserverd.checks.base import CheckContext
    spam = SPAM[90]
    from mailserverd.spam.correspondents import sender_address
    store = SentStore(f"Someone <{sender_address(spam).upper()}>, other@example.org")
    context = CheckContext(store=store, clock=Clock())
    check = SpamCheck(context=context, db=trained, run=synchronous, reject_score="")
    verdict = result_of(check.body(session(), envelope(ALICE), spam))
    assert verdict.action == "accept"
    status = headers(verdict)["X-Spam-Status"]
    assert status.startswith("Unsure") and "known-sender" in status
    forged = envelope(ALICE)
    forged.data["auth"] = {"dmarc": "fail"}
    assert result_of(check.body(session(), forged, spam)).quarantined
    assert store.reads == 1
    assert result_of(check.body(session(), envelope(BOB), SPAM[91])).quarantined  # Bob's Sent: same fake, other sender


def test_empty_databases_answer_at_once_without_a_thread_or_tokenising(db, monkeypatch):
    """With nothing trained (known from the cached totals), the body stage answers
    synchronously, as classify would (score 0.500, untrained), without the thread pool
    and without tokenising; once the database is trained, scoring goes to the pool again."""
    from mailserverd.spam import check as checkmod
    engine = db.engine
    cached = TokenDB(engine, totals_ttl=60.0)
    hops = []

    def run(fn, *args):
        hops.append(fn.__name__)
        return defer.maybeDeferred(fn, *args)
    check = SpamCheck(db=cached, run=run, reject_score="")
    expected = headers(result_of(check.body(session(), envelope(ALICE, BOB), SPAM[0])))  # reads the totals
    assert hops == ["classify"] and expected["X-Spam-Score"] == "0.500"
    monkeypatch.setattr(checkmod, "tokenize", lambda *a: pytest.fail("tokenised an untrained message"))
    verdict = check.body(session(), envelope(ALICE, BOB), SPAM[1])
    assert not isinstance(verdict, defer.Deferred) and hops == ["classify"]
    assert headers(verdict) == expected and verdict.action == "accept"
    monkeypatch.undo()
    cached.train_many([(raw, False) for raw in HAM[:12]] + [(raw, True) for raw in SPAM[:12]])
    verdict = result_of(check.body(session(), envelope(ALICE), SPAM[20]))
    assert hops == ["classify", "classify"] and "untrained" not in headers(verdict)["X-Spam-Status"]
