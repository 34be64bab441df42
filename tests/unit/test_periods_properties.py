"""Property tests of the billing-period rules, and of the vectorised engine against the reference.

`flexbill.periods` is the reference (dateutil, one contract at a time);
`flexbill.vector` must give the same periods, next starts and amounts for many
contracts at once.  Contracts are drawn with a bias towards month ends, leap
days and billing days, where the rules are easy to get wrong.
"""

from __future__ import annotations

import calendar
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flexbill import vector
from flexbill.money import from_cents, prorate, to_cents
from flexbill.periods import Period, Terms, next_period_start, owed_periods, periods

SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BATCH_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MAX_UNIT_CENTS = 999_999_999_999  # numeric(12,2)
MAX_QUANTITY = 2**31 - 1  # integer


# --------------------------------------------------------------------------- strategies


@st.composite
def dates(draw, lo_year=2000, hi_year=2040):
    year = draw(st.integers(lo_year, hi_year))
    month = draw(st.integers(1, 12))
    last = calendar.monthrange(year, month)[1]
    day = draw(st.one_of(st.integers(1, last), st.sampled_from([1, 28, 29, 30, 31])))
    return date(year, month, min(day, last))


@st.composite
def terms_(draw, with_next_invoice_date=True):
    start = draw(dates())
    weekly = draw(st.booleans())
    if weekly:
        every_months, every_weeks, billing_day = 0, draw(st.integers(1, 5)), None
    else:
        every_months = draw(st.one_of(st.sampled_from([1, 1, 2, 3, 6, 12]), st.integers(1, 24)))
        every_weeks = 0
        billing_day = draw(
            st.one_of(st.none(), st.sampled_from([1, 28, start.day if start.day <= 28 else 28]), st.integers(1, 28))
        )
    cancellation = draw(st.one_of(st.none(), st.integers(0, 900).map(lambda n: start + timedelta(days=n))))
    nid = None
    if with_next_invoice_date:
        nid = draw(st.one_of(st.none(), st.integers(-60, 900).map(lambda n: start + timedelta(days=n))))
    return Terms(
        start_date=start,
        every_months=every_months,
        every_weeks=every_weeks,
        billing_day=billing_day,
        cancellation_date=cancellation,
        next_invoice_date=nid,
    )


def around(start: date, lo=-60, hi=1200):
    return st.integers(lo, hi).map(lambda n: start + timedelta(days=n))


def grid_of(terms_list: list[Terms]) -> vector.Grid:
    return vector.Grid.build(
        np.array([t.start_date for t in terms_list], dtype="datetime64[D]"),
        np.array([t.every_months for t in terms_list], dtype=np.int64),
        np.array([t.every_weeks for t in terms_list], dtype=np.int64),
        np.array([t.billing_day or 0 for t in terms_list], dtype=np.int64),
    )


def d64(values) -> np.ndarray:
    return np.array(
        [np.datetime64("NaT") if v is None else np.datetime64(v, "D") for v in values], dtype="datetime64[D]"
    )


def as_date(x) -> date:
    return np.datetime64(x, "D").astype(object)


def next_month(y: int, m: int, k: int) -> tuple[int, int]:
    idx = y * 12 + (m - 1) + k
    return idx // 12, idx % 12 + 1


# --------------------------------------------------------------------------- the reference's rules


@SETTINGS
@given(data=st.data(), terms=terms_())
def test_periods_tile_start_to_cancellation_or_next_start_without_gap_or_overlap(data, terms):
    through = data.draw(around(terms.start_date), label="through")
    got = list(periods(terms, through))
    cancel = terms.cancellation_date or date.max
    if terms.start_date > through or terms.start_date >= cancel:
        assert got == []
        return
    assert got, "a started, uncancelled contract has at least one period"
    assert got[0].start == terms.start_date
    for a, b in zip(got, got[1:]):
        assert a.end == b.start  # no gap, no overlap
        assert a.start < a.end
    # The union ends where the next period would start, or at the cancellation date.
    assert got[-1].end == min(cancel, next_period_start(terms, through))
    assert got[-1].start <= through
    assert all(p.start < cancel and p.end <= cancel for p in got)
    assert sum(p.days for p in got) == (got[-1].end - terms.start_date).days


@SETTINGS
@given(data=st.data(), terms=terms_(with_next_invoice_date=False))
def test_period_starts_are_computed_from_the_anchor(data, terms):
    through = data.draw(around(terms.start_date, 0, 1500), label="through")
    got = list(periods(terms, through))
    s = terms.start_date
    short = terms.billing_day is not None and s.day != terms.billing_day
    regular = got[1:] if short else got
    for i, p in enumerate(regular):
        if terms.every_weeks:
            assert p.start == s + timedelta(weeks=terms.every_weeks * i)
        elif terms.billing_day is not None:
            assert p.start.day == terms.billing_day
            first = regular[0].start
            assert p.start == date(*next_month(first.year, first.month, terms.every_months * i), terms.billing_day)
        else:
            y, m = next_month(s.year, s.month, terms.every_months * i)
            assert p.start == date(y, m, min(s.day, calendar.monthrange(y, m)[1]))
    if terms.billing_day is not None and regular:
        # The first full period starts on the first day-B date on or after start_date.
        first = regular[0].start
        assert first >= s and (first - s).days < 31
        assert not any((s + timedelta(days=n)).day == terms.billing_day for n in range((first - s).days))


