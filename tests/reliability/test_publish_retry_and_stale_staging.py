"""Airflow retries and abandoned DAG runs around `publish`.

* A publish task whose transaction committed but whose process died before Airflow heard of it is
  retried with the same run id: the retry finds the date published by that very run and succeeds,
  changing nothing (it used to fail with "not validated", telling the operator nothing was published).
* A DAG run abandoned after staging (failed and never cleared, or superseded) leaves staged rows; the next
  publish of its date deletes them. Its head row stays, so if it ever reaches publish it still refuses
  with "its staging is stale".
* The DAG's data_quality_report task, on a billing database it cannot reach, fails with one line that names
  the connection and what to do, not a driver traceback.
"""

from __future__ import annotations

import pytest

from flexbill.errors import DatabaseError, FlexbillError
from tests.reliability.dag_driver import interval_start, position, run_task, run_tasks
from tests.reliability.world import DIALECTS, LOCATIONS, D, Databases, contents, staging_rows, template

PUBLISH = position("publish", LOCATIONS)


@pytest.fixture
def dag_database(monkeypatch, tmp_path):
    """A clone of the fault suite's template (D0 published) per dialect; airflow_steps.engine restored after."""
    from flexbill import airflow_steps

    monkeypatch.setattr(airflow_steps, "engine", airflow_steps.engine)  # use_database replaces it: undone after
    opened = []

    def make(dialect: str) -> str:
        dbs = Databases(dialect, tmp_path)
        opened.append(dbs)
        return dbs.clone(template(dbs))

    yield make
    for dbs in opened:
        dbs.close()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_publish_retried_after_its_commit_succeeds_and_changes_nothing(dag_database, dialect):
    url = dag_database(dialect)
    run_tasks(url, D, "dag-1", LOCATIONS, stop=PUBLISH - 1)
    first = run_task(D, "dag-1", "publish", ())
    assert first["invoices"] > 0 and first["totals"], first  # guards the comparison below
    published = contents(url)

    again = run_task(D, "dag-1", "publish", ())  # Airflow's retry of the same task instance

    assert contents(url) == published
    assert again["totals"] == first["totals"]
    assert {k: again[k] for k in again if k in first} == {k: first[k] for k in again if k in first}
    assert {"invoices", "lines", "contracts_owed", "contracts_invoiced"} <= set(again)
    with pytest.raises(FlexbillError, match="is not validated: nothing was published"):
        run_task(D, "dag-never-ran", "publish", ())  # only the run that published is let through


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_next_publish_of_a_date_deletes_an_abandoned_runs_staging(dag_database, dialect):
    url = dag_database(dialect)
    run_tasks(url, D, "dag-abandoned", LOCATIONS, stop=PUBLISH - 1)  # staged and validated, never published
    assert staging_rows(url)["dag-abandoned"] > 10, staging_rows(url)

    run_tasks(url, D, "dag-new", LOCATIONS)

    assert staging_rows(url) == {"dag-abandoned": 1}  # its head row only; dag-new cleared all of its own
    with pytest.raises(FlexbillError, match="its staging is stale"):
        run_task(D, "dag-abandoned", "publish", ())


def test_the_report_task_on_an_unreachable_database_says_what_to_do(monkeypatch):
    from flexbill import airflow_steps
    from flexbill.db.connect import make_engine

    monkeypatch.setattr(
        airflow_steps,
        "engine",
        lambda: make_engine("postgresql://postgres:s3cret@127.0.0.1:5432/flexbill_no_such_database"),
    )
    with pytest.raises(DatabaseError) as caught:
        airflow_steps.data_quality_report(interval_start(D))
    message = str(caught.value)
    assert f"the data-quality report of {D} could not read the billing database" in message
    assert "flexbill_no_such_database" in message and "Check the flexbill_db connection" in message
    assert "s3cret" not in message and "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
