"""Bad input (CONTRACT.md, "Bad input"): every contract-breaking source row goes to
`quarantine` for the billing date with a reason naming the column/value and what
to fix; it is never billed, the rest is billed, and the run does not crash.

One database per dialect holds every bad-row case at once, next to a healthy
operator (location 1 in EUR, customer 1, contract 1 on plan 1 at 100.00 a month
from D) that must be invoiced on every date; each case has its own ids (10, 20...)
and one test that checks its rows.  SQLite-only tests put text where a date or a
timestamp belongs, through raw SQL.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import text

from flexbill import quality, validation
from flexbill.clock import cutoff_of
from flexbill.db import extract
from flexbill.db import schema as s
from flexbill.db.connect import init_db, make_engine
from flexbill.runner import run_billing_date
from tests.builders import T0, Operator
from tests.processes import pg_databases

D = date(2024, 3, 1)
D_NEXT = date(2024, 4, 1)
# A reason says what to do, not only what is wrong ...
FIX = re.compile(r"\b(set|fix|add|move|correct|record|use|must)\b", re.I)
# ... and shows no placeholder of a missing value.
PLACEHOLDER = re.compile(r"\b(nan|NaN|NaT|None|<NA>)\b")


def assert_actionable(key, reason: str) -> None:
    assert FIX.search(reason), f"{key}: the reason says what is wrong, not what to do: {reason!r}"
    assert not PLACEHOLDER.search(reason), f"{key}: the reason shows a placeholder: {reason!r}"


def healthy(op: Operator) -> None:
    op.location(1, currency="EUR", tax_rate="0.2000")
    op.location(2, currency="USD", tax_rate="0.1000")
    op.customer(1)  # the healthy customer: its contract 1 is invoiced on every date
    op.plan(1, price="100.00")
    op.contract(1, 1, 1, start_date=D)


@dataclass
class Expect:
    # (source_table, row_id) -> fragments its reason must contain (column, value, the row depended on)
    quarantined: dict
    unbilled: tuple = ()  # contracts that must never get an invoice line
    billed: tuple = ()  # contracts (besides contract 1) that must be invoiced on D
    skipped: dict = field(default_factory=dict)  # contract_id -> skip reason on D


# Each case builds its rows with ids n, n+1... (n = 10, 20, ...) and says what must happen.
# Ids 9000+ never exist.
CASES: dict[str, Callable[[Operator, int], Expect]] = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def _event_id(op: Operator, customer_id: int, action: str) -> int:
    [row] = [r for r in op.rows(s.suspension_events, customer_id=customer_id) if r["action"] == action]
    return row["id"]


@case
def plan_negative_price(op, n):
    op.plan(n, price="-5.00")
    op.contract(n, 1, n, start_date=D)
    return Expect(
        {("plans", n): ("plans.price", "-5.00"), ("contracts", n): (f"plan {n}",)}, unbilled=(n,)
    )  # depends on the quarantined plan


@case
def contract_negative_price(op, n):
    op.contract(n, 1, 1, start_date=D, price="-1.50")
    return Expect({("contracts", n): ("price", "-1.50")}, unbilled=(n,))


@case
def contract_zero_quantity(op, n):
    op.contract(n, 1, 1, start_date=D, quantity=0)
    return Expect({("contracts", n): ("quantity", "0")}, unbilled=(n,))


@case
def contract_negative_quantity(op, n):
    op.contract(n, 1, 1, start_date=D, quantity=-2)
    return Expect({("contracts", n): ("quantity", "-2")}, unbilled=(n,))


@case
def plan_currency_not_its_locations(op, n):
    op.plan(n, currency="USD")  # at location 1, which bills in EUR
    op.contract(n, 1, n, start_date=D)
    return Expect({("plans", n): ("currency", "USD", "EUR"), ("contracts", n): (f"plan {n}",)}, unbilled=(n,))


@case
def contract_plan_currency_not_customers(op, n):
    op.plan(n, location_id=2, currency="USD")  # a valid USD plan of location 2
    op.contract(n, 1, n, start_date=D)  # customer 1 is at location 1 (EUR)
    return Expect({("contracts", n): (f"plan {n}", "USD", "EUR")}, unbilled=(n,))


@case
def plan_both_invoice_every_set(op, n):
    op.plan(n, months=1, weeks=2)
    op.contract(n, 1, n, start_date=D)
    return Expect(
        {("plans", n): ("invoice_every_months", "invoice_every_weeks"), ("contracts", n): (f"plan {n}",)}, unbilled=(n,)
    )


@case
def plan_neither_invoice_every_set(op, n):
    op.plan(n, months=0, weeks=0)
    op.contract(n, 1, n, start_date=D)
    return Expect(
        {("plans", n): ("invoice_every_months", "invoice_every_weeks"), ("contracts", n): (f"plan {n}",)}, unbilled=(n,)
    )


def _billing_day(day):
    def setup(op, n):
        op.contract(n, 1, 1, start_date=D, billing_day=day)
        return Expect({("contracts", n): ("billing_day", str(day), "1..28")}, unbilled=(n,))

    setup.__name__ = f"billing_day_{day}"
    return setup


for _day in (0, 29, 31):
    case(_billing_day(_day))


@case
def billing_day_on_weekly_plan(op, n):
    op.plan(n, months=0, weeks=1)
    op.contract(n, 1, n, start_date=D, billing_day=5)
    return Expect({("contracts", n): ("billing_day", "5", "weekly")}, unbilled=(n,))


@case
def cancellation_before_start(op, n):
    op.contract(n, 1, 1, start_date=D, cancellation_date=date(2024, 2, 15))
    return Expect({("contracts", n): ("cancellation_date", "2024-02-15", "start_date", "2024-03-01")}, unbilled=(n,))


@case
def contract_missing_customer(op, n):
    op.contract(n, 9000 + n, 1, start_date=D)
    return Expect({("contracts", n): ("customer_id", str(9000 + n))}, unbilled=(n,))


@case
def contract_missing_plan(op, n):
    op.contract(n, 1, 9000 + n, start_date=D)
    return Expect({("contracts", n): ("plan_id", str(9000 + n))}, unbilled=(n,))


@case
def customer_missing_location(op, n):
    op.customer(n, location_id=9000 + n)
    op.contract(n, n, 1, start_date=D)
    return Expect(
        {("customers", n): ("location_id", str(9000 + n)), ("contracts", n): (f"customer {n}",)}, unbilled=(n,)
    )  # depends on the quarantined customer


@case
def plan_missing_location(op, n):
    op.plan(n, location_id=9000 + n)
    op.contract(n, 1, n, start_date=D)
    return Expect({("plans", n): ("location_id", str(9000 + n)), ("contracts", n): (f"plan {n}",)}, unbilled=(n,))


@case
def crm_entry_missing_stage(op, n):
    op.customer(n)
    op.contract(n, n, 1, start_date=D)
    op.board(n)
    op.stage(n, board_id=n, deactivate_account_since=T0)
    op.entry(n, n, 9000 + n, entered_at=datetime(2024, 2, 1))
    return Expect({("crm_stage_entries", n): ("stage_id", str(9000 + n))}, billed=(n,))


@case
def crm_entry_missing_customer(op, n):
    op.board(n)
    op.stage(n, board_id=n, deactivate_account_since=T0)
    op.entry(n, 9000 + n, n, entered_at=datetime(2024, 2, 1))
    return Expect({("crm_stage_entries", n): ("customer_id", str(9000 + n))})


@case
def crm_board_missing_location(op, n):
    op.customer(n)
    op.contract(n, n, 1, start_date=D)
    op.board(n, location_id=9000 + n)
    op.stage(n, board_id=n, deactivate_account_since=T0)
    op.entry(n, n, n, entered_at=datetime(2024, 2, 1))  # would suspend customer n, but its stage is quarantined
    return Expect(
        {
            ("crm_boards", n): ("location_id", str(9000 + n)),
            ("crm_stages", n): (f"board {n}",),
            ("crm_stage_entries", n): (f"stage {n}",),
        },
        billed=(n,),
    )


@case
def event_missing_customer(op, n):
    op.event(9000 + n, datetime(2024, 2, 1), action="suspend", source="manual")
    return Expect({("suspension_events", _event_id(op, 9000 + n, "suspend")): ("customer_id", str(9000 + n))})


@case
def lift_not_manual(op, n):
    op.customer(n)
    op.contract(n, n, 1, start_date=D)
    op.event(n, datetime(2024, 2, 1), action="suspend", source="manual")
    op.event(n, datetime(2024, 2, 15), action="lift", source="plan")  # only a manual lift counts
    # the bad lift is ignored: customer n stays suspended, its contract is skipped, not invoiced
    return Expect(
        {("suspension_events", _event_id(op, n, "lift")): ("lift", "source", "plan", "manual")},
        unbilled=(n,),
        skipped={n: "suspended"},
    )


@case
def unknown_action(op, n):
    op.customer(n)
    op.contract(n, n, 1, start_date=D)
    op.event(n, datetime(2024, 2, 1), action="pause", source="manual")
    return Expect({("suspension_events", _event_id(op, n, "pause")): ("action", "pause")}, billed=(n,))


@case
def unknown_source(op, n):
    op.customer(n)
    op.contract(n, n, 1, start_date=D)
    op.event(n, datetime(2024, 2, 1), action="suspend", source="robot")
    return Expect({("suspension_events", _event_id(op, n, "suspend")): ("source", "robot")}, billed=(n,))


@case
def customer_of_quarantined_location(op, n):
    op.location(n, currency="EUR", tax_rate="-0.2000")  # a negative tax rate
    op.customer(n, location_id=n)
    op.contract(n, n, 1, start_date=D)
    return Expect(
        {
            ("locations", n): ("tax_rate", "-0.2"),
            ("customers", n): (f"location {n}",),
            ("contracts", n): (f"customer {n}",),
        },
        unbilled=(n,),
    )


def quarantine_of(op: Operator, d: date) -> dict:
    rows = op.rows(s.quarantine, billing_date=d)
    keys = [(r["source_table"], r["row_id"]) for r in rows]
    assert len(keys) == len(set(keys)), f"duplicate quarantine rows on {d}: {rows}"
    return {(r["source_table"], r["row_id"]): r["reason"] for r in rows}


def assert_reconciles(op: Operator, d: date) -> dict:
    """billing_runs' counts for d agree with what d wrote."""
    [run] = op.rows(s.billing_runs, billing_date=d)
    assert run["status"] == "published"
    quarantine = quarantine_of(op, d)
    lines = op.lines(d)
    skipped = op.rows(s.skipped_contracts, billing_date=d)
    assert run["quarantined_rows"] == len(quarantine)
    assert run["contracts_quarantined"] == sum(1 for t, _ in quarantine if t == "contracts")
    assert run["contracts_invoiced"] == len({l["contract_id"] for l in lines})
    assert run["contracts_skipped"] == len(skipped)
    assert run["lines"] == len(lines)
    assert run["invoices"] == len(op.rows(s.invoices, billing_date=d))
    return run


