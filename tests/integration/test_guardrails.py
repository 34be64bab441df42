"""Operator guardrails (issue 12): the mistakes a busy operator makes are refused with one `error:` line, or
recorded with what they change, never passed silently.  One test per finding of the issue, through the real
`flexbill` console script, on SQLite and PostgreSQL where the database matters.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from flexbill.clock import utcnow
from flexbill.db import schema as s
from flexbill.db.connect import init_db, make_engine
from flexbill.runner import run_billing_date
from tests.builders import Operator
from tests.integration.test_cli import one_line_error
from tests.processes import clean_env, dump, flexbill, run_all

D1, D2, D3 = date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)


def operator(url: str):
    """Customers 1-3 in EUR billing monthly from D1; D1 and D2 billed and finalized."""
    engine = make_engine(url)
    init_db(engine)
    op = Operator(engine)
    op.location(1)
    op.plan(1, price="100.00")
    for c in (1, 2, 3):
        op.customer(c)
        op.contract(c, c, 1, start_date=D1)
    run_billing_date(engine, D1)
    run_billing_date(engine, D2)
    return engine


@pytest.fixture
def billed(db_url):
    engine = operator(db_url)
    yield db_url, engine
    engine.dispose()


def events(engine, customer: int) -> list[tuple]:
    e = s.suspension_events
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                select(e.c.id, e.c.action, e.c.occurred_at).where(e.c.customer_id == customer).order_by(e.c.id)
            )
        ]


# ---------------------------------------------------------------- events in time


def test_an_event_in_the_future_needs_future_and_a_typo_is_voided_not_a_lockout(billed):
    url, engine = billed
    env = clean_env(url)
    typo = f"{utcnow().year + 4}-01-01"
    refused = flexbill("suspend", "--customer", "1", "--actor", "ana@op.example", "--at", typo, env=env)
    assert "is in the future" in one_line_error(refused) and "--future" in refused.stderr
    assert events(engine, 1) == []
    ok = flexbill("suspend", "--customer", "1", "--actor", "ana@op.example", "--at", typo, "--future", env=env)
    assert ok.returncode == 0, ok.stderr
    assert f"first counts for billing date {typo}" in ok.stdout
    event_id = int(re.search(r"\(event (\d+)\)", ok.stdout).group(1))
    locked = flexbill("lift", "--customer", "1", "--actor", "ana@op.example", env=env)  # default now: before 2030
    assert "earlier than customer 1's latest event" in one_line_error(locked)

    void = flexbill("void-event", "--id", str(event_id), "--actor", "ana@op.example", "--reason", "year typo", env=env)
    assert void.returncode == 0, void.stderr
    assert f"event {event_id} (suspend of customer 1" in void.stdout
    again = flexbill("suspend", "--customer", "1", "--actor", "ana@op.example", "--reason", "card declined", env=env)
    assert again.returncode == 0, again.stderr  # the voided typo no longer locks the customer
    assert len(events(engine, 1)) == 2  # the log stays append-only: the typo is there, voided
    with engine.connect() as conn:
        assert conn.execute(select(s.event_voids.c.event_id, s.event_voids.c.reason)).all() == [(event_id, "year typo")]
    twice = flexbill("void-event", "--id", str(event_id), "--actor", "ana@op.example", "--reason", "x", env=env)
    assert "already voided" in one_line_error(twice)


def test_a_backdated_event_is_refused_unless_backdate_and_then_lists_what_a_rerun_does(billed):
    url, engine = billed
    env = clean_env(url)
    before = dump(engine)
    args = ("suspend", "--customer", "2", "--actor", "ana@op.example", "--at", "2024-03-01T12:00:00Z")
    refused = flexbill(*args, env=env)
    line = one_line_error(refused)
    assert "falls before the cutoff of billing dates already run: 2024-03-01..2024-03-02 (2 dates)" in line
    assert "--backdate" in line and "1-000002" in line  # customer 2's finalized invoice of D1 would be credited
    assert dump(engine) == before
    ok = flexbill(*args, "--backdate", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "billed dates it changes (2): 2024-03-01..2024-03-02" in ok.stdout
    assert "2024-03-01 invoice 1-000002 (finalized, EUR 120.00)" in ok.stdout
    assert "flexbill backfill --from 2024-03-01 --to 2024-03-02" in ok.stdout
    rerun = flexbill("run", "--date", str(D1), env=env)  # the rerun credits, it never deletes the sent invoice
    assert rerun.returncode == 0, rerun.stderr
    assert "credit note 1-C000001 issued for invoice 1-000002" in rerun.stdout
    with engine.connect() as conn:
        assert conn.execute(select(s.invoices.c.status).where(s.invoices.c.number == "1-000002")).scalar() == "credited"


def test_an_event_now_says_which_billing_date_it_first_counts_for(billed):
    url, engine = billed
    ok = flexbill("suspend", "--customer", "3", "--actor", "ana@op.example", env=clean_env(url))
    assert ok.returncode == 0, ok.stderr
    today = utcnow().date()
    assert (
        f"first counts for billing date {today}" in ok.stdout
        or f"first counts for billing date {today + timedelta(days=1)}" in ok.stdout
    )  # run across midnight


def test_voiding_refuses_rule_events_and_unknown_or_huge_ids(billed):
    url, engine = billed
    op = Operator(engine)
    op.event(1, datetime(2024, 2, 1), source="plan", trigger_key="plan:1")
    rule_event = events(engine, 1)[0][0]
    results = run_all(
        [
            (("void-event", "--id", i, "--actor", "ana@op.example", "--reason", "r"), {"env": clean_env(url)})
            for i in (str(rule_event), "999", "9223372036854775808")
        ]
    )
    assert "not by a person" in one_line_error(results[0])
    assert "event 999 does not exist" in one_line_error(results[1])
    assert "does not exist" in one_line_error(results[2])


# ---------------------------------------------------------------- runs in time


def test_a_run_whose_cutoff_is_ahead_is_refused_unless_allow_future(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.sqlite'}"
    operator(url).dispose()
    tomorrow = utcnow().date() + timedelta(days=1)
    today = utcnow().date()
    results = run_all(
        [(("run", "--date", str(d)), {"env": clean_env(url)}) for d in (today, tomorrow)]
        + [(("backfill", "--from", str(D3), "--to", str(tomorrow)), {"env": clean_env(url)})]
    )
    for res in results:
        assert "cannot be billed yet" in one_line_error(res) and "--allow-future" in res.stderr
    ok = flexbill("run", "--date", str(tomorrow), "--allow-future", env=clean_env(url))
    assert ok.returncode == 0, ok.stderr


def test_a_run_after_dates_never_run_warns_and_labels_their_periods_late_not_after_a_lift(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.sqlite'}"
    engine = make_engine(url)
    init_db(engine)
    op = Operator(engine)
    op.location(1)
    op.plan(1, price="100.00", months=0, weeks=1)
    op.customer(1)
    op.contract(1, 1, 1, start_date=D1)
    op.customer(2)
    op.contract(2, 2, 1, start_date=D1)
    op.event(2, datetime(2024, 2, 1), action="suspend")
    op.event(2, datetime(2024, 3, 20, 12), action="lift")
    run_billing_date(engine, D1)
    res = flexbill("run", "--date", "2024-03-22", env=clean_env(url))
    assert res.returncode == 0, res.stderr
    assert (
        "warning: 2024-03-21 has no published run: the 20 dates 2024-03-02..2024-03-21 were never published "
        "(last published: 2024-03-01)"
    ) in res.stdout
    # customer 1's weekly periods of 03-08 and 03-15 are late because nobody ran those dates; customer 2's
    # periods of 03-01..03-15 were skipped on D1 while suspended, then lifted
    assert "3 back-billed after a lift, 2 late (dates not run)" in res.stdout
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(s.invoice_lines)).scalar_one() == 8


# ---------------------------------------------------------------- databases


def test_a_missing_sqlite_file_or_an_empty_db_is_an_error_and_nothing_is_created(tmp_path):
    missing = tmp_path / "nowhere" / "billing.sqlite"
    env = clean_env()
    results = run_all(
        [
            (("run", "--date", str(D1), "--db", f"sqlite:///{missing}"), {"env": env}),
            (("suspend", "--customer", "1", "--actor", "ana@op.example", "--db", f"sqlite:///{missing}"), {"env": env}),
            (("run", "--date", str(D1), "--db", ""), {"env": env}),
            (("run", "--date", str(D1), "--db", "postgresql+asyncpg://postgres@127.0.0.1/x"), {"env": env}),
            (("run", "--date", str(D1), "--db", "postgresql+pg8000://postgres@127.0.0.1/x"), {"env": env}),
        ]
    )
    for res in results[:2]:
        line = one_line_error(res)
        assert str(missing) in line and "flexbill init-db" in line
    assert not missing.parent.exists(), "a missing database is reported, never created"
    assert "database URL is empty" in one_line_error(results[2])
    assert "does not support the driver 'asyncpg'" in one_line_error(results[3])
    assert "does not support the driver 'pg8000'" in one_line_error(results[4])
    created = flexbill("init-db", "--db", f"sqlite:///{missing}", env=env)
    assert created.returncode == 0 and missing.exists()


# ---------------------------------------------------------------- one error line, never a traceback


@pytest.mark.parametrize(
    "args, words",
    [
        (("run", "--date", "9999-12-31"), "outside the dates flexbill bills"),
        (("run", "--date", "0001-01-01"), "outside the dates flexbill bills"),
        (("suspend", "--customer", "1", "--actor", "bob"), "does not say who"),
        (("suspend", "--customer", "1", "--actor", "--reason"), "looks like an option"),
        (("lift", "--customer", "1", "--actor", "-x"), "looks like an option"),
        (("finalize", "--through", "2024-03-01", "--actor", "bob"), "does not say who"),
        (
            ("suspend", "--customer", "1", "--actor", "ana@op.example", "--at", "9999-12-31T00:00:00Z"),
            "outside the dates",
        ),
        (("suspend", "--customer", "1", "--actor", "ana@op.example", "--future"), "--future needs an explicit --at"),
        (("run", "--dat", "2024-03-01"), "No such option: --dat"),
        (("run",), "Missing option '--date'"),
        (("suspend", "--customer", "one", "--actor", "ana@op.example"), "Invalid value for '--customer'"),
        (("nonsense",), "No such command 'nonsense'"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_1(billed, args, words):
    url, engine = billed
    before = dump(engine)
    res = flexbill(*args, env=clean_env(url))
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert words in one_line_error(res)
    assert dump(engine) == before


def test_ids_beyond_the_integer_range_do_not_exist(billed):
    url, _ = billed
    huge = "2147483648" if url.startswith("postgresql") else "9223372036854775808"
    results = run_all(
        [
            (("suspend", "--customer", huge, "--actor", "ana@op.example"), {"env": clean_env(url)}),
            (("explain", "--contract", huge, "--date", str(D1)), {"env": clean_env(url)}),
        ]
    )
    assert f"customer {huge} does not exist" in one_line_error(results[0])
    assert f"contract {huge} does not exist" in one_line_error(results[1])


def test_version_help_examples_and_unwrapped_output(billed):
    url, _ = billed
    version = flexbill("--version")
    assert version.returncode == 0 and re.fullmatch(r"flexbill \d+\.\d+\.\d+\n", version.stdout)
    commands = ["init-db", "run", "report", "backfill", "finalize", "explain", "suspend", "lift", "void-event", "demo"]
    helps = run_all([((c, "--help"), {"env": clean_env()}) for c in commands])
    for command, res in zip(commands, helps):
        assert res.returncode == 0 and "Example:" in res.stdout and f"flexbill {command}" in res.stdout, command
    long = flexbill("run", "--date", str(D2), env=clean_env(url))  # piped: one line each, however long
    first = long.stdout.splitlines()[0]
    assert first.startswith(f"{D2}: published") and first.endswith("s]") and len(first) > 120


# ---------------------------------------------------------------- the demo


def test_demo_with_ten_customers_works_and_refuses_a_database_that_holds_data(tmp_path):
    small = f"sqlite:///{tmp_path / 'small.sqlite'}"
    res = flexbill("demo", "--customers", "10", "--days", "3", "--no-report", "--db", small, env=clean_env())
    assert res.returncode == 0, res.stderr
    assert "credit note" in res.stdout or "Corrections" in res.stdout or "finalized" in res.stdout
    again = flexbill("demo", "--customers", "10", "--days", "3", "--no-report", "--db", small, env=clean_env())
    assert "already holds data" in one_line_error(again) and "empty database" in again.stderr


def test_demo_refuses_an_operators_database(billed):
    url, engine = billed
    before = dump(engine)
    res = flexbill("demo", "--days", "3", "--no-report", "--db", url, env=clean_env())
    assert "already holds data (1 locations, 3 customers, 1 plans, 3 contracts)" in one_line_error(res)
    assert dump(engine) == before
    with engine.begin() as conn:  # (a table flexbill never writes stays as the operator left it)
        conn.execute(update(s.plans).values(name="Plan 1"))
