"""The finance page says exactly what happened (issue 12): one badge with what finance must do, failed checks
first, the reconciliation of billing_runs, archived contracts as not billed, a chart panel per currency with
dates never run as gaps, the date's invoices, skips and late lines on the page, and CSV and Parquet exports.
On the fault suite's operator (EUR and GBP, every kind of output), SQLite and PostgreSQL."""

from __future__ import annotations

import csv
from datetime import date
from decimal import Decimal

import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from flexbill.db import schema as s
from flexbill.db.connect import init_db, make_engine
from flexbill.errors import OutputRejected
from flexbill.finance_report import history, write_report
from flexbill.runner import run_billing_date
from tests.builders import Operator
from tests.integration.test_finance_report import body, money, parse
from tests.reliability.world import D0, D, scenario


@pytest.fixture
def world(db_url):
    engine = make_engine(db_url)
    init_db(engine)
    scenario(Operator(engine))
    run_billing_date(engine, D0)
    run_billing_date(engine, D)
    yield engine
    engine.dispose()


def page_of(engine, d, tmp_path):
    path = write_report(engine, d, tmp_path / "reports", tmp_path / "gx")
    return path, parse(path.read_text())


def test_a_published_final_date_is_ready_to_send_with_failed_checks_first(world, tmp_path):
    next_day = date(2024, 3, 2)  # D - 1 was never run: D's page warns; the day after D has nothing to warn of
    run_billing_date(world, next_day)
    path, page = page_of(world, next_day, tmp_path)
    assert page.ids["action-badge"] == "READY TO SEND"
    assert "quarantined" in page.ids["action-text"]
    checks = body(page, "checks-table")
    states = [row[3] for row in checks]
    assert "failed" in states and states == sorted(states, key=lambda x: x != "failed"), "failed checks first"
    assert "contracts.quantity" in page.ids["failed-checks"]  # the quarantined contract's check, called out on top
    html = path.read_text()
    assert html.index('id="finance-action"') < html.index('id="status"')


def test_the_reconciliation_is_billing_runs_own(world, tmp_path):
    _, page = page_of(world, D, tmp_path)
    with world.connect() as conn:
        run = conn.execute(select(s.billing_runs).where(s.billing_runs.c.billing_date == D)).mappings().one()
    line = page.ids["reconciliation-line"]
    assert line.startswith(
        f"{run['contracts_owed']} contracts with owed periods = {run['contracts_invoiced']} "
        f"invoiced + {run['contracts_skipped']} skipped"
    )
    assert f"{run['contracts_quarantined']} quarantined contracts held back" in line
    assert page.ids["reconciliation-result"] == "passed"


def test_archived_contracts_are_not_billed_and_suspended_ones_stay_owed(world, tmp_path):
    _, page = page_of(world, D, tmp_path)
    outcomes = {row[1]: row[2] for row in body(page, "skipped-list")}
    assert outcomes["7"] == "not billed, archived"  # customer 7 is archived
    assert outcomes["11"] == "suspended: stays owed"
    with world.connect() as conn:
        assert len(outcomes) == len(
            conn.execute(select(s.skipped_contracts).where(s.skipped_contracts.c.billing_date == D)).all()
        )


def test_the_date_s_invoices_and_late_lines_are_on_the_page(world, tmp_path):
    _, page = page_of(world, D, tmp_path)
    with world.connect() as conn:
        invoices = conn.execute(
            select(s.invoices.c.number, s.invoices.c.total)
            .where(s.invoices.c.billing_date == D)
            .order_by(s.invoices.c.number)
        ).all()
    shown = [(row[0], money(row[6])) for row in body(page, "invoice-list")]
    assert shown == [(n, Decimal(str(t))) for n, t in invoices]
    late = body(page, "late-lines")
    assert late and {row[4] for row in late} <= {
        "back-billed after a lift",
        "late (dates not run)",
        "late (recorded or fixed later)",
    }
    assert sum(int(row[2]) for row in body(page, "back-billed")) == len(late)


def test_exports_hold_lines_and_parquet_equals_the_tables(world, tmp_path):
    path, _ = page_of(world, D, tmp_path)
    folder = path.parent
    with world.connect() as conn:
        lines = conn.execute(
            select(s.invoice_lines.c.invoice_id, s.invoice_lines.c.contract_id, s.invoice_lines.c.amount)
            .join(s.invoices, s.invoices.c.invoice_id == s.invoice_lines.c.invoice_id)
            .where(s.invoices.c.billing_date == D)
        ).all()
        invoices = conn.execute(
            select(s.invoices.c.invoice_id, s.invoices.c.total, s.invoices.c.number).where(
                s.invoices.c.billing_date == D
            )
        ).all()
    rows = list(csv.DictReader((folder / "invoice_lines.csv").open()))
    assert sorted((r["invoice_id"], int(r["contract_id"]), Decimal(r["amount"])) for r in rows) == sorted(
        (i, c, Decimal(str(a))) for i, c, a in lines
    )
    table = pq.read_table(folder / "invoices.parquet").to_pylist()
    assert sorted((r["invoice_id"], r["total"], r["number"]) for r in table) == sorted(
        (i, Decimal(str(t)).quantize(Decimal("0.01")), n) for i, t, n in invoices
    )
    assert isinstance(table[0]["total"], Decimal) and isinstance(table[0]["billing_date"], date)
    for name in ("invoice_lines", "credit_notes", "skipped", "quarantine"):
        assert pq.read_table(folder / f"{name}.parquet").num_rows == len(
            list(csv.DictReader((folder / f"{name}.csv").open()))
        )


def test_a_date_never_run_shows_no_passed_badge_and_its_gap_on_the_chart(world, tmp_path):
    never = date(2024, 2, 20)
    _, page = page_of(world, never, tmp_path)
    assert page.ids["action-badge"] == "NOT RUN"
    assert page.ids["gx-outputs"] == "not run" and page.ids["gx-inputs"] == "not run"
    with world.connect() as conn:
        hist = history(conn, D)
    by_day = dict(zip(hist["dates"], zip(hist["ran"], hist["totals"]["EUR"])))
    assert by_day[D0][0] and by_day[D0][1] > 0
    assert by_day[never] == (False, None), "a date never run is a gap, not a zero"
    assert set(hist["totals"]) == {"EUR", "GBP"}


def test_the_chart_has_one_panel_per_currency(world, tmp_path):
    path, _ = page_of(world, D, tmp_path)
    svg = path.read_text()
    assert "EUR invoiced" in svg and "GBP invoiced" in svg


def test_drafts_blocked_and_gaps_each_get_their_badge(world, tmp_path, monkeypatch):
    monkeypatch.setenv("FLEXBILL_GRACE_DAYS", "5")
    later = date(2024, 3, 5)  # 03-02 .. 03-04 never run
    run_billing_date(world, later)
    _, page = page_of(world, later, tmp_path)
    assert page.ids["action-badge"] == "APPROVE DRAFTS"
    assert "2024-03-04 has no published run" in page.ids["gap-warning"]
    monkeypatch.setenv("FLEXBILL_GRACE_DAYS", "0")
    run_billing_date(world, later)
    _, page = page_of(world, later, tmp_path)
    assert page.ids["action-badge"] == "CHECK EARLIER DATES"
    with pytest.raises(OutputRejected):
        run_billing_date(world, later, tamper=lambda result, report: result.lines.__setitem__("amount_cents", -1))
    _, page = page_of(world, later, tmp_path)
    assert page.ids["action-badge"] == "DO NOT SEND"