@dataclass
class World:
    """One database per dialect holding every case at once, run for D, rerun for D, then run for D_NEXT."""

    expects: dict
    error: str | None = None
    quarantine: dict = field(default_factory=dict)  # date -> {(table, id): reason}, after the first run of each
    rerun_quarantine: dict = field(default_factory=dict)
    lines: list = field(default_factory=list)  # every line after the first run of D
    rerun_lines: list = field(default_factory=list)
    all_lines: list = field(default_factory=list)  # every line at the end
    skipped: dict = field(default_factory=dict)  # contract_id -> reason on D
    runs: dict = field(default_factory=dict)  # date -> billing_runs row (checked against the outputs)
    reconciled: dict = field(default_factory=dict)  # date -> None, or the AssertionError text
    checks: tuple = ()  # (the checks D's run kept, the same checks from a second GX pass), after its first run
    parted: tuple = ()  # D's input verdict read and checked at once, and in parts of a few rows


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('quarantine') / 'flexbill.sqlite'}"
        else:
            [url] = stack.enter_context(pg_databases(1))
        engine = make_engine(url)
        stack.callback(engine.dispose)
        init_db(engine)
        op = Operator(engine)
        healthy(op)
        w = World({kind: build(op, 10 * (i + 1)) for i, (kind, build) in enumerate(CASES.items())})
        try:
            run_billing_date(engine, D)
            w.quarantine[D] = quarantine_of(op, D)
            w.lines = op.lines()
            w.skipped = {r["contract_id"]: r["reason"] for r in op.rows(s.skipped_contracts, billing_date=D)}
            w.reconciled[D] = _reconciles(op, D)
            w.checks = kept_and_revalidated(engine, D, tmp_path_factory.mktemp("gx"))
            w.parted = verdicts_at_once_and_in_parts(engine, D)
            run_billing_date(engine, D)
            w.rerun_quarantine[D] = quarantine_of(op, D)
            w.rerun_lines = op.lines()
            run_billing_date(engine, D_NEXT)
            w.quarantine[D_NEXT] = quarantine_of(op, D_NEXT)
            w.reconciled[D_NEXT] = _reconciles(op, D_NEXT)
            w.all_lines = op.lines()
        except Exception as exc:  # noqa: BLE001 - every test reports it
            w.error = f"{type(exc).__name__}: {exc}"
        yield w


