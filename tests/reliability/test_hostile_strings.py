"""Hostile strings: stored verbatim, and nothing else changes.

Promise (CONTRACT.md "Commands", README): text given to flexbill (customers', plans',
locations' and CRM names in the billing database; the actor and reason of `flexbill
suspend|lift` and of the `flexbill_manual_suspension` DAG's Params) is data, never SQL or
markup or an option: it is stored exactly as given, and the tables, their row counts and
what a run bills are exactly what the same operations with plain text give.  (The HTML
report's escaping is tested with the report.)

Per dialect, a "hostile" database and a "plain" twin go through the same operations: the
hostile one with the strings below in every text column and argument, the twin with plain
text.  `flexbill suspend` and `flexbill lift` run as real processes (argv carries the strings:
no shell is involved, and a NUL byte cannot be passed in argv at all); the DAG's Params go
through `flexbill.airflow_steps.manual_event`, the function its task calls, with the
`flexbill_db` connection given to Airflow in the environment.  A NUL byte reaches flexbill
only through the database or the Params: SQLite stores it, PostgreSQL's text type refuses it
(the event is refused and nothing is written).
"""

from __future__ import annotations

import contextlib
import threading
from datetime import datetime

import pytest
from sqlalchemy import func, inspect, select

from flexbill import airflow_steps
from flexbill.db import schema as s
from flexbill.db.connect import init_db, make_engine
from flexbill.manual import record_manual_event
from flexbill.runner import run_billing_date
from tests.builders import Operator
from tests.processes import dump, start
from tests.reliability.world import DIALECTS, D, Databases

HOSTILE = {
    "sql": "Robert'); DROP TABLE invoices;--",
    "sql_or": "x' OR '1'='1'; DELETE FROM suspension_events; --",
    "markup": "<script>alert(1)</script><img src=x onerror=alert(2)>&amp;",
    "bidi": "\u202eevil\u202c admin\u200b",
    "quotes": "quote \" ' ` \\ % %s {0} ${HOME} $(id) ;|&",
    "lines": "line1\nline2\r\nline3\ttab",
    "unicode": "Zoë 🚀 e\u0301 \ufeffBOM",
    "option": "--db=sqlite:////tmp/evil.sqlite",
    "long": "Ω" + "<'\";--" * 15_000,  # 105,001 characters (argv takes up to 128 KiB per argument)
}
NUL = "before\x00after"

# what each CLI command and Params call gets (actor, reason); the plain twin gets ("ops@example.com", "plain")
CLI = [
    ("suspend", 1, "2024-02-20T10:00:00Z", HOSTILE["sql"] + HOSTILE["markup"] + HOSTILE["unicode"], HOSTILE["long"]),
    (
        "lift",
        1,
        "2024-02-25T10:00:00Z",
        "Mallory " + HOSTILE["option"],  # an actor may not BE an option name
        HOSTILE["option"] + HOSTILE["bidi"] + HOSTILE["quotes"] + HOSTILE["lines"],
    ),
]
PARAMS = [
    {
        "customer_id": 2,
        "action": "suspend",
        "at": "2024-02-27T10:00:00Z",
        "backdate": True,
        "actor": HOSTILE["sql_or"],
        "reason": HOSTILE["markup"] + HOSTILE["unicode"],
    }
]
# refused Params: nothing may be written
REFUSED = [
    {"customer_id": 3, "action": HOSTILE["sql"], "at": "2024-02-28T10:00:00Z", "actor": "a@x.io", "reason": "r"},
    {"customer_id": 3, "action": "lift", "at": HOSTILE["sql_or"], "actor": "a@x.io", "reason": "r"},
]
# (an actor holding a control character, NUL included, is refused before any database: tests/integration/
# test_guardrails.py; the reason is free text)
NUL_PARAMS = {
    "customer_id": 4,
    "action": "suspend",
    "at": "2024-02-28T10:00:00Z",
    "backdate": True,
    "actor": "nul@example.com",
    "reason": NUL,
}


