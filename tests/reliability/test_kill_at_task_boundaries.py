"""SIGKILL of a DAG run at every task boundary and in the middle of publish's write, then rerun.

Promise (CONTRACT.md "One run" 6, README "Running on Airflow"): a killed run publishes
nothing of its date; retrying it (Airflow retries the killed task with the same run id)
or running the date again (a new DAG run, a new run id) gives exactly the outputs of an
uninterrupted run: zero duplicate (contract, period) lines, zero lost periods.

Each task of `flexbill_billing` commits its own transaction.  A child process of the
DAG driver (tests/reliability/dag_driver.py) runs the DAG run's tasks in DAG order and
SIGKILLs itself right after task k has committed, for every k; for the publish write,
the FLEXBILL_PAUSE_AT=mid_write hook holds the child inside publish's transaction and
the driver kills it there.  Every kill works on its own clone of one template database,
and so does each rerun.
"""

from __future__ import annotations

import contextlib
import signal
from dataclasses import dataclass, field

import pytest

from flexbill.db import schema as s
from flexbill.db.connect import make_engine
from flexbill.runner import run_billing_date
from tests.reliability.dag_driver import dag_tasks, position
from tests.reliability.world import (
    DIALECTS,
    LOCATIONS,
    D,
    Databases,
    contents,
    duplicate_periods,
    outputs_of,
    periods,
    staging_rows,
    template,
    without_attempt,
)

TASKS = dag_tasks(LOCATIONS)
PUBLISH = position("publish", LOCATIONS)
FINALIZE = position(
    "finalize", LOCATIONS
)  # after publish (and the report): D's drafts are numbered  # position of publish: killing after it means after its commit, before Airflow hears of it
POINTS = [
    f"after {k:02d} {name}{'[' + str(args[0]) + ']' if args else ''}" for k, (name, args) in enumerate(TASKS, start=1)
] + ["mid publish write"]


def position(point: str) -> int | None:
    return None if point == "mid publish write" else int(point.split()[1])


@dataclass
class Outcome:
    kill: dict = field(default_factory=dict)  # the driver's result for the killed child
    after_kill: dict = field(default_factory=dict)  # D's output counts right after the kill
    contents_after_kill: dict = field(default_factory=dict)
    retry: dict = field(default_factory=dict)  # same run id, from the killed task on
    retried: dict = field(default_factory=dict)
    retry_staging: dict = field(default_factory=dict)
    retry_duplicates: list = field(default_factory=list)
    retry_periods: set = field(default_factory=set)
    new: dict = field(default_factory=dict)  # a new run id, every task
    renewed: dict = field(default_factory=dict)
    new_staging: dict = field(default_factory=dict)
    new_duplicates: list = field(default_factory=list)
    new_periods: set = field(default_factory=set)


class Dialect:
    """The databases, jobs and outcomes of one dialect."""

    def __init__(self, dialect, folder, stack):
        self.name, self.dbs = dialect, Databases(dialect, folder)
        stack.callback(self.dbs.close)
        tpl = template(self.dbs)
        ref = self.dbs.clone(tpl)
        engine = make_engine(ref)
        run_billing_date(engine, D)  # the uninterrupted run (the `flexbill run` path)
        engine.dispose()
        self.out = {
            "template": contents(tpl),
            "ref": contents(ref),
            "ref periods": periods(ref),
            "ref counts": outputs_of(ref),
        }
        self.urls, self.kills = {}, []
        for point in POINTS:
            url = self.urls[point] = self.dbs.clone(tpl)
            job = {
                "id": f"{dialect} {point}",
                "url": url,
                "date": D.isoformat(),
                "run_id": f"dag-{position(point)}",
                "locations": LOCATIONS,
            }
            if position(point) is None:
                job["pause_at"] = "mid_write"
            else:
                job["die_after"] = position(point)
            self.kills.append(job)

    def killed(self, results) -> list[dict]:
        """Record each kill; returns the reruns: (a) the same run id from the killed task on, (b) a new run."""
        reruns = []
        for point in POINTS:
            url, o = self.urls[point], Outcome()
            o.kill = results[f"{self.name} {point}"]
            o.after_kill, o.contents_after_kill = outputs_of(url), contents(url)
            copy = self.urls[point, "copy"] = self.dbs.clone(url)
            k = position(point) or PUBLISH  # mid publish: Airflow retries publish
            reruns.append(
                {
                    "id": f"{self.name} {point} retry",
                    "url": url,
                    "date": D.isoformat(),
                    "run_id": f"dag-{position(point)}",
                    "locations": LOCATIONS,
                    "start": k - 1,
                }
            )
            reruns.append(
                {
                    "id": f"{self.name} {point} new",
                    "url": copy,
                    "date": D.isoformat(),
                    "run_id": "dag-new",
                    "locations": LOCATIONS,
                }
            )
            self.out[point] = o
        return reruns

    def rerun(self, results) -> None:
        for point in POINTS:
            o = self.out[point]
            for kind, url in (("retry", self.urls[point]), ("new", self.urls[point, "copy"])):
                setattr(o, kind, results[f"{self.name} {point} {kind}"])
                setattr(o, "retried" if kind == "retry" else "renewed", contents(url))
                setattr(o, f"{kind}_staging", staging_rows(url))
                setattr(o, f"{kind}_duplicates", duplicate_periods(url))
                setattr(o, f"{kind}_periods", periods(url))


