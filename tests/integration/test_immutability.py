"""Finalized invoices never change (CONTRACT.md v2, "Invoice lifecycle"): not the number, not an amount, not a
line; only `status` may move from finalized to credited, and only with its credit note.  A credit note never
changes.  For every (contract, period) there is at most one line on invoices that are not credited.

The database itself refuses (plugins/flexbill/sql/lifecycle.*.sql), on SQLite and PostgreSQL:
* every UPDATE, DELETE, INSERT (and TRUNCATE on PostgreSQL) through SQL that would change a finalized or
  credited invoice, its lines, a credit note, or the live-line index `billed_periods`;
* a second live line for a (contract, period).
Then every flexbill command and every DAG task runs against a database holding finalized invoices and a credit
note, and each finalized row is compared byte for byte (every column cast to text) before and after.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pandas as pd
import psycopg
import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError

from flexbill import airflow_steps, invoicing
from flexbill.db import schema as s
from flexbill.db.connect import init_db, make_engine
from flexbill.errors import LifecycleViolation
from flexbill.runner import backfill, run_billing_date
from tests.builders import Operator
from tests.documents import assert_documents_consistent, exact_rows
from tests.processes import clean_env, flexbill

D1, D2, D3 = date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)


def build(url: str):
    """Finalized invoices on D1 and D2 (two locations), one of them corrected: a credit note and a corrective."""
    engine = make_engine(url)
    init_db(engine)
    op = Operator(engine)
    op.location(1, currency="EUR", tax_rate="0.2000")
    op.location(2, currency="GBP", tax_rate="0.1000")
    op.plan(1, price="100.00")
    op.plan(2, price="80.00", location_id=2, currency="GBP")
    for c, loc, plan, start in ((1, 1, 1, D1), (2, 1, 1, D2), (3, 2, 2, D1), (4, 1, 1, D1)):
        op.customer(c, location_id=loc)
        op.contract(c, c, plan, start_date=start)
    backfill(engine, D1, D2)
    with engine.begin() as conn:
        conn.execute(update(s.contracts).where(s.contracts.c.id == 4).values(price=Decimal("90.00")))
    run_billing_date(engine, D1)  # customer 4's invoice is credited and corrected
    return engine


def finalized_state(engine) -> dict:
    return {
        "invoices": exact_rows(engine, "invoices", "invoice_id"),
        "invoice_lines": _lines(engine),
        "credit_notes": exact_rows(engine, "credit_notes", "credit_note_id"),
    }


def _lines(engine) -> dict:
    with engine.connect() as conn:
        cast = (lambda c: f"quote({c})") if conn.dialect.name == "sqlite" else (lambda c: f"{c}::text")
        cols = [c.name for c in s.invoice_lines.columns]
        rows = conn.execute(text(f"select {', '.join(cast(c) for c in cols)} from invoice_lines")).all()
    return {(r[0], r[1], r[2]): dict(zip(cols, r)) for r in rows}


def assert_survived(before: dict, after: dict) -> None:
    """Every finalized or credited row of `before` is in `after` byte for byte, but a finalized invoice's status
    may have become credited (a correction); its credit note then exists."""
    for key, row in before["invoices"].items():
        if "draft" in row["status"]:
            continue
        now = after["invoices"][key]
        changed = {c for c in row if row[c] != now[c]}
        if changed:
            assert changed == {"status"} and "finalized" in row["status"] and "credited" in now["status"], (
                key,
                changed,
            )
    finalized = {k for k, r in before["invoices"].items() if "draft" not in r["status"]}
    for key, row in before["invoice_lines"].items():
        if row["invoice_id"] in finalized:
            assert after["invoice_lines"][key] == row
    for key, row in before["credit_notes"].items():
        assert after["credit_notes"][key] == row


@pytest.fixture
def documents(db_url):
    engine = build(db_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared_documents(request, tmp_path_factory):
    """One database per dialect for the SQL attempts: each is refused, so none changes it."""
    from tests.processes import pg_databases

    if request.param == "sqlite":
        engine = build(f"sqlite:///{tmp_path_factory.mktemp('immutable') / 'flexbill.sqlite'}")
        yield engine
        engine.dispose()
        return
    with pg_databases(1) as (url,):
        engine = build(url)
        yield engine
        engine.dispose()


SQL_ATTEMPTS = [
    "update invoices set total = total + 1 where status = 'finalized'",
    "update invoices set number = '1-999999' where status = 'finalized'",
    "update invoices set finalized_by = 'mallory' where status <> 'draft'",
    "update invoices set status = 'draft', number = null where status = 'finalized'",
    "update invoices set status = 'finalized' where status = 'credited'",
    "update invoices set status = 'credited' where invoice_id = 'INV-20240301-0000001'",  # no credit note for it
    "update invoices set corrects = 'INV-20240301-0000001' where status = 'finalized'",
    "delete from invoices where status = 'finalized'",
    "delete from invoices where status = 'credited'",
    "delete from invoices",
    "update invoice_lines set amount = 0",
    "update invoice_lines set period_end = period_start",
    "delete from invoice_lines",
    "insert into invoice_lines values ('INV-20240301-0000001', 99, '2024-03-01', '2024-04-01', 1, 1, 1, false)",
    "update credit_notes set total = 0",
    "update credit_notes set number = '1-C999999'",
    "delete from credit_notes",
    "delete from billed_periods",
    "update billed_periods set invoice_id = 'INV-20240301-0000001'",
    # a second live line for a billed period, on a new draft: refused by billed_periods' key
    "insert into invoices (invoice_id, customer_id, location_id, billing_date, currency, subtotal, tax, total) "
    "values ('X', 1, 1, '2024-03-05', 'EUR', 1, 0, 1); "
    "insert into invoice_lines values ('X', 1, '2024-03-01', '2024-04-01', 1, 1, 1, false)",
]
PG_ONLY = ["truncate invoices cascade", "truncate invoice_lines", "truncate credit_notes", "truncate billed_periods"]


@pytest.mark.parametrize("statement", SQL_ATTEMPTS + PG_ONLY)
def test_sql_cannot_change_a_finalized_invoice_its_lines_or_a_credit_note(shared_documents, statement):
    """(TRUNCATE, PostgreSQL's, bypasses row triggers: refused too; on SQLite a DELETE without WHERE is the same
    statement as above, so there the TRUNCATE cases run it again.)"""
    engine = shared_documents
    if statement in PG_ONLY and engine.dialect.name != "postgresql":
        statement = f"delete from {statement.split()[1]}"
    before = finalized_state(engine)
    with pytest.raises(DBAPIError, match="flexbill|billed_periods|pk_billed_periods"):
        with engine.begin() as conn:
            for part in statement.split("; "):
                conn.exec_driver_sql(part)
    assert finalized_state(engine) == before
    assert_documents_consistent(engine)


def test_the_one_change_allowed_is_a_correction_that_credits_with_its_credit_note(documents):
    engine = documents
    before = finalized_state(engine)
    with engine.begin() as conn:  # what a correction does, by hand: the credit note, then the status
        conn.exec_driver_sql(
            "insert into credit_notes values ('CN-X', '2-C000001', 'INV-20240301-0000003', 3, 2, '2024-03-01', "
            "'2024-04-01 00:00:00', 'GBP', 80, 8, 88, 'manual test')"
        )
        conn.exec_driver_sql("update invoices set status = 'credited' where invoice_id = 'INV-20240301-0000003'")
    after = finalized_state(engine)
    assert_survived(before, after)
    assert "credited" in after["invoices"][next(k for k in after["invoices"] if "INV-20240301-0000003" in k)]["status"]
    with engine.connect() as conn:  # its period is owed again: no live line left for it
        assert conn.execute(text("select count(*) from billed_periods where contract_id = 3")).scalar_one() == 0


def test_every_flexbill_command_and_dag_task_leaves_finalized_rows_byte_for_byte(
    documents, db_url, tmp_path, monkeypatch
):
    engine = documents
    before = finalized_state(engine)
    env = clean_env(
        db_url, FLEXBILL_REPORT="1", FLEXBILL_REPORT_DIR=str(tmp_path / "reports"), FLEXBILL_GX_DIR=str(tmp_path / "gx")
    )
    commands = [
        ("init-db",),
        ("run", "--date", str(D1)),
        ("run", "--date", str(D2), "--dry-run"),
        ("backfill", "--from", str(D1), "--to", str(D3)),
        ("finalize", "--through", str(D3), "--actor", "fin@op.example"),
        ("suspend", "--customer", "1", "--actor", "ops@op.example", "--at", "2024-03-02T10:00:00Z", "--backdate"),
        ("lift", "--customer", "1", "--actor", "ops@op.example", "--at", "2024-03-02T11:00:00Z", "--backdate"),
        ("suspend", "--customer", "3", "--actor", "ops@op.example", "--at", "2024-03-02T12:00:00Z", "--backdate"),
        ("report", "--date", str(D2)),
        ("explain", "--contract", "1", "--date", str(D1), "--json"),
        ("void-event", "--id", "3", "--actor", "ops@op.example", "--reason", "wrong customer", "--backdate"),
    ]
    for args in commands:
        res = flexbill(*args, env=env)
        assert res.returncode == 0, (args, res.stderr)
        assert_survived(before, finalized_state(engine))
    with engine.begin() as conn:  # a data fix, then a rerun of finalized dates: corrections, never rewrites
        conn.execute(update(s.plans).where(s.plans.c.id == 1).values(price=Decimal("101.00")))
    res = flexbill("backfill", "--from", str(D1), "--to", str(D3), env=env)
    assert res.returncode == 0, res.stderr
    assert_survived(before, finalized_state(engine))

    # the DAG tasks, as their @task functions call them, on this database
    monkeypatch.setattr(airflow_steps, "engine", lambda: make_engine(db_url))
    monkeypatch.setenv("FLEXBILL_REPORT_DIR", str(tmp_path / "dag-reports"))
    monkeypatch.setenv("FLEXBILL_GX_DIR", str(tmp_path / "dag-gx"))
    with engine.begin() as conn:
        conn.execute(update(s.plans).where(s.plans.c.id == 2).values(price=Decimal("81.00")))
    start = datetime(2024, 3, 1, tzinfo=UTC)
    run_id = "immutability-dag-run"
    locations = airflow_steps.extract_snapshot(start, run_id)["locations"]
    for rule in airflow_steps.RULES:
        airflow_steps.apply_rule(start, run_id, rule)
    for task in (airflow_steps.owed_periods, airflow_steps.suspension_filter, airflow_steps.build_invoices):
        for location in locations:
            task(start, run_id, location)
    airflow_steps.active_user_report(start, run_id)
    airflow_steps.validate_output(start, run_id)
    published = airflow_steps.publish_summary(start, run_id)
    assert published["credit_notes"], "the GBP price fix corrects D1's finalized GBP invoice"
    airflow_steps.data_quality_report(start)
    airflow_steps.finalize_grace(start)
    airflow_steps.finalize({"through": str(D3), "actor": "fin@op.example"})
    airflow_steps.manual_event(
        {
            "customer_id": 2,
            "action": "suspend",
            "actor": "ops@op.example",
            "backdate": True,
            "at": (datetime(2024, 3, 3, 12)).isoformat(),
        }
    )
    after = finalized_state(engine)
    assert_survived(before, after)
    assert len(after["credit_notes"]) >= len(before["credit_notes"]) + 2  # the fixes were corrected, not rewritten
    assert_documents_consistent(engine)


def _triggers(engine) -> dict:
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("select name, sql from sqlite_master where type = 'trigger'").all()
        else:
            rows = conn.exec_driver_sql(
                "select tgname, pg_get_triggerdef(oid) from pg_trigger where not tgisinternal"
            ).all()
    return dict(rows)


def test_billed_periods_are_exactly_the_live_lines_and_every_trigger_is_back_after_runs(documents):
    """SQLite's publish sets the per-row trigger that adds each line's billed period aside and adds the same rows
    in one statement (flexbill.invoicing._insert_lines): the rows must be those the trigger gives, and the trigger
    must be in place, as it was, after runs that published, corrected and rolled back."""
    engine = documents
    before = _triggers(engine)
    assert "flexbill_lines_inserted" in before
    with engine.begin() as conn:  # a data fix: the rerun credits and corrects, then a dry run rolls back
        conn.execute(update(s.plans).where(s.plans.c.id == 1).values(price=Decimal("102.00")))
    run_billing_date(engine, D2)
    run_billing_date(engine, D3, preview=lambda conn, summary: None)
    run_billing_date(engine, D3)
    assert _triggers(engine) == before
    with engine.connect() as conn:
        billed = set(conn.exec_driver_sql("select contract_id, period_start, invoice_id from billed_periods").all())
        live = set(
            conn.exec_driver_sql(
                "select l.contract_id, l.period_start, l.invoice_id from invoice_lines as l "
                "join invoices as i on i.invoice_id = l.invoice_id where i.status <> 'credited'"
            ).all()
        )
    assert billed == live and len(live) == 4  # customers 1-4, one monthly period each (2 corrected)


def test_a_failure_while_a_sqlite_trigger_is_set_aside_leaves_it_in_place(sqlite_database):
    from flexbill.db import dialect

    engine = make_engine(sqlite_database)
    init_db(engine)
    before = _triggers(engine)
    with pytest.raises(DBAPIError):
        with engine.begin() as conn:
            with dialect.sqlite_trigger_set_aside(conn, "flexbill_lines_inserted") as present:
                assert present
                gone = conn.exec_driver_sql("select count(*) from sqlite_master where name = 'flexbill_lines_inserted'")
                assert gone.scalar_one() == 0
                conn.exec_driver_sql("insert into no_such_table values (1)")
    assert _triggers(engine) == before
    with engine.begin() as conn:  # a trigger that does not exist: nothing to set aside, nothing created
        with dialect.sqlite_trigger_set_aside(conn, "flexbill_no_such_trigger") as present:
            assert not present
    assert _triggers(engine) == before
    engine.dispose()


def _line_on_a_finalized_invoice(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        finalized = conn.execute(
            text("select invoice_id from invoices where billing_date = :d and status = 'finalized'"), {"d": D2}
        ).scalar()
    line = {
        "invoice_id": finalized,
        "contract_id": 2,
        "period_start": date(2024, 4, 2),
        "period_end": date(2024, 5, 1),
        "quantity": 1,
        "unit_price": Decimal("100.00"),
        "amount": Decimal("100.00"),
        "prorated": False,
    }
    return pd.DataFrame([line])


REFUSED = r"a line can only be added to a draft invoice|a line cannot be added to a finalized or credited invoice"


def test_a_publish_that_puts_a_line_on_a_finalized_invoice_fails_with_the_guard_set_aside_or_not(documents):
    """SQLite's publish sets the guard trigger flexbill_lines_insert aside too and checks every new line at once
    (flexbill.invoicing._insert_lines); PostgreSQL keeps its statement trigger. Either way a line on an invoice that
    is not a draft fails the run, nothing is written, and every trigger is back."""
    engine = documents
    before, state = _triggers(engine), finalized_state(engine)
    line = _line_on_a_finalized_invoice(engine)
    sqlite = engine.dialect.name == "sqlite"  # there the run's own check refuses, with the trigger set aside
    with pytest.raises(LifecycleViolation if sqlite else (DBAPIError, psycopg.Error), match=REFUSED):
        with engine.begin() as conn:
            invoicing._insert_lines(conn, D2, line)
    assert _triggers(engine) == before
    assert finalized_state(engine) == state


def test_without_the_billed_period_trigger_sqlite_still_checks_every_new_line(sqlite_database):
    """A SQLite database whose flexbill_lines_inserted is missing (nothing to set aside for billed_periods): the
    guard's set-based check counts the new lines on D's drafts instead, and refuses as before."""
    engine = build(sqlite_database)
    with engine.begin() as conn:
        conn.exec_driver_sql("drop trigger flexbill_lines_inserted")
    before, state = _triggers(engine), finalized_state(engine)
    line = _line_on_a_finalized_invoice(engine)
    with pytest.raises(LifecycleViolation, match=REFUSED):
        with engine.begin() as conn:
            invoicing._insert_lines(conn, D2, line)
    assert _triggers(engine) == before and "flexbill_lines_insert" in before
    assert finalized_state(engine) == state
    engine.dispose()
