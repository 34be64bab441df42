"""Deterministic benchmark data: N contracts on N/2 customers over 20 locations, in flexbill's own schema.

Every value is a pure function of (seed, row id, field): a splitmix64 hash, vectorised with numpy, so the
same seed gives the same rows on PostgreSQL and SQLite, whatever the chunk size.  Rows are built a chunk
of contracts at a time and loaded set-based: PostgreSQL through COPY (CSV), SQLite through executemany
batches in one transaction.  Nothing loops per row in Python.

The mix (see bench/README.md): 60 % monthly anniversary, 25 % billing day 1, 5 % weekly, 5 % quarterly,
5 % yearly; ~10 % cancellations; 1 % of customers archived; ~5 % of customers suspended at any time
(manual suspensions, ~30 % of them lifted later), plus the three automatic rules (signup setting in 2
locations, a "Trial" plan that suspends joiners in 3 locations, a CRM "Churned" stage that deactivates);
about one contract in 10,000 is a bad row of each kind the contract names (and rows depending on bad
plans and customers), plus bad suspension events and CRM rows.

`prepare(D)` puts the database in the steady state of a daily schedule that has billed every date before D:
outputs cleared, the automatic rules' events before D recorded, and each contract's next_invoice_date and
ledger cursor (contract_ledger.billed_before) set to its first period start on or after the date from which
flexbill would still owe it (D, or the day its customer's current suspension began or it was archived).
So the run for D bills exactly what a daily run on D bills: the periods starting on D, plus the back-billing
of customers lifted on D; suspended and archived customers' periods stay owed and are skipped.

    python -m bench.generate --db URL --n 1000000 [--seed S] [--date 2026-11-01]   # create + load + prepare
    python -m bench.generate --db URL --n 1000000 --prepare-only --date 2026-11-17  # move to another date
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from .common import FIRST_OF_MONTH, SEED, is_pg, pg_connect

DAY = "datetime64[D]"
SEC = "datetime64[s]"
EPOCH = np.datetime64("2023-01-01T00:00:00", "s")
HORIZON = np.datetime64("2026-11-30T00:00:00", "s")  # every row is created before this instant
SUSPEND_FROM = np.datetime64("2026-01-01T00:00:00", "s")
ARCHIVE_FROM = np.datetime64("2025-06-01T00:00:00", "s")
ARCHIVE_TO = np.datetime64("2026-12-31T00:00:00", "s")
HOUR = np.timedelta64(3600, "s")
DAYS = np.timedelta64(86400, "s")
LOCATIONS = 20
CHUNK = 1_000_000

SIGNUP_LOCATIONS = (3, 11)
SIGNUP_SINCE = np.datetime64("2026-09-01T00:00:00", "s")
TRIAL_LOCATIONS = (5, 9, 14)
TRIAL_SINCE = np.datetime64("2026-10-20T00:00:00", "s")
CRM_SINCE = np.datetime64("2026-07-01T00:00:00", "s")

CURRENCIES = ["EUR", "GBP", "USD", "CHF"]
TAX_E4 = {"EUR": (2000, 2100), "GBP": (2000, 2000), "USD": (825, 888), "CHF": (810, 810)}
# plan kind k: name, base price (cents), price step per location id (cents), every months, every weeks
PLAN_KINDS = {
    1: ("Hot desk", 15000, 550, 1, 0),
    2: ("Dedicated desk", 29000, 725, 1, 0),
    3: ("Weekly pass", 4500, 110, 0, 1),
    4: ("Private office, quarterly", 120000, 2000, 3, 0),
    5: ("Annual membership", 240000, 3550, 12, 0),
    6: ("Trial", 9900, 0, 1, 0),
}
BAD_EVERY = 10_007  # contract ids = 7 (mod BAD_EVERY) are bad rows of 8 kinds; 11 and 13: on bad plans
BAD_PLAN_CURRENCY = 207  # location 20's plan in another currency than the location's
BAD_PLAN_STEPS = 197  # location 19's plan billing both monthly and weekly
BAD_CUSTOMER_EVERY = 250_007  # customer ids = 5 (mod this) point at location 99, which does not exist

_M64 = (1 << 64) - 1


# ------------------------------------------------------------------ deterministic pseudo-randomness
def _mix(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class Rand:
    def __init__(self, seed: int):
        self.seed = seed

    def bits(self, ids: np.ndarray, salt: int) -> np.ndarray:
        key = np.uint64((self.seed * 1_000_003 + salt * 7_919) & _M64)
        return _mix(_mix(np.asarray(ids, dtype=np.uint64) ^ key) + key)

    def uniform(self, ids, salt) -> np.ndarray:
        return (self.bits(ids, salt) >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def randint(self, ids, salt, n) -> np.ndarray:
        return (self.bits(ids, salt) % np.uint64(n)).astype(np.int64)


def _between(lo: np.ndarray | np.datetime64, hi, u: np.ndarray) -> np.ndarray:
    """lo + u x (hi - lo), in whole seconds."""
    span = (np.asarray(hi, dtype=SEC) - np.asarray(lo, dtype=SEC)).astype(np.int64)
    return np.asarray(lo, dtype=SEC) + (span * u).astype(np.int64).astype("timedelta64[s]")


# ------------------------------------------------------------------ calendar (independent of flexbill.vector)
def _month(d):
    return np.asarray(d, dtype=DAY).astype("datetime64[M]").astype(np.int64)


def _day(d):
    d = np.asarray(d, dtype=DAY)
    return (d - d.astype("datetime64[M]").astype(DAY)).astype(np.int64) + 1


def _month_day(month_index, day):
    """The date of `day` in month `month_index` (months since 1970-01), clamped to the month's end."""
    month_index = np.asarray(month_index, dtype=np.int64)
    first = month_index.astype("datetime64[M]").astype(DAY)
    length = ((month_index + 1).astype("datetime64[M]").astype(DAY) - first).astype(np.int64)
    return first + (np.minimum(day, length) - 1).astype("timedelta64[D]")


