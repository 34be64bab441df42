"""Secrets: a database password appears in no output, message, exception or table.

Promise (README "Command line", "Running on Airflow"): flexbill names the database it
failed on with its password hidden; the `flexbill_db` connection's password is never
logged.  Checked here:

* stdout and stderr of failing `flexbill` commands whose URL carries a password: server
  unreachable, host unknown, database missing, database without flexbill's tables, a
  driver that does not exist, a backend flexbill does not support, a malformed URL;
* stdout of `flexbill init-db` and `flexbill run` succeeding on such a URL (PostgreSQL's
  trust authentication ignores the password);
* exceptions (message, repr and the whole formatted traceback, chained exceptions
  included) and log records from `flexbill.airflow_steps` for a `flexbill_db` connection
  with a password: each DAG task's entry points, with the server unreachable, the database
  missing, an unsupported connection type;
* billing_runs.message of a run blocked by the output gate, and every text column of every
  table after all of the above.

The password holds the characters URLs escape; both its plain and its URL-escaped forms, and
a distinctive fragment of it, must be absent.
"""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from datetime import UTC, date, datetime
from urllib.parse import quote

import pytest
from sqlalchemy import String, Text, select

from flexbill import airflow_steps
from flexbill.db import schema as s
from flexbill.db.connect import init_db, make_engine
from flexbill.runner import run_billing_date
from tests.builders import Operator
from tests.processes import run_all
from tests.reliability.world import D, scenario

PASSWORD = "Hx9-s3cr3t:@/%?#"
ENCODED = quote(PASSWORD, safe="")
FORMS = (PASSWORD, ENCODED, "s3cr3t")
MISSING_DB = f"no_such_db_{uuid.uuid4().hex[:8]}"


def leaks(text: str) -> list[str]:
    return [form for form in FORMS if form in text]


def bad_urls(empty_pg: str) -> dict:
    """fault -> a URL carrying the password."""
    host = "127.0.0.1"
    return {
        "unreachable server": f"postgresql://billing:{ENCODED}@{host}:1/billing",
        "unknown host": f"postgresql://billing:{ENCODED}@no-such-host.invalid/billing",
        "missing database": f"postgresql://postgres:{ENCODED}@{host}:5432/{MISSING_DB}",
        "no flexbill tables": empty_pg.replace("postgresql://postgres@", f"postgresql://postgres:{ENCODED}@"),
        "driver that does not exist": f"postgresql+nodriver://billing:{ENCODED}@{host}/billing",
        "unsupported backend": f"mysql://billing:{ENCODED}@{host}/billing",
        "malformed URL": f"postgresql//billing:{ENCODED}@{host}/billing",
    }


