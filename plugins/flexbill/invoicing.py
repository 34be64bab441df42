"""The invoice lifecycle in the database: finalization, numbering, credit notes and corrective invoices.

Every function runs in the caller's transaction and expects it to hold the run lock
(`dialect.lock_for_run`): numbers come from `number_series`, moved in the same transaction, so the series
stay gapless (a rolled-back run uses no number) and two writers never take the same number.  The rules
themselves are `flexbill.lifecycle`; the triggers of include/sql/lifecycle.*.sql make the database refuse
any change to what is finalized.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import pandas as pd
from sqlalchemy import Date, func, select
from sqlalchemy.engine import Connection

from . import lifecycle
from .db import dialect, extract
from .db import schema as s
from .errors import InputError, LifecycleViolation
from .money import from_cents
from .pause import pause

GRACE_ENV = "FLEXBILL_GRACE_DAYS"
INVOICE_SERIES, CREDIT_SERIES = "invoice", "credit_note"


def grace_days() -> int:
    """FLEXBILL_GRACE_DAYS (default 0): days a date's drafts wait for finance before a run finalizes them."""
    raw = os.environ.get(GRACE_ENV, "").strip()
    if raw == "":
        return 0
    if not raw.isdigit():
        raise InputError(
            f"{GRACE_ENV}='{raw}' is not a whole number of days >= 0: set it to 0 (finalize at once) "
            "or to the days finance reviews drafts"
        )
    return int(raw)


@dataclass
class Finalized:
    """What one finalization did."""

    through: date
    actor: str
    count: int = 0
    dates: list = field(default_factory=list)  # billing dates whose drafts were finalized
    numbers: dict = field(default_factory=dict)  # location_id -> (first number, last number)
    waiting: list = field(default_factory=list)  # dates whose drafts wait: their latest run is not published


@dataclass
class Corrections:
    """What publishing a date did to its invoices."""

    drafts: int = 0  # invoices written as drafts
    kept: int = 0  # finalized invoices the rerun left as they are (same result)
    credit_notes: list = field(default_factory=list)  # (credit note number, credited invoice number, total)
    corrective: list = field(default_factory=list)  # (corrective number, corrected invoice number, total)


# ------------------------------------------------------------------ numbering


def _last_seqs(conn: Connection, series: str) -> dict[int, int]:
    n = s.number_series
    return {
        int(lid): int(seq)
        for lid, seq in conn.execute(select(n.c.location_id, n.c.last_seq).where(n.c.series == series)).all()
    }


def _save_seqs(conn: Connection, series: str, before: dict, after: dict) -> None:
    rows = [
        {"location_id": lid, "series": series, "last_seq": seq} for lid, seq in after.items() if before.get(lid) != seq
    ]
    dialect.upsert(conn, s.number_series, rows, ["location_id", "series"])


def _numbers(conn: Connection, frame: pd.DataFrame, series: str) -> pd.Series:
    """The next numbers of each location's series for the rows of `frame`, in its order (saved at once)."""
    before = _last_seqs(conn, series)
    number = lifecycle.invoice_number if series == INVOICE_SERIES else lifecycle.credit_note_number
    numbers, after = lifecycle.numbered(frame, before, number)
    _save_seqs(conn, series, before, after)
    return numbers


# ------------------------------------------------------------------ finalization


def _run_states(conn: Connection, dates) -> dict:
    r = s.billing_runs
    rows = conn.execute(select(r.c.billing_date, r.c.status, r.c.message).where(r.c.billing_date.in_(list(dates))))
    return {_as_date(d): (status, message) for d, status, message in rows}