def operator(engine, hostile: bool) -> None:
    """Two locations, plans, customers and a CRM board, named with hostile strings or plain ones."""
    name = (lambda key, plain: HOSTILE[key]) if hostile else (lambda key, plain: plain)
    op = Operator(engine)
    op.location(1, name=name("sql", "Main"))
    op.location(2, name=name("long", "Second"))
    op.plan(1, name=name("markup", "Monthly"))
    op.plan(2, name=name("quotes", "Weekly"), months=0, weeks=1)
    op.board(1, name=name("bidi", "Sales"))
    op.stage(1, name=name("lines", "Lost"))
    for n, key in enumerate(["sql_or", "unicode", "option", "long"], start=1):
        op.customer(n, full_name=name(key, f"Customer {n}"), email=name("markup", f"c{n}@x.io"))
        op.contract(n, n, 1 if n % 2 else 2, start_date=datetime(2024, 2, 1).date())


def counts(url: str) -> dict:
    engine = make_engine(url)
    try:
        tables = sorted(inspect(engine).get_table_names())
        with engine.connect() as conn:
            return {
                t: conn.execute(select(func.count()).select_from(s.metadata.tables[t])).scalar_one()
                for t in tables
                if t in s.metadata.tables
            } | {"tables": tables}
    finally:
        engine.dispose()


def outputs(url: str) -> dict:
    """Everything but the text under test: the outputs, and the event log without actor and reason."""
    engine = make_engine(url)
    try:
        out = dump(engine)
        with engine.connect() as conn:
            e = s.suspension_events
            out["suspension_events"] = [
                tuple(r)
                for r in conn.execute(
                    select(e.c.customer_id, e.c.occurred_at, e.c.action, e.c.source, e.c.trigger_key).order_by(
                        e.c.occurred_at, e.c.id
                    )
                )
            ]
        return out
    finally:
        engine.dispose()


def stored(url: str) -> dict:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            text_of = {}
            for table in s.SOURCE_TABLES:
                key = table.c.id
                for column in table.columns:
                    if column.name in ("name", "full_name", "email", "actor", "reason"):
                        for rid, value in conn.execute(select(key, column)):
                            text_of[table.name, rid, column.name] = value
            return text_of
    finally:
        engine.dispose()


def _manual(url: str, params: dict, monkeypatch) -> str | None:
    """The manual-suspension DAG's task on `url`; returns the refusal, or None."""
    from flexbill.airflow_steps import connection_json

    monkeypatch.setenv("AIRFLOW_CONN_FLEXBILL_DB", connection_json(url))
    try:
        airflow_steps.manual_event(params)
    except Exception as exc:  # noqa: BLE001 - the test says which refusals are fine
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="module", params=DIALECTS)
def world(request, tmp_path_factory):
    dialect = request.param
    with contextlib.ExitStack() as stack, pytest.MonkeyPatch.context() as mp:
        dbs = Databases(dialect, tmp_path_factory.mktemp(f"hostile-{dialect}"))
        stack.callback(dbs.close)
        urls = {"hostile": dbs.empty(), "plain": dbs.empty()}
        for kind, url in urls.items():
            engine = make_engine(url)
            init_db(engine)
            operator(engine, hostile=kind == "hostile")
            engine.dispose()
        cwd = tmp_path_factory.mktemp("cwd")
        results: list = []

        def chain():  # one command after the other, in the background
            for action, customer, at, actor, reason in CLI:
                results.append(
                    start(
                        action,
                        "--customer",
                        str(customer),
                        f"--actor={actor}",
                        f"--reason={reason}",
                        "--at",
                        at,
                        "--backdate",
                        db=urls["hostile"],
                        cwd=cwd,
                    ).wait()
                )

        thread = threading.Thread(target=chain, daemon=True)
        thread.start()
        engine = make_engine(urls["plain"])  # the twin: the same events with plain text
        for action, customer, at, _, _ in CLI:
            record_manual_event(
                engine,
                customer,
                action,
                "ops@example.com",
                "plain",
                datetime.fromisoformat(at.replace("Z", "")),
                backdate=True,
            )
        engine.dispose()
        for params in PARAMS:
            assert _manual(urls["plain"], {**params, "actor": "ops@example.com", "reason": "plain"}, mp) is None
        thread.join()
        out = {"cli": results, "params": [_manual(urls["hostile"], p, mp) for p in PARAMS]}
        before = (stored(urls["hostile"]), counts(urls["hostile"]))
        out["refused"] = [
            (_manual(urls["hostile"], p, mp), (stored(urls["hostile"]), counts(urls["hostile"])) == before)
            for p in REFUSED
        ]
        before = stored(urls["hostile"])
        out["nul"] = (_manual(urls["hostile"], NUL_PARAMS, mp), stored(urls["hostile"]), before)
        if dialect == "sqlite":  # the twin records the same event (PostgreSQL refuses the NUL: no event there)
            _manual(urls["plain"], {**NUL_PARAMS, "actor": "ops@example.com", "reason": "plain"}, mp)
        for url in urls.values():
            engine = make_engine(url)
            run_billing_date(engine, D)
            engine.dispose()
        out.update({kind: (stored(url), counts(url), outputs(url)) for kind, url in urls.items()})
        yield dialect, out


