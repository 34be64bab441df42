"""The steps of one billing run: the code shared by the CLI and the Airflow DAG tasks.

A run for billing date D, identified by a run id, goes through these steps
(each one is a task of the `flexbill_billing` DAG; `flexbill run` calls them in
order inside one transaction that holds the run lock):

  extract_snapshot    read the source tables as of the cutoff (D+1 00:00 UTC), validate
                      them with Great Expectations, stage the quarantine;
  apply_rule          per rule (signup, plan, crm_stage): append the suspend events owed,
                      at the triggers' own instants (idempotent through trigger_key);
  owed_periods        per location: the periods each contract owes on D;
  suspension_filter   per location: skip archived and suspended customers (periods stay owed);
  build_invoices      per location: one invoice per customer, tax half-up on the subtotal;
  active_user_report  the report as of the cutoff;
  validate_output     Great Expectations on everything staged; a failure publishes nothing;
  publish             one transaction, under the run lock: replace D's outputs with the
                      staged ones, move the ledger cursors, record the run (flexbill.publishing).

Intermediate results live in the run's staging store (flexbill.staging: the staging tables
keyed by the run id for DAG tasks, memory for `flexbill run`; write-audit-publish); steps
return small pointers (counts, location ids), never rows.  A killed run leaves nothing:
staging is not output, and publish is one transaction.  flexbill.runner runs every step
of a date in one transaction (the CLI path).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sqlalchemy import Column, Date, Integer, MetaData, Table, func, select, update
from sqlalchemy.engine import Connection

from . import billing, report, rules, validation
from .clock import utcnow
from .db import dialect, extract, schema
from .errors import FlexbillError
from .frames import lookup
from .publishing import publish_seq, staged_outputs
from .staging import Run, Staging, TableStaging, clear_run

RULES = ("signup", "plan", "crm_stage")

_tmp = MetaData()
DUE = Table(
    "flexbill_due", _tmp, Column("contract_id", Integer, primary_key=True), Column("lo", Date), prefixes=["TEMPORARY"]
)


def _frame(conn: Connection, stmt, params: dict, columns: list[str]) -> pd.DataFrame:
    """flexbill's own ids and dates (`columns`, in the statement's order; never null): ids as int64, dates as
    datetime64[s]. PostgreSQL's reader types the ids as it parses (no text per id: 943k ledger cursors)."""
    dates = ("period_start", "billing_date")
    names = list(stmt.selected_columns.keys()) if hasattr(stmt, "selected_columns") else columns
    df = dialect.read_frame(conn, stmt, params, {n: object if c in dates else "int64" for n, c in zip(names, columns)})
    df.columns = columns
    for c in columns:
        if c in dates:
            df[c] = _dates(df[c])
        else:
            df[c] = df[c].astype("int64")
    return df


def _dates(text: pd.Series) -> pd.Series:
    """flexbill's own dates ('YYYY-MM-DD' text from either database) as datetime64[s]: numpy parses that form in
    C (0.05 s for the 943k ledger cursors of a 1M operator, against 0.28 s through pandas' ISO parser); any other
    form goes to pandas."""
    try:
        return pd.Series(np.array(text.to_numpy(), dtype="datetime64[D]").astype("datetime64[s]"), index=text.index)
    except (TypeError, ValueError):
        return pd.to_datetime(text.astype(str) if len(text) else text, format="ISO8601").astype("datetime64[s]")


def _lines_reader(conn: Connection) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def lines_from(due: pd.DataFrame) -> pd.DataFrame:
        DUE.drop(conn, checkfirst=True)
        DUE.create(conn)
        dialect.insert_frame(conn, DUE, due[["contract_id", "lo"]])
        out = _frame(conn, dialect.sql("window_lines"), {}, ["contract_id", "period_start", "billing_date"])
        DUE.drop(conn)
        return out

    return lines_from


def _events_rows(new: pd.DataFrame) -> list[dict]:
    return [
        {**r, "customer_id": int(r["customer_id"]), "occurred_at": pd.Timestamp(r["occurred_at"]).to_pydatetime()}
        for r in new.to_dict("records")
    ]


