"""Billing runs end to end (contract, "Billing periods", "One run", output tables), SQLite and PostgreSQL.

Every figure is worked out by hand in the comment next to it.  Unless a test says
otherwise: location 1 bills EUR with tax 0.2000, plan 1 is monthly at 100.00.
"""

from datetime import date, datetime
from decimal import Decimal

from flexbill.db import schema as s
from flexbill.manual import record_manual_event
from flexbill.runner import backfill, run_billing_date
from tests.builders import Operator

D = date
M = Decimal


# ---------------------------------------------------------------- helpers
def lines(op, d=None):
    """(contract, period_start, period_end, quantity, unit_price, amount, prorated) of D (or of every date)."""
    return [
        (
            r["contract_id"],
            r["period_start"],
            r["period_end"],
            r["quantity"],
            r["unit_price"],
            r["amount"],
            r["prorated"],
        )
        for r in op.lines(d)
    ]


def line_keys(op):
    """(contract, period_start, billing_date) of every line ever written."""
    return [(r["contract_id"], r["period_start"], r["billing_date"]) for r in op.lines()]


def invoices(op, d):
    rows = sorted(op.rows(s.invoices, billing_date=d), key=lambda r: r["invoice_id"])
    return [
        (r["invoice_id"], r["customer_id"], r["location_id"], r["currency"], r["subtotal"], r["tax"], r["total"])
        for r in rows
    ]


def skips(op, d):
    return sorted(
        (r["contract_id"], r["customer_id"], r["reason"], r["owed_periods"])
        for r in op.rows(s.skipped_contracts, billing_date=d)
    )


def outputs(op, d):
    """Every output row of billing date D, for comparing a rerun with the first run."""

    def norm(table, **where):
        return sorted((tuple(sorted(r.items())) for r in op.rows(table, **where)), key=repr)

    return {
        "invoices": norm(s.invoices, billing_date=d),
        "invoice_lines": sorted((tuple(sorted(r.items())) for r in op.lines(d)), key=repr),
        "skipped_contracts": norm(s.skipped_contracts, billing_date=d),
        "quarantine": norm(s.quarantine, billing_date=d),
        "active_user_report": norm(s.active_user_report, report_date=d),
    }


def reconcile(op, d, owed, invoiced, skipped, quarantined, billed_later):
    """The contract's equation for run D, from the billing_runs row and the output tables.

    owed is the hand-counted number of contracts with owed periods (quarantined contracts included)."""
    run = op.rows(s.billing_runs, billing_date=d)[0]
    assert run["status"] == "published"
    n_invoiced = len({r["contract_id"] for r in op.lines(d)})
    n_skipped = len(op.rows(s.skipped_contracts, billing_date=d))
    n_quarantined = len(op.rows(s.quarantine, billing_date=d, source_table="contracts"))
    assert (n_invoiced, n_skipped, n_quarantined, run["contracts_billed_later"]) == (
        invoiced,
        skipped,
        quarantined,
        billed_later,
    )
    assert (run["contracts_invoiced"], run["contracts_skipped"], run["contracts_quarantined"]) == (
        n_invoiced,
        n_skipped,
        n_quarantined,
    )
    assert owed == n_invoiced + n_skipped + n_quarantined + run["contracts_billed_later"]


def base(op, tax_rate="0.2000"):
    op.location(1, currency="EUR", tax_rate=tax_rate)
    op.plan(1, price="100.00")