def kept_and_revalidated(engine, d: date, gx_dir) -> tuple[list, list]:
    """What the finance report shows of D's checks (suite, column, passed, failing rows, rows checked): as D's run
    kept them in data_quality, and as a second Great Expectations pass over D's snapshot and outputs finds them."""

    def shown(dq):
        rows = {name: dq.evaluated_rows[name] for name in dq.success}
        return sorted((c.suite, c.expectation, c.column, c.success, c.unexpected, rows[c.suite]) for c in dq.checks)

    with engine.connect() as conn:
        kept = quality.stored_checks(conn, d)
        assert kept is not None, "the run kept no checks"
        return shown(quality.kept_date(conn, d, kept, gx_dir)), shown(quality.validate_date(conn, d, gx_dir))


def verdicts_at_once_and_in_parts(engine, d: date) -> tuple:
    """D's input verdict with the defaults, and with the tables read (extract.READ_ROWS) and checked by GX
    (validation.GX_ROWS) in parts of a few rows, as a 10M operator's are."""
    verdicts = []
    with engine.connect() as conn, pytest.MonkeyPatch.context() as patch:
        for read_rows, gx_rows in ((extract.READ_ROWS, validation.GX_ROWS), (3, 4)):
            patch.setattr(extract, "READ_ROWS", read_rows)
            patch.setattr(validation, "GX_ROWS", gx_rows)
            verdicts.append(validation.check_inputs(extract.snapshot(conn, cutoff_of(d))))
        handed_over = extract.snapshot(conn, cutoff_of(d))  # `flexbill run`: the checks take the snapshot's tables
        verdicts.append(validation.check_inputs(handed_over, owned=True))
        assert handed_over == {}, "the checks left tables behind in the snapshot they were handed"
    return tuple(verdicts)


