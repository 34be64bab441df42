"""Shared fixtures: every integration test runs on SQLite and on a fresh PostgreSQL database."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text

from flexbill.db.connect import init_db, make_engine

PG_ADMIN_URL = os.environ.get("FLEXBILL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_url(name: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


@pytest.fixture
def pg_database():
    """A fresh, empty PostgreSQL database (dropped afterwards); yields its URL."""
    name = f"flexbill_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'create database "{name}"'))
    try:
        yield _pg_url(name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = :n and pid <> pg_backend_pid()"),
                {"n": name})
            conn.execute(text(f'drop database if exists "{name}"'))
        admin.dispose()


@pytest.fixture
def sqlite_database(tmp_path):
    yield f"sqlite:///{tmp_path / 'flexbill.sqlite'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request):
    """The URL of an empty database, once per dialect."""
    fixture = "sqlite_database" if request.param == "sqlite" else "pg_database"
    return request.getfixturevalue(fixture)


@pytest.fixture
def engine(db_url):
    """An engine on a fresh database with flexbill's schema."""
    eng = make_engine(db_url)
    init_db(eng)
    yield eng
    eng.dispose()