def test_cli_arguments_are_stored_verbatim(world):
    _, out = world
    for res in out["cli"]:
        assert res.returncode == 0, f"{res.args[:3]}: {res.stderr}"
        assert "Traceback" not in res.stderr
    text_of = out["hostile"][0]
    ids = sorted({k[1] for k in text_of if k[0] == "suspension_events"})[: len(CLI)]  # the first events recorded
    got = [(text_of["suspension_events", i, "actor"], text_of["suspension_events", i, "reason"]) for i in ids]
    assert got == [(actor, reason) for _, _, _, actor, reason in CLI]


def test_params_are_stored_verbatim_and_hostile_refusals_write_nothing(world):
    _, out = world
    assert out["params"] == [None]
    [params] = PARAMS
    text_of = out["hostile"][0]
    ours = {
        k[2]: v for k, v in text_of.items() if k[0] == "suspension_events" and v in (params["actor"], params["reason"])
    }
    assert ours == {"actor": params["actor"], "reason": params["reason"]}
    for refusal, unchanged in out["refused"]:
        assert refusal is not None and refusal.split(":")[0] in ("EventRefused", "InputError"), refusal
        assert unchanged, "a refused event wrote something"


def test_a_nul_byte_is_stored_verbatim_or_refused_whole(world):
    dialect, out = world
    refusal, after, before = out["nul"]
    if dialect == "sqlite":
        assert refusal is None
        assert sorted(k[2] for k, v in after.items() if v == NUL) == ["reason"]
    else:
        assert refusal is not None and "NUL" in refusal, refusal
        assert after == before


def test_source_text_is_stored_verbatim(world):
    _, out = world
    text_of = out["hostile"][0]
    assert text_of["locations", 1, "name"] == HOSTILE["sql"]
    assert text_of["locations", 2, "name"] == HOSTILE["long"]
    assert text_of["plans", 1, "name"] == HOSTILE["markup"]
    assert text_of["plans", 2, "name"] == HOSTILE["quotes"]
    assert text_of["crm_boards", 1, "name"] == HOSTILE["bidi"]
    assert text_of["crm_stages", 1, "name"] == HOSTILE["lines"]
    assert [text_of["customers", n, "full_name"] for n in (1, 2, 3, 4)] == [
        HOSTILE[k] for k in ("sql_or", "unicode", "option", "long")
    ]


def test_hostile_text_changes_nothing_else(world):
    """The same tables, the same row counts, the same invoices, skips, report and event log."""
    _, out = world
    _, hostile_counts, hostile_outputs = out["hostile"]
    _, plain_counts, plain_outputs = out["plain"]
    assert hostile_counts == plain_counts
    assert set(s.metadata.tables) <= set(hostile_counts["tables"])
    assert hostile_outputs == plain_outputs
    assert hostile_outputs["invoices"], "the run must bill something for the comparison to mean anything"
