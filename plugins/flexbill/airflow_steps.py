"""What the DAG tasks call: the billing date of a run, the database of `flexbill_db`, one step.

Cheap to import (no pandas, no GX, no database at import); everything that
costs is imported inside the functions, so parsing a DAG file stays fast.
A run's billing date D is the start of its data interval [D, D+1), never its
logical date.  The database comes from the Airflow connection `flexbill_db`,
read when a task runs, never at parse time.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta

CONN_ID = "flexbill_db"
OWNER = "billing-ops"
TAGS = ["flexbill", "billing"]
FIRST_RUN = datetime.fromisoformat(os.environ.get("FLEXBILL_START_DATE", "2026-01-01")).replace(tzinfo=UTC)
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
ON_DEMAND = {
    "schedule": None,
    "start_date": FIRST_RUN,
    "catchup": False,
    "default_args": {**DAG_ARGS, "retries": 0},
    "tags": TAGS,
}
# The tasks after the per-location ones run when nothing upstream failed: with no valid location the mapped
# tasks expand to nothing (skipped), and the date must still publish (zero invoices), as `flexbill run` does.
AFTER_LOCATIONS = "none_failed"
RULES = ("signup", "plan", "crm_stage")  # the same as flexbill.steps.RULES, without importing pandas here


ALERT_ENV = "FLEXBILL_ALERT_EMAILS"  # comma-separated recipients of the billing DAG's failure e-mails
ALERT_FROM_ENV = "FLEXBILL_ALERT_FROM"  # the sender (else the SMTP connection's from_email)
SMTP_CONN_ENV = "FLEXBILL_SMTP_CONN_ID"  # the Airflow SMTP connection (default smtp_default)


def on_billing_failure(context) -> None:
    """on_failure_callback of the billing DAG's tasks: e-mail FLEXBILL_ALERT_EMAILS that date D failed or was
    blocked, why, and where the data-quality report is (never a password). Without recipients it only logs."""
    import logging

    log = logging.getLogger("flexbill.alerts")
    ti, exc = context.get("ti"), context.get("exception")
    task = getattr(ti, "task_id", "?")
    try:
        d = billing_date(context.get("data_interval_start"))
    except ValueError:
        d = None
    reason = " ".join(str(exc or "no reason recorded").split())
    reason = redact_urls(reason)
    blocked = "output validation failed" in reason
    what = "BLOCKED by the output gate: nothing was published" if blocked else f"FAILED in task {task}"
    report = os.path.join(_report_dir(), str(d), "index.html") if d else None
    subject = f"flexbill: billing date {d} {('blocked' if blocked else 'failed')} ({task})"
    log.error("%s: %s. Reason: %s. Report: %s", subject, what, reason, report)
    recipients = [r.strip() for r in os.environ.get(ALERT_ENV, "").split(",") if r.strip()]
    if not recipients:
        return
    from html import escape

    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    run_id = getattr(ti, "run_id", None) or context.get("run_id")
    todo = (
        "Do not send the date's invoices: fix the cause (a flexbill defect or a tampered staging result), then "
        "clear the whole DAG run."
        if blocked
        else "Read the task log, fix the cause, then clear the failed task (clearing is safe: nothing is billed twice)."
    )
    body = (
        f"<p><b>flexbill billing date {escape(str(d))}: {escape(what)}</b></p>"
        f"<p>Reason: {escape(reason)}</p>"
        f"<p>DAG run: {escape(str(run_id))}, task {escape(task)}.</p>"
        + (f"<p>Data-quality report: {escape(report)}</p>" if report else "")
        + f"<p>What to do: {escape(todo)}</p>"
    )
    notifier = SmtpNotifier(
        to=recipients,
        from_email=os.environ.get(ALERT_FROM_ENV) or None,
        subject=subject,
        html_content=body,
        smtp_conn_id=os.environ.get(SMTP_CONN_ENV) or None,
    )
    try:
        notifier.notify(context)  # not __call__: the texts are final, never rendered as templates
    except Exception as err:  # noqa: BLE001 - an unreachable mail server must not hide the failure itself
        log.error("flexbill: the failure e-mail for %s could not be sent: %s", d, redact_urls(str(err)))


def redact_urls(text: str) -> str:
    """Database URLs in a message with their passwords hidden."""
    import re

    from .db.connect import redact

    return re.sub(r"[a-z][a-z0-9+.-]*://\S+", lambda m: redact(m.group(0)), text)


def _report_dir() -> str:
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return os.environ.get("FLEXBILL_REPORT_DIR") or os.path.join(home, "flexbill", "reports")


# The billing DAG's tasks e-mail on failure (after their retries; a blocked gate or bad input is not retried).
BILLING_ARGS = {**DAG_ARGS, "on_failure_callback": on_billing_failure}


def billing_date(data_interval_start) -> date:
    """D = the start of the run's data interval (UTC)."""
    if data_interval_start is None:
        raise ValueError("this task needs a data interval: run it from a DAG run, not on its own")
    return data_interval_start.astimezone(UTC).date()


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
        url = URL.create(
            "postgresql",
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or None,
            port=conn.port or None,
            database=conn.schema or None,
        )
        return url.render_as_string(hide_password=False)
    raise ValueError(f"connection {CONN_ID} has type '{kind}': use a sqlite or postgres connection")


