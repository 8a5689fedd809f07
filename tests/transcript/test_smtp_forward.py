"""Forwarding aliases in the real daemon: remote targets, SRS, ARC sealing, bounces, loops.

One daemon (smtp listener, check.hops + check.auth) resolves through a loopback
DNS server that publishes the senders' SPF/DKIM/DMARC records, our DKIM key
(made with `mailserverctl dkim keygen`) and MX records sending both the
forward targets (remote.example) and the original senders (sender.test) to a
loopback SMTP sink on 127.0.0.4: the "remote" internet. The daemon delivers
there through its outbound queue ([outbound] port = the sink's port).
"""

from __future__ import annotations

import mailbox
import smtplib
import socket
import ssl
import threading
import time

import dkim
import pytest

from mailserverd.config import load_settings
from mailserverd.outbound.dkim import keygen
from mailserverd.store import open_store
from tests.support import mailauth
from tests.support.daemon import PASSWORD, MailServer, free_port
from tests.support.dnsserver import DnsServer

SINK_HOST = "127.0.0.4"
WAIT = 20.0  # seconds for the outbound queue to reach the sink

ZONE = {
    "sender.test": {"TXT": ["v=spf1 ip4:127.0.0.0/8 -all"], "MX": [(10, "sink.remote.example")]},
    "_dmarc.sender.test": {"TXT": ["v=DMARC1; p=none"]},
    "sel._domainkey.sender.test": {"TXT": [mailauth.key_record("a")]},
    "shop.test": {"TXT": ["v=spf1 -all"]},
    "_dmarc.shop.test": {"TXT": ["v=DMARC1; p=quarantine"]},
    "arc._domainkey.lists.test": {"TXT": [mailauth.key_record("arc")]},
    "remote.example": {"MX": [(10, "sink.remote.example")]},
    "sink.remote.example": {"A": [SINK_HOST]},
}


