"""A manual suspend/lift recorded while a DAG run is between its tasks (issue 4, "a run racing a manual
suspend/lift"): the result is one of the serial orders, never a mix. Found by this suite: the run used to
publish a mix (invoiced as active, counted suspended in the report). Now every manual event moves
flexbill_state.publish_seq, so the run that staged before it refuses to publish (nothing of it is written:
the event alone is the order "event, then no run yet"), and clearing the whole DAG run bills as "event, then run".
"""

import tempfile
from pathlib import Path

import pytest

from flexbill.db.connect import make_engine
from flexbill.errors import FlexbillError
from flexbill.manual import record_manual_event
from flexbill.runner import run_billing_date
from tests.reliability.dag_driver import dag_tasks, run_task, use_database
from tests.reliability.world import LIFT_AT, LOCATIONS, SUSPEND_AT, D, Databases, contents, template, without_attempt

EVENTS = {"suspend": (1, SUSPEND_AT), "lift": (11, LIFT_AT)}


def _event(url, kind):
    engine = make_engine(url)
    customer, at = EVENTS[kind]
    record_manual_event(engine, customer, kind, "ops@example.com", "race", at, backdate=True)  # dated inside D
    engine.dispose()


def _run(url):
    engine = make_engine(url)
    run_billing_date(engine, D)
    engine.dispose()


@pytest.mark.parametrize("kind", ["suspend", "lift"])
@pytest.mark.parametrize("position", [7, 8, 10])  # after suspension_filter[1], after both filters, after build_invoices
def test_a_manual_event_between_dag_tasks_gives_a_serial_order(kind, position, monkeypatch):
    from flexbill import airflow_steps

    monkeypatch.setattr(airflow_steps, "engine", airflow_steps.engine)  # use_database below: undone after
    dbs = Databases("sqlite", Path(tempfile.mkdtemp()))
    tpl = template(dbs)
    first, second, raced = dbs.clone(tpl), dbs.clone(tpl), dbs.clone(tpl)
    _run(first)
    _event(first, kind)
    _event(second, kind)
    _run(second)
    use_database(raced)
    refused = None
    for i, (name, args) in enumerate(dag_tasks(LOCATIONS), start=1):
        try:
            run_task(D, "dag-raced", name, args)
        except FlexbillError as exc:
            assert name == "publish", exc
            refused = str(exc)
        if i == position:
            _event(raced, kind)
    assert refused and "its staging is stale" in refused and "manual suspend/lift" in refused
    assert contents(raced)["invoices"] == contents(dbs.clone(tpl))["invoices"]  # the raced run wrote nothing
    for name, args in dag_tasks(LOCATIONS):  # clearing the whole DAG run: a new attempt of every task
        run_task(D, "dag-raced-rerun", name, args)
    assert without_attempt(contents(raced)) == without_attempt(contents(second))  # the serial order "event, then run"
    assert contents(raced) != contents(first) or kind == "lift"  # (a lift on D may not change D's bill)