@SETTINGS
@given(data=st.data(), terms=terms_(), unit_cents=st.integers(0, 10**9), quantity=st.integers(1, 1000))
def test_each_period_is_at_most_a_full_step_and_never_bills_more_than_unit_times_quantity(
    data, terms, unit_cents, quantity
):
    through = data.draw(around(terms.start_date), label="through")
    unit = from_cents(unit_cents)
    for p in periods(terms, through):
        assert 1 <= p.days <= p.full_days
        if terms.every_weeks:
            assert p.full_days == 7 * terms.every_weeks
        else:
            assert 28 * terms.every_months <= p.full_days <= 31 * terms.every_months
            assert p.full_days in range(
                365 * (terms.every_months // 12) + 28 * (terms.every_months % 12),
                366 * (terms.every_months // 12) + 31 * (terms.every_months % 12) + 1,
            )
        amount = p.amount(unit, quantity)
        assert Decimal(0) <= amount <= unit * quantity
        assert amount == amount.quantize(Decimal("0.01"))


@SETTINGS
@given(data=st.data(), terms=terms_(), unit_cents=st.integers(1, 10**9), quantity=st.integers(1, 1000))
def test_a_period_is_prorated_iff_shorter_than_its_full_step_and_only_at_the_edges(data, terms, unit_cents, quantity):
    through = data.draw(around(terms.start_date), label="through")
    unit = from_cents(unit_cents)
    got = list(periods(terms, through))
    for p in got:
        assert p.prorated == (p.days < p.full_days)
        if not p.prorated:
            assert p.amount(unit, quantity) == unit * quantity
        else:
            short_first = (
                p.start == terms.start_date
                and terms.billing_day is not None
                and terms.start_date.day != terms.billing_day
            )
            cut = p.end == terms.cancellation_date
            assert short_first or cut
            exact = Fraction(unit_cents * quantity * p.days, p.full_days)  # cents
            assert abs(Fraction(to_cents(p.amount(unit, quantity))) - exact) <= Fraction(1, 2)


@SETTINGS
@given(data=st.data(), terms=terms_())
def test_owed_periods_are_the_periods_starting_on_or_after_next_invoice_date(data, terms):
    through = data.draw(around(terms.start_date), label="through")
    every = list(periods(terms, through))
    owed = owed_periods(terms, through)
    floor = terms.next_invoice_date or date.min
    assert owed == [p for p in every if p.start >= floor]
    billed = frozenset(p.start for p in every[::2])
    assert owed_periods(terms, through, billed) == [p for p in owed if p.start not in billed]


@SETTINGS
@given(data=st.data(), terms=terms_(with_next_invoice_date=False))
def test_next_period_start_is_the_first_grid_start_strictly_after(data, terms):
    after = data.draw(around(terms.start_date), label="after")
    nxt = next_period_start(terms, after)
    assert nxt > after
    uncancelled = Terms(terms.start_date, terms.every_months, terms.every_weeks, terms.billing_day)
    got = [p.start for p in periods(uncancelled, nxt)]
    assert got[-1] == nxt  # it is a period start
    assert all(s <= after for s in got[:-1])  # and no start lies between `after` and it


# --------------------------------------------------------------------------- vector == reference


@st.composite
def windows(draw, n_max=6):
    """A batch of contracts, each with a window [lo, hi]."""
    terms_list = draw(st.lists(terms_(with_next_invoice_date=False), min_size=1, max_size=n_max))
    los, his = [], []
    for t in terms_list:
        lo = draw(around(t.start_date, -60, 900))
        hi = draw(st.one_of(around(lo, -10, 900), around(t.start_date, -60, 1200)))
        los.append(lo)
        his.append(hi)
    return terms_list, los, his


@BATCH_SETTINGS
@given(batch=windows())
@example(batch=([Terms(date(2024, 1, 31))], [date(2024, 1, 1)], [date(2024, 6, 1)]))
@example(
    batch=(
        [Terms(date(2023, 2, 20), billing_day=1), Terms(date(2024, 2, 20), billing_day=1)],
        [date(2023, 1, 1), date(2024, 1, 1)],
        [date(2023, 5, 1), date(2024, 5, 1)],
    )
)
@example(
    batch=(
        [Terms(date(2023, 2, 20), every_months=3, billing_day=1, cancellation_date=date(2023, 2, 25))],
        [date(2023, 2, 20)],
        [date(2024, 1, 1)],
    )
)
@example(
    batch=([Terms(date(2024, 1, 15), cancellation_date=date(2024, 1, 15))], [date(2024, 1, 15)], [date(2024, 5, 1)])
)
def test_vector_enumerate_periods_equals_reference_periods(batch):
    terms_list, los, his = batch
    grid = grid_of(terms_list)
    got = vector.enumerate_periods(grid, d64(los), d64(his), d64([t.cancellation_date for t in terms_list]))
    assert len(got.row) == len(got.start) == len(got.end) == len(got.days) == len(got.full_days)
    for i, (t, lo, hi) in enumerate(zip(terms_list, los, his)):
        want = [
            (p.start, p.end, p.days, p.full_days)
            for p in owed_periods(
                Terms(t.start_date, t.every_months, t.every_weeks, t.billing_day, t.cancellation_date, lo), hi
            )
        ]
        mine = got.row == i
        have = [
            (as_date(s), as_date(e), int(d), int(f))
            for s, e, d, f in zip(got.start[mine], got.end[mine], got.days[mine], got.full_days[mine])
        ]
        assert have == want, f"contract {i}: {t}, window [{lo}, {hi}]"
    assert (np.diff(got.row) >= 0).all()  # grouped by contract, in order


@BATCH_SETTINGS
@given(batch=windows())
def test_vector_next_start_after_equals_reference_next_period_start(batch):
    terms_list, los, _ = batch
    grid = grid_of(terms_list)
    got = vector.next_start_after(grid, d64(los))
    want = [next_period_start(t, after) for t, after in zip(terms_list, los)]
    assert [as_date(x) for x in got] == want


@BATCH_SETTINGS
@given(batch=windows(), unit_cents=st.integers(0, MAX_UNIT_CENTS), quantity=st.integers(1, MAX_QUANTITY))
def test_vector_amounts_of_enumerated_periods_equal_period_amount(batch, unit_cents, quantity):
    terms_list, los, his = batch
    grid = grid_of(terms_list)
    per = vector.enumerate_periods(grid, d64(los), d64(his), d64([t.cancellation_date for t in terms_list]))
    n = len(per.row)
    got = vector.amounts_cents(np.full(n, unit_cents), np.full(n, quantity), per.days, per.full_days)
    for s, e, f, cents in zip(per.start, per.end, per.full_days, got):
        p = Period(as_date(s), as_date(e), int(f))
        assert int(cents) == to_cents(p.amount(from_cents(unit_cents), quantity))


@st.composite
def amount_rows(draw):
    n = draw(st.integers(1, 12))
    big = draw(st.booleans())
    unit_max = MAX_UNIT_CENTS if big else 10**7
    qty_max = MAX_QUANTITY if big else 1000
    rows = []
    for _ in range(n):
        full = draw(st.one_of(st.sampled_from([7, 14, 28, 29, 30, 31, 90, 92, 365, 366]), st.integers(1, 800)))
        days = draw(st.integers(1, full))
        rows.append((draw(st.integers(0, unit_max)), draw(st.integers(1, qty_max)), days, full))
    return rows


@SETTINGS
@given(rows=amount_rows())
@example(rows=[(14, 1, 9, 28)])  # 0.14 x 9/28 = 0.045 -> 0.05
@example(rows=[(1414, 1, 9, 28), (707, 2, 9, 28)])  # 4.545 -> 4.55
@example(rows=[(MAX_UNIT_CENTS, MAX_QUANTITY, 30, 31), (1414, 1, 9, 28)])  # big row forces the fallback
@example(rows=[(2**31, 2**30, 1, 31)])  # 2 x u x q x d = 2^62: exactly the fallback threshold
@example(rows=[(2**31 - 1, 2**30, 1, 31)])  # just below it: the int64 path at its largest
def test_vector_amounts_cents_equals_money_prorate(rows):
    unit, qty, days, full = (np.array(col, dtype=np.int64) for col in zip(*rows))
    got = vector.amounts_cents(unit, qty, days, full)
    assert len(got) == len(rows)
    for (u, q, d, f), cents in zip(rows, got):
        want = to_cents(prorate(from_cents(u), q, d, f))
        assert int(cents) == want, (u, q, d, f)
        # and both are the exact half-up rounding of u x q x d / f
        assert want == (2 * u * q * d + f) // (2 * f)


def test_vector_amounts_cents_fallback_is_exact_where_int64_would_overflow():
    u, q, d, f = MAX_UNIT_CENTS, MAX_QUANTITY, 30, 31
    assert 2 * u * q * d > 2**63  # int64 arithmetic would overflow here
    got = vector.amounts_cents(np.array([u, 100]), np.array([q, 1]), np.array([d, 9]), np.array([f, 28]))
    exact = Fraction(u * q * d, f)
    assert int(got[0]) == int(exact + Fraction(1, 2))  # half-up of the exact value
    assert int(got[0]) == to_cents(prorate(from_cents(u), q, d, f))
    assert int(got[1]) == 32  # 100 cents x 9/28 = 32.14 -> 32, unaffected by its big neighbour
