"""A failing test of the Celery stack shows the stack's logs in its report (and keeps them in test-artifacts/)."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# test_compose imports Airflow in the test process: keep its home out of ~/airflow (tests/dags/conftest.py
# sets its own when the whole suite runs; the stack's processes get their own AIRFLOW_HOME anyway).
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="flexbill-airflow-distributed-"))

from tests.distributed.stack import ROOT


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    stack = getattr(item, "funcargs", {}).get("stack")
    if stack is None or not rep.failed or call.when == "teardown":
        return
    try:
        rep.sections.append(("Celery stack diagnostics", stack.diagnostics()))
        keep = ROOT / "test-artifacts" / "celery-stack" / item.name
        shutil.copytree(stack.home, keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.sock", "*.pid"))
        rep.sections.append(("Celery stack files", str(keep)))
    except Exception as exc:  # noqa: BLE001 - diagnostics must not hide the failure
        rep.sections.append(("Celery stack diagnostics", f"could not collect them: {exc!r}"))
