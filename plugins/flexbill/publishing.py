"""Publish: a run's validated staging becomes D's outputs, in one transaction under the run lock.

Publish replaces D's drafts, skips, quarantine and active-user report, writes the invoices through the
invoice lifecycle (a finalized invoice is never rewritten: invoicing.write_date credits and corrects it),
moves the ledger cursors and records the run in billing_runs.  The publish sequence (flexbill_state
`publish_seq`) makes a run staged before another publish, or before a manual event, refuse to publish.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

import pandas as pd
from sqlalchemy import Date, delete, func, select
from sqlalchemy.engine import Connection, Engine

from . import billing, invoicing, report, validation
from .clock import utcnow
from .db import dialect, schema
from .errors import FlexbillError
from .money import from_cents
from .pause import pause
from .staging import Run, Staging, TableStaging, clear_run

PUBLISHED = "published:"  # flexbill_state row per published run id (value: the publish_seq it left)


@dataclass
class RunSummary:
    billing_date: date
    status: str
    stats: dict = field(default_factory=dict)
    totals: list = field(default_factory=list)  # (currency, invoices, subtotal, tax, total)
    seconds: float = 0.0
    corrections: invoicing.Corrections | None = None  # drafts written, finalized kept, credit notes, corrective
    finalized: invoicing.Finalized | None = None  # the grace-period finalization that followed the publish
    preview: bool = False  # a dry run: computed, then rolled back
    gap: str | None = None  # a warning: D - 1 has no published run (dates never run, or blocked)
    unchanged: bool = False  # nothing it reads changed since D's latest publish: D's outputs were kept


def clear_date(conn: Connection, d: date) -> None:
    """Rewind the ledger for D's live lines and delete what a rerun of D replaces (inside publish's transaction):
    D's drafts, skips, quarantine and report.  Finalized and credited invoices stay (see invoicing.write_date)."""
    conn.execute(dialect.sql("rewind_ledger", billing_date=Date()), {"billing_date": d})
    invoicing.delete_drafts(conn, d)
    conn.execute(delete(schema.skipped_contracts).where(schema.skipped_contracts.c.billing_date == d))
    conn.execute(delete(schema.quarantine).where(schema.quarantine.c.billing_date == d))
    conn.execute(delete(schema.data_quality).where(schema.data_quality.c.billing_date == d))
    conn.execute(delete(schema.active_user_report).where(schema.active_user_report.c.report_date == d))


def _write(
    conn: Connection, d: date, result: billing.DateResult, quarantine: pd.DataFrame, report_frame: pd.DataFrame
) -> invoicing.Corrections:
    """D's outputs, from the validated staging (amounts in cents), into the output tables."""
    corrections = invoicing.write_date(conn, d, result.invoices, result.lines, utcnow())
    pause("mid_write")
    dialect.insert_frame(
        conn, schema.skipped_contracts, result.skipped.rename(columns={"owed_cents": "owed_amount_cents"})
    )
    dialect.insert_frame(conn, schema.quarantine, quarantine, {"billing_date": d})
    dialect.insert_frame(conn, schema.active_user_report, report_frame)
    dialect.upsert_frame(conn, schema.contract_ledger, result.ledger, ["contract_id"])
    return corrections


def _write_checks(conn: Connection, d: date, checks: pd.DataFrame) -> None:
    """The run's Great Expectations results (both suites, staged by its validation) as D's data_quality rows.
    A run staged without them (by an older flexbill) writes none: the report then validates D itself."""
    if checks.empty:
        return
    fixed = {"billing_date": d, "suite_version": validation.SUITE_VERSION, "validated_at": utcnow()}
    dialect.insert_frame(conn, schema.data_quality, checks[validation.CHECK_COLUMNS], fixed)


def record_run(conn: Connection, d: date, status: str, started: datetime, stats: dict, message: str | None) -> None:
    row = {
        "billing_date": d,
        "status": status,
        "started_at": started,
        "finished_at": utcnow(),
        "message": message,
        **{k: int(v) for k, v in stats.items() if k in schema.billing_runs.c},
    }
    if status == "published":
        row["published_at"] = row["finished_at"]
    dialect.upsert(conn, schema.billing_runs, [row], ["billing_date"])


