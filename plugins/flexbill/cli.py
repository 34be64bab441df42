"""The `flexbill` command line: the same engine the Airflow DAGs call."""

from __future__ import annotations

import re
import sys
from datetime import date
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .errors import FlexbillError, InputError

app = typer.Typer(
    help="flexbill: suspension-aware batch invoicing for flexible-workspace operators.\n\n"
    "Every command takes --db URL (a SQLAlchemy URL); without it, FLEXBILL_DB_URL, "
    "then the embedded SQLite file var/flexbill.sqlite.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Not a terminal (a pipe, a log, CI): tables are laid out 120 wide and text lines are never wrapped mid-sentence.
out = Console(width=None if sys.stdout.isatty() else 120, soft_wrap=not sys.stdout.isatty())
err = Console(stderr=True)

DbOption = typer.Option(None, "--db", help="SQLAlchemy URL of the billing database "
                        "[default: $FLEXBILL_DB_URL, else sqlite:///var/flexbill.sqlite]", show_default=False)
OutOption = typer.Option(None, "--out", help="Folder of the data-quality reports (one sub-folder per date) "
                         "[default: $FLEXBILL_REPORT_DIR, else var/reports]", show_default=False)
GxOption = typer.Option(None, "--gx-dir", help="Folder of the Great Expectations project that keeps every "
                        "validation and the Data Docs [default: $FLEXBILL_GX_DIR, else var/gx]", show_default=False)
ReportOption = typer.Option(True, "--report/--no-report", envvar="FLEXBILL_REPORT",
                            help="Write the date's data-quality report and GX Data Docs after the run "
                            "[env FLEXBILL_REPORT=0 turns it off].")


def parse_date(text: str, option: str) -> date:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text or ""):
        raise InputError(f"{option} '{text}' is not a date: use YYYY-MM-DD, e.g. 2026-01-31")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{option} '{text}' is not a real calendar date: check the day and month") from None


def _engine(db: Optional[str]):
    from .db.connect import make_engine

    return make_engine(db)


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)
    sys.exit(1)


def _print_run(summary) -> None:
    s = summary.stats
    mark = "PREVIEW (nothing was written) " if summary.preview else ""
    verb = "would publish" if summary.preview else "published"
    out.print(f"{mark}{summary.billing_date}: {verb} {s['invoices']} invoices ({s['lines']} lines, "
              f"{s['back_billed_lines']} back-billed), skipped {s['contracts_skipped']} contracts, "
              f"quarantined {s['quarantined_rows']} rows, {s['events_appended']} rule events "
              f"[{summary.seconds:.2f}s]", highlight=False)
    for currency, n, subtotal, tax, total in summary.totals:
        out.print(f"  {currency}: {n} invoices, subtotal {subtotal}, tax {tax}, total {total}", highlight=False)
    _print_lifecycle(summary.corrections, summary.finalized, summary.preview)


def _print_lifecycle(corrections, finalized, preview: bool = False) -> None:
    would = "would be " if preview else ""
    if corrections is not None:
        if corrections.kept:
            out.print(f"  {corrections.kept} finalized invoices unchanged by this rerun (kept as they are)",
                      highlight=False)
        for note, credited, total in corrections.credit_notes:
            out.print(f"  credit note {note} {would}issued for invoice {credited} ({total})", highlight=False)
        for number, replaced, total in corrections.corrective:
            out.print(f"  corrective invoice {number} {would}finalized, replacing {replaced} ({total})",
                      highlight=False)
    if finalized is not None:
        _print_finalized(finalized, preview)


def _print_finalized(finalized, preview: bool = False) -> None:
    would = "would be " if preview else ""
    if finalized.count:
        ranges = ", ".join(f"{first}..{last}" if first != last else first
                           for first, last in finalized.numbers.values())
        dates = finalized.dates
        span = str(dates[0]) if len(dates) == 1 else f"{dates[0]}..{dates[-1]}"
        out.print(f"  {finalized.count} invoices {would}finalized by {finalized.actor} (dates {span}): {ranges}",
                  highlight=False)
    for d in finalized.waiting:
        out.print(f"  drafts of {d} wait: its latest run did not publish (rerun it, then finalize)", highlight=False)


