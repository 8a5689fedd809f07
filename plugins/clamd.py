"""check.clamd: scan each message with ClamAV's clamd over INSTREAM.

Protocol (clamd(8), "INSTREAM"): the client sends "zINSTREAM\\0", then the
data as chunks, each a 4-byte big-endian length and that many bytes, then a
zero length. clamd answers one NUL-terminated line and closes:

    stream: OK
    stream: Eicar-Signature FOUND
    INSTREAM size limit exceeded. ERROR

Options ([check.clamd]):

    socket      unix socket path of clamd (LocalSocket); or
    host, port  its TCPSocket (port default 3310)
    timeout     seconds for the whole exchange (default 30)
    max_size    bytes sent at most; keep <= clamd's StreamMaxLength (default 25M)
    on_failure  tempfail (451 4.7.1, default) or accept when clamd is down or fails

Infected mail is refused with 554 5.7.1 and the signature name is logged.
"""

from __future__ import annotations

import struct
from typing import Optional

from twisted.logger import Logger

from mailserverd.checks.base import Check, CheckContext, Verdict, register_builtin
from mailserverd.config import parse_seconds, parse_size

from .daemonclient import (DaemonError, exchange, fail_safe, global_reactor as _global_reactor,
                           make_endpoint, parse_on_failure)

log = Logger(namespace="plugins.clamd")

CHUNK = 64 * 1024
SECTION = "check.clamd"


def instream_request(message: bytes, max_size: int, chunk: int = CHUNK) -> bytes:
    """The bytes of one zINSTREAM request for the first max_size bytes of `message`."""
    data = memoryview(message)[:max_size]
    pieces = [b"zINSTREAM\0"]
    for offset in range(0, len(data), chunk):
        piece = data[offset:offset + chunk]
        pieces += [struct.pack(">I", len(piece)), piece]
    pieces.append(struct.pack(">I", 0))
    return b"".join(pieces)


def parse_reply(reply: bytes) -> tuple[str, Optional[str]]:
    """('clean', None), ('infected', NAME) or ('error', TEXT) from clamd's answer."""
    line = reply.split(b"\0", 1)[0].strip().decode("utf-8", "replace")
    if not line:
        return "error", "empty reply"
    # "stream: RESULT", or "ID: stream: RESULT" in an IDSESSION
    result = line.split("stream: ", 1)[1] if "stream: " in line else line
    if result == "OK":
        return "clean", None
    if result.endswith(" FOUND"):
        name = result[:-len(" FOUND")].strip()
        # the name goes into an SMTP reply: printable ASCII only (RFC 5321 4.2)
        return "infected", "".join(c for c in name if "!" <= c <= "~")[:120] or "unknown"
    return "error", line[:200]


class ClamdCheck(Check):
    name = SECTION

    def __init__(self, context: Optional[CheckContext] = None, socket: str = "", host: str = "",
                 port: str = "3310", timeout: str = "30s", max_size: str = "25M",
                 on_failure: str = "tempfail"):
        context = context or CheckContext()
        self.reactor = context.reactor or _global_reactor()
        self.clock = context.clock or self.reactor
        self.timeout = parse_seconds(timeout)
        self.max_size = parse_size(max_size)
        self.on_failure = parse_on_failure(SECTION, on_failure)
        self.endpoint, self.where = make_endpoint(self.reactor, SECTION, socket, host, port,
                                                  self.timeout)

    def body(self, session, envelope, message: bytes):
        request = instream_request(message, self.max_size)
        scanning = exchange(self.reactor, self.endpoint, request, self.timeout,
                            complete=lambda reply: b"\0" in reply, clock=self.clock)
        return scanning.addCallbacks(lambda reply: self._verdict(envelope, session, reply),
                                     lambda failure: self._failed(envelope, failure.value))

    def _verdict(self, envelope, session, reply: bytes):
        status, detail = parse_reply(reply)
        if status == "clean":
            return None
        if status == "infected":
            log.info("message {id} from {ip}: clamd found {name}", id=envelope.id,
                     ip=session.remote_ip, name=detail)
            return Verdict.reject(554, "5.7.1", f"Message refused: virus found ({detail})")
        return self._failed(envelope, DaemonError(detail))

    def _failed(self, envelope, error: BaseException):
        return fail_safe(log, "clamd", self.where, self.on_failure, envelope, error)


register_builtin(ClamdCheck.name, ClamdCheck)
