"""The ESMTP server state machine (RFC 5321), free of I/O, in the style of h11.

    machine.receive_data(bytes)       bytes from the client
    machine.next_event()              NEED_DATA, PAUSED or an event (events.py)
    machine.data_to_send()            reply bytes to write, in order
    machine.respond(reply, account=)  the answer to the pending request
    machine.tls_started()             after StartTLS: TLS is on, all state forgotten

Commands are handled strictly in order (RFC 2920 PIPELINING): while a
request waits for its answer nothing further is parsed, so pipelined commands
are answered in order and a message body can never be read as commands.
"""

from __future__ import annotations

import dataclasses
import re

from ..auth import sasl
from . import replies
from .data import ChunkReader, DataReader, check_chunked_body
from .events import (NEED_DATA, PAUSED, AuthAttempt, Close, Connected, MachineConfig, MailFrom,
                     MessageReceived, MessageRefused, RcptTo, StartTLS)
from .replies import Reply
from .syntax import (CommandError, MailParams, Path, mail_params, parse_helo_name, parse_params,
                     parse_path, rcpt_params, split_path_and_params)

MAX_COMMAND_LINE = 512  # RFC 5321 4.5.3.1.4, including CRLF
MAX_AUTH_LINE = 12288  # RFC 4954 4: AUTH command and SASL response lines
# Cross-protocol requests (HTTP verbs) end the session at once (Postfix smtpd_forbidden_commands).
_HTTP_VERB = re.compile(rb"(?:GET|POST|CONNECT|HEAD|PUT|OPTIONS|DELETE) ")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BDAT_ARGS = re.compile(r"(\d{1,20})(?: +(LAST))? *", re.I)
_UNIMPLEMENTED = frozenset({"TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML", "BURL"})


@dataclasses.dataclass
class _Transaction:
    sender: Path | None
    params: MailParams
    recipients: int = 0
    chunks: list = dataclasses.field(default_factory=list)  # BDAT data so far
    chunked_size: int = 0


