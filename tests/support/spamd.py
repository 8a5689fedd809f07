"""SpamAssassin's spamd as a subprocess on a free loopback port, offline.

`spamd -L` (local tests only: no DNS blocklists, Razor or Pyzor) with the
rules Debian ships in /usr/share/spamassassin (no sa-update), -x (no per-user
configuration files), logging to stderr. As root, spamd must be told a user
to run as: -u nobody. start() waits until spamd answers PING (a second or
two); stop() ends it.
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
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


class SpamdUnavailable(Exception):
    """spamd is not installed; str() says how to get it."""


class SpamdFailed(Exception):
    """spamd did not start; str() ends with its output."""


def spamd_binary() -> str:
    path = sbin_program("spamd")
    if path is None:
        raise SpamdUnavailable("spamd is not installed (Debian: apt-get install spamd spamassassin; "
                               "bin/test does)")
    return path


class SpamdServer:
    def __init__(self, directory, unix: bool = False):
        """unix=True: listen on `socket_path` (spamd --socketpath) instead of a loopback port."""
        self.directory = str(directory)
        self.socket_path = os.path.join(self.directory, "spamd.sock") if unix else None
        self.port = None if unix else free_port()
        self.log_path = os.path.join(self.directory, "spamd.log")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        binary = spamd_binary()
        if self.socket_path is not None:
            where = [f"--socketpath={self.socket_path}", "--socketmode=0666"]
        else:
            where = ["-i", HOST, "-A", HOST, "-p", str(self.port)]
        command = [binary, "-L", "-x", *where, "--max-children", "2", "-s", "stderr",
                   "-r", os.path.join(self.directory, "spamd.pid")]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]  # spamd refuses to run child processes as root
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, cwd=self.directory, stdin=subprocess.DEVNULL,
                                        stdout=self._log, stderr=subprocess.STDOUT,
                                        env=dict(os.environ, HOME=self.directory))
        _running.add(self)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SpamdFailed(f"spamd exited with {self.process.returncode}\n{self.log_tail()}")
            if self.ping():
                return
            time.sleep(0.2)
        self.stop()
        raise SpamdFailed(f"spamd did not answer PING within {START_TIMEOUT:.0f} s\n{self.log_tail()}")

    def ping(self) -> bool:
        try:
            if self.socket_path is not None:
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                client.settimeout(2)
                client.connect(self.socket_path)
            else:
                client = socket.create_connection((HOST, self.port), timeout=2)
            with client:
                client.sendall(b"PING SPAMC/1.5\r\n\r\n")
                return b"PONG" in client.recv(64)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # the parent ends its children
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return "(no spamd log)"


@atexit.register
def _kill_leftovers() -> None:
    """A test run that ends abnormally must not leave the daemon running."""
    for server in list(_running):
        if server.process is not None and server.process.poll() is None:
            server.process.kill()
