"""Property tests: the vectorised engine (flexbill.rules, flexbill.billing) equals the pure reference core.

`flexbill.suspension.is_suspended` and `flexbill.periods.owed_periods` are the references, one customer or one
contract at a time; production decides with `rules.suspended_at` and `billing.bill_date` (or the three steps
`owed_periods` -> `suspension_filter` -> `build_invoices` mapped over locations), frames in and frames out.
(`test_periods_properties.py` already proves `flexbill.vector` against `flexbill.periods`.)

No database and no Airflow: the little of the database a run reads and writes -- the ledger cursors
(`contract_ledger`) and the live lines (`billed_periods` joined to `invoices`) -- is simulated by `Db` below, the
way `publishing.publish` applies a date (rewind the cursors of D's lines, replace D's lines, upsert the cursors).  Its
line store is keyed by (contract, period_start) and refuses a second line, as billed_periods' primary key does.

Source frames are built with the dtypes `db.extract` gives (Int64 ids, datetime64[s] dates, datetime64[us]
timestamps, exact integer cents as Python ints in object columns).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flexbill import billing, rules
from flexbill.money import from_cents, tax_on, to_cents
from flexbill.periods import Terms, next_period_start, owed_periods
from flexbill.suspension import Event, is_suspended

# One run of a date costs ~0.1 s of pandas whatever its size, so the billing properties draw fewer, richer
# examples (several customers, contracts and prior states each) to keep the file well under a minute.
_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]
SUSPENSION_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=_SLOW)
NARRATIVE_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=_SLOW)
DATE_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=_SLOW)
RERUN_SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=_SLOW)
SEQUENCE_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=_SLOW)

SOURCES = ["manual", "signup", "plan", "crm_stage"]
T0 = datetime(2024, 3, 1, 12, 0, 0)
US = timedelta(microseconds=1)


def cutoff(d: date) -> datetime:
    """D+1 00:00 UTC (naive UTC), computed here rather than borrowed from the code under test."""
    return datetime.combine(d, time()) + timedelta(days=1)


def as_date(x) -> date:
    return pd.Timestamp(x).date()


# =========================================================================== 1. suspension state


def events_frame(events: list[Event]) -> pd.DataFrame:
    """The suspension_events frame as extract.read_table types it (Int64 ids, datetime64[us] instants)."""
    return pd.DataFrame(
        {
            "id": pd.array([e.id for e in events], dtype="Int64"),
            "customer_id": pd.array([e.customer_id for e in events], dtype="Int64"),
            "occurred_at": pd.Series([e.occurred_at for e in events], dtype="datetime64[us]"),
            "action": pd.Series([e.action for e in events], dtype=object),
            "source": pd.Series([e.source for e in events], dtype=object),
            "reason": pd.Series([None] * len(events), dtype=object),
            "actor": pd.Series([None] * len(events), dtype=object),
            "trigger_key": pd.Series([None] * len(events), dtype=object),
        }
    )


def state_of(series: pd.Series, customer_id: int) -> bool:
    """How production reads suspended_at's answer (billing.suspension_filter, report): missing = not suspended."""
    if customer_id not in series.index:
        return False
    return bool(series.loc[customer_id])


@st.composite
def event_logs(draw):
    """A random log: few distinct instants (many ties), ids unrelated to time or row order, every source,
    occasionally a lift with an automatic source (a bad row validation quarantines: both functions must still
    agree on it), and a cutoff often exactly on an event's instant."""
    n_customers = draw(st.integers(1, 5))
    hours = draw(st.lists(st.integers(0, 96), min_size=1, max_size=6, unique=True))
    instants = [T0 + timedelta(hours=h) for h in hours]
    instant = st.one_of(
        st.sampled_from(instants),
        st.sampled_from(instants).map(lambda t: t + US),
        st.integers(-10, 110 * 3600).map(lambda s: T0 + timedelta(seconds=s)),
    )
    n = draw(st.integers(0, 24))
    ids = draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n, unique=True))
    events = []
    for event_id in ids:
        action = draw(st.sampled_from(["suspend", "lift"]))
        if action == "lift":
            source = draw(st.sampled_from(["manual"] * 9 + ["signup", "plan", "crm_stage"]))
        else:
            source = draw(st.sampled_from(SOURCES))
        events.append(
            Event(
                id=event_id,
                customer_id=draw(st.integers(1, n_customers)),
                occurred_at=draw(instant),
                action=action,
                source=source,
            )
        )
    at = draw(
        st.one_of(
            st.sampled_from(instants),
            st.sampled_from(instants).map(lambda t: t + US),
            st.sampled_from(instants).map(lambda t: t - US),
            instant,
        )
    )
    return n_customers, events, at


