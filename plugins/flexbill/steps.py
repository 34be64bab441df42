"""The run of one billing date: the code path shared by the CLI and the DAG tasks.

One run for date D, in one transaction that holds the run lock:
  1. rewind the ledger and delete D's earlier outputs (a rerun replaces them);
  2. read the source tables as of the cutoff, D+1 00:00 UTC;
  3. validate the inputs (Great Expectations) and quarantine bad rows;
  4. append the automatic suspend events the rules owe (at the triggers' instants);
  5. owed periods, suspension filter, invoices; the active-user report;
  6. validate the outputs (Great Expectations): a failure rolls everything back;
  7. write every output of D and move the ledger cursors, then commit.
A killed run leaves nothing: the database rolls the open transaction back.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Callable

import pandas as pd
from sqlalchemy import Column, Date, Integer, MetaData, Table, bindparam, delete, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from . import billing, report, rules, validation
from .db import dialect, extract, schema
from .db.connect import redact, require_schema
from .errors import DatabaseError, OutputRejected
from .money import from_cents

_tmp = MetaData()
DUE = Table("flexbill_due", _tmp, Column("contract_id", Integer, primary_key=True), Column("lo", Date),
            prefixes=["TEMPORARY"])


def cutoff_of(billing_date: date) -> datetime:
    """The end of D's data interval: rows at or after it do not exist for the run."""
    return datetime.combine(billing_date, datetime.min.time()) + timedelta(days=1)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass
class RunSummary:
    billing_date: date
    status: str
    stats: dict = field(default_factory=dict)
    totals: list = field(default_factory=list)  # (currency, invoices, subtotal, tax, total)
    seconds: float = 0.0


def _pause(point: str) -> None:
    """Test hook: FLEXBILL_PAUSE_AT=<point> sleeps there so a test can kill the run."""
    if os.environ.get("FLEXBILL_PAUSE_AT") == point:
        print(f"paused at {point}", flush=True)
        time.sleep(float(os.environ.get("FLEXBILL_PAUSE_SECONDS", "30")))


def _dated(stmt, **types):
    return stmt.bindparams(*(bindparam(k, type_=v) for k, v in types.items()))


def _clear_date(conn: Connection, d: date) -> None:
    conn.execute(_dated(dialect.sql("rewind_ledger"), billing_date=Date()), {"billing_date": d})
    ids = select(schema.invoices.c.invoice_id).where(schema.invoices.c.billing_date == d)
    conn.execute(delete(schema.invoice_lines).where(schema.invoice_lines.c.invoice_id.in_(ids)))
    conn.execute(delete(schema.invoices).where(schema.invoices.c.billing_date == d))
    conn.execute(delete(schema.skipped_contracts).where(schema.skipped_contracts.c.billing_date == d))
    conn.execute(delete(schema.quarantine).where(schema.quarantine.c.billing_date == d))
    conn.execute(delete(schema.active_user_report).where(schema.active_user_report.c.report_date == d))


def _frame(conn: Connection, stmt, params: dict, columns: list[str]) -> pd.DataFrame:
    rows = [tuple(r) for r in conn.execute(stmt, params).fetchall()]
    df = pd.DataFrame(rows, columns=columns, dtype=object)
    for c in columns:
        if c in ("period_start", "billing_date"):
            df[c] = pd.to_datetime(df[c].astype(str) if len(df) else df[c], format="ISO8601").astype("datetime64[s]")
        else:
            df[c] = df[c].astype("int64")
    return df


def _lines_reader(conn: Connection) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def lines_from(due: pd.DataFrame) -> pd.DataFrame:
        DUE.drop(conn, checkfirst=True)
        DUE.create(conn)
        rows = [{"contract_id": int(c), "lo": pd.Timestamp(lo).date()} for c, lo in zip(due["contract_id"], due["lo"])]
        dialect.insert_rows(conn, DUE, rows)
        out = _frame(conn, dialect.sql("window_lines"), {}, ["contract_id", "period_start", "billing_date"])
        DUE.drop(conn)
        return out
    return lines_from


def _events_rows(new: pd.DataFrame) -> list[dict]:
    return [
        {**r, "customer_id": int(r["customer_id"]), "occurred_at": pd.Timestamp(r["occurred_at"]).to_pydatetime()}
        for r in new.to_dict("records")
    ]


