"""Fixtures of the fault suite: the DAG driver server, shared by the modules that simulate DAG runs."""

from __future__ import annotations

import pytest

from tests.processes import ROOT, clean_env
from tests.reliability.dag_driver import Driver
from tests.reliability.world import wait_for_cleanup


@pytest.fixture(scope="session", autouse=True)
def dropped_at_the_end():
    """The suite's PostgreSQL databases are dropped in the background while later tests run; the
    session waits for every drop before it ends."""
    yield
    wait_for_cleanup()


@pytest.fixture(scope="session")
def driver(tmp_path_factory):
    """A warm `dag_driver` server (see its docstring); its stderr goes to a log file in the test's tmp dir."""
    handle = Driver(ROOT, clean_env(), tmp_path_factory.mktemp("driver") / "dag_driver.log")
    yield handle
    handle.close()
