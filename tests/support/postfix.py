"""A private Postfix instance that relays everything it accepts into mailserverd.

`PostfixRelay` writes its own main.cf and master.cf into a temporary directory,
with its own queue and data directories, a log file, and one smtpd on a free
loopback port; its relayhost is the daemon's inbound SMTP listener. It is run
with `postfix -c DIR start|stop`, which the super-user may do for any
directory (postdrop(1), MAIL_CONFIG: only set-gid commands run by other users
need alternate_config_directories), so /etc/postfix and the system instance
are never touched. Postfix's master must run as root; its daemons run as the
`postfix` user, which the Debian package creates.

The master.cf is written here rather than copied from /etc/postfix, so that an
edited system file (a benchmark's listener, say) cannot leak in; every service
runs unchrooted, because a chroot would need copies of /etc files in the queue
directory.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import weakref

HOST = "127.0.0.1"
HOSTNAME = "relay.test"
MAIL_OWNER = "postfix"  # Debian's mail_owner; the package creates the user and group
COMMAND_TIMEOUT = 60  # seconds for `postfix check`, `start` or `stop`
START_ATTEMPTS = 3  # a probed free port can be taken before the master binds it
STOP_TIMEOUT = 30.0  # seconds from `postfix stop` to the master's exit

_running: weakref.WeakSet[PostfixRelay] = weakref.WeakSet()

# The services a relay-only instance needs (postconf(5), master(5)); the smtpd
# line is added with its port. Columns: service type private unpriv chroot wakeup maxproc command
MASTER_SERVICES = """\
pickup     unix  n  -  n  60    1  pickup
cleanup    unix  n  -  n  -     0  cleanup
qmgr       unix  n  -  n  300   1  qmgr
tlsmgr     unix  -  -  n  1000? 1  tlsmgr
rewrite    unix  -  -  n  -     -  trivial-rewrite
bounce     unix  -  -  n  -     0  bounce
defer      unix  -  -  n  -     0  bounce
trace      unix  -  -  n  -     0  bounce
verify     unix  -  -  n  -     1  verify
flush      unix  n  -  n  1000? 0  flush
proxymap   unix  -  -  n  -     -  proxymap
proxywrite unix  -  -  n  -     1  proxymap
smtp       unix  -  -  n  -     -  smtp
relay      unix  -  -  n  -     -  smtp
showq      unix  n  -  n  -     -  showq
error      unix  -  -  n  -     -  error
retry      unix  -  -  n  -     -  error
discard    unix  -  -  n  -     -  discard
local      unix  -  n  n  -     -  local
anvil      unix  -  -  n  -     1  anvil
scache     unix  -  -  n  -     1  scache
postlog    unix-dgram n  -  n  -  1  postlogd
"""


class PostfixUnavailable(Exception):
    """Postfix cannot run here; str() says why."""


class PostfixFailed(Exception):
    """A postfix command failed; str() holds its output and the log's tail."""


