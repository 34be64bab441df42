"""Where PostgreSQL and SQLite differ, behind one function each."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

# Every run and every manual event takes this lock for its whole transaction, so
# two runs (or a run and a suspend/lift) behave as one of their serial orders.
RUN_LOCK_KEY = 0x666C6578  # "flex"
BATCH = 5000

SQL_DIR = Path(__file__).resolve().parents[3] / "include" / "sql"


def sql(name: str):
    """A statement from include/sql/<name>.sql, values bound by name (never formatted in)."""
    return text((SQL_DIR / f"{name}.sql").read_text())


def lock_for_run(conn: Connection) -> None:
    """Serialise writers: an advisory transaction lock on PostgreSQL; on SQLite the
    transaction already began with BEGIN IMMEDIATE (see connect.py)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("select pg_advisory_xact_lock(:k)"), {"k": RUN_LOCK_KEY})


def insert_rows(conn: Connection, table: Table, rows: list[dict]) -> None:
    """Bulk insert in executemany batches."""
    for i in range(0, len(rows), BATCH):
        conn.execute(table.insert(), rows[i:i + BATCH])


def insert_ignoring_conflicts(conn: Connection, table: Table, rows: list[dict], key: str) -> int:
    """INSERT ... ON CONFLICT (key) DO NOTHING; returns how many rows were new."""
    if not rows:
        return 0
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = module.insert(table).on_conflict_do_nothing(index_elements=[key])
    inserted = 0
    for i in range(0, len(rows), BATCH):
        result = conn.execute(stmt, rows[i:i + BATCH])
        inserted += max(result.rowcount, 0)
    return inserted


def upsert(conn: Connection, table: Table, rows: list[dict], key: list[str]) -> None:
    """INSERT ... ON CONFLICT (key) DO UPDATE the other columns."""
    if not rows:
        return
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    base = module.insert(table)
    stmt = base.on_conflict_do_update(
        index_elements=key, set_={c: base.excluded[c] for c in rows[0] if c not in key})
    for i in range(0, len(rows), BATCH):
        conn.execute(stmt, rows[i:i + BATCH])
