"""The invoice lifecycle (contract v2): drafts, gapless numbers, and what a rerun does to a finalized invoice.

A run writes drafts; finalization numbers them from the location's series (`3-000042`), oldest billing date
first, then by customer.  A finalized invoice never changes: when a rerun of its date computes other lines
or other totals for its customer, the invoice is credited in full (a credit note of the location's own
series, `3-C000007`) and, when the new result bills anything, a corrective invoice replaces it, finalized at
once.  A rerun whose result equals the finalized invoice changes nothing.

Pure functions of frames and values: the database side is `flexbill.invoicing`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .money import from_cents

DRAFT, FINALIZED, CREDITED = "draft", "finalized", "credited"
GRACE, CORRECTION = "grace", "correction"  # finalized_by of the automatic finalization and of corrective invoices

# What makes two invoices of one customer and date the same document: every line's contract, period and
# amounts, and the invoice's totals.
LINE_KEY = ["customer_id", "contract_id", "period_start"]
LINE_VALUES = ["period_end", "quantity", "unit_cents", "amount_cents", "prorated"]
INVOICE_VALUES = ["location_id", "currency", "subtotal_cents", "tax_cents", "total_cents"]


def invoice_number(location_id: int, seq: int) -> str:
    """`<location_id>-<seq>`, seq zero-padded to 6 digits (it grows past 999999 without wrapping)."""
    return f"{int(location_id)}-{int(seq):06d}"


def credit_note_number(location_id: int, seq: int) -> str:
    return f"{int(location_id)}-C{int(seq):06d}"


def credit_note_id(invoice_id: str) -> str:
    """One credit note per invoice at most: its id is the credited invoice's."""
    return f"CN-{invoice_id}"


def revision_id(base_id: str, credited: int) -> str:
    """The id of a customer's next invoice on a date that already holds `credited` credited ones."""
    return base_id if credited == 0 else f"{base_id}-R{credited}"


def numbered(frame: pd.DataFrame, last_seq: dict[int, int], number=invoice_number) -> tuple[pd.Series, dict]:
    """Numbers for the rows of `frame` (location_id, in the order to number), continuing each location's
    series from `last_seq`; returns (numbers aligned with frame, the new last seq per location)."""
    if frame.empty:
        return pd.Series([], index=frame.index, dtype=object), dict(last_seq)
    locations = frame["location_id"].astype("int64")
    offset = locations.groupby(locations).cumcount() + 1
    base = locations.map(lambda lid: last_seq.get(int(lid), 0)).astype("int64")
    seqs = base + offset
    numbers = pd.Series([number(lid, seq) for lid, seq in zip(locations, seqs)], index=frame.index, dtype=object)
    new_last = dict(last_seq)
    for lid, top in seqs.groupby(locations).max().items():
        new_last[int(lid)] = int(top)
    return numbers, new_last


@dataclass
class Reconciled:
    """What a rerun of a date does to the customers that hold a finalized invoice of that date."""

    kept: set  # customer ids whose finalized invoice equals the new result: nothing is written for them
    credited: pd.DataFrame  # the finalized invoices to credit: invoice_id, customer_id, reason


def reconcile(
    finalized: pd.DataFrame, finalized_lines: pd.DataFrame, invoices: pd.DataFrame, lines: pd.DataFrame, billing_date
) -> Reconciled:
    """Compare each finalized invoice of the date with the rerun's result for its customer.

    finalized: invoice_id, customer_id + INVOICE_VALUES; finalized_lines: invoice_id, customer_id, contract_id,
    period_start + LINE_VALUES; invoices / lines: the new result, same columns.  Amounts in cents."""
    if finalized.empty:
        return Reconciled(kept=set(), credited=pd.DataFrame(columns=["invoice_id", "customer_id", "reason"]))
    held = set(finalized["customer_id"].astype("int64"))
    new_lines = lines[lines["customer_id"].isin(held)]
    old = _norm_lines(finalized_lines)
    new = _norm_lines(new_lines)
    both = old.merge(new, on=LINE_KEY, how="outer", suffixes=("_old", "_new"), indicator=True)
    same_values = np.ones(len(both), dtype=bool)
    for c in LINE_VALUES:
        same_values &= (both[f"{c}_old"] == both[f"{c}_new"]).to_numpy()
    per = (
        pd.DataFrame(
            {
                "customer_id": both["customer_id"].astype("int64"),
                "added": (both["_merge"] == "right_only").to_numpy(),
                "removed": (both["_merge"] == "left_only").to_numpy(),
                "changed": ((both["_merge"] == "both").to_numpy() & ~same_values),
            }
        )
        .groupby("customer_id")
        .sum()
    )

    new_inv = invoices[invoices["customer_id"].isin(held)]
    totals = _norm_invoices(finalized, with_id=True).merge(
        _norm_invoices(new_inv), on="customer_id", how="left", suffixes=("_old", "_new")
    )
    totals_differ = np.zeros(len(totals), dtype=bool)
    for c in INVOICE_VALUES:
        totals_differ |= ~(totals[f"{c}_old"] == totals[f"{c}_new"]).to_numpy()
    totals = (
        totals.assign(totals_differ=totals_differ)
        .merge(per, left_on="customer_id", right_index=True, how="left")
        .fillna({"added": 0, "removed": 0, "changed": 0})
    )
    differs = totals["totals_differ"] | (totals[["added", "removed", "changed"]].sum(axis=1) > 0)
    changed = totals[differs]
    reasons = [_reason(billing_date, r) for r in changed.itertuples()]
    credited = pd.DataFrame(
        {
            "invoice_id": changed["invoice_id"].to_numpy(),
            "customer_id": changed["customer_id"].astype("int64").to_numpy(),
            "reason": reasons,
        }
    )
    return Reconciled(kept=set(totals.loc[~differs, "customer_id"].astype("int64")), credited=credited)


def _norm_lines(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame[LINE_KEY + LINE_VALUES].copy()
    for c in ("customer_id", "contract_id", "quantity", "unit_cents", "amount_cents"):
        out[c] = out[c].astype("int64")
    for c in ("period_start", "period_end"):
        out[c] = pd.to_datetime(out[c]).astype("datetime64[s]")
    out["prorated"] = out["prorated"].astype(bool)
    return out


def _norm_invoices(frame: pd.DataFrame, with_id: bool = False) -> pd.DataFrame:
    out = frame[["customer_id", *INVOICE_VALUES] + (["invoice_id"] if with_id else [])].copy()
    for c in ("customer_id", "location_id", "subtotal_cents", "tax_cents", "total_cents"):
        out[c] = out[c].astype("int64")
    out["currency"] = out["currency"].astype(str)
    return out


def _reason(billing_date, row) -> str:
    parts = []
    for count, word in ((row.added, "added"), (row.removed, "removed"), (row.changed, "changed")):
        if count:
            parts.append(f"{int(count)} line{'s' if count != 1 else ''} {word}")
    old_total = from_cents(int(row.total_cents_old))
    if pd.isna(row.total_cents_new):
        totals = f"total {old_total} -> nothing to bill"
    else:
        totals = f"total {old_total} -> {from_cents(int(row.total_cents_new))}"
    return (
        f"rerun of {billing_date} recomputed this invoice after a data change: "
        f"{', '.join(parts) or 'totals changed'}; {totals}"
    )
