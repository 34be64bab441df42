"""One billing date, set-based: owed periods, the suspension filter, invoices.

Owed periods of a contract on date D: periods starting on or before D and on or
after next_invoice_date with no invoice line on a billing date before D.  A
suspended or archived customer is invoiced nothing: each of its contracts with
owed periods is skipped (`archived` wins over `suspended`) and the periods stay
owed, so the first run after a manual lift back-bills all of them.  Everyone
else gets one invoice per customer, one line per owed period that has no line on
a later date.  Work is vectorised (numpy/pandas); only contracts whose ledger
cursor is on or before D, or that have lines on later dates, are looked at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from . import vector
from .clock import cutoff_of
from .frames import lookup
from .money import half_up_div

LATER, NEW = "later", "new"


INT64_MAX = 2**63 - 1
INVOICE_TERMS = ["contract_id", "location_id", "currency", "tax_rate_e4"]  # what build_invoices reads of the terms


def invoice_id(billing_date: date, customer_id) -> pd.Series | str:
    prefix = f"INV-{billing_date:%Y%m%d}-"
    if isinstance(customer_id, pd.Series):
        return prefix + customer_id.astype("int64").astype(str).str.zfill(7)
    return f"{prefix}{int(customer_id):07d}"


def contract_terms(valid: dict) -> pd.DataFrame:
    """Each billable contract with its plan's terms, its customer and its location."""
    plans = valid["plans"][["id", "price_cents", "currency", "invoice_every_months", "invoice_every_weeks"]]
    plans = plans.rename(columns={"id": "plan_id", "price_cents": "plan_price_cents"})
    cust = valid["customers"][["id", "location_id", "archived_at"]].rename(columns={"id": "customer_id"})
    loc = valid["locations"][["id", "tax_rate_e4"]].rename(columns={"id": "location_id"})
    terms = (
        valid["contracts"]
        .rename(columns={"id": "contract_id"})
        .merge(plans, on="plan_id")
        .merge(cust, on="customer_id")
        .merge(loc, on="location_id")
    )
    terms["unit_cents"] = terms["price_cents"].where(terms["price_cents"].notna(), terms["plan_price_cents"])
    # what billing never reads goes (at 10M the terms of 2.8M contracts are held from owed_periods to the invoices)
    return terms.drop(columns=["price_cents", "plan_price_cents", "created_at"], errors="ignore")


@dataclass
class DateResult:
    lines: pd.DataFrame
    invoices: pd.DataFrame
    skipped: pd.DataFrame
    ledger: pd.DataFrame  # contract_id, billed_before: cursors to move forward
    stats: dict = field(default_factory=dict)


def _dates(series: pd.Series) -> np.ndarray:
    return series.to_numpy(dtype="datetime64[D]")


def _cutoff(billing_date: date) -> pd.Timestamp:
    return pd.Timestamp(cutoff_of(billing_date))


def _window(
    ids: pd.Series, contracts: pd.DataFrame, cursor: pd.Series, later_lines: pd.DataFrame, d64: np.datetime64
) -> tuple[np.ndarray, np.ndarray]:
    """Each contract's first period start to look at (lo), and whether it may owe something on D."""
    start = _dates(contracts["start_date"])
    nid = _dates(contracts["next_invoice_date"])
    floor = np.where(np.isnat(nid) | (nid < start), start, nid)
    cursor = _dates(cursor)
    lo = np.where(np.isnat(cursor) | (cursor < floor), floor, cursor)
    cancel = _dates(contracts["cancellation_date"])
    in_later = ids.isin(later_lines["contract_id"]).to_numpy()
    lo = np.where(in_later, floor, lo)  # an out-of-order rerun looks at the whole history
    return lo, ((lo <= d64) & (np.isnat(cancel) | (lo < cancel))) | in_later


def may_owe(contracts: pd.DataFrame, ledger: pd.DataFrame, later_lines: pd.DataFrame, billing_date: date) -> np.ndarray:
    """Mask of the contract rows (source `contracts`, keyed by `id`) that owed_periods can find owing on D: only
    those need their terms built (on a first of the month about a quarter of them, mid-month a few per cent)."""
    cursor = lookup(contracts["id"], ledger.set_index("contract_id")["billed_before"])
    return _window(contracts["id"], contracts, cursor, later_lines, np.datetime64(billing_date, "D"))[1]


