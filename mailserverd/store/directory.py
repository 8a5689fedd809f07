"""The directory: domains, accounts, aliases, credentials and account -> shard.

Synchronous; AsyncStore runs it on the store's thread pool. Addresses are
kept lower case with the domain in IDNA A-labels.
"""

from __future__ import annotations

import re
import time
import zlib

import argon2
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from . import schema
from .api import Account, StoreError

# RFC 5321 4.1.2 dot-string local parts; quoted local parts are not offered
# for accounts (they are a relay-trick vector and no client needs them).
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
MAX_PASSWORD = 1024


def normalize_domain(domain: str) -> str:
    domain = domain.strip().rstrip(".")
    try:
        ascii_domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise StoreError(f"invalid domain name: {domain!r}") from None
    labels = ascii_domain.split(".")
    if len(ascii_domain) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(x) for x in labels):
        raise StoreError(f"invalid domain name: {domain!r}")
    return ascii_domain


def normalize_address(address: str) -> str:
    """'Alice@Example.TEST' -> 'alice@example.test'; StoreError if malformed."""
    address = address.strip()
    local, sep, domain = address.rpartition("@")
    if not sep or not local or len(local) > 64 or not _LOCAL.fullmatch(local):
        raise StoreError(f"invalid address: {address!r}")
    return f"{local.lower()}@{normalize_domain(domain)}"


def normalize_alias(alias: str) -> str:
    """An address, or "@domain" for a catch-all."""
    alias = alias.strip()
    if alias.startswith("@"):
        return "@" + normalize_domain(alias[1:])
    return normalize_address(alias)


