"""mailserverctl verbs (INTERFACE.md), run against a synchronous Store.

The same code runs in the ctl process (daemon stopped) or inside the daemon
behind its control socket (daemon running, since RocksDB admits one writer).
Output goes through `out` (bytes, stdout) and `err` (text, stderr).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable

from .. import config
from ..store.api import DeliveryTarget, StoreError
from ..store.mail import Delivery
from . import tokens

# Verbs that only read: they run in the ctl process even while the daemon
# runs (SQLite readers and a read-only RocksDB open do not need the lock).
READ_ONLY = {("domain", "list"), ("user", "list"), ("user", "export"), ("alias", "list"),
             ("queue", "list"), ("queue", "show"), ("dns", "show")}
# Verbs that write but still run in the ctl process while the daemon runs: spam
# training writes only SQL tables of the directory (SQLite WAL admits a second
# writer), never RocksDB, and may read files the daemon's user cannot.
IN_PROCESS = {("spam", "train"), ("token", "create"), ("token", "revoke"), ("token", "list")}
IMPORT_BATCH_MESSAGES = 200
IMPORT_BATCH_BYTES = 16 * 1024 * 1024


class CommandError(Exception):
    """A one-line reason; the command exits non-zero."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise CommandError(f"{self.prog}: {message}")


def build_parser() -> Parser:
    parser = Parser(prog="mailserverctl", description="Administer a mailserverd installation.")
    parser.add_argument("-c", "--config", help="configuration file (default: $MAILSERVERD_CONF, "
                        "then /etc/mailserverd/mailserverd.conf)")
    verbs = parser.add_subparsers(dest="noun", required=True, parser_class=Parser)

    domain = verbs.add_parser("domain", help="local domains").add_subparsers(dest="verb", required=True)
    domain.add_parser("add").add_argument("domain")
    domain.add_parser("remove").add_argument("domain")
    domain.add_parser("list")

    user = verbs.add_parser("user", help="accounts").add_subparsers(dest="verb", required=True)
    for verb in ("add", "passwd"):
        sub = user.add_parser(verb)
        sub.add_argument("address")
        source = sub.add_mutually_exclusive_group()
        source.add_argument("--password")
        source.add_argument("--password-stdin", action="store_true")
    user.add_parser("remove").add_argument("address")
    user.add_parser("list").add_argument("domain", nargs="?")
    quota = user.add_parser("quota")
    quota.add_argument("address")
    quota.add_argument("size", help="e.g. 2G; 0 = unlimited")
    imp = user.add_parser("import")
    imp.add_argument("address")
    imp.add_argument("path", help="mbox, mbox.gz or Maildir")
    imp.add_argument("--mailbox", default="INBOX")
    exp = user.add_parser("export")
    exp.add_argument("address")
    exp.add_argument("--mailbox")
    exp.add_argument("-o", "--output", help="file (mbox) or directory (maildir, or mbox per mailbox)")
    exp.add_argument("--format", choices=("mbox", "maildir"), default="mbox")

    alias = verbs.add_parser("alias", help="aliases and catch-alls").add_subparsers(dest="verb", required=True)
    add = alias.add_parser("add")
    add.add_argument("alias", help="local@domain, or @domain for a catch-all")
    add.add_argument("targets", help="TARGET[,TARGET...]: local accounts or aliases; remote addresses are forwarded (SRS, ARC-sealed)")
    alias.add_parser("remove").add_argument("alias")
    alias.add_parser("list").add_argument("domain", nargs="?")

    outbound = verbs.add_parser("queue", help="the outbound queue").add_subparsers(dest="verb", required=True)
    outbound.add_parser("list")
    for verb in ("show", "retry", "delete"):
        outbound.add_parser(verb).add_argument("id", help="the queue id (the SMTP \"queued as\" id)")
    outbound.add_parser("flush")

    keys = verbs.add_parser("dkim", help="DKIM signing keys").add_subparsers(dest="verb", required=True)
    keygen = keys.add_parser("keygen", help="make Ed25519 and RSA-2048 keys; prints the TXT records")
    keygen.add_argument("domain")
    keygen.add_argument("--replace", action="store_true", help="new keys (new selectors) when keys exist")
    dns = verbs.add_parser("dns", help="the MX, SPF, DKIM and DMARC records to publish for a domain")
    dns.add_argument("domain")
    dns.set_defaults(verb="show")

    spam = verbs.add_parser("spam", help="the built-in spam filter").add_subparsers(dest="verb", required=True)
    train = spam.add_parser("train", help="train the classifier on mail files (mbox, mbox.gz, Maildir)")
    train.add_argument("--spam", action="append", default=[], metavar="PATH", help="spam (repeatable)")
    train.add_argument("--ham", action="append", default=[], metavar="PATH", help="legitimate mail (repeatable)")
    train.add_argument("--user", metavar="ADDRESS", help="train this account's own database, not the global one")
    tokens.add_parser(verbs)
    reindex = verbs.add_parser("reindex", help="rebuild the full-text index from the store (one account or all)")
    reindex.add_argument("address", nargs="?")
    reindex.set_defaults(verb="run")
    return parser


