"""Automatic suspension rules (contract, "One run", step 1), end to end on SQLite and PostgreSQL.

Each trigger before the cutoff (D+1 00:00 UTC) whose trigger_key is not yet in
suspension_events appends exactly one `suspend` event at the trigger's own
instant; rules never lift and ignore quarantined rows.
"""

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import update

from flexbill.db import schema as s
from flexbill.manual import record_manual_event
from flexbill.runner import run_billing_date
from tests.builders import Operator


def events(op):
    """Every suspension event as (customer_id, occurred_at, action, source, trigger_key), in time order."""
    rows = sorted(op.rows(s.suspension_events), key=lambda e: (e["occurred_at"], e["id"]))
    return [(e["customer_id"], e["occurred_at"], e["action"], e["source"], e["trigger_key"]) for e in rows]


def skips(op, d):
    return sorted(
        (r["contract_id"], r["reason"], r["owed_periods"]) for r in op.rows(s.skipped_contracts, billing_date=d)
    )


def lines(op, d):
    return [(r["contract_id"], r["period_start"], r["amount"]) for r in op.lines(d)]


def test_signup_rule_suspends_customers_created_at_or_after_the_setting_once(engine):
    op = Operator(engine)
    since = datetime(2024, 1, 10)
    op.location(1, keep_new_accounts_suspended_since=since)
    op.plan(1, price="100.00")
    # customer 1: created one second before the setting -> never suspended
    op.customer(1, created_at=datetime(2024, 1, 9, 23, 59, 59))
    # customer 2: created exactly at the setting's instant -> suspended ("at or after")
    op.customer(2, created_at=since)
    # customer 3: created later, with microseconds: the event must carry the very same instant
    c3_at = datetime(2024, 1, 12, 8, 30, 15, 123456)
    op.customer(3, created_at=c3_at)
    # customer 4: created at 2024-01-16 00:00 = the cutoff of D = 2024-01-15 -> not seen on the 15th, fires on the 16th
    c4_at = datetime(2024, 1, 16)
    op.customer(4, created_at=c4_at)
    # monthly contracts (created with their customers) to see the effect on invoicing
    op.contract(1, 1, 1, start_date=date(2024, 1, 10), created_at=datetime(2024, 1, 9, 23, 59, 59))
    op.contract(2, 2, 1, start_date=date(2024, 1, 10), created_at=since)

    d1, d2 = date(2024, 1, 15), date(2024, 1, 16)
    run_billing_date(engine, d1)
    expected_d1 = [
        (2, since, "suspend", "signup", "signup:2"),
        (3, c3_at, "suspend", "signup", "signup:3"),
    ]
    assert events(op) == expected_d1
    # customer 1 is billed (period [01-10, 02-10) = 100.00), customer 2 is suspended since 01-10 00:00:
    # its contract 2 owes one period (01-10) and is skipped
    assert lines(op, d1) == [(1, date(2024, 1, 10), Decimal("100.00"))]
    assert skips(op, d1) == [(2, "suspended", 1)]

    run_billing_date(engine, d1)  # rerun: the triggers are recorded, nothing new
    assert events(op) == expected_d1

    run_billing_date(engine, d2)  # customer 4 now exists (created at 01-16 00:00 < cutoff 01-17 00:00)
    expected_d2 = expected_d1 + [(4, c4_at, "suspend", "signup", "signup:4")]
    assert events(op) == expected_d2

    run_billing_date(engine, d1)  # an old date after a later one: still exactly one event per trigger
    assert events(op) == expected_d2
    assert skips(op, d1) == [(2, "suspended", 1)]


