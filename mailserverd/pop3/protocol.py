"""The POP3 server state machine (RFC 1939), free of I/O, in the style of h11.

    machine.receive_data(bytes)        bytes from the client
    machine.next_event()               NEED_DATA, PAUSED or an event (events.py)
    machine.data_to_send(limit=None)   reply bytes to write, in order; message
                                       bodies come out dot-stuffed in chunks
    machine.output_pending             True while queued output remains
    machine.login_succeeded(maildrop, username) / login_failed(reply)   answer Login
    machine.message_read(body) / message_failed(reply)        answer Retrieve
    machine.update_done() / update_failed()                   answer Update
    machine.tls_started()              after StartTLS: TLS is on, state forgotten
    machine.close(reply, reason)       end the session (timeout)

Commands are handled strictly in order (RFC 2449 6.6 PIPELINING): while a
request waits for its answer, or a message body is still being sent, nothing
further is parsed, so replies keep command order and at most one message
body is held in memory.
"""

from __future__ import annotations

import collections
import dataclasses

from ..auth import sasl
from . import replies
from .commands import (MAX_COMMAND_LINE, Command, CommandSyntaxError, check_arguments, decode_line,
                       parse_command, parse_message_number, parse_number)
from .events import NEED_DATA, PAUSED, Close, Login, MachineConfig, Retrieve, StartTLS, Update
from .maildrop import Maildrop, NoSuchMessage
from .stuffing import TERMINATOR, DotStuffer, top_of_message

AUTHORIZATION, TRANSACTION, UPDATE = "AUTHORIZATION", "TRANSACTION", "UPDATE"  # RFC 1939 3
# RFC 5034 4: SASL lines may exceed the 255-octet command limit; bound them by the
# longest response sasl accepts, plus "AUTH PLAIN " and CRLF.
MAX_SASL_LINE = sasl.MAX_RESPONSE + 64
STREAM_CHUNK = 64 * 1024
MAX_QUEUED_REPLIES = 64 * 1024  # octets of replies queued before parsing waits for the writer
MECHANISMS = ("PLAIN",)
_AUTHORIZATION_COMMANDS = frozenset({"USER", "PASS", "AUTH", "CAPA", "STLS", "QUIT"})
_TRANSACTION_COMMANDS = frozenset({"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL",
                                   "QUIT", "CAPA"})


@dataclasses.dataclass
class SessionStats:
    """What the session did, for its one log line."""

    retrieved: int = 0
    retrieved_octets: int = 0
    top: int = 0
    deleted: int = 0  # expunged at QUIT
    auth_failures: int = 0
    bad_commands: int = 0


class _BodyStream:
    """A message body going out dot-stuffed, one chunk at a time."""

    def __init__(self, body: bytes):
        self._body = memoryview(body)
        self._offset = 0
        self._stuffer = DotStuffer()

    def take(self, size: int) -> tuple[bytes, bool]:
        """Up to `size` octets of the body, stuffed; (bytes, finished)."""
        end = min(len(self._body), self._offset + max(size, 1))
        out = self._stuffer.feed(self._body[self._offset:end])
        self._offset = end
        if end < len(self._body):
            return out, False
        return out + self._stuffer.finish(), True