class Directory:
    def __init__(self, engine: Engine, shard_count: int, hasher: argon2.PasswordHasher | None = None):
        self.engine = engine
        self.shard_count = shard_count
        self.hasher = hasher or argon2.PasswordHasher()

    # Domains

    def add_domain(self, domain: str) -> str:
        name = normalize_domain(domain)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(schema.domains).values(name=name, created_at=time.time()))
        except IntegrityError:
            raise StoreError(f"domain {name} already exists") from None
        return name

    def remove_domain(self, domain: str) -> None:
        name = normalize_domain(domain)
        with self.engine.begin() as conn:
            users = conn.execute(select(func.count()).select_from(schema.accounts)
                                 .where(schema.accounts.c.domain == name)).scalar()
            if users:
                raise StoreError(f"domain {name} still has {users} account(s); remove them first")
            conn.execute(delete(schema.aliases).where(schema.aliases.c.domain == name))
            if not conn.execute(delete(schema.domains).where(schema.domains.c.name == name)).rowcount:
                raise StoreError(f"no such domain: {name}")

    def list_domains(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(schema.domains.c.name).order_by(schema.domains.c.name)).scalars())

    def is_local_domain(self, domain: str) -> bool:
        try:
            name = normalize_domain(domain)
        except StoreError:
            return False
        with self.engine.connect() as conn:
            return conn.execute(select(schema.domains.c.name)
                                .where(schema.domains.c.name == name)).first() is not None

    # Accounts

    def hash_password(self, password: str) -> str:
        if not password or len(password) > MAX_PASSWORD:
            raise StoreError("password must be 1 to 1024 characters")
        return self.hasher.hash(password)

    def add_account(self, address: str, password: str) -> Account:
        address = normalize_address(address)
        domain = address.rpartition("@")[2]
        password_hash = self.hash_password(password)
        # Spread accounts over shards by a stable hash of the address.
        shard = zlib.crc32(address.encode()) % self.shard_count
        with self.engine.begin() as conn:
            if not conn.execute(select(schema.domains.c.name)
                                .where(schema.domains.c.name == domain)).first():
                raise StoreError(f"domain {domain} is not local; add it with 'domain add' first")
            if conn.execute(select(schema.aliases.c.address)
                            .where(schema.aliases.c.address == address)).first():
                raise StoreError(f"{address} is already an alias")
            try:
                account_id = conn.execute(insert(schema.accounts).values(
                    address=address, domain=domain, password_hash=password_hash, quota=0,
                    shard=shard, created_at=time.time())).inserted_primary_key[0]
            except IntegrityError:
                raise StoreError(f"account {address} already exists") from None
        return Account(id=account_id, address=address, shard=shard)

    def get_account(self, address: str) -> Account | None:
        try:
            address = normalize_address(address)
        except StoreError:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(schema.accounts).where(schema.accounts.c.address == address)).first()
        return _account(row) if row else None

    def require_account(self, address: str) -> Account:
        account = self.get_account(address)
        if account is None:
            raise StoreError(f"no such account: {address}")
        return account

    def list_accounts(self, domain: str | None = None) -> list[Account]:
        query = select(schema.accounts).order_by(schema.accounts.c.address)
        if domain:
            query = query.where(schema.accounts.c.domain == normalize_domain(domain))
        with self.engine.connect() as conn:
            return [_account(row) for row in conn.execute(query)]

    def set_password(self, address: str, password: str) -> None:
        account = self.require_account(address)
        password_hash = self.hash_password(password)
        with self.engine.begin() as conn:
            conn.execute(update(schema.accounts).where(schema.accounts.c.id == account.id)
                         .values(password_hash=password_hash))

    def set_quota(self, address: str, quota: int) -> None:
        account = self.require_account(address)
        with self.engine.begin() as conn:
            conn.execute(update(schema.accounts).where(schema.accounts.c.id == account.id)
                         .values(quota=quota))

    def delete_account_row(self, account: Account) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(schema.accounts).where(schema.accounts.c.id == account.id))

    def verify_password(self, address: str, password: str) -> Account | None:
        """The account if the password matches; None otherwise.

        An unknown address still costs one hash verification, so the reply
        time does not tell which addresses exist.
        """
        try:
            address = normalize_address(address)
        except StoreError:
            address = None
        row = None
        if address:
            with self.engine.connect() as conn:
                row = conn.execute(select(schema.accounts)
                                   .where(schema.accounts.c.address == address)).first()
        stored = row.password_hash if row else _DUMMY_HASH
        try:
            self.hasher.verify(stored, password[:MAX_PASSWORD])
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return None
        return _account(row) if row else None

    # Aliases

    def add_alias(self, alias: str, targets: list[str]) -> None:
        alias = normalize_alias(alias)
        normalized = [normalize_address(target) for target in targets if target.strip()]
        if not normalized:
            raise StoreError("an alias needs at least one target address")
        domain = alias.rpartition("@")[2]
        if alias in normalized:
            raise StoreError(f"alias {alias} cannot point to itself (a forwarding loop)")
        with self.engine.begin() as conn:
            if not conn.execute(select(schema.domains.c.name)
                                .where(schema.domains.c.name == domain)).first():
                raise StoreError(f"domain {domain} is not local")
            if conn.execute(select(schema.accounts.c.id)
                            .where(schema.accounts.c.address == alias)).first():
                raise StoreError(f"{alias} is an account, not an alias")
            loop = _alias_path_to(conn, normalized, alias)
            if loop:
                raise StoreError(f"alias {alias} would make a forwarding loop: "
                                 + " -> ".join([alias] + loop))
            try:
                conn.execute(insert(schema.aliases).values(address=alias, domain=domain,
                                                           targets=",".join(normalized)))
            except IntegrityError:
                raise StoreError(f"alias {alias} already exists") from None

    def remove_alias(self, alias: str) -> None:
        alias = normalize_alias(alias)
        with self.engine.begin() as conn:
            if not conn.execute(delete(schema.aliases).where(schema.aliases.c.address == alias)).rowcount:
                raise StoreError(f"no such alias: {alias}")

    def list_aliases(self, domain: str | None = None) -> list[tuple[str, list[str]]]:
        query = select(schema.aliases).order_by(schema.aliases.c.address)
        if domain:
            query = query.where(schema.aliases.c.domain == normalize_domain(domain))
        with self.engine.connect() as conn:
            return [(row.address, row.targets.split(",")) for row in conn.execute(query)]

    def resolve_recipient(self, address: str) -> list[Account]:
        """The accounts mail to `address` reaches: the account itself, else an
        alias's targets (followed up to 5 levels), else the domain's catch-all."""
        return self.resolve_targets(address)[0]

    def resolve_targets(self, address: str) -> tuple[list[Account], list[str]]:
        """(accounts, remote addresses) that mail to `address` reaches through aliases.

        A remote address (outside our domains) is reached only as an alias target:
        an admin-configured forward, never the address asked for itself. Each
        address is followed once (an alias pointing back is not followed again)."""
        accounts: dict[int, Account] = {}
        remote: list[str] = []
        self._resolve(address, 0, accounts, remote, set())
        return list(accounts.values()), remote

    def _resolve(self, address: str, depth: int, accounts: dict, remote: list, seen: set) -> None:
        try:
            address = normalize_address(address)
        except StoreError:
            return
        if address in seen:
            return
        seen.add(address)
        domain = address.rpartition("@")[2]
        with self.engine.connect() as conn:
            row = conn.execute(select(schema.accounts).where(schema.accounts.c.address == address)).first()
            if row:
                accounts.setdefault(row.id, _account(row))
                return
            if not conn.execute(select(schema.domains.c.name).where(schema.domains.c.name == domain)).first():
                if depth > 0 and address not in remote:
                    remote.append(address)
                return
            alias = conn.execute(select(schema.aliases.c.targets)
                                 .where(schema.aliases.c.address == address)).scalar()
            if alias is None:
                alias = conn.execute(select(schema.aliases.c.targets)
                                     .where(schema.aliases.c.address == "@" + domain)).scalar()
        if alias is None or depth >= 5:
            return
        for target in alias.split(","):
            self._resolve(target, depth + 1, accounts, remote, seen)

    def sender_addresses(self, account: Account) -> frozenset[str]:
        """The account's own address and every alias that delivers only to it."""
        allowed = {account.address}
        with self.engine.connect() as conn:
            candidates = conn.execute(select(schema.aliases)
                                      .where(schema.aliases.c.targets.contains(account.address)))
            for row in candidates:
                if row.address.startswith("@"):
                    continue
                accounts, remote = self.resolve_targets(row.address)
                if [a.id for a in accounts] == [account.id] and not remote:
                    allowed.add(row.address)
        return frozenset(allowed)


def _alias_path_to(conn, targets: list[str], alias: str, depth: int = 0) -> list[str]:
    """The chain of existing aliases from `targets` back to `alias`, or [] when none loops."""
    if depth >= 5:
        return []
    for target in targets:
        if target == alias:
            return [target]
        row = conn.execute(select(schema.aliases.c.targets).where(schema.aliases.c.address == target)).scalar()
        if row:
            rest = _alias_path_to(conn, row.split(","), alias, depth + 1)
            if rest:
                return [target] + rest
    return []


def _account(row) -> Account:
    return Account(id=row.id, address=row.address, shard=row.shard, quota=row.quota)


_DUMMY_HASH = argon2.PasswordHasher().hash("mailserverd-timing-equaliser")
