"""The output gate: a tampered intermediate result is never published.

Promise (CONTRACT.md "One run" 5, README "How billing works" 7): Great Expectations checks
the outputs before anything is written; a failed check writes nothing and fails the run
with the reason.  Rerunning a date that fails the gate leaves the date's previous publish
in place.

Tampering, on both databases, for each kind (a line with a negative amount, an invoice whose
total is not subtotal + tax, a (contract, period) line twice):

* `flexbill run`'s path, through run_billing_date's `tamper` hook (the frames about to be
  validated), on a date never published, then on a rerun of a published date;
* a DAG run's staging tables, changed in the database between build_invoices/active_user_report
  and validate_output (what a bug in a task, or a person with write access, would leave
  there): validate_output must refuse, and publish must refuse to publish what was not
  validated.

An invoice in another currency than its location's passes the gate today (no output
check compares them): reported as a flexbill bug with its own failing test, outside this suite.
"""

from __future__ import annotations

import contextlib

import pandas as pd
import pytest
from sqlalchemy import text

from flexbill import airflow_steps, steps
from flexbill.db import schema as s
from flexbill.db.connect import make_engine
from flexbill.errors import FlexbillError
from flexbill.runner import run_billing_date
from tests.builders import Operator
from tests.reliability.dag_driver import dag_tasks, interval_start, position, run_task
from tests.reliability.world import DIALECTS, LOCATIONS, D, Databases, contents, outputs_of, template, without_attempt

RUN_ID = "dag-tampered"
VALIDATE = position("validate_output", LOCATIONS) - 1  # tasks before validate_output


def _negative(result, report_frame):
    result.lines.loc[result.lines["contract_id"] == 1, "amount_cents"] = -100


def _total(result, report_frame):
    result.invoices.loc[result.invoices["customer_id"] == 1, "total_cents"] += 1


def _duplicate(result, report_frame):
    result.lines = pd.concat([result.lines, result.lines[result.lines["contract_id"] == 1]], ignore_index=True)


STAGED_COLUMNS = ", ".join(c.name for c in s.stg_lines.columns)
KINDS = {  # kind -> (tamper hook, SQL on the DAG run's staging, the reason the gate must give)
    "negative line amount": (
        _negative,
        "update stg_lines set amount_cents = -100 where run_id = :r and contract_id = 1",
        "a line amount is negative",
    ),
    "total not subtotal + tax": (
        _total,
        "update stg_invoices set total_cents = total_cents + 1 where run_id = :r and customer_id = 1",
        "an invoice total differs from subtotal + tax",
    ),
    "period twice": (
        _duplicate,
        f"insert into stg_lines ({STAGED_COLUMNS}) select {STAGED_COLUMNS} from stg_lines "
        "where run_id = :r and contract_id = 1",
        "a period is invoiced twice",
    ),
}


@pytest.fixture(scope="module", params=DIALECTS)
def gate(request, tmp_path_factory):
    """One database per dialect; for each kind: a tampered first run of D, a tampered rerun over D's
    publish, a tampered DAG staging (each tampering undone by rolling back its transaction)."""
    with contextlib.ExitStack() as stack:
        dbs = Databases(request.param, tmp_path_factory.mktemp(f"gate-{request.param}"))
        stack.callback(dbs.close)
        url = template(dbs)
        engine = make_engine(url)
        stack.callback(engine.dispose)
        op = Operator(engine)
        out = {kind: {} for kind in KINDS}
        before = contents(url)
        for kind, (hook, _, _) in KINDS.items():  # a date never published
            o = out[kind]
            o["first"] = _rejection(lambda hook=hook: run_billing_date(engine, D, tamper=hook))
            o["first counts"], o["first contents"] = outputs_of(url), contents(url)
            [o["first run row"]] = op.rows(s.billing_runs, billing_date=D)
        out["before"] = before
        run_billing_date(engine, D)
        out["published"] = contents(url)
        for kind, (hook, _, _) in KINDS.items():  # a rerun of the published date
            o = out[kind]
            o["rerun"] = _rejection(lambda hook=hook: run_billing_date(engine, D, tamper=hook))
            o["rerun contents"] = contents(url)
            [o["rerun run row"]] = op.rows(s.billing_runs, billing_date=D)
        run_billing_date(engine, D)  # billing_runs back to "published" (no rule event left to append)
        out["republished"] = contents(url)
        assert without_attempt(out["republished"]) == without_attempt(out["published"])
        with pytest.MonkeyPatch.context() as mp:  # a DAG run, its staging changed before validate_output
            mp.setattr(airflow_steps, "engine", lambda: make_engine(url))
            for name, args in dag_tasks(LOCATIONS)[:VALIDATE]:
                run_task(D, RUN_ID, name, args)
            for kind, (_, sql, _) in KINDS.items():
                o = out[kind]
                with engine.connect() as conn:
                    with conn.begin() as tx:  # the tampering and the validate_output task, rolled back after
                        o["tampered rows"] = conn.execute(text(sql), {"r": RUN_ID}).rowcount
                        o["dag"] = _rejection(lambda: steps.validate_output(conn, steps.Run(D, RUN_ID)))
                        tx.rollback()
                o["dag publish"] = _rejection(lambda: airflow_steps.publish_summary(interval_start(D), RUN_ID))
                o["dag contents"] = contents(url)
        yield out


def _rejection(call) -> str | None:
    """The refusal a call raised (type: message), or None if it went through."""
    try:
        call()
    except FlexbillError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_tampered_first_run_publishes_nothing_and_says_why(gate, kind):
    o, reason = gate[kind], KINDS[kind][2]
    assert o["first"] and o["first"].startswith("OutputRejected: "), o["first"]
    assert reason in o["first"] and "nothing was published" in o["first"], o["first"]
    counts = o["first counts"]
    assert counts == {**{name: 0 for name in counts}, "billing_runs": 1}, counts
    assert o["first run row"]["status"] == "failed" and reason in o["first run row"]["message"]
    assert {k: v for k, v in o["first contents"].items() if k != "billing_runs"} == {
        k: v for k, v in gate["before"].items() if k != "billing_runs"
    }


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_tampered_rerun_leaves_the_previous_publish_in_place(gate, kind):
    o, reason = gate[kind], KINDS[kind][2]
    assert o["rerun"] and o["rerun"].startswith("OutputRejected: ") and reason in o["rerun"], o["rerun"]
    assert {k: v for k, v in o["rerun contents"].items() if k != "billing_runs"} == {
        k: v for k, v in gate["published"].items() if k != "billing_runs"
    }
    row = o["rerun run row"]
    assert row["status"] == "failed" and reason in row["message"] and row["published_at"] is not None, row


@pytest.mark.parametrize("kind", list(KINDS))
def test_tampered_dag_staging_fails_validate_output_and_publish_refuses(gate, kind):
    o, reason = gate[kind], KINDS[kind][2]
    assert o["tampered rows"] >= 1, "nothing was tampered with"
    assert o["dag"] and o["dag"].startswith("OutputRejected: ") and reason in o["dag"], o["dag"]
    assert o["dag publish"] and "is not validated: nothing was published" in o["dag publish"], o["dag publish"]
    assert o["dag contents"] == gate["republished"]
