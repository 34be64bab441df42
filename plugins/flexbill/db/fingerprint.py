"""The fingerprint of what a run of date D reads from the operator: its source tables and the voided events.

A run records it beside D's publish (`run_inputs`); `flexbill run` of D compares it before computing anything,
and when it is equal and nothing else was published or recorded since (the publish sequence has not moved), D's
published outputs are already what the run would write: the run keeps them (flexbill.runner, "unchanged
inputs").  Each table contributes its row count and the sum of a 64-bit hash of every row as the database stores
it (every column), so any changed, added or deleted row changes the fingerprint; the parts are additive, so the
rule events a run appends are added to the fingerprint the run took before reading.

PostgreSQL hashes in SQL (`hashtextextended` of the row's text) and leaves out the rows born at or after the
cutoff (typed timestamps compare exactly); SQLite hashes through a Python aggregate over every row, the ones born
after the cutoff included (timestamps are text there, possibly with an offset): a row added later makes the next
rerun recompute instead of keeping, which is slower, never wrong.  The code of flexbill itself is part of the
fingerprint: a new flexbill recomputes.
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


class _RowHashSum:
    """SQLite aggregate: (count, sum of a 64-bit hash of each row's values) as 'count:sum'."""

    def __init__(self) -> None:
        self.count, self.total = 0, 0

    def step(self, *values) -> None:
        self.count += 1
        raw = hashlib.blake2b(repr(values).encode(), digest_size=8).digest()
        self.total = (self.total + int.from_bytes(raw, "little")) % _MASK

    def finalize(self) -> str:
        return f"{self.count}:{self.total}"


def _sqlite_ready(conn: Connection) -> None:
    raw = conn.connection.driver_connection
    raw.create_aggregate("flexbill_row_hash_sum", -1, _RowHashSum)


def _part(conn: Connection, table: Table, cutoff: datetime, where: str = "", params: dict | None = None) -> str:
    """'count:sum' of `table`'s rows (those visible at the cutoff on PostgreSQL), less those `where` leaves out."""
    params = dict(params or {})
    conditions = [where] if where else []
    if conn.dialect.name == "postgresql":
        when = AS_OF.get(table.name)
        if when is not None:
            conditions.append(f"(t.{when} is null or t.{when} < :cutoff)")
            params["cutoff"] = cutoff
        clause = f" where {' and '.join(conditions)}" if conditions else ""
        count, total = conn.execute(
            text(f"select count(*), coalesce(sum(hashtextextended(t::text, 0)), 0) from {table.name} as t{clause}"),
            params,
        ).one()
        return f"{int(count)}:{int(total) % _MASK}"
    _sqlite_ready(conn)
    columns = ", ".join(f't."{c.name}"' for c in table.columns)
    clause = f" where {' and '.join(conditions)}" if conditions else ""
    return str(
        conn.execute(text(f"select flexbill_row_hash_sum({columns}) from {table.name} as t{clause}"), params).scalar()
    )


def parts(conn: Connection, cutoff: datetime) -> dict[str, str]:
    """table -> 'count:sum' of what a run with this cutoff reads."""
    return {table.name: _part(conn, table, cutoff) for table in TABLES}


def _add(a: str, b: str) -> str:
    (count, total), (more, extra) = map(int, a.split(":")), map(int, b.split(":"))
    return f"{count + more}:{(total + extra) % _MASK}"


def with_appended_events(conn: Connection, before: dict[str, str], cutoff: datetime, trigger_keys: list[str]) -> dict:
    """`before` (taken before the run read anything) plus the suspend events the run itself appended."""
    part = before["suspension_events"]
    for start in range(0, len(trigger_keys), 500):
        names = {f"k{n}": key for n, key in enumerate(trigger_keys[start : start + 500])}
        where = f"t.trigger_key in ({', '.join(':' + n for n in names)})"
        part = _add(part, _part(conn, schema.suspension_events, cutoff, where, names))
    return {**before, "suspension_events": part}


def digest(table_parts: dict[str, str]) -> str:
    """The fingerprint stored in run_inputs: flexbill's code digest and every table's part."""
    text_ = ";".join([f"code={code_digest()}", *(f"{name}={table_parts[name]}" for name in sorted(table_parts))])
    return hashlib.sha256(text_.encode()).hexdigest()
