"""End to end with dag.test(): the DAGs give exactly what the CLI gives, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from flexbill.airflow_steps import connection_json
from flexbill.db import schema as s
from flexbill.db.connect import init_db, make_engine
from flexbill.demo import build_operator
from flexbill.runner import backfill
from tests.processes import DOCUMENT_CLOCK, pg_databases

FIRST, LAST = date(2026, 3, 30), date(2026, 4, 1)  # a month end, and the 1st when most contracts are due
OUTPUTS = {
    s.invoices: ("invoice_id",),
    s.invoice_lines: ("invoice_id", "contract_id", "period_start"),
    s.credit_notes: ("credit_note_id",),
    s.number_series: ("location_id", "series"),
    s.skipped_contracts: ("billing_date", "contract_id"),
    s.quarantine: ("billing_date", "source_table", "row_id"),
    s.active_user_report: ("report_date", "location_id"),
}


def _operator(url: str):
    engine = make_engine(url)
    init_db(engine)
    build_operator(engine, customers=60, first=FIRST - timedelta(days=20), last=LAST, seed=11)
    return engine


def _outputs(engine) -> dict:
    out = {}
    with engine.connect() as conn:
        for table, key in OUTPUTS.items():
            clock = DOCUMENT_CLOCK.get(table.name, set())  # when, not what: the two runs happen at other instants
            rows = [{k: v for k, v in r._mapping.items() if k not in clock} for r in conn.execute(select(table))]
            out[table.name] = sorted(rows, key=lambda r: tuple(r[k] for k in key))
        events = conn.execute(
            select(
                s.suspension_events.c.customer_id,
                s.suspension_events.c.occurred_at,
                s.suspension_events.c.action,
                s.suspension_events.c.source,
                s.suspension_events.c.trigger_key,
            )
        ).all()
        out["suspension_events"] = sorted(tuple(e) for e in events)
        runs = conn.execute(
            select(
                s.billing_runs.c.billing_date,
                s.billing_runs.c.status,
                s.billing_runs.c.contracts_owed,
                s.billing_runs.c.contracts_invoiced,
                s.billing_runs.c.contracts_skipped,
                s.billing_runs.c.invoices,
            )
        ).all()
        out["billing_runs"] = sorted(tuple(r) for r in runs)
    return out


def _dag_test(dag, billing_date: date, **kwargs):
    """`airflow dags test flexbill_billing <D+1>` bills D: a manual run's interval is [L-1, L)."""
    logical = datetime.combine(billing_date + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    return dag.test(logical_date=logical, **kwargs)


@pytest.fixture
def second_db(db_url, tmp_path):
    """A second empty database of the same dialect as db_url."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'cli.sqlite'}"
        return
    with pg_databases(1) as (url,):
        yield url


def test_dag_runs_equal_flexbill_backfill_and_a_middle_rerun_changes_nothing(
    airflow_db, dagbag, db_url, second_db, monkeypatch
):
    dag_engine, cli_engine = _operator(db_url), _operator(second_db)
    monkeypatch.setenv("AIRFLOW_CONN_FLEXBILL_DB", connection_json(db_url))
    dag = dagbag.dags["flexbill_billing"]
    d = FIRST
    while d <= LAST:
        assert _dag_test(dag, d).state == "success"
        d += timedelta(days=1)
    backfill(cli_engine, FIRST, LAST)
    by_dag, by_cli = _outputs(dag_engine), _outputs(cli_engine)
    assert by_dag["invoice_lines"], "the fixture operator must bill something"
    assert any(r["billing_date"] == LAST for r in by_dag["invoices"])
    for name in by_cli:
        assert by_dag[name] == by_cli[name], f"{name} differs between the DAG and flexbill backfill"

    assert _dag_test(dag, FIRST + timedelta(days=1)).state == "success"
    assert _outputs(dag_engine) == by_dag
    with dag_engine.connect() as conn:  # publish leaves no staging behind
        assert conn.execute(select(s.stg_runs)).first() is None


def test_manual_suspension_dag_records_an_event_and_refuses_a_bad_one(airflow_db, dagbag, db_url, monkeypatch):
    engine = _operator(db_url)
    monkeypatch.setenv("AIRFLOW_CONN_FLEXBILL_DB", connection_json(db_url))
    dag = dagbag.dags["flexbill_manual_suspension"]
    with engine.connect() as conn:
        customer = (
            conn.execute(
                select(s.customers.c.id).where(s.customers.c.archived_at.is_(None), s.customers.c.location_id == 2)
            )
            .scalars()
            .first()
        )
        before = conn.execute(select(s.suspension_events)).all()
    conf = {
        "customer_id": customer,
        "action": "suspend",
        "actor": "ana@operator.example",
        "reason": "card declined",
        "at": "2026-04-02T09:30:00Z",
    }
    assert dag.test(run_conf=conf).state == "success"
    with engine.connect() as conn:
        rows = conn.execute(
            select(s.suspension_events).where(
                s.suspension_events.c.customer_id == customer, s.suspension_events.c.source == "manual"
            )
        ).all()
    assert [(r.action, r.actor, r.reason, r.occurred_at) for r in rows][-1] == (
        "suspend",
        "ana@operator.example",
        "card declined",
        datetime(2026, 4, 2, 9, 30),
    )

    refused = {**conf, "at": "2026-04-03T09:30:00Z"}  # suspending a suspended customer
    assert dag.test(run_conf=refused).state == "failed"
    with engine.connect() as conn:
        after = conn.execute(select(s.suspension_events)).all()
    assert len(after) == len(before) + 1, "the refused event wrote nothing"


def test_a_date_without_valid_locations_still_publishes(airflow_db, dagbag, tmp_path, monkeypatch):
    """No valid location: the mapped location tasks expand to nothing, yet the date publishes (zero invoices,
    its quarantine and report) exactly as `flexbill run` does, instead of every later task being skipped."""
    cli, dag_db = (f"sqlite:///{tmp_path / n}" for n in ("cli.sqlite", "dag.sqlite"))
    for url in (cli, dag_db):
        engine = make_engine(url)
        init_db(engine)
        with engine.begin() as conn:  # the only location breaks the contract: it is quarantined
            conn.execute(s.locations.insert(), {"id": 1, "name": "Nowhere", "currency": "eur", "tax_rate": 0})
    backfill(make_engine(cli), LAST, LAST)
    monkeypatch.setenv("AIRFLOW_CONN_FLEXBILL_DB", connection_json(dag_db))
    run = _dag_test(dagbag.dags["flexbill_billing"], LAST)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["publish"] == "success" and states["data_quality_report"] == "success", states
    assert _outputs(make_engine(dag_db)) == _outputs(make_engine(cli))
    assert _outputs(make_engine(dag_db))["quarantine"]  # the location is listed, nothing else happened


def test_finalize_dag_approves_as_flexbill_finalize_does_and_a_refused_approval_changes_nothing(
    airflow_db, dagbag, db_url, second_db, monkeypatch
):
    """With a grace period, drafts wait for finance; the flexbill_finalize DAG (finance's approve button)
    numbers them exactly as `flexbill finalize` does; a refused approval fails the run and writes nothing."""
    from flexbill.clock import utcnow
    from flexbill.db import dialect
    from flexbill.invoicing import finalize

    monkeypatch.setenv("FLEXBILL_GRACE_DAYS", "30")
    dag_engine, cli_engine = _operator(db_url), _operator(second_db)
    backfill(dag_engine, FIRST, LAST)
    backfill(cli_engine, FIRST, LAST)
    assert {r["status"] for r in _outputs(dag_engine)["invoices"]} == {"draft"}
    monkeypatch.setenv("AIRFLOW_CONN_FLEXBILL_DB", connection_json(db_url))
    dag = dagbag.dags["flexbill_finalize"]

    from airflow.sdk.exceptions import ParamValidationError

    drafts = _outputs(dag_engine)
    assert dag.test(run_conf={"through": "2099-01-01", "actor": "fin@op.example"}).state == "failed"  # future
    assert dag.test(run_conf={"through": "2026-01-01", "actor": "fin@op.example"}).state == "failed"  # no run
    for conf in ({"through": str(LAST), "actor": ""}, {"through": "not a date", "actor": "fin@op.example"}):
        with pytest.raises(ParamValidationError):  # the typed form refuses them before any task runs
            dag.test(run_conf=conf)
    assert _outputs(dag_engine) == drafts

    assert dag.test(run_conf={"through": str(FIRST), "actor": "fin@op.example"}).state == "success"
    assert dag.test(run_conf={"through": str(LAST), "actor": "fin@op.example"}).state == "success"
    with cli_engine.begin() as conn:
        dialect.lock_for_run(conn)
        finalize(conn, FIRST, "fin@op.example", utcnow())
        finalize(conn, LAST, "fin@op.example", utcnow())
    by_dag, by_cli = _outputs(dag_engine), _outputs(cli_engine)
    assert {(r["status"], r["finalized_by"]) for r in by_dag["invoices"]} == {("finalized", "fin@op.example")}
    assert by_dag == by_cli


def test_billing_dag_finalizes_after_its_report_per_the_grace_period(airflow_db, dagbag, db_url, monkeypatch):
    monkeypatch.setenv("FLEXBILL_GRACE_DAYS", "1")
    engine = _operator(db_url)
    monkeypatch.setenv("AIRFLOW_CONN_FLEXBILL_DB", connection_json(db_url))
    dag = dagbag.dags["flexbill_billing"]
    run = _dag_test(dag, FIRST)
    assert {ti.task_id: ti.state for ti in run.get_task_instances()}["finalize"] == "success"
    assert {r["status"] for r in _outputs(engine)["invoices"]} == {"draft"}  # FIRST is not a day old yet
    assert _dag_test(dag, LAST).state == "success"  # LAST - 1 day >= FIRST: FIRST's drafts are finalized now
    statuses = {(r["billing_date"], r["status"], r["finalized_by"]) for r in _outputs(engine)["invoices"]}
    assert statuses == {(FIRST, "finalized", "grace"), (LAST, "draft", None)}
