"""`mailserverctl spam train` (cli/commands.py spam_train, spam/train.py) against a real
store: mbox, gzip mbox and Maildir sources, --user, a rerun that trains nothing twice,
refusals with a one-line reason, and the parser's form of the verb."""

from __future__ import annotations

import argparse
import os

import pytest

from mailserverd import config
from mailserverd.cli import commands
from mailserverd.spam.tokendb import GLOBAL, TokenDB
from mailserverd.store import open_store

DATA = os.path.join(os.path.dirname(__file__), "..", "data")


@pytest.fixture
def store(tmp_path):
    conf = tmp_path / "m.conf"
    conf.write_text(f"[server]\nhostname = mx.example.test\ndata_dir = {tmp_path / 'data'}\n"
                    "[storage]\nshards = 1\n")
    settings = config.load_settings(str(conf))
    store = open_store(settings)
    store.directory.add_domain("example.test")
    store.add_account("alice@example.test", "pw-123456789")
    yield store, settings
    store.close()


def run(store_settings, argv):
    store, settings = store_settings
    args = commands.build_parser().parse_args(argv)
    out, err = [], []
    status = commands.execute(store, settings, args, out.append, err.append)
    return status, b"".join(out).decode(), "".join(err)


def maildir_of(tmp_path, count: int) -> str:
    """A Maildir holding the first `count` spam of tests/data, one file each in new/."""
    from mailserverd.mailfiles import iter_source

    root = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    for index, message in enumerate(iter_source(os.path.join(DATA, "spam-50.mbox"))):
        if index == count:
            break
        (root / "new" / f"{index}.host").write_bytes(message.raw)
    return str(root)


def test_train_global_from_mbox_gzip_and_maildir_and_rerun_is_a_no_op(store, tmp_path):
    """Ham from a gzip mbox and spam from a Maildir train the global database; a second
    run reports everything already trained and changes no count."""
    maildir = maildir_of(tmp_path, 20)
    argv = ["spam", "train", "--ham", os.path.join(DATA, "ham-200.mbox.gz"), "--spam", maildir]
    status, out, err = run(store, argv)
    assert status == 0
    assert "global database: 20 spam, 200 ham trained" in out
    assert "trained spam 20, ham 200" in err
    status, out, err = run(store, argv)
    assert status == 0 and "20 spam, 200 ham trained" in out and "already trained 220" in err


def test_train_one_users_database(store):
    """--user trains that account's database only; the global one stays empty."""
    status, out, _err = run(store, ["spam", "train", "--spam", os.path.join(DATA, "spam-50.mbox"),
                                    "--user", "Alice@example.test"])
    assert status == 0 and "database of alice@example.test: 50 spam, 0 ham trained" in out
    db = TokenDB(store[0].directory_engine)
    account = store[0].directory.require_account("alice@example.test")
    assert db.totals(account.id) == (50, 0) and db.totals(GLOBAL) == (0, 0)


def test_train_refuses_bad_requests_with_one_line(store, tmp_path):
    """No source, a missing path and an unknown account exit 1 with a one-line reason."""
    assert run(store, ["spam", "train"])[2].strip() == "mailserverctl: give --spam PATH and/or --ham PATH"
    status, _out, err = run(store, ["spam", "train", "--ham", str(tmp_path / "none.mbox")])
    assert status == 1 and "no such file or directory" in err
    status, _out, err = run(store, ["spam", "train", "--ham", os.path.join(DATA, "ham-200.mbox"),
                                    "--user", "nobody@example.test"])
    assert status == 1 and "nobody@example.test" in err


def test_spam_train_runs_in_the_ctl_process():
    """The verb writes only SQL tables, so mailserverctl runs it itself, daemon or not."""
    args = argparse.Namespace(noun="spam", verb="train")
    assert commands.runs_in_process(args) and not commands.is_read_only(args)


def test_removing_an_account_drops_its_spam_database(store):
    """user remove forgets the account's token database (a new account may get its id)."""
    run(store, ["spam", "train", "--spam", os.path.join(DATA, "spam-50.mbox"), "--user", "alice@example.test"])
    run(store, ["spam", "train", "--ham", os.path.join(DATA, "ham-200.mbox")])
    account = store[0].directory.require_account("alice@example.test")
    store[0].remove_account("alice@example.test")
    db = TokenDB(store[0].directory_engine)
    assert db.totals(account.id) == (0, 0) and db.totals(GLOBAL) == (0, 200)
    assert db.lookup(["subject:free"], [account.id])[0] == {}