@app.command("init-db")
def init_db(db: Optional[str] = DbOption) -> None:
    """Create every flexbill table that is missing (safe to run again)."""
    from .db.connect import init_db as create, redact

    engine = _engine(db)
    created = create(engine)
    where = redact(engine.url.render_as_string(hide_password=False))
    out.print(f"created {len(created)} tables in {where}" if created else f"all tables already exist in {where}",
              highlight=False)


@app.command()
def run(date_: str = typer.Option(..., "--date", help="Billing date D (YYYY-MM-DD): bills what is owed on D, "
                                  "as the world was at D+1 00:00 UTC."),
        db: Optional[str] = DbOption, report: bool = ReportOption, out_dir: Optional[str] = OutOption,
        gx_dir: Optional[str] = GxOption,
        dry_run: bool = typer.Option(False, "--dry-run", help="Preview: compute D exactly as a run would (rules, "
                                     "owed periods, filter, invoices, both gates), print it and write the report "
                                     "page under <out>/<D>/preview/, and write nothing to the database.")) -> None:
    """Run billing for one date. A rerun replaces the date's drafts; a finalized invoice it would change is
    credited and replaced by a corrective invoice. Invoices up to D minus FLEXBILL_GRACE_DAYS (default 0) are
    finalized after the run."""
    from .errors import OutputRejected
    from .steps import run_billing_date

    d = parse_date(date_, "--date")
    engine = _engine(db)
    if dry_run:
        _preview(engine, d, report, out_dir, gx_dir)
        return
    try:
        summary = run_billing_date(engine, d)
    except OutputRejected as exc:
        if report:  # finance sees the blocked run and why
            path = _write_report(engine, d, out_dir, gx_dir, after="was blocked")
            raise OutputRejected(f"{exc} The data-quality report is {path}") from None
        raise
    _print_run(summary)
    if report:
        _write_report(engine, d, out_dir, gx_dir, after="was published")


def _preview(engine, d: date, report: bool, out_dir: Optional[str], gx_dir: Optional[str]) -> None:
    """`run --dry-run`: the run in a transaction that is rolled back; the page is written from inside it."""
    from .errors import OutputRejected
    from .finance_report import write_report
    from .steps import run_billing_date

    pages = []

    def page(conn, summary) -> None:
        if report:
            try:
                pages.append(write_report(engine, d, out_dir, gx_dir, conn=conn, preview=True))
            except FlexbillError:
                raise
            except Exception as exc:  # the preview stands; say what failed
                raise FlexbillError(f"the preview of {d} was computed, but its report page failed: "
                                    f"{type(exc).__name__}: {exc}") from None

    try:
        summary = run_billing_date(engine, d, preview=page)
    except OutputRejected as exc:
        where = f" The preview's data-quality report is {pages[0]}" if pages else ""
        raise OutputRejected(f"{exc}{where}") from None
    _print_run(summary)
    if pages:
        out.print(f"preview data-quality report: {pages[0]}", highlight=False, soft_wrap=True)


def _write_report(engine, d: date, out_dir: Optional[str], gx_dir: Optional[str], after: str):
    from .finance_report import write_report

    try:
        path = write_report(engine, d, out_dir, gx_dir)
    except FlexbillError:
        raise
    except Exception as exc:  # the billing result stands; say what failed and how to redo the report alone
        raise FlexbillError(f"{d} {after}, but its data-quality report failed: {type(exc).__name__}: {exc}. "
                            f"Fix that and run `flexbill report --date {d}`") from None
    out.print(f"data-quality report: {path}", highlight=False, soft_wrap=True)
    return path


@app.command()
def report(date_: str = typer.Option(..., "--date", help="Billing date D (YYYY-MM-DD)."),
           out_dir: Optional[str] = OutOption, gx_dir: Optional[str] = GxOption, db: Optional[str] = DbOption) -> None:
    """Write D's data-quality report for finance: an HTML page, CSV exports and the GX Data Docs."""
    from .db.connect import require_schema

    d = parse_date(date_, "--date")
    engine = _engine(db)
    require_schema(engine)
    _write_report(engine, d, out_dir, gx_dir, after="is unchanged")


