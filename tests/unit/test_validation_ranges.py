"""GX's range checks over integer columns: handed to GX as float64 (its vector path), same verdicts as the integers.

`validation._between_as_floats` turns the nullable Int64 and Python-int columns of ExpectColumnValuesToBeBetween
rules into float64 before GX sees them. Every verdict must stay what the rule means for the exact integer: at the
bounds, one off them, beyond 2**53 (where float64 rounds) and beyond int64. No database.
"""

from __future__ import annotations

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexbill import validation
from flexbill.validation import _between_as_floats, _Gx

RULES = [
    ("ExpectColumnValuesToBeBetween", {"column": "low", "min_value": 1}, "", ""),
    ("ExpectColumnValuesToBeBetween", {"column": "high", "max_value": validation.MAX_PERIOD_CENTS}, "", ""),
    ("ExpectColumnValuesToBeBetween", {"column": "both", "min_value": 1, "max_value": 28}, "", ""),
]
EDGES = [None, -(10**30), -(2**63), -1, 0, 1, 2, 27, 28, 29, 10**12 - 1, 10**12, 10**12 + 1, 2**53, 2**53 + 1, 2**64]


def _expected(rules, frame) -> dict[str, list[int]]:
    """Failing row positions per column, by the rule's meaning on exact Python ints (nulls are not checked)."""
    out = {}
    for _, kwargs, _, _ in rules:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        out[kwargs["column"]] = [
            i
            for i, v in enumerate(frame[kwargs["column"]].tolist())
            if not (v is None or v is pd.NA or v != v)
            and not ((low is None or v >= low) and (high is None or v <= high))
        ]
    return out


def _failing(rules, frame) -> dict[str, list[int]]:
    result = _Gx.get().validate("test_ranges", rules, frame, "COMPLETE")
    return {
        r.expectation_config.kwargs["column"]: sorted(int(p) for p in r.result.get("unexpected_index_list") or [])
        for r in result.results
    }


def _frame(values: list) -> pd.DataFrame:
    in_int64 = [v if v is None or -(2**63) <= v < 2**63 else None for v in values]
    return pd.DataFrame(
        {
            "low": pd.array(in_int64, dtype="Int64"),  # nullable ints, as db.extract gives them
            "high": pd.Series(values, dtype=object),  # Python ints beyond int64, as a period amount can be
            "both": pd.Series(values, dtype=object),
        }
    )


def test_integer_columns_reach_gx_as_floats_and_keep_every_verdict():
    frame = _frame(EDGES)
    converted = _between_as_floats(frame, RULES)
    assert {c: str(t) for c, t in converted.dtypes.items()} == {"low": "float64", "high": "float64", "both": "float64"}
    assert frame["high"].dtype == object  # the caller's frame is left as it was
    assert _failing(RULES, frame) == _expected(RULES, frame)


def test_columns_that_are_not_all_integers_are_left_to_gx_as_they_are():
    frame = pd.DataFrame({"low": pd.Series([1, "x", None], dtype=object), "high": pd.Series([10**400, 1, None])})
    assert _between_as_floats(frame, RULES) is frame  # text, or an int beyond float64: nothing converted


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(st.none(), st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from(EDGES)), max_size=30
    )
)
def test_any_integers_fail_exactly_where_the_rule_says(values):
    frame = _frame(values)
    assert _failing(RULES, frame) == _expected(RULES, frame)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.sampled_from(EDGES[1:]), st.integers(-(2**40), 2**40)),
            st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
        ),
        max_size=8,
    )
)
def test_a_period_amount_is_unit_times_quantity_exactly_whatever_its_size(pairs):
    """`_period_cents` multiplies in Int64 when every product fits, in Python ints otherwise: the same exact amounts
    (missing where a factor is), never a wrapped-around int64."""
    unit = pd.Series([u for u, _ in pairs], dtype=object)
    quantity = pd.Series([q for _, q in pairs], dtype="Int64")
    got = validation._period_cents(unit, quantity)
    assert [None if pd.isna(v) else int(v) for v in got] == [
        None if u is None or q is None else u * q for u, q in pairs
    ]
