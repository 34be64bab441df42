"""`flexbill demo`: a synthetic operator, a 90-day backfill and what a billing operator sees.

The operator has three locations in different currencies and tax rates, ~2,000
customers and every plan kind (monthly anniversary incl. 29th-31st starts,
billing day with proration, weekly, 3- and 12-month, cancellations, quantities,
per-contract prices, next_invoice_date), every suspension source (manual suspend
and lift, signup setting, plan setting, CRM "deactivate" stage), archived
customers and a handful of contract-breaking rows.  Deterministic for a seed.
"""

from __future__ import annotations

import random
import time
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from rich.console import Console

from .db import dialect
from .db import schema as s
from .db.connect import init_db, make_engine, redact

DEMO_URL = "sqlite:///var/demo.sqlite"
WINDOW_END = date(2026, 10, 31)

LOCATIONS = [  # id, name, currency, tax rate
    (1, "Lisbon Docks", "EUR", "0.2300"),
    (2, "London Fields", "GBP", "0.2000"),
    (3, "Austin Eastside", "USD", "0.0825"),
]
# name, price, months, weeks, billing day policy, quantity range
PLAN_KINDS = [
    ("Hot desk", "149.00", 1, 0, "anniversary", (1, 1)),
    ("Dedicated desk", "289.00", 1, 0, "day1", (1, 2)),
    ("Private office", "1150.00", 1, 0, "day15", (1, 4)),
    ("Weekly pass", "45.00", 0, 1, "anniversary", (1, 1)),
    ("Quarterly membership", "399.00", 3, 0, "anniversary", (1, 1)),
    ("Annual virtual office", "990.00", 12, 0, "anniversary", (1, 1)),
    ("Founders trial", "0.00", 1, 0, "anniversary", (1, 1)),  # suspends customers joining it
]


def _stamp(rng: random.Random, first: date, last: date) -> datetime:
    days = max((last - first).days, 0)
    return datetime.combine(first, datetime.min.time()) + timedelta(
        days=rng.randint(0, days), seconds=rng.randint(8 * 3600, 19 * 3600)
    )


