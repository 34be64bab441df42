"""What a billing operator reads after a range of runs: totals, skips, back-billing, quarantine, users."""

from __future__ import annotations

from datetime import date

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable
from sqlalchemy import func, select

from . import figures
from .db import schema as s


def backfill_bar(console: Console) -> Progress:
    """A backfill's progress bar (one step a date, the step's text after the count), on `console`."""
    return Progress(
        TextColumn("[bold]backfill"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
    )


def _table(title: str, *columns: str) -> RichTable:
    table = RichTable(title=title, title_justify="left", title_style="bold")
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")
    return table


def invoice_totals(conn, first: date, last: date):
    """Invoices that stand (drafts and finalized; credited ones are cancelled by their credit notes)."""
    i = s.invoices
    return conn.execute(
        select(i.c.currency, func.count(), func.sum(i.c.subtotal), func.sum(i.c.tax), func.sum(i.c.total))
        .where(i.c.billing_date.between(first, last), i.c.status != "credited")
        .group_by(i.c.currency)
        .order_by(i.c.currency)
    ).all()


def invoice_statuses(conn, first: date, last: date):
    """Per status: invoices, and the first and last number per location."""
    i = s.invoices
    return conn.execute(
        select(i.c.status, i.c.location_id, func.count(), func.min(i.c.number), func.max(i.c.number))
        .where(i.c.billing_date.between(first, last))
        .group_by(i.c.status, i.c.location_id)
        .order_by(i.c.status, i.c.location_id)
    ).all()


def credit_notes(conn, first: date, last: date, limit: int = 20):
    """Credit notes of invoices of these dates, with the corrective invoice that replaced each (if any)."""
    cn, i = s.credit_notes, s.invoices
    old, new = i.alias("old"), i.alias("new")
    return conn.execute(
        select(
            cn.c.number,
            old.c.number,
            old.c.billing_date,
            cn.c.customer_id,
            cn.c.currency,
            cn.c.total,
            new.c.number,
            new.c.total,
        )
        .select_from(
            cn.join(old, old.c.invoice_id == cn.c.invoice_id).outerjoin(new, new.c.corrects == cn.c.invoice_id)
        )
        .where(cn.c.billing_date.between(first, last))
        .order_by(cn.c.number)
        .limit(limit)
    ).all()


def skipped_by_reason(conn, first: date, last: date):
    k = s.skipped_contracts
    return conn.execute(
        select(k.c.reason, func.count(func.distinct(k.c.contract_id)), func.count())
        .where(k.c.billing_date.between(first, last))
        .group_by(k.c.reason)
        .order_by(k.c.reason)
    ).all()


def back_billed(conn, first: date, last: date):
    """Lines for periods that started before their billing date, per currency and why: back-billed after a lift,
    or late (dates not run, or recorded or fixed later): see figures.late_lines."""
    r = s.billing_runs
    groups: dict = {}
    for day in conn.execute(
        select(r.c.billing_date).where(r.c.billing_date.between(first, last), r.c.status == "published")
    ).scalars():
        day = day if isinstance(day, date) else date.fromisoformat(str(day)[:10])
        for row in figures.late_lines(conn, day):
            g = groups.setdefault((row["currency"], row["kind"]), [set(), 0, 0])
            g[0].add(row["customer_id"])
            g[1] += 1
            g[2] += row["amount"]
    return [(cur, kind, len(g[0]), g[1], g[2]) for (cur, kind), g in sorted(groups.items())]


def rule_events(conn):
    e = s.suspension_events
    return conn.execute(
        select(e.c.source, e.c.action, func.count()).group_by(e.c.source, e.c.action).order_by(e.c.source, e.c.action)
    ).all()


def print_summary(engine, first: date, last: date, console: Console) -> None:
    with engine.connect() as conn:
        t = _table(f"Invoices {first} .. {last}", "currency", "invoices", "subtotal", "tax", "total")
        for cur, n, sub, tax, tot in invoice_totals(conn, first, last):
            t.add_row(cur, str(n), f"{sub:,.2f}", f"{tax:,.2f}", f"{tot:,.2f}")
        console.print(t)

        t = _table("Invoice lifecycle (numbers per location)", "status", "location", "invoices", "numbers")
        for status, lid, n, lo, hi in invoice_statuses(conn, first, last):
            t.add_row(status, str(lid), str(n), f"{lo} .. {hi}" if lo else "not numbered (draft)")
        console.print(t)

        print_corrections(conn, first, last, console)

        t = _table("Skipped contracts (periods stay owed)", "reason", "contracts", "skip rows (contract x date)")
        for reason, contracts, n in skipped_by_reason(conn, first, last):
            t.add_row(reason, str(contracts), str(n))
        console.print(t)

        t = _table(
            "Billed late (periods invoiced after their start date)", "currency", "why", "customers", "periods", "amount"
        )
        for cur, kind, customers, n, amount in back_billed(conn, first, last):
            t.add_row(cur, kind, str(customers), str(n), f"{amount:,.2f}")
        console.print(t)

        t = _table("Suspension events by source", "source", "action", "events")
        for source, action, n in rule_events(conn):
            t.add_row(source, action, str(n))
        console.print(t)

        rows = figures.quarantine(conn, last)
        t = _table(
            f"Quarantined rows on {last} ({len(rows)}): never billed, fix them in the billing database", "row", "reason"
        )
        for row in rows:
            t.add_row(f"{row['table']} {row['row_id']}", row["reason"])
        t.columns[1].justify = "left"
        console.print(t)

        t = _table(
            f"Active-user report {last}",
            "location",
            "members",
            "active",
            "suspended",
            "suspended w/ portal",
            "contacts",
        )
        for r in figures.active_users(conn, last):
            counts = (
                r[k]
                for k in ("members", "active_users", "suspended_members", "suspended_with_portal_access", "contacts")
            )
            t.add_row(f"{r['location_id']} {r['location'] or '?'}", *(str(n) for n in counts))
        console.print(t)

        line = reconciliation(conn, last)
        if line:
            console.print(line)


def print_corrections(conn, first: date, last: date, console: Console) -> None:
    rows = credit_notes(conn, first, last)
    if not rows:
        return
    t = _table(
        "Corrections: credit notes and the corrective invoices that replace them",
        "credit note",
        "credits",
        "date",
        "customer",
        "total",
        "corrective",
        "new total",
    )
    for number, credited, day, customer, currency, total, corrective, new_total in rows:
        t.add_row(
            number,
            credited,
            str(day)[:10],
            str(customer),
            f"{currency} {total:,.2f}",
            corrective or "(nothing to bill)",
            f"{currency} {new_total:,.2f}" if new_total is not None else "",
        )
    console.print(t)


def lifecycle_lines(conn, first: date, last: date) -> list[str]:
    """One line per status of the invoices of these dates, with the number ranges per location."""
    by_status: dict[str, list] = {}
    for status, lid, n, lo, hi in invoice_statuses(conn, first, last):
        by_status.setdefault(status, []).append((lid, n, lo, hi))
    out = []
    for status in ("finalized", "credited", "draft"):
        rows = by_status.get(status, [])
        total = sum(n for _, n, _, _ in rows)
        ranges = ", ".join(f"{lo}..{hi}" for _, _, lo, hi in rows if lo)
        out.append(f"{status}: {total} invoices{' (' + ranges + ')' if ranges else ''}")
    cn = s.credit_notes
    notes = conn.execute(select(func.count()).where(cn.c.billing_date.between(first, last))).scalar_one()
    return [f"Invoices {first} .. {last}: " + "; ".join(out) + f"; {notes} credit notes"]


def reconciliation(conn, billing_date: date) -> str | None:
    """The run's counts checked against what its output tables hold (see figures.reconciliation)."""

    r = figures.reconciliation(conn, billing_date)
    if r is None:
        return None
    return (
        f"Reconciliation {billing_date}: {r['owed']} contracts with owed periods = {r['invoiced']} invoiced "
        f"+ {r['skipped']} skipped + {r['quarantined']} quarantined + {r['billed_later']} billed on later dates: "
        f"{'[green]OK[/]' if r['ok'] else '[red]MISMATCH[/]'}"
    )
