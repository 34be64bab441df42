"""Worked examples of the contract's billing-period rules (CONTRACT.md, "Billing periods").

Every figure below was worked out by hand from the calendar; the comments show
the arithmetic.  Intervals are half-open [start, end).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from flexbill.periods import Period, Terms, next_period_start, owed_periods, periods

D = date


def P(start: date, end: date, full_days: int) -> Period:
    return Period(start, end, full_days)


def starts(terms: Terms, through: date) -> list[date]:
    return [p.start for p in periods(terms, through)]


# --------------------------------------------------------------------------- anniversary billing


def test_jan_31_anniversary_clamps_to_february_end_then_returns_to_31():
    # 2023 is not a leap year: 31 Jan + 1 month = 28 Feb; + 2 months = 31 Mar (from the anchor,
    # not 28 Feb + 1 month = 28 Mar); + 3 months = 30 Apr.
    terms = Terms(start_date=D(2023, 1, 31))
    assert list(periods(terms, D(2023, 4, 29))) == [
        P(D(2023, 1, 31), D(2023, 2, 28), 28),  # 1 day of Jan + 27 of Feb
        P(D(2023, 2, 28), D(2023, 3, 31), 31),  # 1 day of Feb + 30 of Mar
        P(D(2023, 3, 31), D(2023, 4, 30), 30),  # 1 day of Mar + 29 of Apr
    ]


def test_jan_31_anniversary_in_leap_year_bills_feb_29_then_mar_31():
    terms = Terms(start_date=D(2024, 1, 31))
    got = list(periods(terms, D(2024, 3, 31)))
    assert [p.start for p in got] == [D(2024, 1, 31), D(2024, 2, 29), D(2024, 3, 31)]
    assert [p.full_days for p in got] == [29, 31, 30]
    assert D(2024, 3, 29) not in [p.start for p in got]  # not stepped from 29 Feb


def test_month_end_anniversary_periods_are_full_and_bill_the_whole_price():
    # The step that ends on the clamped 28 Feb is full (28 of 28 days), as is the one that
    # starts there (31 of 31): clamping never makes a period prorated.
    terms = Terms(start_date=D(2023, 1, 31))
    feb = list(periods(terms, D(2023, 2, 28)))[1]
    assert (feb.days, feb.full_days, feb.prorated) == (31, 31, False)
    jan = list(periods(terms, D(2023, 2, 28)))[0]
    assert (jan.days, jan.full_days, jan.prorated) == (28, 28, False)
    assert jan.amount(Decimal("50.00"), 1) == Decimal("50.00")


def test_feb_29_start_bills_on_the_29th_and_on_feb_28_in_common_years():
    terms = Terms(start_date=D(2024, 2, 29))
    got = starts(terms, D(2025, 3, 29))
    assert got == [
        D(2024, 2, 29),
        D(2024, 3, 29),
        D(2024, 4, 29),
        D(2024, 5, 29),
        D(2024, 6, 29),
        D(2024, 7, 29),
        D(2024, 8, 29),
        D(2024, 9, 29),
        D(2024, 10, 29),
        D(2024, 11, 29),
        D(2024, 12, 29),
        D(2025, 1, 29),
        D(2025, 2, 28),
        D(2025, 3, 29),
    ]


def test_feb_29_start_on_yearly_plan_bills_feb_28_until_the_next_leap_year():
    terms = Terms(start_date=D(2024, 2, 29), every_months=12)
    got = list(periods(terms, D(2028, 2, 29)))
    assert [p.start for p in got] == [D(2024, 2, 29), D(2025, 2, 28), D(2026, 2, 28), D(2027, 2, 28), D(2028, 2, 29)]
    # 29 Feb 2024 -> 28 Feb 2025: 1 (29 Feb) + 306 (Mar..Dec) + 31 + 27 = 365 days;
    # 28 Feb 2027 -> 29 Feb 2028: 365 days to 28 Feb 2028, + 1 = 366; 29 Feb 2028 -> 28 Feb 2029: 365.
    assert [p.full_days for p in got] == [365, 365, 365, 366, 365]
    assert not any(p.prorated for p in got)


# --------------------------------------------------------------------------- billing day


def test_billing_day_1_start_20_feb_2023_is_9_days_of_28():
    terms = Terms(start_date=D(2023, 2, 20), billing_day=1)
    got = list(periods(terms, D(2023, 4, 1)))
    assert got == [
        P(D(2023, 2, 20), D(2023, 3, 1), 28),  # 20..28 Feb = 9 days of the 28 from 1 Feb to 1 Mar
        P(D(2023, 3, 1), D(2023, 4, 1), 31),
        P(D(2023, 4, 1), D(2023, 5, 1), 30),
    ]
    first = got[0]
    assert (first.days, first.prorated) == (9, True)
    assert first.amount(Decimal("100.00"), 1) == Decimal("32.14")  # 100 x 9/28 = 32.142857...


def test_billing_day_1_start_20_feb_2024_is_10_days_of_29():
    terms = Terms(start_date=D(2024, 2, 20), billing_day=1)
    first, second = list(periods(terms, D(2024, 3, 1)))
    assert first == P(D(2024, 2, 20), D(2024, 3, 1), 29)  # 20..29 Feb = 10 days
    assert (first.days, first.prorated) == (10, True)
    assert first.amount(Decimal("100.00"), 1) == Decimal("34.48")  # 100 x 10/29 = 34.4827...
    assert first.amount(Decimal("29.00"), 1) == Decimal("10.00")  # 29 x 10/29, exact
    assert second == P(D(2024, 3, 1), D(2024, 4, 1), 31)
    assert not second.prorated


def test_billing_day_28_exists_in_every_month_so_february_bills_on_the_28th():
    terms = Terms(start_date=D(2023, 1, 30), billing_day=28)
    assert list(periods(terms, D(2023, 3, 28))) == [
        P(D(2023, 1, 30), D(2023, 2, 28), 31),  # short: 29 days of the 31 from 28 Jan to 28 Feb
        P(D(2023, 2, 28), D(2023, 3, 28), 28),
        P(D(2023, 3, 28), D(2023, 4, 28), 31),
    ]


def test_billing_day_after_start_day_cuts_the_first_period_in_the_same_month():
    # Start 10 Jan, B = 28: short period 10..27 Jan = 18 days of the 31 from 28 Dec to 28 Jan.
    terms = Terms(start_date=D(2023, 1, 10), billing_day=28)
    first, second = list(periods(terms, D(2023, 1, 28)))
    assert first == P(D(2023, 1, 10), D(2023, 1, 28), 31)
    assert first.days == 18
    assert first.amount(Decimal("100.00"), 1) == Decimal("58.06")  # 100 x 18/31 = 58.0645...
    assert second == P(D(2023, 1, 28), D(2023, 2, 28), 31)


def test_start_on_the_billing_day_has_no_short_period():
    terms = Terms(start_date=D(2023, 3, 15), billing_day=15)
    got = list(periods(terms, D(2023, 4, 15)))
    assert got == [P(D(2023, 3, 15), D(2023, 4, 15), 31), P(D(2023, 4, 15), D(2023, 5, 15), 30)]
    assert not any(p.prorated for p in got)


def test_billing_day_short_period_is_owed_from_start_date_not_from_the_billing_day():
    # Billing in advance: the short period's invoice is owed on start_date itself.
    terms = Terms(start_date=D(2023, 2, 20), billing_day=1)
    assert list(periods(terms, D(2023, 2, 20))) == [P(D(2023, 2, 20), D(2023, 3, 1), 28)]
    assert list(periods(terms, D(2023, 2, 19))) == []


# --------------------------------------------------------------------------- weekly plans


def test_weekly_plan_bills_every_7_days_from_start():
    terms = Terms(start_date=D(2024, 1, 3), every_months=0, every_weeks=1)
    assert list(periods(terms, D(2024, 1, 24))) == [
        P(D(2024, 1, 3), D(2024, 1, 10), 7),
        P(D(2024, 1, 10), D(2024, 1, 17), 7),
        P(D(2024, 1, 17), D(2024, 1, 24), 7),
        P(D(2024, 1, 24), D(2024, 1, 31), 7),
    ]


def test_two_weekly_plan_crosses_feb_29_in_14_day_steps():
    # 21 Feb 2024 + 14 days = 6 Mar (Feb has 29 days: 21 + 14 - 29 = 6); + 14 = 20 Mar.
    terms = Terms(start_date=D(2024, 2, 21), every_months=0, every_weeks=2)
    assert list(periods(terms, D(2024, 3, 20))) == [
        P(D(2024, 2, 21), D(2024, 3, 6), 14),
        P(D(2024, 3, 6), D(2024, 3, 20), 14),
        P(D(2024, 3, 20), D(2024, 4, 3), 14),
    ]


def test_weekly_period_truncated_by_cancellation_is_prorated_against_7_days():
    terms = Terms(start_date=D(2024, 1, 3), every_months=0, every_weeks=1, cancellation_date=D(2024, 1, 13))
    got = list(periods(terms, D(2024, 2, 1)))
    assert got == [P(D(2024, 1, 3), D(2024, 1, 10), 7), P(D(2024, 1, 10), D(2024, 1, 13), 7)]
    assert got[1].amount(Decimal("70.00"), 1) == Decimal("30.00")  # 70 x 3/7


# --------------------------------------------------------------------------- multi-month plans


def test_quarterly_anniversary_from_nov_30_clamps_to_feb_29_then_returns_to_30():
    terms = Terms(start_date=D(2023, 11, 30), every_months=3)
    assert list(periods(terms, D(2024, 5, 30))) == [
        P(D(2023, 11, 30), D(2024, 2, 29), 91),  # 1 (Nov) + 31 + 31 + 28 (1..28 Feb)
        P(D(2024, 2, 29), D(2024, 5, 30), 91),  # 1 (29 Feb) + 31 + 30 + 29 (1..29 May)
        P(D(2024, 5, 30), D(2024, 8, 30), 92),  # 2 (30, 31 May) + 30 + 31 + 29
    ]


def test_quarterly_plan_with_billing_day_prorates_first_period_against_the_whole_quarter():
    # Start 20 Feb 2023, B = 1, every 3 months: first boundary 1 Mar 2023; the full quarter
    # that ends there is 1 Dec 2022 -> 1 Mar 2023 = 31 + 31 + 28 = 90 days.
    terms = Terms(start_date=D(2023, 2, 20), every_months=3, billing_day=1)
    got = list(periods(terms, D(2023, 6, 1)))
    assert got == [
        P(D(2023, 2, 20), D(2023, 3, 1), 90),
        P(D(2023, 3, 1), D(2023, 6, 1), 92),  # 31 + 30 + 31
        P(D(2023, 6, 1), D(2023, 9, 1), 92),  # 30 + 31 + 31
    ]
    assert got[0].amount(Decimal("300.00"), 1) == Decimal("30.00")  # 300 x 9/90


def test_yearly_plan_spans_366_days_when_it_holds_a_feb_29():
    terms = Terms(start_date=D(2023, 3, 1), every_months=12)
    assert list(periods(terms, D(2024, 3, 1))) == [
        P(D(2023, 3, 1), D(2024, 3, 1), 366),
        P(D(2024, 3, 1), D(2025, 3, 1), 365),
    ]


def test_yearly_plan_cancelled_mid_year_is_prorated_by_days_of_the_year():
    # 1 Mar 2024 -> 1 Sep 2024 = 31+30+31+30+31+31 = 184 days of the 365 to 1 Mar 2025.
    terms = Terms(start_date=D(2023, 3, 1), every_months=12, cancellation_date=D(2024, 9, 1))
    last = list(periods(terms, D(2030, 1, 1)))[-1]
    assert last == P(D(2024, 3, 1), D(2024, 9, 1), 365)
    assert last.days == 184
    assert last.amount(Decimal("365.00"), 1) == Decimal("184.00")


# --------------------------------------------------------------------------- cancellation


def test_cancellation_inside_a_period_truncates_it_and_prorates_against_the_full_step():
    # Start 15 Jan 2024, cancelled 10 Mar: the Feb period runs 15 Feb..9 Mar = 24 days of the
    # 29 from 15 Feb to 15 Mar (leap year).
    terms = Terms(start_date=D(2024, 1, 15), cancellation_date=D(2024, 3, 10))
    got = list(periods(terms, D(2024, 12, 31)))
    assert got == [P(D(2024, 1, 15), D(2024, 2, 15), 31), P(D(2024, 2, 15), D(2024, 3, 10), 29)]
    last = got[-1]
    assert (last.days, last.prorated) == (24, True)
    assert last.amount(Decimal("100.00"), 1) == Decimal("82.76")  # 100 x 24/29 = 82.7586...
    assert last.amount(Decimal("29.00"), 2) == Decimal("48.00")  # 58 x 24/29


def test_cancellation_equal_to_start_gives_no_periods():
    terms = Terms(start_date=D(2024, 1, 15), cancellation_date=D(2024, 1, 15))
    assert list(periods(terms, D(2030, 1, 1))) == []


def test_cancellation_equal_to_start_of_a_billing_day_contract_gives_no_short_period():
    terms = Terms(start_date=D(2023, 2, 20), billing_day=1, cancellation_date=D(2023, 2, 20))
    assert list(periods(terms, D(2030, 1, 1))) == []


def test_cancellation_on_a_boundary_neither_prorates_nor_adds_a_period():
    terms = Terms(start_date=D(2024, 1, 15), cancellation_date=D(2024, 3, 15))
    got = list(periods(terms, D(2024, 3, 31)))
    assert got == [P(D(2024, 1, 15), D(2024, 2, 15), 31), P(D(2024, 2, 15), D(2024, 3, 15), 29)]
    assert not any(p.prorated for p in got)
    assert got[-1].amount(Decimal("100.00"), 1) == Decimal("100.00")


def test_cancellation_inside_the_short_first_period_truncates_it_against_the_same_full_step():
    # Start 20 Feb 2023, B = 1, cancelled 25 Feb: 20..24 Feb = 5 days of the 28 of February.
    terms = Terms(start_date=D(2023, 2, 20), billing_day=1, cancellation_date=D(2023, 2, 25))
    got = list(periods(terms, D(2023, 12, 31)))
    assert got == [P(D(2023, 2, 20), D(2023, 2, 25), 28)]
    assert got[0].amount(Decimal("28.00"), 1) == Decimal("5.00")


def test_cancellation_on_the_billing_day_ends_the_short_period_there():
    terms = Terms(start_date=D(2023, 2, 20), billing_day=1, cancellation_date=D(2023, 3, 1))
    assert list(periods(terms, D(2023, 12, 31))) == [P(D(2023, 2, 20), D(2023, 3, 1), 28)]


def test_cancellation_the_day_after_a_boundary_bills_a_one_day_period():
    terms = Terms(start_date=D(2024, 1, 15), cancellation_date=D(2024, 2, 16))
    last = list(periods(terms, D(2024, 12, 31)))[-1]
    assert last == P(D(2024, 2, 15), D(2024, 2, 16), 29)
    assert last.amount(Decimal("29.00"), 1) == Decimal("1.00")


# --------------------------------------------------------------------------- the `through` bound


def test_periods_include_one_starting_exactly_on_through_and_none_after():
    terms = Terms(start_date=D(2024, 1, 15))
    assert starts(terms, D(2024, 3, 15)) == [D(2024, 1, 15), D(2024, 2, 15), D(2024, 3, 15)]
    assert starts(terms, D(2024, 3, 14)) == [D(2024, 1, 15), D(2024, 2, 15)]
    assert starts(terms, D(2024, 1, 14)) == []


# --------------------------------------------------------------------------- owed periods


def test_next_invoice_date_excludes_periods_starting_before_it():
    terms = Terms(start_date=D(2024, 1, 15), next_invoice_date=D(2024, 3, 15))
    assert owed_periods(terms, D(2024, 4, 20)) == [
        P(D(2024, 3, 15), D(2024, 4, 15), 31),
        P(D(2024, 4, 15), D(2024, 5, 15), 30),
    ]


def test_next_invoice_date_inside_a_period_excludes_that_period_too():
    # The period starting 15 Mar starts before 20 Mar, so it was invoiced outside flexbill.
    terms = Terms(start_date=D(2024, 1, 15), next_invoice_date=D(2024, 3, 20))
    assert [p.start for p in owed_periods(terms, D(2024, 4, 20))] == [D(2024, 4, 15)]


def test_next_invoice_date_after_start_of_short_period_skips_the_short_period():
    terms = Terms(start_date=D(2023, 2, 20), billing_day=1, next_invoice_date=D(2023, 2, 21))
    assert [p.start for p in owed_periods(terms, D(2023, 4, 1))] == [D(2023, 3, 1), D(2023, 4, 1)]


def test_next_invoice_date_before_start_bills_from_start():
    terms = Terms(start_date=D(2024, 1, 15), next_invoice_date=D(2023, 6, 1))
    assert [p.start for p in owed_periods(terms, D(2024, 2, 15))] == [D(2024, 1, 15), D(2024, 2, 15)]


def test_owed_periods_leave_out_billed_period_starts():
    terms = Terms(start_date=D(2024, 1, 15))
    billed = frozenset({D(2024, 1, 15), D(2024, 3, 15)})
    assert [p.start for p in owed_periods(terms, D(2024, 4, 15), billed)] == [D(2024, 2, 15), D(2024, 4, 15)]


# --------------------------------------------------------------------------- next period start


def test_next_period_start_is_start_date_before_the_contract_starts():
    terms = Terms(start_date=D(2023, 2, 20), billing_day=1)
    assert next_period_start(terms, D(2023, 2, 19)) == D(2023, 2, 20)


def test_next_period_start_is_strictly_after_and_skips_to_the_billing_day():
    terms = Terms(start_date=D(2023, 2, 20), billing_day=1)
    assert next_period_start(terms, D(2023, 2, 20)) == D(2023, 3, 1)
    assert next_period_start(terms, D(2023, 2, 28)) == D(2023, 3, 1)
    assert next_period_start(terms, D(2023, 3, 1)) == D(2023, 4, 1)


def test_next_period_start_after_clamped_february_returns_to_the_31st():
    terms = Terms(start_date=D(2024, 1, 31))
    assert next_period_start(terms, D(2024, 2, 29)) == D(2024, 3, 31)
    assert next_period_start(terms, D(2024, 2, 28)) == D(2024, 2, 29)


def test_next_period_start_ignores_the_cancellation_date():
    terms = Terms(start_date=D(2024, 1, 15), cancellation_date=D(2024, 2, 1))
    assert next_period_start(terms, D(2024, 1, 20)) == D(2024, 2, 15)


# --------------------------------------------------------------------------- amounts


def test_full_period_amount_is_unit_price_times_quantity():
    p = P(D(2024, 1, 15), D(2024, 2, 15), 31)
    assert p.amount(Decimal("12.34"), 3) == Decimal("37.02")


def test_prorated_amount_multiplies_by_quantity_before_rounding():
    # 9/28 of 10.01 = 3.2175 -> 3.22 each, but 3 x 10.01 x 9/28 = 9.6525 -> 9.65 (not 3 x 3.22 = 9.66).
    first = list(periods(Terms(start_date=D(2023, 2, 20), billing_day=1), D(2023, 2, 20)))[0]
    assert first.amount(Decimal("10.01"), 1) == Decimal("3.22")
    assert first.amount(Decimal("10.01"), 3) == Decimal("9.65")


def test_prorated_amount_exactly_on_half_a_cent_rounds_up():
    # 9/28 of 14.14 = 127.26 / 28 = 4.545 exactly -> 4.55 (half-even would give 4.54).
    first = list(periods(Terms(start_date=D(2023, 2, 20), billing_day=1), D(2023, 2, 20)))[0]
    assert first.amount(Decimal("14.14"), 1) == Decimal("4.55")
    # Same figure through the quantity: 2 x 7.07 = 14.14.
    assert first.amount(Decimal("7.07"), 2) == Decimal("4.55")
    # 9/28 of 0.14 = 0.045 exactly -> 0.05 (half-even would give 0.04).
    assert first.amount(Decimal("0.14"), 1) == Decimal("0.05")


def test_amount_just_below_half_a_cent_rounds_down():
    # 9/28 of 14.13 = 4.541785... -> 4.54
    first = P(D(2023, 2, 20), D(2023, 3, 1), 28)
    assert first.amount(Decimal("14.13"), 1) == Decimal("4.54")


def test_amount_of_a_free_plan_is_zero():
    p = P(D(2023, 2, 20), D(2023, 3, 1), 28)
    assert p.amount(Decimal("0.00"), 5) == Decimal("0.00")
