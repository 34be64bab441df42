"""Exactly once (CONTRACT.md, "One run", step 6): a period is never invoiced twice,
whatever is re-run or run at once; a killed run writes nothing.

The real `flexbill` console script runs in subprocesses; the expected contents
come from the same scenario run in-process (the same code path) on another fresh
database.  Processes that can run at once are started together: each start of
`flexbill` costs seconds of imports.
"""

from __future__ import annotations

import contextlib
import threading
from datetime import date, datetime

import pytest
from sqlalchemy import text

from flexbill.db import schema as s
from flexbill.db.connect import init_db, make_engine
from flexbill.manual import record_manual_event
from flexbill.runner import run_billing_date
from tests.builders import Operator
from tests.processes import TIMEOUT, clean_env, dump, pg_databases, start

D0 = date(2024, 2, 15)  # billed before each test's run
D = date(2024, 3, 1)  # the run under test
DIALECTS = ["sqlite", "postgresql"]
PAUSE_POINTS = ["locked", "after_rules", "mid_write", "before_commit"]
SUSPEND_AT = datetime(2024, 3, 1, 12, 0)  # before D's cutoff: it decides whether customer 1 is invoiced on D


def scenario(op: Operator) -> None:
    """Every kind of output on D: invoices (prorated, weekly, back-billed), skips, quarantine, report, rule events."""
    op.location(1, currency="EUR", tax_rate="0.2000")
    op.location(2, currency="EUR", tax_rate="0.1000", keep_new_accounts_suspended_since=datetime(2024, 2, 15))
    op.plan(1, price="100.00")
    op.plan(2, price="30.00", months=0, weeks=1)
    op.plan(3, price="50.00", suspend_customers_joining_since=datetime(2024, 2, 20))
    op.plan(4, price="80.00", location_id=2)
    op.customer(1)
    op.contract(1, 1, 1, start_date=date(2024, 1, 20), billing_day=1)  # prorated first period, then every 1st
    op.customer(2)
    op.contract(2, 2, 2, start_date=date(2024, 2, 5), quantity=2)  # weekly
    op.customer(3)
    op.contract(3, 3, 1, start_date=date(2024, 2, 1))
    op.event(3, datetime(2024, 2, 20), action="suspend", source="manual")  # skipped on D, billed on D0
    op.customer(4, location_id=2, created_at=datetime(2024, 2, 25))  # signup rule fires on D
    op.contract(4, 4, 4, start_date=date(2024, 2, 26), created_at=datetime(2024, 2, 25))
    op.customer(5)
    op.contract(5, 5, 3, start_date=date(2024, 2, 22), created_at=datetime(2024, 2, 22))  # plan rule fires on D
    op.customer(6)
    op.contract(6, 6, 1, start_date=date(2024, 2, 1), quantity=0)  # quarantined
    op.customer(7, archived_at=datetime(2024, 2, 20))
    op.contract(7, 7, 1, start_date=date(2024, 1, 1))  # archived on D
    op.customer(8, portal_access=False)  # a contact


def prepare(url: str, *, through: date | None = D0):
    """Schema, scenario and (by default) the run for D0, in-process; returns the engine."""
    engine = make_engine(url)
    init_db(engine)
    scenario(Operator(engine))
    if through is not None:
        run_billing_date(engine, through)
    return engine


@contextlib.contextmanager
def databases(dialect: str, count: int, tmp_path_factory):
    """`count` fresh databases of `dialect`; yields their URLs."""
    if dialect == "postgresql":
        with pg_databases(count) as urls:
            yield urls
    else:
        yield [f"sqlite:///{tmp_path_factory.mktemp('db') / 'flexbill.sqlite'}" for _ in range(count)]


def outputs_of(engine, d: date) -> dict:
    """How many rows of each output of date d there are."""
    with engine.connect() as conn:

        def count(sql):
            return conn.execute(text(sql), {"d": d}).scalar()

        return {
            "invoices": count("select count(*) from invoices where billing_date = :d"),
            "invoice_lines": count(
                "select count(*) from invoice_lines l join invoices i "
                "on i.invoice_id = l.invoice_id where i.billing_date = :d"
            ),
            "skipped_contracts": count("select count(*) from skipped_contracts where billing_date = :d"),
            "quarantine": count("select count(*) from quarantine where billing_date = :d"),
            "active_user_report": count("select count(*) from active_user_report where report_date = :d"),
            "billing_runs": count("select count(*) from billing_runs where billing_date = :d"),
        }


