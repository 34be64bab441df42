"""Helpers for tests that drive the real `flexbill` console script in subprocesses.

Starting `flexbill` costs a few seconds (pandas, then Great Expectations on the
first validation), so tests start the processes they need at once and wait for
them together where they can.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, select, text

from flexbill.db import schema as s

ROOT = Path(__file__).resolve().parents[1]
FLEXBILL = (
    str(Path(sys.executable).with_name("flexbill"))
    if Path(sys.executable).with_name("flexbill").exists()
    else (shutil.which("flexbill") or str(ROOT / ".venv" / "bin" / "flexbill"))
)
PG_ADMIN_URL = os.environ.get("FLEXBILL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TIMEOUT = 180


def clean_env(db_url: str | None = None, **extra: str) -> dict:
    """The environment of a flexbill process: no inherited DB URL, pause hook or terminal width."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FLEXBILL_DB_URL", "FLEXBILL_PAUSE_AT", "FLEXBILL_PAUSE_SECONDS", "COLUMNS", "LINES")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["FLEXBILL_REPORT"] = "0"  # the data-quality report has its own tests (tests/integration/test_finance_report.py)
    if db_url is not None:
        env["FLEXBILL_DB_URL"] = db_url
    env.update(extra)
    return env


@dataclass
class Result:
    args: tuple
    returncode: int
    stdout: str
    stderr: str
    ended: float  # time.monotonic() when the process was seen to exit


def flexbill(*args: str, db: str | None = None, cwd=None, env: dict | None = None, timeout=TIMEOUT) -> Result:
    """Run `flexbill args...` to completion."""
    return start(*args, db=db, cwd=cwd, env=env).wait(timeout)


class Proc:
    """A running `flexbill` process whose stdout is read line by line in the background."""

    def __init__(self, args, env, cwd):
        self.args = tuple(args)
        self.popen = subprocess.Popen(
            [FLEXBILL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._out: list[str] = []
        self._err: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, self._out, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, self._err, False), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self, stream, sink, announce):
        for line in stream:
            sink.append(line)
            if announce:
                self._lines.put(line)
        if announce:
            self._lines.put(None)

    def wait_for_line(self, needle: str, timeout=TIMEOUT) -> str:
        """Block until a stdout line contains `needle`; fail if the process ends first."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"flexbill {' '.join(self.args)}: no '{needle}' line within {timeout}s")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.popen.wait()
                raise AssertionError(
                    f"flexbill {' '.join(self.args)} ended (rc={self.popen.returncode}) before "
                    f"printing '{needle}'; stdout={''.join(self._out)!r} stderr={''.join(self._err)!r}"
                )
            if needle in line:
                return line

    def kill(self) -> int:
        self.popen.kill()  # SIGKILL
        return self.popen.wait(TIMEOUT)

    def wait(self, timeout=TIMEOUT) -> Result:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise
        ended = time.monotonic()
        for t in self._threads:
            t.join(10)
        return Result(self.args, self.popen.returncode, "".join(self._out), "".join(self._err), ended)


def start(*args: str, db: str | None = None, cwd=None, env: dict | None = None) -> Proc:
    """Start `flexbill args...` (FLEXBILL_DB_URL=db when given) without waiting."""
    return Proc(args, env if env is not None else clean_env(db), cwd)


def run_all(commands: list[tuple[tuple, dict]], timeout=TIMEOUT) -> list[Result]:
    """Start every (args, kwargs-of-start) at once, then wait for all of them."""
    procs = [start(*args, **kw) for args, kw in commands]
    return [p.wait(timeout) for p in procs]


# ---------------------------------------------------------------- databases


def _pg_url(name: str) -> str:
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


@contextlib.contextmanager
def pg_databases(count: int):
    """`count` fresh, empty PostgreSQL databases (dropped afterwards); yields their URLs."""
    names = [f"flexbill_test_{uuid.uuid4().hex[:12]}" for _ in range(count)]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    created = []
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'create database "{name}"'))
                created.append(name)
        yield [_pg_url(n) for n in names]
    finally:
        with admin.connect() as conn:
            for name in created:
                conn.execute(
                    text(
                        "select pg_terminate_backend(pid) from pg_stat_activity "
                        "where datname = :n and pid <> pg_backend_pid()"
                    ),
                    {"n": name},
                )
                conn.execute(text(f'drop database if exists "{name}"'))
        admin.dispose()


# ---------------------------------------------------------------- comparing database contents

# Columns that record when an attempt happened, not what it decided.
WALL_CLOCK = {"started_at", "finished_at", "published_at"}
# ... and when a document was finalized or issued (its number, amounts and status are what it decided).
DOCUMENT_CLOCK = {"invoices": {"finalized_at"}, "credit_notes": {"issued_at"}}
# What `dump` leaves out by default, per table: when things happened, not what was decided.
DUMP_IGNORES = {"billing_runs": WALL_CLOCK, "data_quality": {"validated_at"}, **DOCUMENT_CLOCK}


def table_rows(engine, table, ignore=()) -> list[tuple]:
    """Every row of `table` as a sorted list of tuples (columns in `ignore` left out)."""
    cols = [c for c in table.columns if c.name not in set(ignore)]
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(select(*cols))]
    return sorted(rows, key=repr)


def event_log(engine) -> list[tuple]:
    """suspension_events in log order (occurred_at, id) without the ids: a PostgreSQL sequence
    skips the ids a rolled-back transaction took, which changes no customer's state."""
    cols = [c for c in s.suspension_events.columns if c.name != "id"]
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(select(*cols).order_by(s.suspension_events.c.occurred_at, s.suspension_events.c.id))
        ]


def dump(engine, ignore: dict | None = None) -> dict:
    """Everything a run writes: the output tables, flexbill's bookkeeping and the event log."""
    ignore = {**DUMP_IGNORES, **(ignore or {})}
    out = {t.name: table_rows(engine, t, ignore.get(t.name, ())) for t in s.OUTPUT_TABLES}
    out["suspension_events"] = event_log(engine)
    return out