def apply_rules(conn: Connection, valid: dict, customer_id: int | None = None) -> tuple[pd.DataFrame, int]:
    """Append the suspend events the rules owe (of one customer, if given); returns every
    valid event (the new ones included, numbered after the others) and how many were appended."""
    e = schema.suspension_events
    keys = select(e.c.trigger_key).where(e.c.trigger_key.is_not(None))
    if customer_id is not None:
        keys = keys.where(e.c.customer_id == customer_id)
    new = rules.triggered_events(valid, set(conn.execute(keys).scalars()))
    if customer_id is not None:
        new = new[new["customer_id"] == customer_id]
    appended = dialect.insert_ignoring_conflicts(conn, schema.suspension_events, _events_rows(new), "trigger_key")
    events = valid["suspension_events"]
    if not new.empty:
        top = int(events["id"].max()) if len(events) else 0
        events = pd.concat([events, new.assign(id=range(top + 1, top + 1 + len(new)))], ignore_index=True)
    return events, appended if appended else len(new)


def _rows(frame: pd.DataFrame, money: dict[str, str], dates: tuple[str, ...] = (), ints: tuple[str, ...] = ()) -> list[dict]:
    out = frame.copy()
    for target, source in money.items():
        out[target] = [from_cents(v) for v in out[source]]
    for c in dates:
        out[c] = [pd.Timestamp(v).date() for v in out[c]]
    for c in ints:
        out[c] = [int(v) for v in out[c]]
    return out.to_dict("records")


def _write(conn: Connection, d: date, result: billing.DateResult, quarantine: pd.DataFrame,
           report_frame: pd.DataFrame) -> None:
    dialect.insert_rows(conn, schema.invoices, [
        {k: r[k] for k in ("invoice_id", "customer_id", "location_id", "billing_date", "currency",
                           "subtotal", "tax", "total")}
        for r in _rows(result.invoices, {"subtotal": "subtotal_cents", "tax": "tax_cents", "total": "total_cents"},
                       ints=("customer_id", "location_id"))])
    lines = result.lines
    dialect.insert_rows(conn, schema.invoice_lines, [
        {"invoice_id": r["invoice_id"], "contract_id": r["contract_id"], "period_start": r["period_start"],
         "period_end": r["period_end"], "quantity": r["quantity"], "unit_price": r["unit_price"],
         "amount": r["amount"], "prorated": bool(r["prorated"])}
        for r in _rows(lines, {"unit_price": "unit_cents", "amount": "amount_cents"},
                       dates=("period_start", "period_end"), ints=("contract_id", "quantity"))])
    _pause("mid_write")
    dialect.insert_rows(conn, schema.skipped_contracts, [
        {k: r[k] for k in ("billing_date", "contract_id", "customer_id", "reason", "owed_periods", "owed_amount")}
        for r in _rows(result.skipped, {"owed_amount": "owed_cents"},
                       ints=("contract_id", "customer_id", "owed_periods"))])
    dialect.insert_rows(conn, schema.quarantine, [
        {"billing_date": d, "source_table": r["source_table"], "row_id": int(r["row_id"]), "reason": r["reason"]}
        for r in quarantine.to_dict("records")])
    dialect.insert_rows(conn, schema.active_user_report, [
        {k: (int(v) if k != "report_date" else v) for k, v in r.items()} for r in report_frame.to_dict("records")])
    dialect.upsert(conn, schema.contract_ledger, [
        {"contract_id": int(c), "billed_before": pd.Timestamp(b).date()}
        for c, b in zip(result.ledger["contract_id"], result.ledger["billed_before"])], ["contract_id"])


def _record_run(conn: Connection, d: date, status: str, started: datetime, stats: dict, message: str | None) -> None:
    row = {"billing_date": d, "status": status, "started_at": started, "finished_at": utcnow(), "message": message,
           **{k: int(v) for k, v in stats.items() if k in schema.billing_runs.c}}
    if status == "published":
        row["published_at"] = row["finished_at"]
    dialect.upsert(conn, schema.billing_runs, [row], ["billing_date"])


