"""Money is Decimal, rounded half-up to cents by one named function.

Every line amount is rounded half-up to cents; tax is rounded half-up on the
invoice subtotal.  Adding amounts in two currencies is an error, never a
conversion.  The vectorised engine works in integer cents with the same rule
(`half_up_div`), so both paths agree to the cent.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")


def _no_float(*values) -> None:
    if any(isinstance(v, float) for v in values):
        raise TypeError("money must be Decimal, not float")


def round_cents(value: Decimal) -> Decimal:
    """Round half-up to cents (0.005 -> 0.01)."""
    _no_float(value)
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def prorate(unit_price: Decimal, quantity: int, days: int, full_days: int) -> Decimal:
    """unit price x quantity x days / full_days, rounded half-up to cents."""
    _no_float(unit_price)
    return round_cents(Decimal(unit_price) * quantity * days / full_days)


def tax_on(subtotal: Decimal, tax_rate: Decimal) -> Decimal:
    _no_float(subtotal, tax_rate)
    return round_cents(Decimal(subtotal) * Decimal(tax_rate))


def to_cents(value: Decimal) -> int:
    """Exact Decimal -> integer cents (the value must already be whole cents)."""
    _no_float(value)
    cents = Decimal(value) * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"{value} is not a whole number of cents")
    return int(cents)


def from_cents(cents: int) -> Decimal:
    return Decimal(int(cents)).scaleb(-2)


def half_up_div(numerator, denominator):
    """Half-up integer division for non-negative integers (scalars or numpy arrays). The numerator is never doubled:
    an int64 numerator above 2**62 (a large subtotal times its tax rate) would wrap around."""
    return numerator // denominator + (2 * (numerator % denominator) >= denominator)


@dataclass(frozen=True, slots=True)
class Money:
    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        _no_float(self.amount)

    def __add__(self, other: Money) -> Money:
        if self.currency != other.currency:
            raise ValueError(f"cannot add {self.currency} and {other.currency}")
        return Money(self.amount + other.amount, self.currency)
