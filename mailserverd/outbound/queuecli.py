"""`mailserverctl queue list|show ID|retry ID|delete ID|flush`: text for admins.

Called from cli/commands.py with the directory engine; writes go through the
daemon's control socket when it runs (so the worker is woken at once).
Queue ids are case-insensitive.
"""

from __future__ import annotations

import datetime

from . import queueadmin


def _line(out, text: str) -> None:
    out(text.encode("utf-8", "replace") + b"\n")


def duration(seconds: float) -> str:
    """A short human duration: 45s, 12m, 3h05m, 2d04h."""
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def timestamp(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _next(entry, now: float) -> str:
    if entry.state in ("held", "active"):
        return "-"
    return "now" if entry.next_attempt_at <= now else "in " + duration(entry.next_attempt_at - now)


def queue_list(engine, now: float, out, err) -> None:
    """One line per (message, domain): id, state, age, attempts, next try, sender -> domain."""
    entries = queueadmin.list_queue(engine, now)
    if not entries:
        err("queue is empty\n")
        return
    for entry in entries:
        sender = entry.sender or "MAILER-DAEMON"
        text = (f"{entry.message_id}  {entry.state:<8}  age {duration(now - entry.created_at):>6}  "
                f"attempts {entry.attempts:<3}  next {_next(entry, now):<10}  {entry.size} bytes  "
                f"<{sender}> -> {entry.domain} ({entry.pending} recipient{'s' if entry.pending != 1 else ''})")
        if entry.last_error:
            text += f"  last: {entry.last_error[:200]}"
        _line(out, text)
    messages = len({entry.message_id for entry in entries})
    err(f"{messages} message(s), {len(entries)} deliver{'ies' if len(entries) != 1 else 'y'}\n")


def queue_show(engine, message_id: str, now: float, out) -> bool:
    detail = queueadmin.show(engine, message_id.upper(), now)
    if detail is None:
        return False
    _line(out, f"id: {detail.message_id}")
    _line(out, f"sender: <{detail.sender}>")
    _line(out, f"size: {detail.size}")
    _line(out, f"queued: {timestamp(detail.created_at)} ({duration(now - detail.created_at)} ago)")
    if detail.ret or detail.envid:
        _line(out, f"dsn: ret={detail.ret or '-'} envid={detail.envid or '-'}")
    for entry, recipients in detail.deliveries:
        _line(out, f"domain {entry.domain}: {entry.state}, attempts {entry.attempts}, next {_next(entry, now)}")
        if entry.last_error:
            _line(out, f"  last error: {entry.last_error}")
        for recipient in recipients:
            reply = f"{recipient.code} {recipient.enhanced} {recipient.text}".strip() if recipient.code else recipient.text
            extra = "".join(f" {name}={value}" for name, value in
                            (("notify", recipient.notify), ("orcpt", recipient.orcpt)) if value)
            host = f" ({recipient.remote_host})" if recipient.remote_host else ""
            _line(out, f"  <{recipient.address}> {recipient.status}{extra}" + (f": {reply}{host}" if reply else ""))
    _line(out, "headers:")
    out(detail.headers.replace(b"\r\n", b"\n"))
    return True


def queue_retry(engine, message_id: str, now: float, out) -> bool:
    count = queueadmin.retry(engine, message_id.upper(), now)
    if not count:
        return False
    _line(out, f"{message_id.upper()}: {count} deliver{'ies' if count != 1 else 'y'} due now")
    return True


def queue_delete(engine, message_id: str, out) -> bool:
    if not queueadmin.delete_message(engine, message_id.upper()):
        return False
    _line(out, f"{message_id.upper()}: deleted")
    return True


def queue_flush(engine, now: float, out) -> None:
    count = queueadmin.flush(engine, now)
    _line(out, f"{count} deliver{'ies' if count != 1 else 'y'} due now")
