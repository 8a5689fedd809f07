"""The PostgreSQL fixture gives real, separate databases: the store's tests
really run on PostgreSQL, not on a stand-in."""

from __future__ import annotations

import sqlalchemy


def _scalar(url: str, statement: str):
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text(statement)).scalar()
    finally:
        engine.dispose()


def test_pg_database_answers_select_1_through_sqlalchemy(pg_database):
    """A URL from pg_database reaches a live PostgreSQL server that answers SELECT 1."""
    url = pg_database()
    assert url.startswith("postgresql+psycopg2://postgres@127.0.0.1:")
    assert _scalar(url, "SELECT 1") == 1
    assert _scalar(url, "SELECT version()").startswith("PostgreSQL ")


def test_each_pg_database_is_new_and_empty(pg_database):
    """Two calls give two distinct databases, each without tables."""
    first, second = pg_database(), pg_database()
    assert first != second
    for url in (first, second):
        tables = _scalar(url, "SELECT count(*) FROM information_schema.tables "
                              "WHERE table_schema = 'public'")
        assert tables == 0


def test_pg_server_runs_with_fsync_on(pg_database):
    """Durability is not switched off for speed: commits the store makes are really synced."""
    assert _scalar(pg_database(), "SHOW fsync") == "on"
