"""mailserverctl: administer domains, users, aliases and mail (INTERFACE.md).

Exits 0 on success, non-zero with a one-line reason otherwise, whether the
daemon runs or not: writes go through the daemon's control socket when it
runs, else straight to the store.
"""

from __future__ import annotations

import getpass
import os
import sys

from .. import config
from ..control import DaemonNotRunning, run_remote
from ..store import BlobStoreLocked, StoreError, open_store
from . import commands

DEFAULT_CONF = "/etc/mailserverd/mailserverd.conf"


def config_path(given: str | None) -> str:
    return given or os.environ.get("MAILSERVERD_CONF") or DEFAULT_CONF


def _read_password(args) -> None:
    if not hasattr(args, "password_stdin"):
        return
    if args.password_stdin:
        args.password = sys.stdin.readline().rstrip("\r\n")
    elif args.password is None:
        if not sys.stdin.isatty():
            raise commands.CommandError("give --password or --password-stdin")
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Again: "):
            raise commands.CommandError("passwords do not match")
        args.password = first
    args.password_stdin = False


def main(argv: list[str] | None = None) -> int:
    try:
        args = commands.build_parser().parse_args(argv)
        _read_password(args)
    except commands.CommandError as exc:
        print(exc, file=sys.stderr)
        return 2
    path = config_path(args.config)
    try:
        settings = config.load_settings(path)
    except config.ConfigError as exc:
        print(f"mailserverctl: {exc}", file=sys.stderr)
        return 1
    read_only = commands.is_read_only(args)
    if not commands.runs_in_process(args):
        try:
            return run_remote(settings, args, sys.stdout.buffer, sys.stderr)
        except DaemonNotRunning:
            pass
        except OSError as exc:
            print(f"mailserverctl: cannot reach the daemon: {exc}", file=sys.stderr)
            return 1
    try:
        store = open_store(settings, read_only=read_only or commands.runs_in_process(args))
    except BlobStoreLocked:
        print("mailserverctl: the store is locked by a running mailserverd whose control socket "
              f"({settings.server.data_dir}/control.sock) does not answer", file=sys.stderr)
        return 1
    except (StoreError, OSError) as exc:
        print(f"mailserverctl: cannot open the store: {exc}", file=sys.stderr)
        return 1
    try:
        out = sys.stdout.buffer
        status = commands.execute(store, settings, args, out.write,
                                  lambda text: (sys.stderr.write(text), sys.stderr.flush()))
        out.flush()
        return status
    except BrokenPipeError:
        return 1
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
