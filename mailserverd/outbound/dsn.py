"""Delivery Status Notifications: the RFC 3464 report we send back to a sender.

`build_dsn(...)` renders one multipart/report (RFC 6522) with
report-type=delivery-status: a human-readable text part, the
machine-readable message/delivery-status part (one per-message block, one
block per recipient), and the returned original: the whole message for
RET=FULL (message/rfc822), its header block otherwise (text/rfc822-headers,
RFC 3461 4.3). Addresses, envelope id or diagnostics that are not ASCII
turn the report into its internationalized form (RFC 6533:
message/global-delivery-status, message/global, message/global-headers).
Line ends are CRLF throughout; every line stays under 998 octets.

`should_notify(notify, status)` applies RFC 3461 4.1 NOTIFY to one outcome.
"""

from __future__ import annotations

import datetime
import email.utils
import re
import secrets

MAX_RETURNED_MESSAGE = 1024 * 1024  # RET=FULL above this returns the headers only
MAX_RETURNED_HEADERS = 256 * 1024  # header octets returned at most (cut at a line end)
MAX_FIELD_TEXT = 1000  # characters of one diagnostic kept
MAX_ADDRESS = 512
FOLD_AT = 76
MAX_WORD = 900  # characters of one unbroken word on a line (998 is the limit)

SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "relayed": "Successful Mail Delivery Report",
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")  # C0, DEL, C1 and Unicode line breaks
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


# -- RFC 3461 4.1 ----------------------------------------------------------------------------

def should_notify(notify: str | None, status: str) -> bool:
    """Does NOTIFY (None, "NEVER" or a comma list of SUCCESS, FAILURE, DELAY) ask to hear of
    this outcome ("failed", "delivered", "deferred"/"delayed")?

    RFC 3461 4.1: without NOTIFY the MTA behaves as if NOTIFY=FAILURE (DELAY is optional
    and we do not send it unasked); NEVER suppresses every DSN.
    """
    if notify is None or not notify.strip():
        wanted = {"FAILURE"}
    else:
        wanted = {item.strip().upper() for item in notify.split(",")}
    if "NEVER" in wanted:
        return False
    keyword = {"failed": "FAILURE", "delivered": "SUCCESS", "deferred": "DELAY", "delayed": "DELAY"}.get(status)
    return keyword is not None and keyword in wanted


# -- RFC 3464 ------------------------------------------------------------------------------------

def action_for(status: str) -> str:
    """RFC 3464 2.3.3 Action for one result. Outbound mail that was accepted went to another
    MTA, not into a mailbox: that is "relayed" (RFC 3461 5.2.2.3), not "delivered"."""
    return {"failed": "failed", "deferred": "delayed", "delivered": "relayed"}.get(status, "failed")


def status_for(result) -> str:
    """RFC 3464 2.3.4 Status: the enhanced code, else one derived from the reply's class
    (RFC 3463 3.1), else what the action implies."""
    if re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", result.enhanced or ""):
        return result.enhanced
    if 200 <= result.code <= 599:
        return f"{result.code // 100}.0.0"
    return {"failed": "5.0.0", "deferred": "4.0.0", "delivered": "2.0.0"}.get(result.status, "5.0.0")


def build_dsn(*, reporting_mta: str, original: bytes, sender: str, results: list, queued_at: float,
              now: float, ret: str | None, envid: str | None, orcpts: dict[str, str],
              delayed: bool = False) -> bytes:
    """The DSN to `sender` about `results` (RecipientResult) of the message `original`.

    queued_at / now: unix seconds of arrival and of the last attempt. ret: RET ("FULL" or
    "HDRS"; None = headers). envid: ENVID, decoded. orcpts: recipient -> "addr-type;address"
    (ORCPT, decoded). delayed: a delay report (results deferred, still being retried).
    """
    if not sender:
        raise ValueError("a DSN is never sent to the null reverse-path (RFC 3464 2)")
    if not results:
        raise ValueError("a DSN reports on at least one recipient")
    original = _crlf(original)
    actions = {action_for(result.status) for result in results}
    kind = "failed" if "failed" in actions else "delayed" if (delayed or "delayed" in actions) else "relayed"
    status_text, is_global = _status_fields(reporting_mta, results, queued_at, now, envid, orcpts)
    returned = _returned_part(original, ret)
    human = _human_text(reporting_mta, results, queued_at, kind, returned.note)
    boundary = _boundary(original)
    date = _date(now)
    message_id = f"<{secrets.token_hex(12)}.{int(now)}@{_clean(reporting_mta, 255)}>"
    headers = [
        f"From: \"Mail Delivery System\" <MAILER-DAEMON@{_clean(reporting_mta, 255)}>",
        f"To: <{_clean(sender, MAX_ADDRESS)}>",
        f"Subject: {SUBJECTS[kind]}",
        f"Date: {date}",
        f"Message-ID: {message_id}",
        "Auto-Submitted: auto-replied",  # RFC 3834 5
        "MIME-Version: 1.0",
        f"Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"",
    ]
    references = _original_message_id(original)
    if references:
        headers += [f"In-Reply-To: {references}", f"References: {references}"]
    human_bytes = human.encode("utf-8")
    human_ascii = not _NON_ASCII.search(human)
    status_type = "message/global-delivery-status" if is_global else "message/delivery-status"  # RFC 6533 6.1
    parts = [
        (f"Content-Type: text/plain; charset={'us-ascii' if human_ascii else 'utf-8'}\r\n"
         "Content-Description: Notification\r\n"
         f"Content-Transfer-Encoding: {'7bit' if human_ascii else '8bit'}\r\n").encode("ascii") + b"\r\n"
        + human_bytes,
        (f"Content-Type: {status_type}\r\nContent-Description: Delivery report\r\n"
         f"Content-Transfer-Encoding: {'8bit' if is_global else '7bit'}\r\n\r\n").encode("ascii")
        + status_text.encode("utf-8"),
        returned.headers + b"\r\n" + returned.content,
    ]
    out = ["\r\n".join(headers).encode("utf-8"), b"\r\n\r\n",
           b"This is a MIME-encapsulated message: a delivery status report (RFC 3464).\r\n"]
    for part in parts:
        out += [b"\r\n--", boundary.encode("ascii"), b"\r\n", part]
        if not part.endswith(b"\r\n"):
            out.append(b"\r\n")
    out += [b"\r\n--", boundary.encode("ascii"), b"--\r\n"]
    return b"".join(out)


