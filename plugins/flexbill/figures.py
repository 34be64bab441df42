"""Figures of a billing date, read back from the published output tables (never from a run's memory): the read
model shared by the finance page, the CLI summaries and a publish retried after its commit.

Reads only; every function takes an open connection and a billing date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from .clock import cutoff_of
from .db import schema as s

HISTORY_DAYS = 30
LIST_MAX = 500  # rows of a document list on the page; the CSV beside it has them all


def live(i=s.invoices):
    """Invoices that stand (draft or finalized): a credited invoice is cancelled by its credit note."""
    return i.c.status != "credited"


def run_status(conn: Connection, d: date) -> dict:
    row = conn.execute(select(s.billing_runs).where(s.billing_runs.c.billing_date == d)).mappings().first()
    if row is None:
        return {"state": "not run", "ok": False, "text": f"No run for {d} is recorded: run `flexbill run --date {d}`."}
    if row["status"] == "published":
        return {
            "state": "validated",
            "ok": True,
            "row": dict(row),
            "text": f"Validated and published at {row['published_at']:%Y-%m-%d %H:%M:%S} UTC.",
        }
    text = f"Blocked at {row['finished_at']:%Y-%m-%d %H:%M:%S} UTC: {row['message'] or 'no reason recorded'}"
    if row["published_at"] is not None:
        text += f" The figures below are from the last good publish, at {row['published_at']:%Y-%m-%d %H:%M:%S} UTC."
    else:
        text += " Nothing is published for this date."
    return {"state": "blocked", "ok": False, "row": dict(row), "text": text}


def invoices_by_location(conn: Connection, d: date) -> list[dict]:
    i, loc = s.invoices, s.locations
    rows = conn.execute(
        select(
            i.c.currency,
            i.c.location_id,
            loc.c.name,
            func.count(),
            func.sum(i.c.subtotal),
            func.sum(i.c.tax),
            func.sum(i.c.total),
        )
        .select_from(i.outerjoin(loc, loc.c.id == i.c.location_id))
        .where(i.c.billing_date == d, live())
        .group_by(i.c.currency, i.c.location_id, loc.c.name)
        .order_by(i.c.currency, i.c.location_id)
    ).all()
    return [
        {
            "currency": c,
            "location_id": lid,
            "location": name,
            "invoices": n,
            "subtotal": _money(sub),
            "tax": _money(tax),
            "total": _money(tot),
        }
        for c, lid, name, n, sub, tax, tot in rows
    ]


def totals_by_currency(rows: list[dict]) -> list[dict]:
    out: dict[str, dict] = {}
    for r in rows:
        t = out.setdefault(
            r["currency"],
            {
                "currency": r["currency"],
                "invoices": 0,
                "subtotal": Decimal("0.00"),
                "tax": Decimal("0.00"),
                "total": Decimal("0.00"),
            },
        )
        for k in ("invoices", "subtotal", "tax", "total"):
            t[k] += r[k]
    return list(out.values())


def skipped(conn: Connection, d: date) -> list[dict]:
    k, c, loc = s.skipped_contracts, s.customers, s.locations
    rows = conn.execute(
        select(k.c.reason, loc.c.currency, func.count(), func.sum(k.c.owed_periods), func.sum(k.c.owed_amount))
        .select_from(k.outerjoin(c, c.c.id == k.c.customer_id).outerjoin(loc, loc.c.id == c.c.location_id))
        .where(k.c.billing_date == d)
        .group_by(k.c.reason, loc.c.currency)
        .order_by(k.c.reason, loc.c.currency)
    ).all()
    return [
        {"reason": r, "currency": cur, "contracts": n, "periods": p, "amount": _money(a)} for r, cur, n, p, a in rows
    ]


AFTER_LIFT, NOT_RUN, RECORDED_LATE = (
    "back-billed after a lift",
    "late (dates not run)",
    "late (recorded or fixed later)",
)


def late_lines(conn: Connection, d: date) -> list[dict]:
    """D's lines for periods that started before D, each with why it is billed late: `back-billed after a lift`
    (the customer was suspended at the cutoff of the period's own start date, so no run could bill it then),
    `late (dates not run)` (a billing date from the period's start to D - 1 has no published run), or `late
    (recorded or fixed later)` (every date ran: the contract was recorded after them, fixed out of quarantine, or
    the date is rerun out of order)."""
    import pandas as pd

    from . import rules
    from .db import extract

    i, li, r, c = s.invoices, s.invoice_lines, s.billing_runs, s.customers
    rows = [
        dict(x._mapping)
        for x in conn.execute(
            select(i.c.currency, i.c.customer_id, c.c.full_name, li.c.contract_id, li.c.period_start, li.c.amount)
            .select_from(li.join(i, i.c.invoice_id == li.c.invoice_id).outerjoin(c, c.c.id == i.c.customer_id))
            .where(i.c.billing_date == d, li.c.period_start < d, live())
            .order_by(i.c.currency, i.c.customer_id, li.c.contract_id, li.c.period_start)
        )
    ]
    if not rows:
        return []
    for row in rows:
        row["period_start"] = _as_date(row["period_start"])
        row["amount"] = _money(row["amount"])
    first = min(row["period_start"] for row in rows)
    customers = sorted({int(row["customer_id"]) for row in rows})
    e, q = s.suspension_events, s.quarantine
    held = set(
        conn.execute(select(q.c.row_id).where(q.c.billing_date == d, q.c.source_table == "suspension_events")).scalars()
    )
    events = pd.concat(
        [
            extract.read_table(conn, e, where=e.c.customer_id.in_(customers[at : at + 5000]))
            for at in range(0, len(customers), 5000)
        ],
        ignore_index=True,
    )
    events = extract.without_voided(conn, events[~events["id"].isin(list(held)) & events["occurred_at"].notna()])
    suspended_on: dict[date, pd.Series] = {}
    for start in sorted({row["period_start"] for row in rows}):
        cutoff = cutoff_of(start)
        suspended_on[start] = rules.suspended_at(events, cutoff)
    published = {
        _as_date(day)
        for day in conn.execute(
            select(r.c.billing_date).where(
                r.c.billing_date.between(first, d - timedelta(days=1)), r.c.status == "published"
            )
        ).scalars()
    }
    for row in rows:
        start = row["period_start"]
        if bool(suspended_on[start].get(int(row["customer_id"]), False)):
            row["kind"] = AFTER_LIFT
        elif any(start + timedelta(days=n) not in published for n in range((d - start).days)):
            row["kind"] = NOT_RUN
        else:
            row["kind"] = RECORDED_LATE
    return rows


def back_billed(conn: Connection, d: date, lines: list[dict] | None = None) -> list[dict]:
    """Lines of D for periods that started before D, per currency and why they are late (see late_lines)."""
    groups: dict[tuple, dict] = {}
    for row in late_lines(conn, d) if lines is None else lines:
        g = groups.setdefault(
            (row["currency"], row["kind"]),
            {
                "currency": row["currency"],
                "kind": row["kind"],
                "customers": set(),
                "periods": 0,
                "amount": Decimal("0.00"),
            },
        )
        g["customers"].add(row["customer_id"])
        g["periods"] += 1
        g["amount"] += row["amount"]
    return [{**g, "customers": len(g["customers"])} for _, g in sorted(groups.items())]


def invoice_list(conn: Connection, d: date, limit: int = LIST_MAX) -> dict:
    """D's invoices (the first `limit`, by number, drafts after): number or id, status, customer, totals."""
    i, c = s.invoices, s.customers
    total = conn.execute(select(func.count()).select_from(i).where(i.c.billing_date == d)).scalar_one()
    rows = [
        dict(x._mapping)
        for x in conn.execute(
            select(
                i.c.invoice_id,
                i.c.number,
                i.c.status,
                i.c.customer_id,
                c.c.full_name,
                i.c.currency,
                i.c.subtotal,
                i.c.tax,
                i.c.total,
                i.c.corrects,
            )
            .select_from(i.outerjoin(c, c.c.id == i.c.customer_id))
            .where(i.c.billing_date == d)
            .order_by(i.c.number.is_(None), i.c.number, i.c.invoice_id)
            .limit(limit)
        )
    ]
    return {"rows": rows, "total": total}


def skipped_list(conn: Connection, d: date, limit: int = LIST_MAX) -> dict:
    """D's skipped contracts, per customer: what stays owed (suspended) and what is not billed (archived)."""
    k, c = s.skipped_contracts, s.customers
    total = conn.execute(select(func.count()).select_from(k).where(k.c.billing_date == d)).scalar_one()
    rows = [
        dict(x._mapping)
        for x in conn.execute(
            select(k.c.customer_id, c.c.full_name, k.c.contract_id, k.c.reason, k.c.owed_periods, k.c.owed_amount)
            .select_from(k.outerjoin(c, c.c.id == k.c.customer_id))
            .where(k.c.billing_date == d)
            .order_by(k.c.reason, k.c.customer_id, k.c.contract_id)
            .limit(limit)
        )
    ]
    return {"rows": rows, "total": total}


def lifecycle(conn: Connection, d: date) -> dict:
    """D's invoices by status (draft, finalized, credited) with their number range per location, D's credit
    notes and corrective invoices, and what happens to the drafts."""
    from . import invoicing

    i, loc, cn = s.invoices, s.locations, s.credit_notes
    statuses = [
        {
            "status": st,
            "location_id": lid,
            "location": name,
            "finalized_by": by,
            "invoices": n,
            "total": _money(tot),
            "first": lo,
            "last": hi,
        }
        for st, lid, name, by, n, tot, lo, hi in conn.execute(
            select(
                i.c.status,
                i.c.location_id,
                loc.c.name,
                i.c.finalized_by,
                func.count(),
                func.sum(i.c.total),
                func.min(i.c.number),
                func.max(i.c.number),
            )
            .select_from(i.outerjoin(loc, loc.c.id == i.c.location_id))
            .where(i.c.billing_date == d)
            .group_by(i.c.status, i.c.location_id, loc.c.name, i.c.finalized_by)
            .order_by(i.c.status, i.c.location_id, i.c.finalized_by)
        ).all()
    ]
    counts = {
        st: sum(r["invoices"] for r in statuses if r["status"] == st) for st in ("draft", "finalized", "credited")
    }
    notes = [
        dict(r._mapping)
        for r in conn.execute(
            select(
                cn.c.number,
                cn.c.invoice_id,
                i.c.number.label("invoice_number"),
                cn.c.customer_id,
                cn.c.currency,
                cn.c.total,
                cn.c.issued_at,
                cn.c.reason,
            )
            .select_from(cn.join(i, i.c.invoice_id == cn.c.invoice_id))
            .where(cn.c.billing_date == d)
            .order_by(cn.c.issued_at, cn.c.number)
            .limit(LIST_MAX)
        )
    ]
    old = i.alias("old")
    corrective = [
        dict(r._mapping)
        for r in conn.execute(
            select(
                i.c.number,
                i.c.invoice_id,
                i.c.status,
                old.c.number.label("corrects_number"),
                i.c.customer_id,
                i.c.currency,
                i.c.total,
                i.c.finalized_at,
            )
            .select_from(i.join(old, old.c.invoice_id == i.c.corrects))
            .where(i.c.billing_date == d)
            .order_by(i.c.finalized_at, i.c.number)
            .limit(LIST_MAX)
        )
    ]
    try:
        grace = invoicing.grace_days()
    except Exception:  # noqa: BLE001 - the page says what it can; the run itself refuses a bad setting
        grace = None
    if counts["draft"] == 0:
        pending = None
    elif grace is None:
        pending = f"{invoicing.GRACE_ENV} is not a whole number of days: fix it; until then finalize by hand."
    else:
        when = d + timedelta(days=grace)
        pending = (
            f"{counts['draft']} drafts wait for finance: they are finalized by `flexbill finalize --through {d} "
            f"--actor <you>` or automatically by the run of {when} (grace period {grace} days)."
        )
    return {
        "by_status": statuses,
        "counts": counts,
        "credit_notes": notes,
        "corrective": corrective,
        "pending": pending,
    }


def split_reason(reason: str) -> tuple[str, str]:
    """(what is wrong, what to do): reasons read '<problem>: <fix>'; a dependent row names its parent."""
    if reason.startswith("depends on quarantined "):
        parent = reason[len("depends on quarantined ") :].split(" (", 1)[0]
        return reason, f"fix {parent} (listed here): this row is billed again once its {parent.split()[0]} passes"
    depth = 0
    for pos, ch in enumerate(reason):
        depth += ch == "(" or -(ch == ")")
        if depth == 0 and reason.startswith(": ", pos):
            return reason[:pos], reason[pos + 2 :]
    return reason, "correct the row in the billing database, then rerun the date"


def quarantine(conn: Connection, d: date) -> list[dict]:
    q = s.quarantine
    rows = conn.execute(
        select(q.c.source_table, q.c.row_id, q.c.reason)
        .where(q.c.billing_date == d)
        .order_by(q.c.source_table, q.c.row_id)
    ).all()
    out = []
    for table, row_id, reason in rows:
        problem, fix = split_reason(reason)
        out.append({"table": table, "row_id": row_id, "reason": reason, "problem": problem, "fix": fix})
    return out


def active_users(conn: Connection, d: date) -> list[dict]:
    r, loc = s.active_user_report, s.locations
    rows = conn.execute(
        select(
            r.c.location_id,
            loc.c.name,
            r.c.members,
            r.c.active_users,
            r.c.suspended_members,
            r.c.suspended_with_portal_access,
            r.c.contacts,
        )
        .select_from(r.outerjoin(loc, loc.c.id == r.c.location_id))
        .where(r.c.report_date == d)
        .order_by(r.c.location_id)
    ).all()
    keys = [
        "location_id",
        "location",
        "members",
        "active_users",
        "suspended_members",
        "suspended_with_portal_access",
        "contacts",
    ]
    return [dict(zip(keys, row)) for row in rows]


# What the portal list reads of the source (its customers' names and e-mails are read by id, for the list only): at
# 10M contracts, reading every column of contracts and customers as text was the finance report's peak memory.
PORTAL_COLUMNS = {
    "customers": ("id", "location_id", "archived_at", "portal_access"),
    "suspension_events": ("id", "customer_id", "occurred_at", "action", "source"),
    "contracts": ("id", "customer_id", "cancellation_date"),
}


def portal_review(conn: Connection, d: date, src: dict | None = None) -> list[dict]:
    """The suspended members who still have Members Portal access at D's cutoff: the list an admin reviews.

    `src`: D's snapshot (extract.snapshot at D's cutoff) when the caller has read it already."""
    from . import report, rules
    from .db import extract

    cutoff = cutoff_of(d)
    q = s.quarantine
    bad = conn.execute(select(q.c.source_table, q.c.row_id).where(q.c.billing_date == d)).all()
    held = {(t, int(rid)) for t, rid in bad}
    if src is None:
        src = extract.snapshot(conn, cutoff, columns=PORTAL_COLUMNS)
    valid = {
        name: src[name][~src[name]["id"].isin([rid for t, rid in held if t == name])]
        for name in ("customers", "suspension_events")
    }
    valid["suspension_events"] = extract.without_voided(conn, valid["suspension_events"])
    suspended = rules.suspended_at(valid["suspension_events"], cutoff)
    frame = report.suspended_with_portal_access(valid["customers"], src["contracts"], suspended, d)
    names = _names(conn, frame["customer_id"].tolist())
    since = _suspended_since(valid["suspension_events"], cutoff)
    out = []
    for r in frame.sort_values(["location_id", "customer_id"]).itertuples():
        cid = int(r.customer_id)
        full_name, email = names.get(cid, (None, None))
        out.append(
            {
                "customer_id": cid,
                "location_id": int(r.location_id),
                "full_name": full_name,
                "email": email,
                "suspended_since": since.get(cid),
            }
        )
    return out


def _names(conn: Connection, ids: list[int], chunk: int = 5000) -> dict:
    """customer id -> (full_name, email), read for these customers only (the snapshot leaves names out)."""
    c = s.customers
    out = {}
    for at in range(0, len(ids), chunk):
        for cid, name, email in conn.execute(
            select(c.c.id, c.c.full_name, c.c.email).where(c.c.id.in_(ids[at : at + chunk]))
        ):
            out[int(cid)] = (name, email)
    return out


def _suspended_since(events, cutoff) -> dict:
    import pandas as pd

    ev = events[events["occurred_at"] < pd.Timestamp(cutoff)]
    last = ev.sort_values(["customer_id", "occurred_at", "id"], kind="stable").groupby("customer_id").tail(1)
    return {int(c): (t, src) for c, t, src in zip(last["customer_id"], last["occurred_at"], last["source"])}


def reconciliation(conn: Connection, d: date) -> dict | None:
    """The run's reconciliation as billing_runs records it (contracts with computable owed periods = invoiced +
    skipped + billed on later dates; quarantined contracts beside them), checked against the output tables."""
    run = conn.execute(select(s.billing_runs).where(s.billing_runs.c.billing_date == d)).mappings().first()
    if run is None:
        return None
    i, li, k, q = s.invoices, s.invoice_lines, s.skipped_contracts, s.quarantine
    invoiced = conn.execute(
        select(func.count(func.distinct(li.c.contract_id)))
        .select_from(li.join(i, i.c.invoice_id == li.c.invoice_id))
        .where(i.c.billing_date == d, live())
    ).scalar_one()
    skipped_n = conn.execute(select(func.count()).where(k.c.billing_date == d)).scalar_one()
    quarantined = conn.execute(
        select(func.count()).where(and_(q.c.billing_date == d, q.c.source_table == "contracts"))
    ).scalar_one()
    owed, later = run["contracts_owed"], run["contracts_billed_later"]
    ok = owed == invoiced + skipped_n + later and (
        run["contracts_invoiced"],
        run["contracts_skipped"],
        run["contracts_quarantined"],
    ) == (invoiced, skipped_n, quarantined)
    return {
        "owed": owed,
        "invoiced": invoiced,
        "skipped": skipped_n,
        "quarantined": quarantined,
        "billed_later": later,
        "ok": ok,
        "status": run["status"],
    }


def history(conn: Connection, d: date, days: int = HISTORY_DAYS) -> dict:
    """Per date of the last `days` ending at D: invoiced total per currency and quarantined rows; a date without a
    published run is None (a gap on the chart), never a zero."""
    first = d - timedelta(days=days - 1)
    i, q, r = s.invoices, s.quarantine, s.billing_runs
    dates = [first + timedelta(days=n) for n in range(days)]
    ran = {
        _as_date(day)
        for day in conn.execute(
            select(r.c.billing_date).where(r.c.billing_date.between(first, d), r.c.status == "published")
        ).scalars()
    }
    totals: dict[str, dict] = {}
    for day, cur, total in conn.execute(
        select(i.c.billing_date, i.c.currency, func.sum(i.c.total))
        .where(i.c.billing_date.between(first, d), live())
        .group_by(i.c.billing_date, i.c.currency)
    ).all():
        totals.setdefault(cur, {})[_as_date(day)] = _money(total)
    quarantined = {
        _as_date(day): n
        for day, n in conn.execute(
            select(q.c.billing_date, func.count()).where(q.c.billing_date.between(first, d)).group_by(q.c.billing_date)
        ).all()
    }
    return {
        "dates": dates,
        "ran": [day in ran for day in dates],
        "totals": {
            cur: [by_day.get(day, Decimal("0.00")) if day in ran else None for day in dates]
            for cur, by_day in sorted(totals.items())
        },
        "quarantined": [quarantined.get(day, 0) if day in ran else None for day in dates],
    }


def _as_date(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _money(value) -> Decimal:
    return Decimal("0.00") if value is None else Decimal(str(value)).quantize(Decimal("0.01"))


# ------------------------------------------------------------------ dates without a published run


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
            return (
                f"no billing date before {d} has a published run: if this operator is new, that is expected; "
                f"otherwise run the earlier dates first (periods owed before {d} are billed on it as late)"
            )
        if self.missing == 1:
            state = "was blocked by the output gate" if self.blocked else "was never run"
            return (
                f"{day_before} has no published run (it {state}): its periods are billed on {d} as late; "
                f"run {day_before} first to bill them on their own date"
            )
        return (
            f"{day_before} has no published run: the {self.missing} dates {self.previous + timedelta(days=1)}.."
            f"{day_before} were never published (last published: {self.previous}); their periods are billed on "
            f"{d} as late; backfill them first to bill each on its own date"
        )


def gap_before(conn: Connection, d: date) -> Gap:
    r = s.billing_runs
    previous = conn.execute(
        select(func.max(r.c.billing_date)).where(r.c.billing_date < d, r.c.status == "published")
    ).scalar()
    if previous is None:
        return Gap(None, 1, False)
    previous = _as_date(previous)
    blocked = conn.execute(select(r.c.status).where(r.c.billing_date == d - timedelta(days=1))).scalar() == "failed"
    return Gap(previous, (d - previous).days - 1, blocked)
