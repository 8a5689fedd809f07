"""The real daemon as a subprocess, for transcript and interop tests.

`MailServer` writes a configuration with free loopback ports into its own
directory, runs `python -m mailserverd.cli.daemon -c CONF`, and waits (30 s
at most) for the `mailserverd ready` line. `ctl()` runs mailserverctl
against the same configuration, so it works whether the daemon is up or not.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import weakref

HOST = "127.0.0.1"
HOSTNAME = "mx.example.test"
DOMAIN = "example.test"
USERS = ("alice@example.test", "bob@example.test")
PASSWORD = "secret-pw-1"

# Every [listen] key of INTERFACE.md; the ones not asked for are written empty (off).
LISTEN_KEYS = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "http", "https")
DEFAULT_LISTENERS = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s")
READY_MARK = "mailserverd ready"
START_TIMEOUT = 30.0  # seconds from exec to the ready line
STOP_TIMEOUT = 30.0  # seconds from SIGTERM to exit
CTL_TIMEOUT = 300.0  # seconds for one mailserverctl run (an import of 2,500 messages included)
START_ATTEMPTS = 3  # a probed free port can be taken before the daemon binds it: pick new ones

# Set by tests/conftest.py to the session's loopback DNS server ("127.0.0.1:PORT").
TEST_NAMESERVERS_ENV = "MAILSERVERD_TEST_NAMESERVERS"

_running: weakref.WeakSet[MailServer] = weakref.WeakSet()


class DaemonFailed(Exception):
    """The daemon did not start or stop as it should; str() ends with its output."""


class CtlFailed(subprocess.CalledProcessError):
    """mailserverctl exited non-zero; unlike CalledProcessError, str() shows its stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout}\nstderr: {self.stderr}"


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class MailServer:
    """One mailserverd process with its own configuration and data directory.

    `directory` must exist; the configuration, the data and daemon.log go in it.
    `extra_config` ({section: {key: value}}) is written after the defaults and
    may override them, e.g. {"auth": {"penalty_initial": "0s"}}.
    `host` is the loopback address every listener binds (127.0.0.2, 127.0.0.3 ...
    let several nodes share one port number); `ports` ({listener: port}) fixes
    the port numbers instead of picking free ones, e.g. another node's `ports`.
    """

    def __init__(self, directory, listeners=DEFAULT_LISTENERS, extra_config=None, hostname=HOSTNAME,
                 host=HOST, ports=None):
        self.directory = str(directory)
        self.host = host
        self.fixed_ports = dict(ports) if ports else None
        self.hostname = hostname
        self.data_dir = os.path.join(self.directory, "data")
        self.conf_path = os.path.join(self.directory, "mailserverd.conf")
        self.log_path = os.path.join(self.directory, "daemon.log")
        self.listeners = tuple(listeners)
        unknown = set(self.listeners) - set(LISTEN_KEYS)
        if unknown:
            raise ValueError(f"unknown listeners: {sorted(unknown)}")
        self.extra_config = extra_config or {}
        self.ports: dict[str, int] = {}
        self.process: subprocess.Popen | None = None
        self._lines: list[str] = []  # the output of every run, in order
        self._reader: threading.Thread | None = None

    # -- configuration ---------------------------------------------------------

    def address(self, listener: str) -> tuple[str, int]:
        return self.host, self.ports[listener]

    def config_text(self) -> str:
        sections: dict[str, dict[str, str]] = {
            "server": {"hostname": self.hostname, "data_dir": self.data_dir},
            "listen": {key: f"{self.host}:{self.ports[key]}" if key in self.ports else ""
                       for key in LISTEN_KEYS},
            "storage": {"shards": "2"},
        }
        if os.environ.get(TEST_NAMESERVERS_ENV):
            # the session's loopback DNS server (tests/conftest.py): names the tests do not
            # publish are NXDOMAIN at once, whatever the machine's own resolver does
            sections["dns"] = {"nameservers": os.environ[TEST_NAMESERVERS_ENV]}
        for section, values in self.extra_config.items():
            sections.setdefault(section, {}).update({key: str(value) for key, value in values.items()})
        lines = ["; written by tests/support/daemon.py"]
        for section, values in sections.items():
            lines.append(f"[{section}]")
            lines += [f"{key} = {value}".rstrip() for key, value in values.items()]
            lines.append("")
        return "\n".join(lines)

    def write_config(self) -> None:
        with open(self.conf_path, "w", encoding="utf-8") as handle:
            handle.write(self.config_text())

    # -- life cycle ------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log(self) -> str:
        """Everything the daemon printed (stdout and stderr), across restarts."""
        return "".join(self._lines)

    def start(self) -> None:
        """Pick free ports, write the configuration, start, wait for the ready line."""
        if self.fixed_ports is not None:
            self.ports = {name: self.fixed_ports[name] for name in self.listeners}
            self.write_config()
            self._launch()
            return
        for attempt in range(START_ATTEMPTS):
            self.ports = {name: free_port(self.host) for name in self.listeners}
            self.write_config()
            try:
                self._launch()
                return
            except DaemonFailed as failure:
                port_taken = "cannot listen on" in str(failure)
                if not port_taken or attempt == START_ATTEMPTS - 1:
                    raise

    def restart(self) -> None:
        """Stop (gracefully) if running, then start again on the same ports and data."""
        if self.running:
            self.stop()
        self._launch()

    def stop(self) -> int:
        """SIGTERM and wait for the exit; returns the exit status."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                raise DaemonFailed(f"mailserverd did not exit within {STOP_TIMEOUT:.0f} s of SIGTERM; "
                                   f"killed it\n{self.log_tail()}") from None
        return self._reap()

    def kill(self) -> int:
        """SIGKILL (a crash, as far as the daemon knows) and wait; returns the exit status."""
        if self.running:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)
        return self._reap()

    def _reap(self) -> int:
        if self.process is None:
            raise DaemonFailed("mailserverd was never started")
        if self._reader is not None:
            self._reader.join(timeout=STOP_TIMEOUT)
        _running.discard(self)
        return self.process.returncode

    def _launch(self) -> None:
        environment = dict(os.environ, PYTHONUNBUFFERED="1")
        environment.pop("MAILSERVERD_CONF", None)  # -c is the only configuration
        command = [sys.executable, "-m", "mailserverd.cli.daemon", "-c", self.conf_path]
        self.process = subprocess.Popen(command, cwd=self.directory, env=environment,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
        _running.add(self)
        ready, wake = threading.Event(), threading.Event()
        self._reader = threading.Thread(target=self._read_output, args=(self.process, ready, wake),
                                        name="mailserverd-output", daemon=True)
        self._reader.start()
        # woken by the ready line, or by the end of output: a daemon that dies early is seen at once
        wake.wait(START_TIMEOUT)
        if ready.is_set():
            return
        if wake.is_set():
            # output closed without the ready line: the daemon is exiting
            self.stop()
            raise DaemonFailed(f"mailserverd exited with status {self.process.returncode} "
                               f"before it was ready\n{self.log_tail()}")
        self.kill()
        raise DaemonFailed(f"mailserverd printed no {READY_MARK!r} line within "
                           f"{START_TIMEOUT:.0f} s\n{self.log_tail()}")

    def _read_output(self, process: subprocess.Popen, ready: threading.Event,
                     wake: threading.Event) -> None:
        """Collect every output line (self.log, daemon.log) until the daemon closes its output."""
        with open(self.log_path, "a", encoding="utf-8") as log_file:
            for raw in process.stdout:
                line = raw.decode("utf-8", "replace")
                self._lines.append(line)
                log_file.write(line)
                log_file.flush()
                if READY_MARK in line:
                    ready.set()
                    wake.set()
        process.stdout.close()
        wake.set()

    def log_tail(self, lines: int = 40) -> str:
        tail = self.log.splitlines()[-lines:]
        return "daemon output (last lines):\n" + "\n".join(tail) if tail else "daemon output: (none)"

    # -- administration --------------------------------------------------------

    def ctl(self, *args: str, input=None, check: bool = True, timeout: float = CTL_TIMEOUT,
            text: bool = True) -> subprocess.CompletedProcess:
        """Run `mailserverctl -c CONF *args`; raises CtlFailed on a non-zero exit if check.

        With text (the default) input and output are str (UTF-8; undecodable
        bytes kept as surrogate escapes); with text=False they are bytes.
        """
        environment = dict(os.environ)
        environment.pop("MAILSERVERD_CONF", None)
        command = [sys.executable, "-m", "mailserverd.cli.ctl", "-c", self.conf_path, *map(str, args)]
        decoding = {"encoding": "utf-8", "errors": "surrogateescape"} if text else {}
        result = subprocess.run(command, input=input, capture_output=True, timeout=timeout,
                                cwd=self.directory, env=environment, **decoding)
        if check and result.returncode != 0:
            raise CtlFailed(result.returncode, command, result.stdout, result.stderr)
        return result

    def copy_data_from(self, data_dir: str) -> None:
        """Start from a copy of another (stopped) server's data directory; before start()."""
        shutil.copytree(data_dir, self.data_dir, symlinks=True)

    def add_standard_accounts(self) -> None:
        """Domain example.test with alice@ and bob@, both with PASSWORD."""
        self.ctl("domain", "add", DOMAIN)
        for address in USERS:
            self.ctl("user", "add", address, "--password", PASSWORD)


@atexit.register
def _kill_leftovers() -> None:
    """A test run that ends abnormally must not leave daemons holding ports."""
    for server in list(_running):
        if server.running:
            server.process.kill()