def record_failure(engine: Engine, d: date, started: datetime, message: str) -> None:
    with engine.begin() as conn:
        record_run(conn, d, "failed", started, {}, message)


def bump_publish_seq(conn: Connection) -> int:
    """Something a staged run read has changed (a publish, a manual event): runs staged before refuse to publish.
    Returns the new sequence number."""
    seq = publish_seq(conn) + 1
    dialect.upsert(conn, schema.flexbill_state, [{"name": "publish_seq", "value": seq}], ["name"])
    return seq


def publish_seq(conn: Connection) -> int:
    value = conn.execute(select(schema.flexbill_state.c.value).where(schema.flexbill_state.c.name == "publish_seq"))
    return int(value.scalar() or 0)


def staged_outputs(
    conn: Connection, run: Run, staging: Staging | None = None
) -> tuple[billing.DateResult, pd.DataFrame, pd.DataFrame]:
    """What the run staged, as the frames publish writes: (result, report, quarantine)."""
    staging = TableStaging(conn, run) if staging is None else staging
    d = run.billing_date
    head = conn.execute(select(schema.stg_runs).where(schema.stg_runs.c.run_id == run.run_id)).mappings().first()
    if head is None:
        raise FlexbillError(f"run {run.run_id} has nothing staged: run its extract_snapshot step first")
    lines = staging.get(schema.stg_lines)
    lines["full_cents"] = lines["unit_cents"] * lines["quantity"]
    invoices = staging.get(schema.stg_invoices).assign(billing_date=d)
    status = staging.get(schema.stg_status)
    skipped = (
        status[(status["reason"] != "") & (status["owed_periods"] > 0)]
        .assign(billing_date=d)[["billing_date", "contract_id", "customer_id", "reason", "owed_periods", "owed_cents"]]
        .reset_index(drop=True)
    )
    ledger = staging.get(schema.stg_ledger)[["contract_id", "billed_before"]]
    report_frame = staging.get(schema.stg_report)
    report_frame = report_frame.assign(report_date=d)[["report_date", "location_id", *report.COUNTS]]
    report_frame = report_frame.sort_values("location_id").reset_index(drop=True)
    quarantine = staging.get(schema.stg_quarantine)[["source_table", "row_id", "reason"]]
    stats = billing.run_stats(status, lines, invoices, d)
    stats.update(
        events_appended=head["events_appended"],
        quarantined_rows=head["quarantined_rows"],
        contracts_quarantined=head["contracts_quarantined"],
    )
    result = billing.DateResult(lines=lines, invoices=invoices, skipped=skipped, ledger=ledger, stats=stats)
    return result, report_frame, quarantine


def publish(conn: Connection, run: Run, staging: Staging | None = None) -> RunSummary:
    """Replace D's outputs with the run's validated staging, in the caller's transaction, under the run lock."""
    staging = TableStaging(conn, run) if staging is None else staging
    dialect.lock_for_run(conn)
    head = conn.execute(select(schema.stg_runs).where(schema.stg_runs.c.run_id == run.run_id)).mappings().first()
    if head is None:
        done = published_by(conn, run)
        if done is not None:  # a retry of a publish that committed (its task died before reporting success)
            return done
    if head is None or not head["validated"]:
        raise FlexbillError(f"run {run.run_id} for {run.billing_date} is not validated: nothing was published")
    if head["publish_seq"] != publish_seq(conn):
        raise FlexbillError(
            f"another run published, or a manual suspend/lift was recorded, while run {run.run_id} "
            f"for {run.billing_date} was staging: its staging is stale, nothing was published; "
            "rerun the date (clear the whole DAG run)"
        )
    result, report_frame, quarantine = staged_outputs(conn, run, staging)
    clear_date(conn, run.billing_date)
    # what this publish read is unknown here: a rerun of D recomputes until record_inputs says otherwise
    conn.execute(delete(schema.run_inputs).where(schema.run_inputs.c.billing_date == run.billing_date))
    corrections = _write(conn, run.billing_date, result, quarantine, report_frame)
    _write_checks(conn, run.billing_date, staging.get(schema.stg_checks))
    record_run(conn, run.billing_date, "published", head["started_at"], result.stats, None)
    seq = bump_publish_seq(conn)
    if not staging.in_process:  # a task that may be retried after this commit (not `flexbill run`)
        dialect.upsert(conn, schema.flexbill_state, [{"name": PUBLISHED + run.run_id, "value": seq}], ["name"])
    clear_run(conn, run.run_id)
    # other runs of D (abandoned or racing) staged before this publish, so they can never publish: their staged
    # rows go; their head row stays, so their own publish refuses with "stale", as it would have
    stale = select(schema.stg_runs.c.run_id).where(schema.stg_runs.c.billing_date == run.billing_date)
    for run_id in conn.execute(stale).scalars().all():
        clear_run(conn, run_id, keep_head=True)
    totals = (
        result.invoices.groupby("currency")
        .agg(
            invoices=("invoice_id", "size"),
            subtotal=("subtotal_cents", "sum"),
            tax=("tax_cents", "sum"),
            total=("total_cents", "sum"),
        )
        .reset_index()
    )
    return RunSummary(
        run.billing_date,
        "published",
        result.stats,
        [
            (r.currency, int(r.invoices), from_cents(r.subtotal), from_cents(r.tax), from_cents(r.total))
            for r in totals.itertuples()
        ],
        corrections=corrections,
    )


