"""Corrupted inputs: quarantined or rejected with a reason, the rest billed, never a crash.

Promise (CONTRACT.md "Bad input"): a source row that breaks the contract is never billed
and never crashes the run; it goes to `quarantine` with a reason a person can act on,
and the rest is billed.

tests/integration/test_quarantine.py covers the contract's list of bad rows (negative
prices and quantities, currency mismatches, invoice_every_* both/neither, billing_day out
of range or on a weekly plan, cancellation before start, dangling references, a non-manual
lift, unknown action or source) and malformed date text in SQLite.  This module fills the
gaps, on both databases:

* contract-breaking kinds it does not have: a currency that is not an ISO code, a negative
  invoice_every_*, a tax rate above 100 %, a CRM stage of a missing board;
* NULL in every required column.  flexbill's own schema has NOT NULL there, but it reads
  operators' databases it did not create (README, schema.py), so the world here is an
  operator database whose source tables have no primary key and no NOT NULL;
* timestamps with offsets other than UTC: offset text in SQLite, `timestamptz` columns read
  in a non-UTC session time zone in PostgreSQL;
* absurd values the contract's types allow: quantity 10^9 and 2^31-1, a price of 10^12 (SQLite
  stores it; PostgreSQL's numeric(12,2) refuses it at the door), dates in year 9999.

Each kind has its own ids (n, n+1, ...) and a good contract of its own beside it, which must
be invoiced.  Duplicate ids in a source extract, a NULL id, and a few absurd values crash the
run or are billed wrongly today: those are reported as flexbill bugs with their own failing
tests, outside this suite.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Column, MetaData, Table, insert, text
from sqlalchemy.exc import DataError

from flexbill.db import schema as s
from flexbill.db.connect import init_db, make_engine
from flexbill.runner import run_billing_date
from tests.builders import T0, Operator
from tests.reliability.world import DIALECTS, Databases

D = date(2024, 3, 1)
D_NEXT = date(2024, 3, 2)
CUTOFF = datetime(2024, 3, 2)
LOOSE = ("locations", "customers", "plans", "contracts", "crm_boards", "crm_stages", "crm_stage_entries")


def loosen(engine) -> None:
    """Recreate the source tables as an operator might have them: no primary key, no NOT NULL
    (suspension_events keeps its key and unique trigger_key, which the rules' inserts rely on)."""
    with engine.begin() as conn:
        for table in s.SOURCE_TABLES:
            keep = table.name == "suspension_events"
            columns = [
                Column(
                    c.name,
                    c.type,
                    nullable=True,
                    primary_key=keep and c.primary_key,
                    unique=keep and bool(c.unique),
                    autoincrement=c.autoincrement if keep else False,
                )
                for c in table.columns
            ]
            table.drop(conn)
            Table(table.name, MetaData(), *columns).create(conn)


def row(engine, table, **values) -> None:
    with engine.begin() as conn:
        conn.execute(insert(table), values)


@dataclass
class Expect:
    quarantined: dict = field(default_factory=dict)  # (table, id) -> fragments of its reason
    billed: tuple = ()  # contracts invoiced on D
    unbilled: tuple = ()  # contracts never invoiced on D or D_NEXT
    billed_next: tuple = ()  # contracts first invoiced on D_NEXT
    skipped: dict = field(default_factory=dict)  # contract -> skip reason on D
    amounts: dict = field(default_factory=dict)  # contract -> (line amount, invoice tax) on D


CASES: dict[str, Callable] = {}
ONLY: dict[str, tuple] = {}  # kind -> the dialects it applies to, when not both


def case(fn, dialects: tuple | None = None):
    CASES[fn.__name__] = fn
    if dialects:
        ONLY[fn.__name__] = dialects
    return fn


def good(op, n) -> int:
    """The good contract beside a bad row: customer 1, plan 1, from D."""
    op.contract(n + 9, 1, 1, start_date=D)
    return n + 9


# ---------------------------------------------------------------- contract-breaking kinds test_quarantine lacks


@case
def location_currency_not_iso(op, n):
    op.location(n, currency="eur")
    op.customer(n, location_id=n)
    op.plan(n, location_id=n, currency="eur")
    op.contract(n, n, n, start_date=D)
    return Expect(
        {
            ("locations", n): ("eur", "ISO 4217"),
            ("customers", n): (f"location {n}",),
            ("plans", n): (f"location {n}",),
            ("contracts", n): (),
        },
        billed=(good(op, n),),
        unbilled=(n,),
    )


@case
def plan_negative_months(op, n):
    op.plan(n, months=-1, weeks=1)
    op.contract(n, 1, n, start_date=D)
    return Expect(
        {("plans", n): ("invoice_every_months=-1", "negative"), ("contracts", n): (f"plan {n}",)},
        billed=(good(op, n),),
        unbilled=(n,),
    )


@case
def tax_rate_above_one(op, n):
    op.location(n, tax_rate="1.5000")
    op.customer(n, location_id=n)
    op.contract(n, n, 1, start_date=D)
    return Expect(
        {
            ("locations", n): ("tax_rate 1.5", "0..1"),
            ("customers", n): (f"location {n}",),
            ("contracts", n): (f"customer {n}",),
        },
        billed=(good(op, n),),
        unbilled=(n,),
    )


@case
def stage_missing_board(op, n):
    op.customer(n)
    op.contract(n, n, 1, start_date=D)
    op.stage(n, board_id=9000 + n, deactivate_account_since=T0)
    op.entry(n, n, n, entered_at=datetime(2024, 2, 1))  # would suspend customer n, but its stage is quarantined
    return Expect(
        {("crm_stages", n): (f"board {9000 + n}",), ("crm_stage_entries", n): (f"stage {n}",)}, billed=(n, good(op, n))
    )


# ---------------------------------------------------------------- NULL in a required column


# (table, column): how a row of that table is built, with the column set to NULL
def _null(table: str, column: str):
    def build(op, n):
        e = op.engine
        if table == "locations":
            values = dict(id=n, name=f"L{n}", currency="EUR", tax_rate=Decimal("0.2"))
            row(e, s.locations, **{**values, column: None})
            op.customer(n, location_id=n)
            op.contract(n, n, 1, start_date=D)
            quarantined = {
                ("locations", n): (column,),
                ("customers", n): (f"location {n}",),
                ("contracts", n): (f"customer {n}",),
            }
            return Expect(quarantined, billed=(good(op, n),), unbilled=(n,))
        if table == "customers":
            values = dict(id=n, location_id=1, full_name=f"C{n}", created_at=T0, portal_access=True)
            row(e, s.customers, **{**values, column: None})
            op.contract(n, n, 1, start_date=D)
            return Expect(
                {("customers", n): (column,), ("contracts", n): (f"customer {n}",)},
                billed=(good(op, n),),
                unbilled=(n,),
            )
        if table == "plans":
            values = dict(
                id=n,
                location_id=1,
                name=f"P{n}",
                price=Decimal("10.00"),
                currency="EUR",
                invoice_every_months=1,
                invoice_every_weeks=0,
            )
            row(e, s.plans, **{**values, column: None})
            op.contract(n, 1, n, start_date=D)
            return Expect(
                {("plans", n): (column,), ("contracts", n): (f"plan {n}",)}, billed=(good(op, n),), unbilled=(n,)
            )
        if table == "contracts":
            values = dict(id=n, customer_id=1, plan_id=1, quantity=1, start_date=D, created_at=T0)
            row(e, s.contracts, **{**values, column: None})
            return Expect({("contracts", n): (column,)}, billed=(good(op, n),), unbilled=(n,))
        if table == "suspension_events":
            op.customer(n)
            op.contract(n, n, 1, start_date=D)
            values = dict(customer_id=n, occurred_at=datetime(2024, 2, 1), action="suspend", source="manual")
            row(e, s.suspension_events, **{**values, column: None})
            [event] = [
                r["id"] for r in op.rows(s.suspension_events) if r["customer_id"] in (n, None) and r[column] is None
            ]
            return Expect({("suspension_events", event): (column,)}, billed=(n, good(op, n)))  # the event is ignored
        # crm tables: a deactivating stage and an entry of customer n, one of them with the NULL
        op.customer(n)
        op.contract(n, n, 1, start_date=D)
        board = dict(id=n, location_id=1, name="B")
        stage = dict(id=n, board_id=n, name="S", deactivate_account_since=T0)
        entry = dict(id=n, customer_id=n, stage_id=n, entered_at=datetime(2024, 2, 1))
        for t, values in ((s.crm_boards, board), (s.crm_stages, stage), (s.crm_stage_entries, entry)):
            row(e, t, **({**values, column: None} if t.name == table else values))
        quarantined = {(table, n): (column,)}
        if table == "crm_boards":
            quarantined.update({("crm_stages", n): (f"board {n}",), ("crm_stage_entries", n): (f"stage {n}",)})
        if table == "crm_stages":
            quarantined[("crm_stage_entries", n)] = (f"stage {n}",)
        return Expect(quarantined, billed=(n, good(op, n)))  # a quarantined CRM row suspends nobody

    build.__name__ = f"null_{table}_{column}"
    return build


for _table in s.SOURCE_TABLES:
    for _column in _table.columns:
        if not _column.nullable and not _column.primary_key:
            case(_null(_table.name, _column.name))


# ---------------------------------------------------------------- timestamps with an offset (SQLite text)


def _offset(target: str, value: str, outcome: str):
    """target: the event of customer n ("event") or contract n's created_at ("created");
    outcome: suspended / billed (the event is not in effect on D) / next (the contract exists
    from D_NEXT on) / malformed (quarantined, the raw text in its reason)."""

    def build(op, n):
        op.customer(n)
        op.contract(n, n, 1, start_date=D)
        with op.engine.begin() as conn:
            if target == "event":
                conn.execute(
                    text(
                        "insert into suspension_events (customer_id, occurred_at, action, source, actor) "
                        "values (:c, :v, 'suspend', 'manual', 'a@x.io')"
                    ),
                    {"c": n, "v": value},
                )
                event = conn.execute(text("select id from suspension_events where customer_id = :c"), {"c": n}).scalar()
            else:
                conn.execute(text("update contracts set created_at = :v where id = :c"), {"c": n, "v": value})
        other = good(op, n)
        if outcome == "malformed":
            key = ("suspension_events", event) if target == "event" else ("contracts", n)
            return Expect(
                {key: (value, "malformed")},
                billed=(other,) + ((n,) if target == "event" else ()),
                unbilled=() if target == "event" else (n,),
            )
        if outcome == "suspended":
            return Expect(billed=(other,), skipped={n: "suspended"})
        if outcome == "next":
            return Expect(billed=(other,), billed_next=(n,))
        return Expect(billed=(n, other))

    return build


OFFSETS = {  # 2024-03-02 00:00 UTC is D's cutoff
    "event_plus_0500_before_cutoff": ("event", "2024-03-02T04:59:00+05:00", "suspended"),
    "event_z_at_cutoff": ("event", "2024-03-02T00:00:00Z", "billed"),
    "event_plus_0530_no_colon_before_cutoff": ("event", "2024-03-02 05:29:59+0530", "suspended"),
    "event_minus_1100_fraction_after_cutoff": ("event", "2024-03-01T13:00:00.500000-11:00", "billed"),
    "event_minus_1100_before_cutoff": ("event", "2024-03-01T12:59:59-11:00", "suspended"),
    "event_zone_name": ("event", "2024-03-01 10:00:00 Europe/Paris", "malformed"),
    "event_utc_word": ("event", "2024-03-01 10:00:00 UTC", "malformed"),
    "created_plus_1400_before_cutoff": ("created", "2024-03-02T13:59:00+14:00", "billed"),
    "created_minus_1200_at_cutoff": ("created", "2024-03-01T12:00:00-12:00", "next"),
}
for _kind, (_target, _value, _outcome) in OFFSETS.items():
    _build = _offset(_target, _value, _outcome)
    _build.__name__ = f"offset_{_kind}"
    case(_build, ("sqlite",))  # PostgreSQL: see test_postgresql_timestamptz_in_a_non_utc_session_is_read_as_utc


# ---------------------------------------------------------------- absurd values


@case
def quantity_ten_to_the_ninth(op, n):
    op.customer(n)
    op.contract(n, n, 1, start_date=D, quantity=10**9)  # 100.00 x 10^9: beyond 10,000,000,000.00 a period
    return Expect(
        billed=(good(op, n),),
        unbilled=(n,),
        quarantined={("contracts", n): ("quantity 1000000000", "beyond what flexbill bills")},
    )


@case
def quantity_int_max(op, n):
    op.customer(n)
    op.contract(n, n, 1, start_date=D, quantity=2**31 - 1, price="1.00")
    return Expect(billed=(n, good(op, n)), amounts={n: (Decimal("2147483647.00"), Decimal("429496729.40"))})


def price_ten_to_the_twelfth(op, n):
    op.customer(n)
    op.contract(n, n, 1, start_date=D, price="1000000000000.00")  # beyond numeric(12,2): SQLite keeps it
    return Expect(
        billed=(good(op, n),),
        unbilled=(n,),
        quarantined={("contracts", n): ("1000000000000.00", "beyond what flexbill bills")},
    )


case(price_ten_to_the_twelfth, ("sqlite",))  # PostgreSQL: test_price_ten_to_the_twelfth_is_refused_by_postgresql


@case
def start_in_9999(op, n):
    op.contract(n, 1, 1, start_date=date(9999, 12, 31))
    return Expect(billed=(good(op, n),), unbilled=(n,))


@case
def cancellation_in_9999(op, n):
    op.customer(n)
    op.contract(n, n, 1, start_date=D, cancellation_date=date(9999, 12, 31))
    return Expect(billed=(n, good(op, n)), amounts={n: (Decimal("100.00"), Decimal("20.00"))})


@case
def next_invoice_date_in_9999(op, n):
    op.contract(n, 1, 1, start_date=D, next_invoice_date=date(9999, 12, 31))
    return Expect(billed=(good(op, n),), unbilled=(n,))


@case
def created_in_9999(op, n):
    op.contract(n, 1, 1, start_date=D, created_at=datetime(9999, 12, 31, 23, 59, 59))
    return Expect(billed=(good(op, n),), unbilled=(n,))  # it does not exist yet


@case
def archived_in_9999(op, n):
    op.customer(n, archived_at=datetime(9999, 12, 31))
    op.contract(n, n, 1, start_date=D)
    return Expect(billed=(n, good(op, n)))


@case
def suspended_in_9999(op, n):
    op.customer(n)
    op.contract(n, n, 1, start_date=D)
    op.event(n, datetime(9999, 1, 1))
    return Expect(billed=(n, good(op, n)))


@case
def settings_since_9999(op, n):
    op.location(n, keep_new_accounts_suspended_since=datetime(9999, 1, 1))
    op.customer(n, location_id=n)
    op.plan(n, location_id=n, suspend_customers_joining_since=datetime(9999, 1, 1))
    op.contract(n, n, n, start_date=D)
    op.board(n, location_id=n)
    op.stage(n, board_id=n, deactivate_account_since=datetime(9999, 1, 1))
    op.entry(n, n, n, entered_at=datetime(2024, 2, 1))
    return Expect(billed=(n, good(op, n)))  # no rule fires before 9999


def test_price_ten_to_the_twelfth_is_refused_by_postgresql(pg_database):
    """PostgreSQL's numeric(12,2) refuses the price at the door: it never reaches a run."""
    engine = make_engine(pg_database)
    init_db(engine)
    op = Operator(engine)
    op.location(1)
    op.customer(1)
    op.plan(1)
    with pytest.raises(DataError, match="numeric field overflow"):
        op.contract(1, 1, 1, start_date=D, price="1000000000000.00")
    engine.dispose()


# ---------------------------------------------------------------- the worlds


@dataclass
class World:
    expects: dict
    error: str | None = None
    quarantine: dict = field(default_factory=dict)  # date -> {(table, id): reason}
    lines: dict = field(default_factory=dict)  # date -> [(contract_id, amount, invoice_id)]
    invoices: dict = field(default_factory=dict)  # invoice_id -> tax
    skipped: dict = field(default_factory=dict)  # contract -> reason on D


def _observe(engine, w: World) -> None:
    op = Operator(engine)
    for d in (D, D_NEXT):
        run_billing_date(engine, d)
        w.quarantine[d] = {(r["source_table"], r["row_id"]): r["reason"] for r in op.rows(s.quarantine, billing_date=d)}
        w.lines[d] = [(l["contract_id"], l["amount"], l["invoice_id"]) for l in op.lines(d)]
        if d == D:
            w.skipped = {r["contract_id"]: r["reason"] for r in op.rows(s.skipped_contracts, billing_date=d)}
    w.invoices = {r["invoice_id"]: r["tax"] for r in op.rows(s.invoices)}


def loosened_database(dialect: str, folder, stack: contextlib.ExitStack):
    """A new database of the dialect with flexbill's schema as loosen() leaves it; dropped when `stack` closes."""
    dbs = Databases(dialect, folder)
    stack.callback(dbs.close)
    engine = make_engine(dbs.empty())
    stack.callback(engine.dispose)
    init_db(engine)
    loosen(engine)
    return engine


def _build_world(dialect: str, folder, stack) -> World:
    engine = loosened_database(dialect, folder, stack)
    op = Operator(engine)
    op.one_contract(D)  # the healthy contract, invoiced on D
    w = World({})
    for i, kind in enumerate(CASES):
        if dialect in ONLY.get(kind, DIALECTS):
            w.expects[kind] = CASES[kind](op, 100 * (i + 1))
    try:
        _observe(engine, w)
    except Exception as exc:  # noqa: BLE001 - every test reports it
        w.error = f"{type(exc).__name__}: {exc}"
    return w


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """dialect -> World (each built on first use): one operator database holding every kind at once."""
    with contextlib.ExitStack() as stack:
        built: dict = {}

        def get(dialect):
            if dialect not in built:
                built[dialect] = _build_world(dialect, tmp_path_factory.mktemp(f"corrupt-{dialect}"), stack)
            return built[dialect]

        yield get


@pytest.mark.parametrize("dialect, kind", [(d, k) for k in CASES for d in ONLY.get(k, DIALECTS)])
def test_corrupted_input_is_quarantined_with_a_reason_and_the_rest_is_billed(worlds, dialect, kind):
    w = worlds(dialect)
    expect = w.expects[kind]
    assert w.error is None, f"the run crashed: {w.error}"
    for key, fragments in expect.quarantined.items():
        assert key in w.quarantine[D], f"{key} is not in D's quarantine"
        reason = w.quarantine[D][key]
        for fragment in fragments:
            assert fragment in reason, f"{key}: {fragment!r} not in {reason!r}"
        assert w.quarantine[D_NEXT].get(key) == reason  # listed again on the next date
    billed = {c for c, _, _ in w.lines[D]}
    billed_next = {c for c, _, _ in w.lines[D_NEXT]}
    assert set(expect.billed) <= billed, f"not invoiced on D: {set(expect.billed) - billed}"
    assert not set(expect.unbilled) & (billed | billed_next), "a bad row was invoiced"
    assert set(expect.billed_next) <= billed_next - billed
    ours = set(expect.billed) | set(expect.unbilled) | set(expect.skipped) | set(expect.billed_next)
    assert {c: r for c, r in w.skipped.items() if c in ours} == expect.skipped
    for contract, (amount, tax) in expect.amounts.items():
        [(_, got, invoice)] = [line for line in w.lines[D] if line[0] == contract]
        assert (got, w.invoices[invoice]) == (amount, tax)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_nothing_healthy_is_quarantined(worlds, dialect):
    w = worlds(dialect)
    assert w.error is None, f"the run crashed: {w.error}"
    assert set(w.quarantine[D]) == {key for e in w.expects.values() for key in e.quarantined}
    assert (1, Decimal("100.00")) in {(c, a) for c, a, _ in w.lines[D]}


# ---------------------------------------------------------------- PostgreSQL: timestamptz in another time zone


def test_postgresql_timestamptz_in_a_non_utc_session_is_read_as_utc(pg_database):
    """An operator database with `timestamptz` columns, read in session time zone Asia/Kolkata: each
    instant is compared with the cutoff in UTC (offsets, zone names and the session's zone all apply)."""
    engine = make_engine(pg_database)
    init_db(engine)
    name = pg_database.rsplit("/", 1)[1]
    with engine.begin() as conn:
        conn.execute(text(f"alter database \"{name}\" set timezone to 'Asia/Kolkata'"))
        conn.execute(text("alter table suspension_events alter column occurred_at type timestamptz"))
        conn.execute(text("alter table contracts alter column created_at type timestamptz"))
    engine.dispose()
    engine = make_engine(pg_database)
    op = Operator(engine)
    op.location(1)
    op.plan(1)
    stamps = {  # customer/contract id -> (event instant, contract created_at), as text
        1: (None, "2024-01-01T00:00:00Z"),  # healthy
        2: ("2024-03-02T04:59:00+05:00", None),  # 23:59 UTC on D: suspended on D
        3: ("2024-03-02 05:30:00", None),  # session zone +05:30: 00:00 UTC, the cutoff: not in effect on D
        4: ("2024-03-02 00:59:59 Europe/Paris", None),  # 23:59:59 UTC: suspended on D
        5: (None, "2024-03-01T12:00:00-12:00"),  # created at the cutoff: exists from D_NEXT on
        6: (None, "2024-03-02T13:59:00+14:00"),  # created 23:59 UTC on D: billed on D
    }
    for n, (event, created) in stamps.items():
        op.customer(n)
        op.contract(n, n, 1, start_date=D)
        with engine.begin() as conn:
            if event:
                conn.execute(
                    text(
                        "insert into suspension_events (customer_id, occurred_at, action, source) "
                        "values (:c, :v, 'suspend', 'manual')"
                    ),
                    {"c": n, "v": event},
                )
            conn.execute(
                text("update contracts set created_at = :v where id = :c"),
                {"c": n, "v": created or "2024-01-01T00:00:00Z"},
            )
    run_billing_date(engine, D)
    assert op.rows(s.quarantine) == []
    assert sorted(l["contract_id"] for l in op.lines(D)) == [1, 3, 6]
    assert {r["contract_id"]: r["reason"] for r in op.rows(s.skipped_contracts, billing_date=D)} == {
        2: "suspended",
        4: "suspended",
    }
    run_billing_date(engine, D_NEXT)
    assert [l["contract_id"] for l in op.lines(D_NEXT)] == [5]
    engine.dispose()