def postfix_unavailable_reason() -> str | None:
    """Why a private Postfix cannot run here, or None when it can."""
    if shutil.which("postfix", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
        return "postfix is not installed (apt-get install postfix; bin/test does as root)"
    if os.geteuid() != 0:
        return "a Postfix master must be started as root"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class PostfixRelay:
    """One private Postfix on HOST:`port` relaying all mail to [relay_host]:relay_port.

    Call start(), then stop() (always: it also removes the directory). The
    instance's log (maillog_file) is read with log().
    """

    def __init__(self, relay_port: int, relay_host: str = HOST):
        self.relay_host = relay_host
        self.relay_port = relay_port
        self.port = 0
        # Not under pytest's basetemp: that is mode 0700, and Postfix's daemons
        # (the `postfix` user) open the data directory by absolute path.
        self.directory = tempfile.mkdtemp(prefix="mailserverd-postfix-")
        os.chmod(self.directory, 0o755)
        self.config_dir = os.path.join(self.directory, "etc")
        self.queue_dir = os.path.join(self.directory, "spool")
        self.data_dir = os.path.join(self.directory, "lib")
        self.log_path = os.path.join(self.directory, "postfix.log")
        self.started = False

    # -- configuration ---------------------------------------------------------

    def main_cf(self) -> str:
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "myhostname": HOSTNAME,
            "mydomain": HOSTNAME,
            "myorigin": "$myhostname",
            "mydestination": "",  # nothing is delivered here: everything is relayed
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "relay_domains": "",
            "inet_interfaces": HOST,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",  # so the tests' smtplib client may relay
            "relayhost": f"[{self.relay_host}]:{self.relay_port}",
            "smtp_dns_support_level": "disabled",
            "smtp_tls_security_level": "may",  # opportunistic STARTTLS, as MTAs do on the Internet
            "smtp_tls_loglevel": "1",  # logs "... TLS connection established to ..."
            "smtpd_tls_security_level": "none",
            "maillog_file": self.log_path,
            "maillog_file_prefixes": self.directory,
            "syslog_name": "postfix-test",
            "biff": "no",
            # A test waits for a bounce: no delayed or retried deliveries behind it.
            "delay_warning_time": "0h",
            "bounce_queue_lifetime": "1m",
            "maximal_queue_lifetime": "1m",
        }
        return "".join(f"{key} = {value}\n".replace(" \n", "\n") for key, value in settings.items())

    def master_cf(self) -> str:
        smtpd = f"{HOST}:{self.port} inet  n  -  n  -  -  smtpd\n"
        return smtpd + MASTER_SERVICES

    def write_config(self) -> None:
        # `postfix check` creates what lies inside the queue directory, not the directory itself
        for directory in (self.config_dir, self.queue_dir, self.data_dir):
            os.makedirs(directory, mode=0o755, exist_ok=True)
        # postfix-files: data_directory belongs to mail_owner, mode 0700 (master.lock, caches)
        os.chmod(self.data_dir, 0o700)
        shutil.chown(self.data_dir, user=MAIL_OWNER, group=MAIL_OWNER)
        for name, text in (("main.cf", self.main_cf()), ("master.cf", self.master_cf())):
            with open(os.path.join(self.config_dir, name), "w", encoding="ascii") as handle:
                handle.write(text)

    # -- life cycle ------------------------------------------------------------

    def _postfix(self, command: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["postfix", "-c", self.config_dir, command], capture_output=True,
                                text=True, timeout=COMMAND_TIMEOUT,
                                env=dict(os.environ, PATH=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"))
        if check and result.returncode != 0:
            raise PostfixFailed(f"postfix -c {self.config_dir} {command} exited {result.returncode}\n"
                                f"{result.stdout}{result.stderr}\n{self.log_tail()}")
        return result

    def start(self) -> None:
        """Pick a free port, write the configuration, check it (creating the queue), start,
        and wait for the smtpd's greeting."""
        reason = postfix_unavailable_reason()
        if reason:
            raise PostfixUnavailable(reason)
        for attempt in range(START_ATTEMPTS):
            self.port = free_port()
            self.write_config()
            self._postfix("check")
            log_before = len(self.log())
            try:
                # the master (run with -w) reports failure when it cannot bind its listener
                self._postfix("start")
            except PostfixFailed:
                port_taken = "Address already in use" in self.log()[log_before:]
                if not port_taken or attempt == START_ATTEMPTS - 1:
                    raise
                continue
            self.started = True
            _running.add(self)
            self._await_greeting()
            return

    def _await_greeting(self, timeout: float = 10.0) -> None:
        with socket.create_connection((HOST, self.port), timeout=timeout) as connection:
            connection.settimeout(timeout)
            greeting = connection.recv(512)
        if not greeting.startswith(b"220"):
            raise PostfixFailed(f"Postfix greeted {greeting!r} on {HOST}:{self.port}\n{self.log_tail()}")

    def master_pid(self) -> int | None:
        try:
            with open(os.path.join(self.queue_dir, "pid", "master.pid"), encoding="ascii") as handle:
                return int(handle.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self, command: str = "stop") -> None:
        """`postfix stop` (the master ends its daemons and exits), wait for the master to be
        gone, then remove the directory. command="abort" stops without waiting for daemons."""
        try:
            if self.started:
                pid = self.master_pid()
                self._postfix(command, check=False)
                self.started = False
                _running.discard(self)
                if pid is not None:
                    _wait_exited(pid, STOP_TIMEOUT)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- observation -----------------------------------------------------------

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        tail = self.log().splitlines()[-lines:]
        return "postfix log (last lines):\n" + "\n".join(tail) if tail else "postfix log: (none)"

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> re.Match:
        """The first match of `pattern` (a regular expression, MULTILINE) in the log, polled
        until it appears; PostfixFailed after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.log(), re.MULTILINE)
            if match:
                return match
            if time.monotonic() > deadline:
                raise PostfixFailed(f"no log line matching {pattern!r} within {timeout:.0f} s\n"
                                    f"{self.log_tail()}")
            time.sleep(0.2)


def _wait_exited(pid: int, timeout: float) -> None:
    """Poll (bounded) until process `pid` is gone; PostfixFailed if it outlives `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            raise PostfixFailed(f"the Postfix master (pid {pid}) did not exit within {timeout:.0f} s")
        time.sleep(0.05)


@atexit.register
def _stop_leftovers() -> None:
    """A test run that ends abnormally must not leave a private Postfix running."""
    for relay in list(_running):
        relay.stop("abort")
