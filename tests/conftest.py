"""Fixtures shared by every test directory.

- session_dns (session, autouse): an empty loopback DNS zone every daemon resolves
  through by default (MAILSERVERD_TEST_NAMESERVERS), so no test depends on the
  machine's resolver.
- pg_database (session): a function that creates a fresh, empty database on a
  real PostgreSQL server started for this test session; returns its URL.
- mailserver (function): the real daemon on free loopback ports with a fresh
  data directory, domain example.test and users alice@/bob@ (password
  tests.support.daemon.PASSWORD); the data directory is a copy of one made
  once per session with mailserverctl (mailserver_seed_data).
- shared_mailserver (module): the same, shared by a module's read-only tests.
- mailserver_factory (function): make(listeners=..., extra_config=..., accounts=True)
  for tests that need another configuration; every server made is stopped.
"""

from __future__ import annotations

import os

import pytest

from tests.support.daemon import DEFAULT_LISTENERS, TEST_NAMESERVERS_ENV, MailServer
from tests.support.dnsserver import DnsServer
from tests.support.pg import PostgresFailed, PostgresServer, PostgresUnavailable


@pytest.fixture(scope="session", autouse=True)
def session_dns():
    """Every daemon the tests start resolves through this empty loopback zone (all
    NXDOMAIN) unless a test names its own server: inbound checks (SPF, DKIM, DMARC)
    then never wait on the machine's resolver, which CI may not have."""
    server = DnsServer({}).start()
    os.environ[TEST_NAMESERVERS_ENV] = server.nameservers
    yield server
    os.environ.pop(TEST_NAMESERVERS_ENV, None)
    server.stop()


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the whole session, stopped (fast) at its end."""
    try:
        import psycopg2  # noqa: F401  (the driver every URL below names)
    except ImportError:
        pytest.skip("psycopg2 is not installed: pip install -e '.[test,postgres]' (bin/test does)")
    try:
        server = PostgresServer()
    except PostgresUnavailable as reason:
        if os.geteuid() == 0:
            # as root (CI) bin/test installs PostgreSQL: its absence is a broken setup, not a skip
            pytest.fail(str(reason), pytrace=False)
        pytest.skip(str(reason))
    try:
        server.start()
    except PostgresFailed as failure:
        server.stop()
        pytest.fail(f"PostgreSQL did not start: {failure}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_database(pg_server):
    """Call it to get the SQLAlchemy URL of a new, empty database (postgresql+psycopg2)."""
    return pg_server.new_database


@pytest.fixture(scope="session")
def mailserver_seed_data(tmp_path_factory):
    """A data directory holding example.test, alice@ and bob@, made once per session with
    mailserverctl (no daemon running); each mailserver starts from a fresh copy of it,
    which costs milliseconds where three mailserverctl runs cost seconds."""
    seed = MailServer(tmp_path_factory.mktemp("seed"), listeners=())
    seed.write_config()
    seed.add_standard_accounts()
    return seed.data_dir


def _make_servers(request, tmp_path_factory):
    servers = []

    def make(listeners=DEFAULT_LISTENERS, extra_config=None, accounts=True):
        # pytest's numbered temp dirs keep unix socket paths (data_dir/control.sock) short
        server = MailServer(tmp_path_factory.mktemp("mailserver"), listeners, extra_config)
        servers.append(server)
        # the seed was made with the default [storage]; another storage layout starts empty
        seeded = accounts and "storage" not in (extra_config or {})
        if seeded:
            server.copy_data_from(request.getfixturevalue("mailserver_seed_data"))
        server.start()
        if accounts and not seeded:
            server.add_standard_accounts()
        return server

    return make, servers


def _stop_all(servers):
    for server in servers:
        if server.process is not None:
            server.stop()
        # shown by pytest only when the test failed
        print(f"--- {server.conf_path}\n{server.log_tail(200)}")


@pytest.fixture
def mailserver_factory(request, tmp_path_factory):
    """make(listeners=..., extra_config={section: {key: value}}, accounts=True) -> MailServer."""
    make, servers = _make_servers(request, tmp_path_factory)
    yield make
    _stop_all(servers)


@pytest.fixture
def mailserver(mailserver_factory):
    """A running daemon with a fresh data dir, example.test, alice@ and bob@."""
    return mailserver_factory()


@pytest.fixture(scope="module")
def shared_mailserver(request, tmp_path_factory):
    """Like mailserver, shared by one module's tests: only for tests that change nothing."""
    make, servers = _make_servers(request, tmp_path_factory)
    yield make()
    _stop_all(servers)
