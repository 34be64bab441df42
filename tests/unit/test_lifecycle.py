"""flexbill.lifecycle: numbers, revision ids, and which finalized invoices a rerun credits."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from flexbill import lifecycle as L

D = date(2026, 10, 15)


def test_numbers_are_location_prefixed_zero_padded_and_grow_past_six_digits():
    assert L.invoice_number(3, 42) == "3-000042"
    assert L.credit_note_number(3, 7) == "3-C000007"
    assert L.invoice_number(12, 1_234_567) == "12-1234567"


def test_numbering_continues_each_location_series_in_frame_order_without_gaps():
    frame = pd.DataFrame({"location_id": [2, 1, 2, 2, 1]})
    numbers, last = L.numbered(frame, {1: 41, 3: 9})
    assert numbers.tolist() == ["2-000001", "1-000042", "2-000002", "2-000003", "1-000043"]
    assert last == {1: 43, 2: 3, 3: 9}  # a location not in the frame keeps its last number


def test_numbering_nothing_changes_nothing():
    numbers, last = L.numbered(pd.DataFrame({"location_id": []}), {1: 5})
    assert numbers.empty and last == {1: 5}


def test_revision_and_credit_note_ids_are_unique_per_customer_and_date():
    base = "INV-20261015-0000042"
    assert [L.revision_id(base, k) for k in range(3)] == [base, f"{base}-R1", f"{base}-R2"]
    assert L.credit_note_id(f"{base}-R1") == f"CN-{base}-R1"


def _invoice(customer, total, invoice_id=None, location=1, currency="EUR"):
    return {
        "invoice_id": invoice_id or f"INV-{customer}",
        "customer_id": customer,
        "location_id": location,
        "currency": currency,
        "subtotal_cents": total,
        "tax_cents": 0,
        "total_cents": total,
    }


def _line(customer, contract, start, amount, invoice_id=None, end="2026-11-15", quantity=1):
    return {
        "invoice_id": invoice_id or f"INV-{customer}",
        "customer_id": customer,
        "contract_id": contract,
        "period_start": pd.Timestamp(start),
        "period_end": pd.Timestamp(end),
        "quantity": quantity,
        "unit_cents": amount,
        "amount_cents": amount,
        "prorated": False,
    }


def _reconcile(old_inv, old_lines, new_inv, new_lines):
    return L.reconcile(
        pd.DataFrame(old_inv),
        pd.DataFrame(old_lines),
        pd.DataFrame(new_inv),
        pd.DataFrame(new_lines, columns=list(_line(0, 0, "2026-01-01", 0))),
        D,
    )


def test_an_equal_result_keeps_the_finalized_invoice():
    old = [_invoice(1, 1000, "1-old")]
    rec = _reconcile(
        old, [_line(1, 10, "2026-10-15", 1000, "1-old")], [_invoice(1, 1000)], [_line(1, 10, "2026-10-15", 1000)]
    )
    assert rec.kept == {1} and rec.credited.empty


@pytest.mark.parametrize(
    "change, words",
    [
        ({"amount_cents": 1200}, "1 line changed"),
        ({"quantity": 2}, "1 line changed"),
        ({"end": "2026-11-01"}, "1 line changed"),
    ],
)
def test_a_changed_line_credits_the_invoice_and_says_what_changed(change, words):
    new_line = _line(
        1,
        10,
        "2026-10-15",
        change.get("amount_cents", 1000),
        end=change.get("end", "2026-11-15"),
        quantity=change.get("quantity", 1),
    )
    total = change.get("amount_cents", 1000)
    rec = _reconcile(
        [_invoice(1, 1000, "1-old")], [_line(1, 10, "2026-10-15", 1000, "1-old")], [_invoice(1, total)], [new_line]
    )
    assert rec.kept == set()
    assert rec.credited["invoice_id"].tolist() == ["1-old"]
    assert words in rec.credited["reason"].iloc[0]
    assert f"total 10.00 -> {total / 100:.2f}" in rec.credited["reason"].iloc[0]


def test_an_added_or_removed_line_credits_and_nothing_left_to_bill_says_so():
    old_inv, old_lines = (
        [_invoice(1, 1000, "1-old"), _invoice(2, 500, "2-old")],
        [_line(1, 10, "2026-10-15", 1000, "1-old"), _line(2, 20, "2026-10-15", 500, "2-old")],
    )
    new_inv = [_invoice(1, 1700)]
    new_lines = [_line(1, 10, "2026-10-15", 1000), _line(1, 11, "2026-10-01", 700)]
    rec = _reconcile(old_inv, old_lines, new_inv, new_lines)
    reasons = dict(zip(rec.credited["customer_id"], rec.credited["reason"]))
    assert set(reasons) == {1, 2} and rec.kept == set()
    assert "1 line added" in reasons[1]
    assert "1 line removed" in reasons[2] and "nothing to bill" in reasons[2]


def test_customers_without_a_finalized_invoice_are_not_reconciled():
    rec = _reconcile(
        [_invoice(1, 1000, "1-old")],
        [_line(1, 10, "2026-10-15", 1000, "1-old")],
        [_invoice(1, 1000), _invoice(5, 99)],
        [_line(1, 10, "2026-10-15", 1000), _line(5, 50, "2026-10-15", 99)],
    )
    assert rec.kept == {1} and rec.credited.empty