def finalize(conn: Connection, through: date, actor: str, now: datetime, automatic: bool = False) -> Finalized:
    """Finalize every draft with billing_date <= `through`, oldest date first, then by customer, numbering them.

    `automatic` (the grace period of a run): drafts of a date whose latest run is not published wait.  Else
    (`flexbill finalize`, the finalize DAG) every such date, `through` in the future or without a run, or an
    empty actor is an InputError and nothing changes."""
    actor = (actor or "").strip()
    if not actor:
        raise InputError("--actor is required: who approves these invoices (an e-mail)")
    if not automatic:
        today = now.date()
        if through > today:
            raise InputError(
                f"--through {through} is in the future (today is {today} UTC): finalize only dates "
                "that have been billed"
            )
    i = s.invoices
    drafts = dialect.read_frame(
        conn,
        select(i.c.invoice_id, i.c.location_id, i.c.billing_date, i.c.customer_id).where(
            i.c.status == lifecycle.DRAFT, i.c.billing_date <= through
        ),
    )
    drafts.columns = ["invoice_id", "location_id", "billing_date", "customer_id"]
    drafts["billing_date"] = drafts["billing_date"].map(_as_date)
    drafts["customer_id"] = drafts["customer_id"].astype("int64")
    draft_dates = sorted(set(drafts["billing_date"]))
    states = _run_states(conn, {*draft_dates, through})
    blocked = [d for d in draft_dates if states.get(d, ("none",))[0] != "published"]
    out = Finalized(through=through, actor=actor)
    if not automatic:
        if through not in states:
            raise InputError(
                f"{through} has no billing run: run `flexbill run --date {through}` first, then "
                "finalize; nothing was finalized"
            )
        if states[through][0] != "published":
            blocked = sorted({*blocked, through})
        if blocked:
            first = blocked[0]
            why = (states.get(first) or (None, None))[1] or "its latest run did not publish"
            raise InputError(
                f"{', '.join(map(str, blocked))} cannot be finalized: the latest run of {first} was "
                f"blocked ({why}). Fix the cause and rerun "
                f"{'that date' if len(blocked) == 1 else 'those dates'}, then finalize through "
                f"{through}; nothing was finalized"
            )
    else:
        out.waiting = blocked
        drafts = drafts[~drafts["billing_date"].isin(blocked)]
    if drafts.empty:
        return out
    drafts = drafts.sort_values(["billing_date", "customer_id", "invoice_id"], kind="stable").reset_index(drop=True)
    drafts["number"] = _numbers(conn, drafts, INVOICE_SERIES)
    pause("mid_finalize")
    dialect.update_frame(
        conn,
        s.invoices,
        drafts[["invoice_id", "number"]],
        "invoice_id",
        {"status": lifecycle.FINALIZED, "finalized_at": now, "finalized_by": actor},
    )
    out.count = len(drafts)
    out.dates = sorted(set(drafts["billing_date"]))
    for lid, part in drafts.groupby("location_id"):
        out.numbers[int(lid)] = (part["number"].iloc[0], part["number"].iloc[-1])
    return out


# ------------------------------------------------------------------ publishing a date's invoices


