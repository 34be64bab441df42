"""What the DAG tasks call: the billing date of a run, the database of `flexbill_db`, one step.

Cheap to import (no pandas, no GX, no database at import); everything that
costs is imported inside the functions, so parsing a DAG file stays fast.
A run's billing date D is the start of its data interval [D, D+1), never its
logical date.  The database comes from the Airflow connection `flexbill_db`,
read when a task runs, never at parse time.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta, timezone

CONN_ID = "flexbill_db"
OWNER = "billing-ops"
TAGS = ["flexbill", "billing"]
FIRST_RUN = datetime.fromisoformat(os.environ.get("FLEXBILL_START_DATE", "2026-01-01")).replace(tzinfo=timezone.utc)
CATCHUP = os.environ.get("FLEXBILL_CATCHUP", "false").strip().lower() in ("1", "true", "yes")
DAG_ARGS = {
    "owner": OWNER,
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}
# The DAGs a person triggers (a manual suspension, finance's approval): no schedule, and never retried (a
# refused request must fail with its reason, not run again).
ON_DEMAND = {"schedule": None, "start_date": FIRST_RUN, "catchup": False,
             "default_args": {**DAG_ARGS, "retries": 0}, "tags": TAGS}
# The tasks after the per-location ones run when nothing upstream failed: with no valid location the mapped
# tasks expand to nothing (skipped), and the date must still publish (zero invoices), as `flexbill run` does.
AFTER_LOCATIONS = "none_failed"
RULES = ("signup", "plan", "crm_stage")  # the same as flexbill.steps.RULES, without importing pandas here


def billing_date(data_interval_start) -> date:
    """D = the start of the run's data interval (UTC)."""
    if data_interval_start is None:
        raise ValueError("this task needs a data interval: run it from a DAG run, not on its own")
    return data_interval_start.astimezone(timezone.utc).date()


def database_url(conn) -> str:
    """The SQLAlchemy URL of an Airflow connection: sqlite (host = the file's path) or postgres."""
    from sqlalchemy.engine import URL

    kind = (conn.conn_type or "").lower()
    if kind == "sqlite":
        path = conn.host or conn.schema
        if not path:
            raise ValueError(f"connection {CONN_ID}: a sqlite connection needs the database file's path as host")
        return f"sqlite:///{path}"
    if kind in ("postgres", "postgresql"):
        url = URL.create("postgresql", username=conn.login or None, password=conn.password or None,
                         host=conn.host or None, port=conn.port or None, database=conn.schema or None)
        return url.render_as_string(hide_password=False)
    raise ValueError(f"connection {CONN_ID} has type '{kind}': use a sqlite or postgres connection")


def connection_json(url: str) -> str:
    """The `flexbill_db` Airflow connection (JSON form) for a SQLAlchemy URL: the inverse of database_url."""
    import json

    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return json.dumps({"conn_type": "sqlite", "host": u.database})
    return json.dumps({"conn_type": "postgres", "host": u.host, "port": u.port or 5432, "login": u.username,
                       "password": u.password, "schema": u.database})


def engine():
    from airflow.sdk import BaseHook

    from .db.connect import make_engine

    return make_engine(database_url(BaseHook.get_connection(CONN_ID)))


def step(name: str, data_interval_start, run_id: str, *args):
    """Run one step of flexbill.steps for this DAG run, in its own transaction."""
    from . import steps
    from .db.connect import require_schema
    from .errors import OutputRejected

    eng = engine()
    require_schema(eng)
    run = steps.Run(billing_date(data_interval_start), run_id)
    try:
        with eng.begin() as conn:
            return getattr(steps, name)(conn, run, *args)
    except OutputRejected as exc:
        steps.record_failure(eng, run.billing_date, steps.utcnow(), str(exc))
        try:  # finance sees the blocked run and why; the task fails either way
            path = _report(eng, run.billing_date)
        except Exception as report_exc:  # noqa: BLE001 - the rejection is the error to raise
            raise OutputRejected(f"{exc} (the data-quality report failed too: {report_exc})") from None
        raise OutputRejected(f"{exc} The data-quality report is {path}") from None
    finally:
        eng.dispose()


