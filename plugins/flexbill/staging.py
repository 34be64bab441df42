"""Where a run keeps what its steps computed until publish: the staging store (write-audit-publish).

A run of billing date D is identified by a run id; each step stages frames (candidates, periods, status,
ledger, lines, invoices, report, quarantine) and a later step reads them back.  Two stores, one interface:

  TableStaging   the staging tables keyed by the run id: a DAG run, whose steps are tasks in other
                 processes and transactions (each task reads what earlier tasks committed);
  MemoryStaging  frames held in memory: `flexbill run`, whose steps run in one process and one
                 transaction, so no other session could read the staged rows anyway.

Staged rows are never output: a killed run leaves only staging, which the next publish of D deletes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime

import pandas as pd
from sqlalchemy import Table, delete
from sqlalchemy.engine import Connection

from .clock import cutoff_of
from .db import dialect, extract, schema


@dataclass(frozen=True)
class Run:
    """One run of one billing date; `run_id` keys its staging rows."""

    billing_date: date
    run_id: str

    @classmethod
    def new(cls, billing_date: date) -> Run:
        return cls(billing_date, f"cli-{billing_date:%Y%m%d}-{uuid.uuid4().hex[:12]}")

    @property
    def cutoff(self) -> datetime:
        return cutoff_of(self.billing_date)


class Staging:
    """The frames a run staged, per staging table and location (None: one frame for every location)."""

    in_process = False  # True: the whole run happens in this process and transaction (nothing is written)

    def put(self, table: Table, frame: pd.DataFrame, location_id: int | None = None) -> int:
        """Replace the run's (location's) rows of `table` with `frame`; returns how many rows."""
        raise NotImplementedError

    def get(self, table: Table, location_id: int | None = None) -> pd.DataFrame:
        """The run's (location's) rows of `table`, without the run id."""
        raise NotImplementedError

    def clear(self, table: Table) -> None:
        """Forget every row of `table` this run staged."""
        raise NotImplementedError


class TableStaging(Staging):
    """The staging tables, on the step's connection (a DAG task's own transaction)."""

    def __init__(self, conn: Connection, run: Run) -> None:
        self.conn, self.run = conn, run

    def put(self, table: Table, frame: pd.DataFrame, location_id: int | None = None) -> int:
        stmt = delete(table).where(table.c.run_id == self.run.run_id)
        if location_id is not None:
            stmt = stmt.where(table.c.location_id == location_id)
        self.conn.execute(stmt)
        fixed = {"run_id": self.run.run_id}
        if "location_id" not in frame.columns:  # rows that know their location keep it (one pass over every location)
            fixed["location_id"] = location_id
        return dialect.insert_frame(self.conn, table, frame, fixed)

    def get(self, table: Table, location_id: int | None = None) -> pd.DataFrame:
        where = table.c.run_id == self.run.run_id
        if location_id is not None:
            where = where & (table.c.location_id == location_id)
        return extract.read_table(self.conn, table, where=where).drop(columns=["run_id"])

    def clear(self, table: Table) -> None:
        self.conn.execute(delete(table).where(table.c.run_id == self.run.run_id))


class MemoryStaging(Staging):
    """Frames in memory: the in-process run (`flexbill run`, its dry run, the demo and backfill)."""

    in_process = True

    def __init__(self) -> None:
        self._held: dict[str, dict[int | None, pd.DataFrame]] = {}

    def put(self, table: Table, frame: pd.DataFrame, location_id: int | None = None) -> int:
        self._held.setdefault(table.name, {})[location_id] = frame
        return len(frame)

    def get(self, table: Table, location_id: int | None = None) -> pd.DataFrame:
        held = self._held.get(table.name, {})
        if location_id is not None:
            return held[location_id].copy()
        if held:
            return pd.concat(list(held.values()), ignore_index=True)
        return pd.DataFrame(columns=[c.name for c in table.columns if c.name != "run_id"])

    def clear(self, table: Table) -> None:
        self._held.pop(table.name, None)


def clear_run(conn: Connection, run_id: str, keep_head: bool = False) -> None:
    """Delete a run's staging rows; `keep_head` keeps its stg_runs row, so its publish still says why it refuses."""
    for table in (*schema.STAGING_TABLES, *(() if keep_head else (schema.stg_runs,))):
        conn.execute(delete(table).where(table.c.run_id == run_id))
