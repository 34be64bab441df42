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
                      staged ones, move the ledger cursors, record the run.

Intermediate results live in staging tables keyed by the run id (write-audit-publish);
steps return small pointers (counts, location ids), never rows.  A killed run leaves
nothing: staging is not output, and publish is one transaction.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Callable

import pandas as pd
from sqlalchemy import Column, Date, Integer, MetaData, Table, bindparam, delete, func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from . import billing, invoicing, report, rules, validation
from .db import dialect, extract, schema
from .db.connect import redact, require_schema
from .errors import DatabaseError, FlexbillError, InputError, OutputRejected
from .frames import lookup
from .money import from_cents
from .pause import pause

_tmp = MetaData()
DUE = Table("flexbill_due", _tmp, Column("contract_id", Integer, primary_key=True), Column("lo", Date),
            prefixes=["TEMPORARY"])


def cutoff_of(billing_date: date) -> datetime:
    """The end of D's data interval: rows at or after it do not exist for the run."""
    return datetime.combine(billing_date, datetime.min.time()) + timedelta(days=1)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def check_cutoff(d: date, now: datetime, allow_future: bool, option: str = "--date") -> None:
    """Refuse a billing date whose cutoff (D+1 00:00 UTC) is after `now`: its day is not over, so its data is not
    complete (a contract created tonight would be missed, and nothing would ever bill it on D again)."""
    cutoff = cutoff_of(d)
    if cutoff > now and not allow_future:
        raise InputError(f"{option} {d} cannot be billed yet: its cutoff, {cutoff:%Y-%m-%d %H:%M} UTC, is after now "
                         f"({now:%Y-%m-%d %H:%M} UTC), so its data is not complete. Bill it from "
                         f"{cutoff:%Y-%m-%d %H:%M} UTC on (--allow-future runs it anyway, for tests and demos)")


@dataclass
class Gap:
    """Billing dates before D that have no published run: their periods are billed on D as late ones."""

    previous: date | None  # the last published billing date before D (None: none before D)
    missing: int  # dates between it and D without a published run (0: D - 1 published)
    blocked: bool  # D - 1 ran, but its latest run was blocked by the output gate

    def message(self, d: date) -> str | None:
        if self.missing == 0:
            return None
        day_before = d - timedelta(days=1)
        if self.previous is None:
            return (f"no billing date before {d} has a published run: if this operator is new, that is expected; "
                    f"otherwise run the earlier dates first (periods owed before {d} are billed on it as late)")
        if self.missing == 1:
            state = "was blocked by the output gate" if self.blocked else "was never run"
            return (f"{day_before} has no published run (it {state}): its periods are billed on {d} as late; "
                    f"run {day_before} first to bill them on their own date")
        return (f"{day_before} has no published run: the {self.missing} dates {self.previous + timedelta(days=1)}.."
                f"{day_before} were never published (last published: {self.previous}); their periods are billed on "
                f"{d} as late; backfill them first to bill each on its own date")


def gap_before(conn: Connection, d: date) -> Gap:
    r = schema.billing_runs
    previous = conn.execute(select(func.max(r.c.billing_date)).where(r.c.billing_date < d,
                                                                       r.c.status == "published")).scalar()
    if previous is None:
        return Gap(None, 1, False)
    previous = previous if isinstance(previous, date) else date.fromisoformat(str(previous)[:10])
    blocked = conn.execute(select(r.c.status).where(r.c.billing_date == d - timedelta(days=1))).scalar() == "failed"
    return Gap(previous, (d - previous).days - 1, blocked)


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


_pause = pause  # the fault suite's hook (flexbill.pause)


def _dated(stmt, **types):
    return stmt.bindparams(*(bindparam(k, type_=v) for k, v in types.items()))


def clear_date(conn: Connection, d: date) -> None:
    """Rewind the ledger for D's live lines and delete what a rerun of D replaces (inside publish's transaction):
    D's drafts, skips, quarantine and report.  Finalized and credited invoices stay (see invoicing.write_date)."""
    conn.execute(_dated(dialect.sql("rewind_ledger"), billing_date=Date()), {"billing_date": d})
    invoicing.delete_drafts(conn, d)
    conn.execute(delete(schema.skipped_contracts).where(schema.skipped_contracts.c.billing_date == d))
    conn.execute(delete(schema.quarantine).where(schema.quarantine.c.billing_date == d))
    conn.execute(delete(schema.active_user_report).where(schema.active_user_report.c.report_date == d))