def is_read_only(args) -> bool:
    return (args.noun, args.verb) in READ_ONLY


def runs_in_process(args) -> bool:
    """Whether the ctl process runs the command itself even while the daemon runs."""
    return is_read_only(args) or (args.noun, args.verb) in IN_PROCESS


def execute(store, settings, args, out: Callable[[bytes], None], err: Callable[[str], None]) -> int:
    """Run one parsed command; returns the exit status. StoreError/CommandError -> 1."""
    handler = HANDLERS[(args.noun, args.verb)]
    try:
        return handler(store, settings, args, out, err) or 0
    except (StoreError, CommandError) as exc:
        err(f"mailserverctl: {exc}\n")
        return 1


def _line(out, text: str) -> None:
    out(text.encode("utf-8") + b"\n")


def domain_add(store, settings, args, out, err):
    _line(out, f"added domain {store.directory.add_domain(args.domain)}")


def domain_remove(store, settings, args, out, err):
    store.directory.remove_domain(args.domain)
    _line(out, f"removed domain {args.domain.lower()}")


def domain_list(store, settings, args, out, err):
    for name in store.directory.list_domains():
        _line(out, name)


def user_add(store, settings, args, out, err):
    account = store.add_account(args.address, args.password)
    _line(out, f"added user {account.address}")


def user_passwd(store, settings, args, out, err):
    store.directory.set_password(args.address, args.password)
    _line(out, f"password changed for {args.address.lower()}")


def user_remove(store, settings, args, out, err):
    removed = store.remove_account(args.address)
    _line(out, f"removed user {args.address.lower()} and {removed} message(s)")


def user_list(store, settings, args, out, err):
    for account in store.directory.list_accounts(args.domain):
        _line(out, account.address)


def user_quota(store, settings, args, out, err):
    try:
        size = config.parse_size(args.size)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    store.directory.set_quota(args.address, size)
    _line(out, f"quota of {args.address.lower()} set to {'unlimited' if not size else args.size}")


def user_import(store, settings, args, out, err):
    from ..mailfiles import iter_source

    account = store.directory.require_account(args.address)
    if not os.path.exists(args.path):
        raise CommandError(f"{args.path}: no such file or directory")
    mailbox = store.mail.ensure_mailbox(account, args.mailbox).name
    limit = settings.limits.max_message_size
    progress = _Progress(err)
    batch: list[Delivery] = []
    batch_bytes = 0

    def commit():
        nonlocal batch, batch_bytes
        store.mail.deliver_many(batch)
        for item in batch:
            if item.error is not None:
                progress.failed(f"a message was not stored: {item.error}")
            elif item.result:
                progress.imported += 1
            else:
                progress.duplicates += 1
        progress.show()
        batch, batch_bytes = [], 0

    for message in iter_source(args.path, max_message_size=limit):
        if message.error:
            progress.failed(f"{args.path}: message {message.index}: {message.error}")
            continue
        target = DeliveryTarget(account=account, mailbox=mailbox, flags=message.flags)
        batch.append(Delivery(message.raw, [target], message.internal_date, skip_duplicates=True))
        batch_bytes += len(message.raw)
        if len(batch) >= IMPORT_BATCH_MESSAGES or batch_bytes >= IMPORT_BATCH_BYTES:
            commit()
    if batch:
        commit()
    progress.finish()
    return 1 if progress.errors else 0


