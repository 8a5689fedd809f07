"""ClamAV's clamd as a subprocess with a signature database made by the test.

No freshclam and no official database: `ClamdServer(directory, signatures)`
writes `test.ndb` (one "NAME:0:*:HEX" body signature per entry, ClamAV's
extended format; clamd reports NAME.UNOFFICIAL) and a clamd.conf that listens
on a unix socket in `directory` and, with tcp=True, on a free loopback port.
start() waits until clamd answers PING; stop() ends it. Debian 12's clamd
1.4 starts in about a second with such a database (FACTS.md).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
import weakref

from tests.support.daemon import HOST, free_port
from tests.support.programs import sbin_program

START_TIMEOUT = 60.0
_running: weakref.WeakSet = weakref.WeakSet()
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
TEST_SIGNATURES = {"Test.Eicar": EICAR}


class ClamdUnavailable(Exception):
    """clamd is not installed; str() says how to get it."""


class ClamdFailed(Exception):
    """clamd did not start; str() ends with its log."""


def clamd_binary() -> str:
    path = sbin_program("clamd")
    if path is None:
        raise ClamdUnavailable("clamd is not installed "
                               "(Debian: apt-get install clamav-daemon; bin/test does)")
    return path


class ClamdServer:
    def __init__(self, directory, signatures=None, tcp: bool = False):
        self.directory = str(directory)
        self.signatures = dict(signatures or TEST_SIGNATURES)
        self.socket_path = os.path.join(self.directory, "clamd.sock")
        self.port = free_port() if tcp else None
        self.log_path = os.path.join(self.directory, "clamd.log")
        self.conf_path = os.path.join(self.directory, "clamd.conf")
        self.process: subprocess.Popen | None = None

    def write_files(self) -> None:
        database = os.path.join(self.directory, "db")
        os.makedirs(database, exist_ok=True)
        with open(os.path.join(database, "test.ndb"), "w", encoding="ascii") as handle:
            for name, data in self.signatures.items():
                handle.write(f"{name}:0:*:{data.hex()}\n")  # target type 0 = any file
        lines = [f"DatabaseDirectory {database}", f"LocalSocket {self.socket_path}",
                 "Foreground yes", f"LogFile {self.log_path}", "LogTime yes",
                 "StreamMaxLength 25M", f"TemporaryDirectory {self.directory}"]
        if self.port is not None:
            lines += [f"TCPSocket {self.port}", f"TCPAddr {HOST}"]
        with open(self.conf_path, "w", encoding="ascii") as handle:
            handle.write("\n".join(lines) + "\n")

    def start(self) -> None:
        binary = clamd_binary()
        self.write_files()
        self.process = subprocess.Popen([binary, "-c", self.conf_path], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _running.add(self)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ClamdFailed(f"clamd exited with {self.process.returncode}\n{self.log_tail()}")
            if self.ping():
                return
            time.sleep(0.1)
        self.stop()
        raise ClamdFailed(f"clamd did not answer PING within {START_TIMEOUT:.0f} s\n{self.log_tail()}")

    def ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(2)
                client.connect(self.socket_path)
                client.sendall(b"zPING\0")
                return client.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return "(no clamd log)"


@atexit.register
def _kill_leftovers() -> None:
    """A test run that ends abnormally must not leave the daemon running."""
    for server in list(_running):
        if server.process is not None and server.process.poll() is None:
            server.process.kill()