def record_inputs(conn: Connection, d: date, fingerprint: str) -> None:
    """After D's publish (same transaction): what it read, and the publish sequence it left."""
    row = {"billing_date": d, "fingerprint": fingerprint, "publish_seq": publish_seq(conn)}
    dialect.upsert(conn, schema.run_inputs, [row], ["billing_date"])


def unchanged_rerun(conn: Connection, d: date, fingerprint: str, started: datetime) -> RunSummary | None:
    """A rerun of D whose inputs are those of D's latest publish, with nothing published or recorded since (the
    publish sequence is where that publish left it): D's outputs are what a recomputation would write again, so
    they stay; the run is recorded as published again, as a recomputation records it.  None: recompute."""
    ri = schema.run_inputs
    kept = conn.execute(select(ri.c.fingerprint, ri.c.publish_seq).where(ri.c.billing_date == d)).first()
    if kept is None or kept.fingerprint != fingerprint or kept.publish_seq != publish_seq(conn):
        return None
    r = schema.billing_runs
    row = conn.execute(select(r).where(r.c.billing_date == d)).mappings().first()
    if row is None or row["status"] != "published":
        return None
    stats = {**_recorded_stats(row), "events_appended": 0}  # a recomputation finds its rule events recorded
    record_run(conn, d, "published", started, stats, None)
    i = schema.invoices
    statuses = dict(
        conn.execute(select(i.c.status, func.count()).where(i.c.billing_date == d).group_by(i.c.status)).all()
    )
    return RunSummary(
        d,
        "published",
        stats,
        published_totals(conn, d),
        corrections=invoicing.Corrections(drafts=int(statuses.get("draft", 0)), kept=int(statuses.get("finalized", 0))),
        unchanged=True,
    )


def published_by(conn: Connection, run: Run) -> RunSummary | None:
    """The summary of D as published, when this very run id published it (None otherwise): a publish task
    retried after its commit finds its work done instead of failing with "not validated"."""
    state = schema.flexbill_state
    if conn.execute(select(state.c.value).where(state.c.name == PUBLISHED + run.run_id)).first() is None:
        return None
    row = (
        conn.execute(select(schema.billing_runs).where(schema.billing_runs.c.billing_date == run.billing_date))
        .mappings()
        .first()
    )
    stats = _recorded_stats(row) if row else {}
    return RunSummary(run.billing_date, "published", stats, published_totals(conn, run.billing_date))


def _recorded_stats(row) -> dict:
    """The run's figures as billing_runs recorded them (its integer columns)."""
    return {k: int(row[k]) for k in row.keys() if isinstance(row[k], int) and k != "billing_date"}


def published_totals(conn: Connection, d: date) -> list[tuple]:
    """(currency, invoices, subtotal, tax, total) of D's live invoices: the report's own sums, per currency."""
    from .figures import invoices_by_location, totals_by_currency

    totals = totals_by_currency(invoices_by_location(conn, d))
    return [(t["currency"], int(t["invoices"]), t["subtotal"], t["tax"], t["total"]) for t in totals]