class _Progress:
    """A one-line progress display on stderr; every count shown is committed."""

    def __init__(self, err):
        self.err = err
        self.started = time.monotonic()
        self.imported = self.duplicates = self.errors = 0

    def failed(self, reason: str) -> None:
        self.errors += 1
        self.err(f"\nskipped: {reason}\n")

    def show(self) -> None:
        rate = self.imported / max(time.monotonic() - self.started, 1e-6)
        self.err(f"\rimported {self.imported}, already present {self.duplicates}, "
                 f"skipped {self.errors} ({rate:.0f} msg/s)")

    def finish(self) -> None:
        self.show()
        self.err("\n")


def user_export(store, settings, args, out, err):
    from ..mailfiles import MaildirWriter, MboxWriter

    account = store.directory.require_account(args.address)
    boxes = store.mail.list_mailboxes(account)
    if args.mailbox:
        boxes = [store.mail.get_mailbox(account, args.mailbox)]
    if args.format == "maildir" and not args.output:
        raise CommandError("--format maildir needs -o DIRECTORY")
    count = 0
    for box in boxes:
        if args.format == "maildir":
            # Maildir++: INBOX at the top, other mailboxes as .Name folders
            folder = "" if box.name == "INBOX" else "." + box.name.replace("/", ".")
            writer = MaildirWriter(os.path.join(args.output, folder) if folder else args.output)
            count += _export_box(store, account, box, writer)
        elif args.output and not args.mailbox:
            os.makedirs(args.output, exist_ok=True)
            path = os.path.join(args.output, box.name.replace("/", ".") + ".mbox")
            with open(path, "wb") as handle:
                count += _export_box(store, account, box, MboxWriter(handle))
        elif args.output:
            with open(args.output, "wb") as handle:
                count += _export_box(store, account, box, MboxWriter(handle))
        else:
            count += _export_box(store, account, box, MboxWriter(_Sink(out)))
    err(f"exported {count} message(s)\n")


class _Sink:
    """A file-like write() over the out callback."""

    def __init__(self, out):
        self.write = lambda data: out(bytes(data))

    def flush(self):
        pass


def _export_box(store, account, box, writer) -> int:
    count = 0
    for ref in store.mail.list_messages(account, box.id):
        writer.write(store.mail.read_message(account, ref.message_id), flags=ref.flags,
                     internal_date=ref.received_at)
        count += 1
    close = getattr(writer, "close", None)
    if close:
        close()
    return count


def alias_add(store, settings, args, out, err):
    store.directory.add_alias(args.alias, args.targets.split(","))
    _line(out, f"added alias {args.alias.lower()}")


def alias_remove(store, settings, args, out, err):
    store.directory.remove_alias(args.alias)
    _line(out, f"removed alias {args.alias.lower()}")


def alias_list(store, settings, args, out, err):
    for address, targets in store.directory.list_aliases(args.domain):
        _line(out, f"{address} -> {','.join(targets)}")


def queue_list(store, settings, args, out, err):
    from ..outbound import queuecli
    queuecli.queue_list(store.directory_engine, time.time(), out, err)


def queue_show(store, settings, args, out, err):
    from ..outbound import queuecli
    if not queuecli.queue_show(store.directory_engine, args.id, time.time(), out):
        raise CommandError(f"no queued message {args.id}")


