"""The data-quality report finance reads before a billing date's invoices go out.

`write_report(engine, D)` writes, under <out>/<D>/ (--out, $FLEXBILL_REPORT_DIR, else var/reports):

  index.html       one self-contained page (inline CSS, the chart as inline SVG drawn by matplotlib;
                   nothing loaded from the network): run status, invoices per currency and location,
                   skipped contracts and back-billing, quarantine with what to fix, the active-user
                   report with the suspended-with-portal-access list, reconciliation, the Great
                   Expectations checks with a link to the GX Data Docs, and the last 30 dates;
  invoices.csv, skipped.csv, quarantine.csv   the date's rows, for a spreadsheet.

Every figure is read back from the output tables (what was published), never from the run's memory.
Text from the billing database is escaped (Jinja2 autoescape); the database URL is shown redacted.
"""

from __future__ import annotations

import csv
import io
import os
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection, Engine

from .db import schema as s

HISTORY_DAYS = 30
TEMPLATE = "finance_report.html.j2"
LIST_MAX = 500  # rows of a document list on the page; the CSV beside it has them all


def live(i=s.invoices):
    """Invoices that stand (draft or finalized): a credited invoice is cancelled by its credit note."""
    return i.c.status != "credited"


def report_dir(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("FLEXBILL_REPORT_DIR") or "var/reports").resolve()


# ------------------------------------------------------------------ figures, read from the output tables

def run_status(conn: Connection, d: date) -> dict:
    row = conn.execute(select(s.billing_runs).where(s.billing_runs.c.billing_date == d)).mappings().first()
    if row is None:
        return {"state": "not run", "ok": False, "text": f"No run for {d} is recorded: run `flexbill run --date {d}`."}
    if row["status"] == "published":
        return {"state": "validated", "ok": True, "row": dict(row),
                "text": f"Validated and published at {row['published_at']:%Y-%m-%d %H:%M:%S} UTC."}
    text = f"Blocked at {row['finished_at']:%Y-%m-%d %H:%M:%S} UTC: {row['message'] or 'no reason recorded'}"
    if row["published_at"] is not None:
        text += f" The figures below are from the last good publish, at {row['published_at']:%Y-%m-%d %H:%M:%S} UTC."
    else:
        text += " Nothing is published for this date."
    return {"state": "blocked", "ok": False, "row": dict(row), "text": text}


def invoices_by_location(conn: Connection, d: date) -> list[dict]:
    i, loc = s.invoices, s.locations
    rows = conn.execute(
        select(i.c.currency, i.c.location_id, loc.c.name, func.count(), func.sum(i.c.subtotal), func.sum(i.c.tax),
               func.sum(i.c.total))
        .select_from(i.outerjoin(loc, loc.c.id == i.c.location_id))
        .where(i.c.billing_date == d, live()).group_by(i.c.currency, i.c.location_id, loc.c.name)
        .order_by(i.c.currency, i.c.location_id)).all()
    return [{"currency": c, "location_id": lid, "location": name, "invoices": n, "subtotal": _money(sub),
             "tax": _money(tax), "total": _money(tot)} for c, lid, name, n, sub, tax, tot in rows]


def totals_by_currency(rows: list[dict]) -> list[dict]:
    out: dict[str, dict] = {}
    for r in rows:
        t = out.setdefault(r["currency"], {"currency": r["currency"], "invoices": 0, "subtotal": Decimal("0.00"),
                                           "tax": Decimal("0.00"), "total": Decimal("0.00")})
        for k in ("invoices", "subtotal", "tax", "total"):
            t[k] += r[k]
    return list(out.values())


def skipped(conn: Connection, d: date) -> list[dict]:
    k, c, loc = s.skipped_contracts, s.customers, s.locations
    rows = conn.execute(
        select(k.c.reason, loc.c.currency, func.count(), func.sum(k.c.owed_periods), func.sum(k.c.owed_amount))
        .select_from(k.outerjoin(c, c.c.id == k.c.customer_id).outerjoin(loc, loc.c.id == c.c.location_id))
        .where(k.c.billing_date == d).group_by(k.c.reason, loc.c.currency).order_by(k.c.reason, loc.c.currency)).all()
    return [{"reason": r, "currency": cur, "contracts": n, "periods": p, "amount": _money(a)}
            for r, cur, n, p, a in rows]