COMMANDS = {  # command -> arguments; `run` meets every fault, the others the unreachable server
    "run": ["run", "--date", "2024-03-01"],
    "backfill": ["backfill", "--from", "2024-03-01", "--to", "2024-03-02"],
    "suspend": ["suspend", "--customer", "1", "--actor", "a@x.io"],
    "lift": ["lift", "--customer", "1", "--actor", "a@x.io"],
    "init-db": ["init-db"],
    "report": ["report", "--date", "2024-03-01"],
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Every failing command at once, and init-db + run on a reachable database, by URL with the password."""
    from tests.processes import pg_databases

    with pg_databases(2) as (empty_pg, good_pg):
        urls = bad_urls(empty_pg)
        good = good_pg.replace("postgresql://postgres@", f"postgresql://postgres:{ENCODED}@")
        cwd = tmp_path_factory.mktemp("cwd")
        jobs = [(fault, "run", (*COMMANDS["run"], "--db", url)) for fault, url in urls.items()]
        jobs += [
            ("unreachable server", name, (*args, "--db", urls["unreachable server"]))
            for name, args in COMMANDS.items()
            if name != "run"
        ]
        results = run_all([(args, {"cwd": cwd}) for _, _, args in jobs])
        failing = {(fault, name): res for (fault, name, _), res in zip(jobs, results)}
        init = run_all([(("init-db", "--db", good), {"cwd": cwd})])[0]
        engine = make_engine(good)
        scenario(Operator(engine))
        engine.dispose()
        ran = run_all([(("run", "--date", D.isoformat(), "--db", good), {"cwd": cwd})])[0]
        yield failing, init, ran


@pytest.mark.parametrize(
    "fault, command",
    [(f, "run") for f in bad_urls("postgresql://postgres@h/x")]
    + [("unreachable server", c) for c in COMMANDS if c != "run"],
)
def test_a_failing_command_never_prints_the_password(cli, fault, command):
    res = cli[0][fault, command]
    assert res.returncode != 0, f"{fault}: {command} succeeded?\n{res.stdout}"
    assert leaks(res.stdout + res.stderr) == [], res.stdout + res.stderr


def test_a_succeeding_command_shows_the_database_with_its_password_hidden(cli):
    _, init, ran = cli
    assert init.returncode == 0 and ran.returncode == 0, init.stderr + ran.stderr
    assert "postgres:***@" in init.stdout, init.stdout
    assert leaks(init.stdout + init.stderr + ran.stdout + ran.stderr) == []


# ---------------------------------------------------------------- flexbill.airflow_steps


def connection(**fields) -> str:
    base = {
        "conn_type": "postgres",
        "host": "127.0.0.1",
        "port": 5432,
        "login": "postgres",
        "password": PASSWORD,
        "schema": "postgres",
    }
    return json.dumps({**base, **fields})


CONNECTIONS = {
    "unreachable server": connection(port=1),
    "missing database": connection(schema=MISSING_DB),
    "unsupported type": connection(conn_type="mysql"),
}
START = datetime(2024, 3, 1, tzinfo=UTC)
TASKS = {  # what each DAG task calls
    "extract_snapshot": lambda: airflow_steps.extract_snapshot(START, "run-1"),
    "apply_rule": lambda: airflow_steps.apply_rule(START, "run-1", "signup"),
    "publish": lambda: airflow_steps.publish_summary(START, "run-1"),
    "data_quality_report": lambda: airflow_steps.data_quality_report(START),
    "record_event": lambda: airflow_steps.manual_event({"customer_id": 1, "action": "suspend", "actor": "a@x.io"}),
}


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("fault", list(CONNECTIONS))
def test_airflow_task_errors_never_carry_the_password(monkeypatch, caplog, tmp_path, fault, task):
    monkeypatch.setenv("AIRFLOW_CONN_FLEXBILL_DB", CONNECTIONS[fault])
    monkeypatch.setenv("FLEXBILL_REPORT_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("FLEXBILL_GX_DIR", str(tmp_path / "gx"))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Exception) as failure:
        TASKS[task]()
    exc = failure.value
    text = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)
    assert leaks(text) == [], text
    assert leaks(caplog.text) == [], caplog.text


def test_the_connection_url_is_built_with_the_password_and_redacted_in_messages(pg_database, monkeypatch, caplog):
    """The password reaches the driver (the URL is right) and nothing else: a run through the DAG's
    tasks on a reachable database logs nothing of it."""
    from flexbill.db.connect import redact

    name = pg_database.rsplit("/", 1)[1]
    monkeypatch.setenv("AIRFLOW_CONN_FLEXBILL_DB", connection(schema=name))
    caplog.set_level(logging.DEBUG)
    engine = airflow_steps.engine()
    assert engine.url.password == PASSWORD
    assert leaks(redact(engine.url.render_as_string(hide_password=False))) == []
    init_db(engine)
    scenario(Operator(engine))
    engine.dispose()
    assert airflow_steps.extract_snapshot(START, "run-1")["locations"] == [1, 2]
    assert leaks(caplog.text) == []


# ---------------------------------------------------------------- what flexbill writes


def test_no_table_holds_the_password(pg_database):
    """A blocked run records its reason in billing_runs.message; no text column anywhere holds the password."""
    url = pg_database.replace("postgresql://postgres@", f"postgresql://postgres:{ENCODED}@")
    engine = make_engine(url)
    init_db(engine)
    scenario(Operator(engine))
    run_billing_date(engine, date(2024, 2, 15))

    def negative(result, report_frame):
        result.lines.loc[result.lines.index[0], "amount_cents"] = -1

    with pytest.raises(Exception) as blocked:
        run_billing_date(engine, D, tamper=negative)
    assert leaks(str(blocked.value)) == []
    with engine.connect() as conn:
        [message] = conn.execute(select(s.billing_runs.c.message).where(s.billing_runs.c.billing_date == D)).scalars()
        assert message and "negative" in message
        for table in s.metadata.sorted_tables:
            for column in table.columns:
                if isinstance(column.type, (String, Text)):
                    values = conn.execute(select(column).where(column.is_not(None))).scalars().all()
                    assert not [v for v in values if leaks(v)], f"{table.name}.{column.name} holds the password"
    engine.dispose()