@SUSPENSION_SETTINGS
@given(log=event_logs())
@example(log=(1, [Event(4, 1, T0, "lift"), Event(3, 1, T0, "suspend", "plan")], T0 + US))  # tie: id 4 wins
@example(log=(1, [Event(3, 1, T0, "lift"), Event(4, 1, T0, "suspend", "crm_stage")], T0 + US))
@example(log=(1, [Event(9, 1, T0, "suspend"), Event(5, 1, T0 + US, "lift")], T0 + 2 * US))  # time beats id
@example(log=(1, [Event(1, 1, T0, "suspend", "signup"), Event(2, 1, T0 + US, "lift")], T0 + US))  # lift at cutoff
@example(log=(2, [], T0))
def test_suspended_at_equals_is_suspended_for_every_customer(log):
    n_customers, events, at = log
    got = rules.suspended_at(events_frame(events), at)
    assert got.index.is_unique
    seen = {e.customer_id for e in events if e.occurred_at < at}
    assert {int(c) for c in got.index} == seen  # one answer per customer with an event before the cutoff
    for customer_id in range(1, n_customers + 1):
        mine = [e for e in events if e.customer_id == customer_id]
        assert state_of(got, customer_id) == is_suspended(mine, at), (customer_id, mine, at)


@st.composite
def appended_logs(draw):
    """A log as flexbill appends it: in time order (ties when the gap is 0), ids in append order, manual suspends
    and lifts mixed with automatic suspends from every rule; automatic 'lifts' are drawn too (bad rows)."""
    n_customers = draw(st.integers(1, 3))
    steps = draw(
        st.lists(
            st.tuples(
                st.integers(1, n_customers),
                st.sampled_from(["suspend", "suspend", "lift", "lift", "auto_lift"]),
                st.sampled_from(SOURCES),
                st.sampled_from([0, 0, 1, 1000, 3600, 86400]),
            ),
            max_size=14,
        )
    )
    t, events = T0, []
    for event_id, (customer_id, kind, source, gap) in enumerate(steps, start=1):
        t += timedelta(microseconds=gap) if gap < 10 else timedelta(seconds=gap)
        if kind == "lift":
            source = "manual"
        elif kind == "auto_lift":
            source = source if source != "manual" else "crm_stage"
        events.append(Event(event_id, customer_id, t, "lift" if kind != "suspend" else "suspend", source))
    return n_customers, events


@NARRATIVE_SETTINGS
@given(log=appended_logs())
def test_only_a_manual_lift_ends_a_suspension_whatever_started_it(log):
    """The contract's narrative, replayed event by event, against suspended_at at every instant of the log.

    A suspend from any source suspends (again or still); only a manual lift ends it; rules never lift.  A lift
    with an automatic source is a bad row that validation quarantines before suspended_at runs (tested in
    tests/integration/test_quarantine.py); here it is dropped the same way, and the narrative ignores it."""
    n_customers, events = log
    valid = [e for e in events if not (e.action == "lift" and e.source != "manual")]
    frame = events_frame(valid)
    instants = sorted({e.occurred_at for e in events} | {T0})
    for at in [c for t in instants for c in (t, t + US)]:
        got = rules.suspended_at(frame, at)
        for customer_id in range(1, n_customers + 1):
            state = False
            for e in events:  # append order is (occurred_at, id) order
                if e.customer_id != customer_id or e.occurred_at >= at:
                    continue
                if e.action == "suspend":
                    state = True
                elif e.source == "manual":
                    state = False
            assert state_of(got, customer_id) == state, (customer_id, at, events)
            assert is_suspended([e for e in valid if e.customer_id == customer_id], at) == state


# =========================================================================== worlds: frames and their reference