class SMTPMachine:
    def __init__(self, config: MachineConfig):
        self.config = config
        self.tls_active = config.tls_active
        self.helo_name: str | None = None
        self.esmtp = False
        self.authenticated = None  # the Account given with a 235 answer
        self.bad_commands = 0
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._greeted = False
        self._refused = False  # a 554 greeting: only QUIT is served (RFC 5321 3.1)
        self._closed: str | None = None
        self._pending = None  # the request awaiting respond()
        self._awaiting_tls = False
        self._transaction: _Transaction | None = None
        self._data_reader: DataReader | None = None
        self._chunk: ChunkReader | None = None
        self._chunk_last = False
        self._chunk_error: Reply | None = None
        self._sasl: tuple | None = None  # (mechanism, username so far) during an AUTH exchange
        self._discarding_line = False

    # -- public interface -------------------------------------------------

    @property
    def transaction_open(self) -> bool:
        return self._transaction is not None

    @property
    def auth_available(self) -> bool:
        return bool(self.config.auth_mechanisms) and (
            self.tls_active or self.config.plaintext_auth_without_tls)

    def receive_data(self, data: bytes) -> None:
        if self._closed is None:
            self._buffer += data

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def greeting(self) -> Reply:
        # RFC 5321 4.2 / RFC 2034 3: the greeting carries no enhanced status code.
        return Reply(220, "", f"{self.config.hostname} ESMTP mailserverd")

    def close(self, reply: Reply | None, reason: str) -> None:
        """Queue a last reply (e.g. 421 on timeout) and end the session."""
        if self._closed is None:
            if reply is not None:
                self._out.append(reply.render())
            self._closed = reason
            self._buffer.clear()

    def respond(self, reply: Reply, account=None) -> None:
        """Answer the pending request (MailFrom, RcptTo, MessageReceived, AuthAttempt, Connected)."""
        request, self._pending = self._pending, None
        if self._closed is not None:
            return  # the session ended (timeout, disconnect) while the answer was computed
        if request is None:
            raise RuntimeError("respond() without a pending request")
        if isinstance(request, Connected):
            self._greeted = True
            self._refused = reply.code == 554
        elif isinstance(request, MailFrom):
            if reply.positive:
                self._transaction = _Transaction(request.sender, request.params)
        elif isinstance(request, RcptTo):
            if reply.positive and self._transaction is not None:
                self._transaction.recipients += 1
        elif isinstance(request, MessageReceived):
            self._transaction = None  # RFC 5321 4.1.1.4: the transaction ends either way
        elif isinstance(request, AuthAttempt):
            if reply.positive:
                self.authenticated = account
        self._reply(reply)

    def tls_started(self) -> None:
        """RFC 3207 4.2: forget everything learnt before TLS (EHLO, MAIL, RCPT, AUTH)."""
        self._awaiting_tls = False
        self.tls_active = True
        self.helo_name = None
        self.esmtp = False
        self.authenticated = None
        self._transaction = None
        self._buffer.clear()

    def next_event(self):
        while True:
            if self._closed is not None:
                return Close(self._closed)
            if self._pending is not None or self._awaiting_tls:
                return PAUSED
            if not self._greeted:
                return self._request(Connected())
            if self._data_reader is not None:
                event = self._continue_data()
            elif self._chunk is not None:
                event = self._continue_chunk()
            else:
                line = self._next_line()
                if line is None:
                    return NEED_DATA
                event = self._handle_line(line)
            if event is NEED_DATA:
                return NEED_DATA
            if event is not None:
                return event

    # -- replies and bookkeeping -------------------------------------------

    def _request(self, event):
        self._pending = event
        return event

    def _reply(self, reply: Reply) -> None:
        self._out.append(reply.render())
        if reply.code == 421:  # RFC 5321 3.8: 421 means the server is closing the channel
            self._closed = "421"
            self._buffer.clear()
            return
        if 500 <= reply.code < 600:
            self.bad_commands += 1
            limit = self.config.max_bad_commands
            if limit and self.bad_commands >= limit:
                self.close(replies.TOO_MANY_ERRORS, "too many errors")

    def _reset_transaction(self) -> None:
        self._transaction = None

    # -- input framing ---------------------------------------------------

    def _next_line(self) -> bytes | None:
        """One line without its CRLF (a bare LF ends a command line too), or None."""
        end = self._buffer.find(b"\n")
        if self._discarding_line:
            if end < 0:
                self._buffer.clear()
                return None
            del self._buffer[:end + 1]
            self._discarding_line = False
            self._sasl = None  # an over-long SASL response ends the exchange too
            self._reply(replies.LINE_TOO_LONG)
            return self._next_line() if self._closed is None else None
        if end < 0:
            if len(self._buffer) > MAX_AUTH_LINE:  # never buffer an endless line
                self._buffer.clear()
                self._discarding_line = True
            return None
        line = bytes(self._buffer[:end + 1])
        del self._buffer[:end + 1]
        return line

    def _handle_line(self, raw: bytes):
        limit = MAX_AUTH_LINE if self._sasl is not None or raw[:5].upper() == b"AUTH " else MAX_COMMAND_LINE
        if len(raw) > limit:
            self._sasl = None
            return self._reply(replies.LINE_TOO_LONG)
        if _HTTP_VERB.match(raw):
            self.close(replies.HTTP_REFUSED, "HTTP request")
            return None
        line = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is None or _CONTROL.search(text):
            if self._sasl is not None:
                self._sasl = None
                return self._reply(replies.AUTH_BAD_DATA)
            return self._reply(replies.BAD_CHARACTERS)
        if self._sasl is not None:
            return self._sasl_response(text)
        verb, _, argument = text.partition(" ")
        verb = verb.upper()
        argument = argument.strip(" ")
        if self._refused and verb != "QUIT":
            return self._reply(Reply(503, "5.5.1", "Service refused; send QUIT"))
        handler = _COMMANDS.get(verb)
        if handler is None:
            reply = replies.NOT_IMPLEMENTED if verb in _UNIMPLEMENTED else replies.UNKNOWN_COMMAND
            return self._reply(reply)
        try:
            return handler(self, argument)
        except CommandError as exc:
            return self._reply(exc.reply)

    # -- commands (RFC 5321 4.1.1) ------------------------------------------

    def _helo(self, argument: str, extended: bool):
        name = parse_helo_name(argument)
        self._reset_transaction()  # RFC 5321 4.1.4: HELO/EHLO reset the state like RSET
        self.helo_name = name
        self.esmtp = extended
        host = self.config.hostname
        if not extended:
            return self._reply(Reply(250, "", host))
        # DSN (RFC 3461) is not advertised until the outbound queue can send the
        # notifications it promises; its parameters are still parsed and kept.
        lines = [host, "PIPELINING", f"SIZE {self.config.limits.max_message_size}", "8BITMIME",
                 "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING"]
        if self.config.starttls and not self.tls_active:
            lines.append("STARTTLS")
        if self.auth_available:
            lines.append("AUTH " + " ".join(self.config.auth_mechanisms))
        return self._reply(Reply(250, "", tuple(lines)))  # RFC 2034 3: no code on EHLO lines

    def cmd_helo(self, argument: str):  # RFC 5321 4.1.1.1
        return self._helo(argument, extended=False)

    def cmd_ehlo(self, argument: str):  # RFC 5321 4.1.1.1
        return self._helo(argument, extended=True)

    def cmd_mail(self, argument: str):  # RFC 5321 4.1.1.2
        if self.helo_name is None:
            return self._reply(replies.NEED_HELO)
        if self.config.require_auth and self.authenticated is None:
            return self._reply(replies.AUTH_REQUIRED)
        if self._transaction is not None:
            return self._reply(replies.NESTED_MAIL)
        if argument[:5].upper() != "FROM:":
            raise CommandError(replies.SYNTAX_ERROR_ARGS)
        path_text, params_text = split_path_and_params(argument[5:].lstrip(" "))
        raw_params = parse_params(params_text)
        if raw_params and not self.esmtp:
            raise CommandError(replies.PARAMS_NEED_EHLO)
        params = mail_params(raw_params)
        if path_text == "<>":
            sender = None  # RFC 5321 4.5.5: the null reverse-path
        else:
            sender = self._path(path_text, params.smtputf8, replies.SYNTAX_ERROR_ADDRESS)
        if params.size is not None and params.size > self.config.limits.max_message_size:
            return self._reply(replies.MESSAGE_TOO_BIG)  # RFC 1870 6.1
        return self._request(MailFrom(sender, params))

    def cmd_rcpt(self, argument: str):  # RFC 5321 4.1.1.3
        if self._transaction is None:
            return self._reply(replies.NEED_MAIL)
        if argument[:3].upper() != "TO:":
            raise CommandError(replies.SYNTAX_ERROR_ARGS)
        path_text, params_text = split_path_and_params(argument[3:].lstrip(" "))
        raw_params = parse_params(params_text)
        if raw_params and not self.esmtp:
            raise CommandError(replies.PARAMS_NEED_EHLO)
        params = rcpt_params(raw_params)
        if path_text.lower() == "<postmaster>":  # RFC 5321 4.1.1.3: must be accepted
            recipient = Path(local="postmaster", domain="")
        else:
            recipient = self._path(path_text, self._transaction.params.smtputf8,
                                   replies.SYNTAX_ERROR_RCPT, allow_at_in_local=True)
        if self._transaction.recipients >= self.config.max_recipients:
            return self._reply(replies.TOO_MANY_RECIPIENTS)  # RFC 5321 4.5.3.1.10
        return self._request(RcptTo(recipient, params))

    @staticmethod
    def _path(text: str, utf8: bool, syntax_reply: Reply, allow_at_in_local: bool = False) -> Path:
        try:
            return parse_path(text, utf8=utf8, allow_at_in_local=allow_at_in_local)
        except ValueError:
            if not utf8 and not text.isascii():
                try:
                    parse_path(text, utf8=True, allow_at_in_local=allow_at_in_local)
                except ValueError:
                    pass
                else:
                    raise CommandError(replies.NEED_SMTPUTF8) from None
            raise CommandError(syntax_reply) from None

    def cmd_data(self, argument: str):  # RFC 5321 4.1.1.4
        if argument:
            raise CommandError(replies.SYNTAX_ERROR_ARGS)
        if self._transaction is None:
            return self._reply(replies.NEED_MAIL)
        if self._transaction.chunks or self._transaction.chunked_size:
            return self._reply(replies.DATA_AFTER_BDAT)  # RFC 3030 3
        if not self._transaction.recipients:
            return self._reply(replies.NO_VALID_RECIPIENTS)  # RFC 5321 3.3
        self._data_reader = DataReader(self.config.limits)
        return self._reply(replies.START_DATA)

    def _continue_data(self):
        reader = self._data_reader
        consumed = reader.feed(bytes(self._buffer))
        del self._buffer[:consumed]
        if not reader.done:
            return NEED_DATA
        self._data_reader = None
        if reader.error is not None:
            self._reset_transaction()
            self._reply(reader.error)
            return MessageRefused(reader.error)
        return self._request(MessageReceived(reader.body, chunked=False))

    def cmd_bdat(self, argument: str):  # RFC 3030 2
        match = _BDAT_ARGS.fullmatch(argument)
        if not match:
            # Without a size the chunk cannot be skipped: close rather than read data as commands.
            self.close(Reply(501, "5.5.4", "Syntax error in BDAT; closing connection"), "BDAT syntax")
            return None
        size = int(match.group(1))
        self._chunk_last = match.group(2) is not None
        transaction = self._transaction
        self._chunk_error = None
        if transaction is None:
            self._chunk_error = replies.NEED_MAIL
        elif not transaction.recipients:
            self._chunk_error = replies.NO_VALID_RECIPIENTS
        room = 0 if transaction is None else self.config.limits.max_message_size - transaction.chunked_size
        self._chunk = ChunkReader(size, max(room, 0))
        return self._continue_chunk()

    def _continue_chunk(self):
        chunk = self._chunk
        consumed = chunk.feed(bytes(self._buffer[:chunk.remaining]))
        del self._buffer[:consumed]
        if not chunk.done:
            return NEED_DATA
        self._chunk = None
        error = self._chunk_error or (replies.MESSAGE_TOO_BIG if chunk.overflowed else None)
        if error is not None:
            self._reset_transaction()  # RFC 3030 2: a failed chunk fails the transaction
            self._reply(error)
            return MessageRefused(error) if error is replies.MESSAGE_TOO_BIG else None
        transaction = self._transaction
        transaction.chunks.append(chunk.data)
        transaction.chunked_size += len(chunk.data)
        if not self._chunk_last:
            return self._reply(Reply(250, "2.0.0", f"{len(chunk.data)} octets received"))
        body = b"".join(transaction.chunks)
        transaction.chunks = []
        problem = check_chunked_body(body, self.config.limits)
        if problem is not None:
            self._reset_transaction()
            self._reply(problem)
            return MessageRefused(problem)
        return self._request(MessageReceived(body, chunked=True))

    def cmd_rset(self, argument: str):  # RFC 5321 4.1.1.5
        if argument:
            raise CommandError(replies.SYNTAX_ERROR_ARGS)
        self._reset_transaction()
        return self._reply(replies.OK)

    def cmd_noop(self, argument: str):  # RFC 5321 4.1.1.9: the argument is ignored
        return self._reply(replies.OK)

    def cmd_quit(self, argument: str):  # RFC 5321 4.1.1.10
        self.close(replies.BYE, "QUIT")

    def cmd_vrfy(self, argument: str):  # RFC 5321 3.5.3: 252 reveals nothing
        if not argument:
            raise CommandError(replies.SYNTAX_ERROR_ARGS)
        return self._reply(replies.VRFY_NOTHING)

    def cmd_expn(self, argument: str):  # RFC 5321 3.5.2: mailing lists are never listed
        return self._reply(replies.EXPN_DISABLED)

    def cmd_help(self, argument: str):  # RFC 5321 4.1.1.8
        return self._reply(replies.HELP)

    def cmd_starttls(self, argument: str):  # RFC 3207 4
        if argument:
            raise CommandError(replies.SYNTAX_ERROR_ARGS)
        if self.tls_active:
            return self._reply(replies.TLS_ALREADY_ACTIVE)
        if not self.config.starttls:
            return self._reply(replies.TLS_NOT_AVAILABLE)
        self._reply(replies.READY_TLS)
        # RFC 3207 4.2 / CVE-2011-0411: anything pipelined after STARTTLS is discarded.
        self._buffer.clear()
        self._awaiting_tls = True
        return StartTLS()

    # -- AUTH (RFC 4954) -------------------------------------------------------

    def cmd_auth(self, argument: str):
        if not self.config.auth_mechanisms:
            return self._reply(replies.AUTH_NOT_OFFERED)
        if not argument:
            raise CommandError(replies.SYNTAX_ERROR_ARGS)
        if self.helo_name is None:
            return self._reply(replies.NEED_HELO)
        if self.authenticated is not None:
            return self._reply(replies.ALREADY_AUTHENTICATED)  # RFC 4954 4
        if self._transaction is not None:
            return self._reply(Reply(503, "5.5.1", "AUTH not allowed during a mail transaction"))
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        if mechanism not in self.config.auth_mechanisms:
            return self._reply(replies.AUTH_MECH_UNKNOWN)
        if not self.auth_available:
            return self._reply(replies.AUTH_NEEDS_TLS)  # RFC 4954 6
        initial = initial.strip(" ")
        if mechanism == "PLAIN":
            if not initial:
                self._sasl = ("PLAIN", None)
                return self._reply(Reply(334, "", ""))
            return self._plain(initial)
        # LOGIN: an initial response carries the user name.
        if not initial:
            self._sasl = ("LOGIN", None)
            return self._reply(Reply(334, "", sasl.LOGIN_USER_CHALLENGE.decode()))
        return self._login_user(initial)

    def _sasl_response(self, text: str):
        mechanism, username = self._sasl
        self._sasl = None
        if text == "*":  # RFC 4954 4: the client cancels
            return self._reply(replies.AUTH_CANCELLED)
        if mechanism == "PLAIN":
            return self._plain(text)
        if username is None:
            return self._login_user(text)
        try:
            password = sasl.decode_login_field(text.encode("ascii", "replace"))
        except sasl.SASLError:
            return self._reply(replies.AUTH_BAD_DATA)
        return self._request(AuthAttempt("LOGIN", username, password))

    def _plain(self, response: str):
        try:
            authzid, username, password = sasl.decode_plain(sasl.b64decode(response))
        except sasl.SASLError:
            return self._reply(replies.AUTH_BAD_DATA)
        if authzid and authzid.lower() != username.lower():
            return self._reply(replies.AUTH_FAILED)  # acting for another user is not offered
        return self._request(AuthAttempt("PLAIN", username, password))

    def _login_user(self, response: str):
        try:
            username = sasl.decode_login_field(response.encode("ascii", "replace"))
        except sasl.SASLError:
            return self._reply(replies.AUTH_BAD_DATA)
        self._sasl = ("LOGIN", username)
        return self._reply(Reply(334, "", sasl.LOGIN_PASS_CHALLENGE.decode()))


_COMMANDS = {
    name[4:].upper(): function
    for name, function in vars(SMTPMachine).items() if name.startswith("cmd_")
}
