"""msmtp and mutt, real mail programs, submitting through the daemon with AUTH over TLS.

Both verify the server's certificate: they trust the daemon's self-signed certificate
(fetched from port 465) and are told the name it carries, mx.example.test, since they
connect to 127.0.0.1."""

from __future__ import annotations

import os

import pytest

from tests.interop import (exported, require_program, run_program, server_certificate,
                           start_module_mailserver, unique_subject, with_subject)
from tests.support.daemon import PASSWORD


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    return start_module_mailserver(request, tmp_path_factory)


def msmtp_config(server, tmp_path, listener, starttls: bool) -> str:
    """An msmtprc with one account, alice@example.test, for `listener`."""
    lines = [
        "defaults",
        "logfile -",  # the log line goes to stdout, shown when a test fails
        "account alice",
        f"host {server.host}",
        f"port {server.ports[listener]}",
        "from alice@example.test",
        "auth on",
        "user alice@example.test",
        f"password {PASSWORD}",
        "tls on",
        f"tls_starttls {'on' if starttls else 'off'}",
        f"tls_trust_file {server_certificate(server, tmp_path)}",
        f"tls_host_override {server.hostname}",
        "timeout 10",
    ]
    path = tmp_path / "msmtprc"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)  # msmtp refuses a configuration holding a password that others may read
    return str(path)


def message(subject: str) -> bytes:
    return (f"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: {subject}\r\n"
            "\r\nSent by msmtp.\r\n").encode()


def received_by_bob(server, tmp_path, subject) -> bytes:
    delivered, = with_subject(exported(server, tmp_path, "bob@example.test"), subject)
    return delivered


@pytest.mark.parametrize("listener, starttls", [("submission", True), ("submissions", False)],
                         ids=["587-starttls", "465-implicit-tls"])
def test_msmtp_submits_with_auth_over_tls(server, tmp_path, listener, starttls):
    """msmtp, verifying the server certificate, authenticates as alice over 587 with
    STARTTLS or over 465 with implicit TLS; the message reaches bob `with ESMTPSA`."""
    subject = unique_subject(f"msmtp {listener}")
    config = msmtp_config(server, tmp_path, listener, starttls)
    result = run_program([require_program("msmtp"), "-C", config, "-a", "alice", "bob@example.test"],
                         input=message(subject))
    assert result.returncode == 0, f"msmtp exited {result.returncode}\n{result.stdout}{result.stderr}"
    assert "smtpstatus=250" in result.stdout
    assert b"with ESMTPSA id" in received_by_bob(server, tmp_path, subject)


def mutt_config(server, tmp_path) -> str:
    home = tmp_path / "mutt-home"
    home.mkdir()
    settings = {
        "from": "alice@example.test",
        "realname": "Alice",
        "use_from": "yes",
        # RFC 3986 userinfo: the @ of the address is percent-encoded
        "smtp_url": f"smtp://alice%40example.test@{server.host}:{server.ports['submission']}/",
        "smtp_pass": PASSWORD,
        "ssl_starttls": "yes",
        "ssl_force_tls": "yes",  # never send the password in the clear
        "ssl_verify_host": "no",  # the certificate names mx.example.test, we dial 127.0.0.1
        "certificate_file": server_certificate(server, tmp_path),
        "record": "",  # no local Sent copy: the server files one
        "copy": "no",
        "folder": str(home),
        "spoolfile": str(home / "inbox"),
        "header_cache": "",
        "send_charset": "utf-8",
    }
    path = tmp_path / "muttrc"
    path.write_text("".join(f'set {key} = "{value}"\n' for key, value in settings.items()))
    return str(path)


def test_mutt_batch_mode_submits_over_587_with_starttls_and_auth(server, tmp_path):
    """mutt in batch mode (`mutt -s SUBJECT RCPT < body`) sends through 587 with STARTTLS
    and AUTH; bob receives it `with ESMTPSA` and alice's Sent mailbox holds the copy."""
    subject = unique_subject("mutt")
    config = mutt_config(server, tmp_path)
    environment = dict(os.environ, HOME=str(tmp_path / "mutt-home"), TERM="dumb")
    # -n: no system Muttrc, so only this configuration applies
    result = run_program([require_program("mutt"), "-n", "-F", config, "-s", subject, "bob@example.test"],
                         input=b"Sent by mutt in batch mode.\n", env=environment, cwd=tmp_path)
    assert result.returncode == 0, f"mutt exited {result.returncode}\n{result.stdout}{result.stderr}"
    delivered = received_by_bob(server, tmp_path, subject)
    assert b"with ESMTPSA id" in delivered and b"Sent by mutt in batch mode." in delivered
    assert len(with_subject(exported(server, tmp_path, "alice@example.test", "Sent"), subject)) == 1