# ---------------------------------------------------------------- periods
def test_monthly_anniversary_from_the_31st_clamps_to_month_end_and_keeps_the_anchor(engine):
    op = Operator(engine)
    base(op)
    op.customer(1)
    op.contract(1, 1, 1, start_date=D(2024, 1, 31))

    run_billing_date(engine, D(2024, 1, 31))
    # period 0: [01-31, 02-29): 01-31 + 1 month clamps to 02-29 (2024 is a leap year); a full step, 100.00
    assert lines(op, D(2024, 1, 31)) == [(1, D(2024, 1, 31), D(2024, 2, 29), 1, M("100.00"), M("100.00"), False)]
    run_billing_date(engine, D(2024, 2, 28))
    assert invoices(op, D(2024, 2, 28)) == []  # no period starts on 02-28
    run_billing_date(engine, D(2024, 2, 29))
    # period 1 starts 02-29; period 2 = anchor + 2 months = 03-31 (not 03-29): [02-29, 03-31)
    assert lines(op, D(2024, 2, 29)) == [(1, D(2024, 2, 29), D(2024, 3, 31), 1, M("100.00"), M("100.00"), False)]
    run_billing_date(engine, D(2024, 5, 31))
    # catch-up on 05-31: 03-31, 04-30 (clamped), 05-31 (day 31 again), each a full month at 100.00
    assert lines(op, D(2024, 5, 31)) == [
        (1, D(2024, 3, 31), D(2024, 4, 30), 1, M("100.00"), M("100.00"), False),
        (1, D(2024, 4, 30), D(2024, 5, 31), 1, M("100.00"), M("100.00"), False),
        (1, D(2024, 5, 31), D(2024, 6, 30), 1, M("100.00"), M("100.00"), False),
    ]
    # subtotal 300.00, tax 300.00 x 0.2 = 60.00, total 360.00; id INV-<date>-<customer, 7 digits>
    assert invoices(op, D(2024, 5, 31)) == [("INV-20240531-0000001", 1, 1, "EUR", M("300.00"), M("60.00"), M("360.00"))]


def test_billing_day_first_period_is_prorated_against_the_step_that_ends_with_it(engine):
    op = Operator(engine)
    base(op)
    t = datetime(2023, 1, 1)  # the builders' default instant (2024) would hide these rows from 2023 runs
    for cid in (1, 2, 3, 4):
        op.customer(cid, created_at=t)
    op.contract(1, 1, 1, start_date=D(2023, 2, 20), billing_day=1, created_at=t)  # the contract's own example
    op.contract(2, 2, 1, start_date=D(2023, 3, 10), billing_day=15, created_at=t)  # start day before B
    op.contract(3, 3, 1, start_date=D(2023, 3, 15), billing_day=15, created_at=t)  # start day is B: no short period
    op.contract(4, 4, 1, start_date=D(2023, 1, 31), billing_day=28, created_at=t)  # from the 31st to day 28

    run_billing_date(engine, D(2023, 2, 20))
    # contract 1: [02-20, 03-01) = 9 days of the 28 from 02-01 to 03-01: 100 x 9 / 28 = 32.142857 -> 32.14
    assert lines(op, D(2023, 2, 20)) == [
        (1, D(2023, 2, 20), D(2023, 3, 1), 1, M("100.00"), M("32.14"), True),
        # contract 4: [01-31, 02-28) = 28 days of the step [01-28, 02-28) = 31 days: 100 x 28 / 31 = 90.3226 -> 90.32
        (4, D(2023, 1, 31), D(2023, 2, 28), 1, M("100.00"), M("90.32"), True),
    ]
    assert invoices(op, D(2023, 2, 20)) == [
        # tax 32.14 x 0.2 = 6.428 -> 6.43; total 38.57
        ("INV-20230220-0000001", 1, 1, "EUR", M("32.14"), M("6.43"), M("38.57")),
        # tax 90.32 x 0.2 = 18.064 -> 18.06; total 108.38
        ("INV-20230220-0000004", 4, 1, "EUR", M("90.32"), M("18.06"), M("108.38")),
    ]

    run_billing_date(engine, D(2023, 3, 15))
    assert lines(op, D(2023, 3, 15)) == [
        # contract 1: then every month on day 1, full price
        (1, D(2023, 3, 1), D(2023, 4, 1), 1, M("100.00"), M("100.00"), False),
        # contract 2: [03-10, 03-15) = 5 days of the step [02-15, 03-15) = 28 days: 100 x 5 / 28 = 17.857 -> 17.86
        (2, D(2023, 3, 10), D(2023, 3, 15), 1, M("100.00"), M("17.86"), True),
        (2, D(2023, 3, 15), D(2023, 4, 15), 1, M("100.00"), M("100.00"), False),
        (3, D(2023, 3, 15), D(2023, 4, 15), 1, M("100.00"), M("100.00"), False),
        # contract 4: then on day 28 every month, full price
        (4, D(2023, 2, 28), D(2023, 3, 28), 1, M("100.00"), M("100.00"), False),
    ]
    # customer 2: 117.86, tax 23.572 -> 23.57, total 141.43; customer 3: 100.00 + 20.00
    assert invoices(op, D(2023, 3, 15)) == [
        ("INV-20230315-0000001", 1, 1, "EUR", M("100.00"), M("20.00"), M("120.00")),
        ("INV-20230315-0000002", 2, 1, "EUR", M("117.86"), M("23.57"), M("141.43")),
        ("INV-20230315-0000003", 3, 1, "EUR", M("100.00"), M("20.00"), M("120.00")),
        ("INV-20230315-0000004", 4, 1, "EUR", M("100.00"), M("20.00"), M("120.00")),
    ]


