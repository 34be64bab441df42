"""`flexbill init-db` upgrades a database written before the invoice lifecycle (flexbill 0.1): its invoices and
lines keep every value, become drafts that the next run (or `flexbill finalize`) numbers oldest first, and the
lifecycle's keys and triggers hold from then on.  On SQLite (tables rebuilt) and PostgreSQL (altered)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import DBAPIError

from flexbill.db import schema as s
from flexbill.db.connect import init_db, make_engine
from flexbill.errors import DatabaseError
from flexbill.runner import run_billing_date
from tests.builders import Operator
from tests.documents import assert_documents_consistent

NEW = {"invoices", "invoice_lines", "billed_periods", "credit_notes", "number_series"}
V1_DDL = [
    "create table invoices (invoice_id text primary key, customer_id integer not null, location_id integer not null, "
    "billing_date date not null, currency char(3) not null, subtotal numeric(18, 2) not null, "
    "tax numeric(18, 2) not null, total numeric(18, 2) not null, "
    "constraint uq_invoices_customer_date unique (customer_id, billing_date))",
    "create index ix_invoices_billing_date on invoices (billing_date)",
    "create table invoice_lines (invoice_id text not null references invoices (invoice_id) on delete cascade, "
    "contract_id integer not null, period_start date not null, period_end date not null, quantity integer not null, "
    "unit_price numeric(12, 2) not null, amount numeric(18, 2) not null, prorated boolean not null, "
    "constraint uq_invoice_lines_contract_period unique (contract_id, period_start))",
    "create index ix_invoice_lines_invoice on invoice_lines (invoice_id)",
]
V1_ROWS = [
    "insert into invoices values ('INV-20240301-0000002', 2, 1, '2024-03-01', 'EUR', 100.00, 20.00, 120.00)",
    "insert into invoices values ('INV-20240301-0000001', 1, 1, '2024-03-01', 'EUR', 50.00, 10.00, 60.00)",
    "insert into invoice_lines values ('INV-20240301-0000001', 1, '2024-03-01', '2024-04-01', 1, 50.00, 50.00, false)",
    "insert into invoice_lines values ('INV-20240301-0000002', 2, '2024-03-01', '2024-04-01', 1, 100.00, 100.00, false)",
    "insert into contract_ledger values (1, '2024-04-01'), (2, '2024-04-01')",
]


@pytest.fixture
def v1_engine(db_url):
    engine = make_engine(db_url)
    with engine.begin() as conn:
        s.metadata.create_all(conn, tables=[t for t in s.metadata.sorted_tables if t.name not in NEW])
        for statement in V1_DDL + V1_ROWS:
            conn.exec_driver_sql(statement)
        conn.execute(
            s.billing_runs.insert(),
            {
                "billing_date": date(2024, 3, 1),
                "status": "published",
                "started_at": datetime(2024, 3, 2),
                "finished_at": datetime(2024, 3, 2),
                "published_at": datetime(2024, 3, 2),
            },
        )
    op = Operator(engine)
    op.location(1)
    op.plan(1, price="100.00")
    op.customer(1)
    op.customer(2)
    op.contract(1, 1, 1, start_date=date(2024, 3, 1), price="50.00")
    op.contract(2, 2, 1, start_date=date(2024, 3, 1))
    yield engine
    engine.dispose()


def test_init_db_upgrades_a_v1_database_keeping_every_invoice_and_line(v1_engine):
    engine = v1_engine
    with pytest.raises(DatabaseError, match="run `flexbill init-db` to upgrade it"):
        run_billing_date(engine, date(2024, 3, 2))
    created = init_db(engine)
    assert set(created) == {"billed_periods", "credit_notes", "number_series"}
    columns = {c["name"] for c in inspect(engine).get_columns("invoices")}
    assert {"status", "number", "finalized_at", "finalized_by", "corrects"} <= columns
    op = Operator(engine)
    invoices = sorted(op.rows(s.invoices), key=lambda r: r["invoice_id"])
    assert [(r["invoice_id"], r["status"], r["number"], r["total"]) for r in invoices] == [
        ("INV-20240301-0000001", "draft", None, Decimal("60.00")),
        ("INV-20240301-0000002", "draft", None, Decimal("120.00")),
    ]
    assert [(l["contract_id"], l["amount"]) for l in op.lines()] == [(1, Decimal("50.00")), (2, Decimal("100.00"))]
    assert init_db(engine) == []  # idempotent: nothing left to upgrade

    summary = run_billing_date(engine, date(2024, 3, 2))  # the next run finalizes the old drafts, oldest first
    assert summary.finalized.count == 2
    assert [(r["invoice_id"], r["number"]) for r in sorted(op.rows(s.invoices), key=lambda r: r["number"])] == [
        ("INV-20240301-0000001", "1-000001"),
        ("INV-20240301-0000002", "1-000002"),
    ]
    assert len(op.lines()) == 2, "nothing billed twice after the upgrade"
    assert_documents_consistent(engine)
    with pytest.raises(DBAPIError, match="flexbill"):  # the lifecycle triggers hold
        with engine.begin() as conn:
            conn.execute(text("update invoices set total = 0"))
    with engine.connect() as conn:  # the v1 key on (contract, period) is gone: billed_periods holds it now
        assert conn.execute(
            select(s.billed_periods.c.contract_id).order_by(s.billed_periods.c.contract_id)
        ).scalars().all() == [1, 2]
