"""The fingerprint of what a run of date D reads from the operator: its source tables and the voided events.

A run records it beside D's publish (`run_inputs`); `flexbill run` of D compares it before computing anything,
and when it is equal and nothing else was published or recorded since (the publish sequence has not moved), D's
published outputs are already what the run would write: the run keeps them (flexbill.runner, "unchanged
inputs").  On PostgreSQL each table contributes its row count and the sum of a 64-bit hash of every row as the database
stores it (every column), so any changed, added or deleted row changes the fingerprint; the parts are additive,
so the rule events a run appends are added to the fingerprint the run took before reading.

PostgreSQL hashes in SQL (`hash_record_extended` of the row, its text's `hashtextextended` before PostgreSQL 14)
and leaves out the rows born at or after the cutoff (typed timestamps compare exactly): about 0.6 s for 1.5M
source rows (1.3 s through the text).  SQLite counts changes instead: the
triggers of flexbill/sql/source_changes.sqlite.sql add one to flexbill_state 'source_changes' on every insert,
update and delete of a source table (hashing 1.5M rows through Python took ~8 s, a quarter of a run); any change,
even of a row born after the cutoff, makes the next rerun recompute, which is slower, never wrong.  SQLite has
one writer at a time and its triggers cannot be skipped, so the count is exact.  The code of flexbill itself is
part of the fingerprint: a new flexbill recomputes.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from functools import cache
from importlib import resources

from sqlalchemy import Table, text
from sqlalchemy.engine import Connection

from . import schema
from .extract import AS_OF

TABLES = (*schema.SOURCE_TABLES, schema.event_voids)
_MASK = 2**64


@cache
def code_digest() -> str:
    """A digest of flexbill's own code and SQL (the package's files): another flexbill may compute otherwise."""
    digest = hashlib.sha256()
    root = resources.files("flexbill")
    stack = [root]
    files = []
    while stack:
        for entry in stack.pop().iterdir():
            if entry.is_dir():
                if entry.name != "__pycache__":
                    stack.append(entry)
            elif entry.name.endswith((".py", ".sql", ".json")):
                files.append(entry)
    for entry in sorted(files, key=lambda e: str(e)):
        digest.update(entry.name.encode())
        digest.update(entry.read_bytes())
    return digest.hexdigest()[:16]


def _postgresql_part(conn: Connection, table: Table, cutoff: datetime, where: str = "", params: dict | None = None):
    """'count:sum' of `table`'s rows visible at the cutoff, less those `where` leaves out."""
    params = dict(params or {})
    conditions = [where] if where else []
    when = AS_OF.get(table.name)
    if when is not None:
        conditions.append(f"(t.{when} is null or t.{when} < :cutoff)")
        params["cutoff"] = cutoff
    clause = f" where {' and '.join(conditions)}" if conditions else ""
    # PostgreSQL 14+ hashes the row column by column with each type's own hash (twice as fast as its text)
    row_hash = (
        "hash_record_extended(t, 0)" if conn.dialect.server_version_info >= (14,) else "hashtextextended(t::text, 0)"
    )
    count, total = conn.execute(
        text(f"select count(*), coalesce(sum({row_hash}), 0) from {table.name} as t{clause}"), params
    ).one()
    return f"{int(count)}:{int(total) % _MASK}"


def _sqlite_parts(conn: Connection) -> dict[str, str] | None:
    """The count of source changes kept by the triggers of source_changes.sqlite.sql, and each table's row count;
    None when the triggers are missing (a database not yet upgraded by `flexbill init-db`): no shortcut then."""
    triggers = conn.execute(
        text("select count(*) from sqlite_master where type = 'trigger' and name like 'flexbill_changed_%'")
    ).scalar()
    if triggers != 3 * len(TABLES):
        return None
    changes = conn.execute(text("select value from flexbill_state where name = 'source_changes'")).scalar()
    out = {"source_changes": str(int(changes or 0))}
    for table in TABLES:
        out[table.name] = str(conn.execute(text(f"select count(*) from {table.name}")).scalar())
    return out


def parts(conn: Connection, cutoff: datetime) -> dict[str, str] | None:
    """What a run with this cutoff reads, part by part (None: this database cannot tell; always recompute)."""
    if conn.dialect.name == "postgresql":
        return {table.name: _postgresql_part(conn, table, cutoff) for table in TABLES}
    return _sqlite_parts(conn)


def _add(a: str, b: str) -> str:
    (count, total), (more, extra) = map(int, a.split(":")), map(int, b.split(":"))
    return f"{count + more}:{(total + extra) % _MASK}"


def with_appended_events(conn: Connection, before: dict[str, str], cutoff: datetime, trigger_keys: list[str]) -> dict:
    """`before` (taken before the run read anything) plus the suspend events the run itself appended.  SQLite: the
    run's transaction has been the only writer since `before` (BEGIN IMMEDIATE), so the parts are taken again."""
    if conn.dialect.name != "postgresql":
        return _sqlite_parts(conn) or before
    part = before["suspension_events"]
    for start in range(0, len(trigger_keys), 500):
        names = {f"k{n}": key for n, key in enumerate(trigger_keys[start : start + 500])}
        where = f"t.trigger_key in ({', '.join(':' + n for n in names)})"
        part = _add(part, _postgresql_part(conn, schema.suspension_events, cutoff, where, names))
    return {**before, "suspension_events": part}


def digest(table_parts: dict[str, str]) -> str:
    """The fingerprint stored in run_inputs: flexbill's code digest and every table's part."""
    text_ = ";".join([f"code={code_digest()}", *(f"{name}={table_parts[name]}" for name in sorted(table_parts))])
    return hashlib.sha256(text_.encode()).hexdigest()