@st.composite
def dates(draw, lo_year=2001, hi_year=2038):
    year = draw(st.integers(lo_year, hi_year))
    month = draw(st.integers(1, 12))
    last = calendar.monthrange(year, month)[1]
    day = draw(st.one_of(st.integers(1, last), st.sampled_from([1, 28, 29, 30, 31])))
    return date(year, month, min(day, last))


@dataclass
class World:
    """Valid source frames (as the quarantine leaves them) and, per contract, what the reference needs."""

    valid: dict
    terms: dict = field(default_factory=dict)  # contract_id -> periods.Terms
    unit_cents: dict = field(default_factory=dict)  # contract_id -> unit price in cents
    quantity: dict = field(default_factory=dict)
    customer_of: dict = field(default_factory=dict)  # contract_id -> customer_id
    location_of: dict = field(default_factory=dict)  # customer_id -> location_id
    archived_at: dict = field(default_factory=dict)  # customer_id -> datetime | None
    tax_e4: dict = field(default_factory=dict)  # location_id -> tax rate in 1/10000
    currency: dict = field(default_factory=dict)  # location_id -> currency

    @property
    def customers(self) -> list[int]:
        return sorted(self.location_of)

    def amount_cents(self, contract_id: int, period) -> int:
        return to_cents(period.amount(from_cents(self.unit_cents[contract_id]), self.quantity[contract_id]))

    def billable(self, customer_id: int, d: date, suspended: set[int]) -> str:
        """'' (bill), 'archived' or 'suspended' on D: the contract's rule, archived first."""
        archived = self.archived_at[customer_id]
        if archived is not None and archived < cutoff(d):
            return "archived"
        return "suspended" if customer_id in suspended else ""


def _ints(values) -> pd.arrays.IntegerArray:
    return pd.array(list(values), dtype="Int64")


def _days(values) -> pd.Series:
    return pd.Series([pd.NaT if v is None else pd.Timestamp(v) for v in values], dtype="datetime64[s]")


def _instants(values) -> pd.Series:
    return pd.Series([pd.NaT if v is None else pd.Timestamp(v) for v in values], dtype="datetime64[us]")


def _cents(values) -> pd.Series:
    return pd.Series(list(values), dtype=object)


