"""The naive baseline: what a data team writes first to bill date D.

pandas `read_sql` of every table, filters and merges in pandas, the period computation per row in Python
(`DataFrame.apply` walking each contract's periods from its start with dateutil), amounts with Decimal
per row, and `to_sql` of the invoice lines into `naive_invoice_lines`.  It honours the same rules as
flexbill (cutoff, bad rows left out, automatic rules, suspension and archive filter, next_invoice_date,
lines already on other dates) so that bench/run.py can check it produces the same lines.  Lines only:
no invoices, skips, report or validation.

    python -m bench.naive --db URL --date 2026-11-01
"""

from __future__ import annotations

import argparse
import time
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

import pandas as pd
from dateutil.relativedelta import relativedelta
from sqlalchemy import Boolean, Date, Integer, Numeric, create_engine

CENT = Decimal("0.01")
TABLES = [
    "locations",
    "customers",
    "plans",
    "contracts",
    "suspension_events",
    "crm_boards",
    "crm_stages",
    "crm_stage_entries",
]


def money(v):
    return None if v is None or (isinstance(v, float) and v != v) else Decimal(str(v)).quantize(CENT)


def when(series: pd.Series) -> pd.Series:
    """Timestamps however the driver returns them (datetime, date or ISO text)."""
    return pd.to_datetime(series.map(lambda v: None if v is None or v != v else str(v)), format="ISO8601")


def periods_of(row, d: date) -> list:
    """Every period of the contract that starts in [lo, min(D, cancellation - 1)], walking from its start."""
    start, cancel, lo = row.start_date, row.cancellation_date, row.lo
    weeks, months, bday = int(row.invoice_every_weeks), int(row.invoice_every_months), row.billing_day
    weekly = weeks > 0
    step = (lambda k: relativedelta(weeks=weeks * k)) if weekly else (lambda k: relativedelta(months=months * k))
    bday = None if weekly or pd.isna(bday) else int(bday)
    out = []
    anchor = start
    if bday is not None and start.day != bday:
        anchor = start.replace(day=bday) if start.day < bday else (start + relativedelta(months=1)).replace(day=bday)
        if lo <= start <= d and (cancel is None or start < cancel):
            end = anchor if cancel is None else min(anchor, cancel)
            out.append((start, end, (anchor - (anchor - step(1))).days))
    k = 0
    while True:
        p0 = anchor + step(k)
        if p0 > d or (cancel is not None and p0 >= cancel):
            break
        p1 = anchor + step(k + 1)
        if p0 >= lo:
            out.append((p0, p1 if cancel is None else min(p1, cancel), (p1 - p0).days))
        k += 1
    return out


