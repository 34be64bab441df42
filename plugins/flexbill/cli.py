"""The `flexbill` command line: the same engine the Airflow DAGs call."""

from __future__ import annotations

import gc
import sys
from contextlib import suppress
from datetime import date

import typer
from rich.console import Console

from .errors import FlexbillError, InputError
from .inputs import check_actor, parse_date

try:  # typer >= 0.20 vendors its own copy of click: its usage errors are those classes
    from typer._click import exceptions as usage
except ImportError:  # pragma: no cover - a typer that uses click itself
    from click import exceptions as usage

app = typer.Typer(
    help="flexbill: suspension-aware batch invoicing for flexible-workspace operators.\n\n"
    "Every command takes --db URL (a SQLAlchemy URL); without it, FLEXBILL_DB_URL, "
    "then the embedded SQLite file var/flexbill.sqlite.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # "rich" keeps single newlines of docstrings in the command list (typer 0.29)
)
# Not a terminal (a pipe, a log, CI): tables are laid out 120 wide and text lines are never wrapped mid-sentence.
out = Console(width=None if sys.stdout.isatty() else 120, soft_wrap=not sys.stdout.isatty())
err = Console(stderr=True)

DbOption = typer.Option(
    None,
    "--db",
    help="SQLAlchemy URL of the billing database [default: $FLEXBILL_DB_URL, else sqlite:///var/flexbill.sqlite]",
    show_default=False,
)
OutOption = typer.Option(
    None,
    "--out",
    help="Folder of the data-quality reports (one sub-folder per date) "
    "[default: $FLEXBILL_REPORT_DIR, else var/reports]",
    show_default=False,
)
GxOption = typer.Option(
    None,
    "--gx-dir",
    help="Folder of the Great Expectations project that keeps every "
    "validation and the Data Docs [default: $FLEXBILL_GX_DIR, else var/gx]",
    show_default=False,
)
ReportOption = typer.Option(
    True,
    "--report/--no-report",
    envvar="FLEXBILL_REPORT",
    help="Write the date's data-quality report and GX Data Docs after the run [env FLEXBILL_REPORT=0 turns it off].",
)


def _example(*lines: str) -> str:
    """A help epilog: what a billing operator would type."""
    return "Example:\n\n" + "\n\n".join(f"  {line}" for line in lines)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("flexbill")
        except PackageNotFoundError:  # pragma: no cover - run from a source tree without install
            number = "unknown"
        out.print(f"flexbill {number}", highlight=False)
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print flexbill's version and exit."
    ),
) -> None:
    pass


_ENGINES: list = []  # every engine a command made: closed before the process exits (see `console`)


def _engine(db: str | None):
    from .db.connect import make_engine

    engine = make_engine(db)
    _ENGINES.append(engine)
    return engine


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)
    sys.exit(1)


def _late_kinds(conn, d: date) -> str:
    """How D's late lines split: back-billed after a lift, or late (dates not run / recorded later)."""
    from collections import Counter

    from .figures import late_lines

    kinds = Counter(row["kind"] for row in late_lines(conn, d))
    return ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "none billed late"


def _print_run(summary, late: str | None = None) -> None:
    s = summary.stats
    mark = "PREVIEW (nothing was written) " if summary.preview else ""
    verb = "would publish" if summary.preview else "published"
    late = f": {late}" if late else ""
    out.print(
        f"{mark}{summary.billing_date}: {verb} {s['invoices']} invoices ({s['lines']} lines, "
        f"{s['back_billed_lines']} for periods that started earlier{late}), skipped {s['contracts_skipped']} "
        f"contracts, quarantined {s['quarantined_rows']} rows, {s['events_appended']} rule events "
        f"[{summary.seconds:.2f}s]",
        highlight=False,
    )
    if summary.unchanged:
        out.print(
            f"  nothing {summary.billing_date} reads changed since its latest publish (source rows, voided events, "
            f"other dates' publishes, flexbill's code): its outputs {'would be' if summary.preview else 'were'} kept, "
            "not recomputed (`--recompute` recomputes them)",
            highlight=False,
        )
    if summary.gap:
        out.print(f"warning: {summary.gap}", highlight=False)
    for currency, n, subtotal, tax, total in summary.totals:
        out.print(f"  {currency}: {n} invoices, subtotal {subtotal}, tax {tax}, total {total}", highlight=False)
    _print_lifecycle(summary.corrections, summary.finalized, summary.preview)