def queue_retry(store, settings, args, out, err):
    from ..outbound import queuecli
    if not queuecli.queue_retry(store.directory_engine, args.id, time.time(), out):
        raise CommandError(f"no queued message {args.id}")


def queue_delete(store, settings, args, out, err):
    from ..outbound import queuecli
    if not queuecli.queue_delete(store.directory_engine, args.id, out):
        raise CommandError(f"no queued message {args.id}")


def queue_flush(store, settings, args, out, err):
    from ..outbound import queuecli
    queuecli.queue_flush(store.directory_engine, time.time(), out)


def _local_domain(store, domain: str) -> str:
    from ..outbound.dkim import DkimKeyError, normalize_domain
    try:
        name = normalize_domain(domain)
    except DkimKeyError as exc:
        raise CommandError(str(exc)) from None
    if not store.directory.is_local_domain(name):
        raise CommandError(f"{name} is not a local domain (mailserverctl domain add {name})")
    return name


def dkim_keygen(store, settings, args, out, err):
    from ..outbound import dkim
    name = _local_domain(store, args.domain)
    try:
        keys = dkim.keygen(settings.server.data_dir, name, replace=args.replace)
    except dkim.DkimKeyError as exc:
        raise CommandError(str(exc)) from None
    for record in dkim.txt_records(name, keys):
        _line(out, record)


def dns_show(store, settings, args, out, err):
    from ..outbound import dkim
    name = _local_domain(store, args.domain)
    try:
        records = dkim.dns_records(name, settings.server.hostname, dkim.load_keys(settings.server.data_dir, name))
    except dkim.DkimKeyError as exc:
        raise CommandError(str(exc)) from None
    for record in records:
        _line(out, record)


def spam_train(store, settings, args, out, err):
    from ..spam.tokendb import GLOBAL, TokenDB
    from ..spam.train import check_paths, train_sources

    if not args.spam and not args.ham:
        raise CommandError("give --spam PATH and/or --ham PATH")
    missing = check_paths(args.spam + args.ham)
    if missing:
        raise CommandError(f"{missing[0]}: no such file or directory")
    owner = store.directory.require_account(args.user).id if args.user else GLOBAL
    db = TokenDB(store.directory_engine, cache_size=0)
    sources = [(path, True) for path in args.spam] + [(path, False) for path in args.ham]
    progress = train_sources(db, sources, err, owner, settings.limits.max_message_size)
    nspam, nham = db.totals(owner)
    _line(out, f"{'database of ' + args.user.lower() if args.user else 'global database'}: "
               f"{nspam} spam, {nham} ham trained")
    return 1 if progress.counts["skipped"] else 0


def reindex_run(store, settings, args, out, err):
    """Queue the account's (or every account's) messages for indexing; the daemon rebuilds."""
    from ..search.indexer import reindex
    queued = reindex(store, args.address)
    _line(out, f"{queued} messages queued for indexing ({args.address.lower() if args.address else 'all accounts'})")


HANDLERS = {
    ("domain", "add"): domain_add, ("domain", "remove"): domain_remove, ("domain", "list"): domain_list,
    ("user", "add"): user_add, ("user", "passwd"): user_passwd, ("user", "remove"): user_remove,
    ("user", "list"): user_list, ("user", "quota"): user_quota, ("user", "import"): user_import,
    ("user", "export"): user_export,
    ("alias", "add"): alias_add, ("alias", "remove"): alias_remove, ("alias", "list"): alias_list,
    ("queue", "list"): queue_list, ("queue", "show"): queue_show, ("queue", "retry"): queue_retry,
    ("queue", "delete"): queue_delete, ("queue", "flush"): queue_flush,
    ("dkim", "keygen"): dkim_keygen, ("dns", "show"): dns_show,
    ("spam", "train"): spam_train, ("reindex", "run"): reindex_run,
}
HANDLERS.update(tokens.HANDLERS)