def _status_fields(reporting_mta, results, queued_at, now, envid, orcpts) -> tuple[str, bool]:
    """The message/delivery-status body (RFC 3464 2.1): per-message fields, then one block per
    recipient, blocks separated by an empty line; and whether it needs RFC 6533 (UTF-8)."""
    per_message = [f"Reporting-MTA: dns; {_clean(reporting_mta, 255)}"]  # RFC 3464 2.2.2
    values = [reporting_mta]
    envid = _clean(envid or "", 100)
    if envid:
        per_message.insert(0, _field("Original-Envelope-Id", envid))  # RFC 3464 2.2.1
        values.append(envid)
    per_message.append(f"Arrival-Date: {_date(queued_at)}")  # RFC 3464 2.2.5
    blocks = ["".join(line + "\r\n" for line in per_message)]
    for result in results:
        lines = []
        orcpt = orcpts.get(result.recipient)
        if orcpt:  # RFC 3464 2.3.1, the address type as ORCPT gave it (RFC 3461 4.2)
            addr_type, _, address = orcpt.partition(";")
            if not address:
                addr_type, address = "rfc822", addr_type
            lines.append(_field("Original-Recipient", f"{_address_type(addr_type, address)};"
                                f"{_clean(address, MAX_ADDRESS)}"))
            values.append(address)
        recipient = result.recipient
        values += [recipient, result.text or ""]
        lines.append(_field("Final-Recipient", f"{_address_type('rfc822', recipient)};"  # RFC 3464 2.3.2
                            f"{_clean(recipient, MAX_ADDRESS)}"))
        lines.append(f"Action: {action_for(result.status)}")  # RFC 3464 2.3.3
        lines.append(f"Status: {status_for(result)}")  # RFC 3464 2.3.4
        if result.remote_host:  # RFC 3464 2.3.5
            lines.append(_field("Remote-MTA", f"dns; {_clean(result.remote_host, 255)}"))
        if result.code:  # RFC 3464 2.3.6: the remote's (or our routing's) SMTP reply
            diagnosis = " ".join(item for item in (str(result.code), result.enhanced or "",
                                                   _clean(result.text or "", MAX_FIELD_TEXT)) if item)
            lines.append(_field("Diagnostic-Code", f"smtp; {diagnosis}"))
        elif result.text:  # no reply at all (connection, DNS): our own diagnosis
            lines.append(_field("Diagnostic-Code", f"X-mailserverd; {_clean(result.text, MAX_FIELD_TEXT)}"))
        lines.append(f"Last-Attempt-Date: {_date(now)}")  # RFC 3464 2.3.7
        blocks.append("".join(line + "\r\n" for line in lines))
    is_global = any(_NON_ASCII.search(value or "") for value in values)
    return "\r\n".join(blocks), is_global


def _address_type(declared: str, address: str) -> str:
    """rfc822 for ASCII addresses; RFC 6533 3 "utf-8" for internationalized ones."""
    if _NON_ASCII.search(address):
        return "utf-8"
    declared = _clean(declared, 32).strip()
    return declared if re.fullmatch(r"[A-Za-z0-9-]+", declared) else "rfc822"


class _Returned:
    def __init__(self, headers: bytes, content: bytes, note: str):
        self.headers, self.content, self.note = headers, content, note


