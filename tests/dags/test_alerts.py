"""A billing operator learns that a date failed or was blocked without opening the UI: the billing DAG's tasks
e-mail FLEXBILL_ALERT_EMAILS through the SMTP connection (Airflow's SmtpNotifier) when they fail for good,
naming the date, the reason and the data-quality report's path, never a password.  Tested with dag.test()
against a local SMTP sink (aiosmtpd) on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import json
import socket
from datetime import UTC, datetime, timedelta
from email import policy

import pytest

from flexbill import validation
from flexbill.airflow_steps import connection_json
from flexbill.errors import OutputRejected
from tests.dags.test_dag_runs import FIRST, _operator

PASSWORD = "Db5ecretPW"


class Sink:
    """An SMTP server on loopback that keeps every message it receives."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages: list[email.message.EmailMessage] = []
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        message["X-Rcpt"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"

    def text(self, message) -> str:
        body = message.get_body(preferencelist=("html", "plain"))
        return f"{message['Subject']}\n{body.get_content() if body else ''}"


@pytest.fixture
def sink():
    server = Sink()
    server.controller.start()
    yield server
    server.controller.stop()


@pytest.fixture
def alerting(sink, monkeypatch, tmp_path):
    monkeypatch.setenv("FLEXBILL_ALERT_EMAILS", "billing-ops@op.example, finance@op.example")
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_DEFAULT",
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": sink.port,
                "extra": {
                    "from_email": "flexbill@op.example",
                    "disable_ssl": True,
                    "disable_tls": True,
                    "retry_limit": 0,
                },
            }
        ),
    )
    monkeypatch.setenv("FLEXBILL_REPORT_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("FLEXBILL_GX_DIR", str(tmp_path / "gx"))
    return sink


def _with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")  # trust auth ignores it


def _run(dag, d):
    logical = datetime.combine(d + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    return dag.test(logical_date=logical)


def test_a_task_failing_for_good_emails_the_date_the_reason_and_the_report(
    airflow_db, dagbag, db_url, alerting, monkeypatch, tmp_path
):
    _operator(db_url)
    monkeypatch.setenv("AIRFLOW_CONN_FLEXBILL_DB", connection_json(_with_password(db_url)))
    monkeypatch.setenv("FLEXBILL_GRACE_DAYS", "two")  # the finalize task cannot read it: bad input, not retried
    run = _run(dagbag.dags["flexbill_billing"], FIRST)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["publish"] == "success" and states["finalize"] == "failed", states
    [mail] = alerting.messages
    text = alerting.text(mail)
    assert mail["X-Rcpt"] == "billing-ops@op.example, finance@op.example"
    assert f"billing date {FIRST} failed (finalize)" in mail["Subject"]
    assert "FLEXBILL_GRACE_DAYS=&#x27;two&#x27; is not a whole number" in text or "FLEXBILL_GRACE_DAYS='two'" in text
    assert str(tmp_path / "reports" / str(FIRST) / "index.html") in text
    assert PASSWORD not in text


def test_a_blocked_output_gate_emails_at_once_without_retries(
    airflow_db, dagbag, db_url, alerting, monkeypatch, tmp_path
):
    _operator(db_url)
    monkeypatch.setenv("AIRFLOW_CONN_FLEXBILL_DB", connection_json(_with_password(db_url)))

    def reject(frames):
        raise OutputRejected("output validation failed, nothing was published: a line amount is negative (1 rows).")

    monkeypatch.setattr(validation, "check_outputs", reject)
    run = _run(dagbag.dags["flexbill_billing"], FIRST)
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert tis["validate_output"].state == "failed" and tis["validate_output"].try_number == 1, "not retried"
    assert tis["publish"].state == "upstream_failed"
    [mail] = alerting.messages
    text = alerting.text(mail)
    assert f"billing date {FIRST} blocked (validate_output)" in mail["Subject"]
    assert "BLOCKED by the output gate" in text and "a line amount is negative" in text
    report = tmp_path / "reports" / str(FIRST) / "index.html"
    assert str(report) in text and report.exists(), "the blocked date's report is written and named"
    assert PASSWORD not in text and PASSWORD not in report.read_text()
