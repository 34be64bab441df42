"""The data-quality report finance reads before a billing date's invoices go out.

`write_report(engine, D)` writes, under <out>/<D>/ (--out, $FLEXBILL_REPORT_DIR, else var/reports):

  index.html       one self-contained page (inline CSS, the chart as inline SVG drawn by matplotlib;
                   nothing loaded from the network): run status, invoices per currency and location,
                   skipped contracts and back-billing, quarantine with what to fix, the active-user
                   report with the suspended-with-portal-access list, reconciliation, the Great
                   Expectations checks with a link to the GX Data Docs, and the last 30 dates;
  invoices.csv, skipped.csv, quarantine.csv   the date's rows, for a spreadsheet.

Every figure is read back from the output tables (what was published; flexbill.figures), never from the run's memory.
Text from the billing database is escaped (Jinja2 autoescape); the database URL is shown redacted.
"""

from __future__ import annotations

import csv
import io
import os
from datetime import date
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from .db import schema as s
from .figures import (  # noqa: F401 - split_reason and history are the page's too (tests read them here)
    LIST_MAX,
    active_users,
    back_billed,
    gap_before,
    history,
    invoice_list,
    invoices_by_location,
    late_lines,
    lifecycle,
    portal_review,
    quarantine,
    reconciliation,
    run_status,
    skipped,
    skipped_list,
    split_reason,
    totals_by_currency,
)

TEMPLATE = "finance_report.html.j2"


def report_dir(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("FLEXBILL_REPORT_DIR") or "var/reports").resolve()


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
    fig, axes = plt.subplots(
        panels + 1, 1, figsize=(9, 1.8 * panels + 1.6), sharex=True, height_ratios=[3] * panels + [1.3], squeeze=False
    )
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
    return svg[svg.index("<svg") :]


def _environment():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
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
    _write_csv(
        paths["invoice_lines"],
        ["billing_date", "status", *cols],
        conn.execute(
            select(i.c.billing_date, i.c.status, *(li.c[c] for c in cols))
            .select_from(li.join(i, i.c.invoice_id == li.c.invoice_id))
            .where(i.c.billing_date == d)
            .order_by(li.c.invoice_id, li.c.contract_id, li.c.period_start)
        ).all(),
    )
    cols = [
        "invoice_id",
        "customer_id",
        "location_id",
        "billing_date",
        "currency",
        "subtotal",
        "tax",
        "total",
        "status",
        "number",
        "finalized_at",
        "finalized_by",
        "corrects",
    ]
    _write_csv(
        paths["invoices"],
        cols,
        conn.execute(select(*(i.c[c] for c in cols)).where(i.c.billing_date == d).order_by(i.c.invoice_id)).all(),
    )
    cols = [c.name for c in cn.columns]
    _write_csv(
        paths["credit_notes"],
        cols,
        conn.execute(select(*(cn.c[c] for c in cols)).where(cn.c.billing_date == d).order_by(cn.c.number)).all(),
    )
    cols = ["billing_date", "contract_id", "customer_id", "reason", "owed_periods", "owed_amount"]
    _write_csv(
        paths["skipped"],
        cols,
        conn.execute(select(*(k.c[c] for c in cols)).where(k.c.billing_date == d).order_by(k.c.contract_id)).all(),
    )
    _write_csv(
        paths["quarantine"],
        ["billing_date", "source_table", "row_id", "reason"],
        conn.execute(
            select(q.c.billing_date, q.c.source_table, q.c.row_id, q.c.reason)
            .where(q.c.billing_date == d)
            .order_by(q.c.source_table, q.c.row_id)
        ).all(),
    )
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
    table = pacsv.read_csv(csv_path, convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True))
    columns = []
    for name in table.column_names:
        column = table[name]
        if name in money:
            column = pa.array(
                [None if v is None else decimal.Decimal(v) for v in column.to_pylist()], type=pa.decimal128(18, 2)
            )
        elif name in ("customer_id", "location_id", "contract_id", "row_id", "quantity", "owed_periods"):
            column = pa.array([None if v is None else int(v) for v in column.to_pylist()], type=pa.int64())
        elif name == "prorated":
            column = pa.array([None if v is None else v in ("True", "true", "1") for v in column.to_pylist()])
        columns.append(column)
    out = csv_path.with_suffix(".parquet")
    pq.write_table(pa.table(columns, names=table.column_names), out)
    return out


def write_report(
    engine: Engine,
    d: date,
    out: str | os.PathLike | None = None,
    gx_directory: str | os.PathLike | None = None,
    conn: Connection | None = None,
    preview: bool = False,
) -> Path:
    """Write D's report with the Great Expectations checks its run kept (Data Docs rebuilt from them; a date
    published without them, by an older flexbill, is validated now); returns index.html.

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
    from .clock import cutoff_of
    from .db import extract
    from .db.connect import redact

    run_name = f"flexbill-{d}" + ("-preview" if preview else "")
    kept = quality.stored_checks(conn, d)
    if kept is not None:  # the checks D's run kept: shown and rendered as they were, nothing validated again
        portal = portal_review(conn, d)
        dq = quality.kept_date(conn, d, kept, gx_directory, run_name=run_name)
    else:  # D was published by an older flexbill (or never): validate the snapshot and the outputs now
        src = extract.snapshot(conn, cutoff_of(d))  # read once: the portal list, then validated
        portal = portal_review(conn, d, src)
        inputs = validation.stacked_inputs(src)
        del src  # the stacked frame is all validation needs: do not hold both
        dq = quality.validate_date(conn, d, gx_directory, inputs, run_name=run_name)
        del inputs

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
        return {
            "kind": "bad",
            "label": "NOT RUN",
            "text": f"Nothing was billed for {d}: run `flexbill run --date {d}`.",
        }
    if "blocked" in state:
        return {
            "kind": "bad",
            "label": "DO NOT SEND",
            "text": "The output gate blocked this date: nothing new was published. Fix the cause (below), then "
            "rerun the date.",
        }
    if rec is not None and not rec["ok"]:
        return {
            "kind": "bad",
            "label": "STOP",
            "text": "The reconciliation does not add up: do not send; report it (a flexbill defect).",
        }
    if data["preview"]:
        return {"kind": "warn", "label": "PREVIEW", "text": "Check these figures, then run the date to bill it."}
    if life["counts"]["draft"]:
        return {
            "kind": "warn",
            "label": "APPROVE DRAFTS",
            "text": f"{life['counts']['draft']} draft invoices wait: review them, then `flexbill finalize "
            f"--through {d} --actor <you>`.",
        }
    if data["gap"] and data["gap_serious"]:
        return {"kind": "warn", "label": "CHECK EARLIER DATES", "text": data["gap"]}
    n = life["counts"]["finalized"]
    return {
        "kind": "ok",
        "label": "READY TO SEND",
        "text": f"{n} invoice{'s' * (n != 1)} of {d} are final and reconciled: send them."
        + (f" {len(data['quarantine'])} source rows are quarantined: fix them (below)." if data["quarantine"] else ""),
    }


def _link(target: Path | None, folder: Path) -> str | None:
    if target is None:
        return None
    return os.path.relpath(target, folder)