def _finalized_of(conn: Connection, d: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """D's finalized invoices and their lines (amounts in cents)."""
    i, li = s.invoices, s.invoice_lines
    invoices = extract.read_table(conn, i, where=(i.c.billing_date == d) & (i.c.status == lifecycle.FINALIZED))
    ids = select(i.c.invoice_id).where(i.c.billing_date == d, i.c.status == lifecycle.FINALIZED)
    lines = extract.read_table(conn, li, where=li.c.invoice_id.in_(ids)).rename(
        columns={"unit_price_cents": "unit_cents"}
    )
    invoices["customer_id"] = invoices["customer_id"].astype("int64")
    lines["customer_id"] = lines["invoice_id"].map(invoices.set_index("invoice_id")["customer_id"]).astype("int64")
    return invoices, lines


def write_date(conn: Connection, d: date, invoices: pd.DataFrame, lines: pd.DataFrame, now: datetime) -> Corrections:
    """Publish D's invoices (the run's result, amounts in cents) over what D already holds.

    D's drafts are replaced.  A customer's finalized invoice equal to the result stays as it is; one that differs
    is credited in full, and the customer's result (if any) becomes a corrective invoice finalized at once.  Every
    other customer of the result gets a draft.  Call it after D's drafts are deleted."""
    out = Corrections()
    old, old_lines = _finalized_of(conn, d)
    rec = lifecycle.reconcile(old, old_lines, invoices, lines, d)
    out.kept = len(rec.kept)
    credited = rec.credited.merge(old, on=["invoice_id", "customer_id"]).sort_values("customer_id", kind="stable")
    if not credited.empty:
        credited = credited.reset_index(drop=True)
        notes = pd.DataFrame(
            {
                "credit_note_id": credited["invoice_id"].map(lifecycle.credit_note_id),
                "number": _numbers(conn, credited, CREDIT_SERIES),
                "invoice_id": credited["invoice_id"],
                "customer_id": credited["customer_id"],
                "location_id": credited["location_id"],
                "billing_date": d,
                "issued_at": now,
                "currency": credited["currency"],
                "reason": credited["reason"],
                "subtotal": credited["subtotal_cents"].map(from_cents),
                "tax": credited["tax_cents"].map(from_cents),
                "total": credited["total_cents"].map(from_cents),
            }
        )
        dialect.insert_frame(conn, s.credit_notes, notes)
        dialect.update_frame(conn, s.invoices, credited[["invoice_id"]], "invoice_id", {"status": lifecycle.CREDITED})
        out.credit_notes = list(zip(notes["number"], credited["number"], notes["total"]))
        pause("mid_correction")

    write = invoices[~invoices["customer_id"].isin(rec.kept)].copy()
    if write.empty:
        return out
    i = s.invoices
    counts = dict(
        conn.execute(
            select(i.c.customer_id, func.count())
            .where(i.c.billing_date == d, i.c.status == lifecycle.CREDITED)
            .group_by(i.c.customer_id)
        ).all()
    )
    base_ids = write["invoice_id"]
    write["invoice_id"] = [
        lifecycle.revision_id(b, int(counts.get(int(c), 0))) for b, c in zip(base_ids, write["customer_id"])
    ]
    ids = dict(zip(write["customer_id"].astype("int64"), write["invoice_id"]))
    replaced = dict(zip(credited["customer_id"].astype("int64"), credited["invoice_id"])) if len(credited) else {}
    write["corrects"] = write["customer_id"].astype("int64").map(replaced)
    write = write.assign(billing_date=d, status=lifecycle.DRAFT)
    dialect.insert_frame(conn, s.invoices, write)  # subtotal, tax and total from their cents
    mine = lines[lines["customer_id"].isin(ids.keys())].copy()
    mine["invoice_id"] = mine["customer_id"].astype("int64").map(ids)
    _insert_lines(conn, d, mine.rename(columns={"unit_cents": "unit_price_cents"}))  # amounts from their cents
    corrective = write[write["corrects"].notna()].sort_values("customer_id", kind="stable").reset_index(drop=True)
    out.drafts = len(write) - len(corrective)
    if not corrective.empty:
        corrective["number"] = _numbers(conn, corrective, INVOICE_SERIES)
        dialect.update_frame(
            conn,
            s.invoices,
            corrective[["invoice_id", "number"]],
            "invoice_id",
            {"status": lifecycle.FINALIZED, "finalized_at": now, "finalized_by": lifecycle.CORRECTION},
        )
        old_numbers = dict(zip(credited["invoice_id"], credited["number"]))
        out.corrective = list(
            zip(
                corrective["number"],
                corrective["corrects"].map(old_numbers),
                corrective["total_cents"].map(from_cents),
            )
        )
    return out


def _insert_lines(conn: Connection, d: date, lines: pd.DataFrame) -> None:
    """The lines of D's new drafts. On PostgreSQL the lines' statement triggers check and add them. SQLite fires its
    triggers once per line: the billed-period trigger (5 of the 7.6 s of a 1M run's 235k lines) and the guard that
    refuses a line on an invoice that is not a draft (~1 s). There the run sets both aside inside its own
    transaction and does their work in one statement: it adds the billed period of every line of D's drafts, and
    that must be every line just inserted (D's earlier drafts are deleted by now), else a line went to an invoice
    that is not one of D's drafts and the run fails with the guard's message."""
    if conn.dialect.name != "sqlite":
        dialect.insert_frame(conn, s.invoice_lines, lines)
        return
    with (
        dialect.sqlite_trigger_set_aside(conn, "flexbill_lines_inserted") as adds,
        dialect.sqlite_trigger_set_aside(conn, "flexbill_lines_insert") as guards,
    ):
        dialect.insert_frame(conn, s.invoice_lines, lines)
        if not len(lines) or not (adds or guards):
            return
        if adds:  # the rows the trigger would add; their count is the guard's check
            on_drafts = conn.execute(
                dialect.sql("billed_periods_of_drafts", billing_date=Date()), {"billing_date": d}
            ).rowcount
        else:
            li, i = s.invoice_lines, s.invoices
            on_drafts = conn.execute(
                select(func.count())
                .select_from(li.join(i, i.c.invoice_id == li.c.invoice_id))
                .where(i.c.billing_date == d, i.c.status == lifecycle.DRAFT)
            ).scalar_one()
        if on_drafts != len(lines):
            raise LifecycleViolation(
                f"a line can only be added to a draft invoice: {len(lines) - on_drafts} of the {len(lines)} new lines "
                f"of {d} are not on one of its drafts; nothing was published (a flexbill bug: report it with this run)"
            )


def delete_drafts(conn: Connection, d: date) -> None:
    """D's drafts and their lines (their billed periods go with the lines: see the lifecycle triggers)."""
    i, li = s.invoices, s.invoice_lines
    drafts = select(i.c.invoice_id).where(i.c.billing_date == d, i.c.status == lifecycle.DRAFT)
    conn.execute(li.delete().where(li.c.invoice_id.in_(drafts)))
    conn.execute(i.delete().where(i.c.billing_date == d, i.c.status == lifecycle.DRAFT))


def auto_finalize(conn: Connection, d: date, now: datetime) -> Finalized:
    """A run's grace-period finalization: the drafts with billing_date <= D - FLEXBILL_GRACE_DAYS (actor `grace`)."""
    return finalize(conn, d - timedelta(days=grace_days()), lifecycle.GRACE, now, automatic=True)


def _as_date(value) -> date:
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
