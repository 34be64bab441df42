"""The active-user report: per location, as of the cutoff of D.

members: customers with at least one contract that exists at the cutoff and is
not cancelled on D (started or not); active_users: members not suspended;
suspended_members; suspended_with_portal_access (they can still transact: the
list an admin reviews); contacts: customers with no such contract.  Archived
and quarantined customers count nowhere; every location gets a row, zeros
included.
"""

from __future__ import annotations

from datetime import date

import pandas as pd

from .clock import cutoff_of
from .frames import lookup

COUNTS = ["members", "active_users", "suspended_members", "suspended_with_portal_access", "contacts"]
CONTRACT_COLUMNS = ["customer_id", "cancellation_date"]  # what the report reads of every visible contract
CUSTOMER_COLUMNS = ["id", "location_id", "archived_at", "portal_access"]  # and of every valid customer


def _flags(customers: pd.DataFrame, contracts: pd.DataFrame, suspended: pd.Series, report_date: date) -> pd.DataFrame:
    """One row per countable customer with its member / suspended / portal flags."""
    cutoff = pd.Timestamp(cutoff_of(report_date))
    customers = customers[CUSTOMER_COLUMNS]
    cust = customers[~(customers["archived_at"] < cutoff)]
    cancelled = contracts["cancellation_date"]
    live = contracts["customer_id"][cancelled.isna() | (cancelled > pd.Timestamp(report_date))]
    member = cust["id"].isin(live.dropna().unique())  # the ids, not a copy of the live contracts
    susp = lookup(cust["id"], suspended).fillna(False).astype(bool)
    portal = cust["portal_access"].fillna(True).astype(bool)
    return pd.DataFrame(
        {
            "customer_id": cust["id"],
            "location_id": cust["location_id"].astype("int64"),
            "members": member,
            "active_users": member & ~susp,
            "suspended_members": member & susp,
            "suspended_with_portal_access": member & susp & portal,
            "contacts": ~member,
        }
    )


def active_users(
    locations: pd.DataFrame, customers: pd.DataFrame, contracts: pd.DataFrame, suspended: pd.Series, report_date: date
) -> pd.DataFrame:
    """locations: every location row; customers: valid customers; contracts: every visible contract."""
    counts = _flags(customers, contracts, suspended, report_date).groupby("location_id")[COUNTS].sum()
    ids = pd.Index(locations["id"].dropna().astype("int64").unique(), name="location_id")
    out = counts.reindex(ids, fill_value=0).astype("int64").reset_index()
    out.insert(0, "report_date", report_date)
    return out.sort_values("location_id").reset_index(drop=True)


def suspended_with_portal_access(
    customers: pd.DataFrame, contracts: pd.DataFrame, suspended: pd.Series, report_date: date
) -> pd.DataFrame:
    """The customers behind suspended_with_portal_access (customer_id, location_id), for an admin to review."""
    flags = _flags(customers, contracts, suspended, report_date)
    keep = flags["suspended_with_portal_access"]
    return flags.loc[keep, ["customer_id", "location_id"]].reset_index(drop=True)