def _reconciles(op, d):
    try:
        assert_reconciles(op, d)
    except AssertionError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("kind", list(CASES))
def test_bad_row_is_quarantined_with_an_actionable_reason_and_never_billed(world, kind):
    assert world.error is None, f"the run crashed: {world.error}"
    expect = world.expects[kind]
    quarantine = world.quarantine[D]
    for key, fragments in expect.quarantined.items():
        assert key in quarantine, f"{key} is not in D's quarantine"
        reason = quarantine[key]
        for fragment in fragments:
            assert fragment in reason, f"{key}: {fragment!r} not in reason {reason!r}"
        assert_actionable(key, reason)
        # the rerun replaces the row; the next date lists it again (each date's report is complete)
        assert world.rerun_quarantine[D].get(key) == reason
        assert world.quarantine[D_NEXT].get(key) == reason
    billed_on_d = {l["contract_id"] for l in world.lines}
    assert [l for l in world.all_lines if l["contract_id"] in expect.unbilled] == []
    assert set(expect.billed) <= billed_on_d
    mine = set(expect.unbilled) | set(expect.billed) | set(expect.skipped)
    assert {c: r for c, r in world.skipped.items() if c in mine} == expect.skipped


def test_the_rest_is_billed_and_each_run_reconciles(world):
    assert world.error is None, f"the run crashed: {world.error}"
    expected = {key for e in world.expects.values() for key in e.quarantined}
    assert set(world.quarantine[D]) == expected  # nothing healthy is quarantined, nothing bad is missed
    assert world.rerun_quarantine[D] == world.quarantine[D]
    assert world.quarantine[D_NEXT] == world.quarantine[D]
    billed = {c for e in world.expects.values() for c in e.billed}
    assert sorted((l["contract_id"], l["period_start"], l["amount"]) for l in world.lines) == sorted(
        [(1, D, Decimal("100.00"))] + [(c, D, Decimal("100.00")) for c in billed]
    )
    assert world.rerun_lines == world.lines
    assert {(l["contract_id"], l["period_start"]) for l in world.all_lines if l["billing_date"] == D_NEXT} == {
        (c, D_NEXT) for c in billed | {1}
    }
    assert world.reconciled == {D: None, D_NEXT: None}