AFTER_LIFT, NOT_RUN, RECORDED_LATE = "back-billed after a lift", "late (dates not run)", "late (recorded or fixed later)"


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
    rows = [dict(x._mapping) for x in conn.execute(
        select(i.c.currency, i.c.customer_id, c.c.full_name, li.c.contract_id, li.c.period_start, li.c.amount)
        .select_from(li.join(i, i.c.invoice_id == li.c.invoice_id).outerjoin(c, c.c.id == i.c.customer_id))
        .where(i.c.billing_date == d, li.c.period_start < d, live())
        .order_by(i.c.currency, i.c.customer_id, li.c.contract_id, li.c.period_start))]
    if not rows:
        return []
    for row in rows:
        row["period_start"] = _as_date(row["period_start"])
        row["amount"] = _money(row["amount"])
    first = min(row["period_start"] for row in rows)
    customers = sorted({int(row["customer_id"]) for row in rows})
    e, q = s.suspension_events, s.quarantine
    held = set(conn.execute(select(q.c.row_id).where(q.c.billing_date == d, q.c.source_table == "suspension_events"))
               .scalars())
    events = pd.concat([extract.read_table(conn, e, where=e.c.customer_id.in_(customers[at:at + 5000]))
                        for at in range(0, len(customers), 5000)], ignore_index=True)
    events = extract.without_voided(conn, events[~events["id"].isin(list(held)) & events["occurred_at"].notna()])
    suspended_on: dict[date, pd.Series] = {}
    for start in sorted({row["period_start"] for row in rows}):
        cutoff = datetime.combine(start, datetime.min.time()) + timedelta(days=1)
        suspended_on[start] = rules.suspended_at(events, cutoff)
    published = {_as_date(day) for day in conn.execute(select(r.c.billing_date).where(
        r.c.billing_date.between(first, d - timedelta(days=1)), r.c.status == "published")).scalars()}
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
        g = groups.setdefault((row["currency"], row["kind"]), {"currency": row["currency"], "kind": row["kind"],
                                                                "customers": set(), "periods": 0,
                                                                "amount": Decimal("0.00")})
        g["customers"].add(row["customer_id"])
        g["periods"] += 1
        g["amount"] += row["amount"]
    return [{**g, "customers": len(g["customers"])} for _, g in sorted(groups.items())]


def invoice_list(conn: Connection, d: date, limit: int = LIST_MAX) -> dict:
    """D's invoices (the first `limit`, by number, drafts after): number or id, status, customer, totals."""
    i, c = s.invoices, s.customers
    total = conn.execute(select(func.count()).select_from(i).where(i.c.billing_date == d)).scalar_one()
    rows = [dict(x._mapping) for x in conn.execute(
        select(i.c.invoice_id, i.c.number, i.c.status, i.c.customer_id, c.c.full_name, i.c.currency, i.c.subtotal,
               i.c.tax, i.c.total, i.c.corrects)
        .select_from(i.outerjoin(c, c.c.id == i.c.customer_id)).where(i.c.billing_date == d)
        .order_by(i.c.number.is_(None), i.c.number, i.c.invoice_id).limit(limit))]
    return {"rows": rows, "total": total}


def skipped_list(conn: Connection, d: date, limit: int = LIST_MAX) -> dict:
    """D's skipped contracts, per customer: what stays owed (suspended) and what is not billed (archived)."""
    k, c = s.skipped_contracts, s.customers
    total = conn.execute(select(func.count()).select_from(k).where(k.c.billing_date == d)).scalar_one()
    rows = [dict(x._mapping) for x in conn.execute(
        select(k.c.customer_id, c.c.full_name, k.c.contract_id, k.c.reason, k.c.owed_periods, k.c.owed_amount)
        .select_from(k.outerjoin(c, c.c.id == k.c.customer_id)).where(k.c.billing_date == d)
        .order_by(k.c.reason, k.c.customer_id, k.c.contract_id).limit(limit))]
    return {"rows": rows, "total": total}


