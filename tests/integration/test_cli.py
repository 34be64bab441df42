"""The `flexbill` console script, run for real in subprocesses (CONTRACT.md, "Commands").

Bad input must exit non-zero with ONE readable line on stderr (no traceback) and
write nothing.  A flexbill start costs seconds, so one module fixture starts every
command at once, each on its own database (bad input on its own copy of one seeded
SQLite database, compared with the seed afterwards); the tests read the results.
"""

from __future__ import annotations

import shutil
import threading
from datetime import date, datetime

import pytest
from sqlalchemy import create_engine, inspect, text

from flexbill.db import schema as s
from flexbill.db.connect import init_db, make_engine
from tests.builders import Operator
from tests.processes import Result, dump, flexbill, pg_databases, start

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/x"
D = date(2024, 3, 1)

CONTRACT_COLUMNS = {
    "locations": "id name currency tax_rate keep_new_accounts_suspended_since",
    "customers": "id location_id full_name email created_at archived_at portal_access",
    "plans": "id location_id name price currency invoice_every_months invoice_every_weeks "
    "suspend_customers_joining_since",
    "contracts": "id customer_id plan_id price quantity start_date billing_day cancellation_date next_invoice_date "
    "created_at",
    "suspension_events": "id customer_id occurred_at action source reason actor trigger_key",
    "crm_boards": "id location_id name",
    "crm_stages": "id board_id name deactivate_account_since",
    "crm_stage_entries": "id customer_id stage_id entered_at",
    "invoices": "invoice_id customer_id location_id billing_date currency subtotal tax total",
    "invoice_lines": "invoice_id contract_id period_start period_end quantity unit_price amount prorated",
    "skipped_contracts": "billing_date contract_id customer_id reason owed_periods",
    "active_user_report": "report_date location_id members active_users suspended_members "
    "suspended_with_portal_access contacts",
    "quarantine": "billing_date source_table row_id reason",
}


def one_line_error(res: Result) -> str:
    """The run failed with exactly one readable line on stderr; returns it."""
    assert res.returncode != 0, f"exit 0 for bad input: {res.args}\nstdout={res.stdout!r}"
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f"{res.args}: stderr has {len(lines)} lines:\n{res.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def seed(op: Operator) -> None:
    """Customers in every state a manual event is checked against, and one run's worth of work."""
    op.location(1, currency="EUR", tax_rate="0.2000")
    op.location(2, currency="EUR", tax_rate="0.2000", keep_new_accounts_suspended_since=datetime(2024, 1, 15))
    op.plan(1, price="100.00")
    op.customer(1)  # active
    op.contract(1, 1, 1, start_date=D)
    op.customer(3, archived_at=datetime(2024, 2, 1))
    op.contract(3, 3, 1, start_date=date(2024, 1, 1))
    op.customer(4, location_id=2, created_at=datetime(2024, 2, 1))  # suspended by the signup rule, not yet recorded
    op.contract(4, 4, 1, start_date=D)
    op.customer(5)
    op.contract(5, 5, 1, start_date=D)
    op.event(5, datetime(2024, 2, 10), action="suspend", source="manual", actor="admin@x.io")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """The path of a seeded SQLite database; tests copy it."""
    path = tmp_path_factory.mktemp("seed") / "seed.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    init_db(engine)
    seed(Operator(engine))
    engine.dispose()  # checkpoints the WAL into the file
    return path


def copy_of(seeded, tmp_path_factory, name: str) -> str:
    path = tmp_path_factory.mktemp(name) / "flexbill.sqlite"
    shutil.copy(seeded, path)
    return f"sqlite:///{path}"


def contents(url: str) -> dict:
    engine = make_engine(url)
    try:
        return dump(engine)
    finally:
        engine.dispose()


# ---------------------------------------------------------------- help


SUBCOMMANDS = {
    "run": ["--date", "--db"],
    "backfill": ["--from", "--to", "--db"],
    "suspend": ["--customer", "--actor", "--reason", "--at", "--db"],
    "lift": ["--customer", "--actor", "--reason", "--at", "--db"],
    "init-db": ["--db"],
}


