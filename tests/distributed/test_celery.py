"""flexbill_billing on the CeleryExecutor stack of docker-compose.yaml, run natively (tests/distributed/stack.py).

One stack for the module: PostgreSQL metadata, Redis broker, api-server, scheduler,
dag-processor and two Celery workers (worker-a, worker-b), the `flexbill_db`
connection on a fresh PostgreSQL database holding the fixture operator.  The tests
are the analysts' story in order, each compared table by table with `flexbill
backfill` over the same dates on another fresh database:

1. first backfill of a new operator (31 March .. 2 April), mapped tasks on both workers;
2. a data fix, then the affected range rerun with `--reprocess-behavior completed`;
3. a range overlapping billed dates with `--reprocess-behavior failed`: only the new date runs;
4. a worker SIGKILLed while a run's mapped tasks run: the run completes, exactly once.

Every backfill passes `--max-active-runs 1`: Airflow 3.3 gives a backfill its own
max_active_runs (default 10) and ignores the DAG's max_active_runs=1 for it; with
several dates staging at once, the second date's publish finds its staging stale
and fails, and the dates after it wait on depends_on_past for ever.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from flexbill.db import schema as s
from flexbill.runner import backfill as flexbill_backfill
from tests.dags.test_dag_runs import _outputs
from tests.distributed.operator_fixture import DATES, FIXED_CONTRACT, FIXED_PRICE, LATE_CONTRACT, apply_fix, build
from tests.distributed.stack import DAG_ID, running_stack
from tests.processes import WALL_CLOCK, pg_databases

pytestmark = pytest.mark.slow

D1, D2, D3, D4, D5 = DATES
MAPPED = ("owed_periods", "suspension_filter", "build_invoices")
story: dict = {}  # what the earlier tests of the story left for the later ones


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with pg_databases(2) as (metadata_url, billing_url):
        billing = build(billing_url)
        try:
            with running_stack(tmp_path_factory.mktemp("celery-stack"), metadata_url, billing_url) as st:
                st.billing = billing
                yield st
        finally:
            billing.dispose()


def reference(last, fixed: bool) -> dict:
    """The same story through `flexbill backfill` on a fresh database with the same fixture: D1..D3, and when
    `fixed`, the data fix then a rerun of D2..D3 (finalized invoices it changes are credited and corrected, with
    the next numbers, exactly as the Airflow rerun does), then the dates up to `last`."""
    with pg_databases(1) as (url,):
        engine = build(url)
        try:
            flexbill_backfill(engine, D1, min(last, D3))
            if fixed:
                apply_fix(engine)
                flexbill_backfill(engine, D2, D3)
            if last > D3:
                flexbill_backfill(engine, D3 + timedelta(days=1), last)
            return _outputs(engine)
        finally:
            engine.dispose()


def assert_same_outputs(engine, expected: dict) -> None:
    got = _outputs(engine)
    assert got["invoice_lines"], "the fixture operator must bill something"
    for name in expected:
        assert got[name] == expected[name], f"{name} differs between the Airflow backfill and flexbill backfill"


def assert_exactly_once(engine) -> None:
    """Lines and invoices that stand (credited ones are cancelled by their credit notes)."""
    live = s.invoice_lines.join(s.invoices, s.invoices.c.invoice_id == s.invoice_lines.c.invoice_id)
    standing = s.invoices.c.status != "credited"
    with engine.connect() as conn:
        lines = conn.execute(select(func.count()).select_from(live).where(standing)).scalar_one()
        periods = conn.execute(
            select(func.count()).select_from(
                select(s.invoice_lines.c.contract_id, s.invoice_lines.c.period_start)
                .select_from(live)
                .where(standing)
                .distinct()
                .subquery()
            )
        ).scalar_one()
        invoices = conn.execute(select(func.count()).select_from(s.invoices).where(standing)).scalar_one()
        per_customer_date = conn.execute(
            select(func.count()).select_from(
                select(s.invoices.c.customer_id, s.invoices.c.billing_date).where(standing).distinct().subquery()
            )
        ).scalar_one()
    assert lines == periods, "a (contract, period) was invoiced twice"
    assert invoices == per_customer_date, "a customer got two invoices for one billing date"


def billing_runs(engine) -> dict:
    with engine.connect() as conn:
        return {r.billing_date: r._mapping for r in conn.execute(select(s.billing_runs))}


def tries(stack, run_id: str) -> dict:
    return {
        (r[0], r[1]): (r[2], r[3], r[4])
        for r in stack.query(
            "select task_id, map_index, try_number, state, hostname from task_instance "
            "where dag_id = :d and run_id = :r",
            d=DAG_ID,
            r=run_id,
        )
    }


def test_first_backfill_of_a_new_operator_runs_on_both_workers_and_equals_flexbill_backfill(stack):
    # The DAG's publish has depends_on_past, so Airflow refuses --reprocess-behavior none (its default).
    refused = stack.backfill(D1, D3, "none", check=False)
    assert refused.returncode != 0
    assert "depends_on_past" in refused.stderr and "reprocess" in refused.stderr
    assert stack.query("select count(*) from dag_run where dag_id = :d", d=DAG_ID)[0][0] == 0

    started = time.monotonic()
    stack.backfill(D1, D3, "failed")
    bid = stack.latest_backfill()
    runs = stack.wait_backfill(bid)
    story["first_backfill_seconds"] = time.monotonic() - started
    assert [(d, state) for d, _, state in runs] == [(D1, "success"), (D2, "success"), (D3, "success")]
    story["run_ids"] = {d: run_id for d, run_id, _ in runs}

    # billing date = data interval start = logical date of a backfill run; the interval is one day
    for logical, start, end in stack.query(
        "select logical_date, data_interval_start, data_interval_end from dag_run where backfill_id = :b", b=bid
    ):
        assert logical == start and end - start == timedelta(days=1)
    assert sorted(billing_runs(stack.billing)) == [D1, D2, D3]

    hosts = {
        r[0]
        for r in stack.query(
            "select distinct ti.hostname from task_instance ti join dag_run dr "
            "on dr.dag_id = ti.dag_id and dr.run_id = ti.run_id "
            "where dr.backfill_id = :b and ti.map_index >= 0 and ti.task_id = any(:t) and ti.state = 'success'",
            b=bid,
            t=list(MAPPED),
        )
    }
    assert hosts == {"worker-a", "worker-b"}, f"mapped location tasks ran on {hosts}"
    located = stack.query(
        "select count(*) from task_instance where dag_id = :d and task_id = 'owed_periods' and map_index >= 0", d=DAG_ID
    )[0][0]
    assert located == 3 * 3, "owed_periods is mapped over the three locations on each date"

    assert_same_outputs(stack.billing, reference(D3, fixed=False))
    assert_exactly_once(stack.billing)


def test_rerun_after_a_data_fix_with_reprocess_completed_replaces_the_range_and_doubles_nothing(stack):
    assert story.get("run_ids"), "needs the first backfill"
    before_runs = billing_runs(stack.billing)
    before_lines = {(r["contract_id"], r["period_start"]): r for r in _outputs(stack.billing)["invoice_lines"]}
    before_ids = {r["invoice_id"] for r in _outputs(stack.billing)["invoices"] if r["billing_date"] == D2}
    apply_fix(stack.billing)

    stack.backfill(D2, D3, "completed")
    bid = stack.latest_backfill()
    runs = stack.wait_backfill(bid)
    assert [(d, state) for d, _, state in runs] == [(D2, "success"), (D3, "success")]
    # the same dag runs, cleared and run again (no second run for a date)
    assert {d: run_id for d, run_id, _ in runs} == {d: story["run_ids"][d] for d in (D2, D3)}
    assert stack.query("select count(*) from dag_run where dag_id = :d", d=DAG_ID)[0][0] == 3
    for d in (D2, D3):
        assert tries(stack, story["run_ids"][d])[("publish", -1)][0] == 2, f"{d} was not published again"

    assert_same_outputs(stack.billing, reference(D3, fixed=True))
    assert_exactly_once(stack.billing)
    after = _outputs(stack.billing)
    credited = {r["invoice_id"] for r in after["invoices"] if r["status"] == "credited"}
    fixed = [
        r for r in after["invoice_lines"] if r["contract_id"] == FIXED_CONTRACT and r["invoice_id"] not in credited
    ]
    assert [str(r["unit_price"]) for r in fixed] == [FIXED_PRICE]
    assert before_lines[(FIXED_CONTRACT, D2)]["unit_price"] != fixed[0]["unit_price"], "the fix changes results"
    assert any(r["contract_id"] == LATE_CONTRACT for r in after["invoice_lines"]), "the late contract is billed"
    # D2's finalized invoices stay (those the fix changed are credited, with a corrective invoice beside them)
    assert before_ids <= {r["invoice_id"] for r in after["invoices"] if r["billing_date"] == D2}
    assert after["credit_notes"], "the fix changed finalized invoices: they are credited, never rewritten"
    assert {r["invoice_id"] for r in after["credit_notes"]} <= credited
    # 31 March was outside the range: not run again
    assert billing_runs(stack.billing)[D1]["started_at"] == before_runs[D1]["started_at"]
    assert tries(stack, story["run_ids"][D1])[("publish", -1)][0] == 1
    story["fixed"] = True


def test_backfill_overlapping_billed_dates_runs_only_the_new_date(stack):
    assert story.get("fixed"), "needs the rerun after the fix"
    d3_run = story["run_ids"][D3]
    before_tries, before_runs = tries(stack, d3_run), billing_runs(stack.billing)
    d3_end = stack.query("select end_date from dag_run where run_id = :r", r=d3_run)[0][0]

    stack.backfill(D3, D4, "failed")
    bid = stack.latest_backfill()
    runs = stack.wait_backfill(bid)
    assert [(d, state) for d, _, state in runs] == [(D4, "success")], "only the new date gets a dag run"
    assoc = [
        (r[0].date(), r[1] is None, r[2])
        for r in stack.query(
            "select logical_date, dag_run_id, exception_reason from backfill_dag_run where backfill_id = :b "
            "order by sort_ordinal",
            b=bid,
        )
    ]
    assert assoc == [(D3, True, "already exists"), (D4, False, None)]

    # the billed date is untouched: its dag run, task tries and published outputs
    assert tries(stack, d3_run) == before_tries
    assert stack.query("select end_date from dag_run where run_id = :r", r=d3_run)[0][0] == d3_end
    after_runs = billing_runs(stack.billing)
    for d in (D1, D2, D3):
        assert {k: after_runs[d][k] for k in WALL_CLOCK} == {k: before_runs[d][k] for k in WALL_CLOCK}
    assert_same_outputs(stack.billing, reference(D4, fixed=True))
    assert_exactly_once(stack.billing)
    story["overlap"] = True


def test_a_killed_worker_does_not_stop_the_run_and_output_stays_exactly_once(stack):
    assert story.get("overlap"), "needs the earlier dates billed"
    stack.backfill(D5, D5, "failed")
    bid = stack.latest_backfill()
    victim, killed = _kill_a_worker_mid_task(stack, bid)
    survivor = next(w for w in stack.workers if w != victim)

    runs = stack.wait_backfill(bid, timeout=420)
    assert [(d, state) for d, _, state in runs] == [(D5, "success")]
    after = tries(stack, runs[0][1])
    for key in killed:
        try_number, state, host = after[key]
        assert state == "success" and try_number >= 2 and host == survivor, (
            f"{key} killed on {victim}: now try {try_number}, {state} on {host}"
        )
    assert_same_outputs(stack.billing, reference(D5, fixed=True))
    assert_exactly_once(stack.billing)


def _kill_a_worker_mid_task(stack, bid: int, timeout: float = 240):
    """SIGKILL (every process group of) the worker running one of the backfill's mapped location tasks;
    returns the worker and the task instances it was running.  Should the tasks end in the instant
    before the kill, the worker is restarted and the next mapped task is tried."""
    deadline = time.monotonic() + timeout
    sql = (
        "select ti.task_id, ti.map_index, ti.hostname from task_instance ti join dag_run dr "
        "on dr.dag_id = ti.dag_id and dr.run_id = ti.run_id where dr.backfill_id = :b "
        "and ti.state = 'running' and ti.map_index >= 0 and ti.task_id = any(:t)"
    )
    while time.monotonic() < deadline:
        rows = stack.query(sql, b=bid, t=list(MAPPED))
        if rows:
            victim = rows[0][2]
            stack.kill_worker(victim)
            killed = [(t, m) for t, m, h in stack.query(sql, b=bid, t=list(MAPPED)) if h == victim]
            if killed:
                return victim, killed
            stack.start_worker(victim)
            stack.wait_worker(victim, time.monotonic() + 120)
        elif all(state in ("success", "failed") for _, _, state in stack.backfill_runs(bid)):
            break
        time.sleep(0.2)
    pytest.fail("no mapped location task was seen running on a worker to kill")
