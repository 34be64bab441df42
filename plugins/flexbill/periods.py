"""Billing periods: the reference implementation of the contract's period rules.

A plan bills every N months or every N weeks, in advance.  Periods are computed
from their anchor, never by adding one step at a time: period k starts at
anchor + k x step (dateutil clamps month ends, so a 31 January anniversary bills
on 28/29 February and then on 31 March).  With a billing day B the first,
short period runs from start_date to the first day-B date and is prorated
against the full step that ends where it ends.  No period starts on or after the
cancellation date; a period that contains it ends there.  Intervals are
half-open [start, end).

This module is pure (no database, no numpy): `flexbill.vector` computes the same
periods for millions of contracts at once and is checked against it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from dateutil.relativedelta import relativedelta

from .money import prorate


@dataclass(frozen=True, slots=True)
class Terms:
    """What a contract and its plan say about when it bills."""

    start_date: date
    every_months: int = 1
    every_weeks: int = 0
    billing_day: int | None = None
    cancellation_date: date | None = None
    next_invoice_date: date | None = None


@dataclass(frozen=True, slots=True)
class Period:
    start: date
    end: date  # exclusive; truncated at the cancellation date
    full_days: int  # days of the full step that holds the period

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def prorated(self) -> bool:
        return self.days < self.full_days

    def amount(self, unit_price: Decimal, quantity: int) -> Decimal:
        return prorate(unit_price, quantity, self.days, self.full_days)


def _step(terms: Terms, k: int) -> relativedelta:
    if terms.every_weeks > 0:
        return relativedelta(weeks=terms.every_weeks * k)
    return relativedelta(months=terms.every_months * k)


def _first_boundary(terms: Terms) -> date:
    """Start of the first full period (start_date itself unless a billing day cuts in)."""
    start, day = terms.start_date, terms.billing_day
    if day is None or start.day == day:
        return start
    if start.day < day:
        return start.replace(day=day)
    return (start + relativedelta(months=1)).replace(day=day)


def periods(terms: Terms, through: date) -> Iterator[Period]:
    """Every period that starts on or before `through` (next_invoice_date not applied)."""
    anchor = _first_boundary(terms)
    cancel = terms.cancellation_date or date.max
    if anchor != terms.start_date:  # the short first period of a billing-day contract
        if terms.start_date <= through and terms.start_date < cancel:
            full = (anchor - (anchor - _step(terms, 1))).days
            yield Period(terms.start_date, min(anchor, cancel), full)
    k = 0
    while True:
        start = anchor + _step(terms, k)
        if start > through or start >= cancel:
            return
        end = anchor + _step(terms, k + 1)
        yield Period(start, min(end, cancel), (end - start).days)
        k += 1


def owed_periods(terms: Terms, through: date, billed: frozenset[date] = frozenset()) -> list[Period]:
    """Periods starting on or before `through`, on or after next_invoice_date, not in `billed`."""
    floor = terms.next_invoice_date or date.min
    return [p for p in periods(terms, through) if p.start >= floor and p.start not in billed]


def next_period_start(terms: Terms, after: date) -> date:
    """The first period start strictly after `after` (it may lie past the cancellation date)."""
    anchor = _first_boundary(terms)
    if terms.start_date > after:
        return terms.start_date
    k = 0
    while anchor + _step(terms, k) <= after:
        k += 1
    return anchor + _step(terms, k)