def _print_lifecycle(corrections, finalized, preview: bool = False) -> None:
    would = "would be " if preview else ""
    if corrections is not None:
        if corrections.kept:
            out.print(
                f"  {corrections.kept} finalized invoices unchanged by this rerun (kept as they are)", highlight=False
            )
        for note, credited, total in corrections.credit_notes:
            out.print(f"  credit note {note} {would}issued for invoice {credited} ({total})", highlight=False)
        for number, replaced, total in corrections.corrective:
            out.print(
                f"  corrective invoice {number} {would}finalized, replacing {replaced} ({total})", highlight=False
            )
    if finalized is not None:
        _print_finalized(finalized, preview)


def _print_finalized(finalized, preview: bool = False) -> None:
    would = "would be " if preview else ""
    if finalized.count:
        ranges = ", ".join(f"{first}..{last}" if first != last else first for first, last in finalized.numbers.values())
        dates = finalized.dates
        span = str(dates[0]) if len(dates) == 1 else f"{dates[0]}..{dates[-1]}"
        out.print(
            f"  {finalized.count} invoices {would}finalized by {finalized.actor} (dates {span}): {ranges}",
            highlight=False,
        )
    for d in finalized.waiting:
        out.print(f"  drafts of {d} wait: its latest run did not publish (rerun it, then finalize)", highlight=False)


@app.command("init-db", epilog=_example("flexbill init-db --db postgresql://billing@db.internal:5432/billing"))
def init_db(db: str | None = DbOption) -> None:
    """Create every flexbill table that is missing (safe to run again)."""
    from .db.connect import init_db as create
    from .db.connect import redact

    engine = _engine(db)
    created = create(engine)
    where = redact(engine.url.render_as_string(hide_password=False))
    out.print(
        f"created {len(created)} tables in {where}" if created else f"all tables already exist in {where}",
        highlight=False,
    )


@app.command(epilog=_example("flexbill run --date 2026-10-31", "flexbill run --date 2026-10-31 --dry-run"))
def run(
    date_: str = typer.Option(
        ..., "--date", help="Billing date D (YYYY-MM-DD): bills what is owed on D, as the world was at D+1 00:00 UTC."
    ),
    db: str | None = DbOption,
    report: bool = ReportOption,
    out_dir: str | None = OutOption,
    gx_dir: str | None = GxOption,
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Preview: compute D exactly as a run would (rules, "
        "owed periods, filter, invoices, both gates), print it and write the report "
        "page under OUT/D/preview/, and write nothing to the database.",
    ),
    allow_future: bool = typer.Option(
        False,
        "--allow-future",
        help="Run a date whose cutoff (D+1 00:00 UTC) is still ahead: its data is not complete (tests and demos only).",
    ),
    recompute: bool = typer.Option(
        False,
        "--recompute",
        help="Compute every step even when nothing D reads changed since its latest publish "
        "(by default such a rerun keeps D's outputs, which are what it would write again).",
    ),
) -> None:
    """Run billing for one date. A rerun replaces the date's drafts; a finalized invoice it would change is
    credited and replaced by a corrective invoice; a rerun whose inputs did not change since the date's latest
    publish keeps its outputs (--recompute recomputes them). Invoices up to D minus FLEXBILL_GRACE_DAYS (default 0)
    are finalized after the run."""
    from .errors import OutputRejected
    from .runner import run_billing_date

    d = parse_date(date_, "--date")
    engine = _engine(db)
    if dry_run:
        _preview(engine, d, report, out_dir, gx_dir, allow_future, recompute)
        return
    try:
        summary = run_billing_date(engine, d, allow_future=allow_future, recompute=recompute)
    except OutputRejected as exc:
        if report:  # finance sees the blocked run and why
            path = _write_report(engine, d, out_dir, gx_dir, after="was blocked")
            raise OutputRejected(f"{exc} The data-quality report is {path}") from None
        raise
    with engine.connect() as conn:
        late = _late_kinds(conn, d) if summary.stats.get("back_billed_lines") else None
    _print_run(summary, late)
    if report:
        _write_report(engine, d, out_dir, gx_dir, after="was published")