def lifecycle(conn: Connection, d: date) -> dict:
    """D's invoices by status (draft, finalized, credited) with their number range per location, D's credit
    notes and corrective invoices, and what happens to the drafts."""
    from . import invoicing

    i, loc, cn = s.invoices, s.locations, s.credit_notes
    statuses = [{"status": st, "location_id": lid, "location": name, "finalized_by": by, "invoices": n,
                 "total": _money(tot), "first": lo, "last": hi}
                for st, lid, name, by, n, tot, lo, hi in conn.execute(
                    select(i.c.status, i.c.location_id, loc.c.name, i.c.finalized_by, func.count(), func.sum(i.c.total),
                           func.min(i.c.number), func.max(i.c.number))
                    .select_from(i.outerjoin(loc, loc.c.id == i.c.location_id)).where(i.c.billing_date == d)
                    .group_by(i.c.status, i.c.location_id, loc.c.name, i.c.finalized_by)
                    .order_by(i.c.status, i.c.location_id, i.c.finalized_by)).all()]
    counts = {st: sum(r["invoices"] for r in statuses if r["status"] == st) for st in ("draft", "finalized", "credited")}
    notes = [dict(r._mapping) for r in conn.execute(
        select(cn.c.number, cn.c.invoice_id, i.c.number.label("invoice_number"), cn.c.customer_id, cn.c.currency,
               cn.c.total, cn.c.issued_at, cn.c.reason)
        .select_from(cn.join(i, i.c.invoice_id == cn.c.invoice_id))
        .where(cn.c.billing_date == d).order_by(cn.c.issued_at, cn.c.number).limit(LIST_MAX))]
    old = i.alias("old")
    corrective = [dict(r._mapping) for r in conn.execute(
        select(i.c.number, i.c.invoice_id, i.c.status, old.c.number.label("corrects_number"), i.c.customer_id,
               i.c.currency, i.c.total, i.c.finalized_at)
        .select_from(i.join(old, old.c.invoice_id == i.c.corrects))
        .where(i.c.billing_date == d).order_by(i.c.finalized_at, i.c.number).limit(LIST_MAX))]
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
        pending = (f"{counts['draft']} drafts wait for finance: they are finalized by `flexbill finalize --through {d} "
                   f"--actor <you>` or automatically by the run of {when} (grace period {grace} days).")
    return {"by_status": statuses, "counts": counts, "credit_notes": notes, "corrective": corrective,
            "pending": pending}


def split_reason(reason: str) -> tuple[str, str]:
    """(what is wrong, what to do): reasons read '<problem>: <fix>'; a dependent row names its parent."""
    if reason.startswith("depends on quarantined "):
        parent = reason[len("depends on quarantined "):].split(" (", 1)[0]
        return reason, f"fix {parent} (listed here): this row is billed again once its {parent.split()[0]} passes"
    depth = 0
    for pos, ch in enumerate(reason):
        depth += ch == "(" or -(ch == ")")
        if depth == 0 and reason.startswith(": ", pos):
            return reason[:pos], reason[pos + 2:]
    return reason, "correct the row in the billing database, then rerun the date"


def quarantine(conn: Connection, d: date) -> list[dict]:
    q = s.quarantine
    rows = conn.execute(select(q.c.source_table, q.c.row_id, q.c.reason).where(q.c.billing_date == d)
                        .order_by(q.c.source_table, q.c.row_id)).all()
    out = []
    for table, row_id, reason in rows:
        problem, fix = split_reason(reason)
        out.append({"table": table, "row_id": row_id, "reason": reason, "problem": problem, "fix": fix})
    return out