@pytest.fixture(scope="module")
def world(driver, tmp_path_factory):
    """{dialect: {"template", "ref", "ref periods", "ref counts", point: Outcome}}.  The driver works on
    one dialect's batch while this process prepares the other's databases."""
    with contextlib.ExitStack() as stack:
        lite = Dialect("sqlite", tmp_path_factory.mktemp("kill-sqlite"), stack)
        driver.submit(lite.kills, parallel=3)
        pg = Dialect("postgresql", tmp_path_factory.mktemp("kill-pg"), stack)
        lite_reruns = lite.killed(driver.collect())
        driver.submit(lite_reruns + pg.kills, parallel=3)
        results = driver.collect()
        pg_reruns = pg.killed(results)
        driver.submit(pg_reruns, parallel=3)
        lite.rerun(results)
        pg.rerun(driver.collect())
        yield {"sqlite": lite.out, "postgresql": pg.out}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_uninterrupted_run_writes_every_output(world, dialect):
    """Guards the tests below: the date has every kind of output and all three rules append an event
    (an empty output could not reveal a partial or doubled write).  That the driver's DAG run gives
    the reference run's result is shown by every retry below: retrying from the first task is a whole
    DAG run."""
    assert all(world[dialect]["ref counts"].values()), world[dialect]["ref counts"]
    assert len(world[dialect]["ref"]["suspension_events"]) == len(world[dialect]["template"]["suspension_events"]) + 3


INVOICE_COLUMNS = [c.name for c in s.invoices.columns if c.name != "finalized_at"]  # as contents() holds them
STATUS, DATE = INVOICE_COLUMNS.index("status"), INVOICE_COLUMNS.index("billing_date")
NUMBERING = {INVOICE_COLUMNS.index(c) for c in ("status", "number", "finalized_by")}


def unnumbered(dumped: dict) -> dict:
    """A dump without what finalization writes (invoices' status, number and finalized_by; number_series)."""
    invoices = sorted(tuple(v for i, v in enumerate(row) if i not in NUMBERING) for row in dumped["invoices"])
    return {**{k: v for k, v in dumped.items() if k != "number_series"}, "invoices": invoices}


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_run_killed_at_a_task_boundary_loses_and_doubles_nothing(world, dialect, point):
    o, ref, tpl = world[dialect][point], world[dialect]["ref"], world[dialect]["template"]
    k = position(point)
    # the child died by SIGKILL, right where it was meant to
    assert o.kill["signal"] == signal.SIGKILL, o.kill
    if k is None:
        assert o.kill["paused"] and o.kill["done"] == list(range(1, PUBLISH)), o.kill
    else:
        assert o.kill["done"] == list(range(1, k + 1)), o.kill

    if k == FINALIZE:  # everything committed
        assert o.contents_after_kill == ref
    elif k == PUBLISH:  # publish committed: D is published in full (as drafts: finalize is the next task)
        assert unnumbered(o.contents_after_kill) == unnumbered(ref)
        assert {row[STATUS] for row in o.contents_after_kill["invoices"] if row[DATE] == D} == {"draft"}
    else:  # nothing of D is published; only the rule events of committed apply_rule tasks exist
        assert o.after_kill == {name: 0 for name in o.after_kill}, o.after_kill
        for name, rows in tpl.items():
            if name != "suspension_events":
                assert o.contents_after_kill[name] == rows, f"{name} changed before publish"
        appended = [e for e in o.contents_after_kill["suspension_events"] if e not in tpl["suspension_events"]]
        assert all(e in ref["suspension_events"] for e in appended), appended

    # (a) Airflow retries the killed task, then runs the rest, with the same run id
    if k != PUBLISH:
        assert o.retry["completed"], o.retry
        assert o.retry_staging == {}, "publish left staging rows behind"
    assert o.retried == ref
    # (b) a new DAG run of the date
    assert o.new["completed"], o.new
    assert set(o.new_staging) <= {f"dag-{k}"}, o.new_staging  # only the killed run's abandoned staging
    assert without_attempt(o.renewed) == without_attempt(ref)
    # zero duplicates, zero lost periods
    assert o.retry_duplicates == [] and o.new_duplicates == []
    assert o.retry_periods == o.new_periods == world[dialect]["ref periods"]