def bill(url: str, d: date) -> int:
    engine = create_engine(url)
    cutoff = pd.Timestamp(d) + pd.Timedelta(days=1)
    t = {name: pd.read_sql(f"select * from {name}", engine) for name in TABLES}
    lines = pd.read_sql(
        "select l.contract_id, l.period_start, i.billing_date from invoice_lines l "
        "join invoices i on i.invoice_id = l.invoice_id where i.status <> 'credited'",
        engine,
    )
    for name, cols in {
        "customers": ["created_at", "archived_at"],
        "contracts": ["created_at"],
        "suspension_events": ["occurred_at"],
        "crm_stage_entries": ["entered_at"],
        "locations": ["keep_new_accounts_suspended_since"],
        "plans": ["suspend_customers_joining_since"],
        "crm_stages": ["deactivate_account_since"],
    }.items():
        for c in cols:
            t[name][c] = when(t[name][c])
    for c in ["start_date", "cancellation_date", "next_invoice_date"]:
        t["contracts"][c] = [None if v is pd.NaT else v.date() for v in when(t["contracts"][c])]

    # as of the cutoff
    customers = t["customers"][t["customers"]["created_at"] < cutoff]
    contracts = t["contracts"][t["contracts"]["created_at"] < cutoff]
    events = t["suspension_events"][t["suspension_events"]["occurred_at"] < cutoff]
    entries = t["crm_stage_entries"][t["crm_stage_entries"]["entered_at"] < cutoff]

    # bad rows out (and the rows depending on them)
    loc = t["locations"]
    loc = loc[
        loc["currency"].astype(str).str.fullmatch(r"[A-Z]{3}")
        & loc["tax_rate"].map(money).between(Decimal(0), Decimal(1))
    ]
    plans = t["plans"].merge(loc[["id", "currency"]].rename(columns={"id": "location_id", "currency": "loc_cur"}))
    plans = plans[
        (plans["price"].map(money) >= 0)
        & (plans["currency"] == plans["loc_cur"])
        & (plans["invoice_every_months"] >= 0)
        & (plans["invoice_every_weeks"] >= 0)
        & ((plans["invoice_every_months"] > 0) != (plans["invoice_every_weeks"] > 0))
    ]
    valid_customers = customers.merge(
        loc[["id", "currency", "keep_new_accounts_suspended_since"]].rename(
            columns={"id": "location_id", "currency": "cust_cur"}
        )
    )
    c = contracts.merge(valid_customers[["id", "cust_cur", "archived_at"]].rename(columns={"id": "customer_id"}))
    c = c.merge(
        plans[
            [
                "id",
                "price",
                "currency",
                "invoice_every_months",
                "invoice_every_weeks",
                "suspend_customers_joining_since",
            ]
        ].rename(columns={"id": "plan_id", "price": "plan_price"})
    )
    c = c[
        (c["quantity"] >= 1)
        & (c["price"].isna() | (c["price"].map(money) >= 0))
        & (c["currency"] == c["cust_cur"])
        & (c["billing_day"].isna() | (c["billing_day"].between(1, 28) & (c["invoice_every_weeks"] == 0)))
        & c.apply(lambda r: r.cancellation_date is None or r.cancellation_date >= r.start_date, axis=1)
    ]

    # the automatic rules' suspend events not yet recorded
    keys = set(t["suspension_events"]["trigger_key"].dropna())
    signup = valid_customers[valid_customers["created_at"] >= valid_customers["keep_new_accounts_suspended_since"]]
    plan = c[c["created_at"] >= c["suspend_customers_joining_since"]]
    boards = t["crm_boards"][t["crm_boards"]["location_id"].isin(loc["id"])]
    stages = t["crm_stages"][t["crm_stages"]["board_id"].isin(boards["id"])]
    crm = entries.merge(stages[["id", "deactivate_account_since"]].rename(columns={"id": "stage_id"}))
    crm = crm[crm["customer_id"].isin(valid_customers["id"]) & (crm["entered_at"] >= crm["deactivate_account_since"])]
    new = pd.concat(
        [
            pd.DataFrame(
                {
                    "customer_id": signup["id"],
                    "occurred_at": signup["created_at"],
                    "rule": 1,
                    "key": "signup:" + signup["id"].astype(str),
                }
            ),
            pd.DataFrame(
                {
                    "customer_id": plan["customer_id"],
                    "occurred_at": plan["created_at"],
                    "rule": 2,
                    "key": "plan:" + plan["id"].astype(str),
                }
            ),
            pd.DataFrame(
                {
                    "customer_id": crm["customer_id"],
                    "occurred_at": crm["entered_at"],
                    "rule": 3,
                    "key": "crm_stage:" + crm["id"].astype(str),
                }
            ),
        ]
    )
    new = new[~new["key"].isin(keys)].sort_values(["rule", "occurred_at", "key"])
    new["id"] = range(10**12, 10**12 + len(new))
    new["action"] = "suspend"

    # suspension state at the cutoff
    ev = events[
        events["customer_id"].isin(customers["id"])
        & events["action"].isin(["suspend", "lift"])
        & events["source"].isin(["manual", "signup", "plan", "crm_stage"])
        & ((events["action"] == "suspend") | (events["source"] == "manual"))
    ]
    ev = pd.concat(
        [ev[["customer_id", "occurred_at", "id", "action"]], new[["customer_id", "occurred_at", "id", "action"]]]
    )
    last = ev.sort_values(["customer_id", "occurred_at", "id"]).groupby("customer_id").tail(1)
    suspended = set(last.loc[last["action"] == "suspend", "customer_id"])
    c = c[~(c["archived_at"] < cutoff) & ~c["customer_id"].isin(suspended)]

    # owed periods, per row
    c = c.copy()
    c["lo"] = c.apply(lambda r: max(r.start_date, r.next_invoice_date or r.start_date), axis=1)
    c["periods"] = c.apply(lambda r: periods_of(r, d), axis=1)
    c = c.explode("periods").dropna(subset=["periods"])
    if c.empty:
        out = pd.DataFrame(
            columns=["contract_id", "period_start", "period_end", "quantity", "unit_price", "amount", "prorated"]
        )
    else:
        c["period_start"] = c["periods"].map(lambda p: p[0])
        c["period_end"] = c["periods"].map(lambda p: p[1])
        c["full_days"] = c["periods"].map(lambda p: p[2])
        done = lines.assign(
            period_start=pd.to_datetime(lines["period_start"]).dt.date,
            billing_date=pd.to_datetime(lines["billing_date"]).dt.date,
        )
        done = done[done["billing_date"] != d]
        c = c.merge(
            done[["contract_id", "period_start"]].assign(done=True),
            how="left",
            left_on=["id", "period_start"],
            right_on=["contract_id", "period_start"],
            suffixes=("", "_l"),
        )
        c = c[c["done"].isna()]
        c["unit_price"] = c.apply(
            lambda r: money(r.price) if money(r.price) is not None else money(r.plan_price), axis=1
        )
        c["amount"] = c.apply(
            lambda r: (r.unit_price * r.quantity * (r.period_end - r.period_start).days / r.full_days).quantize(
                CENT, rounding=ROUND_HALF_UP
            ),
            axis=1,
        )
        c["prorated"] = c.apply(lambda r: (r.period_end - r.period_start).days < r.full_days, axis=1)
        out = c[["id", "period_start", "period_end", "quantity", "unit_price", "amount", "prorated"]].rename(
            columns={"id": "contract_id"}
        )
    out.to_sql(
        "naive_invoice_lines",
        engine,
        if_exists="replace",
        index=False,
        dtype={
            "contract_id": Integer(),
            "period_start": Date(),
            "period_end": Date(),
            "quantity": Integer(),
            "unit_price": Numeric(12, 2),
            "amount": Numeric(18, 2),
            "prorated": Boolean(),
        },
    )
    engine.dispose()
    return len(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--date", required=True, type=date.fromisoformat)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    n = bill(args.db, args.date)
    print(f"naive: {n} lines for {args.date} in {time.perf_counter() - t0:.2f}s", flush=True)


if __name__ == "__main__":
    main()
