"""Small DataFrame helpers shared by the set-based modules."""

from __future__ import annotations

import pandas as pd


def lookup(keys: pd.Series, table: pd.DataFrame | pd.Series, value: str | None = None, key: str = "id") -> pd.Series:
    """For each key, `value` of the table row whose `key` matches (missing where none does).

    `table` may also be a Series indexed by key.  Unlike Series.map this keeps
    the value's dtype and works on empty inputs.
    """
    if isinstance(table, pd.Series):
        right = pd.DataFrame({"__k": table.index.to_numpy(), "__v": table.to_numpy()})
    else:
        right = table[[key, value]].rename(columns={key: "__k", value: "__v"})
    right = right.drop_duplicates("__k")
    left = pd.DataFrame({"__k": pd.array(keys.to_numpy(), dtype=right["__k"].dtype) if len(keys) else keys.to_numpy()})
    merged = left.merge(right, on="__k", how="left")
    return pd.Series(merged["__v"].to_numpy(), index=keys.index, name=value)
