"""A real PostgreSQL server for the tests, never a mock.

`PostgresServer` runs Debian's PostgreSQL (initdb + pg_ctl, as FACTS.md
measured them) in a temporary directory on a free loopback port and hands
out fresh, empty databases as SQLAlchemy URLs. PostgreSQL refuses to run as
root, so under root every server command runs as the `postgres` OS user
(created when missing) and the directory belongs to it.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

PG_VERSION = "15"  # Debian 12's; any newer one installed is used if 15 is absent
PG_BIN_ENV = "MAILSERVERD_PG_BIN"  # a directory holding initdb and pg_ctl, to override the search
SUPERUSER = "postgres"
COMMAND_TIMEOUT = 60  # seconds for initdb, pg_ctl start and stop
START_ATTEMPTS = 3  # a free port can be taken between probing and binding: try another


class PostgresUnavailable(Exception):
    """PostgreSQL cannot run here; str() says why and what to install."""


class PostgresFailed(Exception):
    """A PostgreSQL command failed; str() holds its output."""


def find_bin_dir() -> str | None:
    """The directory of initdb/pg_ctl: $MAILSERVERD_PG_BIN if set, else Debian's 15, else the
    newest installed."""
    override = os.environ.get(PG_BIN_ENV)
    if override:
        candidates = [override]
    else:
        installed = glob.glob("/usr/lib/postgresql/*/bin")
        candidates = [f"/usr/lib/postgresql/{PG_VERSION}/bin"]
        candidates += sorted(installed, key=_major_version, reverse=True)
    for directory in candidates:
        if all(os.access(os.path.join(directory, tool), os.X_OK) for tool in ("initdb", "pg_ctl")):
            return directory
    return None


def _major_version(bin_dir: str) -> int:
    name = os.path.basename(os.path.dirname(bin_dir))
    return int(name) if name.isdigit() else 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ensure_os_user(name: str) -> pwd.struct_passwd:
    """The OS account the server runs as under root; created (system, no login) if missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True, timeout=COMMAND_TIMEOUT)
        return pwd.getpwnam(name)


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 only.

    Usage: `server = PostgresServer(); server.start(); url = server.new_database();
    ...; server.stop()`. Durability stays on (fsync=on): the store's promise
    that a commit survives a crash is tested against the real thing.
    """

    def __init__(self, bin_dir: str | None = None):
        self.bin_dir = bin_dir or find_bin_dir()
        if self.bin_dir is None:
            raise PostgresUnavailable(
                f"PostgreSQL server binaries (initdb, pg_ctl) not found in "
                f"{os.environ.get(PG_BIN_ENV) or '/usr/lib/postgresql/*/bin'}: install Debian's "
                f"postgresql package (bin/test does it when run as root)")
        self.run_as = ensure_os_user(SUPERUSER) if os.geteuid() == 0 else None
        self.base_dir: str | None = None
        self.port: int | None = None
        self._names = itertools.count(1)
        self._admin_engine = None

    @property
    def data_dir(self) -> str:
        return os.path.join(self.base_dir, "data")

    @property
    def log_path(self) -> str:
        return os.path.join(self.base_dir, "server.log")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        # Not under pytest's basetemp: that is mode 0700 for root, so `postgres` could not enter it.
        self.base_dir = tempfile.mkdtemp(prefix="mailserverd-pg-")
        if self.run_as is not None:
            os.chown(self.base_dir, self.run_as.pw_uid, self.run_as.pw_gid)
        self._run("initdb", "-D", self.data_dir, "-A", "trust", "-U", SUPERUSER,
                  "--encoding=UTF8", "--locale=C", "--no-sync")
        for attempt in range(START_ATTEMPTS):
            self.port = free_port()
            options = (f"-p {self.port} -k {self.base_dir} -c listen_addresses=127.0.0.1 "
                       f"-c fsync=on -c max_connections=200")
            try:
                self._run("pg_ctl", "-w", "-t", str(COMMAND_TIMEOUT), "-D", self.data_dir,
                          "-l", self.log_path, "-o", options, "start")
                return
            except PostgresFailed:
                if attempt == START_ATTEMPTS - 1 or not self._port_was_taken():
                    raise

    def _port_was_taken(self) -> bool:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return "Address already in use" in log.read()
        except OSError:
            return False

    def new_database(self) -> str:
        """Create an empty database; returns its SQLAlchemy URL."""
        import sqlalchemy

        if self._admin_engine is None:
            self._admin_engine = sqlalchemy.create_engine(self.url(), isolation_level="AUTOCOMMIT",
                                                          poolclass=sqlalchemy.pool.NullPool)
        name = f"test_{next(self._names)}"
        with self._admin_engine.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        return self.url(name)

    def stop(self) -> None:
        """Immediate shutdown and remove every file.

        The data is thrown away, so the shutdown checkpoint of a fast stop (which
        took over a minute of fsyncs on a loaded machine) is skipped."""
        if self._admin_engine is not None:
            self._admin_engine.dispose()
            self._admin_engine = None
        if self.base_dir is None:
            return
        try:
            if os.path.exists(os.path.join(self.data_dir, "postmaster.pid")):
                self._run("pg_ctl", "-w", "-t", str(COMMAND_TIMEOUT), "-D", self.data_dir,
                          "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def _run(self, tool: str, *args: str) -> None:
        command = [os.path.join(self.bin_dir, tool), *args]
        account = {}
        if self.run_as is not None:
            account = {"user": self.run_as.pw_uid, "group": self.run_as.pw_gid, "extra_groups": []}
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        try:
            # pg_ctl's server keeps no inherited pipes open (-l sends its output to the log file)
            result = subprocess.run(command, cwd=self.base_dir, env=environment, stdin=subprocess.DEVNULL,
                                    capture_output=True, text=True, timeout=COMMAND_TIMEOUT, **account)
        except subprocess.TimeoutExpired:
            raise PostgresFailed(f"{tool} did not finish within {COMMAND_TIMEOUT} s"
                                 f"{self._log_tail()}") from None
        if result.returncode != 0:
            raise PostgresFailed(f"{tool} exited {result.returncode}: {result.stdout}{result.stderr}"
                                 f"{self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                tail = log.read().splitlines()[-lines:]
        except OSError:
            return ""
        return "\nserver log:\n" + "\n".join(tail)