def compute_date(conn: Connection, d: date, tamper: Callable | None = None) -> tuple[billing.DateResult, pd.DataFrame, pd.DataFrame, dict]:
    """Steps 2-6 of a run, inside the caller's transaction; raises OutputRejected."""
    cutoff = cutoff_of(d)
    src = extract.snapshot(conn, cutoff)
    verdict = validation.check_inputs(src)
    valid = verdict.valid
    events, appended = apply_rules(conn, valid)
    _pause("after_rules")
    suspended = rules.suspended_at(events, cutoff)
    ledger = _frame(conn, select(schema.contract_ledger.c.contract_id, schema.contract_ledger.c.billed_before), {},
                    ["contract_id", "billing_date"]).rename(columns={"billing_date": "billed_before"})
    later = _frame(conn, _dated(dialect.sql("later_lines"), billing_date=Date()), {"billing_date": d},
                   ["contract_id", "period_start"])
    result = billing.bill_date(billing.contract_terms(valid), ledger, later, _lines_reader(conn), suspended, d)
    report_frame = report.active_users(src["locations"], valid["customers"], src["contracts"], suspended, d)
    quarantined_contracts = int((verdict.quarantine["source_table"] == "contracts").sum())
    result.stats.update(events_appended=appended, quarantined_rows=len(verdict.quarantine),
                        contracts_quarantined=quarantined_contracts)
    if tamper is not None:
        tamper(result, report_frame)
    validation.check_outputs(_output_frames(result, report_frame))
    return result, verdict.quarantine, report_frame, result.stats


def _output_frames(result: billing.DateResult, report_frame: pd.DataFrame) -> dict:
    lines_cents = result.lines.groupby("invoice_id")["amount_cents"].sum()
    inv = result.invoices.assign(
        lines_cents=result.invoices["invoice_id"].map(lines_cents),
        subtotal_plus_tax=result.invoices["subtotal_cents"] + result.invoices["tax_cents"])
    rep = report_frame.assign(active_plus_suspended=report_frame["active_users"] + report_frame["suspended_members"])
    return {"invoice_lines": result.lines, "invoices": inv, "skipped_contracts": result.skipped,
            "active_user_report": rep}


def run_billing_date(engine: Engine, d: date, tamper: Callable | None = None) -> RunSummary:
    """Run billing date D end to end in one transaction (see the module docstring)."""
    require_schema(engine)
    started = utcnow()
    t0 = time.perf_counter()
    try:
        with engine.begin() as conn:
            dialect.lock_for_run(conn)
            _pause("locked")
            _clear_date(conn, d)
            result, quarantine, report_frame, stats = compute_date(conn, d, tamper)
            _write(conn, d, result, quarantine, report_frame)
            _record_run(conn, d, "published", started, stats, None)
            _pause("before_commit")
    except OutputRejected as exc:
        with engine.begin() as conn:
            _record_run(conn, d, "failed", started, {}, str(exc))
        raise
    except (OperationalError, DBAPIError) as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise DatabaseError(f"the run for {d} failed on the database and wrote nothing: {reason}. "
                            f"Check {redact(engine.url.render_as_string(hide_password=False))} and rerun the date.") from None
    totals = (result.invoices.groupby("currency")
              .agg(invoices=("invoice_id", "size"), subtotal=("subtotal_cents", "sum"),
                   tax=("tax_cents", "sum"), total=("total_cents", "sum")).reset_index())
    return RunSummary(d, "published", stats, [
        (r.currency, int(r.invoices), from_cents(r.subtotal), from_cents(r.tax), from_cents(r.total))
        for r in totals.itertuples()], time.perf_counter() - t0)


def backfill(engine: Engine, first: date, last: date, progress: Callable[[RunSummary], None] | None = None) -> list[RunSummary]:
    """Run every date from `first` to `last`, in order; stops at the first failure."""
    summaries = []
    require_schema(engine)
    with engine.connect() as conn:  # validate each row version once for the whole range
        validation.prime(extract.snapshot(conn, cutoff_of(last)))
    d = first
    while d <= last:
        summary = run_billing_date(engine, d)
        summaries.append(summary)
        if progress:
            progress(summary)
        d += timedelta(days=1)
    return summaries