@st.composite
def worlds(draw, first: date, last: date, lead: int = 150, archive_one_in: int = 4):
    """A few locations (currencies, tax rates), plans (monthly, N-monthly, weekly), customers (some archived
    around the dates billed) and contracts (billing days, cancellations, next_invoice_date, price overrides)
    starting up to `lead` days before `first` and up to `last`."""
    world = World(valid={})
    n_loc = draw(st.integers(1, 2))
    locations = []
    for lid in range(1, n_loc + 1):
        world.tax_e4[lid] = draw(st.one_of(st.sampled_from([0, 2000, 1900, 825, 1, 5]), st.integers(0, 9999)))
        world.currency[lid] = ["EUR", "GBP"][lid - 1]
        locations.append((lid, world.currency[lid], world.tax_e4[lid]))
    plans = []  # id, location, price, months, weeks
    for lid in range(1, n_loc + 1):
        for _ in range(draw(st.integers(1, 2))):
            weekly = draw(st.booleans())
            months = 0 if weekly else draw(st.sampled_from([1, 1, 1, 2, 3, 12]))
            weeks = draw(st.integers(1, 3)) if weekly else 0
            price = draw(st.one_of(st.integers(0, 10**6), st.sampled_from([1414, 707, 14, 10000])))
            plans.append((50 + len(plans), lid, price, months, weeks))
    n_cust = draw(st.integers(1, 4))
    customers = []
    for cid in range(11, 11 + n_cust):
        lid = draw(st.integers(1, n_loc))
        archived = None
        if draw(st.integers(1, archive_one_in)) == 1:
            day = first + timedelta(days=draw(st.integers(-3, (last - first).days + 1)))
            archived = cutoff(day) + draw(
                st.sampled_from([timedelta(0), -US, US, timedelta(hours=-12), timedelta(days=-1)])
            )
        world.location_of[cid], world.archived_at[cid] = lid, archived
        customers.append((cid, lid, archived))
    contracts = []
    for con in range(101, 101 + draw(st.integers(1, 6))):
        cid = draw(st.sampled_from([c[0] for c in customers]))
        pid, _, plan_price, months, weeks = draw(st.sampled_from([p for p in plans if p[1] == world.location_of[cid]]))
        start = first + timedelta(days=draw(st.integers(-lead, (last - first).days)))
        billing_day = None
        if months:
            billing_day = draw(
                st.one_of(st.none(), st.none(), st.sampled_from([1, 28, min(start.day, 28)]), st.integers(1, 28))
            )
        cancel = draw(
            st.one_of(st.none(), st.none(), st.integers(0, 250).map(lambda n, s=start: s + timedelta(days=n)))
        )
        nid = draw(st.one_of(st.none(), st.none(), st.integers(-30, 200).map(lambda n, s=start: s + timedelta(days=n))))
        price = draw(st.one_of(st.none(), st.none(), st.integers(0, 10**7), st.sampled_from([1414, 707, 0])))
        qty = draw(st.one_of(st.integers(1, 5), st.sampled_from([1, 1000, 2**31 - 1])))
        world.terms[con] = Terms(start, months, weeks, billing_day, cancel, nid)
        world.unit_cents[con] = plan_price if price is None else price
        world.quantity[con] = qty
        world.customer_of[con] = cid
        contracts.append((con, cid, pid, price, qty, start, billing_day, cancel, nid))

    world.valid = {
        "locations": pd.DataFrame(
            {
                "id": _ints(r[0] for r in locations),
                "name": [f"Location {r[0]}" for r in locations],
                "currency": pd.Series([r[1] for r in locations], dtype=object),
                "tax_rate_e4": _cents(r[2] for r in locations),
                "keep_new_accounts_suspended_since": _instants([None] * len(locations)),
            }
        ),
        "plans": pd.DataFrame(
            {
                "id": _ints(r[0] for r in plans),
                "location_id": _ints(r[1] for r in plans),
                "name": [f"Plan {r[0]}" for r in plans],
                "price_cents": _cents(r[2] for r in plans),
                "currency": pd.Series([world.currency[r[1]] for r in plans], dtype=object),
                "invoice_every_months": _ints(r[3] for r in plans),
                "invoice_every_weeks": _ints(r[4] for r in plans),
                "suspend_customers_joining_since": _instants([None] * len(plans)),
            }
        ),
        "customers": pd.DataFrame(
            {
                "id": _ints(r[0] for r in customers),
                "location_id": _ints(r[1] for r in customers),
                "created_at": _instants([datetime(2000, 1, 1)] * len(customers)),
                "archived_at": _instants(r[2] for r in customers),
                "portal_access": [True] * len(customers),
            }
        ),
        "contracts": pd.DataFrame(
            {
                "id": _ints(r[0] for r in contracts),
                "customer_id": _ints(r[1] for r in contracts),
                "plan_id": _ints(r[2] for r in contracts),
                "price_cents": _cents(r[3] for r in contracts),
                "quantity": _ints(r[4] for r in contracts),
                "start_date": _days(r[5] for r in contracts),
                "billing_day": _ints(r[6] for r in contracts),
                "cancellation_date": _days(r[7] for r in contracts),
                "next_invoice_date": _days(r[8] for r in contracts),
                "created_at": _instants([datetime(2000, 1, 1)] * len(contracts)),
            }
        ),
    }
    return world


# =========================================================================== the database a run reads and writes