def duplicate_periods(engine) -> list:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "select contract_id, period_start, count(*) from invoice_lines "
                    "group by contract_id, period_start having count(*) > 1"
                )
            )
        )


def test_the_scenario_writes_every_kind_of_output(tmp_path_factory):
    """Guards the tests below: an empty output could not reveal a partial write."""
    with databases("sqlite", 1, tmp_path_factory) as [url]:
        engine = prepare(url, through=None)
        run_billing_date(engine, D0)
        events_before = len(Operator(engine).rows(s.suspension_events))
        summary = run_billing_date(engine, D)
        counts = outputs_of(engine, D)
        assert all(counts.values()), counts
        assert summary.stats["events_appended"] == 2
        assert len(Operator(engine).rows(s.suspension_events)) == events_before + 2
        assert summary.stats["back_billed_lines"] >= 1
        engine.dispose()


# ---------------------------------------------------------------- every process at once
#
# One module fixture prepares every database, starts every `flexbill` process of the
# tests below at the same time (a start costs seconds of imports, mostly CPU), then
# waits for, or kills, each of them.  The tests read what it recorded.


class Job:
    """A group of processes on one database; `start` launches them, `finish` collects them."""

    def start(self, cwd) -> None: ...

    def finish(self) -> None: ...


class TwoRuns(Job):
    """Two `flexbill run --date D` started at the same instant on one database."""

    def __init__(self, url):
        self.url = url

    def start(self, cwd):
        self.procs = [start("run", "--date", D.isoformat(), db=self.url, cwd=cwd) for _ in range(2)]

    def finish(self):
        self.results = [p.wait() for p in self.procs]


class Killed(Job):
    """`flexbill run --date D` SIGKILLed when it prints "paused at <point>"."""

    def __init__(self, url, point):
        self.url, self.point = url, point
        self.paused, self.error = None, None

    def start(self, cwd):
        env = clean_env(self.url, FLEXBILL_PAUSE_AT=self.point, FLEXBILL_PAUSE_SECONDS="600")
        self.proc = start("run", "--date", D.isoformat(), env=env, cwd=cwd)

    def finish(self):
        try:
            self.paused = self.proc.wait_for_line(f"paused at {self.point}")
        except AssertionError as exc:
            self.error = str(exc)
        self.returncode = self.proc.kill()


class Race(Job):
    """A run and a manual suspend of customer 1 started at the same instant."""

    ARGS = (
        "suspend",
        "--customer",
        "1",
        "--actor",
        "ops@example.com",
        "--reason",
        "race",
        "--at",
        SUSPEND_AT.isoformat() + "Z",
        "--backdate",
    )  # dated inside D: a race with D's run

    def __init__(self, url):
        self.url = url

    def start(self, cwd):
        self.procs = [
            start("run", "--date", D.isoformat(), db=self.url, cwd=cwd),
            start(*self.ARGS, db=self.url, cwd=cwd),
        ]

    def finish(self):
        self.results = [p.wait() for p in self.procs]


class RunHoldingTheLock(Job):
    """A run that pauses right after taking the run lock; as soon as it says so, a manual
    suspend of customer 1 (in this process, the same code as `flexbill suspend`) starts."""

    def __init__(self, url, engine):
        self.url, self.engine = url, engine
        self.suspend_error, self.run_alive_when_suspending = None, None

    def start(self, cwd):
        env = clean_env(self.url, FLEXBILL_PAUSE_AT="locked", FLEXBILL_PAUSE_SECONDS="8")
        self.proc = start("run", "--date", D.isoformat(), env=env, cwd=cwd)
        self.thread = threading.Thread(target=self._suspend_when_locked, daemon=True)
        self.thread.start()

    def _suspend_when_locked(self):
        try:
            self.proc.wait_for_line("paused at locked")
            self.run_alive_when_suspending = self.proc.popen.poll() is None
            _suspend(self.engine)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.suspend_error = f"{type(exc).__name__}: {exc}"

    def finish(self):
        self.result = self.proc.wait()
        self.thread.join(TIMEOUT)