@app.command()
def backfill(from_: str = typer.Option(..., "--from", help="First billing date (YYYY-MM-DD)."),
             to: str = typer.Option(..., "--to", help="Last billing date (YYYY-MM-DD), inclusive."),
             db: Optional[str] = DbOption, report: bool = ReportOption, out_dir: Optional[str] = OutOption,
             gx_dir: Optional[str] = GxOption) -> None:
    """Run every billing date from --from to --to, in date order, one transaction each; then the last date's report."""
    from .db.connect import require_schema
    from .steps import backfill as run_range

    first, last = parse_date(from_, "--from"), parse_date(to, "--to")
    if first > last:
        raise InputError(f"--from {first} is after --to {last}: swap them")
    total = (last - first).days + 1
    engine = _engine(db)
    require_schema(engine)  # fail with one line before the progress bar shows
    with Progress(TextColumn("[bold]backfill"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=err, transient=False) as bar:
        task = bar.add_task("", total=total)

        def step(summary) -> None:
            bar.update(task, advance=1, description=f"{summary.billing_date} {summary.stats['invoices']} invoices")

        summaries = run_range(engine, first, last, progress=step)
    invoices = sum(s.stats["invoices"] for s in summaries)
    out.print(f"backfilled {len(summaries)} dates {first}..{last}: {invoices} invoices", highlight=False)
    notes = [n for x in summaries if x.corrections for n in x.corrections.credit_notes]
    corrective = [c for x in summaries if x.corrections for c in x.corrections.corrective]
    finalized = sum(x.finalized.count for x in summaries if x.finalized)
    kept = sum(x.corrections.kept for x in summaries if x.corrections)
    out.print(f"  {finalized} invoices finalized; {kept} finalized invoices unchanged by a rerun; "
              f"{len(notes)} credit notes, {len(corrective)} corrective invoices", highlight=False)
    for note, credited, total in notes[:20]:
        out.print(f"  credit note {note} for invoice {credited} ({total})", highlight=False)
    for number, replaced, total in corrective[:20]:
        out.print(f"  corrective invoice {number} replaces {replaced} ({total})", highlight=False)
    if len(notes) > 20 or len(corrective) > 20:
        out.print("  (the first 20 of each; every one is on the finance page of its date)", highlight=False)
    if report:  # the last date's report charts the range; `flexbill report --date` writes any other date's
        _write_report(engine, last, out_dir, gx_dir, after="was published")


@app.command()
def finalize(through: str = typer.Option(..., "--through", help="Finalize every draft with a billing date on or "
                                         "before this date (YYYY-MM-DD)."),
             actor: str = typer.Option(..., "--actor", help="Who approves the invoices (an e-mail), kept on each "
                                       "invoice as finalized_by."),
             db: Optional[str] = DbOption) -> None:
    """Finalize (approve) drafts: number them from each location's gapless series, oldest date first, then by
    customer. A finalized invoice never changes; a later data fix is corrected by a credit note."""
    from .db.connect import require_schema
    from .db import dialect
    from .invoicing import finalize as run_finalize
    from .steps import utcnow

    d = parse_date(through, "--through")
    engine = _engine(db)
    require_schema(engine)
    with engine.begin() as conn:
        dialect.lock_for_run(conn)
        done = run_finalize(conn, d, actor, utcnow())
    if done.count == 0:
        out.print(f"nothing to finalize through {d}: no draft invoice on or before it", highlight=False)
        return
    _print_finalized(done)


@app.command()
def explain(contract: int = typer.Option(..., "--contract", help="Contract id."),
            date_: str = typer.Option(..., "--date", help="Billing date D (YYYY-MM-DD) that has run."),
            as_json: bool = typer.Option(False, "--json", help="Print the stable JSON form (see the README)."),
            db: Optional[str] = DbOption) -> None:
    """Why a contract was or was not billed on D: each period up to D with the invoice that billed it, or why not
    (suspended since when and by which event, archived, quarantined, before next_invoice_date, billed on another
    date, credited). Reads only."""
    import json

    from .db.connect import require_schema
    from .explain import explain as run_explain

    d = parse_date(date_, "--date")
    engine = _engine(db)
    require_schema(engine)
    result = run_explain(engine, contract, d)
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=2, sort_keys=True) + "\n")
        return
    _print_explanation(result)


