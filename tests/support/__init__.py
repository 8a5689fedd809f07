"""Test harness: a throw-away PostgreSQL server (pg) and the real daemon as a
subprocess (daemon). The pytest fixtures wrapping them live in tests/conftest.py."""
