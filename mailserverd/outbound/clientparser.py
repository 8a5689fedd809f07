"""The SMTP client as plain code: replies parsed from bytes, commands out (no I/O).

`ClientSession` drives one connection for one message: greeting, EHLO
(HELO when EHLO is refused), opportunistic STARTTLS, AUTH PLAIN (smarthost
only, and only over TLS), then transactions of at most 100 recipients, each
MAIL / RCPT... / DATA, pipelined when the server offers PIPELINING, and
QUIT. It is fed bytes (`receive`) and answers with actions for the socket
side (outbound/client.py): `Send(bytes)`, `StartTLS()`, `Close()`.

What it learns is kept per recipient in `outcomes` (delivered, failed, or
deferred by this server) and, for failures of the whole connection
(greeting, EHLO, TLS, AUTH, MAIL 4xx, lost connection), in `host_error`:
recipients without a final outcome are for the transport to try elsewhere.

Connection reuse (RFC 5321 3.3: after a completed transaction the server is
reset and a new MAIL may follow): a session made with `keep_open` ends a
message whose transactions all completed (2xx, 4xx or 5xx replies, the
connection itself healthy) with `Idle()` instead of QUIT, and
`follow_on(envelope)` makes the session for the next message on the same
connection, keeping what EHLO, STARTTLS and AUTH established. A 421 reply
(the server is closing, RFC 5321 3.8) never leaves a connection idle.
"""

from __future__ import annotations

import base64
import collections
import re
from dataclasses import dataclass
from typing import Callable

MAX_REPLY_LINE = 4096       # RFC 5321 4.5.3.1.5 says 512; some servers send longer text
MAX_REPLY_LINES = 200       # an EHLO reply has a line per extension
MAX_REPLY_TEXT = 1000       # characters kept of a reply for logs and DSNs
MAX_RCPT_PER_TRANSACTION = 100  # RFC 5321 4.5.3.1.8: every server takes 100

DELIVERED, DEFERRED, FAILED = "delivered", "deferred", "failed"

_REPLY_LINE = re.compile(r"(\d{3})(?:([ -])(.*))?\Z", re.S)
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: +|\Z)")


class ProtocolError(Exception):
    """The server broke the reply syntax or its limits; the connection is dropped."""


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def enhanced(self) -> str:
        """The RFC 3463 code of the first line when its class matches the reply's, else ""."""
        match = _ENHANCED.match(self.lines[0]) if self.lines else None
        if match and int(match.group(1)) == self.code // 100:
            return ".".join(match.groups())
        return ""

    @property
    def text(self) -> str:
        """The lines without their enhanced codes, joined, at most MAX_REPLY_TEXT characters."""
        parts = [_ENHANCED.sub("", line, count=1) if self.enhanced else line for line in self.lines]
        return " ".join(part.strip() for part in parts if part.strip())[:MAX_REPLY_TEXT]

    def __str__(self) -> str:
        return " ".join(filter(None, (str(self.code), self.enhanced, self.text)))


class ReplyParser:
    """Bytes in, complete (multiline) replies out (RFC 5321 4.2.1)."""

    def __init__(self):
        self._buffer = b""
        self._lines: list[str] = []
        self._code: str | None = None

    def feed(self, data: bytes) -> list[Reply]:
        self._buffer += data
        replies = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_REPLY_LINE:
                    raise ProtocolError("reply line too long")
                return replies
            raw, self._buffer = self._buffer[:end], self._buffer[end + 1:]
            if len(raw) > MAX_REPLY_LINE:
                raise ProtocolError("reply line too long")
            reply = self._line(raw.rstrip(b"\r").decode("utf-8", "replace"))
            if reply is not None:
                replies.append(reply)

    def _line(self, line: str) -> Reply | None:
        match = _REPLY_LINE.match(line)
        if not match or match.group(1)[0] not in "2345":
            raise ProtocolError(f"malformed reply line {line[:80]!r}")
        code, separator, text = match.group(1), match.group(2), match.group(3) or ""
        if self._code is not None and code != self._code:
            raise ProtocolError("reply code changed inside a multiline reply")
        self._code = code
        self._lines.append(text)
        if len(self._lines) > MAX_REPLY_LINES:
            raise ProtocolError("too many reply lines")
        if separator == "-":
            return None
        reply = Reply(int(code), tuple(self._lines))
        self._lines, self._code = [], None
        return reply

    def discard_buffer(self) -> None:
        """Drop bytes received but not parsed (RFC 3207 4.2: nothing read before TLS counts after)."""
        self._buffer = b""
        self._lines, self._code = [], None