def connection_json(url: str) -> str:
    """The `flexbill_db` Airflow connection (JSON form) for a SQLAlchemy URL: the inverse of database_url."""
    import json

    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return json.dumps({"conn_type": "sqlite", "host": u.database})
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": u.host,
            "port": u.port or 5432,
            "login": u.username,
            "password": u.password,
            "schema": u.database,
        }
    )


def engine():
    from airflow.sdk import BaseHook

    from .db.connect import make_engine

    return make_engine(database_url(BaseHook.get_connection(CONN_ID)))


def _run_step(fn, data_interval_start, run_id: str, *args, first: bool = False):
    """Run `fn`, one step of flexbill.steps (or flexbill.publishing.publish), for this DAG run, in its own
    transaction.  `first`: the DAG run's first task, which refuses a date whose day is not over (as the CLI does).

    A blocked output gate or bad input fails the task at once (AirflowFailException: retrying cannot help);
    a database error is retried with backoff."""
    from .clock import check_cutoff, utcnow
    from .db.connect import require_schema
    from .errors import InputError, OutputRejected
    from .publishing import record_failure
    from .staging import Run

    eng = engine()
    try:
        require_schema(eng)
        run = Run(billing_date(data_interval_start), run_id)
        if first:
            check_cutoff(run.billing_date, utcnow(), os.environ.get("FLEXBILL_ALLOW_FUTURE") == "1", "billing date")
        try:
            with eng.begin() as conn:
                return fn(conn, run, *args)
        except OutputRejected as exc:
            record_failure(eng, run.billing_date, utcnow(), str(exc))
            try:  # finance sees the blocked run and why; the task fails either way
                path = _report(eng, run.billing_date)
            except Exception as report_exc:  # noqa: BLE001 - the rejection is the error to raise
                _fail_now(OutputRejected(f"{exc} (the data-quality report failed too: {report_exc})"))
            _fail_now(OutputRejected(f"{exc} The data-quality report is {path}"))
    except InputError as exc:
        _fail_now(exc)
    finally:
        eng.dispose()


# One function per task of the billing DAG (the DAG file's @task functions call these); each imports its step
# when the task runs, so parsing a DAG file never imports pandas or Great Expectations.


def extract_snapshot(data_interval_start, run_id: str) -> dict:
    """Read and validate the source tables as of the cutoff; returns the quarantined count and the locations."""
    from .steps import extract_snapshot as fn

    return _run_step(fn, data_interval_start, run_id, first=True)


def apply_rule(data_interval_start, run_id: str, rule: str) -> int:
    from .steps import apply_rule as fn

    return _run_step(fn, data_interval_start, run_id, rule)


def owed_periods(data_interval_start, run_id: str, location_id: int) -> int:
    from .steps import owed_periods as fn

    return _run_step(fn, data_interval_start, run_id, location_id)


def suspension_filter(data_interval_start, run_id: str, location_id: int) -> int:
    from .steps import suspension_filter as fn

    return _run_step(fn, data_interval_start, run_id, location_id)


def build_invoices(data_interval_start, run_id: str, location_id: int) -> int:
    from .steps import build_invoices as fn

    return _run_step(fn, data_interval_start, run_id, location_id)


def active_user_report(data_interval_start, run_id: str) -> int:
    from .steps import active_user_report as fn

    return _run_step(fn, data_interval_start, run_id)


def validate_output(data_interval_start, run_id: str) -> dict:
    from .steps import validate_output as fn

    return _run_step(fn, data_interval_start, run_id)


