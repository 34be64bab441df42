"""The fixture operator of the Celery tests: three locations, each with a few customers of every kind.

Built with tests.builders.Operator, so every row is visible here.  Billing dates
around a month end (2026-03-31 .. 2026-04-04) give each date something to do:
backlogs on the first date, billing-day-1 contracts on 1 April, weekly periods,
a lift that back-bills on 1 April, rules that suspend, a bad plan quarantined.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from flexbill.db import schema as s
from flexbill.db.connect import init_db, make_engine
from tests.builders import Operator

FIRST = date(2026, 3, 31)
DATES = [FIRST + timedelta(days=i) for i in range(5)]  # 2026-03-31 .. 2026-04-04
LOCATIONS = (1, 2, 3)

# The data fix of the rerun scenario (only 1 April onwards is affected, see apply_fix):
FIXED_CONTRACT, FIXED_PRICE = 104, "130.00"  # its first period starts on 1 April
LATE_CONTRACT = 199  # recorded late, created_at in March


def build(url: str):
    """A fresh database at `url` with flexbill's schema and the fixture operator; returns its engine."""
    engine = make_engine(url)
    init_db(engine)
    op = Operator(engine)
    t0 = datetime(2026, 1, 1)

    # ---- location 1 (EUR): the signup setting suspends customers created from 20 March on
    op.location(1, currency="EUR", tax_rate="0.2000", keep_new_accounts_suspended_since=datetime(2026, 3, 20))
    op.plan(11, price="100.00", location_id=1)  # monthly
    op.plan(12, price="25.00", location_id=1, months=0, weeks=1)  # weekly
    op.plan(13, price="270.00", location_id=1, months=3)  # quarterly
    op.customer(101, location_id=1, created_at=t0)
    op.contract(101, 101, 11, date(2026, 1, 31), created_at=t0)  # anniversary, clamps to month ends
    op.customer(102, location_id=1, created_at=t0)
    op.contract(102, 102, 12, date(2026, 3, 2), created_at=t0)  # weekly backlog on the first date
    op.customer(103, location_id=1, created_at=t0)
    op.contract(103, 103, 13, date(2026, 1, 1), created_at=t0, quantity=2)
    op.contract(104, 103, 11, date(2026, 4, 1), billing_day=1, created_at=datetime(2026, 3, 10))
    op.customer(105, location_id=1, created_at=datetime(2026, 3, 25))  # suspended on signup
    op.contract(105, 105, 11, date(2026, 3, 25), created_at=datetime(2026, 3, 25))
    op.customer(106, location_id=1, created_at=t0, archived_at=datetime(2026, 3, 15))
    op.contract(106, 106, 11, date(2026, 1, 10), created_at=t0)

    # ---- location 2 (GBP): a plan that suspends new joiners; a manual suspension lifted on 1 April
    op.location(2, currency="GBP", tax_rate="0.2000")
    op.plan(21, price="80.00", location_id=2, currency="GBP")
    op.plan(22, price="150.00", location_id=2, currency="GBP", suspend_customers_joining_since=datetime(2026, 4, 1))
    op.plan(23, price="40.00", location_id=2, currency="EUR")  # bad: not the location's currency
    op.customer(201, location_id=2, created_at=t0)
    op.contract(201, 201, 21, date(2026, 2, 15), billing_day=1, created_at=t0)
    op.customer(202, location_id=2, created_at=t0)
    op.contract(202, 202, 21, date(2026, 1, 5), created_at=t0, price="75.50")
    op.event(202, datetime(2026, 2, 20), "suspend", reason="card declined")
    op.event(202, datetime(2026, 4, 1, 12), "lift", reason="paid")  # back-billed on 1 April
    op.customer(203, location_id=2, created_at=t0)
    op.contract(203, 203, 22, date(2026, 4, 1), created_at=datetime(2026, 4, 1, 10))  # plan rule, 1 April
    op.customer(204, location_id=2, created_at=t0)
    op.contract(204, 204, 23, date(2026, 3, 1), created_at=t0)  # on the bad plan: quarantined
    op.contract(205, 201, 21, date(2026, 3, 3), created_at=t0, cancellation_date=date(2026, 4, 20))
    op.customer(206, location_id=2, created_at=t0)
    op.contract(206, 206, 21, date(2026, 3, 4), created_at=t0)  # anniversary on the 4th

    # ---- location 3 (USD): a CRM stage that deactivates accounts
    op.location(3, currency="USD", tax_rate="0.0825")
    op.plan(31, price="60.00", location_id=3, currency="USD")
    op.plan(32, price="15.00", location_id=3, currency="USD", months=0, weeks=2)
    op.plan(33, price="20.00", location_id=3, currency="USD", months=0, weeks=1)
    op.board(1, location_id=3)
    op.stage(1, board_id=1, name="Churned", deactivate_account_since=datetime(2026, 1, 1))
    op.customer(301, location_id=3, created_at=t0)
    op.contract(301, 301, 31, date(2026, 3, 31), created_at=t0)
    op.customer(302, location_id=3, created_at=t0)
    op.contract(302, 302, 32, date(2026, 3, 16), created_at=t0)
    op.customer(303, location_id=3, created_at=t0)
    op.contract(303, 303, 31, date(2026, 2, 2), created_at=t0)
    op.entry(1, 303, 1, datetime(2026, 4, 2, 9))  # deactivated on 2 April
    op.customer(304, location_id=3, created_at=t0, portal_access=False)
    op.contract(304, 304, 31, date(2026, 4, 3), billing_day=3, created_at=datetime(2026, 3, 1), quantity=3)
    op.customer(305, location_id=3, created_at=t0)
    op.contract(305, 305, 33, date(2026, 3, 21), created_at=t0)  # weekly: 28 March, 4 April
    return engine


def apply_fix(engine) -> None:
    """The data fix an analyst reruns April for: contract 104's negotiated price was never entered,
    and a contract signed in March (customer 101, from 1 April) was recorded late."""
    op = Operator(engine)
    with engine.begin() as conn:
        conn.execute(s.contracts.update().where(s.contracts.c.id == FIXED_CONTRACT).values(price=FIXED_PRICE))
    op.contract(LATE_CONTRACT, 101, 12, date(2026, 4, 1), created_at=datetime(2026, 3, 12))