def test_weekly_and_three_monthly_plans(engine):
    op = Operator(engine)
    base(op)
    op.plan(2, price="50.00", months=0, weeks=1)
    op.plan(3, price="300.00", months=3)
    for cid in (1, 2, 3):
        op.customer(cid)
    # weekly from Wednesday 01-03, cancelled on the boundary 02-07: the last period is full
    op.contract(1, 1, 2, start_date=D(2024, 1, 3), cancellation_date=D(2024, 2, 7))
    op.contract(2, 2, 3, start_date=D(2024, 1, 31))  # 3-monthly anniversary from the 31st
    op.contract(3, 3, 3, start_date=D(2024, 1, 20), billing_day=5)  # 3-monthly on day 5

    run_billing_date(engine, D(2024, 1, 31))
    weekly = [(1, D(2024, 1, d), D(2024, 1, d + 7), 1, M("50.00"), M("50.00"), False) for d in (3, 10, 17, 24)]
    assert lines(op, D(2024, 1, 31)) == weekly + [
        (1, D(2024, 1, 31), D(2024, 2, 7), 1, M("50.00"), M("50.00"), False),
        # [01-31, 04-30): 01-31 + 3 months clamps to 04-30; 90 days, the full step
        (2, D(2024, 1, 31), D(2024, 4, 30), 1, M("300.00"), M("300.00"), False),
        # [01-20, 02-05) = 16 days of the step [2023-11-05, 02-05) = 30 + 31 + 31 = 92 days:
        # 300 x 16 / 92 = 52.1739 -> 52.17
        (3, D(2024, 1, 20), D(2024, 2, 5), 1, M("300.00"), M("52.17"), True),
    ]
    # customer 1: 5 x 50.00 = 250.00, tax 50.00, total 300.00
    assert invoices(op, D(2024, 1, 31))[0] == (
        "INV-20240131-0000001",
        1,
        1,
        "EUR",
        M("250.00"),
        M("50.00"),
        M("300.00"),
    )

    run_billing_date(engine, D(2024, 4, 30))
    assert lines(op, D(2024, 4, 30)) == [  # contract 1 is over: nothing starts on or after 02-07
        (2, D(2024, 4, 30), D(2024, 7, 31), 1, M("300.00"), M("300.00"), False),
        (3, D(2024, 2, 5), D(2024, 5, 5), 1, M("300.00"), M("300.00"), False),
    ]
    run_billing_date(engine, D(2024, 7, 31))
    assert lines(op, D(2024, 7, 31)) == [
        # anchor + 6 months = 07-31 (not 04-30 + 3 months = 07-30)
        (2, D(2024, 7, 31), D(2024, 10, 31), 1, M("300.00"), M("300.00"), False),
        (3, D(2024, 5, 5), D(2024, 8, 5), 1, M("300.00"), M("300.00"), False),
    ]


def test_quantity_per_contract_price_and_half_up_tax_on_the_subtotal(engine):
    op = Operator(engine)
    base(op)
    op.location(2, currency="USD", tax_rate="0.0750")
    op.plan(10, price="100.00", location_id=2, currency="USD")
    op.customer(1)
    op.customer(2, location_id=2)
    op.contract(10, 1, 1, start_date=D(2024, 3, 1), quantity=2)  # plan price 100.00 x 2
    op.contract(20, 2, 10, start_date=D(2024, 3, 1), price="5.10")  # contract price overrides the plan's
    op.contract(21, 2, 10, start_date=D(2024, 3, 1), price="1.70", quantity=3)  # 1.70 x 3 = 5.10

    d = D(2024, 3, 1)
    run_billing_date(engine, d)
    assert lines(op, d) == [
        (10, d, D(2024, 4, 1), 2, M("100.00"), M("200.00"), False),
        (20, d, D(2024, 4, 1), 1, M("5.10"), M("5.10"), False),
        (21, d, D(2024, 4, 1), 3, M("1.70"), M("5.10"), False),
    ]
    first = invoices(op, d)
    assert first == [
        # 200.00, tax 40.00, total 240.00
        ("INV-20240301-0000001", 1, 1, "EUR", M("200.00"), M("40.00"), M("240.00")),
        # one invoice for both contracts of customer 2, in its location's currency:
        # subtotal 5.10 + 5.10 = 10.20; tax 10.20 x 0.075 = 0.765 exactly -> half-up 0.77
        # (per-line tax would give 0.38 + 0.38 = 0.76, banker's rounding 0.76); total 10.97
        ("INV-20240301-0000002", 2, 2, "USD", M("10.20"), M("0.77"), M("10.97")),
    ]
    run_billing_date(engine, d)
    assert invoices(op, d) == first  # deterministic ids: a rerun gives the same invoices