def _suspend(engine) -> None:
    record_manual_event(engine, 1, "suspend", "ops@example.com", "race", SUSPEND_AT, backdate=True)


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """dialect -> {"ref": engine run uninterrupted, "run first"/"suspend first": serial orders,
    and the jobs: "two runs", "race", "locked", ("killed", point)}; job databases hold D0's run."""
    with contextlib.ExitStack() as stack:
        out = {}
        per_dialect = 6 + len(PAUSE_POINTS)  # ref, run first, suspend first, two runs, race, locked, kills
        for dialect in DIALECTS:
            urls = stack.enter_context(databases(dialect, per_dialect, tmp_path_factory))
            engines = [prepare(u) for u in urls]
            for engine in engines:
                stack.callback(engine.dispose)
            ref, run_first, suspend_first, *rest = zip(urls, engines)
            run_billing_date(ref[1], D)
            run_billing_date(run_first[1], D)
            _suspend(run_first[1])
            _suspend(suspend_first[1])
            run_billing_date(suspend_first[1], D)
            two, race, locked, *kills = rest
            out[dialect] = {
                "ref": ref[1],
                "run first": run_first[1],
                "suspend first": suspend_first[1],
                "two runs": TwoRuns(two[0]),
                "race": Race(race[0]),
                "locked": RunHoldingTheLock(*locked),
                **{("killed", p): Killed(u, p) for p, (u, _) in zip(PAUSE_POINTS, kills)},
            }
            out[dialect]["engines"] = {
                "two runs": two[1],
                "race": race[1],
                "locked": locked[1],
                **{("killed", p): e for p, (_, e) in zip(PAUSE_POINTS, kills)},
            }
            out[dialect]["before"] = {k: dump(e) for k, e in out[dialect]["engines"].items()}
        jobs = [job for d in out.values() for job in d.values() if isinstance(job, Job)]
        cwd = tmp_path_factory.mktemp("cwd")
        for job in jobs:
            job.start(cwd)
        # kill first: a paused process holds its memory until then
        for job in sorted(jobs, key=lambda j: not isinstance(j, Killed)):
            job.finish()
        yield out


# ---------------------------------------------------------------- two runs at once


@pytest.mark.parametrize("dialect", DIALECTS)
def test_two_runs_started_at_once_give_the_result_of_one(launched, dialect):
    job, race, ref = launched[dialect]["two runs"], launched[dialect]["engines"]["two runs"], launched[dialect]["ref"]
    for res in job.results:
        assert res.returncode == 0, res.stderr
        assert "Traceback" not in res.stderr
    assert duplicate_periods(race) == []
    # the later of the two replaced the first's outputs with the same ones; how many rule
    # events each attempt appended is bookkeeping of the attempt, not a result
    ignore = {"billing_runs": {"started_at", "finished_at", "published_at", "events_appended"}}
    assert dump(race, ignore) == dump(ref, ignore)


# ---------------------------------------------------------------- SIGKILL at each pause point


@pytest.mark.parametrize("point", PAUSE_POINTS)
@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_run_killed_at_a_pause_point_writes_nothing_and_a_rerun_is_complete(launched, dialect, point):
    job = launched[dialect]["killed", point]
    engine, ref = launched[dialect]["engines"]["killed", point], launched[dialect]["ref"]
    assert job.paused is not None, job.error
    assert job.returncode == -9
    # nothing of D: no invoices, lines, skips, quarantine, report or run row, no rule event appended
    assert outputs_of(engine, D) == {k: 0 for k in outputs_of(engine, D)}
    assert dump(engine) == launched[dialect]["before"]["killed", point]
    # the rerun gives what an uninterrupted run gives
    run_billing_date(engine, D)
    assert duplicate_periods(engine) == []
    assert dump(engine) == dump(ref)


# ---------------------------------------------------------------- a run racing a manual suspend


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_run_racing_a_manual_suspend_gives_one_of_the_serial_orders(launched, dialect):
    got = launched[dialect]
    serial = {"run first": dump(got["run first"]), "suspend first": dump(got["suspend first"])}
    assert serial["run first"] != serial["suspend first"]  # the race can tell them apart
    for res in got["race"].results:
        assert res.returncode == 0, f"{res.args}: {res.stderr}"
    raced = dump(got["engines"]["race"])
    assert raced in serial.values(), "the race gave a result no serial order gives"
    assert duplicate_periods(got["engines"]["race"]) == []


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_suspend_waits_for_the_run_holding_the_lock(launched, dialect):
    got = launched[dialect]
    job = got["locked"]
    assert job.result.returncode == 0, job.result.stderr
    assert job.suspend_error is None
    assert job.run_alive_when_suspending, "the run ended before the suspend started: no overlap was tested"
    # the run held the lock when the suspend started: the suspend waited and came second
    assert dump(got["engines"]["locked"]) == dump(got["run first"])
