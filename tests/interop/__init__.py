"""Interop tests: real programs (swaks, msmtp, mutt, Postfix) against the real daemon.

Helpers shared by the modules here. Each module runs one daemon for all its
tests (starting one costs seconds); the tests only add messages, each carrying
its own unique Subject, and look only for that message, so they do not see
each other. bin/test installs the programs as root; a program that is missing
fails the test as root and skips it otherwise.
"""

from __future__ import annotations

import mailbox
import os
import shutil
import ssl
import subprocess
import uuid

import pytest

from tests.support.daemon import MailServer

SMTP_LISTENERS = ("smtp", "submission", "submissions")
PROGRAM_TIMEOUT = 30  # seconds for one run of a client program
PROGRAM_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def require_program(name: str, package: str | None = None) -> str:
    """The program's path; when it is absent, fail as root (bin/test installs it) or skip."""
    path = shutil.which(name, path=PROGRAM_PATH)
    if path:
        return path
    install = f"apt-get install {package or name}"
    if os.geteuid() == 0:
        pytest.fail(f"{name} is not installed, yet bin/test installs it as root: {install}", pytrace=False)
    pytest.skip(f"{name} is not installed and we are not root to install it: {install}")


def start_module_mailserver(request, tmp_path_factory, listeners=SMTP_LISTENERS) -> MailServer:
    """The daemon on free loopback ports with example.test, alice@ and bob@ (copied from the
    session's seed data), stopped when the requesting (module) fixture ends."""
    server = MailServer(tmp_path_factory.mktemp("mailserver"), listeners)
    server.copy_data_from(request.getfixturevalue("mailserver_seed_data"))

    def stop():
        if server.process is not None:
            server.stop()
        print(f"--- {server.conf_path}\n{server.log_tail(200)}")  # shown when a test failed

    request.addfinalizer(stop)
    server.start()
    return server


def unique_subject(label: str) -> str:
    return f"{label} {uuid.uuid4().hex}"


def run_program(command: list[str], input: bytes | None = None, timeout: float = PROGRAM_TIMEOUT,
                env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run a client program with a bound on its run time; output as text (UTF-8, replaced)."""
    result = subprocess.run(command, input=input, capture_output=True, timeout=timeout, env=env, cwd=cwd)
    result.stdout = result.stdout.decode("utf-8", "replace")
    result.stderr = result.stderr.decode("utf-8", "replace")
    return result


def exported(server: MailServer, tmp_path, address: str, mailbox_name: str = "INBOX") -> list[bytes]:
    """Every message of one mailbox, as stored (Return-Path and Received included), via
    `mailserverctl user export --mailbox`."""
    out = tmp_path / f"{address}-{mailbox_name}-{uuid.uuid4().hex[:8]}.mbox"
    server.ctl("user", "export", address, "--mailbox", mailbox_name, "-o", str(out))
    box = mailbox.mbox(str(out), create=False)
    try:
        return [box.get_bytes(key) for key in box.keys()]
    finally:
        box.close()


def with_subject(messages: list[bytes], subject: str) -> list[bytes]:
    marker = f"\nSubject: {subject}\n".encode()
    return [message for message in messages if marker in b"\n" + message]


def server_certificate(server: MailServer, tmp_path) -> str:
    """A PEM file holding the daemon's (self-signed) certificate, as served on port 465."""
    pem = ssl.get_server_certificate(server.address("submissions"), timeout=10)
    path = tmp_path / "server-cert.pem"
    path.write_text(pem)
    return str(path)