def apply_rules(
    conn: Connection,
    valid: dict,
    customer_id: int | None = None,
    source: str | None = None,
    ctx: RunContext | None = None,
) -> tuple[pd.DataFrame, int]:
    """Append the suspend events the rules owe (of one customer, of one rule, if given); returns
    every valid event (the new ones included, numbered after the others) and how many were appended."""
    e = schema.suspension_events
    keys = select(e.c.trigger_key).where(e.c.trigger_key.is_not(None))
    if customer_id is not None:
        keys = keys.where(e.c.customer_id == customer_id)
    if ctx is not None and ctx.triggered is not None:  # each rule's keys are its own: one pass serves all three
        new = ctx.triggered
    else:
        new = rules.triggered_events(valid, set(conn.execute(keys).scalars()))
        if ctx is not None:
            ctx.triggered = new
    if customer_id is not None:
        new = new[new["customer_id"] == customer_id]
    if source is not None:
        new = new[new["source"] == source]
    rows = _events_rows(new)
    if ctx is not None and ctx.preview and rows:
        # a dry run rolls back: ids given here leave PostgreSQL's sequence where it was (the next real event
        # gets the id it would have had); they order after every event, as the sequence's would
        top = int(conn.execute(select(func.coalesce(func.max(e.c.id), 0))).scalar())
        rows = [{**r, "id": top + n} for n, r in enumerate(rows, start=1)]
    appended = dialect.insert_ignoring_conflicts(conn, schema.suspension_events, rows, "trigger_key")
    events = valid["suspension_events"]
    if not new.empty:
        top = int(events["id"].max()) if len(events) else 0
        events = pd.concat([events, new.assign(id=range(top + 1, top + 1 + len(new)))], ignore_index=True)
    return events, appended if appended else len(new)


class RunContext:
    """One run's steps in one process: the run, its staging store, and what the steps read once and share.

    A DAG task builds a fresh context on its own connection (TableStaging: it reads what earlier tasks staged and
    committed); `flexbill run` builds one for the whole run (MemoryStaging) and the steps reuse each other's reads:
    the snapshot, the valid rows, the suspension state, the ledger, the terms and the rules' triggered events."""

    def __init__(self, run: Run, staging: Staging, preview: bool = False) -> None:
        self.run, self.staging = run, staging
        self.preview = preview  # a dry run: everything happens in a transaction that is rolled back
        self.src: dict | None = None  # the snapshot of the source tables at the cutoff
        self.valid: dict | None = None  # the snapshot less the quarantined rows
        self.quarantined: pd.DataFrame | None = None  # the staged quarantine
        self.suspended: pd.Series | None = None  # customer_id -> suspended at the cutoff
        self.ledger: pd.DataFrame | None = None  # contract_id -> billed_before
        self.later: pd.DataFrame | None = None  # lines on D or later of periods starting on or before D
        self.terms: pd.DataFrame | None = None  # the terms of the contracts that may owe on D
        self.triggered: pd.DataFrame | None = None  # the rules' suspend events not yet recorded

    @classmethod
    def for_task(cls, conn: Connection, run: Run) -> RunContext:
        return cls(run, TableStaging(conn, run))

    @property
    def in_process(self) -> bool:
        return self.staging.in_process

    def release(self) -> None:
        """Drop what validate_output and publish do not read (an in-process run holds it all otherwise): the
        snapshot but its locations, the terms, the ledger and the staged candidates and periods."""
        self.src = self.terms = self.ledger = self.later = self.triggered = self.suspended = self.quarantined = None
        if self.valid is not None:
            self.valid = {"locations": self.valid["locations"]}
        self.staging.clear(schema.stg_candidates)
        self.staging.clear(schema.stg_periods)


def _context(conn: Connection, run: Run, ctx: RunContext | None) -> RunContext:
    return RunContext.for_task(conn, run) if ctx is None else ctx


# ------------------------------------------------------------------ what the steps read (once per context)


def _snapshot(conn: Connection, ctx: RunContext) -> dict:
    if ctx.src is None:
        ctx.src = extract.snapshot(conn, ctx.run.cutoff)
    return ctx.src