def first_start_on_or_after(start, months, weeks, billing_day, x) -> np.ndarray:
    """Per contract, the first period start on or after x (CONTRACT.md "Billing periods")."""
    start, x = np.asarray(start, dtype=DAY), np.asarray(x, dtype=DAY)
    weekly = weeks > 0
    step_days = np.maximum(weeks, 1) * 7
    kw = -(-np.maximum((x - start).astype(np.int64), 0) // step_days)
    by_week = start + (kw * step_days).astype("timedelta64[D]")
    m = np.maximum(months, 1)
    sday = _day(start)
    cut = ~weekly & (billing_day > 0) & (billing_day != sday)
    first = np.where(cut, _month_day(_month(start) + (sday > billing_day), billing_day), start)
    aday = np.where(cut, billing_day, sday)
    am = _month(first)
    k = np.maximum(-(-(_month(x) - am) // m), 0)
    b = _month_day(am + k * m, aday)
    b = np.where(b < x, _month_day(am + (k + 1) * m, aday), b)
    by_month = np.where(x <= first, first, b)
    return np.where(x <= start, start, np.where(weekly, by_week, by_month))


# ------------------------------------------------------------------ the operator
@dataclass
class Customers:
    id: np.ndarray
    location_id: np.ndarray
    created: np.ndarray
    archived: np.ndarray
    portal: np.ndarray
    bad: np.ndarray


def locations() -> pd.DataFrame:
    ids = np.arange(1, LOCATIONS + 1)
    cur = [CURRENCIES[(i - 1) % 4] for i in ids]
    tax = [TAX_E4[c][i % 2] for c, i in zip(cur, ids)]
    since = [str(SIGNUP_SINCE) if i in SIGNUP_LOCATIONS else None for i in ids]
    return pd.DataFrame(
        {
            "id": ids,
            "name": [f"Location {i:02d}" for i in ids],
            "currency": cur,
            "tax_rate_e4": tax,
            "keep_new_accounts_suspended_since": since,
        }
    )


def plan_price_cents(location_id, kind) -> np.ndarray:
    base = np.array([0] + [PLAN_KINDS[k][1] for k in range(1, 7)], dtype=np.int64)
    step = np.array([0] + [PLAN_KINDS[k][2] for k in range(1, 7)], dtype=np.int64)
    return base[kind] + step[kind] * location_id


def plans() -> pd.DataFrame:
    rows = []
    for loc in range(1, LOCATIONS + 1):
        for k, (name, base, step, months, weeks) in PLAN_KINDS.items():
            since = str(TRIAL_SINCE) if k == 6 and loc in TRIAL_LOCATIONS else None
            rows.append((loc * 10 + k, loc, name, base + step * loc, CURRENCIES[(loc - 1) % 4], months, weeks, since))
    rows.append((BAD_PLAN_CURRENCY, 20, "Imported plan (wrong currency)", 10000, "EUR", 1, 0, None))
    rows.append((BAD_PLAN_STEPS, 19, "Imported plan (monthly and weekly)", 10000, CURRENCIES[18 % 4], 1, 1, None))
    return pd.DataFrame(
        rows,
        columns=[
            "id",
            "location_id",
            "name",
            "price_cents",
            "currency",
            "invoice_every_months",
            "invoice_every_weeks",
            "since",
        ],
    )


def customers(n: int, rnd: Rand) -> Customers:
    count = n // 2
    ids = np.arange(1, count + 1, dtype=np.int64)
    loc = 1 + rnd.randint(ids, 1, LOCATIONS)
    bad = ids % BAD_CUSTOMER_EVERY == 5
    loc = np.where(bad, 99, loc)
    created = _between(EPOCH, HORIZON, rnd.uniform(ids, 2))
    archived = _between(ARCHIVE_FROM, ARCHIVE_TO, rnd.uniform(ids, 4))
    archived = np.maximum(archived, created + DAYS)
    archived = np.where(rnd.uniform(ids, 3) < 0.01, archived, np.datetime64("NaT"))
    portal = rnd.uniform(ids, 5) < 0.9
    return Customers(ids, loc, created, archived, portal, bad)


def contracts(lo: int, hi: int, cust: Customers, rnd: Rand) -> pd.DataFrame:
    """Contracts lo..hi-1 as arrays (dates as datetime64, money as cents, -1 / 0 for null)."""
    ids = np.arange(lo, hi, dtype=np.int64)
    count = len(cust.id)
    customer = 1 + rnd.randint(ids, 10, count)
    cloc = cust.location_id[customer - 1]
    ccreated = cust.created[customer - 1]
    created = _between(ccreated, HORIZON, rnd.uniform(ids, 11) ** 3)
    lag = np.where(rnd.uniform(ids, 13) < 0.6, rnd.randint(ids, 12, 15), 0)
    start = created.astype(DAY) + lag.astype("timedelta64[D]")
    r = rnd.randint(ids, 14, 100)
    desk = np.where(rnd.uniform(ids, 15) < 0.6, 1, 2)
    kind = np.select([r == 0, r < 85, r < 90, r < 95], [6, desk, 3, 4], 5)
    billing_day = np.where((r >= 60) & (r < 85), 1, 0)
    plan_id = cloc * 10 + kind
    price = plan_price_cents(cloc, kind) * (80 + rnd.randint(ids, 17, 21)) // 100
    price = np.where(rnd.uniform(ids, 16) < 0.15, price, -1)
    quantity = np.where(rnd.uniform(ids, 18) < 0.12, 2 + rnd.randint(ids, 19, 5), 1)
    cancel = start + (30 + rnd.randint(ids, 21, 900)).astype("timedelta64[D]")
    cancel = np.where(rnd.uniform(ids, 20) < 0.10, cancel, np.datetime64("NaT"))
    carch = cust.archived[customer - 1]
    with_archive = ~np.isnat(carch) & (rnd.uniform(ids, 22) < 0.7)
    cancel = np.where(with_archive, np.maximum(start, carch.astype(DAY)), cancel)

    # bad rows, one kind each (CONTRACT.md "Bad input")
    bad_kind = np.where(ids % BAD_EVERY == 7, (ids // BAD_EVERY) % 8, -1)
    simple = (bad_kind >= 0) & (bad_kind <= 7)
    plan_id = np.where(simple, cloc * 10 + 1, plan_id)
    billing_day = np.where(simple, 0, billing_day)
    price = np.where(bad_kind == 0, -1000, price)  # negative price
    quantity = np.where(bad_kind == 1, 0, quantity)  # quantity not positive
    billing_day = np.where(bad_kind == 2, 31, billing_day)  # billing day outside 1..28
    plan_id = np.where(bad_kind == 3, cloc * 10 + 3, plan_id)
    billing_day = np.where(bad_kind == 3, 5, billing_day)  # billing day on a weekly plan
    cancel = np.where(bad_kind == 4, start - np.timedelta64(10, "D"), cancel)  # cancelled before it starts
    customer = np.where(bad_kind == 5, count + 1000 + ids, customer)  # unknown customer
    plan_id = np.where(bad_kind == 6, 9999, plan_id)  # unknown plan
    plan_id = np.where(bad_kind == 7, (cloc % LOCATIONS + 1) * 10 + 1, plan_id)  # plan in another currency
    on_bad_plan = (ids % BAD_EVERY == 11) | (ids % BAD_EVERY == 13)
    plan_id = np.where(ids % BAD_EVERY == 11, BAD_PLAN_CURRENCY, plan_id)
    plan_id = np.where(ids % BAD_EVERY == 13, BAD_PLAN_STEPS, plan_id)
    bad = (bad_kind >= 0) | on_bad_plan | cust.bad[np.minimum(customer, count) - 1] & (customer <= count)
    kind = np.where(plan_id % 10 == 3, 3, np.where(plan_id % 10 == 6, 6, kind))
    months = np.array([1, 1, 1, 0, 3, 12, 1], dtype=np.int64)[np.clip(plan_id % 10, 0, 6)]
    weeks = (plan_id % 10 == 3).astype(np.int64)
    return pd.DataFrame(
        {
            "id": ids,
            "customer_id": customer,
            "plan_id": plan_id,
            "price_cents": price,
            "quantity": quantity,
            "start_date": start,
            "billing_day": billing_day,
            "cancellation_date": cancel,
            "created_at": created,
            "months": months,
            "weeks": weeks,
            "bad": bad,
            "location_id": cloc,
        }
    )


def manual_events(cust: Customers, rnd: Rand) -> pd.DataFrame:
    """Manual suspensions (~7 % of customers, 30 % of them lifted), lifts approving signup-suspended customers,
    and a few bad events (an automatic lift, an unknown action, an unknown source, unknown customers)."""
    ids = cust.id
    parts = []
    manual = rnd.uniform(ids, 30) < 0.07
    s_at = np.maximum(_between(SUSPEND_FROM, SUSPEND_FROM + 365 * DAYS, rnd.uniform(ids, 31)), cust.created + HOUR)
    parts.append(
        pd.DataFrame(
            {
                "customer_id": ids[manual],
                "occurred_at": s_at[manual],
                "action": "suspend",
                "source": "manual",
                "reason": "unpaid invoices",
                "valid": True,
            }
        )
    )
    lifted = manual & (rnd.uniform(ids, 32) < 0.30)
    l_at = s_at + (DAYS + (rnd.uniform(ids, 33) * 89 * 86400).astype(np.int64).astype("timedelta64[s]"))
    parts.append(
        pd.DataFrame(
            {
                "customer_id": ids[lifted],
                "occurred_at": l_at[lifted],
                "action": "lift",
                "source": "manual",
                "reason": "paid",
                "valid": True,
            }
        )
    )
    signup = np.isin(cust.location_id, SIGNUP_LOCATIONS) & (cust.created >= SIGNUP_SINCE)
    approved = signup & (rnd.uniform(ids, 34) < 0.7)
    a_at = cust.created + (DAYS + (rnd.uniform(ids, 35) * 4 * 86400).astype(np.int64).astype("timedelta64[s]"))
    parts.append(
        pd.DataFrame(
            {
                "customer_id": ids[approved],
                "occurred_at": a_at[approved],
                "action": "lift",
                "source": "manual",
                "reason": "new member approved",
                "valid": True,
            }
        )
    )
    odd = manual & (rnd.uniform(ids, 36) < 0.02)
    kind = rnd.randint(ids, 37, 3)[odd]
    parts.append(
        pd.DataFrame(
            {
                "customer_id": ids[odd],
                "occurred_at": s_at[odd] + HOUR,
                "action": np.array(["lift", "pause", "suspend"])[kind],
                "source": np.array(["crm_stage", "manual", "robot"])[kind],
                "reason": "imported",
                "valid": False,
            }
        )
    )
    ghosts = len(ids) + np.array([5000, 5001])
    parts.append(
        pd.DataFrame(
            {
                "customer_id": ghosts,
                "occurred_at": np.datetime64("2026-06-01T09:00:00", "s"),
                "action": "suspend",
                "source": "manual",
                "reason": "imported",
                "valid": False,
            }
        )
    )
    ev = pd.concat(parts, ignore_index=True)
    ev["occurred_at"] = ev["occurred_at"].astype(SEC)
    ev = ev.sort_values(["occurred_at", "customer_id"], kind="stable").reset_index(drop=True)
    ev.insert(0, "id", np.arange(1, len(ev) + 1))
    ev["actor"] = np.where(ev["source"] == "manual", "admin@operator.example", None)
    return ev


def crm(cust: Customers, rnd: Rand) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One board per location with Lead / Won / Churned (deactivates since CRM_SINCE) stages; 4 % of customers
    have an entry; a stage of an unknown board and entries in unknown stages are bad rows."""
    boards = pd.DataFrame(
        {
            "id": np.arange(1, LOCATIONS + 1),
            "location_id": np.arange(1, LOCATIONS + 1),
            "name": [f"Sales {i:02d}" for i in range(1, LOCATIONS + 1)],
        }
    )
    stages = [
        (loc * 10 + k, loc, name, str(CRM_SINCE) if k == 3 else None)
        for loc in range(1, LOCATIONS + 1)
        for k, name in ((1, "Lead"), (2, "Won"), (3, "Churned"))
    ]
    stages.append((9999, 77, "Ghost stage", str(CRM_SINCE)))
    stages = pd.DataFrame(stages, columns=["id", "board_id", "name", "deactivate_account_since"])
    ids = cust.id
    has = rnd.uniform(ids, 40) < 0.04
    u = rnd.uniform(ids, 41)
    k = np.where(u < 0.5, 1, np.where(u < 0.8, 2, 3))
    entered = _between(cust.created, HORIZON, rnd.uniform(ids, 42))
    good = pd.DataFrame(
        {
            "customer_id": ids[has],
            "stage_id": (cust.location_id * 10 + k)[has],
            "entered_at": entered[has],
            "churn": (k == 3)[has] & ~cust.bad[has],
        }
    )
    ghost = ids % 7919 == 3
    unknown = ids % 7919 == 5
    bad = pd.concat(
        [
            pd.DataFrame({"customer_id": ids[ghost], "stage_id": 9999, "entered_at": entered[ghost], "churn": False}),
            pd.DataFrame(
                {"customer_id": ids[unknown], "stage_id": 12345, "entered_at": entered[unknown], "churn": False}
            ),
        ]
    )
    entries = pd.concat([good, bad], ignore_index=True).sort_values(["customer_id", "stage_id"], kind="stable")
    entries.insert(0, "id", np.arange(1, len(entries) + 1))
    return boards, stages, entries.reset_index(drop=True)


# ------------------------------------------------------------------ writing
def _ts(values, sqlite: bool) -> np.ndarray:
    values = np.asarray(values, dtype=SEC)
    text = np.char.replace(np.datetime_as_string(values, unit="s"), "T", " ")
    if sqlite:  # SQLAlchemy's SQLite DateTime storage format
        text = np.char.add(text, ".000000")
    return np.where(np.isnat(values), None, text.astype(object))


def _date(values) -> np.ndarray:
    values = np.asarray(values, dtype=DAY)
    return np.where(np.isnat(values), None, np.datetime_as_string(values).astype(object))


def _money(cents) -> np.ndarray:
    cents = np.asarray(cents, dtype=np.int64)
    sign = np.where(cents < 0, "-", "")
    a = np.abs(cents)
    text = pd.Series(sign) + pd.Series(a // 100).astype(str) + "." + pd.Series(a % 100).astype(str).str.zfill(2)
    return text.to_numpy(dtype=object)


def _nullable_int(values, null_value=0) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64)
    return np.where(values == null_value, None, values.astype(object))


class Sink:
    """Bulk writes into one database: COPY on PostgreSQL, executemany on SQLite, in one transaction."""

    def __init__(self, url: str):
        self.url = url
        self.pg = is_pg(url)
        if self.pg:
            self.conn = pg_connect(url)
        else:
            import sqlite3

            self.conn = sqlite3.connect(url.split("sqlite:///", 1)[1], isolation_level=None, timeout=120)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=OFF")
            self.conn.execute("BEGIN IMMEDIATE")

    def execute(self, sql: str, params=()):
        return self.conn.execute(sql, params)

    def write(self, table: str, frame: pd.DataFrame) -> int:
        if frame.empty:
            return 0
        cols = ", ".join(f'"{c}"' for c in frame.columns)
        if self.pg:
            buf = io.StringIO()
            frame.to_csv(buf, index=False, header=False, na_rep="")
            with self.conn.cursor() as cur:
                with cur.copy(f'COPY "{table}" ({cols}) FROM STDIN (FORMAT csv)') as copy:
                    copy.write(buf.getvalue())
        else:
            marks = ", ".join("?" for _ in frame.columns)
            self.conn.executemany(
                f'INSERT INTO "{table}" ({cols}) VALUES ({marks})',
                frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None),
            )
        return len(frame)

    def commit(self) -> None:
        self.conn.commit() if self.pg else self.conn.execute("COMMIT")
        if not self.pg:
            self.conn.execute("BEGIN IMMEDIATE")

    def close(self) -> None:
        if not self.pg:
            try:
                self.conn.execute("COMMIT")
            except Exception:  # noqa: BLE001 - nothing open
                pass
        self.conn.close()


def _say(msg: str, t0: float) -> None:
    print(f"  [{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def load(url: str, n: int, seed: int) -> dict:
    """Create flexbill's tables and load the source rows (next_invoice_date is set by `prepare`)."""
    from flexbill.db.connect import init_db, make_engine

    t0 = time.perf_counter()
    engine = make_engine(url)
    init_db(engine)
    engine.dispose()
    rnd = Rand(seed)
    sink = Sink(url)
    sqlite = not sink.pg
    counts = {}
    loc = locations()
    counts["locations"] = sink.write(
        "locations",
        pd.DataFrame(
            {
                "id": loc["id"],
                "name": loc["name"],
                "currency": loc["currency"],
                "tax_rate": [f"{v // 10000}.{v % 10000:04d}" for v in loc["tax_rate_e4"]],
                "keep_new_accounts_suspended_since": _ts(
                    pd.to_datetime(loc["keep_new_accounts_suspended_since"]), sqlite
                ),
            }
        ),
    )
    pl = plans()
    counts["plans"] = sink.write(
        "plans",
        pd.DataFrame(
            {
                "id": pl["id"],
                "location_id": pl["location_id"],
                "name": pl["name"],
                "price": _money(pl["price_cents"]),
                "currency": pl["currency"],
                "invoice_every_months": pl["invoice_every_months"],
                "invoice_every_weeks": pl["invoice_every_weeks"],
                "suspend_customers_joining_since": _ts(pd.to_datetime(pl["since"]), sqlite),
            }
        ),
    )
    cust = customers(n, rnd)
    for lo in range(0, len(cust.id), CHUNK):
        sl = slice(lo, lo + CHUNK)
        ids = cust.id[sl]
        counts["customers"] = counts.get("customers", 0) + sink.write(
            "customers",
            pd.DataFrame(
                {
                    "id": ids,
                    "location_id": cust.location_id[sl],
                    "full_name": np.char.add("Customer ", ids.astype(str)).astype(object),
                    "email": np.char.add(np.char.add("c", ids.astype(str)), "@example.com").astype(object),
                    "created_at": _ts(cust.created[sl], sqlite),
                    "archived_at": _ts(cust.archived[sl], sqlite),
                    "portal_access": np.where(cust.portal[sl], 1, 0) if sqlite else np.where(cust.portal[sl], "t", "f"),
                }
            ),
        )
    _say(f"customers: {counts['customers']:,}", t0)
    for lo in range(1, n + 1, CHUNK):
        c = contracts(lo, min(lo + CHUNK, n + 1), cust, rnd)
        counts["contracts"] = counts.get("contracts", 0) + sink.write(
            "contracts",
            pd.DataFrame(
                {
                    "id": c["id"],
                    "customer_id": c["customer_id"],
                    "plan_id": c["plan_id"],
                    "price": np.where(c["price_cents"].to_numpy() == -1, None, _money(c["price_cents"])),
                    "quantity": c["quantity"],
                    "start_date": _date(c["start_date"]),
                    "billing_day": _nullable_int(c["billing_day"]),
                    "cancellation_date": _date(c["cancellation_date"]),
                    "next_invoice_date": None,
                    "created_at": _ts(c["created_at"], sqlite),
                }
            ),
        )
        _say(f"contracts: {counts['contracts']:,} of {n:,}", t0)
    ev = manual_events(cust, rnd)
    counts["suspension_events"] = sink.write(
        "suspension_events",
        pd.DataFrame(
            {
                "id": ev["id"],
                "customer_id": ev["customer_id"],
                "occurred_at": _ts(ev["occurred_at"].to_numpy(), sqlite),
                "action": ev["action"],
                "source": ev["source"],
                "reason": ev["reason"],
                "actor": ev["actor"],
            }
        ),
    )
    boards, stages, entries = crm(cust, rnd)
    counts["crm_boards"] = sink.write("crm_boards", boards)
    counts["crm_stages"] = sink.write(
        "crm_stages",
        stages.assign(deactivate_account_since=_ts(pd.to_datetime(stages["deactivate_account_since"]), sqlite)),
    )
    counts["crm_stage_entries"] = sink.write(
        "crm_stage_entries",
        pd.DataFrame(
            {
                "id": entries["id"],
                "customer_id": entries["customer_id"],
                "stage_id": entries["stage_id"],
                "entered_at": _ts(entries["entered_at"].to_numpy(), sqlite),
            }
        ),
    )
    if sink.pg:  # keep the id sequence ahead of the rows loaded with explicit ids
        sink.execute(
            "select setval(pg_get_serial_sequence('suspension_events', 'id'), (select max(id) from suspension_events))"
        )
    sink.commit()
    sink.close()
    _say(f"loaded {sum(counts.values()):,} source rows", t0)
    return counts


# ------------------------------------------------------------------ steady state for a billing date
def triggers(n: int, seed: int, cust: Customers | None = None) -> pd.DataFrame:
    """Every automatic-rule trigger (customer_id, occurred_at, source, trigger_key, reason) of the data set."""
    rnd = Rand(seed)
    cust = cust or customers(n, rnd)
    loc = cust.location_id
    hit = np.isin(loc, SIGNUP_LOCATIONS) & (cust.created >= SIGNUP_SINCE) & ~cust.bad
    parts = [
        pd.DataFrame(
            {
                "customer_id": cust.id[hit],
                "occurred_at": cust.created[hit],
                "source": "signup",
                "trigger_key": np.char.add("signup:", cust.id[hit].astype(str)).astype(object),
                "reason": "location keeps new member accounts suspended",
            }
        )
    ]
    for lo in range(1, n + 1, CHUNK):
        c = contracts(lo, min(lo + CHUNK, n + 1), cust, rnd)
        hit = (
            (c["plan_id"] % 10 == 6)
            & c["location_id"].isin(TRIAL_LOCATIONS)
            & ~c["bad"]
            & (c["created_at"] >= TRIAL_SINCE)
        )
        h = c[hit]
        parts.append(
            pd.DataFrame(
                {
                    "customer_id": h["customer_id"].to_numpy(),
                    "occurred_at": h["created_at"].to_numpy(),
                    "source": "plan",
                    "trigger_key": ("plan:" + h["id"].astype(str)).to_numpy(dtype=object),
                    "reason": (
                        "joined plan " + h["plan_id"].astype(str) + ", which suspends customers joining it"
                    ).to_numpy(dtype=object),
                }
            )
        )
    _, _, entries = crm(cust, rnd)
    h = entries[entries["churn"] & (entries["entered_at"] >= CRM_SINCE)]
    parts.append(
        pd.DataFrame(
            {
                "customer_id": h["customer_id"].to_numpy(),
                "occurred_at": h["entered_at"].to_numpy(),
                "source": "crm_stage",
                "trigger_key": ("crm_stage:" + h["id"].astype(str)).to_numpy(dtype=object),
                "reason": (
                    "opportunity entered CRM stage " + h["stage_id"].astype(str) + " (deactivate account)"
                ).to_numpy(dtype=object),
            }
        )
    )
    out = pd.concat(parts, ignore_index=True)
    out["occurred_at"] = out["occurred_at"].astype(SEC)
    return out


def owed_from(cust: Customers, events: pd.DataFrame, rules: pd.DataFrame, at: np.datetime64) -> np.ndarray:
    """Per customer id (index 0 unused), the date from which its contracts are still owed at instant `at`
    (the cutoff of the day before): the day its current suspension began, or the day it was archived; NaT
    where nothing is pending."""
    ev = pd.concat(
        [
            events.loc[events["valid"], ["customer_id", "occurred_at", "action", "id"]],
            rules[["customer_id", "occurred_at"]].assign(action="suspend", id=np.arange(len(rules)) + 10**12),
        ],
        ignore_index=True,
    )
    ev = ev[(ev["occurred_at"] < at) & (ev["customer_id"] <= len(cust.id))]
    ev = ev.sort_values(["customer_id", "occurred_at", "id"], kind="stable")
    last = ev.groupby("customer_id").tail(1)
    suspended = last.loc[last["action"] == "suspend", "customer_id"]
    last_lift = ev[ev["action"] == "lift"].groupby("customer_id")["occurred_at"].max()
    floor = ev["customer_id"].map(last_lift)
    episode = ev[(ev["action"] == "suspend") & ~(ev["occurred_at"] <= floor)]
    begun = episode.groupby("customer_id")["occurred_at"].min()
    out = np.full(len(cust.id) + 1, np.datetime64("NaT"), dtype=DAY)
    ids = suspended.to_numpy()
    out[ids] = begun.reindex(ids).to_numpy().astype(DAY)
    archived = ~np.isnat(cust.archived) & (cust.archived < at)
    arch_day = cust.archived.astype(DAY)
    cur = out[1:]
    out[1:] = np.where(archived & (np.isnat(cur) | (arch_day < cur)), arch_day, cur)
    return out


@contextlib.contextmanager
def lifecycle_guards_off(sink: Sink):
    """The lifecycle triggers (finalized invoices are never deleted) off while the benchmark resets a database to
    a steady state; back on after.  Never done by flexbill: a benchmark database is the harness's to rewrite."""
    guarded = ("invoices", "invoice_lines", "billed_periods", "credit_notes")
    if sink.pg:
        for table in guarded:
            sink.execute(f'ALTER TABLE "{table}" DISABLE TRIGGER USER')
        yield
        for table in guarded:
            sink.execute(f'ALTER TABLE "{table}" ENABLE TRIGGER USER')
        return
    from flexbill.db.dialect import TRIGGER_SCRIPTS, statements

    for (name,) in sink.execute(
        "select name from sqlite_master where type = 'trigger' and name like 'flexbill%'"
    ).fetchall():
        sink.execute(f'DROP TRIGGER "{name}"')
    yield
    for script in TRIGGER_SCRIPTS["sqlite"]:  # every trigger dropped above, the source-change count too
        for statement in statements(script, "sqlite"):
            sink.execute(statement)


def prepare(url: str, n: int, seed: int, d: date) -> dict:
    """Put the database in the steady state of a daily schedule that billed every date before `d`."""
    t0 = time.perf_counter()
    rnd = Rand(seed)
    cust = customers(n, rnd)
    at = np.datetime64(d, "s")  # the cutoff of the run for d - 1
    rules = triggers(n, seed, cust)
    events = manual_events(cust, rnd)
    pending = owed_from(cust, events, rules, at)
    sink = Sink(url)
    sqlite = not sink.pg
    outputs = [
        "billed_periods",
        "credit_notes",
        "invoice_lines",
        "invoices",
        "number_series",
        "skipped_contracts",
        "active_user_report",
        "quarantine",
        "data_quality",
        "billing_runs",
        "contract_ledger",
        "stg_quarantine",
        "stg_checks",
        "stg_candidates",
        "stg_periods",
        "stg_status",
        "stg_ledger",
        "stg_lines",
        "stg_invoices",
        "stg_report",
        "stg_runs",
        "flexbill_state",
        "run_inputs",
    ]
    with lifecycle_guards_off(sink):  # the harness resets outputs that flexbill itself never deletes
        for table in outputs:
            sink.execute(f'DELETE FROM "{table}"')
    sink.execute("DELETE FROM suspension_events WHERE trigger_key IS NOT NULL")
    before = rules[rules["occurred_at"] < at].sort_values(["occurred_at", "trigger_key"], kind="stable")
    recorded = sink.write(
        "suspension_events",
        pd.DataFrame(
            {
                "customer_id": before["customer_id"].to_numpy(),
                "occurred_at": _ts(before["occurred_at"].to_numpy(), sqlite),
                "action": "suspend",
                "source": before["source"].to_numpy(),
                "reason": before["reason"].to_numpy(),
                "actor": None,
                "trigger_key": before["trigger_key"].to_numpy(),
            }
        ),
    )
    _say(f"{d}: {recorded:,} automatic-rule events before {d} recorded", t0)
    if sink.pg:
        sink.execute("CREATE TEMPORARY TABLE bench_nid (id integer PRIMARY KEY, nid date) ON COMMIT DROP")
    else:
        sink.execute("CREATE TEMPORARY TABLE bench_nid (id integer PRIMARY KEY, nid text)")
    d64 = np.datetime64(d, "D")
    ledger_rows = 0
    for lo in range(1, n + 1, CHUNK):
        c = contracts(lo, min(lo + CHUNK, n + 1), cust, rnd)
        customer = c["customer_id"].to_numpy()
        known = customer <= len(cust.id)
        x = np.full(len(c), d64)
        x[known] = np.where(np.isnat(pending[customer[known]]), d64, pending[customer[known]])
        start = c["start_date"].to_numpy(DAY)
        nid = first_start_on_or_after(
            start, c["months"].to_numpy(), c["weeks"].to_numpy(), c["billing_day"].to_numpy(), x
        )
        nid = np.where(start < d64, nid, np.datetime64("NaT"))
        sink.write("bench_nid", pd.DataFrame({"id": c["id"], "nid": _date(nid)}))
        keep = ~np.isnat(nid) & ~c["bad"].to_numpy()
        ledger_rows += sink.write(
            "contract_ledger",
            pd.DataFrame({"contract_id": c["id"].to_numpy()[keep], "billed_before": _date(nid[keep])}),
        )
    if sink.pg:
        sink.execute(
            "UPDATE contracts c SET next_invoice_date = b.nid FROM bench_nid b "
            "WHERE b.id = c.id AND c.next_invoice_date IS DISTINCT FROM b.nid"
        )
    else:
        sink.execute(
            "UPDATE contracts SET next_invoice_date = b.nid FROM bench_nid b "
            "WHERE b.id = contracts.id AND contracts.next_invoice_date IS NOT b.nid"
        )
        sink.execute("DROP TABLE bench_nid")
    sink.commit()
    sink.close()
    _say(f"{d}: next_invoice_date set, {ledger_rows:,} ledger cursors", t0)
    if is_pg(url):
        with pg_connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
    else:
        import sqlite3

        conn = sqlite3.connect(url.split("sqlite:///", 1)[1], isolation_level=None)
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    suspended = int((~np.isnat(pending[1:])).sum())
    _say(f"{d}: ready ({suspended:,} customers owe from before {d}: suspended or archived)", t0)
    return {"rule_events_recorded": recorded, "ledger_rows": ledger_rows, "customers_pending": suspended}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True, help="SQLAlchemy URL of an empty database (or of one loaded before)")
    ap.add_argument("--n", type=int, required=True, help="number of contracts (customers: n/2)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument(
        "--date", type=date.fromisoformat, default=FIRST_OF_MONTH, help="billing date to prepare the steady state for"
    )
    ap.add_argument("--prepare-only", action="store_true", help="do not load; only move the steady state to --date")
    args = ap.parse_args(argv)
    if not args.prepare_only:
        load(args.db, args.n, args.seed)
    prepare(args.db, args.n, args.seed, args.date)


if __name__ == "__main__":
    main()
