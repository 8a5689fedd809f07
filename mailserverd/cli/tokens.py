"""mailserverctl token create|list|revoke: Bearer tokens for HTTP (JMAP).

The token is printed once, by create; the store keeps only its hash
(store/tokens.py). The verbs write only the directory's SQL table, so they
run in the ctl process even while the daemon runs (the daemon reads tokens
from the table on each request: a revoke takes effect at once).
"""

from __future__ import annotations

import datetime

from .. import config
from ..store import tokens


def add_parser(verbs) -> None:
    token = verbs.add_parser("token", help="Bearer tokens for HTTP (JMAP)").add_subparsers(
        dest="verb", required=True)
    create = token.add_parser("create", help="a new token for ADDRESS, printed once")
    create.add_argument("address")
    create.add_argument("--expires", metavar="DURATION", help="lifetime, e.g. 30d or 12h (default: never)")
    token.add_parser("list", help="tokens (ids, never secrets)").add_argument("address", nargs="?")
    token.add_parser("revoke", help="revoke a token by its id").add_argument("id")


def _when(value) -> str:
    if value is None:
        return "never"
    return datetime.datetime.fromtimestamp(value, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def token_create(store, settings, args, out, err):
    from .commands import CommandError, _line
    lifetime = None
    if args.expires:
        try:
            lifetime = config.parse_seconds(args.expires)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if lifetime <= 0:
            raise CommandError("--expires must be a positive duration")
    token_id, token = tokens.create(store, args.address, lifetime)
    _line(out, token)
    expires = "never" if lifetime is None else f"in {args.expires}"
    err(f"token id {token_id} for {args.address.lower()}, expires {expires}; keep it secret\n")


def token_list(store, settings, args, out, err):
    from .commands import _line
    for row in tokens.list_tokens(store, args.address):
        _line(out, f"{row.id}  {row.address}  created {_when(row.created_at)}  "
                   f"expires {_when(row.expires_at)}")


def token_revoke(store, settings, args, out, err):
    from .commands import _line
    tokens.revoke(store, args.id)
    _line(out, f"token {args.id} revoked")


HANDLERS = {("token", "create"): token_create, ("token", "list"): token_list,
            ("token", "revoke"): token_revoke}
