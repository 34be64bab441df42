"""Money: Decimal only, half-up to cents, never across currencies."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from flexbill.money import Money, from_cents, half_up_div, prorate, round_cents, tax_on, to_cents

# --------------------------------------------------------------------------- round_cents


@pytest.mark.parametrize(
    "value, expected",
    [
        ("0.005", "0.01"),  # half a cent rounds up (half-even would give 0.00)
        ("0.015", "0.02"),
        ("0.025", "0.03"),  # half-even would give 0.02
        ("2.675", "2.68"),
        ("1.004999", "1.00"),
        ("1.0050", "1.01"),
        ("10", "10.00"),
        ("0", "0.00"),
        ("-0.005", "-0.01"),  # half-up is away from zero for Decimal ROUND_HALF_UP
    ],
)
def test_round_cents_rounds_half_up(value, expected):
    got = round_cents(Decimal(value))
    assert got == Decimal(expected)
    assert got.as_tuple().exponent == -2  # always quantized to cents


def test_round_cents_accepts_int():
    assert round_cents(3) == Decimal("3.00")


def test_round_cents_refuses_float():
    with pytest.raises(TypeError, match="float"):
        round_cents(0.005)


def test_round_cents_refuses_float_even_when_it_is_whole():
    with pytest.raises(TypeError):
        round_cents(1.0)


# --------------------------------------------------------------------------- prorate, tax


def test_prorate_is_unit_times_quantity_times_days_over_full_days_half_up():
    assert prorate(Decimal("100.00"), 1, 9, 28) == Decimal("32.14")  # 32.142857...
    assert prorate(Decimal("14.14"), 1, 9, 28) == Decimal("4.55")  # 4.545 exactly
    assert prorate(Decimal("10.00"), 3, 31, 31) == Decimal("30.00")


def test_tax_on_rounds_half_up_on_the_subtotal():
    assert tax_on(Decimal("0.25"), Decimal("0.2000")) == Decimal("0.05")
    assert tax_on(Decimal("10.05"), Decimal("0.1000")) == Decimal("1.01")  # 1.005 -> 1.01
    assert tax_on(Decimal("99.99"), Decimal("0.0000")) == Decimal("0.00")


# --------------------------------------------------------------------------- cents


@pytest.mark.parametrize(
    "value, cents",
    [
        ("0.00", 0),
        ("0.01", 1),
        ("12.34", 1234),
        ("12.3", 1230),
        ("7", 700),
        ("9999999999.99", 999999999999),
    ],
)
def test_to_cents_converts_whole_cents_exactly(value, cents):
    assert to_cents(Decimal(value)) == cents
    assert isinstance(to_cents(Decimal(value)), int)


@pytest.mark.parametrize("value", ["0.001", "12.345", "0.005", "1.0000001"])
def test_to_cents_refuses_fractional_cents(value):
    with pytest.raises(ValueError, match="not a whole number of cents"):
        to_cents(Decimal(value))


def test_to_cents_accepts_trailing_zeros_beyond_cents():
    assert to_cents(Decimal("12.3400")) == 1234


def test_from_cents_is_the_inverse_of_to_cents():
    for cents in (0, 1, 99, 100, 123456, 999_999_999_999):
        assert to_cents(from_cents(cents)) == cents
    assert from_cents(1234) == Decimal("12.34")
    assert from_cents(np.int64(5)) == Decimal("0.05")


# --------------------------------------------------------------------------- half_up_div


@pytest.mark.parametrize(
    "num, den, expected",
    [
        (0, 7, 0),
        (5, 10, 1),  # exactly one half rounds up
        (4, 10, 0),
        (6, 10, 1),
        (15, 10, 2),  # 1.5 -> 2
        (25, 10, 3),  # 2.5 -> 3 (half-even would give 2)
        (14, 28, 1),  # 0.5 -> 1
        (13, 28, 0),
        (126, 28, 5),  # 4.5 -> 5
        (100 * 9, 28, 32),  # 32.14 -> 32
        (20, 10, 2),  # exact quotient unchanged
    ],
)
def test_half_up_div_rounds_half_up(num, den, expected):
    assert half_up_div(num, den) == expected


def test_half_up_div_works_elementwise_on_numpy_arrays():
    num = np.array([5, 4, 25, 126, 0], dtype=np.int64)
    den = np.array([10, 10, 10, 28, 3], dtype=np.int64)
    got = half_up_div(num, den)
    assert got.dtype == np.int64
    assert got.tolist() == [1, 0, 3, 5, 0]


def test_half_up_div_is_exact_on_python_ints_beyond_int64():
    num = 3 * 10**30 + 5
    assert half_up_div(num, 10) == 3 * 10**29 + 1


# --------------------------------------------------------------------------- Money


def test_money_adds_amounts_in_the_same_currency():
    total = Money(Decimal("1.10"), "EUR") + Money(Decimal("2.25"), "EUR")
    assert total == Money(Decimal("3.35"), "EUR")


def test_money_refuses_cross_currency_addition():
    with pytest.raises(ValueError, match="EUR.*GBP"):
        Money(Decimal("1.00"), "EUR") + Money(Decimal("1.00"), "GBP")


def test_money_refuses_float_amount():
    with pytest.raises(TypeError, match="float"):
        Money(1.5, "EUR")


def test_money_is_immutable():
    m = Money(Decimal("1.00"), "EUR")
    with pytest.raises(AttributeError):
        m.amount = Decimal("2.00")  # type: ignore[misc]


def test_half_up_div_does_not_wrap_an_int64_numerator_above_2_to_the_62():
    """A subtotal times its tax rate can pass 2**62 and still fit int64 (a 5.4e14-cent subtotal at 8603e-4):
    doubling it before dividing wrapped around to a negative tax (found by test_engine_properties)."""
    nums = [536063457898728 * 8603, 2**63 - 1, 2**62 + 5_000, 2**62 + 4_999]
    got = half_up_div(np.array(nums, dtype=np.int64), 10_000)
    assert got.dtype == np.int64
    assert got.tolist() == [(2 * n + 10_000) // 20_000 for n in nums]  # exact, in Python ints