def build_operator(engine, customers: int, first: date, last: date, seed: int) -> dict:
    """Insert a synthetic operator whose activity spans up to `last`; returns row counts."""
    rng = random.Random(seed)
    signup_since = datetime.combine(first + timedelta(days=20), datetime.min.time())
    trial_since = datetime.combine(first + timedelta(days=10), datetime.min.time())
    deactivate_since = datetime.combine(first, datetime.min.time())
    rows: dict[str, list[dict]] = {t.name: [] for t in s.SOURCE_TABLES}
    for lid, name, cur, tax in LOCATIONS:
        rows["locations"].append(
            dict(
                id=lid,
                name=name,
                currency=cur,
                tax_rate=Decimal(tax),
                keep_new_accounts_suspended_since=signup_since if lid == 1 else None,
            )
        )
        rows["crm_boards"].append(dict(id=lid, location_id=lid, name=f"{name} sales"))
        rows["crm_stages"].append(
            dict(id=lid * 10 + 1, board_id=lid, name="Negotiation", deactivate_account_since=None)
        )
        rows["crm_stages"].append(
            dict(
                id=lid * 10 + 2,
                board_id=lid,
                name="Churned: deactivate account",
                deactivate_account_since=deactivate_since,
            )
        )
    plan_id = 0
    plans_by_loc: dict[int, list[tuple[int, tuple]]] = {}
    for lid, _, cur, _ in LOCATIONS:
        for kind in PLAN_KINDS:
            plan_id += 1
            name, price, months, weeks, _, _ = kind
            rows["plans"].append(
                dict(
                    id=plan_id,
                    location_id=lid,
                    name=name,
                    price=Decimal(price),
                    currency=cur,
                    invoice_every_months=months,
                    invoice_every_weeks=weeks,
                    suspend_customers_joining_since=trial_since if name == "Founders trial" else None,
                )
            )
            plans_by_loc.setdefault(lid, []).append((plan_id, kind))
    history_start = first - timedelta(days=730)
    contract_id = 0
    event_id = 0
    entry_id = 0
    for cid in range(1, customers + 1):
        lid = rng.choice([1, 1, 2, 2, 3])
        if cid <= 7:  # the bad rows below need a London customer and six Lisbon ones, however few customers
            lid = 2 if cid == 1 else 1
        joined_late = rng.random() < 0.12
        created = _stamp(rng, first if joined_late else history_start, last if joined_late else first)
        archived = _stamp(rng, first, last) if rng.random() < 0.03 else None
        rows["customers"].append(
            dict(
                id=cid,
                location_id=lid,
                full_name=f"Member {cid:05d}",
                email=f"member{cid}@example.com",
                created_at=created,
                archived_at=archived,
                portal_access=rng.random() < 0.8,
            )
        )
        n_contracts = 0 if rng.random() < 0.07 else (1 if rng.random() < 0.85 else 2)  # 7 % are contacts
        for _ in range(n_contracts):
            pid, kind = rng.choice(plans_by_loc[lid][:6] if rng.random() < 0.97 else plans_by_loc[lid])
            name, _, months, weeks, policy, (qmin, qmax) = kind
            start = created.date() + timedelta(days=rng.randint(0, 20))
            if rng.random() < 0.05:  # month-end starts: 29th..31st
                start = start.replace(day=28) + timedelta(days=rng.randint(1, 3))
            billing_day = {"day1": 1, "day15": 15}.get(policy)
            cancel = start + timedelta(days=rng.randint(20, 400)) if rng.random() < 0.12 else None
            contract_id += 1
            rows["contracts"].append(
                dict(
                    id=contract_id,
                    customer_id=cid,
                    plan_id=pid,
                    price=Decimal(rng.choice(["99.00", "120.50", "875.00"])) if rng.random() < 0.1 else None,
                    quantity=rng.randint(qmin, qmax),
                    start_date=start,
                    billing_day=billing_day,
                    cancellation_date=cancel,
                    next_invoice_date=first if start < first else None,
                    created_at=created,
                )
            )
        roll = rng.random()
        if roll < 0.05:  # suspended by an admin during the window, half of them lifted later
            at = _stamp(rng, first, last - timedelta(days=15))
            event_id += 1
            rows["suspension_events"].append(
                dict(
                    id=event_id,
                    customer_id=cid,
                    occurred_at=max(at, created),
                    action="suspend",
                    source="manual",
                    reason="payment overdue",
                    actor="billing@operator.example",
                    trigger_key=None,
                )
            )
            if rng.random() < 0.5:
                event_id += 1
                rows["suspension_events"].append(
                    dict(
                        id=event_id,
                        customer_id=cid,
                        occurred_at=max(at, created) + timedelta(days=rng.randint(5, 40)),
                        action="lift",
                        source="manual",
                        reason="paid in full",
                        actor="billing@operator.example",
                        trigger_key=None,
                    )
                )
        elif roll < 0.07:  # opportunity moved to the deactivating CRM stage
            entry_id += 1
            rows["crm_stage_entries"].append(
                dict(id=entry_id, customer_id=cid, stage_id=lid * 10 + 2, entered_at=_stamp(rng, first, last))
            )
        elif roll < 0.09:
            entry_id += 1
            rows["crm_stage_entries"].append(
                dict(id=entry_id, customer_id=cid, stage_id=lid * 10 + 1, entered_at=_stamp(rng, first, last))
            )
    # Lift some signup-suspended customers of Lisbon, so their periods are back-billed.
    for c in rows["customers"]:
        if c["location_id"] == 1 and c["created_at"] >= signup_since and rng.random() < 0.5:
            event_id += 1
            rows["suspension_events"].append(
                dict(
                    id=event_id,
                    customer_id=c["id"],
                    occurred_at=c["created_at"] + timedelta(days=rng.randint(3, 20)),
                    action="lift",
                    source="manual",
                    reason="ID checked",
                    actor="frontdesk@operator.example",
                    trigger_key=None,
                )
            )
    _add_bad_rows(rows, plan_id, contract_id, customers, event_id, first)
    for event in rows["suspension_events"]:  # the database numbers events, as it does for the pipeline's own
        event.pop("id")
    rows["suspension_events"].sort(key=lambda e: e["occurred_at"])
    with engine.begin() as conn:
        for table in s.SOURCE_TABLES:
            dialect.insert_rows(conn, table, rows[table.name])
    return {name: len(r) for name, r in rows.items()}