def _without_quarantined(ctx: RunContext, name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` (rows of source table `name`) less the rows extract_snapshot quarantined."""
    if ctx.quarantined is None:  # read once per step, not once per table
        ctx.quarantined = ctx.staging.get(schema.stg_quarantine)
    bad = ctx.quarantined
    held = frame["id"].isin(bad.loc[bad["source_table"] == name, "row_id"]) | frame["id"].isna()  # no id: held too
    return frame[~held].reset_index(drop=True)


def _valid(conn: Connection, ctx: RunContext) -> dict:
    """The snapshot less the rows extract_snapshot quarantined (and staged)."""
    if ctx.valid is None:
        ctx.valid = {name: _without_quarantined(ctx, name, frame) for name, frame in _snapshot(conn, ctx).items()}
    return ctx.valid


def _suspended(conn: Connection, ctx: RunContext) -> pd.Series:
    """customer_id -> suspended at the cutoff, from the valid events (rule events included)."""
    if ctx.suspended is None:
        events = extract.read_table(conn, schema.suspension_events, ctx.run.cutoff)  # rule events included
        events = extract.without_voided(conn, _without_quarantined(ctx, "suspension_events", events))
        ctx.suspended = rules.suspended_at(events, ctx.run.cutoff)
    return ctx.suspended


def _ledger(conn: Connection, ctx: RunContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ledger cursors, and the lines on D or later of periods starting on or before D."""
    if ctx.ledger is None:
        led = schema.contract_ledger
        ctx.ledger = _frame(
            conn, select(led.c.contract_id, led.c.billed_before), {}, ["contract_id", "billing_date"]
        ).rename(columns={"billing_date": "billed_before"})
        ctx.later = _frame(
            conn,
            dialect.sql("later_lines", billing_date=Date()),
            {"billing_date": ctx.run.billing_date},
            ["contract_id", "period_start"],
        )
    return ctx.ledger, ctx.later


def _terms(conn: Connection, ctx: RunContext, location_id: int | None) -> pd.DataFrame:
    """The terms of the contracts that may owe on D, of one location (None: of every location)."""
    if ctx.terms is None:
        valid = _valid(conn, ctx)
        ledger, later = _ledger(conn, ctx)
        contracts = valid["contracts"][billing.may_owe(valid["contracts"], ledger, later, ctx.run.billing_date)]
        valid = {**valid, "contracts": contracts}
        if ctx.in_process:  # after the terms, a run reads only these valid tables (the report counts customers):
            # the valid contracts go before the terms are built (~0.85 GB at 10M)
            ctx.valid = {"locations": valid["locations"], "customers": valid["customers"][report.CUSTOMER_COLUMNS]}
        ctx.terms = billing.contract_terms(valid)
    terms = ctx.terms
    return terms if location_id is None else terms[terms["location_id"] == location_id].reset_index(drop=True)


# ------------------------------------------------------------------ the steps (each one a DAG task)


def extract_snapshot(conn: Connection, run: Run, ctx: RunContext | None = None) -> dict:
    """Read the source tables as of the cutoff, validate them, stage the quarantine."""
    ctx = _context(conn, run, ctx)
    src = _snapshot(conn, ctx)
    if ctx.in_process:  # later steps read only these raw columns (the report counts every visible contract);
        # the rest of the snapshot is handed to the checks, which let go of each table as they copy its valid rows
        # (copies: the checks empty the frames they are handed)
        ctx.src = {"locations": src["locations"].copy(), "contracts": src["contracts"][report.CONTRACT_COLUMNS].copy()}
    verdict = validation.check_inputs(src, owned=ctx.in_process)
    clear_run(conn, run.run_id)
    ctx.staging.put(schema.stg_quarantine, verdict.quarantine)
    ctx.staging.put(schema.stg_checks, verdict.checks)  # the inputs suite's results, kept with D's outputs
    contracts_quarantined = int((verdict.quarantine["source_table"] == "contracts").sum())
    conn.execute(
        schema.stg_runs.insert(),
        {
            "run_id": run.run_id,
            "billing_date": run.billing_date,
            "started_at": utcnow(),
            "publish_seq": publish_seq(conn),
            "quarantined_rows": len(verdict.quarantine),
            "contracts_quarantined": contracts_quarantined,
            "events_appended": 0,
            "validated": False,
        },
    )
    ctx.valid = verdict.valid
    return {"quarantined_rows": len(verdict.quarantine), "locations": due_locations(conn, run, ctx)}


def due_locations(conn: Connection, run: Run, ctx: RunContext | None = None) -> list[int]:
    """The valid locations: the work of owed_periods, suspension_filter and build_invoices is mapped over them."""
    valid = _valid(conn, _context(conn, run, ctx))
    return sorted(int(i) for i in valid["locations"]["id"].dropna().unique())


def apply_rule(conn: Connection, run: Run, rule: str, ctx: RunContext | None = None) -> int:
    """Append the suspend events one rule owes; returns how many were appended."""
    if rule not in RULES:
        raise FlexbillError(f"unknown rule '{rule}': one of {', '.join(RULES)}")
    ctx = _context(conn, run, ctx)
    _, appended = apply_rules(conn, _valid(conn, ctx), source=rule, ctx=ctx)
    conn.execute(
        update(schema.stg_runs)
        .where(schema.stg_runs.c.run_id == run.run_id)
        .values(events_appended=schema.stg_runs.c.events_appended + appended)
    )
    ctx.suspended = None
    return appended


def owed_periods(conn: Connection, run: Run, location_id: int | None, ctx: RunContext | None = None) -> int:
    """Stage the periods each contract of the location owes on D; returns how many."""
    ctx = _context(conn, run, ctx)
    terms = _terms(conn, ctx, location_id)
    ledger, later = _ledger(conn, ctx)
    candidates, periods = billing.owed_periods(terms, ledger, later, _lines_reader(conn), run.billing_date)
    if ctx.in_process and location_id is None:  # one pass over every location: what later steps read stays
        ctx.terms, ctx.ledger, ctx.later = terms[billing.INVOICE_TERMS], None, None
    ctx.staging.put(schema.stg_candidates, candidates, location_id)
    return ctx.staging.put(schema.stg_periods, periods, location_id)


def suspension_filter(conn: Connection, run: Run, location_id: int | None, ctx: RunContext | None = None) -> int:
    """Stage each candidate's status (bill, suspended, archived) and the cursors that move; returns skips."""
    ctx = _context(conn, run, ctx)
    candidates = ctx.staging.get(schema.stg_candidates, location_id)
    periods = ctx.staging.get(schema.stg_periods, location_id)
    status, skipped, ledger = billing.suspension_filter(candidates, periods, _suspended(conn, ctx), run.billing_date)
    ctx.staging.put(schema.stg_status, status, location_id)
    ctx.staging.put(schema.stg_ledger, ledger, location_id)
    return len(skipped)


def build_invoices(conn: Connection, run: Run, location_id: int | None, ctx: RunContext | None = None) -> int:
    """Stage the location's invoices and lines; returns how many invoices."""
    ctx = _context(conn, run, ctx)
    periods = ctx.staging.get(schema.stg_periods, location_id)
    status = ctx.staging.get(schema.stg_status, location_id)
    lines, invoices = billing.build_invoices(periods, status, _terms(conn, ctx, location_id), run.billing_date)
    ctx.staging.put(schema.stg_lines, lines, location_id)
    return ctx.staging.put(schema.stg_invoices, invoices, location_id)


def active_user_report(conn: Connection, run: Run, ctx: RunContext | None = None) -> int:
    """Stage the active-user report as of the cutoff; returns the number of locations."""
    ctx = _context(conn, run, ctx)
    src, valid = _snapshot(conn, ctx), _valid(conn, ctx)
    frame = report.active_users(
        src["locations"], valid["customers"], src["contracts"], _suspended(conn, ctx), run.billing_date
    )
    ctx.staging.clear(schema.stg_report)
    for location_id, part in frame.groupby("location_id"):
        ctx.staging.put(schema.stg_report, part, int(location_id))
    return len(frame)


def validate_output(conn: Connection, run: Run, ctx: RunContext | None = None, tamper: Callable | None = None) -> dict:
    """Great Expectations on everything staged; raises OutputRejected, else marks the run publishable."""
    staging = TableStaging(conn, run) if ctx is None else ctx.staging
    result, report_frame, _ = staged_outputs(conn, run, staging)
    if tamper is not None:
        tamper(result, report_frame)
    locations = (
        ctx.valid["locations"]
        if ctx is not None and ctx.valid is not None  # else a tiny read
        else extract.read_table(conn, schema.locations, run.cutoff)
    )
    passed = validation.check_outputs(_output_frames(result, report_frame, locations))
    checks = staging.get(schema.stg_checks)[validation.CHECK_COLUMNS]  # not the (null) location of staged rows
    checks = pd.concat([checks[checks["suite"] != "flexbill_outputs"], passed], ignore_index=True)
    staging.put(schema.stg_checks, checks)  # beside the inputs suite's (a retried task replaces its own)
    conn.execute(update(schema.stg_runs).where(schema.stg_runs.c.run_id == run.run_id).values(validated=True))
    return result.stats


def _output_frames(result: billing.DateResult, report_frame: pd.DataFrame, locations: pd.DataFrame) -> dict:
    lines_cents = result.lines.groupby("invoice_id")["amount_cents"].sum()
    inv = result.invoices.assign(
        location_currency=lookup(result.invoices["location_id"], locations, "currency"),
        lines_cents=result.invoices["invoice_id"].map(lines_cents),
        subtotal_plus_tax=result.invoices["subtotal_cents"] + result.invoices["tax_cents"],
    )
    rep = report_frame.assign(active_plus_suspended=report_frame["active_users"] + report_frame["suspended_members"])
    return {
        "invoice_lines": result.lines,
        "invoices": inv,
        "skipped_contracts": result.skipped,
        "active_user_report": rep,
    }