def _preview(
    engine,
    d: date,
    report: bool,
    out_dir: str | None,
    gx_dir: str | None,
    allow_future: bool = False,
    recompute: bool = False,
) -> None:
    """`run --dry-run`: the run in a transaction that is rolled back; the page is written from inside it."""
    from .errors import OutputRejected
    from .finance_report import write_report
    from .runner import run_billing_date

    pages, late = [], []

    def page(conn, summary) -> None:
        if summary.stats.get("back_billed_lines"):
            late.append(_late_kinds(conn, d))
        if report:
            try:
                pages.append(write_report(engine, d, out_dir, gx_dir, conn=conn, preview=True))
            except FlexbillError:
                raise
            except Exception as exc:  # the preview stands; say what failed
                raise FlexbillError(
                    f"the preview of {d} was computed, but its report page failed: {type(exc).__name__}: {exc}"
                ) from None

    try:
        summary = run_billing_date(engine, d, preview=page, allow_future=allow_future, recompute=recompute)
    except OutputRejected as exc:
        where = f" The preview's data-quality report is {pages[0]}" if pages else ""
        raise OutputRejected(f"{exc}{where}") from None
    _print_run(summary, late[0] if late else None)
    if pages:
        out.print(f"preview data-quality report: {pages[0]}", highlight=False, soft_wrap=True)


def _write_report(engine, d: date, out_dir: str | None, gx_dir: str | None, after: str):
    from .finance_report import write_report

    try:
        path = write_report(engine, d, out_dir, gx_dir)
    except FlexbillError:
        raise
    except Exception as exc:  # the billing result stands; say what failed and how to redo the report alone
        raise FlexbillError(
            f"{d} {after}, but its data-quality report failed: {type(exc).__name__}: {exc}. "
            f"Fix that and run `flexbill report --date {d}`"
        ) from None
    out.print(f"data-quality report: {path}", highlight=False, soft_wrap=True)
    return path


@app.command(epilog=_example("flexbill report --date 2026-10-31 --out /srv/finance/reports"))
def report(
    date_: str = typer.Option(..., "--date", help="Billing date D (YYYY-MM-DD)."),
    out_dir: str | None = OutOption,
    gx_dir: str | None = GxOption,
    db: str | None = DbOption,
) -> None:
    """Write D's data-quality report for finance: an HTML page, CSV exports and the GX Data Docs."""
    from .db.connect import require_schema

    d = parse_date(date_, "--date")
    engine = _engine(db)
    require_schema(engine)
    _write_report(engine, d, out_dir, gx_dir, after="is unchanged")


@app.command(epilog=_example("flexbill backfill --from 2026-10-01 --to 2026-10-31"))
def backfill(
    from_: str = typer.Option(..., "--from", help="First billing date (YYYY-MM-DD)."),
    to: str = typer.Option(..., "--to", help="Last billing date (YYYY-MM-DD), inclusive."),
    db: str | None = DbOption,
    report: bool = ReportOption,
    out_dir: str | None = OutOption,
    gx_dir: str | None = GxOption,
    allow_future: bool = typer.Option(
        False, "--allow-future", help="Run dates whose cutoff is still ahead (tests and demos only)."
    ),
) -> None:
    """Run every billing date from --from to --to, in date order, one transaction each; then the last date's report."""
    from .db.connect import require_schema
    from .runner import backfill as run_range

    first, last = parse_date(from_, "--from"), parse_date(to, "--to")
    if first > last:
        raise InputError(f"--from {first} is after --to {last}: swap them")
    total = (last - first).days + 1
    engine = _engine(db)
    require_schema(engine)  # fail with one line before the progress bar shows
    from .clock import check_cutoff, utcnow

    check_cutoff(last, utcnow(), allow_future, "--to")
    from .summary import backfill_bar

    with backfill_bar(err) as bar:
        task = bar.add_task("", total=total)

        def step(summary) -> None:
            bar.update(task, advance=1, description=f"{summary.billing_date} {summary.stats['invoices']} invoices")

        summaries = run_range(engine, first, last, progress=step, allow_future=allow_future)
    invoices = sum(s.stats["invoices"] for s in summaries)
    out.print(f"backfilled {len(summaries)} dates {first}..{last}: {invoices} invoices", highlight=False)
    if summaries and summaries[0].gap:  # later dates follow each other: only the first can have a gap
        out.print(f"warning: {summaries[0].gap}", highlight=False)
    notes = [n for x in summaries if x.corrections for n in x.corrections.credit_notes]
    corrective = [c for x in summaries if x.corrections for c in x.corrections.corrective]
    finalized = sum(x.finalized.count for x in summaries if x.finalized)
    kept = sum(x.corrections.kept for x in summaries if x.corrections)
    out.print(
        f"  {finalized} invoices finalized; {kept} finalized invoices unchanged by a rerun; "
        f"{len(notes)} credit notes, {len(corrective)} corrective invoices",
        highlight=False,
    )
    for note, credited, total in notes[:20]:
        out.print(f"  credit note {note} for invoice {credited} ({total})", highlight=False)
    for number, replaced, total in corrective[:20]:
        out.print(f"  corrective invoice {number} replaces {replaced} ({total})", highlight=False)
    if len(notes) > 20 or len(corrective) > 20:
        out.print("  (the first 20 of each; every one is on the finance page of its date)", highlight=False)
    if report:  # the last date's report charts the range; `flexbill report --date` writes any other date's
        _write_report(engine, last, out_dir, gx_dir, after="was published")