class POP3Machine:
    def __init__(self, config: MachineConfig):
        self.config = config
        self.state = AUTHORIZATION
        self.tls_active = config.tls_active
        self.maildrop: Maildrop | None = None
        self.username: str | None = None  # the name the session logged in with
        self.stats = SessionStats()
        self._buffer = bytearray()
        self._out: collections.deque = collections.deque()  # bytes and _BodyStream items
        self._pending = None  # the request awaiting its answer
        self._awaiting_tls = False
        self._closed: str | None = None
        self._user: str | None = None  # USER given, PASS awaited (RFC 1939 7)
        self._sasl_mechanism: str | None = None  # AUTH awaiting the client's response (RFC 5034 4)
        self._discarded: int | None = None  # octets of an over-long line thrown away so far
        # RFC 1939 4: the greeting.
        self._out.append(replies.ok(f"{config.hostname} POP3 server ready"))

    # -- public interface -------------------------------------------------------

    @property
    def plaintext_allowed(self) -> bool:
        return self.tls_active or self.config.plaintext_auth_without_tls

    @property
    def output_pending(self) -> bool:
        return bool(self._out)

    @property
    def waiting(self) -> bool:
        """A request or STLS awaits the driver's answer."""
        return self._pending is not None or self._awaiting_tls

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def receive_data(self, data: bytes) -> None:
        if self._closed is None and not self._awaiting_tls:
            self._buffer += data

    def data_to_send(self, limit: int | None = None) -> bytes:
        """Queued output in order; with `limit`, about that many octets at most
        (whole reply lines, message bodies cut anywhere)."""
        parts: list[bytes] = []
        size = 0
        while self._out and (limit is None or size < limit):
            item = self._out[0]
            if isinstance(item, bytes):
                parts.append(item)
                size += len(item)
                self._out.popleft()
                continue
            want = STREAM_CHUNK if limit is None else limit - size
            chunk, finished = item.take(want)
            parts.append(chunk)
            size += len(chunk)
            if finished:
                self._out.popleft()
        return b"".join(parts)

    def next_event(self):
        while True:
            if self._closed is not None:
                return Close(self._closed)
            if self.waiting or self._output_backlog():
                return PAUSED
            line = self._next_line()
            if line is None:
                if self._closed is not None:
                    continue
                return NEED_DATA
            event = self._handle_line(line)
            if event is not None:
                return event

    def close(self, reply: bytes | None, reason: str) -> None:
        """End the session; `reply` is sent unless a message body is half sent
        (RFC 1939 3: an idle server may close without a response)."""
        if self._closed is not None:
            return
        if any(isinstance(item, _BodyStream) for item in self._out):
            self._out.clear()
        elif reply is not None:
            self._out.append(reply)
        self._closed = reason
        self._buffer.clear()

    def login_succeeded(self, maildrop: Maildrop, username: str) -> None:
        """RFC 1939 4: the maildrop is locked and numbered; enter TRANSACTION."""
        self._answered()
        if self._closed is not None:
            return
        self.state = TRANSACTION
        self.maildrop = maildrop
        self.username = username
        count, octets = maildrop.stat()
        self._out.append(replies.ok(f"Logged in, {count} messages ({octets} octets)"))

    def login_failed(self, reply: bytes, credentials_rejected: bool = True) -> None:
        """Stay in AUTHORIZATION; `credentials_rejected` counts toward the per-connection limit."""
        self._answered()
        if self._closed is not None:
            return
        self._out.append(reply)
        if credentials_rejected:
            self.stats.auth_failures += 1
            if self.config.max_auth_failures and self.stats.auth_failures >= self.config.max_auth_failures:
                self.close(None, "too many authentication failures")

    def message_read(self, body: bytes) -> None:
        request = self._answered()
        if self._closed is not None:
            return
        entry = self.maildrop.entries[request.number - 1]
        if request.top_lines is None:
            # RFC 1939 7 RETR: "+OK", then the message, dot-stuffed.
            self._out.append(replies.ok(f"{entry.size} octets"))
            self.stats.retrieved += 1
            self.stats.retrieved_octets += len(body)
        else:
            # RFC 1939 7 TOP: the header, the blank line and n body lines.
            body = top_of_message(body, request.top_lines)
            self._out.append(replies.ok("Top of message follows"))
            self.stats.top += 1
        self._out.append(_BodyStream(body) if body else TERMINATOR)

    def message_failed(self, reply: bytes) -> None:
        self._answered()
        if self._closed is None:
            self._out.append(reply)

    def update_done(self) -> None:
        """RFC 1939 6: the marked messages are gone; say goodbye and close."""
        self._answered()
        self.stats.deleted = len(self.maildrop.deleted)
        if self._closed is None:
            self._out.append(replies.ok(f"Logging out, {self.stats.deleted} messages deleted"))
            self._closed = "quit"

    def update_failed(self) -> None:
        """RFC 1939 6: "-ERR some deleted messages not removed"; close anyway."""
        self._answered()
        if self._closed is None:
            self._out.append(replies.UPDATE_FAILED)
            self._closed = "quit, update failed"

    def tls_started(self) -> None:
        """RFC 2595 4: forget everything learnt before TLS; stay in AUTHORIZATION."""
        self._awaiting_tls = False
        self.tls_active = True
        self._user = None
        self._sasl_mechanism = None
        self._buffer.clear()

    def _output_backlog(self) -> bool:
        """A body is being sent, or replies pile up: let the driver write before parsing more."""
        queued = 0
        for item in self._out:
            if isinstance(item, _BodyStream):
                return True
            queued += len(item)
        return queued >= MAX_QUEUED_REPLIES

    # -- reading lines ------------------------------------------------------------------

    def _answered(self):
        request, self._pending = self._pending, None
        return request

    def _next_line(self) -> bytes | None:
        """The next complete line, or None; over-long lines are answered here."""
        window = MAX_SASL_LINE
        while self._closed is None:
            if self._discarded is not None:
                newline = self._buffer.find(b"\n")
                taken = len(self._buffer) if newline < 0 else newline + 1
                self._discarded += taken
                del self._buffer[:taken]
                if self._discarded > self.config.max_line_length:
                    # Past the absolute cap: stop listening to this client.
                    self.close(replies.LINE_TOO_LONG, "line too long")
                    return None
                if newline < 0:
                    return None
                self._discarded = None
                self._sasl_mechanism = None
                self._bad(replies.LINE_TOO_LONG)
                continue
            newline = self._buffer.find(b"\n", 0, window)
            if newline < 0:
                if len(self._buffer) >= window:
                    self._discarded = 0  # never buffer more than one window of a line
                    continue
                return None
            line = bytes(self._buffer[:newline + 1])
            del self._buffer[:newline + 1]
            return line
        return None

    def _bad(self, reply: bytes) -> None:
        self._out.append(reply)
        self.stats.bad_commands += 1
        if self.config.max_bad_commands and self.stats.bad_commands >= self.config.max_bad_commands:
            self.close(replies.TOO_MANY_BAD, "too many bad commands")

    def _handle_line(self, raw: bytes):
        if self._sasl_mechanism is not None:
            return self._sasl_response(raw)
        try:
            text = decode_line(raw)
            command = parse_command(text)
        except CommandSyntaxError as exc:
            self._bad(replies.err(str(exc)))
            return None
        # RFC 2449 4: 255 octets per command line; only AUTH may carry more (RFC 5034 4).
        if len(raw) > MAX_COMMAND_LINE and command.keyword != "AUTH":
            self._bad(replies.LINE_TOO_LONG)
            return None
        allowed = _AUTHORIZATION_COMMANDS if self.state == AUTHORIZATION else _TRANSACTION_COMMANDS
        if command.keyword not in allowed:
            known = command.keyword in _AUTHORIZATION_COMMANDS | _TRANSACTION_COMMANDS
            self._bad(replies.err("Command not valid in this state" if known else "Unknown command"))
            return None
        handler = getattr(self, "_cmd_" + command.keyword.lower())
        try:
            return handler(command)
        except CommandSyntaxError as exc:
            self._bad(replies.err(str(exc)))
        except NoSuchMessage as exc:
            self._out.append(replies.err(str(exc)))
        return None

    # -- AUTHORIZATION (RFC 1939 4, 7; RFC 2449 5; RFC 2595 4; RFC 5034 4) ---------------------

    def _cmd_capa(self, command: Command):
        # RFC 2449 5: the capabilities valid now, one per line.
        check_arguments(command, 0, 0)
        lines = ["TOP", "UIDL"]
        if self.state == AUTHORIZATION and self.plaintext_allowed:
            lines += ["USER", "SASL " + " ".join(MECHANISMS)]
        lines += ["RESP-CODES", "PIPELINING", "AUTH-RESP-CODE"]
        if self.state == AUTHORIZATION and self.config.stls_available and not self.tls_active:
            lines.append("STLS")
        lines.append("IMPLEMENTATION mailserverd")
        self._multiline("Capability list follows", lines)

    def _cmd_stls(self, command: Command):
        check_arguments(command, 0, 0)
        if self.tls_active:
            self._bad(replies.err("TLS already active"))
            return None
        if not self.config.stls_available:
            self._bad(replies.err("STLS not available"))
            return None
        self._out.append(replies.ok("Begin TLS negotiation"))
        # RFC 2595 4 / CVE-2011-0411: bytes pipelined after STLS are not commands.
        self._buffer.clear()
        self._awaiting_tls = True
        return StartTLS()

    def _cmd_user(self, command: Command):
        check_arguments(command, 1, 1, longest=MAX_COMMAND_LINE)
        if not self.plaintext_allowed:
            self._out.append(replies.PLAINTEXT_REFUSED)
            return None
        # RFC 1939 7: always +OK, so that USER does not tell which users exist.
        self._user = command.args[0]
        self._out.append(replies.ok("Send your password"))
        return None

    def _cmd_pass(self, command: Command):
        if not self.plaintext_allowed:
            self._user = None
            self._out.append(replies.PLAINTEXT_REFUSED)
            return None
        if self._user is None:
            raise CommandSyntaxError("Send USER first")
        # RFC 1939 7: the password is the rest of the line and may contain spaces.
        if not command.rest:
            raise CommandSyntaxError("PASS needs a password")
        username, self._user = self._user, None
        self._pending = Login("USER", username, command.rest)
        return self._pending

    def _cmd_auth(self, command: Command):
        self._user = None
        if not command.args:
            # A bare AUTH lists mechanisms (RFC 1734 clients; RFC 5034 uses CAPA).
            self._multiline("Methods supported", MECHANISMS if self.plaintext_allowed else ())
            return None
        check_arguments(command, 1, 2, longest=MAX_SASL_LINE)
        mechanism = command.args[0].upper()
        if mechanism not in MECHANISMS:
            raise CommandSyntaxError("Unsupported authentication mechanism")
        if not self.plaintext_allowed:
            self._out.append(replies.PLAINTEXT_REFUSED)
            return None
        if len(command.args) == 2:
            return self._sasl_plain(command.args[1].encode("ascii", "replace"))
        # RFC 5034 4: an empty challenge, "+ " alone on its line.
        self._sasl_mechanism = mechanism
        self._out.append(b"+ \r\n")
        return None

    def _sasl_response(self, raw: bytes):
        self._sasl_mechanism = None
        response = raw.rstrip(b"\r\n")
        if response == b"*":
            # RFC 5034 4: "*" cancels; the server must answer -ERR.
            self._out.append(replies.err("Authentication cancelled"))
            return None
        return self._sasl_plain(response)

    def _sasl_plain(self, response: bytes):
        try:
            authzid, authcid, password = sasl.decode_plain(sasl.b64decode(response))
        except sasl.SASLError:
            # RFC 5034 4: a response that cannot be decoded gets -ERR.
            self._bad(replies.err("Invalid SASL PLAIN response"))
            return None
        self._pending = Login("PLAIN", authcid, password, authzid)
        return self._pending

    def _cmd_quit(self, command: Command):
        check_arguments(command, 0, 0)
        if self.state == AUTHORIZATION:
            # RFC 1939 4: QUIT before login ends the session, nothing changes.
            self._out.append(replies.ok("Logging out"))
            self._closed = "quit"
            return None
        # RFC 1939 6: QUIT in TRANSACTION enters UPDATE.
        self.state = UPDATE
        uids = self.maildrop.deleted_uids()
        if not uids:
            self._out.append(replies.ok("Logging out"))
            self._closed = "quit"
            return None
        self._pending = Update(uids)
        return self._pending

    # -- TRANSACTION (RFC 1939 5, 7; RFC 2449 6) -------------------------------------------

    def _cmd_stat(self, command: Command):
        check_arguments(command, 0, 0)
        count, octets = self.maildrop.stat()
        self._out.append(replies.ok(f"{count} {octets}"))  # RFC 1939 5: exactly "nn mm"

    def _cmd_list(self, command: Command):
        check_arguments(command, 0, 1)
        if command.args:
            entry = self.maildrop.get(parse_message_number(command.args[0]))
            self._out.append(replies.ok(f"{entry.number} {entry.size}"))
            return
        count, octets = self.maildrop.stat()
        self._multiline(f"{count} messages ({octets} octets)",
                        [f"{entry.number} {entry.size}" for entry in self.maildrop.live()])

    def _cmd_uidl(self, command: Command):
        check_arguments(command, 0, 1)
        if command.args:
            entry = self.maildrop.get(parse_message_number(command.args[0]))
            self._out.append(replies.ok(f"{entry.number} {entry.unique_id}"))
            return
        self._multiline("Unique-ID listing follows",
                        [f"{entry.number} {entry.unique_id}" for entry in self.maildrop.live()])

    def _cmd_retr(self, command: Command):
        check_arguments(command, 1, 1)
        entry = self.maildrop.get(parse_message_number(command.args[0]))
        self._pending = Retrieve(entry.number, entry.message_id)
        return self._pending

    def _cmd_top(self, command: Command):
        check_arguments(command, 2, 2)
        number = parse_message_number(command.args[0])
        lines = parse_number(command.args[1], 0)  # RFC 1939 7: non-negative
        entry = self.maildrop.get(number)
        self._pending = Retrieve(entry.number, entry.message_id, lines)
        return self._pending

    def _cmd_dele(self, command: Command):
        check_arguments(command, 1, 1)
        number = parse_message_number(command.args[0])
        self.maildrop.delete(number)  # RFC 1939 5: only marked; UPDATE removes it
        self._out.append(replies.ok(f"Message {number} deleted"))

    def _cmd_noop(self, command: Command):
        check_arguments(command, 0, 0)
        self._out.append(replies.ok())

    def _cmd_rset(self, command: Command):
        check_arguments(command, 0, 0)
        self.maildrop.reset()
        count, octets = self.maildrop.stat()
        self._out.append(replies.ok(f"Maildrop has {count} messages ({octets} octets)"))

    def _multiline(self, first: str, lines) -> None:
        # RFC 1939 3: these lines never begin with ".", so no stuffing is needed.
        body = "".join(f"{line}\r\n" for line in lines).encode("utf-8")
        self._out.append(replies.ok(first) + body + TERMINATOR)