def _add_bad_rows(rows: dict, plan_id: int, contract_id: int, customers: int, event_id: int, first: date) -> None:
    """A handful of contract-breaking rows, as operators' databases have."""
    t = datetime.combine(first - timedelta(days=3), datetime.min.time())
    rows["plans"].append(
        dict(
            id=plan_id + 1,
            location_id=2,
            name="Legacy desk (bad price)",
            price=Decimal("-10.00"),
            currency="GBP",
            invoice_every_months=1,
            invoice_every_weeks=0,
            suspend_customers_joining_since=None,
        )
    )
    rows["plans"].append(
        dict(
            id=plan_id + 2,
            location_id=3,
            name="Imported plan (wrong currency)",
            price=Decimal("100.00"),
            currency="EUR",
            invoice_every_months=1,
            invoice_every_weeks=0,
            suspend_customers_joining_since=None,
        )
    )
    by_location = {}
    for c in rows["customers"]:
        by_location.setdefault(c["location_id"], []).append(c["id"])
    lisbon, london = by_location[1], by_location[2]  # plans 1..7 are Lisbon's, 8..14 London's
    bad = [
        dict(customer_id=london[0], plan_id=plan_id + 1, quantity=1, billing_day=None, start=first),  # quarantined plan
        dict(customer_id=london[0], plan_id=8, quantity=1, billing_day=None, start=first),  # (a good one beside it)
        dict(customer_id=lisbon[0], plan_id=1, quantity=0, billing_day=None, start=first),  # zero quantity
        dict(customer_id=lisbon[1], plan_id=2, quantity=1, billing_day=31, start=first),  # billing day out of range
        dict(customer_id=lisbon[2], plan_id=4, quantity=1, billing_day=5, start=first),  # billing day on a weekly plan
        dict(customer_id=customers + 50, plan_id=1, quantity=1, billing_day=None, start=first),  # missing customer
        dict(
            customer_id=lisbon[3],
            plan_id=1,
            quantity=1,
            billing_day=None,
            start=first,
            cancel=first - timedelta(days=9),
        ),  # cancelled before it starts
        dict(customer_id=lisbon[4], plan_id=8, quantity=1, billing_day=None, start=first),  # GBP plan, EUR customer
    ]
    for i, b in enumerate(bad, start=1):
        rows["contracts"].append(
            dict(
                id=contract_id + i,
                customer_id=b["customer_id"],
                plan_id=b["plan_id"],
                price=None,
                quantity=b["quantity"],
                start_date=b["start"],
                billing_day=b["billing_day"],
                cancellation_date=b.get("cancel"),
                next_invoice_date=None,
                created_at=t,
            )
        )
    rows["customers"].append(
        dict(
            id=customers + 1,
            location_id=9,
            full_name="Orphan member",
            email=None,
            created_at=t,
            archived_at=None,
            portal_access=True,
        )
    )
    rows["suspension_events"].append(
        dict(
            id=event_id + 1,
            customer_id=lisbon[5],
            occurred_at=t,
            action="lift",
            source="plan",
            reason="auto-lift by an old script",
            actor=None,
            trigger_key=None,
        )
    )


BAD_PRICE_PLAN = "Legacy desk (bad price)"
FIXED_PRICE = Decimal("95.00")
FINANCE = "finance@operator.example"