# -- actions for the socket side -------------------------------------------------------

@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class StartTLS:
    pass


@dataclass(frozen=True)
class Close:
    pass


@dataclass(frozen=True)
class Idle:
    """The message is done and the connection may carry another (follow_on)."""


@dataclass(frozen=True)
class Outcome:
    """What one server said about one recipient (or about the whole connection)."""

    status: str      # DELIVERED | DEFERRED | FAILED
    code: int        # 0: no reply (connection failure, our own check)
    enhanced: str
    text: str


def outcome_of(reply: Reply, status: str | None = None) -> Outcome:
    if status is None:
        status = DELIVERED if reply.code < 400 else DEFERRED if reply.code < 500 else FAILED
    return Outcome(status, reply.code, reply.enhanced or f"{reply.code // 100}.0.0", reply.text)


@dataclass(frozen=True)
class Envelope:
    """The message as this session sends it (see outbound/types.OutboundMessage)."""

    sender: str
    recipients: tuple[str, ...]
    body: bytes                   # CRLF line endings (normalize_line_endings), DKIM-signed if at all
    smtputf8: bool = False
    eight_bit: bool = False
    dsn: tuple = ()               # per recipient (notify, orcpt)
    ret: str | None = None
    envid: str | None = None

    @property
    def needs_smtputf8(self) -> bool:
        return self.smtputf8 or not all(address.isascii() for address in (self.sender, *self.recipients))

    @property
    def needs_8bitmime(self) -> bool:
        return self.eight_bit or not self.body.isascii()


# -- encodings --------------------------------------------------------------------------

def normalize_line_endings(body: bytes) -> bytes:
    """Bare CR and bare LF become CRLF (RFC 5321 2.3.8); the body ends with CRLF."""
    body = re.sub(rb"\r\n|\r|\n", b"\r\n", body)
    return body if body.endswith(b"\r\n") or not body else body + b"\r\n"


def dot_stuff(body: bytes) -> bytes:
    """The DATA payload: a dot doubled at each line start, then CRLF.CRLF (RFC 5321 4.5.2)."""
    body = normalize_line_endings(body)
    return re.sub(rb"(?m)^\.", b"..", body) + b".\r\n"


def xtext(value: str) -> str:
    """RFC 3461 4: bytes outside '!'..'~', and '+' and '=', as +HH."""
    return "".join(chr(byte) if 33 <= byte <= 126 and byte not in (43, 61) else f"+{byte:02X}"
                   for byte in value.encode("utf-8"))


def utf8_addr_xtext(value: str) -> str:
    """RFC 6533 4 utf-8-addr-xtext: non-ASCII, '+', '=', '\\' and controls as \\x{HEX}."""
    return "".join(ch if 33 <= ord(ch) <= 126 and ch not in "+=\\" else f"\\x{{{ord(ch):X}}}" for ch in value)


def orcpt_parameter(orcpt: str) -> str | None:
    """"rfc822;user@example.org" (decoded, as queued) -> the ORCPT= value (RFC 3461 4.2)."""
    addr_type, separator, address = orcpt.partition(";")
    if not separator or not addr_type:
        return None
    if addr_type.lower() == "utf-8":
        return f"utf-8;{utf8_addr_xtext(address)}"
    return f"{addr_type};{xtext(address)}"


# -- the session ------------------------------------------------------------------------

Handler = Callable[[Reply], list]