def test_the_checks_a_run_keeps_are_what_a_second_validation_finds(world):
    """The finance report shows the checks D's run kept instead of validating again: every check, with its
    failing rows, equals what a second Great Expectations pass over D's snapshot and outputs finds."""
    assert world.error is None, f"the run crashed: {world.error}"
    kept, revalidated = world.checks
    assert kept == revalidated
    failing = {(suite, column) for suite, _, column, success, _, _ in kept if not success}
    assert len(failing) >= 15 and all(suite == "flexbill_inputs" for suite, _ in failing)  # the cases fail ...
    assert all(n > 0 for _, _, _, success, n, _ in kept if not success)  # ... with their rows counted


def test_reading_and_checking_in_parts_finds_what_one_pass_finds(world):
    """A large table is read and checked in parts, and `flexbill run` hands its snapshot over to the checks (bounded
    memory at 10M); with every kind of bad row spread over parts of a few rows, the quarantine, its reasons, the
    kept checks and the valid rows are those of one pass over a snapshot the caller keeps."""
    import pandas as pd

    assert world.error is None, f"the run crashed: {world.error}"
    whole, *others = world.parted
    assert len(whole.quarantine) >= 20
    for other in others:  # in parts; and handed over (valid rows copied a column at a time)
        pd.testing.assert_frame_equal(other.quarantine, whole.quarantine)
        pd.testing.assert_frame_equal(other.checks, whole.checks)
        assert other.valid.keys() == whole.valid.keys()
        for name, frame in whole.valid.items():
            pd.testing.assert_frame_equal(other.valid[name], frame, check_exact=True)
            for column in frame.columns:
                if frame[column].dtype == object:
                    assert other.valid[name][column].map(type).tolist() == frame[column].map(type).tolist()


def test_each_date_lists_every_bad_row_visible_at_its_cutoff_and_a_rerun_replaces(engine):
    op = Operator(engine)
    healthy(op)
    op.plan(2, price="-1.00")  # plans have no creation instant: visible on every date
    op.contract(2, 1, 1, start_date=D, quantity=0, created_at=T0)
    op.contract(3, 1, 1, start_date=D, quantity=0, created_at=datetime(2024, 3, 2, 9, 30))  # after D's cutoff
    op.contract(4, 1, 1, start_date=D, quantity=0, created_at=datetime(2024, 3, 1, 23, 59, 59))  # before it
    d1, d2 = D, date(2024, 3, 2)

    run_billing_date(engine, d1)
    run_billing_date(engine, d2)
    first_d1, first_d2 = quarantine_of(op, d1), quarantine_of(op, d2)
    assert set(first_d1) == {("plans", 2), ("contracts", 2), ("contracts", 4)}
    assert set(first_d2) == {("plans", 2), ("contracts", 2), ("contracts", 3), ("contracts", 4)}

    # backfilling d1 again after d2 reproduces d1's list exactly and leaves d2's alone
    run_billing_date(engine, d1)
    run_billing_date(engine, d1)
    assert quarantine_of(op, d1) == first_d1
    assert quarantine_of(op, d2) == first_d2
    assert len(op.rows(s.quarantine)) == len(first_d1) + len(first_d2)
    assert [l["contract_id"] for l in op.lines()] == [1]