def test_plan_rule_suspends_on_contracts_created_at_or_after_the_plan_setting_once(engine):
    op = Operator(engine)
    since = datetime(2024, 2, 1)
    op.location(1)
    op.plan(1, price="100.00", suspend_customers_joining_since=since)  # suspending plan
    op.plan(2, price="100.00")  # ordinary plan
    for cid in (1, 2, 3, 4):
        op.customer(cid)
    # contract 10: suspending plan, created one second before the setting -> nothing
    op.contract(10, 1, 1, start_date=date(2024, 2, 1), created_at=datetime(2024, 1, 31, 23, 59, 59))
    # contracts 11 and 15: customer 2 joins the suspending plan twice -> two triggers, two events
    op.contract(11, 2, 1, start_date=date(2024, 2, 1), created_at=since)
    op.contract(15, 2, 1, start_date=date(2024, 2, 3), created_at=datetime(2024, 2, 3, 14, 0))
    # contract 12: ordinary plan -> nothing
    op.contract(12, 3, 2, start_date=date(2024, 2, 3), created_at=datetime(2024, 2, 3))
    # contract 13: created at 2024-02-05 00:00 = the cutoff of D = 2024-02-04 -> fires on the 5th only
    c13_at = datetime(2024, 2, 5)
    op.contract(13, 4, 1, start_date=date(2024, 2, 5), created_at=c13_at)

    d1, d2 = date(2024, 2, 4), date(2024, 2, 5)
    run_billing_date(engine, d1)
    expected_d1 = [
        (2, since, "suspend", "plan", "plan:11"),
        (2, datetime(2024, 2, 3, 14, 0), "suspend", "plan", "plan:15"),
    ]
    assert events(op) == expected_d1
    run_billing_date(engine, d1)
    assert events(op) == expected_d1
    run_billing_date(engine, d2)
    expected_d2 = expected_d1 + [(4, c13_at, "suspend", "plan", "plan:13")]
    assert events(op) == expected_d2
    run_billing_date(engine, d1)
    assert events(op) == expected_d2
    # on D = 02-04 customer 2 is suspended (contracts 11: period 02-01, 15: period 02-03, one owed each),
    # customer 1 (contract 10, 100.00) and customer 3 (contract 12, 100.00) are billed
    assert skips(op, d1) == [(11, "suspended", 1), (15, "suspended", 1)]
    assert lines(op, d1) == [(10, date(2024, 2, 1), Decimal("100.00")), (12, date(2024, 2, 3), Decimal("100.00"))]


def test_crm_stage_rule_suspends_on_entries_at_or_after_the_stage_setting_once(engine):
    op = Operator(engine)
    since = datetime(2024, 3, 1)
    op.location(1)
    op.board(1, location_id=1)
    op.stage(1, board_id=1, name="Lost", deactivate_account_since=since)  # "Deactivate account" stage
    op.stage(2, board_id=1, name="Won")  # no action
    for cid in (1, 2, 3, 4):
        op.customer(cid)
    op.entry(1, 1, 1, entered_at=datetime(2024, 2, 29, 23, 59, 59))  # before the setting -> nothing
    op.entry(2, 2, 1, entered_at=since)  # at the setting -> crm_stage:2 at 03-01 00:00
    op.entry(3, 3, 2, entered_at=datetime(2024, 3, 2))  # stage without the action -> nothing
    op.entry(6, 2, 1, entered_at=datetime(2024, 3, 2, 7, 45))  # same customer enters again -> its own event
    e4_at = datetime(2024, 3, 4)  # = the cutoff of D = 2024-03-03 -> fires on the 4th only
    op.entry(4, 4, 1, entered_at=e4_at)

    d1, d2 = date(2024, 3, 3), date(2024, 3, 4)
    run_billing_date(engine, d1)
    expected_d1 = [
        (2, since, "suspend", "crm_stage", "crm_stage:2"),
        (2, datetime(2024, 3, 2, 7, 45), "suspend", "crm_stage", "crm_stage:6"),
    ]
    assert events(op) == expected_d1
    run_billing_date(engine, d1)
    assert events(op) == expected_d1
    run_billing_date(engine, d2)
    expected_d2 = expected_d1 + [(4, e4_at, "suspend", "crm_stage", "crm_stage:4")]
    assert events(op) == expected_d2
    run_billing_date(engine, d1)
    assert events(op) == expected_d2