class Sink:
    """A threaded SMTP server that accepts everything and records each transaction."""

    def __init__(self, host: str, port: int):
        self.transactions: list[dict] = []
        self._socket = socket.create_server((host, port))
        self._socket.settimeout(0.2)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="forward-sink", daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stopping.is_set():
            try:
                connection, _ = self._socket.accept()
            except (socket.timeout, OSError):
                continue
            with connection:
                connection.settimeout(10)
                try:
                    self._session(connection.makefile("rwb"))
                except (OSError, ValueError):
                    pass

    def _session(self, stream):
        def say(text):
            stream.write(text.encode() + b"\r\n")
            stream.flush()

        say("220 sink.remote.example ESMTP")
        current: dict = {}
        while line := stream.readline():
            command = line.decode().rstrip("\r\n")
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                say("250-sink.remote.example")
                say("250-8BITMIME")
                say("250 PIPELINING")
            elif verb == "MAIL":
                current = {"mail_from": command.split(":", 1)[1].split()[0].strip("<>"), "rcpts": []}
                say("250 2.1.0 ok")
            elif verb == "RCPT":
                rcpt = command.split(":", 1)[1].split()[0].strip("<>")
                if rcpt.startswith("gone@"):
                    say("550 5.1.1 no such user")
                    continue
                current["rcpts"].append(rcpt)
                say("250 2.1.5 ok")
            elif verb == "DATA":
                if not current.get("rcpts"):
                    say("554 5.5.1 no valid recipients")
                    continue
                say("354 go on")
                body = b""
                while (chunk := stream.readline()) not in (b".\r\n", b""):
                    body += chunk[1:] if chunk.startswith(b"..") else chunk
                current["body"] = body
                self.transactions.append(current)
                say("250 2.0.0 accepted")
            elif verb == "QUIT":
                say("221 bye")
                return
            else:
                say("250 ok")

    def wait_for(self, rcpt: str, timeout: float = WAIT) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for transaction in self.transactions:
                if rcpt in transaction["rcpts"]:
                    return transaction
            time.sleep(0.05)
        raise AssertionError(f"nothing reached the sink for {rcpt} within {timeout} s: {self.transactions}")

    def stop(self):
        self._stopping.set()
        self._thread.join(5)
        self._socket.close()


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    """(daemon, sink, dnsfunc): aliases me@ (remote only), team@ (bob + remote), both@ (bob only
    via alias chain + remote), and our DKIM key published."""
    sink_port = free_port(SINK_HOST)
    sink = Sink(SINK_HOST, sink_port)
    dns_server = DnsServer(ZONE).start()
    daemon = MailServer(tmp_path_factory.mktemp("forward"), ("smtp", "submission"), {
        "dns": {"nameservers": dns_server.nameservers},
        "checks": {"chain": "check.hops, check.auth"},
        "outbound": {"port": str(sink_port)},
    })
    daemon.copy_data_from(request.getfixturevalue("mailserver_seed_data"))
    daemon.write_config()
    # what `mailserverctl alias add` and `dkim keygen` do, in-process (each ctl run costs seconds)
    store = open_store(load_settings(daemon.conf_path))
    try:
        store.directory.add_alias("me@example.test", ["me@remote.example"])
        store.directory.add_alias("team@example.test", ["bob@example.test", "friend@remote.example"])
        store.directory.add_alias("shop@example.test", ["bob@example.test", "shopper@remote.example"])
        store.directory.add_alias("gone@example.test", ["gone@remote.example"])
    finally:
        store.close()
    zone = dict(ZONE)
    for key in keygen(daemon.data_dir, "example.test"):
        zone[f"{key.record_name}.example.test"] = {"TXT": [key.public_txt]}
    dns_server.set_zone(zone)
    records = {f"{name}.".encode(): entry["TXT"][0].encode() for name, entry in zone.items() if "TXT" in entry}

    def dnsfunc(name, timeout=5):
        return records.get(name if name.endswith(b".") else name + b".")

    daemon.start()
    try:
        yield daemon, sink, dnsfunc
    finally:
        daemon.stop()
        print(daemon.log_tail(200))
        dns_server.stop()
        sink.stop()


def send(daemon, raw: bytes, mail_from: str, to, helo: str = "client.sender.test"):
    with smtplib.SMTP(daemon.host, daemon.ports["smtp"], local_hostname=helo, timeout=20) as client:
        return client.sendmail(mail_from, [to] if isinstance(to, str) else to, raw)


def stored(daemon, tmp_path, address: str, name: str = "INBOX") -> list[bytes]:
    out = tmp_path / f"{address}-{name}.mbox"
    daemon.ctl("user", "export", address, "--mailbox", name, "-o", str(out))
    return [message.as_bytes() for message in mailbox.mbox(str(out))]


def header_values(body: bytes, name: str) -> list[str]:
    end = body.find(b"\r\n\r\n")
    text = body[:end].decode()
    fields = text.replace("\r\n ", " ").replace("\r\n\t", " ").split("\r\n")
    return [line.split(":", 1)[1].strip() for line in fields if line.lower().startswith(name.lower() + ":")]


def signed(subject: str, to: str = "me@example.test", extra: str = "") -> bytes:
    raw = mailauth.message("alice@sender.test", subject=subject, extra=extra).replace(
        b"To: bob@example.test", f"To: {to}".encode())
    return mailauth.sign(raw, "sender.test")