class Db:
    """contract_ledger (cursor per contract) and the live lines ((contract, period_start) -> billing_date)."""

    def __init__(self, cursors: dict | None = None, lines: dict | None = None):
        self.cursors: dict[int, date] = dict(cursors or {})
        self.lines: dict[tuple[int, date], date] = dict(lines or {})

    def copy(self) -> Db:
        return Db(self.cursors, self.lines)

    def ledger(self) -> pd.DataFrame:  # steps._ledger: contract_id int64, billed_before datetime64[s]
        return pd.DataFrame(
            {"contract_id": np.array(list(self.cursors), dtype=np.int64), "billed_before": _days(self.cursors.values())}
        )

    def later_lines(self, d: date) -> pd.DataFrame:  # sql/later_lines.sql
        keys = [k for k, billed_on in self.lines.items() if billed_on >= d and k[1] <= d]
        return pd.DataFrame(
            {"contract_id": np.array([k[0] for k in keys], dtype=np.int64), "period_start": _days(k[1] for k in keys)}
        )

    def lines_from(self, due: pd.DataFrame) -> pd.DataFrame:  # sql/window_lines.sql
        lo = {int(c): as_date(x) for c, x in zip(due["contract_id"], due["lo"])}
        keys = [k for k in self.lines if k[0] in lo and k[1] >= lo[k[0]]]
        return pd.DataFrame(
            {
                "contract_id": np.array([k[0] for k in keys], dtype=np.int64),
                "period_start": _days(k[1] for k in keys),
                "billing_date": _days(self.lines[k] for k in keys),
            }
        )

    def publish(self, d: date, result: billing.DateResult) -> None:
        """publishing.publish: clear_date (rewind the cursors of D's lines, drop D's lines), then write."""
        first_on_d: dict[int, date] = {}
        for (contract_id, start), billed_on in self.lines.items():
            if billed_on == d:
                first_on_d[contract_id] = min(start, first_on_d.get(contract_id, start))
        for contract_id, start in first_on_d.items():  # rewind_ledger.sql updates existing rows only
            if contract_id in self.cursors and start < self.cursors[contract_id]:
                self.cursors[contract_id] = start
        self.lines = {k: v for k, v in self.lines.items() if v != d}
        for contract_id, start in zip(result.lines["contract_id"], result.lines["period_start"]):
            key = (int(contract_id), as_date(start))
            assert key not in self.lines, f"period {key} billed on {d} already has a line on {self.lines[key]}"
            self.lines[key] = d
        for contract_id, cursor in zip(result.ledger["contract_id"], result.ledger["billed_before"]):
            self.cursors[int(contract_id)] = as_date(cursor)


def run_date(world: World, db: Db, d: date, suspended: pd.Series) -> billing.DateResult:
    """What a run of D computes (steps: the may_owe prefilter, contract_terms, then bill_date's three steps)."""
    ledger, later = db.ledger(), db.later_lines(d)
    contracts = world.valid["contracts"]
    contracts = contracts[billing.may_owe(contracts, ledger, later, d)]
    terms = billing.contract_terms({**world.valid, "contracts": contracts})
    return billing.bill_date(terms, ledger, later, db.lines_from, suspended, d)


def run_date_by_location(world: World, db: Db, d: date, suspended: pd.Series):
    """The DAG's form: owed_periods, suspension_filter and build_invoices mapped over the locations."""
    ledger, later = db.ledger(), db.later_lines(d)
    contracts = world.valid["contracts"]
    terms = billing.contract_terms(
        {**world.valid, "contracts": contracts[billing.may_owe(contracts, ledger, later, d)]}
    )
    out = {"lines": [], "invoices": [], "skipped": [], "ledger": []}
    for location_id in sorted(world.tax_e4):
        t = terms[terms["location_id"] == location_id].reset_index(drop=True)
        candidates, periods = billing.owed_periods(t, ledger, later, db.lines_from, d)
        status, skipped, moved = billing.suspension_filter(candidates, periods, suspended, d)
        lines, invoices = billing.build_invoices(periods, status, t, d)
        for key, frame in (("lines", lines), ("invoices", invoices), ("skipped", skipped), ("ledger", moved)):
            out[key].append(frame)
    return {k: pd.concat(v, ignore_index=True) for k, v in out.items()}


def suspended_series(world: World, states: dict[int, bool | None]) -> pd.Series:
    """customer_id -> bool as suspended_at gives it (customers without events are missing)."""
    kept = {c: s for c, s in states.items() if s is not None}
    return pd.Series(list(kept.values()), index=np.array(list(kept), dtype=np.int64), dtype=bool)


# --------------------------------------------------------------------------- frames -> comparable rows


def line_rows(lines: pd.DataFrame) -> dict:
    rows = {
        (int(r.contract_id), as_date(r.period_start)): (
            as_date(r.period_end),
            int(r.amount_cents),
            bool(r.prorated),
            int(r.quantity),
            int(r.unit_cents),
            int(r.customer_id),
            r.invoice_id,
        )
        for r in lines.itertuples()
    }
    assert len(rows) == len(lines), "a (contract, period_start) appears twice in one date's lines"
    return rows