def _frame(conn: Connection, stmt, params: dict, columns: list[str]) -> pd.DataFrame:
    df = dialect.read_frame(conn, stmt, params)
    df.columns = columns
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


def apply_rules(conn: Connection, valid: dict, customer_id: int | None = None,
                source: str | None = None, memo: Memo | None = None) -> tuple[pd.DataFrame, int]:
    """Append the suspend events the rules owe (of one customer, of one rule, if given); returns
    every valid event (the new ones included, numbered after the others) and how many were appended."""
    e = schema.suspension_events
    keys = select(e.c.trigger_key).where(e.c.trigger_key.is_not(None))
    if customer_id is not None:
        keys = keys.where(e.c.customer_id == customer_id)
    if memo is not None and "triggered" in memo:  # each rule's keys are its own: one pass serves all three
        new = memo["triggered"]
    else:
        new = rules.triggered_events(valid, set(conn.execute(keys).scalars()))
        if memo is not None:
            memo["triggered"] = new
    if customer_id is not None:
        new = new[new["customer_id"] == customer_id]
    if source is not None:
        new = new[new["source"] == source]
    rows = _events_rows(new)
    if memo is not None and memo.preview and rows:
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


def _money(frame: pd.DataFrame, **columns: str) -> pd.DataFrame:
    """The frame with money columns (Decimal) made from its integer-cents columns: target=source."""
    return frame.assign(**{target: [from_cents(int(v)) for v in frame[source]] for target, source in columns.items()})


def _write(conn: Connection, d: date, result: billing.DateResult, quarantine: pd.DataFrame,
           report_frame: pd.DataFrame) -> invoicing.Corrections:
    """D's outputs, from the validated staging (amounts in cents), into the output tables."""
    corrections = invoicing.write_date(conn, d, result.invoices, result.lines, utcnow())
    _pause("mid_write")
    dialect.insert_frame(conn, schema.skipped_contracts, _money(result.skipped, owed_amount="owed_cents"))
    dialect.insert_frame(conn, schema.quarantine, quarantine, {"billing_date": d})
    dialect.insert_frame(conn, schema.active_user_report, report_frame)
    dialect.upsert_frame(conn, schema.contract_ledger, result.ledger, ["contract_id"])
    return corrections


def _record_run(conn: Connection, d: date, status: str, started: datetime, stats: dict, message: str | None) -> None:
    row = {"billing_date": d, "status": status, "started_at": started, "finished_at": utcnow(), "message": message,
           **{k: int(v) for k, v in stats.items() if k in schema.billing_runs.c}}
    if status == "published":
        row["published_at"] = row["finished_at"]
    dialect.upsert(conn, schema.billing_runs, [row], ["billing_date"])


RULES = ("signup", "plan", "crm_stage")


@dataclass(frozen=True)
class Run:
    """One run of one billing date; `run_id` keys its staging rows."""

    billing_date: date
    run_id: str

    @classmethod
    def new(cls, billing_date: date) -> "Run":
        return cls(billing_date, f"cli-{billing_date:%Y%m%d}-{uuid.uuid4().hex[:12]}")

    @property
    def cutoff(self) -> datetime:
        return cutoff_of(self.billing_date)