def _print_explanation(x) -> None:
    from rich.table import Table as RichTable

    out.print(f"[bold]contract {x.contract_id} on {x.billing_date}[/]: {x.summary}", highlight=False)
    terms = [f"customer {x.customer_id}", f"plan {x.plan_id}", f"location {x.location_id}", f"starts {x.start_date}"]
    if x.next_invoice_date:
        terms.append(f"next_invoice_date {x.next_invoice_date}")
    if x.cancellation_date:
        terms.append(f"cancelled from {x.cancellation_date}")
    out.print("  " + ", ".join(terms), highlight=False)
    c = x.customer
    if c["archived"]:
        out.print(f"  customer archived at {c['archived_at']} UTC", highlight=False)
    if c["suspended"]:
        sp = c["suspension"]
        out.print(f"  customer suspended since {sp['since']} UTC by event {sp['event_id']} (source {sp['source']}"
                  f"{', actor ' + sp['actor'] if sp['actor'] else ''}{', reason: ' + sp['reason'] if sp['reason'] else ''})",
                  highlight=False)
    for q in x.quarantine:
        out.print(f"  quarantined on {x.billing_date}: {q['source_table']} {q['row_id']}: {q['reason']}",
                  highlight=False)
    table = RichTable(title="periods up to the date", title_justify="left", show_lines=False)
    for name in ("period", "amount", "state", "invoice", "why"):
        table.add_column(name, overflow="fold")
    for p in x.periods:
        invoice = p.invoice_number or (f"draft {p.invoice_id}" if p.invoice_id else "")
        table.add_row(f"{p.period_start} .. {p.period_end}", p.amount or "", p.state, invoice, p.why)
    if not x.periods:
        table.add_row("", "", "", "", "no period starts on or before this date")
    out.print(table)
    if x.next_period:
        out.print(f"  next: {x.next_period['why']}", highlight=False)


def _manual(action: str, customer: int, actor: str, reason: Optional[str], at: Optional[str], db: Optional[str]):
    from .manual import parse_instant, record_manual_event
    from .steps import utcnow

    instant = parse_instant(at, utcnow())
    event = record_manual_event(_engine(db), customer, action, actor, reason, instant)
    out.print(f"customer {customer}: {action} recorded at {event['occurred_at']:%Y-%m-%d %H:%M:%S} UTC by {actor}",
              highlight=False)


CustomerOpt = typer.Option(..., "--customer", help="Customer id.")
ActorOpt = typer.Option(..., "--actor", help="Who does it (an admin's e-mail).")
ReasonOpt = typer.Option(None, "--reason", help="Why, for the audit trail.")
AtOpt = typer.Option(None, "--at", help="Instant of the event, ISO 8601 (UTC unless an offset is given) "
                     "[default: now].", show_default=False)


@app.command()
def suspend(customer: int = CustomerOpt, actor: str = ActorOpt, reason: Optional[str] = ReasonOpt,
            at: Optional[str] = AtOpt, db: Optional[str] = DbOption) -> None:
    """Suspend a customer: its contracts are not invoiced until a manual lift; periods stay owed."""
    _manual("suspend", customer, actor, reason, at, db)


@app.command()
def lift(customer: int = CustomerOpt, actor: str = ActorOpt, reason: Optional[str] = ReasonOpt,
         at: Optional[str] = AtOpt, db: Optional[str] = DbOption) -> None:
    """Lift a customer's suspension: the next run invoices every period missed while suspended."""
    _manual("lift", customer, actor, reason, at, db)


@app.command()
def demo(db: Optional[str] = typer.Option(None, "--db", help="Database to build the demo in "
                                          "[default: sqlite:///var/demo.sqlite, recreated]", show_default=False),
         days: int = typer.Option(90, "--days", min=1, help="How many days to backfill."),
         customers: int = typer.Option(2000, "--customers", min=10, help="Synthetic customers."),
         seed: int = typer.Option(7, "--seed", help="Random seed of the synthetic operator."),
         report: bool = ReportOption, out_dir: Optional[str] = OutOption, gx_dir: Optional[str] = GxOption) -> None:
    """Build a synthetic operator, backfill it, print what a billing operator sees and write the last date's report."""
    from .demo import run_demo

    engine, last = run_demo(db, days=days, customers=customers, seed=seed, console=out, progress_console=err)
    if report:
        _write_report(engine, last, out_dir, gx_dir, after="was published")


def main() -> None:
    try:
        app()
    except FlexbillError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        err.print("interrupted: the open transaction was rolled back, nothing was written for the current date")
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