def invoice_rows(invoices: pd.DataFrame) -> dict:
    rows = {
        int(r.customer_id): (
            r.invoice_id,
            int(r.location_id),
            r.currency,
            int(r.subtotal_cents),
            int(r.tax_cents),
            int(r.total_cents),
        )
        for r in invoices.itertuples()
    }
    assert len(rows) == len(invoices), "two invoices for one customer on one date"
    return rows


def skipped_rows(skipped: pd.DataFrame) -> dict:
    rows = {
        int(r.contract_id): (int(r.customer_id), r.reason, int(r.owed_periods), int(r.owed_cents))
        for r in skipped.itertuples()
    }
    assert len(rows) == len(skipped)
    return rows


def ledger_rows(ledger: pd.DataFrame) -> dict:
    rows = {int(c): as_date(b) for c, b in zip(ledger["contract_id"], ledger["billed_before"])}
    assert len(rows) == len(ledger)
    return rows


# --------------------------------------------------------------------------- the reference for one date


@dataclass
class Expected:
    lines: dict
    invoices: dict
    skipped: dict
    owed: dict  # contract_id -> reference owed periods on D


def expected_for(world: World, db: Db, d: date, suspended: set[int]) -> Expected:
    """flexbill.periods.owed_periods with the periods billed before D, and the contract's filter and invoice rules."""
    owed, lines, skipped, subtotal = {}, {}, {}, {}
    for contract_id, terms in world.terms.items():
        billed = frozenset(s for (c, s), on in db.lines.items() if c == contract_id and on < d)
        owed[contract_id] = owed_periods(terms, d, billed)
        customer_id = world.customer_of[contract_id]
        reason = world.billable(customer_id, d, suspended)
        amounts = [world.amount_cents(contract_id, p) for p in owed[contract_id]]
        if reason:
            if owed[contract_id]:
                skipped[contract_id] = (customer_id, reason, len(amounts), sum(amounts))
            continue
        for p, cents in zip(owed[contract_id], amounts):
            lines[(contract_id, p.start)] = (
                p.end,
                cents,
                p.prorated,
                world.quantity[contract_id],
                world.unit_cents[contract_id],
                customer_id,
                f"INV-{d:%Y%m%d}-{customer_id:07d}",
            )
            subtotal[customer_id] = subtotal.get(customer_id, 0) + cents
    invoices = {}
    for customer_id, cents in subtotal.items():
        location_id = world.location_of[customer_id]
        tax = to_cents(tax_on(from_cents(cents), Decimal(world.tax_e4[location_id]) / 10000))
        invoices[customer_id] = (
            f"INV-{d:%Y%m%d}-{customer_id:07d}",
            location_id,
            world.currency[location_id],
            cents,
            tax,
            cents + tax,
        )
    return Expected(lines, invoices, skipped, owed)


# =========================================================================== 2. one billing date


@st.composite
def one_date(draw):
    """A world, a billing date D, a prior state (each contract billed in order through some date before D, or
    never; sometimes with a cursor left behind its lines) and a random suspended set."""
    d = draw(dates())
    world = draw(worlds(d, d))
    db = Db()
    for contract_id, terms in world.terms.items():
        if draw(st.integers(0, 3)) == 0:
            continue  # never looked at: no ledger row, no line
        through = d - timedelta(days=draw(st.integers(1, 200)))
        billed = owed_periods(terms, through)
        for p in billed:
            db.lines[(contract_id, p.start)] = p.start + timedelta(days=draw(st.integers(0, (through - p.start).days)))
        cursor = next_period_start(terms, through)
        if billed and draw(st.integers(0, 3)) == 0:  # a cursor behind lines billed before D changes nothing
            cursor = draw(st.sampled_from([p.start for p in billed]))
        db.cursors[contract_id] = cursor
    states = {c: draw(st.sampled_from([None, False, True])) for c in world.customers}
    return world, db, d, states