def test_contracts_with_owed_periods_reconcile_with_invoiced_skipped_and_quarantined(engine):
    """CONTRACT.md: contracts with owed periods = invoiced + skipped + quarantined (+ billed later).

    billing_runs.contracts_owed counts the contracts that may be billed (quarantined ones
    apart, since a bad row's periods cannot be trusted), and contracts_quarantined the rest."""
    op = Operator(engine)
    healthy(op)
    op.customer(2)
    op.event(2, datetime(2024, 2, 1), action="suspend")
    op.contract(2, 2, 1, start_date=D)  # owed, customer suspended: skipped
    op.contract(3, 1, 1, start_date=D, quantity=0)  # owed, quarantined
    op.contract(4, 1, 1, start_date=date(2024, 6, 1))  # not owed yet
    op.contract(5, 1, 1, start_date=D, cancellation_date=D)  # ends before it starts: owes nothing
    run_billing_date(engine, D)
    run = assert_reconciles(op, D)
    owed_by_hand = 3  # contracts 1, 2 and 3
    assert (
        run["contracts_invoiced"],
        run["contracts_skipped"],
        run["contracts_quarantined"],
        run["contracts_billed_later"],
    ) == (1, 1, 1, 0)
    assert owed_by_hand == (
        run["contracts_invoiced"]
        + run["contracts_skipped"]
        + run["contracts_quarantined"]
        + run["contracts_billed_later"]
    )
    assert run["contracts_owed"] + run["contracts_quarantined"] == owed_by_hand


def test_automatic_rules_ignore_quarantined_rows(engine):
    op = Operator(engine)
    healthy(op)
    op.plan(2, suspend_customers_joining_since=T0)
    op.contract(2, 1, 2, start_date=D, quantity=0, created_at=datetime(2024, 2, 1))  # would suspend customer 1
    op.board(1)
    op.stage(1, deactivate_account_since=T0)
    # location 3 keeps new accounts suspended but is quarantined (negative tax rate), so is customer 3
    op.location(3, tax_rate="-0.2000", keep_new_accounts_suspended_since=T0)
    op.customer(3, location_id=3, created_at=datetime(2024, 2, 1))
    op.entry(2, 3, 1, entered_at=datetime(2024, 2, 2))  # its CRM entry would suspend it
    op.entry(3, 1, 93, entered_at=datetime(2024, 2, 2))  # a quarantined entry of customer 1 (no stage 93)
    run_billing_date(engine, D)
    assert op.rows(s.suspension_events) == []
    assert [l["contract_id"] for l in op.lines(D)] == [1]
    assert op.rows(s.skipped_contracts) == []


# ---------------------------------------------------------------- SQLite: text where a date or timestamp belongs


@pytest.fixture
def sqlite_engine(sqlite_database):
    from flexbill.db.connect import init_db, make_engine

    eng = make_engine(sqlite_database)
    init_db(eng)
    yield eng
    eng.dispose()


def _raw(engine, sql: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql))


MALFORMED = {  # kind -> (column of contracts, text)
    "start_date_words": ("start_date", "soon"),
    "start_date_impossible": ("start_date", "2024-02-30"),
    "start_date_day_first": ("start_date", "01/02/2024"),
    "start_date_with_time": ("start_date", "2024-02-01 10:00:00"),
    "cancellation_date_impossible": ("cancellation_date", "2024-02-30"),
    "cancellation_date_words": ("cancellation_date", "end of May"),
    "next_invoice_date_words": ("next_invoice_date", "next month"),
    "created_at_words": ("created_at", "last tuesday"),
}