@app.command(epilog=_example("flexbill finalize --through 2026-10-31 --actor ana@operator.example"))
def finalize(
    through: str = typer.Option(
        ..., "--through", help="Finalize every draft with a billing date on or before this date (YYYY-MM-DD)."
    ),
    actor: str = typer.Option(
        ..., "--actor", help="Who approves the invoices (an e-mail), kept on each invoice as finalized_by."
    ),
    db: str | None = DbOption,
) -> None:
    """Finalize (approve) drafts: number them from each location's gapless series, oldest date first, then by
    customer. A finalized invoice never changes; a later data fix is corrected by a credit note."""
    from .clock import utcnow
    from .db import dialect
    from .db.connect import require_schema
    from .invoicing import finalize as run_finalize

    d = parse_date(through, "--through")
    actor = check_actor(actor)
    engine = _engine(db)
    require_schema(engine)
    with engine.begin() as conn:
        dialect.lock_for_run(conn)
        done = run_finalize(conn, d, actor, utcnow())
    if done.count == 0:
        out.print(f"nothing to finalize through {d}: no draft invoice on or before it", highlight=False)
        return
    _print_finalized(done)


@app.command(
    epilog=_example(
        "flexbill explain --contract 2166 --date 2026-09-03",
        "flexbill explain --contract 2166 --date 2026-09-03 --json",
    )
)
def explain(
    contract: int = typer.Option(..., "--contract", help="Contract id."),
    date_: str = typer.Option(..., "--date", help="Billing date D (YYYY-MM-DD) that has run."),
    as_json: bool = typer.Option(False, "--json", help="Print the stable JSON form (see the README)."),
    db: str | None = DbOption,
) -> None:
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
        out.print(
            f"  customer suspended since {sp['since']} UTC by event {sp['event_id']} (source {sp['source']}"
            f"{', actor ' + sp['actor'] if sp['actor'] else ''}{', reason: ' + sp['reason'] if sp['reason'] else ''})",
            highlight=False,
        )
    for q in x.quarantine:
        out.print(
            f"  quarantined on {x.billing_date}: {q['source_table']} {q['row_id']}: {q['reason']}", highlight=False
        )
    table = RichTable(title="periods up to the date", title_justify="left", show_lines=False)
    for name in ("period", "amount", "state", "invoice", "why"):
        table.add_column(name, overflow="fold")
    for group in _collapse_before_flexbill(x.periods):
        if isinstance(group, list):  # consecutive periods invoiced outside flexbill: one row, not one per period
            first, last = group[0], group[-1]
            table.add_row(
                f"{first.period_start} .. {last.period_end}",
                f"{len(group)} periods",
                first.state,
                "",
                f"invoiced outside flexbill: they start before next_invoice_date {x.next_invoice_date}.",
            )
            continue
        invoice = group.invoice_number or (f"draft {group.invoice_id}" if group.invoice_id else "")
        table.add_row(
            f"{group.period_start} .. {group.period_end}", group.amount or "", group.state, invoice, group.why
        )
    if not x.periods:
        table.add_row("", "", "", "", "no period starts on or before this date")
    out.print(table)
    if x.next_period:
        out.print(f"  next: {x.next_period['why']}", highlight=False)