def test_cancellation_truncates_the_period_that_holds_it_and_stops_billing(engine):
    op = Operator(engine)
    base(op)
    op.plan(4, price="10.01", months=0, weeks=2)
    for cid in (1, 2, 3):
        op.customer(cid)
    op.contract(1, 1, 1, start_date=D(2024, 1, 15), cancellation_date=D(2024, 3, 1))
    op.contract(2, 2, 4, start_date=D(2024, 1, 3), cancellation_date=D(2024, 1, 10))
    op.contract(3, 3, 1, start_date=D(2024, 1, 15), cancellation_date=D(2024, 2, 15))  # on a boundary

    run_billing_date(engine, D(2024, 1, 15))
    assert lines(op, D(2024, 1, 15)) == [
        (1, D(2024, 1, 15), D(2024, 2, 15), 1, M("100.00"), M("100.00"), False),
        # [01-03, 01-10) = 7 of 14 days: 10.01 x 7 / 14 = 5.005 -> half-up 5.01
        (2, D(2024, 1, 3), D(2024, 1, 10), 1, M("10.01"), M("5.01"), True),
        (3, D(2024, 1, 15), D(2024, 2, 15), 1, M("100.00"), M("100.00"), False),
    ]
    # customer 2: 5.01, tax 1.002 -> 1.00, total 6.01
    assert invoices(op, D(2024, 1, 15))[1] == ("INV-20240115-0000002", 2, 1, "EUR", M("5.01"), M("1.00"), M("6.01"))

    run_billing_date(engine, D(2024, 3, 31))
    # contract 1: [02-15, 03-01) = 15 days of the step [02-15, 03-15) = 29 days: 100 x 15 / 29 = 51.724 -> 51.72;
    # no period at 03-15 (after the cancellation); contracts 2 and 3 owe nothing more
    assert lines(op, D(2024, 3, 31)) == [(1, D(2024, 2, 15), D(2024, 3, 1), 1, M("100.00"), M("51.72"), True)]
    # tax 51.72 x 0.2 = 10.344 -> 10.34, total 62.06
    assert invoices(op, D(2024, 3, 31)) == [("INV-20240331-0000001", 1, 1, "EUR", M("51.72"), M("10.34"), M("62.06"))]


def test_next_invoice_date_periods_before_it_are_never_invoiced(engine):
    op = Operator(engine)
    base(op)
    for cid in (1, 2, 3):
        op.customer(cid)
    op.contract(1, 1, 1, start_date=D(2024, 1, 10), next_invoice_date=D(2024, 3, 10))  # on a boundary
    op.contract(2, 2, 1, start_date=D(2024, 1, 10), next_invoice_date=D(2024, 2, 20))  # mid-period
    op.contract(3, 3, 1, start_date=D(2024, 1, 20), billing_day=1, next_invoice_date=D(2024, 2, 1))

    run_billing_date(engine, D(2024, 2, 25))
    # contracts 1, 2: 01-10 and 02-10 start before their next_invoice_date -> nothing;
    # contract 3: the short period [01-20, 02-01) starts before 02-01 -> never; [02-01, 03-01) is owed
    assert lines(op, D(2024, 2, 25)) == [(3, D(2024, 2, 1), D(2024, 3, 1), 1, M("100.00"), M("100.00"), False)]
    run_billing_date(engine, D(2024, 3, 10))
    assert lines(op, D(2024, 3, 10)) == [
        (1, D(2024, 3, 10), D(2024, 4, 10), 1, M("100.00"), M("100.00"), False),
        (2, D(2024, 3, 10), D(2024, 4, 10), 1, M("100.00"), M("100.00"), False),
        (3, D(2024, 3, 1), D(2024, 4, 1), 1, M("100.00"), M("100.00"), False),
    ]
    assert [k[:2] for k in line_keys(op)] == [
        (1, D(2024, 3, 10)),
        (2, D(2024, 3, 10)),
        (3, D(2024, 2, 1)),
        (3, D(2024, 3, 1)),
    ]


