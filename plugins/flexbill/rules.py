"""The three automatic suspension rules, set-based, and the as-of suspension state.

Each trigger before the cutoff whose trigger_key is not yet recorded appends one
`suspend` event at the trigger's own instant (not the run's):
- signup: a customer created at or after its location's keep_new_accounts_suspended_since;
- plan: a contract created at or after its plan's suspend_customers_joining_since;
- crm_stage: a stage entry at or after its stage's deactivate_account_since.
Rules never lift, and they ignore quarantined rows (callers pass valid rows only).
"""

from __future__ import annotations

import pandas as pd

from .frames import lookup

EVENT_COLUMNS = ["customer_id", "occurred_at", "action", "source", "reason", "actor", "trigger_key"]


def _events(customer_id, occurred_at, source, keys, reason) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": customer_id.astype("int64").to_numpy(),
            "occurred_at": occurred_at.to_numpy(),
            "action": "suspend",
            "source": source,
            "reason": reason.to_numpy() if hasattr(reason, "to_numpy") else reason,
            "actor": None,
            "trigger_key": keys.to_numpy(),
        }
    )


def triggered_events(valid: dict, recorded_keys: set[str]) -> pd.DataFrame:
    """Suspend events owed by the rules and not yet recorded, in (occurred_at, key) order."""
    cust = valid["customers"]
    since = lookup(cust["location_id"], valid["locations"], "keep_new_accounts_suspended_since")
    hit = cust[since.notna() & (cust["created_at"] >= since)]
    signup = _events(
        hit["id"],
        hit["created_at"],
        "signup",
        "signup:" + hit["id"].astype(str),
        "location keeps new member accounts suspended",
    )

    con = valid["contracts"]
    con = con[con["customer_id"].isin(cust["id"])]
    since = lookup(con["plan_id"], valid["plans"], "suspend_customers_joining_since")
    hit = con[since.notna() & (con["created_at"] >= since)]
    plan = _events(
        hit["customer_id"],
        hit["created_at"],
        "plan",
        "plan:" + hit["id"].astype(str),
        "joined plan " + hit["plan_id"].astype(str) + ", which suspends customers joining it",
    )

    ent = valid["crm_stage_entries"]
    ent = ent[ent["customer_id"].isin(cust["id"])]
    since = lookup(ent["stage_id"], valid["crm_stages"], "deactivate_account_since")
    hit = ent[since.notna() & (ent["entered_at"] >= since)]
    crm = _events(
        hit["customer_id"],
        hit["entered_at"],
        "crm_stage",
        "crm_stage:" + hit["id"].astype(str),
        "opportunity entered CRM stage " + hit["stage_id"].astype(str) + " (deactivate account)",
    )

    new = pd.concat([signup, plan, crm], ignore_index=True)
    new = new[~new["trigger_key"].isin(recorded_keys)]
    return new.sort_values(["occurred_at", "trigger_key"], kind="stable").reset_index(drop=True)


def suspended_at(events: pd.DataFrame, cutoff) -> pd.Series:
    """customer_id -> True where the latest event before `cutoff` is a suspend."""
    ev = events[events["occurred_at"] < pd.Timestamp(cutoff)]
    if ev.empty:
        return pd.Series(dtype=bool)
    last = ev.sort_values(["customer_id", "occurred_at", "id"], kind="stable").groupby("customer_id").tail(1)
    return pd.Series((last["action"] == "suspend").to_numpy(), index=last["customer_id"].astype("int64").to_numpy())
