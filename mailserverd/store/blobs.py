"""Content-addressed message bodies in RocksDB (rocksdict).

A blob's id is the sha256 hex of its bytes, so identical bodies are stored
once. Writes go in one WriteBatch, synced (WAL fsync) before the metadata
commit that references them (DESIGN: durable before acknowledged). RocksDB admits
one read-write process; FACTS.md: put/get hold the GIL, so one writer thread.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Iterable

from rocksdict import (AccessType, DBCompressionType, Options, Rdict, ReadOptions, WriteBatch,
                       WriteOptions)


class BlobStoreLocked(Exception):
    """Another process (normally the running daemon) holds the RocksDB lock."""


def blob_id_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, path: str, read_only: bool = False):
        os.makedirs(path, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_compression_type(DBCompressionType.zstd())
        self.path = path
        if read_only and not os.path.exists(os.path.join(path, "CURRENT")):
            Rdict(path, options).close()  # a read-only open needs an existing database
        try:
            if read_only:
                self._db = Rdict(path, options, access_type=AccessType.read_only())
            else:
                self._db = Rdict(path, options)
        except Exception as exc:  # rocksdict raises a plain Exception on lock errors
            if "lock" in str(exc).lower():
                raise BlobStoreLocked(path) from None
            raise
        self._nosync = WriteOptions()
        self._nosync.sync = False
        # Serialises blob writes with reference checks (see MailStore.purge).
        self.lock = threading.RLock()

    def put_many(self, blobs: dict[str, bytes]) -> None:
        """Write blobs not already present, in one synced batch."""
        missing = [key for key in blobs if not self.exists(key)]
        if not missing:
            return
        batch = WriteBatch(raw_mode=True)
        for key in missing:
            batch.put(key.encode("ascii"), blobs[key])
        self._write_synced(batch)

    def _write_synced(self, batch: WriteBatch) -> None:
        """Write the batch to the WAL, then fsync the WAL before returning.

        write() with sync=True holds the GIL through the fsync (~1 ms here), so
        the reactor thread stood still for every group commit; flush_wal(True)
        (RocksDB SyncWAL) releases it. Nothing reads a blob before the metadata
        commit that follows this call, so the batch being visible a moment
        before it is synced changes nothing."""
        self._db.write(batch, self._nosync)
        self._db.flush_wal(True)

    def exists(self, blob_id: str) -> bool:
        return self._db.key_may_exist(blob_id.encode("ascii")) and \
            self._db.get(blob_id.encode("ascii")) is not None

    def get(self, blob_id: str) -> bytes:
        value = self._db.get(blob_id.encode("ascii"))
        if value is None:
            raise KeyError(blob_id)
        return value

    def get_many(self, blob_ids: list[str]) -> dict[str, bytes]:
        """The blobs that exist among blob_ids, in one RocksDB multi-get."""
        keys = [blob_id.encode("ascii") for blob_id in blob_ids]
        if not keys:
            return {}
        return {blob_id: value for blob_id, value in zip(blob_ids, self._db.get(keys)) if value is not None}

    def delete_many(self, blob_ids: Iterable[str]) -> None:
        batch = WriteBatch(raw_mode=True)
        count = 0
        for blob_id in blob_ids:
            batch.delete(blob_id.encode("ascii"))
            count += 1
        if count:
            self._write_synced(batch)

    def disk_usage(self) -> int:
        total = 0
        for root, _dirs, files in os.walk(self.path):
            total += sum(os.path.getsize(os.path.join(root, name)) for name in files)
        return total

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


__all__ = ["BlobStore", "BlobStoreLocked", "blob_id_of", "ReadOptions"]
