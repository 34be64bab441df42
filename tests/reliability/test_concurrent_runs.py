"""Runs at once: two runs of one date, and a run racing a manual suspend or lift.

Promise (CONTRACT.md "One run" 6, README "Reruns"/"Running on Airflow"): whatever runs at
once, the result is the result of one of the serial orders, never a mix; a period is
never invoiced twice.

tests/integration/test_exactly_once.py covers two `flexbill run` at once, a run racing
`flexbill suspend`, and a suspend waiting for a run that holds the lock.  This module
covers what it does not:

* two DAG runs of the same date (different run ids) at once, as forked processes started
  together, and in fixed interleavings: both stage, then both publish (the later one must
  refuse its stale staging and publish nothing), and a `flexbill run` publishing while a DAG
  run is staging;
* `flexbill lift` racing `flexbill run`: the run is held right after it took the run lock
  (FLEXBILL_PAUSE_AT=locked) while the lift starts, so the two certainly overlap;
* a manual suspend or lift recorded between two tasks of a DAG run: after extract_snapshot,
  after the owed_periods tasks, after validate_output.  Only the
  boundaries where the promise holds today are checked here: a suspend or lift recorded after a
  location's `suspension_filter` and before `active_user_report` gives a mix (the customer
  is invoiced on D and counted suspended in D's active-user report, or the reverse).  That
  is a flexbill bug, reported with its own failing test outside this suite; add positions
  7, 8 and 10 to EVENT_POSITIONS once it is fixed.
"""

from __future__ import annotations

import contextlib
import threading

import pytest

from flexbill.db.connect import make_engine
from flexbill.manual import record_manual_event
from flexbill.runner import run_billing_date
from tests.processes import TIMEOUT, clean_env, start
from tests.reliability.dag_driver import position
from tests.reliability.world import (
    DIALECTS,
    LIFT_AT,
    LOCATIONS,
    SUSPEND_AT,
    D,
    Databases,
    contents,
    duplicate_periods,
    staging_rows,
    template,
    without_attempt,
)

STALE = "its staging is stale"
VALIDATED = position("validate_output", LOCATIONS)  # position of validate_output: what a run has staged before publish
EVENTS = {
    "suspend": {"customer": 1, "action": "suspend", "at": SUSPEND_AT.isoformat()},
    "lift": {"customer": 11, "action": "lift", "at": LIFT_AT.isoformat()},
}
# after the task at this position (0 = before the first task, 13 = after publish)
# (before the first task and after publish are serial by construction; between two rules is like after the
# first one: they do not read the events a manual event appends)
EVENT_POSITIONS = {"suspend": [1, 6, 12], "lift": [6]}
PAIRS = 1  # pairs of DAG runs started together, per dialect


def _event(url: str, kind: str) -> None:
    from datetime import datetime

    engine = make_engine(url)
    try:
        e = EVENTS[kind]
        record_manual_event(
            engine,
            e["customer"],
            e["action"],
            "ops@example.com",
            "race",
            datetime.fromisoformat(e["at"]),
            backdate=True,
        )  # dated inside D: a race with D's run
    finally:
        engine.dispose()


def _run(url: str) -> None:
    engine = make_engine(url)
    try:
        run_billing_date(engine, D)
    finally:
        engine.dispose()


class LiftWhileLocked:
    """`flexbill run` pausing right after it took the run lock; as soon as it says so, a manual
    lift of customer 11 starts in this process (the code of `flexbill lift`) and must wait."""

    def __init__(self, url, cwd):
        self.url, self.error, self.alive = url, None, None
        env = clean_env(url, FLEXBILL_PAUSE_AT="locked", FLEXBILL_PAUSE_SECONDS="6")
        self.proc = start("run", "--date", D.isoformat(), env=env, cwd=cwd)
        self.thread = threading.Thread(target=self._lift, daemon=True)
        self.thread.start()

    def _lift(self):
        try:
            self.proc.wait_for_line("paused at locked")
            self.alive = self.proc.popen.poll() is None
            _event(self.url, "lift")
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = f"{type(exc).__name__}: {exc}"

    def finish(self):
        self.result = self.proc.wait()
        self.thread.join(TIMEOUT)