def _collapse_before_flexbill(periods) -> list:
    """Periods as table rows: a run of two or more consecutive `before_flexbill` periods becomes one list."""
    rows: list = []
    for p in periods:
        if p.state == "before_flexbill" and rows and isinstance(rows[-1], list):
            rows[-1].append(p)
        elif p.state == "before_flexbill":
            rows.append([p])
        else:
            rows.append(p)
    return [r[0] if isinstance(r, list) and len(r) == 1 else r for r in rows]


def _manual(
    action: str,
    customer: int,
    actor: str,
    reason: str | None,
    at: str | None,
    db: str | None,
    future: bool,
    backdate: bool,
):
    from .clock import utcnow
    from .inputs import parse_instant
    from .manual import record_manual_event

    actor = check_actor(actor)
    now = utcnow()
    if future and at is None:
        raise InputError("--future needs an explicit --at: the instant the event takes effect")
    instant = parse_instant(at, now)
    done = record_manual_event(
        _engine(db), customer, action, actor, reason, instant, now=now, future=future, backdate=backdate
    )
    out.print(
        f"customer {customer}: {action} recorded at {instant:%Y-%m-%d %H:%M:%S} UTC by {actor} "
        f"(event {done.event['id']})",
        highlight=False,
    )
    _print_impact(done.impact, "it")


def _print_impact(impact, subject: str) -> None:
    out.print(
        f"  {subject} first counts for billing date {impact.first_date} (every run whose cutoff, D+1 00:00 UTC, "
        f"is after it){' and the dates already billed below' if impact.dates else ''}",
        highlight=False,
    )
    if not impact.dates:
        return
    span = f"{impact.dates[0]}..{impact.dates[-1]}" if len(impact.dates) > 1 else str(impact.dates[0])
    out.print(f"  billed dates it changes ({len(impact.dates)}): {span}", highlight=False)
    for d, invoice_id, number, status, currency, total in impact.invoices[:20]:
        out.print(f"    {d} invoice {number or invoice_id} ({status}, {currency} {total})", highlight=False)
    for d, contract, reason, periods in impact.skipped[:20]:
        out.print(f"    {d} contract {contract} skipped ({reason}, {periods} owed periods)", highlight=False)
    out.print(
        f"  nothing changes until you rerun them: {impact.rerun}. "
        f"Rerun: flexbill backfill --from {impact.dates[0]} --to {impact.dates[-1]}",
        highlight=False,
    )


CustomerOpt = typer.Option(..., "--customer", help="Customer id.")
ActorOpt = typer.Option(..., "--actor", help="Who does it: your e-mail (or full name), kept in the audit trail.")
ReasonOpt = typer.Option(None, "--reason", help="Why, for the audit trail.")
AtOpt = typer.Option(
    None,
    "--at",
    help="Instant of the event, ISO 8601 (UTC unless an offset is given) [default: now].",
    show_default=False,
)
FutureOpt = typer.Option(False, "--future", help="Allow an --at in the future (the event takes effect then).")
BackdateOpt = typer.Option(
    False,
    "--backdate",
    help="Allow an --at before the cutoff of billing dates already run "
    "(it changes what a rerun of them computes; the command lists them).",
)


@app.command(
    epilog=_example(
        "flexbill suspend --customer 48 --actor ana@operator.example --reason 'card declined'",
        "flexbill suspend --customer 48 --actor ana@operator.example --at 2026-10-14T12:00Z --backdate",
    )
)
def suspend(
    customer: int = CustomerOpt,
    actor: str = ActorOpt,
    reason: str | None = ReasonOpt,
    at: str | None = AtOpt,
    future: bool = FutureOpt,
    backdate: bool = BackdateOpt,
    db: str | None = DbOption,
) -> None:
    """Suspend a customer: its contracts are not invoiced until a manual lift; periods stay owed."""
    _manual("suspend", customer, actor, reason, at, db, future, backdate)


@app.command(epilog=_example("flexbill lift --customer 48 --actor ana@operator.example --reason 'paid in full'"))
def lift(
    customer: int = CustomerOpt,
    actor: str = ActorOpt,
    reason: str | None = ReasonOpt,
    at: str | None = AtOpt,
    future: bool = FutureOpt,
    backdate: bool = BackdateOpt,
    db: str | None = DbOption,
) -> None:
    """Lift a customer's suspension: the next run invoices every period missed while suspended."""
    _manual("lift", customer, actor, reason, at, db, future, backdate)