@DATE_SETTINGS
@given(case=one_date())
def test_bill_date_equals_reference_owed_periods_less_suspended_and_archived(case):
    world, db, d, states = case
    suspended = {c for c, s in states.items() if s}
    series = suspended_series(world, states)
    want = expected_for(world, db, d, suspended)
    result = run_date(world, db, d, series)

    # invoiced lines: exactly the owed periods of billable customers' contracts, with the reference amounts
    assert line_rows(result.lines) == want.lines
    assert invoice_rows(result.invoices) == want.invoices
    for r in result.invoices.itertuples():
        assert int(r.subtotal_cents) == int(
            result.lines.loc[result.lines["invoice_id"] == r.invoice_id, "amount_cents"].sum()
        )
    # skipped: exactly the suspended / archived customers' contracts that owe something, counts and amounts
    assert skipped_rows(result.skipped) == want.skipped
    assert (result.skipped["billing_date"] == d).all()

    # the cursor moves only where nothing owed is left behind, and never for a skipped contract
    moved = ledger_rows(result.ledger)
    billed_now = {c for c, _ in want.lines}
    assert billed_now <= set(moved)
    assert not set(moved) & set(want.skipped)
    for contract_id, cursor in moved.items():
        terms = world.terms[contract_id]
        assert cursor == next_period_start(terms, d) > d
        assert all((contract_id, p.start) in want.lines for p in want.owed[contract_id])
        assert contract_id not in db.cursors or cursor >= db.cursors[contract_id]

    stats = result.stats
    assert stats["lines"] == len(want.lines) and stats["invoices"] == len(want.invoices)
    assert stats["contracts_skipped"] == len(want.skipped)
    assert stats["contracts_invoiced"] == len(billed_now)
    assert stats["contracts_billed_later"] == 0
    assert stats["back_billed_lines"] == sum(1 for (_, start) in want.lines if start < d)

    # the per-location steps (the DAG's mapped tasks) decide the same (with one location they are bill_date)
    if len(world.tax_e4) == 1:
        return
    by_location = run_date_by_location(world, db, d, series)
    assert line_rows(by_location["lines"]) == want.lines
    assert invoice_rows(by_location["invoices"]) == want.invoices
    assert skipped_rows(by_location["skipped"]) == want.skipped
    assert ledger_rows(by_location["ledger"]) == moved


# =========================================================================== 3. suspension, lift, back-billing


@st.composite
def sequences(draw):
    """Consecutive billing dates; each customer maybe suspended over a random sub-range of them (by an event of
    any source, sometimes re-suspended by a rule while suspended), then lifted by a manual lift -- or never."""
    first = draw(dates())
    n_days = draw(st.integers(2, 14))
    last = first + timedelta(days=n_days - 1)
    world = draw(worlds(first, last, lead=60, archive_one_in=8))
    events, next_id = [], 1
    for customer_id in world.customers:
        if customer_id not in world.customer_of.values() or draw(st.integers(0, 3)) == 0:
            continue  # suspending a customer without contracts tests nothing here
        a = draw(st.one_of(st.integers(-3, 0), st.integers(-3, n_days - 2)))  # suspended from date index a
        never = draw(st.integers(0, 3)) == 0
        b = n_days + 10 if never else draw(st.integers(max(a + 1, 1), n_days))  # billable again from index b
        at = datetime.combine(first, time()) + timedelta(days=a, seconds=draw(st.integers(0, 86399)))
        events.append(Event(next_id, customer_id, at, "suspend", draw(st.sampled_from(SOURCES))))
        next_id += 1
        if draw(st.booleans()):  # a rule fires again while suspended: still suspended
            again = at + timedelta(seconds=draw(st.integers(0, 86400 * 3)))
            events.append(Event(next_id, customer_id, again, "suspend", draw(st.sampled_from(SOURCES[1:]))))
            next_id += 1
        lift = datetime.combine(first, time()) + timedelta(days=b, seconds=draw(st.integers(0, 86399)))
        lift = max(lift, max(e.occurred_at for e in events if e.customer_id == customer_id))
        events.append(Event(next_id, customer_id, lift, "lift", "manual"))
        next_id += 1
    return world, first, n_days, events