def test_forward_to_remote_alias_is_srs_arc_sealed_and_keeps_dkim(world):
    """Mail to an alias whose target is remote is accepted and queued to the target with an
    SRS0 envelope sender in our domain, Delivered-To the alias, an ARC set i=1 cv=none sealed
    by example.test that dkimpy's arc_verify accepts, and the author's DKIM signature intact."""
    daemon, sink, dnsfunc = world
    send(daemon, signed("first hop"), "alice@sender.test", "me@example.test")
    delivered = sink.wait_for("me@remote.example")
    assert delivered["mail_from"].startswith("SRS0=")
    assert delivered["mail_from"].endswith("=sender.test=alice@example.test")
    body = delivered["body"]
    assert header_values(body, "Delivered-To") == ["me@example.test"]
    seal = header_values(body, "ARC-Seal")
    assert len(seal) == 1 and "i=1;" in seal[0] and "cv=none" in seal[0] and "d=example.test" in seal[0]
    assert "dkim=pass" in header_values(body, "ARC-Authentication-Results")[0]
    cv, sets, reason = dkim.arc_verify(body, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, reason
    assert [item["instance"] for item in sets] == [1]
    assert dkim.verify(body, dnsfunc=dnsfunc)  # the top DKIM-Signature is still sender.test's
    assert b"d=sender.test" in body and not header_values(body, "Return-Path")


def test_forward_extends_a_valid_incoming_chain_with_cv_pass(world):
    """A message that arrives with a valid ARC chain (a mailing list sealed it) leaves with a
    second set, i=2 cv=pass, and the whole chain validates."""
    daemon, sink, dnsfunc = world
    raw = mailauth.arc_seal(signed("via the list", to="list@lists.test"), "lists.test", "mx.lists.test",
                            results="dkim=pass header.d=sender.test; arc=none")
    send(daemon, raw, "alice@sender.test", "me@example.test")
    delivered = next(t for t in _wait_all(sink, "me@remote.example") if b"via the list" in t["body"])
    seals = header_values(delivered["body"], "ARC-Seal")
    assert len(seals) == 2 and "i=2;" in seals[0] and "cv=pass" in seals[0]
    cv, sets, reason = dkim.arc_verify(delivered["body"], dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, reason
    assert sorted(item["instance"] for item in sets) == [1, 2]


def _wait_all(sink, rcpt, subject_hint=b"via the list"):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = [t for t in sink.transactions if rcpt in t["rcpts"] and subject_hint in t["body"]]
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no forwarded list message reached the sink: {sink.transactions}")


def test_bounce_to_srs_address_goes_back_to_the_original_sender(world):
    """A bounce (null sender) to the SRS0 address we used is accepted and queued, still with
    the null sender, to the original sender's domain."""
    daemon, sink, _ = world
    send(daemon, signed("will bounce"), "alice@sender.test", "me@example.test")
    srs_address = next(t["mail_from"] for t in _wait_subject(sink, b"will bounce"))
    report = (b"From: MAILER-DAEMON@remote.example\r\nTo: " + srs_address.encode()
              + b"\r\nSubject: Undelivered Mail\r\n\r\nme@remote.example: mailbox full\r\n")
    send(daemon, report, "", srs_address, helo="sink.remote.example")
    back = sink.wait_for("alice@sender.test")
    assert back["mail_from"] == "" and b"mailbox full" in back["body"]


def test_forwarded_copy_refused_at_the_next_hop_bounces_to_the_original_sender(world):
    """The target's MX refuses the forwarded copy (550): our DSN, addressed to the SRS
    sender, goes to the original sender (null reverse-path), not into a local void."""
    daemon, sink, _ = world
    send(daemon, signed("to a gone target", to="gone@example.test"), "alice@sender.test", "gone@example.test")
    report = _wait_subject(sink, b"to a gone target", rcpt="alice@sender.test")[0]
    assert report["mail_from"] == "" and b"gone@remote.example" in report["body"]


def _wait_subject(sink, subject: bytes, rcpt: str = ""):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = [t for t in sink.transactions if subject in t["body"] and (not rcpt or rcpt in t["rcpts"])]
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"nothing with {subject!r} reached the sink")


def test_forged_or_tampered_srs_address_is_refused(world):
    """RCPT to an SRS address whose hash does not verify is refused 550 5.1.1: nobody can make
    us relay by writing an SRS address."""
    daemon, _sink, _ = world
    send(daemon, signed("for a real address"), "alice@sender.test", "me@example.test")
    for rcpt in ("SRS0=AAAAAAAA=AB=victim.test=bob@example.test",
                 "SRS1=AAAAAAAA=fwd.test==AAAAAAAA=AB=victim.test=bob@example.test"):
        with smtplib.SMTP(daemon.host, daemon.ports["smtp"], local_hostname="sink.remote.example",
                          timeout=20) as client:
            client.ehlo()
            client.mail("")
            code, message = client.rcpt(rcpt)
            assert (code, message[:5]) == (550, b"5.1.1"), (rcpt, code, message)


def test_forwarding_loop_is_refused(world):
    """A message that already went through this alias (its Delivered-To names it) is not
    forwarded again: 554 5.4.6 when the alias was its only recipient."""
    daemon, _sink, _ = world
    raw = signed("looping", extra="Delivered-To: me@example.test\r\n")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(daemon, raw, "alice@sender.test", "me@example.test")
    assert refused.value.smtp_code == 554 and refused.value.smtp_error.startswith(b"5.4.6")


def test_alias_with_local_and_remote_targets_delivers_both(world, tmp_path):
    """team@ -> bob@example.test, friend@remote.example: bob's INBOX gets the message and the
    remote target gets the forwarded copy."""
    daemon, sink, _ = world
    send(daemon, signed("for the team", to="team@example.test"), "alice@sender.test", "team@example.test")
    delivered = sink.wait_for("friend@remote.example")
    assert b"for the team" in delivered["body"]
    assert any(b"for the team" in message for message in stored(daemon, tmp_path, "bob@example.test"))


def test_quarantined_mail_is_not_forwarded(world, tmp_path):
    """Mail the checks quarantine (DMARC p=quarantine fails) goes to the local target's Junk
    and is not forwarded to the remote one; the daemon logs why."""
    daemon, sink, _ = world
    raw = mailauth.message("sales@shop.test", subject="cheap pills").replace(
        b"To: bob@example.test", b"To: shop@example.test")
    send(daemon, raw, "sales@shop.test", "shop@example.test", helo="mail.shop.test")
    assert any(b"cheap pills" in message for message in stored(daemon, tmp_path, "bob@example.test", "Junk"))
    deadline = time.monotonic() + WAIT
    while "not forwarded" not in daemon.log and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "quarantined by the checks" in daemon.log
    assert not [t for t in sink.transactions if "shopper@remote.example" in t["rcpts"]]


def test_submitted_mail_to_a_forwarding_alias_keeps_our_sender_and_is_sealed(world):
    """A local user's submitted mail to a forwarding alias keeps the user's own envelope
    sender (SPF passes for our domain already: no SRS) and is sealed from an
    Authentication-Results recording the SMTP AUTH (RFC 8601 2.7.4)."""
    daemon, sink, dnsfunc = world
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # self-signed
    raw = (b"From: Alice <alice@example.test>\r\nTo: me@example.test\r\nSubject: from inside\r\n"
           b"Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nMessage-ID: <in@example.test>\r\n\r\nHello.\r\n")
    with smtplib.SMTP(*daemon.address("submission"), timeout=20) as client:
        client.starttls(context=context)
        client.login("alice@example.test", PASSWORD)
        client.sendmail("alice@example.test", ["me@example.test"], raw)
    delivered = _wait_subject(sink, b"from inside", rcpt="me@remote.example")[0]
    assert delivered["mail_from"] == "alice@example.test"
    body = delivered["body"]
    assert "auth=pass smtp.auth=alice@example.test" in header_values(body, "ARC-Authentication-Results")[0]
    assert dkim.arc_verify(body, dnsfunc=dnsfunc)[0] == dkim.CV_Pass
    assert dkim.verify(body, dnsfunc=dnsfunc)  # the transport's own DKIM signature for example.test