@pytest.fixture(scope="module")
def malformed_world(tmp_path_factory):
    """SQLite: contract 10, 20... each with one malformed column, billed for D once."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('malformed') / 'flexbill.sqlite'}")
    init_db(engine)
    op = Operator(engine)
    healthy(op)
    ids = {}
    for i, (kind, (column, value)) in enumerate(MALFORMED.items()):
        n = ids[kind] = 10 * (i + 1)
        op.contract(n, 1, 1, start_date=date(2024, 2, 1))
        _raw(engine, f"update contracts set {column} = '{value}' where id = {n}")
    error = None
    try:
        run_billing_date(engine, D)
    except Exception as exc:  # noqa: BLE001 - every test reports it
        error = f"{type(exc).__name__}: {exc}"
    checks = kept_and_revalidated(engine, D, tmp_path_factory.mktemp("gx")) if error is None else None
    yield ids, error, quarantine_of(op, D), op.lines(), checks
    engine.dispose()


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_sqlite_malformed_date_text_is_quarantined(malformed_world, kind):
    ids, error, quarantine, lines, _ = malformed_world
    assert error is None, f"the run crashed: {error}"
    column, value = MALFORMED[kind]
    n = ids[kind]
    assert ("contracts", n) in quarantine, f"contract {n} ({column} = {value!r}) is not quarantined"
    reason = quarantine[("contracts", n)]
    assert column in reason and value in reason, reason
    assert_actionable(("contracts", n), reason)
    assert [l for l in lines if l["contract_id"] == n] == []
    assert [l["contract_id"] for l in lines if l["contract_id"] not in ids.values()] == [1]


def test_sqlite_malformed_values_are_counted_by_the_kept_required_check(malformed_world):
    ids, error, _, _, checks = malformed_world
    assert error is None, f"the run crashed: {error}"
    kept, revalidated = checks
    assert kept == revalidated
    [required] = [c for c in kept if c[2] == "contracts.missing_required"]
    assert required[3] is False and required[4] == len(ids)  # each malformed contract, once


def test_sqlite_malformed_archived_at_is_quarantined_not_billed(sqlite_engine):
    op = Operator(sqlite_engine)
    healthy(op)
    op.customer(2)
    op.contract(2, 2, 1, start_date=D)
    _raw(sqlite_engine, "update customers set archived_at = 'last week' where id = 2")
    run_billing_date(sqlite_engine, D)
    quarantine = quarantine_of(op, D)
    assert ("customers", 2) in quarantine, quarantine
    assert "archived_at" in quarantine[("customers", 2)] and "last week" in quarantine[("customers", 2)]
    assert [l["contract_id"] for l in op.lines()] == [1]


def test_sqlite_timestamps_with_an_offset_are_converted_to_utc(sqlite_engine):
    op = Operator(sqlite_engine)
    healthy(op)
    op.customer(2)
    op.contract(2, 2, 1, start_date=D)
    op.customer(3)
    op.contract(3, 3, 1, start_date=D)
    # 2024-03-02 01:00+02:00 is 2024-03-01 23:00 UTC: before D's cutoff, so customer 2 is suspended on D
    _raw(
        sqlite_engine,
        "insert into suspension_events (customer_id, occurred_at, action, source, actor) "
        "values (2, '2024-03-02 01:00:00+02:00', 'suspend', 'manual', 'a@x.io')",
    )
    # 2024-03-01 23:30-02:00 is 2024-03-02 01:30 UTC: after D's cutoff, so contract 3 does not exist yet on D
    _raw(sqlite_engine, "update contracts set created_at = '2024-03-01T23:30:00-02:00' where id = 3")

    run_billing_date(sqlite_engine, D)
    assert quarantine_of(op, D) == {}
    assert {r["contract_id"]: r["reason"] for r in op.rows(s.skipped_contracts, billing_date=D)} == {2: "suspended"}
    assert [l["contract_id"] for l in op.lines(D)] == [1]

    run_billing_date(sqlite_engine, date(2024, 3, 2))
    assert [(l["contract_id"], l["period_start"]) for l in op.lines(date(2024, 3, 2))] == [(3, D)]
    assert_reconciles(op, date(2024, 3, 2))