def active_users(conn: Connection, d: date) -> list[dict]:
    r, loc = s.active_user_report, s.locations
    rows = conn.execute(
        select(r.c.location_id, loc.c.name, r.c.members, r.c.active_users, r.c.suspended_members,
               r.c.suspended_with_portal_access, r.c.contacts)
        .select_from(r.outerjoin(loc, loc.c.id == r.c.location_id))
        .where(r.c.report_date == d).order_by(r.c.location_id)).all()
    keys = ["location_id", "location", "members", "active_users", "suspended_members",
            "suspended_with_portal_access", "contacts"]
    return [dict(zip(keys, row)) for row in rows]


def portal_review(conn: Connection, d: date, src: dict | None = None) -> list[dict]:
    """The suspended members who still have Members Portal access at D's cutoff: the list an admin reviews.

    `src`: D's snapshot (extract.snapshot at D's cutoff) when the caller has read it already."""
    from . import report, rules
    from .db import extract
    from .steps import cutoff_of

    cutoff = cutoff_of(d)
    q = s.quarantine
    bad = conn.execute(select(q.c.source_table, q.c.row_id).where(q.c.billing_date == d)).all()
    held = {(t, int(rid)) for t, rid in bad}
    if src is None:
        src = extract.snapshot(conn, cutoff)
    valid = {name: src[name][~src[name]["id"].isin([rid for t, rid in held if t == name])]
             for name in ("customers", "suspension_events")}
    valid["suspension_events"] = extract.without_voided(conn, valid["suspension_events"])
    suspended = rules.suspended_at(valid["suspension_events"], cutoff)
    frame = report.suspended_with_portal_access(valid["customers"], src["contracts"], suspended, d)
    names = _names(conn, frame["customer_id"].tolist())
    since = _suspended_since(valid["suspension_events"], cutoff)
    out = []
    for r in frame.sort_values(["location_id", "customer_id"]).itertuples():
        cid = int(r.customer_id)
        full_name, email = names.get(cid, (None, None))
        out.append({"customer_id": cid, "location_id": int(r.location_id), "full_name": full_name, "email": email,
                    "suspended_since": since.get(cid)})
    return out


def _names(conn: Connection, ids: list[int], chunk: int = 5000) -> dict:
    """customer id -> (full_name, email), read for these customers only (the snapshot leaves names out)."""
    c = s.customers
    out = {}
    for at in range(0, len(ids), chunk):
        for cid, name, email in conn.execute(select(c.c.id, c.c.full_name, c.c.email)
                                             .where(c.c.id.in_(ids[at:at + chunk]))):
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
    invoiced = conn.execute(select(func.count(func.distinct(li.c.contract_id)))
                            .select_from(li.join(i, i.c.invoice_id == li.c.invoice_id))
                            .where(i.c.billing_date == d, live())).scalar_one()
    skipped_n = conn.execute(select(func.count()).where(k.c.billing_date == d)).scalar_one()
    quarantined = conn.execute(select(func.count()).where(
        and_(q.c.billing_date == d, q.c.source_table == "contracts"))).scalar_one()
    owed, later = run["contracts_owed"], run["contracts_billed_later"]
    ok = (owed == invoiced + skipped_n + later
          and (run["contracts_invoiced"], run["contracts_skipped"], run["contracts_quarantined"])
          == (invoiced, skipped_n, quarantined))
    return {"owed": owed, "invoiced": invoiced, "skipped": skipped_n, "quarantined": quarantined,
            "billed_later": later, "ok": ok, "status": run["status"]}


