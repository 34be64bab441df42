"""Conventions every DAG keeps: it imports cleanly, fast, without touching a database at parse time,
with an owner, tags, retries and docs; and flexbill_billing has the documented graph."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from unittest import mock

import pytest

from flexbill import airflow_steps

DAG_FILES = sorted((Path(__file__).resolve().parents[2] / "dags").glob("*.py"))
APPROVED_TAGS = {"flexbill", "billing"}
BILLING_GRAPH = {  # task -> downstream tasks, as the DAG's doc_md describes
    "extract_snapshot": {"apply_rule", "owed_periods", "suspension_filter", "build_invoices"},
    "apply_rule": {"owed_periods"},
    "owed_periods": {"suspension_filter"},
    "suspension_filter": {"build_invoices"},
    "build_invoices": {"active_user_report"},
    "active_user_report": {"validate_output"},
    "validate_output": {"publish"},
    "publish": {"data_quality_report"},
    "data_quality_report": {"finalize"},
    "finalize": set(),
}


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {"flexbill_billing", "flexbill_manual_suspension", "flexbill_finalize"}
    assert {Path(p).stem for p in map(str, DAG_FILES)} == set(dagbag.dag_ids), "dag_id is the file's stem"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_parsing_touches_no_database_and_is_fast(path):
    """No connection lookup, no engine, no query at parse time; heavy imports stay inside tasks."""
    import airflow.sdk  # noqa: F401  (Airflow itself is loaded before the clock starts)

    def refuse(*args, **kwargs):
        raise AssertionError("database access while parsing a DAG file")

    loaded = {m: sys.modules.pop(m) for m in [m for m in sys.modules if m.startswith("flexbill")]}
    try:
        spec = importlib.util.spec_from_file_location(f"dagfile_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        with mock.patch("airflow.sdk.BaseHook.get_connection", refuse), mock.patch("sqlalchemy.create_engine", refuse):
            started = time.perf_counter()
            spec.loader.exec_module(module)
            elapsed = time.perf_counter() - started
        imported = set(sys.modules)
    finally:  # later tests keep the module objects (and exception classes) they imported
        for name in [m for m in sys.modules if m.startswith("flexbill")]:
            sys.modules.pop(name)
        sys.modules.update(loaded)
    assert elapsed < 2.0, f"{path.name} took {elapsed:.2f}s to parse"
    heavy = {
        "flexbill.steps",
        "flexbill.runner",
        "flexbill.publishing",
        "flexbill.staging",
        "flexbill.validation",
        "flexbill.billing",
        "flexbill.db.connect",
    }
    assert not heavy & imported, "a DAG file imported the engine at parse time"


@pytest.mark.parametrize("dag_id", ["flexbill_billing", "flexbill_manual_suspension", "flexbill_finalize"])
def test_dag_has_owner_tags_docs_and_retry_policy(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag.owner == airflow_steps.OWNER
    assert dag.tags and set(dag.tags) <= APPROVED_TAGS
    assert dag.doc_md and "###" in dag.doc_md
    for task in dag.tasks:  # Airflow 3.3 leaves doc_md empty on mapped TaskFlow tasks: read the callable
        doc = task.doc_md or getattr(getattr(task, "python_callable", None), "__doc__", None)
        assert doc and doc.strip(), f"{dag_id}.{task.task_id} has no doc"
    if dag_id == "flexbill_billing":
        assert all(t.retries >= 2 and t.retry_exponential_backoff for t in dag.tasks)
    else:
        assert all(t.retries == 0 for t in dag.tasks), "a refused manual event or approval must not be retried"


def test_billing_dag_graph_is_the_documented_one(dagbag):
    dag = dagbag.dags["flexbill_billing"]
    graph = {t.task_id: set(t.downstream_task_ids) for t in dag.tasks}
    assert graph == BILLING_GRAPH


def test_billing_dag_runs_daily_on_data_intervals_in_date_order(dagbag):
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.dags["flexbill_billing"]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 0 * * *" and str(dag.timetable.timezone) in ("UTC", "Timezone('UTC')")
    assert dag.max_active_runs == 1
    assert dag.get_task("publish").depends_on_past
    assert dag.catchup is False
    mapped = {t.task_id for t in dag.tasks if getattr(t, "is_mapped", False) or type(t).__name__ == "MappedOperator"}
    assert mapped == {"apply_rule", "owed_periods", "suspension_filter", "build_invoices"}


def test_manual_suspension_form_is_typed(dagbag):
    params = dagbag.dags["flexbill_manual_suspension"].params
    assert set(params.keys()) == {"customer_id", "action", "actor", "reason", "at", "future", "backdate"}
    assert params.get_param("future").schema["type"] == params.get_param("backdate").schema["type"] == "boolean"
    assert params.get_param("action").schema["enum"] == ["suspend", "lift"]
    assert params.get_param("customer_id").schema["type"] == "integer"
    assert all(params.get_param(k).schema.get("title") for k in params.keys())
    assert all(params.get_param(k).description for k in params.keys())


def test_finalize_form_is_typed(dagbag):
    params = dagbag.dags["flexbill_finalize"].params
    assert set(params.keys()) == {"through", "actor"}
    assert params.get_param("through").schema["format"] == "date"
    assert all(params.get_param(k).schema.get("title") for k in params.keys())
    assert all(params.get_param(k).description for k in params.keys())


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_tasks_dispatch_by_function_not_by_name(path):
    """A DAG task calls its own function of flexbill.airflow_steps (a typo fails at parse, in review and in the
    IDE), never a generic runner given the step's name as a string."""
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "steps"
        ):
            assert hasattr(airflow_steps, node.func.attr), f"{path.name}: steps.{node.func.attr} does not exist"
            assert not (node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)), (
                f"{path.name}:{node.lineno}: steps.{node.func.attr}({node.args[0].value!r}, ...) dispatches by name"
            )


def test_each_billing_task_has_an_airflow_steps_function_of_its_name(dagbag):
    dag = dagbag.dags["flexbill_billing"]
    for task_id in dag.task_ids:
        own = "publish_summary" if task_id == "publish" else "finalize_grace" if task_id == "finalize" else task_id
        assert callable(getattr(airflow_steps, own, None)), f"task {task_id} has no airflow_steps.{own}"