@pytest.fixture(scope="module")
def world(driver, tmp_path_factory):
    with contextlib.ExitStack() as stack:
        cwd = tmp_path_factory.mktemp("cwd")
        out, dbs, tpl = {}, {}, {}
        for dialect in DIALECTS:
            dbs[dialect] = Databases(dialect, tmp_path_factory.mktemp(f"race-{dialect}"))
            stack.callback(dbs[dialect].close)
            tpl[dialect] = template(dbs[dialect])
        # processes first: they take seconds to start, and run while the driver works
        cli = {}
        for dialect in DIALECTS:
            locked = dbs[dialect].clone(tpl[dialect])
            cli[dialect, "locked"] = (locked, LiftWhileLocked(locked, cwd))

        for dialect in DIALECTS:  # the serial orders
            d, serial = dbs[dialect], {}
            for name, steps in (
                ("run", ["run"]),
                ("run, suspend", ["run", "suspend"]),
                ("suspend, run", ["suspend", "run"]),
                ("run, lift", ["run", "lift"]),
                ("lift, run", ["lift", "run"]),
            ):
                url = d.clone(tpl[dialect])
                for step in steps:
                    _run(url) if step == "run" else _event(url, step)
                serial[name] = contents(url)
            out[dialect] = {"serial": serial}

        # two DAG runs started together (all pairs at once)
        jobs, urls = [], {}
        for dialect in DIALECTS:
            for pair in range(PAIRS):
                url = urls[dialect, "pair", pair] = dbs[dialect].clone(tpl[dialect])
                jobs += [
                    {
                        "id": f"{dialect} pair {pair} {who}",
                        "url": url,
                        "date": D.isoformat(),
                        "run_id": f"dag-{who}",
                        "locations": LOCATIONS,
                    }
                    for who in "AB"
                ]
        together = driver.run(jobs, parallel=len(jobs))

        # fixed interleavings: A and B stage; C stages while `flexbill run` publishes
        staged = []
        for dialect in DIALECTS:
            urls[dialect, "AB"] = dbs[dialect].clone(tpl[dialect])
            urls[dialect, "C"] = dbs[dialect].clone(tpl[dialect])
            staged += [
                {
                    "id": f"{dialect} {who} staged",
                    "url": urls[dialect, "AB" if who in "AB" else "C"],
                    "date": D.isoformat(),
                    "run_id": f"dag-{who}",
                    "locations": LOCATIONS,
                    "stop": VALIDATED,
                }
                for who in "ABC"
            ]
        staged = driver.run(staged)
        for dialect in DIALECTS:
            _run(urls[dialect, "C"])

        def publish(who, dialect, **extra):
            return {
                "id": f"{dialect} {who} publish",
                "url": urls[dialect, "AB" if who in "AB" else "C"],
                "date": D.isoformat(),
                "run_id": f"dag-{who}",
                "locations": LOCATIONS,
                "start": VALIDATED,
                **extra,
            }

        first = driver.run([publish("A", d) for d in DIALECTS])
        second = driver.run([publish(who, d) for d in DIALECTS for who in "BC"])
        for dialect in DIALECTS:
            out[dialect]["after B refused"] = contents(urls[dialect, "AB"])
        cleared = driver.run([{**publish("B", d), "id": f"{d} B cleared", "start": 0} for d in DIALECTS])

        # a manual suspend/lift between two tasks of a DAG run
        jobs = []
        for dialect in DIALECTS:
            for kind, positions in EVENT_POSITIONS.items():
                for p in positions:
                    url = urls[dialect, kind, p] = dbs[dialect].clone(tpl[dialect])
                    jobs.append(
                        {
                            "id": f"{dialect} {kind} {p}",
                            "url": url,
                            "date": D.isoformat(),
                            "run_id": "dag-event",
                            "locations": LOCATIONS,
                            "event_after": {**EVENTS[kind], "position": p},
                        }
                    )
        events = driver.run(jobs)

        for (dialect, _), (url, job) in cli.items():
            job.finish()
            out[dialect]["cli locked"] = (job, contents(url), duplicate_periods(url))
        for dialect in DIALECTS:
            o = out[dialect]
            o["pairs"] = [
                (
                    [together[f"{dialect} pair {pair} {who}"] for who in "AB"],
                    contents(urls[dialect, "pair", pair]),
                    duplicate_periods(urls[dialect, "pair", pair]),
                )
                for pair in range(PAIRS)
            ]
            o["staged"] = [staged[f"{dialect} {who} staged"] for who in "ABC"]
            o["A publish"] = first[f"{dialect} A publish"]
            o["B publish"], o["C publish"] = second[f"{dialect} B publish"], second[f"{dialect} C publish"]
            o["B cleared"] = (
                cleared[f"{dialect} B cleared"],
                contents(urls[dialect, "AB"]),
                staging_rows(urls[dialect, "AB"]),
            )
            o["C"] = contents(urls[dialect, "C"])
            o["events"] = {
                (kind, p): (
                    events[f"{dialect} {kind} {p}"],
                    contents(urls[dialect, kind, p]),
                    duplicate_periods(urls[dialect, kind, p]),
                )
                for kind, positions in EVENT_POSITIONS.items()
                for p in positions
            }
        yield out


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_serial_orders_differ(world, dialect):
    """Guards the tests below: a race could not be told apart from a serial order otherwise."""
    serial = world[dialect]["serial"]
    assert serial["run, suspend"] != serial["suspend, run"]
    assert serial["run, lift"] != serial["lift, run"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_two_dag_runs_of_a_date_started_together_publish_once(world, dialect):
    """Two DAG runs of D at once (run ids A and B, every task in its own transaction): one publishes;
    the other publishes too (it staged after the first published) or refuses its stale staging.
    Either way D holds exactly what one run gives, and no period twice."""
    ref = without_attempt(world[dialect]["serial"]["run"])
    for results, got, duplicates in world[dialect]["pairs"]:
        assert any(r["completed"] for r in results), results
        for r in results:
            assert r["completed"] or STALE in (r["error"] or ""), r
        assert duplicates == []
        assert without_attempt(got) == ref


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_dag_run_that_staged_before_another_published_publishes_nothing(world, dialect):
    """A and B stage D; A publishes; B's publish refuses (its ledger view is stale) and writes nothing;
    clearing B's whole DAG run then republishes D with the same result."""
    o = world[dialect]
    assert all(r["completed"] for r in o["staged"]), o["staged"]
    assert o["A publish"]["completed"], o["A publish"]
    assert not o["B publish"]["completed"] and STALE in o["B publish"]["error"], o["B publish"]
    # how many rule events each of A and B appended depends on how their apply_rule tasks interleaved
    assert without_attempt(o["after B refused"]) == without_attempt(o["serial"]["run"])
    result, got, staging = o["B cleared"]
    assert result["completed"], result
    assert without_attempt(got) == without_attempt(o["serial"]["run"])
    assert staging == {}, staging


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_dag_run_staging_while_flexbill_run_publishes_publishes_nothing(world, dialect):
    o = world[dialect]
    assert not o["C publish"]["completed"] and STALE in o["C publish"]["error"], o["C publish"]
    assert without_attempt(o["C"]) == without_attempt(o["serial"]["run"])  # C's apply_rule appended the events


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_lift_racing_flexbill_run_waits_for_it(world, dialect):
    """The lift starts while the run holds the lock: it waits, and the result is "run, then lift"."""
    job, got, duplicates = world[dialect]["cli locked"]
    assert job.result.returncode == 0, job.result.stderr
    assert job.error is None, job.error
    assert job.alive, "the run ended before the lift started: no overlap was tested"
    assert got == world[dialect]["serial"]["run, lift"]
    assert duplicates == []


@pytest.mark.parametrize("kind, position", [(k, p) for k, ps in EVENT_POSITIONS.items() for p in ps])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_manual_event_between_two_tasks_of_a_dag_run_gives_a_serial_order(world, dialect, kind, position):
    result, got, duplicates = world[dialect]["events"][kind, position]
    assert result["event"], result
    serial = world[dialect]["serial"]
    orders = {"run first": serial[f"run, {kind}"], "event first": serial[f"{kind}, run"]}
    if result["completed"]:  # the event came after publish: "run, then event"
        assert got in orders.values(), f"a {kind} after task {position} gave a mix of the serial orders"
    else:  # the event moved publish_seq: the run that staged before it refuses, nothing of it is published
        assert STALE in (result["error"] or ""), result
        assert D not in {row[0] for row in got["billing_runs"]}, "the refused run published something"
    assert duplicates == []