def _bill_sequence(world, first, n_days, events):
    """Run every date in order on one simulated database; returns it and each date's (D, suspended, result)."""
    frame = events_frame(events)
    db, runs = Db(), []
    for i in range(n_days):
        d = first + timedelta(days=i)
        series = rules.suspended_at(frame, cutoff(d))
        suspended = {c for c in world.customers if is_suspended([e for e in events if e.customer_id == c], cutoff(d))}
        assert {c for c in world.customers if state_of(series, c)} == suspended
        want = expected_for(world, db, d, suspended)
        result = run_date(world, db, d, series)
        assert line_rows(result.lines) == want.lines, d
        assert skipped_rows(result.skipped) == want.skipped, d
        db.publish(d, result)
        runs.append((d, suspended, result))
    return db, runs


@SEQUENCE_SETTINGS
@given(case=sequences())
def test_lift_back_bills_every_missed_period_exactly_once(case):
    world, first, n_days, events = case
    last = first + timedelta(days=n_days - 1)
    db, runs = _bill_sequence(world, first, n_days, events)  # Db.publish refuses a period billed twice

    billed_on = dict(db.lines)
    still_owed: dict[int, list] = {}
    for contract_id, terms in world.terms.items():
        customer_id = world.customer_of[contract_id]
        reference = owed_periods(terms, last)  # everything owed through the last date, nothing billed yet
        mine = {s for (c, s) in billed_on if c == contract_id}
        left = [p for p in reference if p.start not in mine]
        assert mine <= {p.start for p in reference}, "billed a period the reference does not owe"
        # nothing lost: what is not billed is owed by a customer who cannot be billed on the last date ...
        if left:
            assert world.billable(customer_id, last, runs[-1][1]) != ""
            still_owed[contract_id] = left
        for p in reference:
            # ... and each period is billed on the first date, on or after its start, its customer is billable:
            # on time, or on the first run after the lift (back-billing), never later
            due = [d for d, suspended, _ in runs if d >= p.start and not world.billable(customer_id, d, suspended)]
            assert billed_on.get((contract_id, p.start)) == (due[0] if due else None), (contract_id, p)

    # the last run's skips carry exactly what is still owed
    last_skips = skipped_rows(runs[-1][2].skipped)
    assert set(last_skips) == set(still_owed)
    for contract_id, left in still_owed.items():
        assert last_skips[contract_id][2:] == (len(left), sum(world.amount_cents(contract_id, p) for p in left))
    # each (contract, period_start) once across all dates' lines
    all_keys = [
        (int(c), as_date(s)) for _, _, r in runs for c, s in zip(r.lines["contract_id"], r.lines["period_start"])
    ]
    assert len(all_keys) == len(set(all_keys)) == len(billed_on)
    # the cursors never move backwards during an in-order backfill
    for contract_id in world.terms:
        seen = [ledger_rows(r.ledger).get(contract_id) for _, _, r in runs]
        seen = [c for c in seen if c is not None]
        assert seen == sorted(seen)


# =========================================================================== 4. running a date twice = once


@RERUN_SETTINGS
@given(case=one_date())
def test_rerunning_a_date_changes_nothing(case):
    world, db, d, states = case
    series = suspended_series(world, states)

    once = run_date(world, db, d, series)
    again = run_date(world, db.copy(), d, series)  # same starting state: the very same frames
    for name in ("lines", "invoices", "skipped", "ledger"):
        pd.testing.assert_frame_equal(getattr(once, name), getattr(again, name))
    assert once.stats == again.stats

    after_once = db.copy()
    after_once.publish(d, once)
    rerun = run_date(world, after_once, d, series)  # D again, with D's lines and cursors in place
    # the rerun recomputes D's lines (publishing replaces D's drafts with them), nothing new
    assert line_rows(rerun.lines) == line_rows(once.lines)
    assert invoice_rows(rerun.invoices) == invoice_rows(once.invoices)
    assert skipped_rows(rerun.skipped) == skipped_rows(once.skipped)
    # every cursor the rerun moves goes where the first run put it (a cursor already past D is not looked at)
    assert ledger_rows(rerun.ledger).items() <= ledger_rows(once.ledger).items()
    assert set(ledger_rows(rerun.ledger)) >= {c for c, _ in line_rows(once.lines)}
    after_twice = after_once.copy()
    after_twice.publish(d, rerun)
    assert after_twice.lines == after_once.lines
    assert after_twice.cursors == after_once.cursors
