"""Vectorised billing periods: `flexbill.periods`' rules for many contracts at once.

The hot path of a run never loops per contract in Python.  Each contract is
reduced to an anchor (a month index and a day, or a day number for weekly
plans); period k starts at anchor + k x step, with the day clamped to the
month's length, exactly as dateutil does in `flexbill.periods`.  Property tests
check this module against that reference.

Dates are numpy datetime64[D]; "no date" is NaT on input.  Money is integer
cents and rounds with `money.half_up_div`, so no float touches an amount.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .money import half_up_div

DAY = "datetime64[D]"
FAR = np.datetime64("9999-12-31", "D")


def _ceil_div(a, b):
    return -((-a) // b)


def _month_index(d):
    return d.astype("datetime64[M]").astype(np.int64)


def _month_day(month_index, day):
    """Date of `day` in month `month_index`, clamped to the month's last day."""
    first = month_index.astype("datetime64[M]").astype(DAY)
    length = ((month_index + 1).astype("datetime64[M]").astype(DAY) - first).astype(np.int64)
    return first + (np.minimum(day, length) - 1).astype("timedelta64[D]")


def _day_of_month(d):
    return (d - d.astype("datetime64[M]").astype(DAY)).astype(np.int64) + 1


@dataclass
class Grid:
    """Each contract's period grid: boundary k = anchor + k x step, k >= 0."""

    start: np.ndarray  # start_date
    weekly: np.ndarray  # bool
    step: np.ndarray  # months or weeks per period
    anchor_month: np.ndarray  # month index of boundary 0 (monthly plans)
    anchor_day: np.ndarray  # day of month of the boundaries (monthly plans)
    first: np.ndarray  # boundary 0: start_date, or the first billing-day date
    short: np.ndarray  # bool: a prorated first period [start, first) exists

    @classmethod
    def build(cls, start, every_months, every_weeks, billing_day):
        start = np.asarray(start, dtype=DAY)
        months = np.asarray(every_months, dtype=np.int64)
        weeks = np.asarray(every_weeks, dtype=np.int64)
        bday = np.asarray(billing_day, dtype=np.int64)  # 0 = anniversary
        weekly = weeks > 0
        step = np.where(weekly, weeks, months)
        sday = _day_of_month(start)
        smonth = _month_index(start)
        cut = (~weekly) & (bday > 0) & (bday != sday)
        amonth = np.where(cut & (sday > bday), smonth + 1, smonth)
        aday = np.where(cut, bday, sday)
        first = np.where(cut, _month_day(amonth, aday), start)
        return cls(start, weekly, step, amonth, aday, first, cut)

    def boundary(self, k, rows=None):
        """Boundary k of each contract (k broadcast; `rows` selects contracts)."""
        sel = slice(None) if rows is None else rows
        k = np.asarray(k, dtype=np.int64)
        weekly = self.weekly[sel]
        step = self.step[sel]
        by_week = self.first[sel] + (k * step * 7 * weekly).astype("timedelta64[D]")
        by_month = _month_day(self.anchor_month[sel] + k * step * (~weekly), self.anchor_day[sel])
        return np.where(weekly, by_week, by_month)

    def k_at_or_after(self, lo):
        """Smallest k >= 0 with boundary(k) >= lo."""
        lo = np.asarray(lo, dtype=DAY)
        wk = _ceil_div((lo - self.first).astype(np.int64), self.step * 7)
        mk = _ceil_div(_month_index(lo) - self.anchor_month, self.step)
        k = np.maximum(np.where(self.weekly, wk, mk), 0)
        return k + (self.boundary(k) < lo)

    def k_at_or_before(self, hi):
        """Largest k with boundary(k) <= hi (-1 where none)."""
        hi = np.asarray(hi, dtype=DAY)
        wk = (hi - self.first).astype(np.int64) // (self.step * 7)
        mk = (_month_index(hi) - self.anchor_month) // self.step
        k = np.maximum(np.where(self.weekly, wk, mk), -1)
        return k - ((k >= 0) & (self.boundary(np.maximum(k, 0)) > hi))


@dataclass
class Periods:
    row: np.ndarray  # index of the contract in the input arrays
    start: np.ndarray
    end: np.ndarray
    days: np.ndarray
    full_days: np.ndarray


def enumerate_periods(grid: Grid, lo, hi, cancel) -> Periods:
    """Periods whose start lies in [lo, hi] and before `cancel` (NaT = never), per contract."""
    lo = np.asarray(lo, dtype=DAY)
    cancel = np.asarray(cancel, dtype=DAY)
    cancel = np.where(np.isnat(cancel), FAR, cancel)
    last = np.minimum(np.asarray(hi, dtype=DAY), cancel - np.timedelta64(1, "D"))
    k0 = grid.k_at_or_after(lo)
    k1 = grid.k_at_or_before(last)
    counts = np.maximum(k1 - k0 + 1, 0)
    rows = np.repeat(np.arange(len(lo)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    k = np.repeat(k0, counts) + offsets
    starts = grid.boundary(k, rows)
    nexts = grid.boundary(k + 1, rows)
    ends = np.minimum(nexts, cancel[rows])

    has_short = grid.short & (grid.start >= lo) & (grid.start <= last)
    srows = np.flatnonzero(has_short)
    s_start = grid.start[srows]
    s_first = grid.first[srows]
    s_prev = grid.boundary(-1, srows)
    s_end = np.minimum(s_first, cancel[srows])

    row = np.concatenate([srows, rows])
    start = np.concatenate([s_start, starts])
    end = np.concatenate([s_end, ends])
    full = np.concatenate([(s_first - s_prev), (nexts - starts)]).astype(np.int64)
    order = np.lexsort((start, row))
    return Periods(
        row=row[order],
        start=start[order],
        end=end[order],
        days=(end - start).astype(np.int64)[order],
        full_days=full[order],
    )


def next_start_after(grid: Grid, after) -> np.ndarray:
    """First period start strictly after `after`, per contract."""
    after = np.asarray(after, dtype=DAY)
    k = grid.k_at_or_before(after) + 1
    nxt = grid.boundary(k)
    return np.where(grid.start > after, grid.start, nxt)


def amounts_cents(unit_cents, quantity, days, full_days) -> np.ndarray:
    """unit x quantity x days / full_days in cents, half-up, exact (falls back to Python ints when large)."""
    unit = np.asarray(unit_cents, dtype=np.int64)
    qty = np.asarray(quantity, dtype=np.int64)
    days = np.asarray(days, dtype=np.int64)
    full = np.asarray(full_days, dtype=np.int64)
    big = (unit.astype(np.float64) * qty * np.maximum(days, 1) * 2) >= 2.0**62
    if big.any():
        num = unit.astype(object) * qty.astype(object) * days.astype(object)
        return np.asarray(half_up_div(num, full.astype(object)), dtype=object)
    return half_up_div(unit * qty * days, full)