def test_rules_never_lift_and_do_not_refire_after_a_manual_lift(engine):
    op = Operator(engine)
    op.location(1, keep_new_accounts_suspended_since=datetime(2024, 1, 1))
    op.plan(1, price="100.00")
    joined = datetime(2024, 1, 5, 9, 0)
    op.customer(1, created_at=joined)
    op.contract(1, 1, 1, start_date=date(2024, 1, 5), created_at=joined)

    run_billing_date(engine, date(2024, 1, 5))
    signup = (1, joined, "suspend", "signup", "signup:1")
    assert events(op) == [signup]
    assert skips(op, date(2024, 1, 5)) == [(1, "suspended", 1)]  # period 01-05 owed

    # the operator turns the signup setting off: the trigger no longer holds, but nothing lifts
    with engine.begin() as conn:
        conn.execute(update(s.locations).values(keep_new_accounts_suspended_since=None))
    run_billing_date(engine, date(2024, 2, 5))
    assert events(op) == [signup]
    assert skips(op, date(2024, 2, 5)) == [(1, "suspended", 2)]  # 01-05 and 02-05 owed
    assert op.lines() == []

    # setting back on; only a manual lift ends the suspension
    with engine.begin() as conn:
        conn.execute(update(s.locations).values(keep_new_accounts_suspended_since=datetime(2024, 1, 1)))
    lifted = datetime(2024, 2, 10, 12, 0)
    record_manual_event(engine, 1, "lift", "admin@x.io", "paid", lifted, backdate=True)
    run_billing_date(engine, date(2024, 3, 5))
    run_billing_date(engine, date(2024, 3, 5))  # rerun: signup:1 is recorded, the rule does not fire again
    assert events(op) == [signup, (1, lifted, "lift", "manual", None)]
    # back-billing: 01-05, 02-05, 03-05, 100.00 each
    assert lines(op, date(2024, 3, 5)) == [
        (1, date(2024, 1, 5), Decimal("100.00")),
        (1, date(2024, 2, 5), Decimal("100.00")),
        (1, date(2024, 3, 5), Decimal("100.00")),
    ]
    assert skips(op, date(2024, 3, 5)) == []


def test_rules_ignore_quarantined_rows(engine):
    op = Operator(engine)
    t = datetime(2024, 1, 5)
    op.location(1, currency="EUR")
    # location 2: tax_rate 1.5 is outside 0..1 -> quarantined; its signup setting must not fire
    op.location(2, currency="EUR", tax_rate="1.5000", keep_new_accounts_suspended_since=datetime(2024, 1, 1))
    op.customer(20, location_id=2, created_at=t)  # depends on quarantined location 2 -> quarantined
    # plan 1: valid suspending plan; plan 2: suspending but USD at an EUR location -> quarantined
    op.plan(1, suspend_customers_joining_since=datetime(2024, 1, 1))
    op.plan(2, currency="USD", suspend_customers_joining_since=datetime(2024, 1, 1))
    for cid in (1, 2, 3, 4, 5):
        op.customer(cid)
    op.contract(30, 1, 1, start_date=date(2024, 1, 5), quantity=-1, created_at=t)  # negative quantity
    op.contract(31, 2, 2, start_date=date(2024, 1, 5), created_at=t)  # on quarantined plan 2
    op.contract(32, 3, 1, start_date=date(2024, 1, 5), created_at=t)  # valid: the control, fires
    # CRM: stage 1 deactivates; stage 2 sits on a board that does not exist -> quarantined
    op.board(1, location_id=1)
    op.stage(1, board_id=1, deactivate_account_since=datetime(2024, 1, 1))
    op.stage(2, board_id=9, deactivate_account_since=datetime(2024, 1, 1))
    op.entry(40, 4, 99, entered_at=t)  # stage 99 does not exist -> quarantined
    op.entry(41, 5, 2, entered_at=t)  # on quarantined stage 2 -> quarantined
    # quarantined customer 20 joins the suspending plan 1 and enters the deactivating stage 1: both ignored
    op.contract(33, 20, 1, start_date=date(2024, 1, 5), created_at=t)
    op.entry(42, 20, 1, entered_at=t)

    run_billing_date(engine, date(2024, 1, 10))
    quarantined = {(q["source_table"], q["row_id"]) for q in op.rows(s.quarantine, billing_date=date(2024, 1, 10))}
    assert quarantined >= {
        ("locations", 2),
        ("customers", 20),
        ("plans", 2),
        ("contracts", 30),
        ("contracts", 31),
        ("crm_stages", 2),
        ("crm_stage_entries", 40),
        ("crm_stage_entries", 41),
        ("contracts", 33),
    }
    # only the valid contract 32 triggers; no event for customers 1, 2, 4, 5, 20 (entry 42 names quarantined
    # customer 20: whether or not the entry itself is quarantined, the rule must not fire for it)
    assert events(op) == [(3, t, "suspend", "plan", "plan:32")]