class ClientSession:
    """One connection's worth of SMTP client state; see the module docstring."""

    def __init__(self, envelope: Envelope, helo_name: str, tls_available: bool = True,
                 require_tls: bool = False, credentials: tuple[str, str] | None = None,
                 keep_open: bool = False):
        self.keep_open = keep_open
        self.idle = False        # done, connection open, nothing awaited: follow_on() may reuse it
        self._closing_server = False  # a 421 was heard
        self.envelope = envelope
        self.helo_name = helo_name
        self.tls_available = tls_available
        self.require_tls = require_tls or credentials is not None  # never a password in clear
        self.credentials = credentials
        self.parser = ReplyParser()
        self.extensions: dict[str, str] = {}
        self.tls_active = False
        self.authenticated = False
        self.outcomes: dict[str, Outcome] = {}
        self.host_error: Outcome | None = None
        self.done = False        # every recipient this server will decide on has an outcome
        self.closed = False
        self.stage = "greeting"  # what the oldest awaited reply answers (timeouts: RFC 5321 4.5.3.2)
        self._expect: collections.deque[tuple[str, Handler]] = collections.deque([("greeting", self._greeting)])
        self._queue: list[str] = list(envelope.recipients)
        self._dsn = dict(zip(envelope.recipients, envelope.dsn))
        self._awaiting_tls = False
        self._batch: list[str] = []
        self._accepted: list[str] = []
        self._mail_reply: Reply | None = None
        self._transactions = 0
        self.replies = 0         # replies received: > 0 means the server spoke SMTP
        self._replies_at_tls: int | None = None

    # -- input ---------------------------------------------------------------------------

    def receive(self, data: bytes) -> list:
        if self.closed or self._awaiting_tls:
            return []
        try:
            replies = self.parser.feed(data)
        except ProtocolError as exc:
            return self._abort(str(exc))
        actions: list = []
        for reply in replies:
            self.replies += 1
            if reply.code == 421:
                self._closing_server = True  # RFC 5321 3.8: the server is closing the channel
            if not self._expect:
                return actions + self._abort("reply nobody asked for")
            _, handler = self._expect.popleft()
            actions += handler(reply)
            self._update_stage()
            if self._awaiting_tls or self.closed:
                break  # RFC 3207 4.2: nothing after the 220 to STARTTLS is read in clear
        return actions

    def follow_on(self, envelope: Envelope) -> "ClientSession":
        """The session for the next message on this (idle) connection; call start() on it."""
        if not self.idle:
            raise RuntimeError("follow_on needs an idle session")
        self.idle = False
        nxt = ClientSession(envelope, self.helo_name, tls_available=self.tls_available,
                            require_tls=self.require_tls, credentials=self.credentials, keep_open=self.keep_open)
        nxt.parser = self.parser
        nxt.extensions = self.extensions
        nxt.tls_active = self.tls_active
        nxt.authenticated = self.authenticated
        nxt._expect.clear()
        return nxt

    def start(self) -> list:
        """The first commands of a follow_on session: its MAIL transaction(s)."""
        return self._begin_transaction()

    def tls_started(self) -> list:
        """The TLS handshake finished: EHLO again, forgetting what was said in clear (RFC 3207 4.2)."""
        self._awaiting_tls = False
        self.tls_active = True
        self.extensions = {}
        return self._command(f"EHLO {self.helo_name}", "ehlo", self._ehlo)

    @property
    def tls_failed(self) -> bool:
        """STARTTLS was accepted but no reply ever came through TLS (a failed handshake)."""
        return self._replies_at_tls is not None and self.replies == self._replies_at_tls and not self.done

    def connection_lost(self, reason: str) -> None:
        if not self.done and self.host_error is None:
            self.host_error = Outcome(DEFERRED, 0, "4.4.2", f"connection lost: {reason}")
        self.closed = True

    def timed_out(self) -> list:
        if not self.done:
            self.host_error = Outcome(DEFERRED, 0, "4.4.2", f"timeout waiting for the {self.stage} reply")
        return self._close()

    def pending(self) -> list[str]:
        """Recipients without a final (delivered or failed) outcome from this server."""
        return [recipient for recipient in self.envelope.recipients
                if recipient not in self.outcomes or self.outcomes[recipient].status == DEFERRED]

    # -- plumbing -------------------------------------------------------------------------

    def _update_stage(self) -> None:
        self.stage = self._expect[0][0] if self._expect else "none"

    def _command(self, line: str, stage: str, handler: Handler) -> list:
        self._expect.append((stage, handler))
        self._update_stage()
        return [Send(line.encode("utf-8") + b"\r\n")]

    def _abort(self, reason: str) -> list:
        if not self.done and self.host_error is None:
            self.host_error = Outcome(DEFERRED, 0, "4.4.2", f"protocol error: {reason}")
        return self._close()

    def _close(self) -> list:
        self.closed = True
        self._expect.clear()
        return [Close()]

    def _host_failed(self, outcome: Outcome) -> list:
        self.host_error = outcome
        return self._quit()

    def _quit(self) -> list:
        self.done = True
        return self._command("QUIT", "quit", lambda reply: self._close())

    def _fail_all(self, outcome: Outcome) -> list:
        for recipient in self.pending():
            self.outcomes[recipient] = outcome
        self._queue = []
        return self._quit()

    # -- greeting, EHLO, STARTTLS, AUTH -----------------------------------------------------

    def _greeting(self, reply: Reply) -> list:  # RFC 5321 4.3.1: 220, or 554 "no service here"
        if reply.code != 220:
            return self._host_failed(outcome_of(reply, DEFERRED))
        return self._command(f"EHLO {self.helo_name}", "ehlo", self._ehlo)

    def _ehlo(self, reply: Reply) -> list:  # RFC 5321 4.1.1.1
        if reply.code == 250:
            self.extensions = {}
            for line in reply.lines[1:]:
                keyword, _, params = line.strip().partition(" ")
                self.extensions[keyword.upper()] = params.strip()
            return self._after_hello()
        if 500 <= reply.code < 600 and not self.tls_active:
            # RFC 5321 3.2: a server that does not know EHLO gets HELO
            return self._command(f"HELO {self.helo_name}", "helo", self._helo)
        return self._host_failed(outcome_of(reply, DEFERRED))

    def _helo(self, reply: Reply) -> list:
        if reply.code != 250:
            return self._host_failed(outcome_of(reply, DEFERRED))
        self.extensions = {}
        return self._after_hello()

    def _after_hello(self) -> list:
        if not self.tls_active and self.tls_available and "STARTTLS" in self.extensions:
            return self._command("STARTTLS", "starttls", self._starttls)  # RFC 3207 4
        if self.require_tls and not self.tls_active:
            return self._host_failed(Outcome(DEFERRED, 0, "4.7.10", "TLS required but not offered"))
        if self.credentials is not None and not self.authenticated:
            mechanisms = self.extensions.get("AUTH", "").upper().split()
            if "PLAIN" not in mechanisms:
                return self._host_failed(Outcome(DEFERRED, 0, "4.7.12", "the relay does not offer AUTH PLAIN"))
            user, password = self.credentials
            token = base64.b64encode(b"\0" + user.encode("utf-8") + b"\0" + password.encode("utf-8"))
            # RFC 4954 4 initial response; RFC 4616 PLAIN
            return self._command("AUTH PLAIN " + token.decode("ascii"), "auth", self._auth)
        return self._begin_transaction()

    def _starttls(self, reply: Reply) -> list:
        if reply.code == 220:
            self.parser.discard_buffer()
            self._awaiting_tls = True
            self._replies_at_tls = self.replies
            return [StartTLS()]
        if self.require_tls:
            return self._host_failed(outcome_of(reply, DEFERRED))
        self.tls_available = False  # opportunistic: carry on in clear
        return self._after_hello()

    def _auth(self, reply: Reply) -> list:
        if reply.code != 235:
            # a relay refusing our credentials is our configuration's fault: retry, never bounce
            return self._host_failed(outcome_of(reply, DEFERRED))
        self.authenticated = True
        return self._begin_transaction()

    # -- transactions ----------------------------------------------------------------------

    def _refusal(self) -> Outcome | None:
        """A reason this server cannot take the message at all, checked before MAIL."""
        envelope = self.envelope
        size = self.extensions.get("SIZE", "")
        if size.isdigit() and int(size) > 0 and len(envelope.body) > int(size):  # RFC 1870 6
            return Outcome(FAILED, 552, "5.3.4", f"message size {len(envelope.body)} exceeds the "
                           f"remote limit of {int(size)}")
        if envelope.needs_smtputf8 and "SMTPUTF8" not in self.extensions:  # RFC 6531 3.2
            return Outcome(FAILED, 550, "5.6.7", "non-ASCII addresses need SMTPUTF8, not offered by the remote server")
        if envelope.needs_8bitmime and "8BITMIME" not in self.extensions:  # RFC 6152 3
            return Outcome(FAILED, 554, "5.6.3", "8-bit message and the remote server does not offer 8BITMIME")
        return None

    def _mail_command(self) -> str:
        envelope = self.envelope
        params = []
        if "SIZE" in self.extensions:
            params.append(f"SIZE={len(envelope.body)}")  # RFC 1870 6
        if envelope.needs_8bitmime:
            params.append("BODY=8BITMIME")  # RFC 6152 2
        if envelope.needs_smtputf8:
            params.append("SMTPUTF8")  # RFC 6531 3.4
        if "DSN" in self.extensions:  # RFC 3461 4.3, 4.4
            if envelope.ret:
                params.append(f"RET={envelope.ret}")
            if envelope.envid:
                params.append(f"ENVID={xtext(envelope.envid)}")
        return " ".join([f"MAIL FROM:<{envelope.sender}>", *params])

    def _rcpt_command(self, recipient: str) -> str:
        params = []
        if "DSN" in self.extensions:  # RFC 3461 4.1, 4.2
            notify, orcpt = self._dsn.get(recipient, (None, None))
            if notify:
                params.append(f"NOTIFY={notify}")
            value = orcpt_parameter(orcpt) if orcpt else None
            if value:
                params.append(f"ORCPT={value}")
        return " ".join([f"RCPT TO:<{recipient}>", *params])

    def _begin_transaction(self) -> list:
        if not self._queue:
            if self.keep_open and self.host_error is None and not self._closing_server:
                self.done = self.idle = True
                self._update_stage()
                return [Idle()]
            return self._quit()
        refusal = self._refusal()
        if refusal is not None:
            return self._fail_all(refusal)
        actions: list = []
        if self._transactions:
            actions += self._command("RSET", "rset", lambda reply: [])  # RFC 5321 4.1.1.5
        self._transactions += 1
        self._batch = self._queue[:MAX_RCPT_PER_TRANSACTION]
        self._queue = self._queue[MAX_RCPT_PER_TRANSACTION:]
        self._accepted = []
        self._mail_reply = None
        if "PIPELINING" in self.extensions:
            # RFC 2920 3.1: MAIL, every RCPT and DATA in one group; DATA ends the group
            lines = [self._mail_command(), *(self._rcpt_command(r) for r in self._batch), "DATA"]
            self._expect.append(("mail", self._mail))
            for recipient in self._batch:
                self._expect.append(("rcpt", self._rcpt_handler(recipient, pipelined=True)))
            self._expect.append(("data", self._data))
            self._update_stage()
            data = b"".join(line.encode("utf-8") + b"\r\n" for line in lines)
            return self._merge(actions + [Send(data)])
        return self._merge(actions + self._command(self._mail_command(), "mail", self._mail))

    @staticmethod
    def _merge(actions: list) -> list:
        """Adjacent Sends as one write (RSET joins the pipelined group)."""
        merged: list = []
        for action in actions:
            if merged and isinstance(action, Send) and isinstance(merged[-1], Send):
                merged[-1] = Send(merged[-1].data + action.data)
            else:
                merged.append(action)
        return merged

    def _mail(self, reply: Reply) -> list:  # RFC 5321 4.1.1.2
        self._mail_reply = reply
        pipelined = "PIPELINING" in self.extensions
        if reply.code == 250:
            if pipelined:
                return []
            return self._command(self._rcpt_command(self._batch[0]), "rcpt",
                                 self._rcpt_handler(self._batch[0], pipelined=False))
        if reply.code >= 500:
            # the sender is refused: no server of this domain will take the message
            for recipient in self.pending():
                self.outcomes[recipient] = outcome_of(reply, FAILED)
            self._queue = []
        else:
            self.host_error = outcome_of(reply, DEFERRED)
            self._queue = []
        return [] if pipelined else self._quit()

    def _rcpt_handler(self, recipient: str, pipelined: bool) -> Handler:
        def handle(reply: Reply) -> list:  # RFC 5321 4.1.1.3
            if self._mail_reply is None or self._mail_reply.code != 250:
                return []  # pipelined behind a refused MAIL: the answer means nothing
            if reply.code in (250, 251):
                self._accepted.append(recipient)
            else:
                self.outcomes[recipient] = outcome_of(reply)
            if pipelined:
                return []
            index = self._batch.index(recipient) + 1
            if index < len(self._batch):
                following = self._batch[index]
                return self._command(self._rcpt_command(following), "rcpt",
                                     self._rcpt_handler(following, pipelined=False))
            if self._accepted:
                return self._command("DATA", "data", self._data)
            return self._end_transaction()
        return handle

    def _data(self, reply: Reply) -> list:  # RFC 5321 4.1.1.4
        if self._mail_reply is None or self._mail_reply.code != 250 or not self._accepted:
            if reply.code == 354:
                # RFC 2920 3.1: the server started DATA with no valid recipient: end it empty
                self._expect.append(("data_end", lambda _: self._end_transaction()))
                self._update_stage()
                return [Send(b".\r\n")]
            return self._end_transaction()
        if reply.code != 354:
            for recipient in self._accepted:
                self.outcomes[recipient] = outcome_of(reply)
            return self._end_transaction()
        self._expect.append(("data_end", self._data_end))
        self._update_stage()
        return [Send(dot_stuff(self.envelope.body))]

    def _data_end(self, reply: Reply) -> list:
        for recipient in self._accepted:
            self.outcomes[recipient] = outcome_of(reply)
        return self._end_transaction()

    def _end_transaction(self) -> list:
        if self._mail_reply is None or self._mail_reply.code != 250:
            return self._quit()
        delivered = any(r in self.outcomes and self.outcomes[r].status == DELIVERED for r in self._batch)
        # RFC 5321 4.5.3.1.10: 452 "too many recipients": the rest go in another transaction
        too_many = [r for r in self._batch if self.outcomes.get(r) is not None and self.outcomes[r].code == 452]
        if delivered and too_many:
            for recipient in too_many:
                del self.outcomes[recipient]
            self._queue = too_many + self._queue
        return self._begin_transaction()
