"""Blobs (RFC 8620 6): ids, download and upload.

Blob ids: "b<message id>" is a whole message as stored (prepend + body),
"b<message id>.<partId>" one body part with its transfer encoding decoded
(RFC 8621 4.1.4), "u<sha256 hex>" an upload and "u<sha256 hex>.<partId>" a
part of an uploaded message (the blob ids Email/parse gives). Uploads are files under
data_dir/jmap-uploads/<account id>/, kept UPLOAD_TTL (RFC 8620 6.1: at least
an hour) and at most UPLOAD_SPACE_FACTOR x maxSizeUpload per account; only
their uploader can read them. Nothing in the store references them yet.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import urllib.parse

from twisted.internet import threads

from ..store.api import StoreError
from .emailparse import part_content

UPLOAD_TTL = 24 * 3600
UPLOAD_SPACE_FACTOR = 4
_TYPE = re.compile(rb"^[A-Za-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,64}$")
_CHARSET = re.compile(rb"[A-Za-z0-9._:-]{1,40}")  # an IANA charset name
_UPLOAD_ID = re.compile(r"^u[0-9a-f]{64}$")
_MESSAGE_ID = re.compile(r"^b([1-9][0-9]{0,17})(?:\.([0-9][0-9.]{0,60}))?$")


class UploadsFull(Exception):
    pass


def message_blob_id(message_id: int, part_id: str | None = None) -> str:
    return f"b{message_id}" if part_id is None else f"b{message_id}.{part_id}"


class Uploads:
    def __init__(self, directory: str, max_size: int, reactor=None, run=None):
        self.directory = directory
        self.max_size = max_size
        self.clock = time.time
        self._run = run or threads.deferToThread  # file I/O off the reactor thread

    def _dir(self, account) -> str:
        return os.path.join(self.directory, str(account.id))

    def put(self, account, data: bytes):
        """Deferred[blob id]; UploadsFull when the account's uploads would pass their space."""
        return self._run(self._put, account, data)

    def _put(self, account, data: bytes) -> str:
        directory = self._dir(account)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        now, used = self.clock(), 0
        for entry in os.scandir(directory):
            if entry.name.endswith(".tmp"):
                continue
            info = entry.stat()
            if info.st_mtime < now - UPLOAD_TTL:
                os.unlink(entry.path)
            else:
                used += info.st_size
        if used + len(data) > UPLOAD_SPACE_FACTOR * self.max_size:
            raise UploadsFull("the account's uploads use all their space; try again later")
        digest = hashlib.sha256(data).hexdigest()
        path = os.path.join(directory, digest)
        with open(path + ".tmp", "wb") as handle:
            handle.write(data)
        os.replace(path + ".tmp", path)  # a fresh mtime: the TTL starts again
        return "u" + digest

    def get(self, account, blob_id: str):
        """Deferred[bytes or None]."""
        return self._run(self._get, account, blob_id)

    def _get(self, account, blob_id: str):
        if not _UPLOAD_ID.match(blob_id):
            return None
        path = os.path.join(self._dir(account), blob_id[1:])
        try:
            if os.stat(path).st_mtime < self.clock() - UPLOAD_TTL:
                return None
            with open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None


async def read(store, uploads: Uploads, account, blob_id: str):
    """The blob's octets, or None if the account has no such blob."""
    if blob_id.startswith("u"):
        base, dot, part = blob_id.partition(".")
        data = await uploads.get(account, base) if uploads is not None else None
        if not dot or data is None:
            return data
        return part_content(data, part) if re.fullmatch(r"[1-9][0-9]{0,5}", part) else None
    match = _MESSAGE_ID.match(blob_id)
    if not match:
        return None
    message_id = int(match.group(1))
    try:
        raw = await store.read_message(account, message_id)
    except StoreError:
        return None
    if match.group(2) is None:
        return raw
    return part_content(raw, match.group(2))


def safe_type(value: bytes) -> bytes:
    """A media type to send back: type/subtype tokens only, else application/octet-stream."""
    value = value.split(b";")[0].strip().lower()
    return value if _TYPE.match(value) else b"application/octet-stream"


def query_type(uri: bytes) -> bytes:
    """The type= argument of a download URI. Only "&" separates arguments: twisted's
    request.args also splits at ";", which cut "type=text/plain; charset=utf-8" short."""
    query = uri.partition(b"?")[2].decode("latin-1")
    values = urllib.parse.parse_qs(query, separator="&", encoding="latin-1").get("type") if query else None
    return values[0].encode("latin-1") if values else b""


def download_type(value: bytes) -> bytes:
    """The Content-Type of a download (RFC 8620 6.2 "type"): safe_type, keeping a charset
    parameter when it is a plain token (jmap-jam and other clients ask for
    "text/plain; charset=utf-8"; without it a browser guesses the text's encoding)."""
    kind = safe_type(value)
    for parameter in value.split(b";")[1:]:
        name, _eq, charset = parameter.partition(b"=")
        charset = charset.strip().strip(b'"')
        if name.strip().lower() == b"charset" and _CHARSET.fullmatch(charset):
            return kind + b"; charset=" + charset.lower()
    return kind


def unquote_name(value: bytes) -> str:
    name = urllib.parse.unquote(value.decode("ascii", "replace"))
    return "".join(ch for ch in name if ch.isprintable() and ch not in '/\\"')[:200] or "blob"


def disposition(name: str) -> bytes:
    """attachment with an RFC 6266 / RFC 8187 filename*."""
    return ("attachment; filename*=UTF-8''" + urllib.parse.quote(name, safe="")).encode("ascii")
