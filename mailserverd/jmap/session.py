"""The JMAP session resource, GET /.well-known/jmap (RFC 8620 2).

URLs are absolute: their authority is the request's Host when it names
this server (the configured hostname or the listen address, any port
given), otherwise the configured hostname and listen port, so a forged
Host header cannot point a client elsewhere.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json

from .api import CORE, MAIL, QUOTA, SUBMISSION, VACATION, WEBSOCKET, account_id_of
from .email import SORT_PROPERTIES

API_PATH = "/jmap/api"
DOWNLOAD_PATH = "/jmap/download/{accountId}/{blobId}/{name}?type={type}"
UPLOAD_PATH = "/jmap/upload/{accountId}/"
EVENTSOURCE_PATH = "/jmap/eventsource?types={types}&closeafter={closeafter}&ping={ping}"
WEBSOCKET_PATH = "/jmap/ws"  # RFC 8887 (websocket.py)
MAX_MAILBOX_NAME = 255


def mail_capability(limits: dict) -> dict:
    """RFC 8621 1.3.1: the account capability of urn:ietf:params:jmap:mail."""
    return {"maxMailboxesPerEmail": None, "maxMailboxDepth": None,
            "maxSizeMailboxName": MAX_MAILBOX_NAME,
            "maxSizeAttachmentsPerEmail": limits["maxSizeUpload"],
            "emailQuerySortOptions": list(SORT_PROPERTIES), "mayCreateTopLevelMailbox": True}


def base_url(host_header: bytes | None, hostname: str, listen: tuple[str, int], scheme: str = "http",
             local_ip: str = "") -> str:
    """scheme://authority, from Host only when it names this server: the configured
    hostname, the listen address, the address the connection arrived on (local_ip,
    for a wildcard listener reached by IP) or "localhost" when that address is loopback."""
    default_port = 443 if scheme == "https" else 80
    default = f"{scheme}://{hostname}" + ("" if listen[1] == default_port else f":{listen[1]}")
    if not host_header:
        return default
    try:
        host = host_header.decode("ascii").strip()
    except UnicodeDecodeError:
        return default
    name, port = host, ""
    if host.startswith("["):
        end = host.find("]")
        name, port = host[1:end], host[end + 1:]
    elif host.count(":") == 1:
        name, port = host.split(":")
        port = ":" + port
    if port and not (port.startswith(":") and port[1:].isdigit() and len(port) <= 6):
        return default
    if name.lower().rstrip(".") not in _own_names(hostname, listen, local_ip):
        return default
    return f"{scheme}://{host}"


def _own_names(hostname: str, listen: tuple[str, int], local_ip: str) -> set[str]:
    names = {hostname.lower(), listen[0].lower()}
    if local_ip:
        names.add(local_ip.lower())
        try:
            if ipaddress.ip_address(local_ip).is_loopback:
                names.add("localhost")
        except ValueError:
            pass
    return names


# RFC 8621 1.3.2: mail is sent at once, never held for a later time or for undo
# (maxDelayedSend 0; every EmailSubmission's undoStatus is "final"); no SMTP extensions offered.
SUBMISSION_ACCOUNT = {"maxDelayedSend": 0, "submissionExtensions": {}}


def capabilities(limits: dict) -> dict:
    return {CORE: dict(limits), MAIL: {}, QUOTA: {}, SUBMISSION: {}, VACATION: {}}


def session_state(account, limits: dict) -> str:
    material = json.dumps([account.id, account.address, capabilities(limits), WEBSOCKET], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def resource(account, base: str, limits: dict) -> dict:
    account_id = account_id_of(account)
    capability = capabilities(limits)
    # RFC 8887 3: ws:// on the http listener, wss:// on https, the authority as for the other URLs
    capability[WEBSOCKET] = {"url": "ws" + base[len("http"):] + WEBSOCKET_PATH, "supportsPush": True}
    return {
        "capabilities": capability,
        "accounts": {account_id: {"name": account.address, "isPersonal": True, "isReadOnly": False,
                                  "accountCapabilities": {MAIL: mail_capability(limits), QUOTA: {},
                                                          SUBMISSION: dict(SUBMISSION_ACCOUNT),
                                                          VACATION: {}}}},
        "primaryAccounts": {MAIL: account_id, QUOTA: account_id, SUBMISSION: account_id,
                            VACATION: account_id},
        "username": account.address,
        "apiUrl": base + API_PATH,
        "downloadUrl": base + DOWNLOAD_PATH,
        "uploadUrl": base + UPLOAD_PATH,
        "eventSourceUrl": base + EVENTSOURCE_PATH,
        "state": session_state(account, limits),
    }
