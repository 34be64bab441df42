"""A whole billing date in one process and one transaction: `flexbill run`, its dry run, backfill and the demo.

The DAG runs the same steps (flexbill.steps) as tasks, each in its own transaction, with the staging tables
between them; here every step runs in order inside one transaction that holds the run lock, with the staging
in memory (MemoryStaging), then publish and the grace-period finalization, then one commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, timedelta

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from . import invoicing, publishing, steps, validation
from .clock import check_cutoff, cutoff_of, utcnow
from .db import dialect, extract, fingerprint
from .db.connect import redact, require_schema
from .errors import DatabaseError, OutputRejected
from .figures import gap_before
from .pause import pause
from .publishing import RunSummary
from .staging import MemoryStaging, Run


def run_billing_date(
    engine: Engine,
    d: date,
    tamper: Callable | None = None,
    on_step: Callable[[str, float], None] | None = None,
    preview: Callable[[Connection, RunSummary], object] | None = None,
    allow_future: bool = False,
    recompute: bool = False,
) -> RunSummary:
    """Every step for date D in one transaction holding the run lock (the `flexbill run` path), then the
    grace-period finalization (FLEXBILL_GRACE_DAYS) in the same transaction.

    `on_step(name, seconds)` is called after each step (the benchmark's profile measures memory there).
    `preview(conn, summary)` makes it a dry run: everything is computed and written exactly as a run would,
    `preview` is called on the open transaction (it reads what the run would publish: the report page), then
    the transaction is rolled back, so the database is left as it was.  A blocked preview raises OutputRejected
    after `preview` saw the blocked date.

    Unchanged inputs: when what D reads (flexbill.db.fingerprint, taken under the run lock before anything is
    read) is what D's latest publish read, and nothing was published or recorded since, D's outputs are already
    what the steps would write again: they are kept, the run is recorded, and only the finalization runs
    (`summary.unchanged`).  `recompute` (`flexbill run --recompute`) always runs every step."""
    started = utcnow()
    check_cutoff(d, started, allow_future)
    require_schema(engine)
    invoicing.grace_days()  # a malformed FLEXBILL_GRACE_DAYS fails before anything runs
    t0 = time.perf_counter()
    run = Run.new(d)
    ctx = steps.RunContext(run, MemoryStaging(), preview=preview is not None)

    def step(name: str, fn: Callable, *args):
        t = time.perf_counter()
        out = fn(*args)
        if on_step is not None:
            on_step(name, time.perf_counter() - t)
        return out

    def every_step(conn: Connection, inputs: dict | None) -> RunSummary:
        """The steps of D, its publish and (a real run with a fingerprint) what it read, in run_inputs."""
        step("extract_snapshot", steps.extract_snapshot, conn, run, ctx)
        for rule in steps.RULES:
            step(f"apply_rule {rule}", steps.apply_rule, conn, run, rule, ctx)
        pause("after_rules")
        # the DAG maps these three over locations; here one pass covers every location (None)
        step("owed_periods", steps.owed_periods, conn, run, None, ctx)
        step("suspension_filter", steps.suspension_filter, conn, run, None, ctx)
        step("build_invoices", steps.build_invoices, conn, run, None, ctx)
        step("active_user_report", steps.active_user_report, conn, run, ctx)
        # the rule events this run appends: part of what a rerun will read (fingerprint below)
        appended = [] if ctx.triggered is None else list(ctx.triggered["trigger_key"])
        ctx.release()
        _return_freed_memory()
        try:
            step("validate_output", steps.validate_output, conn, run, ctx, tamper)
        except OutputRejected as exc:
            if preview is None:
                raise
            publishing.record_run(conn, d, "failed", started, {}, str(exc))
            preview(conn, RunSummary(d, "blocked", preview=True))
            raise OutputRejected(f"preview of {d} (nothing was written): {exc}") from None
        summary = step("publish", publishing.publish, conn, run, ctx.staging)
        if inputs is not None and preview is None:
            inputs = fingerprint.with_appended_events(conn, inputs, run.cutoff, appended)
            publishing.record_inputs(conn, d, fingerprint.digest(inputs))
        return summary

    try:
        with engine.connect() as conn:
            tx = conn.begin()
            try:
                dialect.lock_for_run(conn)
                pause("locked")
                inputs = None if tamper is not None else step("fingerprint", fingerprint.parts, conn, run.cutoff)
                summary = None
                if inputs is not None and not recompute:
                    summary = publishing.unchanged_rerun(conn, d, fingerprint.digest(inputs), started)
                if summary is None:
                    summary = every_step(conn, inputs)
                summary.gap = gap_before(conn, d).message(d)
                summary.finalized = step("finalize", invoicing.auto_finalize, conn, d, utcnow())
                pause("before_commit")
                if preview is not None:
                    summary.preview = True
                    preview(conn, summary)
                    tx.rollback()
                else:
                    t = time.perf_counter()
                    tx.commit()
                    if on_step is not None:
                        on_step("commit", time.perf_counter() - t)
            finally:
                if tx.is_active:
                    tx.rollback()
    except OutputRejected as exc:
        if preview is None:
            publishing.record_failure(engine, d, started, str(exc))
        raise
    except (OperationalError, DBAPIError) as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise DatabaseError(
            f"the run for {d} failed on the database and wrote nothing: {reason}. "
            f"Check {redact(engine.url.render_as_string(hide_password=False))} and rerun the date."
        ) from None
    summary.seconds = time.perf_counter() - t0
    return summary


def _return_freed_memory() -> None:
    """Hand the memory the released frames held back to the system before the output gate and the write (glibc
    keeps freed heap otherwise, and the write's peak adds to it: peak RSS at 1M, bench/README.md)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def backfill(
    engine: Engine,
    first: date,
    last: date,
    progress: Callable[[RunSummary], None] | None = None,
    allow_future: bool = False,
) -> list[RunSummary]:
    """Run every date from `first` to `last`, in order; stops at the first failure."""
    summaries = []
    check_cutoff(last, utcnow(), allow_future, "--to")
    require_schema(engine)
    with engine.connect() as conn:  # validate each row version once for the whole range
        validation.prime(extract.snapshot(conn, cutoff_of(last)))
    d = first
    while d <= last:
        summary = run_billing_date(engine, d, allow_future=allow_future)
        summaries.append(summary)
        if progress:
            progress(summary)
        d += timedelta(days=1)
    return summaries