def _report(eng, d: date) -> str:
    from .finance_report import write_report

    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    out = os.environ.get("FLEXBILL_REPORT_DIR") or os.path.join(home, "flexbill", "reports")
    gx = os.environ.get("FLEXBILL_GX_DIR") or os.path.join(home, "flexbill", "gx")
    return str(write_report(eng, d, out, gx))


def data_quality_report(data_interval_start) -> str:
    """Write D's data-quality report and GX Data Docs; returns the page's path (see README, "Data quality")."""
    from sqlalchemy.exc import DBAPIError

    from .db.connect import redact
    from .errors import DatabaseError

    eng = engine()
    d = billing_date(data_interval_start)
    try:
        return _report(eng, d)
    except DBAPIError as exc:  # OperationalError included: say which database and what to do, not a traceback
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise DatabaseError(f"the data-quality report of {d} could not read the billing database: {reason}. "
                            f"Check the {CONN_ID} connection ({redact(eng.url.render_as_string(hide_password=False))})"
                            " and clear this task; the published invoices are not affected.") from None
    finally:
        eng.dispose()


def publish_summary(data_interval_start, run_id: str) -> dict:
    summary = step("publish", data_interval_start, run_id)
    out = {"billing_date": summary.billing_date.isoformat(), **summary.stats,
           "totals": [[c, n, str(sub), str(tax), str(tot)] for c, n, sub, tax, tot in summary.totals]}
    if summary.corrections is not None:  # a retried publish that found its work done reports no corrections
        c = summary.corrections
        out.update(drafts=c.drafts, finalized_kept=c.kept, credit_notes=[n for n, _, _ in c.credit_notes],
                   corrective_invoices=[n for n, _, _ in c.corrective])
    return out


def _finalized(done) -> dict:
    return {"through": done.through.isoformat(), "actor": done.actor, "finalized": done.count,
            "dates": [d.isoformat() for d in done.dates], "numbers": {str(k): list(v) for k, v in done.numbers.items()},
            "waiting": [d.isoformat() for d in done.waiting]}


def finalize_grace(data_interval_start) -> dict:
    """The billing run's grace-period finalization: drafts with billing_date <= D - FLEXBILL_GRACE_DAYS (actor
    `grace`), after D's publish and its data-quality report; the same as `flexbill run` does in its transaction."""
    from .db import dialect
    from .db.connect import require_schema
    from .invoicing import auto_finalize
    from .steps import utcnow

    eng = engine()
    try:
        require_schema(eng)
        with eng.begin() as conn:
            dialect.lock_for_run(conn)
            return _finalized(auto_finalize(conn, billing_date(data_interval_start), utcnow()))
    finally:
        eng.dispose()


def finalize(params: dict) -> dict:
    """finance's approval (the `flexbill_finalize` DAG): `flexbill finalize --through <through> --actor <actor>`."""
    from .cli import parse_date
    from .db import dialect
    from .db.connect import require_schema
    from .invoicing import finalize as run_finalize
    from .steps import utcnow

    through = parse_date(str(params.get("through") or ""), "through")
    eng = engine()
    try:
        require_schema(eng)
        with eng.begin() as conn:
            dialect.lock_for_run(conn)
            return _finalized(run_finalize(conn, through, str(params.get("actor") or ""), utcnow()))
    finally:
        eng.dispose()


def manual_event(params: dict) -> dict:
    """Record the manual suspend/lift of the trigger form, with the checks of `flexbill suspend|lift`."""
    from .manual import parse_instant, record_manual_event
    from .steps import utcnow

    action = str(params.get("action") or "")
    instant = parse_instant(params.get("at"), utcnow())
    eng = engine()
    try:
        event = record_manual_event(eng, int(params["customer_id"]), action, params.get("actor") or "",
                                    params.get("reason"), instant)
    finally:
        eng.dispose()
    return {"customer_id": event["customer_id"], "action": event["action"],
            "occurred_at": event["occurred_at"].isoformat()}