# ---------------------------------------------------------------- suspension, archiving
def test_lift_back_bills_every_missed_period_exactly_once(engine):
    op = Operator(engine)
    base(op)
    op.customer(1)
    op.contract(1, 1, 1, start_date=D(2024, 1, 15))
    op.contract(3, 1, 1, start_date=D(2024, 2, 1), price="30.00")
    op.contract(4, 1, 1, start_date=D(2024, 6, 1))  # owes nothing before June: never listed as skipped

    run_billing_date(engine, D(2024, 1, 15))
    assert lines(op, D(2024, 1, 15)) == [(1, D(2024, 1, 15), D(2024, 2, 15), 1, M("100.00"), M("100.00"), False)]
    reconcile(op, D(2024, 1, 15), owed=1, invoiced=1, skipped=0, quarantined=0, billed_later=0)

    record_manual_event(engine, 1, "suspend", "admin@x.io", "unpaid", datetime(2024, 1, 20, 10, 0), backdate=True)
    run_billing_date(engine, D(2024, 2, 15))
    # owed: contract 1 -> 02-15; contract 3 -> 02-01
    assert skips(op, D(2024, 2, 15)) == [(1, 1, "suspended", 1), (3, 1, "suspended", 1)]
    assert invoices(op, D(2024, 2, 15)) == []
    reconcile(op, D(2024, 2, 15), owed=2, invoiced=0, skipped=2, quarantined=0, billed_later=0)
    run_billing_date(engine, D(2024, 3, 15))
    # owed: contract 1 -> 02-15, 03-15; contract 3 -> 02-01, 03-01
    assert skips(op, D(2024, 3, 15)) == [(1, 1, "suspended", 2), (3, 1, "suspended", 2)]
    assert invoices(op, D(2024, 3, 15)) == []
    reconcile(op, D(2024, 3, 15), owed=2, invoiced=0, skipped=2, quarantined=0, billed_later=0)

    record_manual_event(engine, 1, "lift", "admin@x.io", "paid", datetime(2024, 3, 20, 9, 0), backdate=True)
    run_billing_date(engine, D(2024, 4, 15))
    assert lines(op, D(2024, 4, 15)) == [
        (1, D(2024, 2, 15), D(2024, 3, 15), 1, M("100.00"), M("100.00"), False),
        (1, D(2024, 3, 15), D(2024, 4, 15), 1, M("100.00"), M("100.00"), False),
        (1, D(2024, 4, 15), D(2024, 5, 15), 1, M("100.00"), M("100.00"), False),
        (3, D(2024, 2, 1), D(2024, 3, 1), 1, M("30.00"), M("30.00"), False),
        (3, D(2024, 3, 1), D(2024, 4, 1), 1, M("30.00"), M("30.00"), False),
        (3, D(2024, 4, 1), D(2024, 5, 1), 1, M("30.00"), M("30.00"), False),
    ]
    # 3 x 100.00 + 3 x 30.00 = 390.00, tax 78.00, total 468.00
    assert invoices(op, D(2024, 4, 15)) == [("INV-20240415-0000001", 1, 1, "EUR", M("390.00"), M("78.00"), M("468.00"))]
    assert skips(op, D(2024, 4, 15)) == []
    reconcile(op, D(2024, 4, 15), owed=2, invoiced=2, skipped=0, quarantined=0, billed_later=0)

    run_billing_date(engine, D(2024, 5, 15))
    # only the new periods: 100.00 + 30.00 = 130.00, tax 26.00, total 156.00
    assert lines(op, D(2024, 5, 15)) == [
        (1, D(2024, 5, 15), D(2024, 6, 15), 1, M("100.00"), M("100.00"), False),
        (3, D(2024, 5, 1), D(2024, 6, 1), 1, M("30.00"), M("30.00"), False),
    ]
    assert invoices(op, D(2024, 5, 15)) == [("INV-20240515-0000001", 1, 1, "EUR", M("130.00"), M("26.00"), M("156.00"))]
    reconcile(op, D(2024, 5, 15), owed=2, invoiced=2, skipped=0, quarantined=0, billed_later=0)
    # the whole history: every period of both contracts exactly once
    assert line_keys(op) == [
        (1, D(2024, 1, 15), D(2024, 1, 15)),
        (1, D(2024, 2, 15), D(2024, 4, 15)),
        (1, D(2024, 3, 15), D(2024, 4, 15)),
        (1, D(2024, 4, 15), D(2024, 4, 15)),
        (1, D(2024, 5, 15), D(2024, 5, 15)),
        (3, D(2024, 2, 1), D(2024, 4, 15)),
        (3, D(2024, 3, 1), D(2024, 4, 15)),
        (3, D(2024, 4, 1), D(2024, 4, 15)),
        (3, D(2024, 5, 1), D(2024, 5, 15)),
    ]