def _fail_now(exc: Exception):
    """Fail the task without retries, with the message of `exc`."""
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(f"{type(exc).__name__}: {exc}") from None


def _report(eng, d: date) -> str:
    from .finance_report import write_report

    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    gx = os.environ.get("FLEXBILL_GX_DIR") or os.path.join(home, "flexbill", "gx")
    return str(write_report(eng, d, _report_dir(), gx))


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
        raise DatabaseError(
            f"the data-quality report of {d} could not read the billing database: {reason}. "
            f"Check the {CONN_ID} connection ({redact(eng.url.render_as_string(hide_password=False))})"
            " and clear this task; the published invoices are not affected."
        ) from None
    finally:
        eng.dispose()


def publish_summary(data_interval_start, run_id: str) -> dict:
    """Publish the run's validated staging; returns D's figures and corrections (small, for XCom)."""
    from .publishing import publish as fn

    summary = _run_step(fn, data_interval_start, run_id)
    out = {
        "billing_date": summary.billing_date.isoformat(),
        **summary.stats,
        "totals": [[c, n, str(sub), str(tax), str(tot)] for c, n, sub, tax, tot in summary.totals],
    }
    if summary.corrections is not None:  # a retried publish that found its work done reports no corrections
        c = summary.corrections
        out.update(
            drafts=c.drafts,
            finalized_kept=c.kept,
            credit_notes=[n for n, _, _ in c.credit_notes],
            corrective_invoices=[n for n, _, _ in c.corrective],
        )
    return out


def _finalized(done) -> dict:
    return {
        "through": done.through.isoformat(),
        "actor": done.actor,
        "finalized": done.count,
        "dates": [d.isoformat() for d in done.dates],
        "numbers": {str(k): list(v) for k, v in done.numbers.items()},
        "waiting": [d.isoformat() for d in done.waiting],
    }


def finalize_grace(data_interval_start) -> dict:
    """The billing run's grace-period finalization: drafts with billing_date <= D - FLEXBILL_GRACE_DAYS (actor
    `grace`), after D's publish and its data-quality report; the same as `flexbill run` does in its transaction."""
    from .clock import utcnow
    from .db import dialect
    from .db.connect import require_schema
    from .errors import InputError
    from .invoicing import auto_finalize

    eng = engine()
    try:
        require_schema(eng)
        with eng.begin() as conn:
            dialect.lock_for_run(conn)
            return _finalized(auto_finalize(conn, billing_date(data_interval_start), utcnow()))
    except InputError as exc:  # FLEXBILL_GRACE_DAYS malformed: retrying cannot help
        _fail_now(exc)
    finally:
        eng.dispose()


def finalize(params: dict) -> dict:
    """finance's approval (the `flexbill_finalize` DAG): `flexbill finalize --through <through> --actor <actor>`."""
    from .clock import utcnow
    from .db import dialect
    from .db.connect import require_schema
    from .inputs import check_actor, parse_date
    from .invoicing import finalize as run_finalize

    through = parse_date(str(params.get("through") or ""), "through")
    actor = check_actor(params.get("actor"), "actor")
    eng = engine()
    try:
        require_schema(eng)
        with eng.begin() as conn:
            dialect.lock_for_run(conn)
            return _finalized(run_finalize(conn, through, actor, utcnow()))
    finally:
        eng.dispose()


def manual_event(params: dict) -> dict:
    """Record the manual suspend/lift of the trigger form, with the checks of `flexbill suspend|lift`."""
    from .clock import utcnow
    from .inputs import parse_instant
    from .manual import record_manual_event

    action = str(params.get("action") or "")
    now = utcnow()
    instant = parse_instant(params.get("at"), now, "at")
    eng = engine()
    try:
        done = record_manual_event(
            eng,
            int(params["customer_id"]),
            action,
            params.get("actor") or "",
            params.get("reason"),
            instant,
            now=now,
            future=bool(params.get("future")),
            backdate=bool(params.get("backdate")),
        )
    finally:
        eng.dispose()
    event, impact = done.event, done.impact
    return {
        "event_id": event["id"],
        "customer_id": event["customer_id"],
        "action": event["action"],
        "occurred_at": event["occurred_at"].isoformat(),
        "first_billing_date": impact.first_date.isoformat(),
        "billed_dates_changed": [d.isoformat() for d in impact.dates],
        "rerun": impact.rerun,
    }