@app.command(
    "void-event",
    epilog=_example("flexbill void-event --id 731 --actor ana@operator.example --reason 'typo: year 2030 for 2026'"),
)
def void_event(
    event_id: int = typer.Option(
        ..., "--id", help="The event's id (suspension_events.id), as `flexbill suspend|lift` printed it."
    ),
    actor: str = ActorOpt,
    reason: str = typer.Option(..., "--reason", help="Why the event was a mistake (kept with the void)."),
    backdate: bool = BackdateOpt,
    db: str | None = DbOption,
) -> None:
    """Void a manual event recorded by mistake: the log stays as it is (append-only), a void is recorded beside
    it and nothing counts the event any more (not runs, reruns or the checks of suspend and lift)."""
    from .manual import void_event as run_void

    actor = check_actor(actor)
    done = run_void(_engine(db), event_id, actor, reason, backdate=backdate)
    e = done.event
    out.print(
        f"event {event_id} ({e['action']} of customer {e['customer_id']} at {e['occurred_at']:%Y-%m-%d %H:%M:%S}"
        f" UTC) voided by {actor}",
        highlight=False,
    )
    _print_impact(done.impact, "the void")


@app.command(epilog=_example("flexbill demo", "flexbill demo --days 30 --customers 500 --no-report"))
def demo(
    db: str | None = typer.Option(
        None,
        "--db",
        help="Database to build the demo in [default: sqlite:///var/demo.sqlite, recreated]",
        show_default=False,
    ),
    days: int = typer.Option(90, "--days", min=1, help="How many days to backfill."),
    customers: int = typer.Option(2000, "--customers", min=10, help="Synthetic customers."),
    seed: int = typer.Option(7, "--seed", help="Random seed of the synthetic operator."),
    report: bool = ReportOption,
    out_dir: str | None = OutOption,
    gx_dir: str | None = GxOption,
) -> None:
    """Build a synthetic operator, backfill it, print what a billing operator sees and write the last date's report."""
    from .demo import run_demo

    engine, last = run_demo(db, days=days, customers=customers, seed=seed, console=out, progress_console=err)
    _ENGINES.append(engine)
    if report:
        _write_report(engine, last, out_dir, gx_dir, after="was published")


def _option_taken_as_value(ctx) -> str | None:
    """`--actor --reason x`: Click gives --actor the value "--reason" and then finds "x" extra; say the cause."""
    for name, value in (ctx.params if ctx is not None else {}).items():
        if isinstance(value, str) and value.startswith("--"):
            return (
                f"--{name.replace('_', '-')} was given no value: it took the option name '{value}' as its value. "
                f"Give --{name.replace('_', '-')} a value"
            )
    return None


def main() -> None:
    try:
        result = app(standalone_mode=False)
    except usage.NoArgsIsHelpError as exc:  # `flexbill` alone: the help, as it was asked for
        out.print(exc.ctx.get_help(), highlight=False)
        sys.exit(0)
    except usage.UsageError as exc:  # a typo in the command line: one line, like every other error
        where = exc.ctx.command_path if exc.ctx is not None else "flexbill"
        taken = _option_taken_as_value(exc.ctx)
        _fail(f"{taken or exc.format_message()} (see `{where} --help`)")
    except typer.Abort:
        err.print("interrupted: the open transaction was rolled back, nothing was written for the current date")
        sys.exit(130)
    except FlexbillError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        err.print("interrupted: the open transaction was rolled back, nothing was written for the current date")
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)


def console() -> None:
    """The `flexbill` command (the console script): `main`, then a quick exit. The commands' database connections
    are closed (SQLite folds its write-ahead log into the database file), then every object left is frozen
    (gc.freeze), so the interpreter's shutdown does not run the cyclic garbage collector over everything Great
    Expectations imported: ~0.55 s of every command that validated. Output is flushed and atexit handlers run as
    usual. Tests call `main` in their own process, which this would freeze: they don't come through here."""
    try:
        main()
    finally:
        for engine in _ENGINES:
            with suppress(Exception):
                engine.dispose()
        _ENGINES.clear()
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    console()