def history(conn: Connection, d: date, days: int = HISTORY_DAYS) -> dict:
    """Per date of the last `days` ending at D: invoiced total per currency and quarantined rows; a date without a
    published run is None (a gap on the chart), never a zero."""
    first = d - timedelta(days=days - 1)
    i, q, r = s.invoices, s.quarantine, s.billing_runs
    dates = [first + timedelta(days=n) for n in range(days)]
    ran = {_as_date(day) for day in conn.execute(select(r.c.billing_date).where(
        r.c.billing_date.between(first, d), r.c.status == "published")).scalars()}
    totals: dict[str, dict] = {}
    for day, cur, total in conn.execute(
            select(i.c.billing_date, i.c.currency, func.sum(i.c.total))
            .where(i.c.billing_date.between(first, d), live()).group_by(i.c.billing_date, i.c.currency)).all():
        totals.setdefault(cur, {})[_as_date(day)] = _money(total)
    quarantined = {_as_date(day): n for day, n in conn.execute(
        select(q.c.billing_date, func.count()).where(q.c.billing_date.between(first, d))
        .group_by(q.c.billing_date)).all()}
    return {"dates": dates, "ran": [day in ran for day in dates],
            "totals": {cur: [by_day.get(day, Decimal("0.00")) if day in ran else None for day in dates]
                       for cur, by_day in sorted(totals.items())},
            "quarantined": [quarantined.get(day, 0) if day in ran else None for day in dates]}