def test_suspension_state_is_read_strictly_before_the_cutoff(engine):
    op = Operator(engine)
    base(op)
    op.customer(1)
    op.contract(1, 1, 1, start_date=D(2024, 2, 1))
    op.event(1, datetime(2024, 1, 1), action="suspend")
    op.event(1, datetime(2024, 2, 2), action="lift")  # at the cutoff of 02-01: does not exist for that run

    run_billing_date(engine, D(2024, 2, 1))
    assert skips(op, D(2024, 2, 1)) == [(1, 1, "suspended", 1)]
    assert invoices(op, D(2024, 2, 1)) == []
    run_billing_date(engine, D(2024, 2, 2))  # the lift is now before the cutoff (02-03 00:00)
    assert lines(op, D(2024, 2, 2)) == [(1, D(2024, 2, 1), D(2024, 3, 1), 1, M("100.00"), M("100.00"), False)]
    assert skips(op, D(2024, 2, 2)) == []


def test_archived_customer_is_never_invoiced_and_archived_wins_over_suspended(engine):
    op = Operator(engine)
    base(op)
    op.customer(1, archived_at=datetime(2024, 1, 10))
    op.contract(1, 1, 1, start_date=D(2024, 1, 1))
    op.customer(2, archived_at=datetime(2024, 1, 20))
    op.event(2, datetime(2024, 1, 5), action="suspend")  # suspended and archived
    op.contract(2, 2, 1, start_date=D(2024, 1, 15))
    op.customer(3, archived_at=datetime(2024, 2, 2))  # archived at the cutoff of 02-01: not yet for that run
    op.contract(3, 3, 1, start_date=D(2024, 2, 1))

    run_billing_date(engine, D(2024, 2, 1))
    # contract 1 owes 01-01 and 02-01; contract 2 owes 01-15
    assert skips(op, D(2024, 2, 1)) == [(1, 1, "archived", 2), (2, 2, "archived", 1)]
    assert lines(op, D(2024, 2, 1)) == [(3, D(2024, 2, 1), D(2024, 3, 1), 1, M("100.00"), M("100.00"), False)]
    assert [i[1] for i in invoices(op, D(2024, 2, 1))] == [3]
    reconcile(op, D(2024, 2, 1), owed=3, invoiced=1, skipped=2, quarantined=0, billed_later=0)

    run_billing_date(engine, D(2024, 3, 1))
    # contract 1: 01-01, 02-01, 03-01; contract 2: 01-15, 02-15; contract 3: 03-01 (archived since 02-02)
    assert skips(op, D(2024, 3, 1)) == [(1, 1, "archived", 3), (2, 2, "archived", 2), (3, 3, "archived", 1)]
    assert invoices(op, D(2024, 3, 1)) == []
    reconcile(op, D(2024, 3, 1), owed=3, invoiced=0, skipped=3, quarantined=0, billed_later=0)


