"""Absurd amounts (issue 4, corrupted inputs): flexbill never wraps an integer or crashes on them.

A contract whose full period (unit price x quantity) exceeds 10,000,000,000.00, or a plan whose step exceeds a
century, is quarantined with a reason; everything else is billed, and tax stays exact even where subtotal x rate
no longer fits 64-bit integers (found by this suite: it used to wrap silently, or crash the run).
"""

import tempfile
from datetime import date
from decimal import Decimal

import pytest

from flexbill.db import schema as s
from flexbill.db.connect import init_db, make_engine
from flexbill.runner import run_billing_date
from tests.builders import Operator
from tests.processes import pg_databases

D = date(2024, 3, 1)


def _world(url, price, quantity):
    engine = make_engine(url)
    init_db(engine)
    op = Operator(engine)
    op.one_contract(D)
    op.customer(2)
    op.contract(2, 2, 1, start_date=D, price=price, quantity=quantity)
    return engine, op


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_large_subtotal_gets_the_exact_tax(dialect):
    """1,000 contracts at the largest allowed period amount: subtotal x 20 % is past int64, tax is still exact."""
    with pg_databases(1) as (pg,):
        url = f"sqlite:///{tempfile.mkdtemp()}/x.sqlite" if dialect == "sqlite" else pg
        engine, op = _world(url, "1.00", 1)
        for cid in range(10, 1010):
            op.contract(cid, 2, 1, start_date=D, price="9999999999.99")
        run_billing_date(engine, D)
        [inv] = op.rows(s.invoices, customer_id=2)
        engine.dispose()
        assert inv["subtotal"] == Decimal("9999999999.99") * 1000 + Decimal("1.00")
        assert inv["tax"] == (inv["subtotal"] * Decimal("0.2")).quantize(Decimal("0.01"))
        assert inv["total"] == inv["subtotal"] + inv["tax"]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_period_beyond_ten_billion_is_quarantined_with_a_reason(dialect):
    with pg_databases(1) as (pg,):
        url = f"sqlite:///{tempfile.mkdtemp()}/x.sqlite" if dialect == "sqlite" else pg
        engine, op = _world(url, "9999999999.99", 10_000)
        run_billing_date(engine, D)
        reasons = {(r["source_table"], r["row_id"]): r["reason"] for r in op.rows(s.quarantine)}
        assert [l["contract_id"] for l in op.lines(D)] == [1]
        engine.dispose()
    assert "beyond what flexbill bills" in reasons[("contracts", 2)]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_an_unrepresentable_amount_is_quarantined_and_the_rest_billed(dialect):
    with pg_databases(1) as (pg,):
        url = f"sqlite:///{tempfile.mkdtemp()}/x.sqlite" if dialect == "sqlite" else pg
        engine, op = _world(url, "9999999999.99", 2**31 - 1)
        run_billing_date(engine, D)  # today: OverflowError (SQLite) / DatabaseError (PostgreSQL)
        assert [l["contract_id"] for l in op.lines(D)] == [1]
        assert ("contracts", 2) in {(r["source_table"], r["row_id"]) for r in op.rows(s.quarantine)}
        engine.dispose()


def test_a_plan_billing_every_billion_weeks_is_quarantined():
    """invoice_every_weeks = 10^9 used to crash the run (dates past year 9999): now the plan is held back."""
    engine, op = _world(f"sqlite:///{tempfile.mkdtemp()}/x.sqlite", "1.00", 1)
    op.plan(2, months=0, weeks=10**9)
    op.contract(3, 1, 2, start_date=D)
    run_billing_date(engine, D)
    assert 1 in [l["contract_id"] for l in op.lines(D)]
    assert ("plans", 2) in {(r["source_table"], r["row_id"]) for r in op.rows(s.quarantine)}
    engine.dispose()