def test_help_lists_every_command(tmp_path):
    res = flexbill("--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    for command in SUBCOMMANDS:
        assert command in res.stdout
    assert "--db" in res.stdout or "FLEXBILL_DB_URL" in res.stdout


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_each_command_help_describes_its_options(tmp_path, command):
    res = flexbill(command, "--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Usage" in res.stdout
    for option in SUBCOMMANDS[command]:
        assert option in res.stdout, f"{command} --help does not mention {option}"
    # the options are explained, not only named: a description follows the option names
    assert len(res.stdout.split()) > 20 + 3 * len(SUBCOMMANDS[command])
    assert list(tmp_path.iterdir()) == []  # --help creates no database


# ---------------------------------------------------------------- init-db


def test_init_db_creates_every_table_and_is_idempotent(db_url, tmp_path):
    first = flexbill("init-db", db=db_url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "created" in first.stdout
    engine = create_engine(db_url)
    try:
        insp = inspect(engine)
        for table, columns in CONTRACT_COLUMNS.items():
            present = {c["name"] for c in insp.get_columns(table)}
            assert set(columns.split()) <= present, f"{table} lacks {set(columns.split()) - present}"
        with engine.begin() as conn:
            conn.execute(text("insert into locations (id, name, currency, tax_rate) values (1, 'HQ', 'EUR', 0.2)"))
        second = flexbill("init-db", "--db", db_url, cwd=tmp_path)  # --db instead of the environment
        assert second.returncode == 0, second.stderr
        assert "already exist" in second.stdout
        with engine.connect() as conn:
            assert conn.execute(text("select count(*) from locations")).scalar() == 1
    finally:
        engine.dispose()


def test_without_db_the_embedded_sqlite_file_is_used(tmp_path):
    res = flexbill("init-db", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    path = tmp_path / "var" / "flexbill.sqlite"
    assert path.exists()
    assert set(CONTRACT_COLUMNS) <= set(inspect_tables(f"sqlite:///{path}"))


def test_a_command_exits_with_the_sqlite_database_closed_and_its_output_flushed(tmp_path):
    """`flexbill` (cli.console) closes its connections and then skips the shutdown's garbage collection
    (gc.freeze): SQLite must still fold its write-ahead log into the database file, and the output must be whole."""
    url = f"sqlite:///{tmp_path}/closed.sqlite"
    assert flexbill("init-db", db=url).returncode == 0
    res = flexbill("run", "--date", "2024-03-01", db=url)
    assert res.returncode == 0, res.stderr
    assert "2024-03-01: published 0 invoices" in res.stdout and res.stdout.endswith("\n")
    assert not (tmp_path / "closed.sqlite-wal").exists(), "the write-ahead log was left: a connection stayed open"


# ---------------------------------------------------------------- bad input and refused events

# kind -> (args; the database: "seed" = a copy of the seed, "empty-sqlite", "empty-pg" or a URL; stderr fragments)
BAD = {
    "run_date_malformed": (["run", "--date", "2024-3-1"], "seed", ["2024-3-1", "YYYY-MM-DD"]),
    "run_date_words": (["run", "--date", "yesterday"], "seed", ["yesterday", "YYYY-MM-DD"]),
    "run_date_impossible": (["run", "--date", "2024-02-30"], "seed", ["2024-02-30"]),
    "backfill_from_impossible": (["backfill", "--from", "2024-02-30", "--to", "2024-03-05"], "seed", ["2024-02-30"]),
    "backfill_to_malformed": (["backfill", "--from", "2024-03-01", "--to", "5 March"], "seed", ["5 March"]),
    "backfill_from_after_to": (
        ["backfill", "--from", "2024-03-05", "--to", "2024-03-01"],
        "seed",
        ["2024-03-05", "2024-03-01"],
    ),
    "run_unreachable_db": (["run", "--date", "2024-03-01"], UNREACHABLE, ["127.0.0.1"]),
    "backfill_unreachable_db": (["backfill", "--from", "2024-03-01", "--to", "2024-03-02"], UNREACHABLE, ["127.0.0.1"]),
    "init_db_unreachable_db": (["init-db"], UNREACHABLE, ["127.0.0.1"]),
    "suspend_unreachable_db": (["suspend", "--customer", "1", "--actor", "a@x.io"], UNREACHABLE, ["127.0.0.1"]),
    "run_sqlite_without_tables": (["run", "--date", "2024-03-01"], "empty-sqlite", ["flexbill init-db"]),
    "run_pg_without_tables": (["run", "--date", "2024-03-01"], "empty-pg", ["flexbill init-db"]),
    "backfill_pg_without_tables": (
        ["backfill", "--from", "2024-03-01", "--to", "2024-03-02"],
        "empty-pg",
        ["flexbill init-db"],
    ),
    "suspend_pg_without_tables": (
        ["suspend", "--customer", "1", "--actor", "a@x.io"],
        "empty-pg",
        ["flexbill init-db"],
    ),
    # refused manual events (customers of `seed`)
    "suspend_unknown_customer": (
        ["suspend", "--customer", "999", "--actor", "a@x.io", "--at", "2024-03-01T10:00:00Z"],
        "seed",
        ["999"],
    ),
    "suspend_archived_customer": (
        ["suspend", "--customer", "3", "--actor", "a@x.io", "--at", "2024-03-01T10:00:00Z"],
        "seed",
        ["3", "archived"],
    ),
    "suspend_suspended_customer": (
        ["suspend", "--customer", "5", "--actor", "a@x.io", "--at", "2024-03-01T10:00:00Z"],
        "seed",
        ["5", "already suspended"],
    ),
    # suspended by a signup rule no run has recorded yet: still refused, and the rule's event is not written either
    "suspend_customer_suspended_by_pending_rule": (
        ["suspend", "--customer", "4", "--actor", "a@x.io", "--at", "2024-03-01T10:00:00Z"],
        "seed",
        ["4", "already suspended"],
    ),
    "lift_customer_not_suspended": (
        ["lift", "--customer", "1", "--actor", "a@x.io", "--at", "2024-03-01T10:00:00Z"],
        "seed",
        ["1", "not suspended"],
    ),
    # customer 5's latest event is a suspend at 2024-02-10: nothing may be recorded before it
    "suspend_at_before_latest_event": (
        ["suspend", "--customer", "5", "--actor", "a@x.io", "--at", "2024-02-01"],
        "seed",
        ["2024-02-10", "latest event"],
    ),
    "suspend_at_malformed": (
        ["suspend", "--customer", "1", "--actor", "a@x.io", "--at", "next friday"],
        "seed",
        ["next friday"],
    ),
    "lift_at_impossible": (
        ["lift", "--customer", "5", "--actor", "a@x.io", "--at", "2024-02-30T10:00:00"],
        "seed",
        ["2024-02-30"],
    ),
    "suspend_blank_actor": (
        ["suspend", "--customer", "1", "--actor", " ", "--at", "2024-03-01T10:00:00Z"],
        "seed",
        ["--actor"],
    ),
}


# Sequences of commands on one database each (a command starts when the one before it ends).
# "{db}" is replaced by the database's URL, and FLEXBILL_DB_URL then points at an unreachable
# server: --db must win over the environment.
RUN_THEN_BACKFILL = [
    ["run", "--date", "2024-03-01"],
    ["backfill", "--from", "2024-03-02", "--to", "2024-04-01", "--db", "{db}"],
]
SUSPEND_THEN_LIFT = [
    [
        "suspend",
        "--customer",
        "1",
        "--actor",
        "ops@example.com",
        "--reason",
        "card declined",
        "--at",
        "2024-03-05T10:00:00Z",
    ],
    [
        "lift",
        "--customer",
        "1",
        "--actor",
        "boss@example.com",
        "--reason",
        "paid",
        "--at",
        "2024-03-06T09:30:00+02:00",
        "--db",
        "{db}",
    ],
]


def _chain(commands, url, cwd, sink):
    for args in commands:
        env_url = UNREACHABLE if "{db}" in args else url
        sink.append(start(*[url if a == "{db}" else a for a in args], db=env_url, cwd=cwd).wait())
        if sink[-1].returncode != 0:
            return


@pytest.fixture(scope="module")
def launched(seeded, tmp_path_factory):
    """Every command of the tests below started at once (each sequence in its own thread), each on
    its own database.  Yields {"bad": kind -> (Result, url, contents before), "empty-pg tables": [...],
    ("run then backfill" | "suspend then lift", dialect) -> ([Result...], url)}."""
    with pg_databases(3) as [empty_pg, pg_runs, pg_manual]:
        cwd = tmp_path_factory.mktemp("cwd")
        chains = {}
        for kind, (args, where, _) in BAD.items():
            if where == "seed":
                url = copy_of(seeded, tmp_path_factory, kind)
                before = contents(url)
            elif where == "empty-sqlite":
                url, before = f"sqlite:///{tmp_path_factory.mktemp(kind) / 'new.sqlite'}", None
            elif where == "empty-pg":
                url, before = empty_pg, None
            else:
                url, before = where, None
            chains[kind] = ([args], url, before)
        for name, commands, pg_url in (
            ("run then backfill", RUN_THEN_BACKFILL, pg_runs),
            ("suspend then lift", SUSPEND_THEN_LIFT, pg_manual),
        ):
            engine = make_engine(pg_url)
            init_db(engine)
            seed(Operator(engine))
            engine.dispose()
            chains[name, "sqlite"] = (commands, copy_of(seeded, tmp_path_factory, "chain"), None)
            chains[name, "postgresql"] = (commands, pg_url, None)
        results = {key: [] for key in chains}
        threads = [
            threading.Thread(target=_chain, args=(commands, url, cwd, results[key]), daemon=True)
            for key, (commands, url, _) in chains.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        out = {
            "bad": {kind: (results[kind][0], chains[kind][1], chains[kind][2]) for kind in BAD},
            "empty-pg tables": inspect_tables(empty_pg),
        }
        for key in chains:
            if key not in BAD:
                out[key] = (results[key], chains[key][1])
        yield out


def inspect_tables(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_input_exits_non_zero_with_one_line_and_writes_nothing(launched, kind):
    res, url, before = launched["bad"][kind]
    line = one_line_error(res)
    for fragment in BAD[kind][2]:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    if before is not None:
        assert contents(url) == before, f"{kind} wrote to the database"
    elif BAD[kind][1] == "empty-sqlite":
        assert inspect_tables(url) == [], "a failed run created tables"
    elif BAD[kind][1] == "empty-pg":
        assert launched["empty-pg tables"] == [], "a failed command created tables"


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_run_and_backfill_print_results(launched, dialect):
    results, url = launched["run then backfill", dialect]
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    run, fill = results
    said = " ".join(run.stdout.split())
    # customer 1 is invoiced; 4 (signup rule) and 5 (suspended) are skipped, and 3 (archived)
    assert "2024-03-01: published 1 invoices (1 lines" in said, said
    assert "skipped 3 contracts" in said and "1 rule events" in said, said
    assert "EUR: 1 invoices, subtotal 100.00, tax 20.00, total 120.00" in said, said
    assert "backfilled 31 dates 2024-03-02..2024-04-01: 1 invoices" in " ".join(fill.stdout.split()), fill.stdout
    assert "Traceback" not in run.stderr + fill.stderr
    engine = make_engine(url)
    try:
        runs = Operator(engine).rows(s.billing_runs)
        assert len(runs) == 32 and {r["status"] for r in runs} == {"published"}
        assert [(l["contract_id"], l["period_start"]) for l in Operator(engine).lines()] == [
            (1, D),
            (1, date(2024, 4, 1)),
        ]
    finally:
        engine.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_suspend_then_lift_records_two_manual_events(launched, dialect):
    results, url = launched["suspend then lift", dialect]
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    suspend, lift = results
    assert "customer 1: suspend recorded at 2024-03-05 10:00:00 UTC by ops@example.com" in " ".join(
        suspend.stdout.split()
    ), suspend.stdout
    assert "customer 1: lift recorded at 2024-03-06 07:30:00 UTC by boss@example.com" in " ".join(
        lift.stdout.split()
    ), lift.stdout
    engine = make_engine(url)
    try:
        events = sorted(Operator(engine).rows(s.suspension_events, customer_id=1), key=lambda e: e["id"])
    finally:
        engine.dispose()
    assert [
        (e["occurred_at"], e["action"], e["source"], e["actor"], e["reason"], e["trigger_key"]) for e in events
    ] == [
        (datetime(2024, 3, 5, 10, 0), "suspend", "manual", "ops@example.com", "card declined", None),
        (datetime(2024, 3, 6, 7, 30), "lift", "manual", "boss@example.com", "paid", None),
    ]