def owed_periods(
    terms: pd.DataFrame,
    ledger: pd.DataFrame,
    later_lines: pd.DataFrame,
    lines_from: Callable[[pd.DataFrame], pd.DataFrame],
    billing_date: date,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Contracts that may owe something on D, and their owed periods.

    ledger: contract_id, billed_before (the cursor); later_lines: contract_id,
    period_start of lines on D or later dates for periods starting on or before D;
    lines_from(frame of contract_id, lo): existing lines (contract_id,
    period_start, billing_date) with period_start >= lo.  Returns
    (candidates: contract_id, customer_id, archived_at, next_start;
     periods: one row per owed period, kind NEW (to invoice) or LATER (has a line on a later date)).
    """
    d64 = np.datetime64(billing_date, "D")
    # the cursor looked up, not merged in: no copy of the terms' other columns (2.8M contracts at 10M on a 1st)
    cursor = lookup(terms["contract_id"], ledger, "billed_before", key="contract_id")
    lo, due = _window(terms["contract_id"], terms, cursor, later_lines, d64)
    cand = (terms if due.all() else terms[due]).assign(lo=lo[due])  # terms hold the contracts that may owe

    grid = vector.Grid.build(
        _dates(cand["start_date"]),
        cand["invoice_every_months"].to_numpy("int64"),
        cand["invoice_every_weeks"].to_numpy("int64"),
        cand["billing_day"].fillna(0).to_numpy("int64"),
    )
    per = vector.enumerate_periods(grid, cand["lo"].to_numpy("datetime64[D]"), d64, _dates(cand["cancellation_date"]))
    rows = cand[["contract_id", "customer_id", "quantity", "unit_cents"]].iloc[per.row]  # what a period row reads
    periods = pd.DataFrame(
        {
            "contract_id": rows["contract_id"].to_numpy("int64"),
            "customer_id": rows["customer_id"].to_numpy("int64"),
            "period_start": per.start,
            "period_end": per.end,
            "quantity": rows["quantity"].to_numpy("int64"),
            "unit_cents": rows["unit_cents"].to_numpy(),
            "amount_cents": vector.amounts_cents(
                rows["unit_cents"].to_numpy("int64"), rows["quantity"].to_numpy("int64"), per.days, per.full_days
            ),
            "prorated": per.days < per.full_days,
            "kind": NEW,
        }
    )
    existing = lines_from(cand[["contract_id", "lo"]])
    if not existing.empty:
        existing = existing.assign(period_start=existing["period_start"].to_numpy("datetime64[D]"))
        periods = periods.merge(
            existing[["contract_id", "period_start", "billing_date"]], on=["contract_id", "period_start"], how="left"
        )
        periods = periods[~(periods["billing_date"] < pd.Timestamp(billing_date))]  # billed before D: not owed
        # a line of D itself is the previous run of D, which publishing replaces: still to invoice
        periods["kind"] = np.where(periods["billing_date"] > pd.Timestamp(billing_date), LATER, NEW)
        periods = periods.drop(columns="billing_date")
    candidates = pd.DataFrame(
        {
            "contract_id": cand["contract_id"].to_numpy("int64"),
            "customer_id": cand["customer_id"].to_numpy("int64"),
            "archived_at": cand["archived_at"].to_numpy(),
            "next_start": vector.next_start_after(grid, d64),
        }
    )
    return candidates, periods.reset_index(drop=True)


def suspension_filter(
    candidates: pd.DataFrame, periods: pd.DataFrame, suspended: pd.Series, billing_date: date
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Skip the contracts of archived or suspended customers; their periods stay owed.

    Returns (status: contract_id, customer_id, reason ('' = bill), owed_periods, owed_cents;
    skipped rows; ledger: contract_id, billed_before for the cursors that may move).
    """
    status = candidates[["contract_id", "customer_id", "archived_at", "next_start"]].copy()
    archived = status["archived_at"].notna() & (status["archived_at"] < _cutoff(billing_date))
    susp = lookup(status["customer_id"], suspended).fillna(False).astype(bool)
    status["reason"] = np.where(archived, "archived", np.where(susp, "suspended", ""))
    owed = periods.groupby("contract_id").agg(owed_periods=("period_start", "size"), owed_cents=("amount_cents", "sum"))
    status = status.merge(owed, left_on="contract_id", right_index=True, how="left").fillna(
        {"owed_periods": 0, "owed_cents": 0}
    )
    status["owed_periods"] = status["owed_periods"].astype("int64")
    skipped = status[(status["reason"] != "") & (status["owed_periods"] > 0)].assign(billing_date=billing_date)[
        ["billing_date", "contract_id", "customer_id", "reason", "owed_periods", "owed_cents"]
    ]
    moving = status[(status["reason"] == "") | (status["owed_periods"] == 0)]
    ledger = pd.DataFrame(
        {
            "contract_id": moving["contract_id"].to_numpy("int64"),
            "billed_before": moving["next_start"].to_numpy("datetime64[D]"),
        }
    )
    return status.drop(columns=["archived_at", "next_start"]), skipped.reset_index(drop=True), ledger


def build_invoices(
    periods: pd.DataFrame, status: pd.DataFrame, terms: pd.DataFrame, billing_date: date
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One invoice per customer: a line per owed period with no line on a later date; tax half-up on the subtotal."""
    billable = status.loc[status["reason"] == "", "contract_id"]
    lines = periods[(periods["kind"] == NEW) & periods["contract_id"].isin(billable)].copy()
    lines["invoice_id"] = invoice_id(billing_date, lines["customer_id"])
    lines["full_cents"] = lines["unit_cents"] * lines["quantity"]
    inv_lines = lines.drop(columns=["location_id"], errors="ignore").merge(terms[INVOICE_TERMS], on="contract_id")
    invoices = inv_lines.groupby(
        ["invoice_id", "customer_id", "location_id", "currency", "tax_rate_e4"], as_index=False
    ).agg(subtotal_cents=("amount_cents", "sum"))
    rates = invoices["tax_rate_e4"].astype("int64")
    if len(invoices) and int(invoices["subtotal_cents"].max()) * int(rates.max()) > INT64_MAX:  # exact, Python ints
        invoices["tax_cents"] = pd.Series(
            [half_up_div(int(a) * int(r), 10000) for a, r in zip(invoices["subtotal_cents"], rates)],
            index=invoices.index,
            dtype=object,
        )
    else:
        invoices["tax_cents"] = half_up_div(invoices["subtotal_cents"] * rates, 10000)
    invoices["total_cents"] = invoices["subtotal_cents"] + invoices["tax_cents"]
    invoices["billing_date"] = billing_date
    return lines.reset_index(drop=True), invoices


def run_stats(status: pd.DataFrame, lines: pd.DataFrame, invoices: pd.DataFrame, billing_date: date) -> dict:
    owed = int((status["owed_periods"] > 0).sum())
    invoiced = int(lines["contract_id"].nunique())
    skipped = int(((status["reason"] != "") & (status["owed_periods"] > 0)).sum())
    return {
        "contracts_owed": owed,
        "contracts_invoiced": invoiced,
        "contracts_skipped": skipped,
        "contracts_billed_later": owed - invoiced - skipped,
        "invoices": int(len(invoices)),
        "lines": int(len(lines)),
        "back_billed_lines": int((lines["period_start"] < pd.Timestamp(billing_date)).sum()),
    }


def bill_date(
    terms: pd.DataFrame,
    ledger: pd.DataFrame,
    later_lines: pd.DataFrame,
    lines_from: Callable[[pd.DataFrame], pd.DataFrame],
    suspended: pd.Series,
    billing_date: date,
) -> DateResult:
    """Everything run D decides, before validation and writing: owed periods, filter, invoices."""
    candidates, periods = owed_periods(terms, ledger, later_lines, lines_from, billing_date)
    status, skipped, ledger_out = suspension_filter(candidates, periods, suspended, billing_date)
    lines, invoices = build_invoices(periods, status, terms, billing_date)
    return DateResult(
        lines=lines,
        invoices=invoices,
        skipped=skipped,
        ledger=ledger_out,
        stats=run_stats(status, lines, invoices, billing_date),
    )
