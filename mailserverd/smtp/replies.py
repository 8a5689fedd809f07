"""SMTP replies: a code, an RFC 3463 enhanced status code and text, rendered to bytes.

RFC 2034 3 puts the enhanced code on every reply except the greeting, the
replies to HELO/EHLO and SASL challenges (334), whose text has its own syntax.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str  # "" for the RFC 2034 exceptions
    text: str | tuple[str, ...]  # a tuple renders as a multiline reply (RFC 5321 4.2.1)

    @property
    def lines(self) -> tuple[str, ...]:
        return (self.text,) if isinstance(self.text, str) else self.text

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def render(self) -> bytes:
        """RFC 5321 4.2.1: "code-text" on every line but the last, "code text" on the last."""
        lines = self.lines or ("",)
        out = []
        for index, line in enumerate(lines):
            separator = " " if index == len(lines) - 1 else "-"
            # One line per element: a CR or LF inside text would forge a reply line.
            line = line.replace("\r", " ").replace("\n", " ")
            prefix = f"{self.enhanced} " if self.enhanced else ""
            out.append(f"{self.code}{separator}{prefix}{line}\r\n")  # "334 " keeps its space
        return "".join(out).encode("utf-8")

    def __str__(self) -> str:  # for logs
        return f"{self.code} {self.enhanced} {' / '.join(self.lines)}".replace("  ", " ")


# Replies the state machine gives by itself. Texts are short and generic (STYLE.md 7).
OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
QUEUED = Reply(250, "2.0.0", "OK: message accepted")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")  # RFC 2034: 354 has no code space
BYE = Reply(221, "2.0.0", "Bye")
HELP = Reply(214, "2.0.0", "See RFC 5321 and https://www.rfc-editor.org/")
VRFY_NOTHING = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
EXPN_DISABLED = Reply(502, "5.5.1", "EXPN is not available")
READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
AUTH_BAD_DATA = Reply(501, "5.5.2", "Cannot decode the SASL response")
AUTH_TEMPFAIL = Reply(454, "4.7.0", "Temporary authentication failure")
AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
AUTH_NOT_OFFERED = Reply(503, "5.5.1", "AUTH is not available here")
AUTH_MECH_UNKNOWN = Reply(504, "5.5.4", "Unrecognized authentication mechanism")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")

UNKNOWN_COMMAND = Reply(500, "5.5.2", "Command not recognized")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
BAD_CHARACTERS = Reply(500, "5.5.2", "Invalid characters in command")
SYNTAX_ERROR_ARGS = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
SYNTAX_ERROR_ADDRESS = Reply(501, "5.1.7", "Bad address syntax")  # RFC 3463 5.1.7 for senders
SYNTAX_ERROR_RCPT = Reply(501, "5.1.3", "Bad recipient address syntax")
NEED_HELO = Reply(503, "5.5.1", "Send HELO/EHLO first")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
DATA_AFTER_BDAT = Reply(503, "5.5.1", "DATA cannot follow BDAT in one transaction")
BDAT_AFTER_FAILURE = Reply(503, "5.5.1", "Transaction failed; start again with MAIL")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
PARAM_UNKNOWN = Reply(555, "5.5.4", "MAIL/RCPT parameter not recognized or not implemented")
PARAM_DUPLICATE = Reply(501, "5.5.4", "Duplicate MAIL/RCPT parameter")
PARAMS_NEED_EHLO = Reply(555, "5.5.4", "Parameters need EHLO")
NEED_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address needs SMTPUTF8")  # RFC 6531 3.5
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
HEADER_TOO_BIG = Reply(552, "5.3.4", "Message header size exceeds limit")
DATA_LINE_TOO_LONG = Reply(552, "5.3.4", "Message line too long")
BARE_NEWLINE = Reply(550, "5.5.2", "Bare <CR> or <LF> in message; use <CR><LF> line endings")
TLS_NOT_AVAILABLE = Reply(502, "5.5.1", "STARTTLS not available")
TLS_ALREADY_ACTIVE = Reply(503, "5.5.1", "TLS already active")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors; closing connection")
HTTP_REFUSED = Reply(221, "2.7.0", "This is an SMTP server, not HTTP; goodbye")
TIMEOUT = Reply(421, "4.4.2", "Idle timeout; closing connection")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections from your address; try later")
RATE_LIMITED = Reply(450, "4.7.1", "Message rate limit exceeded; try later")
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
UNKNOWN_USER = Reply(550, "5.1.1", "No such user here")
SENDER_NOT_OWNED = Reply(550, "5.7.1", "Sender address not owned by the authenticated user")
FROM_NOT_OWNED = Reply(550, "5.7.1", "From: header address not owned by the authenticated user")
REMOTE_NOT_AVAILABLE = Reply(451, "4.3.2", "remote delivery is not available yet")
# A remote recipient that hard-bounced within [outbound] suppress_for (RFC 3463 3.2 5.1.1).
RECIPIENT_SUPPRESSED = Reply(550, "5.1.1", "Recipient address bounced recently; not sending to it")
STORE_FAILED = Reply(451, "4.3.0", "Temporary storage failure; try again later")
MAILBOX_FULL = Reply(452, "4.2.2", "Mailbox full")
MESSAGE_TOO_COMPLEX = Reply(554, "5.6.0", "Message structure exceeds safety limits")
TOO_MANY_HOPS = Reply(554, "5.4.6", "Too many hops (mail loop?)")
FORWARDING_LOOP = Reply(554, "5.4.6", "Mail forwarding loop")  # RFC 3463 3.5: routing loop detected
CHECK_TEMPFAIL = Reply(451, "4.7.0", "Temporary failure in message checks; try again later")