# ---------------------------------------------------------------- as-of semantics, reruns
def test_late_recorded_contract_is_invisible_before_its_created_at_and_back_billed_after(engine):
    op = Operator(engine)
    base(op)
    op.customer(1)
    op.contract(1, 1, 1, start_date=D(2024, 1, 1))
    d1, d2 = D(2024, 2, 1), D(2024, 3, 1)

    run_billing_date(engine, d1)
    assert lines(op, d1) == [
        (1, D(2024, 1, 1), D(2024, 2, 1), 1, M("100.00"), M("100.00"), False),
        (1, D(2024, 2, 1), D(2024, 3, 1), 1, M("100.00"), M("100.00"), False),
    ]
    reconcile(op, d1, owed=1, invoiced=1, skipped=0, quarantined=0, billed_later=0)
    first_d1 = outputs(op, d1)

    # recorded after d1 ran: created 02-10 but started 01-15
    op.contract(2, 1, 1, start_date=D(2024, 1, 15), price="50.00", created_at=datetime(2024, 2, 10, 12, 0))
    # created exactly at the cutoff of d2 (03-02 00:00): invisible to d2
    op.contract(3, 1, 1, start_date=D(2024, 2, 15), price="20.00", created_at=datetime(2024, 3, 2))

    run_billing_date(engine, d2)
    assert lines(op, d2) == [
        (1, D(2024, 3, 1), D(2024, 4, 1), 1, M("100.00"), M("100.00"), False),
        (2, D(2024, 1, 15), D(2024, 2, 15), 1, M("50.00"), M("50.00"), False),  # back-billed from its start
        (2, D(2024, 2, 15), D(2024, 3, 15), 1, M("50.00"), M("50.00"), False),
    ]
    # 100.00 + 2 x 50.00 = 200.00, tax 40.00, total 240.00
    assert invoices(op, d2) == [("INV-20240301-0000001", 1, 1, "EUR", M("200.00"), M("40.00"), M("240.00"))]
    reconcile(op, d2, owed=2, invoiced=2, skipped=0, quarantined=0, billed_later=0)
    first_d2 = outputs(op, d2)

    backfill(engine, d1, d1)  # a backfill of d1 decides as d1's run did: contracts 2 and 3 do not exist for it
    assert outputs(op, d1) == first_d1
    reconcile(op, d1, owed=1, invoiced=1, skipped=0, quarantined=0, billed_later=0)

    run_billing_date(engine, D(2024, 3, 2))  # contract 3 now exists: [02-15, 03-15) at 20.00
    assert lines(op, D(2024, 3, 2)) == [(3, D(2024, 2, 15), D(2024, 3, 15), 1, M("20.00"), M("20.00"), False)]
    reconcile(op, D(2024, 3, 2), owed=1, invoiced=1, skipped=0, quarantined=0, billed_later=0)
    run_billing_date(engine, d2)  # d2 again, after a later date: same rows, contract 3 still invisible
    assert outputs(op, d2) == first_d2
    reconcile(op, d2, owed=2, invoiced=2, skipped=0, quarantined=0, billed_later=0)
    assert [k[:2] for k in line_keys(op)] == [
        (1, D(2024, 1, 1)),
        (1, D(2024, 2, 1)),
        (1, D(2024, 3, 1)),
        (2, D(2024, 1, 15)),
        (2, D(2024, 2, 15)),
        (3, D(2024, 2, 15)),
    ]


def test_rerun_after_later_dates_reproduces_old_decisions_and_never_bills_twice(engine):
    op = Operator(engine)
    base(op)
    for cid in (1, 2, 3, 4):
        op.customer(cid)
    op.contract(1, 1, 1, start_date=D(2024, 1, 1))
    op.contract(2, 2, 1, start_date=D(2024, 1, 1))
    op.event(2, datetime(2024, 1, 15, 10, 0), action="suspend")
    op.event(2, datetime(2024, 2, 10), action="lift")
    op.contract(3, 3, 1, start_date=D(2024, 1, 10), quantity=-1)  # quarantined; it would owe periods
    op.contract(4, 4, 1, start_date=D(2024, 1, 20))
    d1, d2 = D(2024, 2, 1), D(2024, 3, 1)

    run_billing_date(engine, d1)
    # contract 1: 01-01, 02-01; contract 2: suspended (01-15 < cutoff, the lift is later) -> owes 01-01, 02-01;
    # contract 4: 01-20
    assert [l[:2] for l in lines(op, d1)] == [(1, D(2024, 1, 1)), (1, D(2024, 2, 1)), (4, D(2024, 1, 20))]
    assert skips(op, d1) == [(2, 2, "suspended", 2)]
    reconcile(op, d1, owed=4, invoiced=2, skipped=1, quarantined=1, billed_later=0)
    first_d1 = outputs(op, d1)

    run_billing_date(engine, d2)
    # contract 1: 03-01; contract 2 (lifted 02-10): 01-01, 02-01, 03-01 back-billed; contract 4: 02-20
    assert [l[:2] for l in lines(op, d2)] == [
        (1, D(2024, 3, 1)),
        (2, D(2024, 1, 1)),
        (2, D(2024, 2, 1)),
        (2, D(2024, 3, 1)),
        (4, D(2024, 2, 20)),
    ]
    # customer 2: 300.00, tax 60.00, total 360.00
    assert invoices(op, d2)[1] == ("INV-20240301-0000002", 2, 1, "EUR", M("300.00"), M("60.00"), M("360.00"))
    reconcile(op, d2, owed=4, invoiced=3, skipped=0, quarantined=1, billed_later=0)
    first_d2 = outputs(op, d2)

    run_billing_date(engine, d1)  # d1 again: same lines for 1 and 4, the same skip of 2 (its periods now on d2)
    assert outputs(op, d1) == first_d1
    reconcile(op, d1, owed=4, invoiced=2, skipped=1, quarantined=1, billed_later=0)
    run_billing_date(engine, d2)
    assert outputs(op, d2) == first_d2
    reconcile(op, d2, owed=4, invoiced=3, skipped=0, quarantined=1, billed_later=0)

    # 01-15 runs for the first time after d1 and d2: contract 1's 01-01 has a line on d1 (billed later),
    # contract 2 is suspended (owes 01-01), contract 3 is quarantined, contract 4 has not started
    run_billing_date(engine, D(2024, 1, 15))
    assert invoices(op, D(2024, 1, 15)) == []
    assert skips(op, D(2024, 1, 15)) == [(2, 2, "suspended", 1)]
    reconcile(op, D(2024, 1, 15), owed=3, invoiced=0, skipped=1, quarantined=1, billed_later=1)

    # no period was ever invoiced twice
    keys = [k[:2] for k in line_keys(op)]
    assert keys == [
        (1, D(2024, 1, 1)),
        (1, D(2024, 2, 1)),
        (1, D(2024, 3, 1)),
        (2, D(2024, 1, 1)),
        (2, D(2024, 2, 1)),
        (2, D(2024, 3, 1)),
        (4, D(2024, 1, 20)),
        (4, D(2024, 2, 20)),
    ]