def _as_date(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _money(value) -> Decimal:
    return Decimal("0.00") if value is None else Decimal(str(value)).quantize(Decimal("0.01"))


# ------------------------------------------------------------------ rendering

def chart_svg(hist: dict) -> str:
    """The last dates' invoiced totals, one panel per currency (amounts in two currencies never share an axis),
    and quarantined rows, as an inline SVG (matplotlib).  A date without a published run is a gap, not a zero."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9})
    currencies = list(hist["totals"].items())
    panels = max(len(currencies), 1)
    fig, axes = plt.subplots(panels + 1, 1, figsize=(9, 1.8 * panels + 1.6), sharex=True,
                             height_ratios=[3] * panels + [1.3], squeeze=False)
    axes = [a[0] for a in axes]
    x = list(range(len(hist["dates"])))
    nan = float("nan")
    for ax, (currency, values) in zip(axes, currencies):
        ax.plot(x, [nan if v is None else float(v) for v in values], marker="o", markersize=3)  # display only
        ax.set_ylabel(f"{currency} invoiced")
        ax.grid(alpha=0.3)
    if not currencies:
        axes[0].text(0.5, 0.5, "no invoices in these dates", ha="center", va="center", transform=axes[0].transAxes)
    bottom = axes[-1]
    bottom.bar(x, [nan if v is None else v for v in hist["quarantined"]], color="#c0392b")
    for n, ran in enumerate(hist.get("ran", [])):
        if not ran:  # a date never run (or blocked): shaded on every panel, so nobody reads it as zero
            for ax in axes:
                ax.axvspan(n - 0.5, n + 0.5, color="#d5dbe3", alpha=0.5, lw=0)
    bottom.set_ylabel("quarantined rows")
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.grid(alpha=0.3, axis="y")
    step = max(1, len(x) // 10)
    bottom.set_xticks(x[::step], [d.isoformat() for d in hist["dates"]][::step], rotation=30, ha="right")
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]


def _environment():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["money"] = lambda v: f"{v:,.2f}"
    return env


def _write_csv(path: Path, header: list[str], rows) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


EXPORTS = ("invoices", "invoice_lines", "credit_notes", "skipped", "quarantine")


def export_csvs(conn: Connection, d: date, folder: Path) -> dict[str, Path]:
    """The date's rows as CSV (for a spreadsheet) and Parquet (for analysts: typed columns, money as decimals)."""
    i, k, q, cn, li = s.invoices, s.skipped_contracts, s.quarantine, s.credit_notes, s.invoice_lines
    paths = {name: folder / f"{name}.csv" for name in EXPORTS}
    cols = ["invoice_id", "contract_id", "period_start", "period_end", "quantity", "unit_price", "amount", "prorated"]
    _write_csv(paths["invoice_lines"], ["billing_date", "status", *cols], conn.execute(
        select(i.c.billing_date, i.c.status, *(li.c[c] for c in cols))
        .select_from(li.join(i, i.c.invoice_id == li.c.invoice_id)).where(i.c.billing_date == d)
        .order_by(li.c.invoice_id, li.c.contract_id, li.c.period_start)).all())
    cols = ["invoice_id", "customer_id", "location_id", "billing_date", "currency", "subtotal", "tax", "total",
            "status", "number", "finalized_at", "finalized_by", "corrects"]
    _write_csv(paths["invoices"], cols, conn.execute(
        select(*(i.c[c] for c in cols)).where(i.c.billing_date == d).order_by(i.c.invoice_id)).all())
    cols = [c.name for c in cn.columns]
    _write_csv(paths["credit_notes"], cols, conn.execute(
        select(*(cn.c[c] for c in cols)).where(cn.c.billing_date == d).order_by(cn.c.number)).all())
    cols = ["billing_date", "contract_id", "customer_id", "reason", "owed_periods", "owed_amount"]
    _write_csv(paths["skipped"], cols, conn.execute(
        select(*(k.c[c] for c in cols)).where(k.c.billing_date == d).order_by(k.c.contract_id)).all())
    _write_csv(paths["quarantine"], ["billing_date", "source_table", "row_id", "reason"], conn.execute(
        select(q.c.billing_date, q.c.source_table, q.c.row_id, q.c.reason).where(q.c.billing_date == d)
        .order_by(q.c.source_table, q.c.row_id)).all())
    for name in EXPORTS:
        paths[f"{name}.parquet"] = _parquet(paths[name])
    return paths


def _parquet(csv_path: Path) -> Path:
    """The CSV's rows as Parquet: dates as dates, timestamps as timestamps, money as decimal(18, 2)."""
    import decimal

    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    money = {"subtotal", "tax", "total", "unit_price", "amount", "owed_amount"}
    stamps = {"finalized_at", "issued_at"}
    dates = {"billing_date", "period_start", "period_end"}
    with csv_path.open(newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    types = {c: pa.string() for c in header}
    types.update({c: pa.date32() for c in header if c in dates})
    types.update({c: pa.timestamp("us") for c in header if c in stamps})
    table = pacsv.read_csv(csv_path, convert_options=pacsv.ConvertOptions(column_types=types,
                                                                          strings_can_be_null=True))
    columns = []
    for name in table.column_names:
        column = table[name]
        if name in money:
            column = pa.array([None if v is None else decimal.Decimal(v) for v in column.to_pylist()],
                              type=pa.decimal128(18, 2))
        elif name in ("customer_id", "location_id", "contract_id", "row_id", "quantity", "owed_periods"):
            column = pa.array([None if v is None else int(v) for v in column.to_pylist()], type=pa.int64())
        elif name == "prorated":
            column = pa.array([None if v is None else v in ("True", "true", "1") for v in column.to_pylist()])
        columns.append(column)
    out = csv_path.with_suffix(".parquet")
    pq.write_table(pa.table(columns, names=table.column_names), out)
    return out


def write_report(engine: Engine, d: date, out: str | os.PathLike | None = None,
                 gx_directory: str | os.PathLike | None = None, conn: Connection | None = None,
                 preview: bool = False) -> Path:
    """Validate D with Great Expectations (results kept, Data Docs rebuilt) and write D's report; returns index.html.

    `conn`: read through this connection (a dry run's open transaction) instead of a new one.  `preview`: the
    page of a dry run, written to <out>/<D>/preview/ under a banner, so the published date's page stays."""
    folder = report_dir(out) / d.isoformat()
    if preview:
        folder = folder / "preview"
    folder.mkdir(parents=True, exist_ok=True)
    if conn is not None:
        data = _page(engine, conn, d, folder, gx_directory, preview)
    else:
        with engine.connect() as own:
            data = _page(engine, own, d, folder, gx_directory, preview)
    path = folder / "index.html"
    path.write_text(_environment().get_template(TEMPLATE).render(**data), encoding="utf-8")
    return path


def _previewed(status: dict) -> dict:
    state = {"validated": "would publish", "blocked": "would be blocked"}.get(status["state"], status["state"])
    text = status["text"].replace("Validated and published at", "Would be validated and published; computed at")
    return {**status, "state": f"preview: {state}", "text": "Preview, nothing was written to the database. " + text}


def _page(engine: Engine, conn: Connection, d: date, folder: Path, gx_directory, preview: bool) -> dict:
    from . import quality, validation
    from .db import extract
    from .db.connect import redact
    from .steps import cutoff_of

    src = extract.snapshot(conn, cutoff_of(d))  # read once: the portal list, then validated
    portal = portal_review(conn, d, src)
    inputs = validation.stacked_inputs(src)
    del src  # the stacked frame is all validation needs: do not hold both
    dq = quality.validate_date(conn, d, gx_directory, inputs, run_name=f"flexbill-{d}" + ("-preview" if preview else ""))
    del inputs
    from .steps import gap_before

    rows = invoices_by_location(conn, d)
    hist = history(conn, d)
    late = late_lines(conn, d)
    gap = gap_before(conn, d)
    status = _previewed(run_status(conn, d)) if preview else run_status(conn, d)
    dq.checks.sort(key=lambda c: c.success)  # failed checks first (a stable sort keeps the suites' order)
    data = {
        "billing_date": d,
        "preview": preview,
        "database": redact(engine.url.render_as_string(hide_password=False)),
        "status": status,
        "gap": gap.message(d) if status["state"] != "not run" else None,
        "gap_serious": gap.previous is not None,  # a first run has nothing before it: a note, not an alarm
        "invoices": rows,
        "currencies": totals_by_currency(rows),
        "lifecycle": lifecycle(conn, d),
        "invoice_list": invoice_list(conn, d),
        "skipped": skipped(conn, d),
        "skipped_list": skipped_list(conn, d),
        "back_billed": back_billed(conn, d, late),
        "late_lines": late[:LIST_MAX],
        "late_total": len(late),
        "quarantine": quarantine(conn, d),
        "active_users": active_users(conn, d),
        "portal_review": portal,
        "reconciliation": reconciliation(conn, d),
        "dq": dq,
        "failed_checks": [c for c in dq.checks if not c.success],
        "docs_link": _link(dq.docs_index, folder),
        "history": hist,
        "chart": chart_svg(hist),
        "csv": {name: path.name for name, path in export_csvs(conn, d, folder).items()},
        "list_max": LIST_MAX,
    }
    data["action"] = finance_action(data)
    return data


def finance_action(data: dict) -> dict:
    """The one thing finance must do about the date, as a badge: (kind, label, sentence)."""
    d, status, life, rec = data["billing_date"], data["status"], data["lifecycle"], data["reconciliation"]
    state = status["state"]
    if state.endswith("not run"):
        return {"kind": "bad", "label": "NOT RUN", "text": f"Nothing was billed for {d}: run `flexbill run --date {d}`."}
    if "blocked" in state:
        return {"kind": "bad", "label": "DO NOT SEND",
                "text": "The output gate blocked this date: nothing new was published. Fix the cause (below), then "
                        "rerun the date."}
    if rec is not None and not rec["ok"]:
        return {"kind": "bad", "label": "STOP",
                "text": "The reconciliation does not add up: do not send; report it (a flexbill defect)."}
    if data["preview"]:
        return {"kind": "warn", "label": "PREVIEW", "text": "Check these figures, then run the date to bill it."}
    if life["counts"]["draft"]:
        return {"kind": "warn", "label": "APPROVE DRAFTS",
                "text": f"{life['counts']['draft']} draft invoices wait: review them, then `flexbill finalize "
                        f"--through {d} --actor <you>`."}
    if data["gap"] and data["gap_serious"]:
        return {"kind": "warn", "label": "CHECK EARLIER DATES", "text": data["gap"]}
    n = life["counts"]["finalized"]
    return {"kind": "ok", "label": "READY TO SEND",
            "text": f"{n} invoice{'s' * (n != 1)} of {d} are final and reconciled: send them."
                    + (f" {len(data['quarantine'])} source rows are quarantined: fix them (below)." if data['quarantine']
                       else "")}


def _link(target: Path | None, folder: Path) -> str | None:
    if target is None:
        return None
    return os.path.relpath(target, folder)
