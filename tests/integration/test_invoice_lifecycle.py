"""The invoice lifecycle (CONTRACT.md v2): drafts, finalization, gapless numbers, corrections.

Every test runs on SQLite and PostgreSQL and checks, after each step, what must always hold of
invoices and credit notes (tests.documents).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select, text, update

from flexbill.db import dialect
from flexbill.db import schema as s
from flexbill.errors import InputError, OutputRejected
from flexbill.invoicing import finalize
from flexbill.runner import backfill, run_billing_date
from tests.builders import Operator
from tests.documents import assert_documents_consistent, exact_rows
from tests.processes import dump

D1, D2, D3 = date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)
NOW = datetime(2024, 4, 1, 12, 0)


def operator(engine) -> Operator:
    """Two locations; customers 1-3 in EUR, 4 in GBP; contract c bills customer c; customer 2 on the 2nd."""
    op = Operator(engine)
    op.location(1, currency="EUR", tax_rate="0.2000")
    op.location(2, currency="GBP", tax_rate="0.1000")
    op.plan(1, price="100.00")
    op.plan(2, price="80.00", location_id=2, currency="GBP")
    op.plan(3, price="30.00", months=0, weeks=1)
    for c in (1, 2, 3):
        op.customer(c)
    op.customer(4, location_id=2)
    op.contract(1, 1, 1, start_date=D1)
    op.contract(2, 2, 1, start_date=D2)
    op.contract(3, 3, 3, start_date=D1)
    op.contract(4, 4, 2, start_date=D1)
    return op


def invoices(engine, **where) -> list[dict]:
    return sorted(
        Operator(engine).rows(s.invoices, **where), key=lambda r: (r["billing_date"], r["customer_id"], r["invoice_id"])
    )


def finalize_now(engine, through: date, actor: str = "fin@op.example"):
    with engine.begin() as conn:
        dialect.lock_for_run(conn)
        return finalize(conn, through, actor, NOW)


def test_a_run_finalizes_at_once_by_default_numbering_by_date_then_customer_per_location(engine):
    operator(engine)
    backfill(engine, D1, D2)
    rows = invoices(engine)
    assert [(r["billing_date"], r["customer_id"], r["number"], r["status"], r["finalized_by"]) for r in rows] == [
        (D1, 1, "1-000001", "finalized", "grace"),
        (D1, 3, "1-000002", "finalized", "grace"),
        (D1, 4, "2-000001", "finalized", "grace"),
        (D2, 2, "1-000003", "finalized", "grace"),
    ]
    assert all(r["finalized_at"] is not None and r["corrects"] is None for r in rows)
    assert_documents_consistent(engine)


def test_the_grace_period_keeps_drafts_until_their_date_is_old_enough(engine, monkeypatch):
    monkeypatch.setenv("FLEXBILL_GRACE_DAYS", "2")
    op = operator(engine)
    run_billing_date(engine, D1)
    assert {r["status"] for r in invoices(engine)} == {"draft"}
    assert all(r["number"] is None for r in invoices(engine))
    with engine.begin() as conn:  # a draft is replaced freely by a rerun: no credit note
        conn.execute(update(s.contracts).where(s.contracts.c.id == 1).values(price=Decimal("110.00")))
    run_billing_date(engine, D1)
    assert not op.rows(s.credit_notes)
    assert [r["total"] for r in invoices(engine, customer_id=1)] == [Decimal("132.00")]
    run_billing_date(engine, D2)
    assert {r["status"] for r in invoices(engine)} == {"draft"}
    summary = run_billing_date(engine, D3)  # D1 = D3 - 2 days: finalized now, the later ones wait
    assert summary.finalized.count == 3 and summary.finalized.dates == [D1]
    assert [
        (r["billing_date"], r["status"], r["number"], r["finalized_by"])
        for r in invoices(engine)
        if r["billing_date"] == D1
    ] == [
        (D1, "finalized", "1-000001", "grace"),
        (D1, "finalized", "1-000002", "grace"),
        (D1, "finalized", "2-000001", "grace"),
    ]
    assert {r["status"] for r in invoices(engine) if r["billing_date"] > D1} == {"draft"}
    assert_documents_consistent(engine)


def test_finalize_through_numbers_oldest_date_first_and_refuses_what_it_must_changing_nothing(engine, monkeypatch):
    monkeypatch.setenv("FLEXBILL_GRACE_DAYS", "30")
    operator(engine)
    backfill(engine, D1, D3)
    before = dump(engine)
    for through, actor, words in [
        (date(2099, 1, 1), "fin@op.example", "in the future"),
        (date(2024, 3, 10), "fin@op.example", "has no billing run"),
        (D3, "  ", "--actor is required"),
    ]:
        with pytest.raises(InputError, match=words):
            finalize_now(engine, through, actor)
        assert dump(engine) == before
    with pytest.raises(OutputRejected):  # D2's rerun is blocked by the output gate: its drafts must wait
        run_billing_date(engine, D2, tamper=lambda result, report: result.lines.__setitem__("amount_cents", -1))
    blocked = dump(engine)
    with pytest.raises(InputError, match=f"{D2} cannot be finalized: the latest run of {D2} was blocked"):
        finalize_now(engine, D3)
    assert dump(engine) == blocked
    done = finalize_now(engine, D1)  # a range without the blocked date is fine
    assert (done.count, done.dates, done.numbers) == (3, [D1], {1: ("1-000001", "1-000002"), 2: ("2-000001",) * 2})
    run_billing_date(engine, D2)  # the date is fixed and published again
    done = finalize_now(engine, D3)
    assert done.count == 1 and done.dates == [D2] and done.numbers == {1: ("1-000003", "1-000003")}
    assert {r["finalized_by"] for r in invoices(engine)} == {"fin@op.example"}
    assert finalize_now(engine, D3).count == 0  # nothing left: a second approval changes nothing
    assert_documents_consistent(engine)


def test_a_rerun_after_a_price_fix_credits_the_finalized_invoice_and_issues_a_corrective_one(engine):
    op = operator(engine)
    backfill(engine, D1, D2)
    old = exact_rows(engine, "invoices", "invoice_id")
    with engine.begin() as conn:
        conn.execute(update(s.contracts).where(s.contracts.c.id == 1).values(price=Decimal("120.00")))
    summary = run_billing_date(engine, D1)
    assert summary.corrections.kept == 2  # customers 3 and 4: unchanged, untouched
    assert summary.corrections.credit_notes == [("1-C000001", "1-000001", Decimal("120.00"))]
    assert summary.corrections.corrective == [("1-000004", "1-000001", Decimal("144.00"))]

    [note] = op.rows(s.credit_notes)
    assert (
        note["credit_note_id"],
        note["invoice_id"],
        note["customer_id"],
        note["location_id"],
        note["billing_date"],
        note["currency"],
        note["subtotal"],
        note["tax"],
        note["total"],
    ) == (
        "CN-INV-20240301-0000001",
        "INV-20240301-0000001",
        1,
        1,
        D1,
        "EUR",
        Decimal("100.00"),
        Decimal("20.00"),
        Decimal("120.00"),
    )
    assert "1 line changed" in note["reason"] and "120.00 -> 144.00" in note["reason"]
    credited, corrective = invoices(engine, customer_id=1)
    assert (credited["status"], corrective["status"]) == ("credited", "finalized")
    assert (
        corrective["invoice_id"],
        corrective["number"],
        corrective["corrects"],
        corrective["finalized_by"],
        corrective["total"],
    ) == ("INV-20240301-0000001-R1", "1-000004", "INV-20240301-0000001", "correction", Decimal("144.00"))
    after = exact_rows(engine, "invoices", "invoice_id")
    for key, row in old.items():  # the credited invoice only changed status; the others not at all
        changed = {c for c in row if row[c] != after[key][c]}
        assert changed == ({"status"} if "INV-20240301-0000001" in key else set()), (key, changed)
    lines = [l for l in op.lines() if l["contract_id"] == 1]
    assert [(l["invoice_id"], l["unit_price"]) for l in lines] == [
        ("INV-20240301-0000001", Decimal("100.00")),
        ("INV-20240301-0000001-R1", Decimal("120.00")),
    ]
    with engine.connect() as conn:
        assert conn.execute(
            select(s.billed_periods.c.invoice_id).where(s.billed_periods.c.contract_id == 1)
        ).scalars().all() == ["INV-20240301-0000001-R1"]
    assert_documents_consistent(engine)


def test_a_rerun_with_unchanged_inputs_changes_nothing_at_all(engine):
    operator(engine)
    backfill(engine, D1, D3)
    before = dump(engine)
    summary = run_billing_date(engine, D2)
    backfill(engine, D1, D3)
    assert summary.corrections.credit_notes == [] and summary.corrections.corrective == []
    assert dump(engine) == before  # no credit note, no number consumed, no invoice touched


def test_a_backdated_suspension_credits_without_corrective_and_the_lift_back_bills_the_period(engine):
    op = operator(engine)
    backfill(engine, D1, D2)
    op.event(1, datetime(2024, 2, 29, 12), action="suspend", reason="payment failed in February")
    summary = run_billing_date(engine, D1)
    assert [n for n, _, _ in summary.corrections.credit_notes] == ["1-C000001"]
    assert summary.corrections.corrective == []
    assert [(r["status"], r["number"]) for r in invoices(engine, customer_id=1)] == [("credited", "1-000001")]
    assert op.rows(s.skipped_contracts, billing_date=D1, contract_id=1)[0]["reason"] == "suspended"
    assert_documents_consistent(engine)

    op.event(1, datetime(2024, 3, 3, 9), action="lift", actor="fin@op.example")
    run_billing_date(engine, D3)  # nothing lost: the period of D1 is owed again and billed after the lift
    [line] = [l for l in op.lines() if l["contract_id"] == 1 and l["invoice_id"].startswith("INV-20240303")]
    assert (line["period_start"], line["billing_date"]) == (D1, D3)
    assert assert_documents_consistent(engine)["billed"] >= {(1, D1, "INV-20240303-0000001")}


def test_a_credited_invoice_without_corrective_gets_a_fresh_id_when_its_date_bills_again(engine):
    op = operator(engine)
    run_billing_date(engine, D1)
    op.event(1, datetime(2024, 2, 29, 12), action="suspend", reason="recorded by mistake")
    run_billing_date(engine, D1)
    with engine.begin() as conn:  # the operator deletes the mistaken event from its database
        conn.execute(text("delete from suspension_events where customer_id = 1"))
    summary = run_billing_date(engine, D1)
    assert summary.corrections.credit_notes == [] and summary.corrections.corrective == []
    rows = invoices(engine, customer_id=1)
    assert [(r["invoice_id"], r["status"], r["number"], r["corrects"]) for r in rows] == [
        ("INV-20240301-0000001", "credited", "1-000001", None),
        ("INV-20240301-0000001-R1", "finalized", "1-000003", None),
    ]  # a new draft, finalized by the run
    assert_documents_consistent(engine)


def test_a_fixed_quarantined_plan_is_billed_by_a_corrective_invoice_of_its_dates(engine):
    op = operator(engine)
    op.plan(9, price="-5.00")
    op.contract(9, 1, 9, start_date=D1)  # customer 1's second contract, on a plan with a negative price
    backfill(engine, D1, D2)
    assert op.rows(s.quarantine, billing_date=D1, source_table="plans")
    with engine.begin() as conn:
        conn.execute(update(s.plans).where(s.plans.c.id == 9).values(price=Decimal("5.00")))
    summary = run_billing_date(engine, D1)
    assert summary.corrections.corrective == [("1-000004", "1-000001", Decimal("126.00"))]
    [corrective] = [r for r in invoices(engine, customer_id=1) if r["status"] == "finalized"]
    assert sorted(l["contract_id"] for l in op.lines() if l["invoice_id"] == corrective["invoice_id"]) == [1, 9]
    assert_documents_consistent(engine)


def test_a_corrective_invoice_is_corrected_again_by_a_second_fix(engine):
    op = operator(engine)
    run_billing_date(engine, D1)
    for price in ("110.00", "90.00"):
        with engine.begin() as conn:
            conn.execute(update(s.contracts).where(s.contracts.c.id == 1).values(price=Decimal(price)))
        run_billing_date(engine, D1)
    rows = invoices(engine, customer_id=1)
    assert [(r["invoice_id"], r["status"], r["corrects"]) for r in rows] == [
        ("INV-20240301-0000001", "credited", None),
        ("INV-20240301-0000001-R1", "credited", "INV-20240301-0000001"),
        ("INV-20240301-0000001-R2", "finalized", "INV-20240301-0000001-R1"),
    ]
    assert [n["number"] for n in sorted(op.rows(s.credit_notes), key=lambda n: n["number"])] == [
        "1-C000001",
        "1-C000002",
    ]
    assert_documents_consistent(engine)