def _returned_part(original: bytes, ret: str | None) -> _Returned:
    """The original as RET asks (RFC 3461 4.3): whole for FULL (within MAX_RETURNED_MESSAGE),
    else its header block (RFC 6522 4 text/rfc822-headers)."""
    head = _header_block(original)
    eight_bit_head = bool(re.search(rb"[\x80-\xff]", head))
    if (ret or "").upper() == "FULL" and len(original) <= MAX_RETURNED_MESSAGE:
        content = original if original.endswith(b"\r\n") else original + b"\r\n"
        eight_bit = bool(re.search(rb"[\x80-\xff]", content))
        kind = "message/global" if eight_bit_head else "message/rfc822"  # RFC 6532 3.7
        headers = (f"Content-Type: {kind}\r\nContent-Description: Undelivered message\r\n"
                   f"Content-Transfer-Encoding: {'8bit' if eight_bit else '7bit'}\r\n").encode("ascii")
        return _Returned(headers, content, "The message is attached below.")
    note = "Its headers are attached below."
    if (ret or "").upper() == "FULL":
        note = (f"It was larger than {MAX_RETURNED_MESSAGE // 1024} KiB, so only its headers are "
                "attached below.")
    kind = "message/global-headers" if eight_bit_head else "text/rfc822-headers"  # RFC 6533 6.3
    headers = (f"Content-Type: {kind}\r\nContent-Description: Undelivered message headers\r\n"
               f"Content-Transfer-Encoding: {'8bit' if eight_bit_head else '7bit'}\r\n").encode("ascii")
    return _Returned(headers, head, note)


def _header_block(original: bytes) -> bytes:
    """The original's header lines (without the blank line), cut at a line end if huge."""
    if original.startswith(b"\r\n"):
        return b""
    end = original.find(b"\r\n\r\n")
    head = original if end < 0 else original[:end + 2]
    if len(head) > MAX_RETURNED_HEADERS:
        cut = head.rfind(b"\r\n", 0, MAX_RETURNED_HEADERS)
        head = head[:cut + 2] if cut >= 0 else b""
    return head if not head or head.endswith(b"\r\n") else head + b"\r\n"


def _original_message_id(original: bytes) -> str:
    head = _header_block(original[:MAX_RETURNED_HEADERS]).decode("ascii", "replace")
    match = re.search(r"(?im)^message-id[ \t]*:[ \t]*(?:\r\n[ \t]+)?(<[\x21-\x3b\x3d\x3f-\x7e]{1,250}>)", head)
    return match.group(1) if match else ""


def _human_text(reporting_mta: str, results, queued_at: float, kind: str, note: str) -> str:
    lines = [f"This is the mail system at host {_clean(reporting_mta, 255)}.", ""]
    if kind == "failed":
        lines.append("Your message could not be delivered to one or more recipients.")
    elif kind == "delayed":
        lines += ["Your message has not been delivered to one or more recipients yet.",
                  "The mail system will keep trying; you do not need to send it again."]
    else:
        lines.append("Your message was delivered to the mail servers of the recipients below.")
    lines += [note, "", f"It arrived at {_date(queued_at)}.", ""]
    for result in results:
        action = action_for(result.status)
        where = ""
        if result.remote_host:
            address = f" [{_clean(result.remote_ip, 64)}]" if result.remote_ip else ""
            where = f"host {_clean(result.remote_host, 255)}{address} said: "
        reply = " ".join(item for item in (str(result.code) if result.code else "", result.enhanced or "",
                                           _clean(result.text or "", MAX_FIELD_TEXT)) if item)
        outcome = {"failed": "failed", "delayed": "delayed", "relayed": "accepted"}[action]
        lines.append(f"<{_clean(result.recipient, MAX_ADDRESS)}>: {outcome}; {where}{reply}".rstrip())
    text = "\r\n".join(_wrap(line) for line in lines) + "\r\n"
    return text


def _wrap(line: str, indent: str = "") -> str:
    """Break a long line at spaces (RFC 5322 2.1.1: 78 preferred, 998 at most); continuation
    lines start with `indent` (a tab folds a header field, RFC 5322 2.2.3)."""
    if len(line) <= FOLD_AT:
        return line
    words = []
    for word in line.split(" "):  # a word too long for any line is cut (lossy, but bounded)
        words += [word[i:i + MAX_WORD] for i in range(0, len(word), MAX_WORD)] or [""]
    out, current = [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > FOLD_AT:
            out.append(current)
            current = indent + word
        else:
            current = f"{current} {word}" if current else word
    out.append(current)
    return "\r\n".join(out)


def _field(name: str, value: str) -> str:
    """A header-style field folded at spaces (RFC 3464 2.1 follows RFC 5322 2.2.3)."""
    return _wrap(f"{name}: {value}", " ")  # unfolding gives back the single space


def _clean(value: str, limit: int) -> str:
    """One line of text: control characters become spaces, at most `limit` characters."""
    return _CONTROL.sub(" ", value or "").strip()[:limit]


def _crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n|\r", b"\r\n", data)


def _date(timestamp: float) -> str:
    """RFC 5322 3.3 date-time in UTC."""
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    return email.utils.format_datetime(moment)  # English names whatever the locale


def _boundary(original: bytes) -> str:
    while True:
        boundary = f"=_dsn_{secrets.token_hex(12)}"
        if boundary.encode("ascii") not in original:
            return boundary
