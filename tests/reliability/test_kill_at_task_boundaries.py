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

from flexbill.db.connect import make_engine
from flexbill.steps import run_billing_date
from tests.reliability.dag_driver import dag_tasks
from tests.reliability.world import (D, DIALECTS, LOCATIONS, Databases, contents, duplicate_periods, outputs_of,
                                     periods, staging_rows, template, without_attempt)

TASKS = dag_tasks(LOCATIONS)
PUBLISH = len(TASKS)  # position of publish: killing after it means after its commit, before Airflow hears of it
POINTS = [f"after {k:02d} {name}{'[' + str(args[0]) + ']' if args else ''}" for k, (name, args) in
          enumerate(TASKS, start=1)] + ["mid publish write"]


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


@pytest.fixture(scope="module")
def world(driver, tmp_path_factory):
    """{dialect: {"template", "ref", "ref periods", "ref counts", "dag", point: Outcome}}."""
    with contextlib.ExitStack() as stack:
        out, phase1, phase2, urls = {}, [], [], {}
        for dialect in DIALECTS:
            dbs = Databases(dialect, tmp_path_factory.mktemp(f"kill-{dialect}"))
            stack.callback(dbs.close)
            tpl = template(dbs)
            ref = dbs.clone(tpl)
            engine = make_engine(ref)
            run_billing_date(engine, D)  # the uninterrupted run (the `flexbill run` path)
            engine.dispose()
            out[dialect] = {"template": contents(tpl), "ref": contents(ref), "ref periods": periods(ref),
                            "ref counts": outputs_of(ref)}
            pipeline = dbs.clone(tpl)
            phase1.append({"id": f"{dialect} dag", "url": pipeline, "date": D.isoformat(), "run_id": "dag-whole",
                           "locations": LOCATIONS})
            urls[dialect, "dag"] = pipeline
            for point in POINTS:
                url = dbs.clone(tpl)
                urls[dialect, point] = url
                job = {"id": f"{dialect} {point}", "url": url, "date": D.isoformat(), "run_id": f"dag-{position(point)}",
                       "locations": LOCATIONS}
                if position(point) is None:
                    job["pause_at"] = "mid_write"
                else:
                    job["die_after"] = position(point)
                phase1.append(job)
            urls[dialect, "dbs"] = dbs
        results = driver.run(phase1)
        for dialect in DIALECTS:
            dbs = urls[dialect, "dbs"]
            out[dialect]["dag"] = (results[f"{dialect} dag"], contents(urls[dialect, "dag"]))
            for point in POINTS:
                url, o = urls[dialect, point], Outcome()
                o.kill = results[f"{dialect} {point}"]
                o.after_kill, o.contents_after_kill = outputs_of(url), contents(url)
                copy = dbs.clone(url)
                urls[dialect, point, "copy"] = copy
                k = position(point) or PUBLISH  # mid publish: Airflow retries publish
                phase2.append({"id": f"{dialect} {point} retry", "url": url, "date": D.isoformat(),
                               "run_id": f"dag-{position(point)}", "locations": LOCATIONS, "start": k - 1})
                phase2.append({"id": f"{dialect} {point} new", "url": copy, "date": D.isoformat(),
                               "run_id": "dag-new", "locations": LOCATIONS})
                out[dialect][point] = o
        results = driver.run(phase2)
        for dialect in DIALECTS:
            for point in POINTS:
                o = out[dialect][point]
                for kind, url in (("retry", urls[dialect, point]), ("new", urls[dialect, point, "copy"])):
                    setattr(o, kind, results[f"{dialect} {point} {kind}"])
                    setattr(o, "retried" if kind == "retry" else "renewed", contents(url))
                    setattr(o, f"{kind}_staging", staging_rows(url))
                    setattr(o, f"{kind}_duplicates", duplicate_periods(url))
                    setattr(o, f"{kind}_periods", periods(url))
        yield out


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_uninterrupted_dag_run_equals_flexbill_run_and_writes_every_output(world, dialect):
    """Guards the tests below: the driver's DAG run is the reference run, and the date has every
    kind of output (an empty output could not reveal a partial or doubled write)."""
    result, dag = world[dialect]["dag"]
    assert result["completed"] and result["error"] is None, result
    assert dag == world[dialect]["ref"]
    assert all(world[dialect]["ref counts"].values()), world[dialect]["ref counts"]
    assert len(world[dialect]["ref"]["suspension_events"]) == len(world[dialect]["template"]["suspension_events"]) + 3


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

    if k == PUBLISH:  # publish committed: D is published in full, whatever became of the process
        assert o.contents_after_kill == ref
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