def correct_bad_plan(engine, last: date, console: Console) -> list[date]:
    """The demo's data fix: the quarantined plan gets its real price and the dates its contract owed on are rerun.
    Their finalized invoices are credited and replaced by corrective invoices; returns the dates rerun."""
    from sqlalchemy import select, update

    from . import periods as P
    from .runner import run_billing_date

    with engine.begin() as conn:
        plan_id, price = conn.execute(
            select(s.plans.c.id, s.plans.c.price).where(s.plans.c.name == BAD_PRICE_PLAN)
        ).one()
        starts = sorted(
            {d for (d,) in conn.execute(select(s.contracts.c.start_date).where(s.contracts.c.plan_id == plan_id)).all()}
        )
        conn.execute(update(s.plans).where(s.plans.c.id == plan_id).values(price=FIXED_PRICE))
    dates = sorted({p.start for start in starts for p in P.periods(P.Terms(start_date=start), last)})
    console.print(
        f"\n[bold]A data fix[/]: plan {plan_id} '{BAD_PRICE_PLAN}' had price {price} (quarantined); "
        f"finance corrects it to {FIXED_PRICE} and reruns the dates its contract owed on: "
        f"{', '.join(map(str, dates))}"
    )
    for d in dates:
        run_billing_date(engine, d)
    return dates


def _require_empty(engine, url: str) -> None:
    """The demo builds its own operator: it refuses a database that already holds one (it would mix the two)."""
    from sqlalchemy import func, select

    from .errors import InputError

    with engine.connect() as conn:
        held = {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in s.SOURCE_TABLES}
    held = {name: n for name, n in held.items() if n}
    if held:
        rows = ", ".join(f"{n} {name}" for name, n in held.items())
        raise InputError(
            f"the demo builds its own operator, and {redact(url)} already holds data ({rows}): give it "
            "an empty database with --db, or leave --db out (var/demo.sqlite is recreated each time)"
        )


def run_demo(url: str | None, days: int, customers: int, seed: int, console: Console, progress_console: Console):
    """Build and backfill the demo operator, print the operator summary; returns (engine, last billing date)."""
    from . import summary
    from .clock import utcnow
    from .invoicing import finalize
    from .runner import backfill

    url = url or DEMO_URL
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url == DEMO_URL:
        for suffix in ("", "-wal", "-shm"):
            Path(f"var/demo.sqlite{suffix}").unlink(missing_ok=True)
    engine = make_engine(url)
    init_db(engine)
    _require_empty(engine, url)
    first = WINDOW_END - timedelta(days=days - 1)
    t0 = time.perf_counter()
    counts = build_operator(engine, customers, first, WINDOW_END, seed)
    console.print(
        f"[bold]flexbill demo[/] in {redact(url)}: {counts['locations']} locations, "
        f"{counts['customers']} customers, {counts['contracts']} contracts, {counts['plans']} plans, "
        f"{counts['suspension_events']} suspension events, {counts['crm_stage_entries']} CRM stage entries "
        f"[{time.perf_counter() - t0:.1f}s]"
    )
    t1 = time.perf_counter()
    with summary.backfill_bar(progress_console) as bar:
        task = bar.add_task("", total=days)
        backfill(
            engine, first, WINDOW_END, progress=lambda r: bar.update(task, advance=1, description=f"{r.billing_date}")
        )
    console.print(f"backfilled {days} billing dates {first} .. {WINDOW_END} in {time.perf_counter() - t1:.1f}s\n")
    summary.print_summary(engine, first, WINDOW_END, console)
    rerun = correct_bad_plan(engine, WINDOW_END, console)
    with engine.begin() as conn:  # FLEXBILL_GRACE_DAYS > 0 leaves drafts: finance approves the window
        dialect.lock_for_run(conn)
        done = finalize(conn, WINDOW_END, FINANCE, utcnow())
    if done.count:
        console.print(f"{FINANCE} finalized {done.count} draft invoices through {WINDOW_END}")
    with engine.connect() as conn:
        summary.print_corrections(conn, rerun[0], rerun[-1], console)
        for line in summary.lifecycle_lines(conn, first, WINDOW_END):
            console.print(line)
    return engine, WINDOW_END
