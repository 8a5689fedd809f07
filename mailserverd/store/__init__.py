"""The pluggable mailbox backend: a directory engine, N shard engines, a blob store.

open_store() builds the synchronous Store from settings; AsyncStore
(store/service.py) runs it off the reactor thread for protocol code.
"""

from __future__ import annotations

import os

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from . import schema
from .api import Account, StoreError
from .blobs import BlobStore, BlobStoreLocked
from .directory import Directory
from .mail import MailStore
from ..spam.tokendb import forget_owner as forget_spam_owner
from .vacation import forget_account as forget_jmap_rows


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, pool_size=8, max_overflow=8, pool_timeout=60)
        event.listen(engine, "connect", schema.sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)


class Store:
    """The synchronous store: what mailserverctl and AsyncStore's threads call."""

    def __init__(self, directory_url: str, shard_urls: list[str], blob_path: str, read_only: bool = False):
        self.directory_engine = make_engine(directory_url)
        self.shard_engines = [make_engine(url) for url in shard_urls]
        with self.directory_engine.begin() as conn:
            schema.migrate(conn, "directory")
        for engine in self.shard_engines:
            with engine.begin() as conn:
                schema.migrate(conn, "shard")
        self.blobs = BlobStore(blob_path, read_only=read_only)
        self.directory = Directory(self.directory_engine, len(self.shard_engines))
        self.mail = MailStore(self.shard_engines, self.blobs)

    def add_account(self, address: str, password: str) -> Account:
        account = self.directory.add_account(address, password)
        self.mail.init_account(account)
        return account

    def remove_account(self, address: str) -> int:
        """Purge the account's mail and unreferenced blobs, then the account itself."""
        account = self.directory.require_account(address)
        removed = self.mail.purge_account(account)
        forget_spam_owner(self.directory_engine, account.id)  # its spam filter database (spam/tokendb.py)
        with self.directory_engine.begin() as conn:  # its JMAP Identities, submissions, vacation response
            forget_jmap_rows(conn, account.id)
        self.directory.delete_account_row(account)
        return removed

    def close(self) -> None:
        self.blobs.close()
        self.directory_engine.dispose()
        for engine in self.shard_engines:
            engine.dispose()


def storage_urls(settings) -> tuple[str, list[str], str]:
    """(directory URL, shard URLs, blob path) from [storage] and [server] data_dir."""
    data_dir = settings.server.data_dir
    directory = settings.storage.directory or f"sqlite:///{os.path.join(data_dir, 'directory.sqlite3')}"
    shards = settings.storage.shards
    if isinstance(shards, int):
        shards = [f"sqlite:///{os.path.join(data_dir, f'shard-{n}.sqlite3')}" for n in range(shards)]
    blobs = settings.storage.blobs or os.path.join(data_dir, "blobs")
    return directory, list(shards), blobs


def open_store(settings, read_only: bool = False) -> Store:
    os.makedirs(settings.server.data_dir, exist_ok=True)
    directory, shards, blobs = storage_urls(settings)
    return Store(directory, shards, blobs, read_only=read_only)


__all__ = ["Store", "open_store", "storage_urls", "BlobStoreLocked", "StoreError", "make_engine"]
