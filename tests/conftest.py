"""Shared fixtures: every integration test runs on SQLite and on a fresh PostgreSQL database."""

from __future__ import annotations

import pytest

from flexbill.db.connect import init_db, make_engine
from tests.processes import pg_databases


@pytest.fixture
def pg_database():
    """A fresh, empty PostgreSQL database (dropped afterwards); yields its URL."""
    with pg_databases(1) as (url,):
        yield url


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