# ---------------------------------------------------------------- active-user report
def test_active_user_report_counts_per_location_with_zeros_and_without_archived(engine):
    op = Operator(engine)
    base(op)
    op.location(2)
    op.location(3)  # no customers: a row of zeros
    op.plan(2, location_id=2)
    d = D(2024, 2, 1)
    cutoff = datetime(2024, 2, 2)
    susp = datetime(2024, 1, 5)
    jan = D(2024, 1, 1)

    def member(cid, location_id=1, plan_id=1, start_date=jan, cancellation_date=None, contract_created=None, **kw):
        op.customer(cid, location_id=location_id, **kw)
        op.contract(
            cid,
            cid,
            plan_id,
            start_date=start_date,
            cancellation_date=cancellation_date,
            **({"created_at": contract_created} if contract_created else {}),
        )

    member(1)  # active member
    member(2)
    op.event(2, susp)  # suspended member, portal access
    member(3, portal_access=False)
    op.event(3, susp)  # suspended member without portal access
    op.customer(4)  # no contract: contact
    member(5, cancellation_date=d)  # contract cancelled on D: contact
    member(6, cancellation_date=D(2024, 2, 2))  # cancelled after D: active member
    member(7, start_date=D(2024, 6, 1))  # not started yet: still an active member
    member(8, archived_at=datetime(2024, 1, 20))  # archived before the cutoff: counted nowhere
    member(9, archived_at=cutoff)  # archived at the cutoff: not yet archived for D, active member
    op.customer(10)
    op.event(10, susp)  # suspended, no contract: contact
    member(11, created_at=cutoff, contract_created=cutoff)  # does not exist yet: nowhere
    member(12, contract_created=cutoff)  # its contract does not exist yet: contact
    op.customer(13, archived_at=datetime(2024, 1, 20))  # archived contact: nowhere
    member(14)
    op.event(14, susp)
    op.event(14, datetime(2024, 1, 25), action="lift")  # lifted before the cutoff: active member
    member(20, location_id=2, plan_id=2)  # location 2: active member
    op.customer(21, location_id=2)  # location 2: contact

    run_billing_date(engine, d)
    report = sorted(
        (
            r["location_id"],
            r["members"],
            r["active_users"],
            r["suspended_members"],
            r["suspended_with_portal_access"],
            r["contacts"],
        )
        for r in op.rows(s.active_user_report, report_date=d)
    )
    assert report == [
        # location 1: members 1, 2, 3, 6, 7, 9, 14 = 7; active 1, 6, 7, 9, 14 = 5; suspended 2, 3 = 2;
        # suspended with portal access: 2 = 1; contacts 4, 5, 10, 12 = 4
        (1, 7, 5, 2, 1, 4),
        (2, 1, 1, 0, 0, 1),
        (3, 0, 0, 0, 0, 0),
    ]