class Memo(dict):
    """In-process reuse of what earlier steps read (the CLI path); tasks start empty and re-read.

    `in_process`: every step of the run runs in this process and in one transaction (`flexbill run`), so
    staged frames stay in memory and skip the staging tables: no other session could read those
    uncommitted rows, and publish would delete them in the same transaction.
    """

    def __init__(self, *args, in_process: bool = False, preview: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.in_process = in_process
        self.preview = preview  # a dry run: everything happens in a transaction that is rolled back


def _stage(conn: Connection, table: Table, run: Run, frame: pd.DataFrame, location_id: int | None = None,
           memo: Memo | None = None) -> int:
    """Replace the run's (location's) rows of a staging table with `frame` (kept in `memo` too)."""
    if memo is not None:
        memo.setdefault(("staged", table.name), {})[location_id] = frame
        if memo.in_process:
            return len(frame)
    stmt = delete(table).where(table.c.run_id == run.run_id)
    if location_id is not None:
        stmt = stmt.where(table.c.location_id == location_id)
    conn.execute(stmt)
    fixed = {"run_id": run.run_id}
    if "location_id" not in frame.columns:  # rows that know their location keep it (one pass over every location)
        fixed["location_id"] = location_id
    return dialect.insert_frame(conn, table, frame, fixed)


def _unstage(conn: Connection, table: Table, run: Run, location_id: int | None = None,
             memo: Memo | None = None) -> pd.DataFrame:
    """The run's (location's) staged rows: from `memo` when this process staged them, else from the table."""
    held = (memo or {}).get(("staged", table.name))
    if held is not None:
        if location_id is not None:
            return held[location_id].copy()
        return pd.concat(list(held.values()), ignore_index=True) if held else pd.DataFrame(
            columns=[c.name for c in table.columns if c.name != "run_id"])
    where = table.c.run_id == run.run_id
    if location_id is not None:
        where = where & (table.c.location_id == location_id)
    return extract.read_table(conn, table, where=where).drop(columns=["run_id"])


def clear_staging(conn: Connection, run_id: str, keep_head: bool = False) -> None:
    """Delete a run's staging; `keep_head` keeps its stg_runs row, so its publish still says why it refuses."""
    for table in (*schema.STAGING_TABLES, *(() if keep_head else (schema.stg_runs,))):
        conn.execute(delete(table).where(table.c.run_id == run_id))


def bump_publish_seq(conn: Connection) -> int:
    """Something a staged run read has changed (a publish, a manual event): runs staged before refuse to publish.
    Returns the new sequence number."""
    seq = _publish_seq(conn) + 1
    dialect.upsert(conn, schema.flexbill_state, [{"name": "publish_seq", "value": seq}], ["name"])
    return seq


def _publish_seq(conn: Connection) -> int:
    value = conn.execute(select(schema.flexbill_state.c.value).where(schema.flexbill_state.c.name == "publish_seq"))
    return int(value.scalar() or 0)


def _snapshot(conn: Connection, run: Run, memo: Memo) -> dict:
    if "src" not in memo:
        memo["src"] = extract.snapshot(conn, run.cutoff)
    return memo["src"]


def _without_quarantined(conn: Connection, run: Run, memo: Memo, name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` (rows of source table `name`) less the rows extract_snapshot quarantined."""
    if "quarantined" not in memo:  # read once per step, not once per table
        memo["quarantined"] = _unstage(conn, schema.stg_quarantine, run, memo=memo)
    bad = memo["quarantined"]
    held = frame["id"].isin(bad.loc[bad["source_table"] == name, "row_id"]) | frame["id"].isna()  # no id: held too
    return frame[~held].reset_index(drop=True)


def _valid(conn: Connection, run: Run, memo: Memo) -> dict:
    """The snapshot less the rows extract_snapshot quarantined (and staged)."""
    if "valid" not in memo:
        memo["valid"] = {name: _without_quarantined(conn, run, memo, name, frame)
                         for name, frame in _snapshot(conn, run, memo).items()}
    return memo["valid"]


def _suspended(conn: Connection, run: Run, memo: Memo) -> pd.Series:
    """customer_id -> suspended at the cutoff, from the valid events (rule events included)."""
    if "suspended" not in memo:
        events = extract.read_table(conn, schema.suspension_events, run.cutoff)  # rule events included
        events = extract.without_voided(conn, _without_quarantined(conn, run, memo, "suspension_events", events))
        memo["suspended"] = rules.suspended_at(events, run.cutoff)
    return memo["suspended"]


def _ledger(conn: Connection, run: Run, memo: Memo) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ledger cursors, and the lines on D or later of periods starting on or before D."""
    if "ledger" not in memo:
        memo["ledger"] = _frame(conn, select(schema.contract_ledger.c.contract_id, schema.contract_ledger.c.billed_before),
                                {}, ["contract_id", "billing_date"]).rename(columns={"billing_date": "billed_before"})
        memo["later"] = _frame(conn, _dated(dialect.sql("later_lines"), billing_date=Date()),
                               {"billing_date": run.billing_date}, ["contract_id", "period_start"])
    return memo["ledger"], memo["later"]


def _terms(conn: Connection, run: Run, memo: Memo, location_id: int | None) -> pd.DataFrame:
    """The terms of the contracts that may owe on D, of one location (None: of every location)."""
    if "terms" not in memo:
        valid = _valid(conn, run, memo)
        ledger, later = _ledger(conn, run, memo)
        contracts = valid["contracts"][billing.may_owe(valid["contracts"], ledger, later, run.billing_date)]
        memo["terms"] = billing.contract_terms({**valid, "contracts": contracts})
    terms = memo["terms"]
    return terms if location_id is None else terms[terms["location_id"] == location_id].reset_index(drop=True)


def extract_snapshot(conn: Connection, run: Run, memo: Memo | None = None) -> dict:
    """Read the source tables as of the cutoff, validate them, stage the quarantine."""
    memo = Memo() if memo is None else memo
    src = _snapshot(conn, run, memo)
    verdict = validation.check_inputs(src)
    clear_staging(conn, run.run_id)
    _stage(conn, schema.stg_quarantine, run, verdict.quarantine, memo=memo)
    contracts_quarantined = int((verdict.quarantine["source_table"] == "contracts").sum())
    conn.execute(schema.stg_runs.insert(), {
        "run_id": run.run_id, "billing_date": run.billing_date, "started_at": utcnow(),
        "publish_seq": _publish_seq(conn), "quarantined_rows": len(verdict.quarantine),
        "contracts_quarantined": contracts_quarantined, "events_appended": 0, "validated": False})
    memo["valid"] = verdict.valid
    if memo.in_process:  # later steps read only these raw tables (the report counts every visible contract)
        memo["src"] = {name: src[name] for name in ("locations", "contracts")}
    return {"quarantined_rows": len(verdict.quarantine), "locations": due_locations(conn, run, memo)}


def due_locations(conn: Connection, run: Run, memo: Memo | None = None) -> list[int]:
    """The valid locations: the work of owed_periods, suspension_filter and build_invoices is mapped over them."""
    valid = _valid(conn, run, Memo() if memo is None else memo)
    return sorted(int(i) for i in valid["locations"]["id"].dropna().unique())


def apply_rule(conn: Connection, run: Run, rule: str, memo: Memo | None = None) -> int:
    """Append the suspend events one rule owes; returns how many were appended."""
    if rule not in RULES:
        raise FlexbillError(f"unknown rule '{rule}': one of {', '.join(RULES)}")
    memo = Memo() if memo is None else memo
    _, appended = apply_rules(conn, _valid(conn, run, memo), source=rule, memo=memo)
    conn.execute(update(schema.stg_runs).where(schema.stg_runs.c.run_id == run.run_id)
                 .values(events_appended=schema.stg_runs.c.events_appended + appended))
    memo.pop("suspended", None)
    return appended


def owed_periods(conn: Connection, run: Run, location_id: int | None, memo: Memo | None = None) -> int:
    """Stage the periods each contract of the location owes on D; returns how many."""
    memo = Memo() if memo is None else memo
    terms = _terms(conn, run, memo, location_id)
    ledger, later = _ledger(conn, run, memo)
    candidates, periods = billing.owed_periods(terms, ledger, later, _lines_reader(conn), run.billing_date)
    _stage(conn, schema.stg_candidates, run, candidates, location_id, memo)
    return _stage(conn, schema.stg_periods, run, periods, location_id, memo)


def suspension_filter(conn: Connection, run: Run, location_id: int | None, memo: Memo | None = None) -> int:
    """Stage each candidate's status (bill, suspended, archived) and the cursors that move; returns skips."""
    memo = Memo() if memo is None else memo
    candidates = _unstage(conn, schema.stg_candidates, run, location_id, memo)
    periods = _unstage(conn, schema.stg_periods, run, location_id, memo)
    status, skipped, ledger = billing.suspension_filter(candidates, periods, _suspended(conn, run, memo),
                                                        run.billing_date)
    _stage(conn, schema.stg_status, run, status, location_id, memo)
    _stage(conn, schema.stg_ledger, run, ledger, location_id, memo)
    return len(skipped)


def build_invoices(conn: Connection, run: Run, location_id: int | None, memo: Memo | None = None) -> int:
    """Stage the location's invoices and lines; returns how many invoices."""
    memo = Memo() if memo is None else memo
    periods = _unstage(conn, schema.stg_periods, run, location_id, memo)
    status = _unstage(conn, schema.stg_status, run, location_id, memo)
    lines, invoices = billing.build_invoices(periods, status, _terms(conn, run, memo, location_id), run.billing_date)
    _stage(conn, schema.stg_lines, run, lines, location_id, memo)
    return _stage(conn, schema.stg_invoices, run, invoices, location_id, memo)


def active_user_report(conn: Connection, run: Run, memo: Memo | None = None) -> int:
    """Stage the active-user report as of the cutoff; returns the number of locations."""
    memo = Memo() if memo is None else memo
    src, valid = _snapshot(conn, run, memo), _valid(conn, run, memo)
    frame = report.active_users(src["locations"], valid["customers"], src["contracts"],
                                _suspended(conn, run, memo), run.billing_date)
    conn.execute(delete(schema.stg_report).where(schema.stg_report.c.run_id == run.run_id))
    for location_id, part in frame.groupby("location_id"):
        _stage(conn, schema.stg_report, run, part, int(location_id), memo)
    return len(frame)


def staged_outputs(conn: Connection, run: Run, memo: Memo | None = None) -> tuple[billing.DateResult, pd.DataFrame, pd.DataFrame]:
    """What the run staged, as the frames publish writes: (result, report, quarantine)."""
    d = run.billing_date
    head = conn.execute(select(schema.stg_runs).where(schema.stg_runs.c.run_id == run.run_id)).mappings().first()
    if head is None:
        raise FlexbillError(f"run {run.run_id} has nothing staged: run its extract_snapshot step first")
    lines = _unstage(conn, schema.stg_lines, run, memo=memo)
    lines["full_cents"] = lines["unit_cents"] * lines["quantity"]
    invoices = _unstage(conn, schema.stg_invoices, run, memo=memo).assign(billing_date=d)
    status = _unstage(conn, schema.stg_status, run, memo=memo)
    skipped = status[(status["reason"] != "") & (status["owed_periods"] > 0)].assign(billing_date=d)[
        ["billing_date", "contract_id", "customer_id", "reason", "owed_periods", "owed_cents"]].reset_index(drop=True)
    ledger = _unstage(conn, schema.stg_ledger, run, memo=memo)[["contract_id", "billed_before"]]
    report_frame = _unstage(conn, schema.stg_report, run, memo=memo)
    report_frame = report_frame.assign(report_date=d)[["report_date", "location_id", *report.COUNTS]]
    report_frame = report_frame.sort_values("location_id").reset_index(drop=True)
    quarantine = _unstage(conn, schema.stg_quarantine, run, memo=memo)[["source_table", "row_id", "reason"]]
    stats = billing.run_stats(status, lines, invoices, d)
    stats.update(events_appended=head["events_appended"], quarantined_rows=head["quarantined_rows"],
                 contracts_quarantined=head["contracts_quarantined"])
    result = billing.DateResult(lines=lines, invoices=invoices, skipped=skipped, ledger=ledger, stats=stats)
    return result, report_frame, quarantine


def validate_output(conn: Connection, run: Run, memo: Memo | None = None, tamper: Callable | None = None) -> dict:
    """Great Expectations on everything staged; raises OutputRejected, else marks the run publishable."""
    result, report_frame, _ = staged_outputs(conn, run, memo)
    if tamper is not None:
        tamper(result, report_frame)
    locations = (memo["valid"]["locations"] if memo is not None and "valid" in memo  # else a tiny read
                 else extract.read_table(conn, schema.locations, run.cutoff))
    validation.check_outputs(_output_frames(result, report_frame, locations))
    conn.execute(update(schema.stg_runs).where(schema.stg_runs.c.run_id == run.run_id).values(validated=True))
    return result.stats


def publish(conn: Connection, run: Run, memo: Memo | None = None) -> RunSummary:
    """Replace D's outputs with the run's validated staging, in the caller's transaction, under the run lock."""
    dialect.lock_for_run(conn)
    head = conn.execute(select(schema.stg_runs).where(schema.stg_runs.c.run_id == run.run_id)).mappings().first()
    if head is None:
        done = published_by(conn, run)
        if done is not None:  # a retry of a publish that committed (its task died before reporting success)
            return done
    if head is None or not head["validated"]:
        raise FlexbillError(f"run {run.run_id} for {run.billing_date} is not validated: nothing was published")
    if head["publish_seq"] != _publish_seq(conn):
        raise FlexbillError(f"another run published, or a manual suspend/lift was recorded, while run {run.run_id} "
                            f"for {run.billing_date} was staging: its staging is stale, nothing was published; "
                            "rerun the date (clear the whole DAG run)")
    result, report_frame, quarantine = staged_outputs(conn, run, memo)
    clear_date(conn, run.billing_date)
    corrections = _write(conn, run.billing_date, result, quarantine, report_frame)
    _record_run(conn, run.billing_date, "published", head["started_at"], result.stats, None)
    seq = bump_publish_seq(conn)
    if memo is None or not memo.in_process:  # a task that may be retried after this commit (not `flexbill run`)
        dialect.upsert(conn, schema.flexbill_state, [{"name": PUBLISHED + run.run_id, "value": seq}], ["name"])
    clear_staging(conn, run.run_id)
    # other runs of D (abandoned or racing) staged before this publish, so they can never publish: their staged
    # rows go; their head row stays, so their own publish refuses with "stale", as it would have
    stale = select(schema.stg_runs.c.run_id).where(schema.stg_runs.c.billing_date == run.billing_date)
    for run_id in conn.execute(stale).scalars().all():
        clear_staging(conn, run_id, keep_head=True)
    totals = (result.invoices.groupby("currency")
              .agg(invoices=("invoice_id", "size"), subtotal=("subtotal_cents", "sum"),
                   tax=("tax_cents", "sum"), total=("total_cents", "sum")).reset_index())
    return RunSummary(run.billing_date, "published", result.stats, [
        (r.currency, int(r.invoices), from_cents(r.subtotal), from_cents(r.tax), from_cents(r.total))
        for r in totals.itertuples()], corrections=corrections)


PUBLISHED = "published:"  # flexbill_state row per published run id (value: the publish_seq it left)


def published_by(conn: Connection, run: Run) -> RunSummary | None:
    """The summary of D as published, when this very run id published it (None otherwise): a publish task
    retried after its commit finds its work done instead of failing with "not validated"."""
    state = schema.flexbill_state
    if conn.execute(select(state.c.value).where(state.c.name == PUBLISHED + run.run_id)).first() is None:
        return None
    row = conn.execute(select(schema.billing_runs).where(schema.billing_runs.c.billing_date == run.billing_date)
                       ).mappings().first()
    stats = {k: int(row[k]) for k in row.keys() if isinstance(row[k], int) and k != "billing_date"} if row else {}
    from .finance_report import invoices_by_location, totals_by_currency  # the report's own sums, per currency

    totals = totals_by_currency(invoices_by_location(conn, run.billing_date))
    return RunSummary(run.billing_date, "published", stats,
                      [(t["currency"], int(t["invoices"]), t["subtotal"], t["tax"], t["total"]) for t in totals])


def record_failure(engine: Engine, d: date, started: datetime, message: str) -> None:
    with engine.begin() as conn:
        _record_run(conn, d, "failed", started, {}, message)


def _output_frames(result: billing.DateResult, report_frame: pd.DataFrame, locations: pd.DataFrame) -> dict:
    lines_cents = result.lines.groupby("invoice_id")["amount_cents"].sum()
    inv = result.invoices.assign(
        location_currency=lookup(result.invoices["location_id"], locations, "currency"),
        lines_cents=result.invoices["invoice_id"].map(lines_cents),
        subtotal_plus_tax=result.invoices["subtotal_cents"] + result.invoices["tax_cents"])
    rep = report_frame.assign(active_plus_suspended=report_frame["active_users"] + report_frame["suspended_members"])
    return {"invoice_lines": result.lines, "invoices": inv, "skipped_contracts": result.skipped,
            "active_user_report": rep}


def _release(memo: Memo) -> None:
    """Drop what validate_output and publish do not read (in-process runs hold it all otherwise): the snapshot
    but its locations, the terms, the ledger and the staged candidates and periods."""
    for key in ("src", "terms", "ledger", "later", "triggered", "suspended", "quarantined",
                ("staged", schema.stg_candidates.name), ("staged", schema.stg_periods.name)):
        memo.pop(key, None)
    if "valid" in memo:
        memo["valid"] = {"locations": memo["valid"]["locations"]}


def run_billing_date(engine: Engine, d: date, tamper: Callable | None = None,
                     on_step: Callable[[str, float], None] | None = None,
                     preview: Callable[[Connection, RunSummary], object] | None = None,
                     allow_future: bool = False) -> RunSummary:
    """Every step for date D in one transaction holding the run lock (the `flexbill run` path), then the
    grace-period finalization (FLEXBILL_GRACE_DAYS) in the same transaction.

    `on_step(name, seconds)` is called after each step (the benchmark's profile measures memory there).
    `preview(conn, summary)` makes it a dry run: everything is computed and written exactly as a run would,
    `preview` is called on the open transaction (it reads what the run would publish: the report page), then
    the transaction is rolled back, so the database is left as it was.  A blocked preview raises OutputRejected
    after `preview` saw the blocked date."""
    started = utcnow()
    check_cutoff(d, started, allow_future)
    require_schema(engine)
    invoicing.grace_days()  # a malformed FLEXBILL_GRACE_DAYS fails before anything runs
    t0 = time.perf_counter()
    run, memo = Run.new(d), Memo(in_process=True, preview=preview is not None)

    def step(name: str, fn: Callable, *args):
        t = time.perf_counter()
        out = fn(*args)
        if on_step is not None:
            on_step(name, time.perf_counter() - t)
        return out

    try:
        with engine.connect() as conn:
            tx = conn.begin()
            try:
                dialect.lock_for_run(conn)
                _pause("locked")
                step("extract_snapshot", extract_snapshot, conn, run, memo)
                for rule in RULES:
                    step(f"apply_rule {rule}", apply_rule, conn, run, rule, memo)
                _pause("after_rules")
                # the DAG maps these three over locations; here one pass covers every location (None)
                step("owed_periods", owed_periods, conn, run, None, memo)
                step("suspension_filter", suspension_filter, conn, run, None, memo)
                step("build_invoices", build_invoices, conn, run, None, memo)
                step("active_user_report", active_user_report, conn, run, memo)
                _release(memo)
                try:
                    step("validate_output", validate_output, conn, run, memo, tamper)
                except OutputRejected as exc:
                    if preview is None:
                        raise
                    _record_run(conn, d, "failed", started, {}, str(exc))
                    preview(conn, RunSummary(d, "blocked", preview=True))
                    raise OutputRejected(f"preview of {d} (nothing was written): {exc}") from None
                summary = step("publish", publish, conn, run, memo)
                summary.gap = gap_before(conn, d).message(d)
                summary.finalized = step("finalize", invoicing.auto_finalize, conn, d, utcnow())
                _pause("before_commit")
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
            record_failure(engine, d, started, str(exc))
        raise
    except (OperationalError, DBAPIError) as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise DatabaseError(f"the run for {d} failed on the database and wrote nothing: {reason}. "
                            f"Check {redact(engine.url.render_as_string(hide_password=False))} and rerun the date.") from None
    summary.seconds = time.perf_counter() - t0
    return summary


def backfill(engine: Engine, first: date, last: date, progress: Callable[[RunSummary], None] | None = None,
             allow_future: bool = False) -> list[RunSummary]:
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
