"""Interop: the jmap-jam JMAP client (npm), run with Debian's nodejs, against the
daemon's https listener. tests/interop/jmapjam/run.mjs does the client side and
prints JSON; bin/test runs `npm ci` there. TLS verification stays on: the daemon
gets a self-signed certificate for 127.0.0.1 that node trusts through
NODE_EXTRA_CA_CERTS."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import smtplib
import subprocess
import time

import pytest

from tests.support.daemon import HOSTNAME

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jmapjam")
ALICE, BOB = "alice@example.test", "bob@example.test"
RUN_TIMEOUT = 60  # seconds for the whole node script


def _node() -> str:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed (bin/test installs Debian's nodejs and npm)")
    if not os.path.isfile(os.path.join(HERE, "node_modules", "jmap-jam", "package.json")):
        pytest.skip("jmap-jam is not installed: run `npm ci` in tests/interop/jmapjam (bin/test does)")
    return node


def _certificate(directory) -> tuple[str, str]:
    """A self-signed pair whose names are 127.0.0.1 and the test hostname."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOSTNAME),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(directory, "jam.crt"), os.path.join(directory, "jam.key")
    with open(cert_path, "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return cert_path, key_path


def _received(server, address: str, subject: str, timeout: float = 10.0):
    """The message with this subject in the account's INBOX, read over IMAP (the store's view,
    not JMAP's), parsed; None if it has not arrived within timeout seconds."""
    import email
    import email.policy
    import imaplib
    from tests.support.daemon import PASSWORD
    deadline = time.monotonic() + timeout
    while True:
        with imaplib.IMAP4(*server.address("imap"), timeout=10) as imap:
            imap.login(address, PASSWORD)
            imap.select("INBOX", readonly=True)
            _typ, data = imap.uid("SEARCH", "SUBJECT", f'"{subject}"')
            if data[0]:
                _typ, data = imap.uid("FETCH", data[0].split()[0], "(BODY.PEEK[])")
                return email.message_from_bytes(data[0][1], policy=email.policy.default)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


@pytest.fixture
def node() -> str:
    """The node program; skips (before any daemon starts) without it or without jmap-jam."""
    return _node()


@pytest.fixture
def server(node, mailserver_factory, tmp_path):
    cert, key = _certificate(tmp_path)
    server = mailserver_factory(listeners=("smtp", "imap", "https"), extra_config={"tls": {"cert": cert, "key": key}})
    server.cert = cert
    return server


def test_jmap_jam_end_to_end(node, server):
    """jmap-jam over verified https with a Bearer token: reads the session, lists mailboxes by
    back-reference, queries and reads an email delivered over SMTP, sets keywords, uploads a
    message blob and Email/imports it with a toISOString() receivedAt (and downloads it back,
    also as text/plain with its charset), sends a message with an attachment
    that bob receives, and gets an EventSource state event after its own change."""
    message = ("From: Carol <carol@remote.test>\r\nTo: alice@example.test\r\nSubject: jam interop\r\n"
               "Message-ID: <jam@remote.test>\r\n\r\nhello jam from smtp\r\n")
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as smtp:
        smtp.sendmail("carol@remote.test", [ALICE], message)
    token = server.ctl("token", "create", ALICE, "--expires", "1h").stdout.strip()
    host, port = server.address("https")
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("NODE_", "npm_", "HTTP", "http")) and key not in ("NO_PROXY", "no_proxy")}
    environment.update(NODE_EXTRA_CA_CERTS=server.cert, JMAP_SESSION_URL=f"https://{host}:{port}/.well-known/jmap",
                       JMAP_TOKEN=token, JMAP_TO=BOB, JMAP_SUBJECT="jam interop")
    run = subprocess.run([node, os.path.join(HERE, "run.mjs")], cwd=HERE, env=environment,
                         capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    failed = {name: value["error"] for name, value in out.items() if isinstance(value, dict) and "error" in value}
    assert not failed, failed
    assert out["session"]["username"] == ALICE
    assert out["session"]["apiUrl"] == f"https://{host}:{port}/jmap/api"
    assert "urn:ietf:params:jmap:mail" in out["session"]["capabilities"]
    roles = {box["role"]: box for box in out["mailboxes"]}
    assert roles["inbox"]["name"] == "INBOX" and roles["inbox"]["totalEmails"] == 1
    emails = out["emails"]
    assert emails["count"] == 1 and emails["subject"] == "jam interop"
    assert emails["from"] == [{"name": "Carol", "email": "carol@remote.test"}]
    assert emails["text"].strip() == "hello jam from smtp" and emails["preview"] == "hello jam from smtp"
    assert len(out["keywords"]["updated"]) == 1
    assert out["keywords"]["keywords"] == {"$seen": True, "$flagged": True}
    imported = out["import"]
    assert imported["notCreated"] is None and imported["downloaded"] is True
    assert imported["textType"] == "text/plain; charset=utf-8"
    assert imported["email"]["receivedAt"] == "2026-12-05T10:00:00Z"
    assert imported["email"]["subject"] == "imported by jam" and imported["email"]["keywords"] == {"$seen": True}
    assert list(imported["email"]["mailboxIds"].values()) == [True]
    submission = out["submission"]
    assert submission["notCreated"] is None and submission["notSubmitted"] is None
    assert submission["emailCreated"] == ["draft"] and submission["submitted"] == ["send"]
    assert submission["undoStatus"] == "final" and submission["createdIds"] == ["draft", "send"]
    assert submission["keywordsAfter"] == {"$seen": True}
    received = _received(server, BOB, "sent by jam")
    assert received is not None and received["From"].addresses[0].addr_spec == ALICE
    assert received.get_body(("plain",)).get_content().rstrip() == "hello from jmap-jam"
    attachment = next(received.iter_attachments())
    assert attachment.get_filename() == "jam.txt" and attachment.get_content().rstrip() == "attachment from jam"
    push = out["eventsource"]
    assert push["status"] == 200 and push["type"].startswith("text/event-stream") and push["event"]
    assert push["change"]["@type"] == "StateChange" and "Email" in next(iter(push["change"]["changed"].values()))
