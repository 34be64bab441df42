"""Faults around the invoice lifecycle (CONTRACT.md v2): finalization and corrections.

Promises:
* `flexbill finalize` refuses an unknown date, a date in the future, a blocked date, an empty actor or a
  malformed date with one `error:` line, exit 1, and changes nothing;
* two finalizations at once give one of their serial orders: numbers stay gapless and unique;
* a finalization killed (SIGKILL) after it took its numbers leaves nothing half-numbered, and the next one
  numbers from where the series stood;
* a finalization and a rerun of the same date give one of their serial orders (both orders forced);
* a correction killed after its credit note was written leaves nothing, and the rerun corrects once;
* two reruns of a finalized date at once never issue two credit notes for one invoice, and never lose or
  double a period;
* a hostile actor is stored verbatim and escaped on the finance page.

Each case runs the real `flexbill` console script on a clone of the fault suite's template (tests.reliability
.world), on SQLite and PostgreSQL, and is compared with the same operations run serially in-process on other
clones.  tests.documents checks the invariants of invoices and credit notes after every fault.
"""

from __future__ import annotations

import contextlib
import os
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from flexbill.clock import utcnow
from flexbill.db import dialect
from flexbill.db import schema as s
from flexbill.db.connect import make_engine
from flexbill.errors import OutputRejected
from flexbill.finance_report import write_report
from flexbill.invoicing import finalize
from flexbill.runner import run_billing_date
from tests.documents import assert_documents_consistent
from tests.integration.test_cli import one_line_error
from tests.processes import TIMEOUT, clean_env, flexbill, run_all, start
from tests.reliability.world import D0, DIALECTS, D, Databases, contents, duplicate_periods, template, without_attempt

GRACE = {"FLEXBILL_GRACE_DAYS": "30"}  # drafts wait for finance
FIX = Decimal("125.00")  # plan 1's corrected price: changes D's finalized EUR invoices


@contextlib.contextmanager
def environment(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _engine_do(url: str, fn):
    engine = make_engine(url)
    try:
        return fn(engine)
    finally:
        engine.dispose()


def _finalize(url: str, through, actor: str):
    def go(engine):
        with engine.begin() as conn:
            dialect.lock_for_run(conn)
            return finalize(conn, through, actor, utcnow())

    return _engine_do(url, go)


def _run(url: str, d=D, **env):
    with environment(**env):
        return _engine_do(url, lambda engine: run_billing_date(engine, d))


def _fix(url: str) -> None:
    def go(engine):
        with engine.begin() as conn:
            conn.execute(update(s.plans).where(s.plans.c.id == 1).values(price=FIX))

    _engine_do(url, go)


def same(a: dict, b: dict) -> bool:
    return without_attempt(a) == without_attempt(b)


class World:
    """Per dialect: `drafts` (D0 and D billed, drafts waiting), `final` (D0 and D billed and finalized)."""

    def __init__(self, dialect_name: str, folder):
        self.dbs = Databases(dialect_name, folder)
        with environment(**GRACE):
            self.drafts = template(self.dbs)
            _run(self.drafts, **GRACE)
        self.final = template(self.dbs)
        _run(self.final)

    def clone(self, which: str) -> str:
        return self.dbs.clone(getattr(self, which))


@pytest.fixture(scope="module", params=DIALECTS)
def world(request, tmp_path_factory):
    w = World(request.param, tmp_path_factory.mktemp(f"lifecycle-{request.param}"))
    yield w
    w.dbs.close()


def test_finalize_refuses_what_it_must_with_one_line_and_changes_nothing(world):
    url = world.clone("drafts")
    blocked = world.clone("drafts")
    with pytest.raises(OutputRejected):
        with environment(**GRACE):
            _engine_do(
                blocked,
                lambda e: run_billing_date(
                    e, D, tamper=lambda result, report: result.lines.__setitem__("amount_cents", -1)
                ),
            )
    before, before_blocked = contents(url), contents(blocked)
    cases = [
        (("finalize", "--through", "2024-02-20", "--actor", "fin@op.example"), url, "2024-02-20 has no billing run"),
        (("finalize", "--through", "2099-01-01", "--actor", "fin@op.example"), url, "is in the future"),
        (("finalize", "--through", str(D), "--actor", ""), url, "--actor is required"),
        (("finalize", "--through", str(D), "--actor", "   "), url, "--actor is required"),
        (("finalize", "--through", "2024-02-30", "--actor", "fin@op.example"), url, "not a real calendar date"),
        (("finalize", "--through", "yesterday", "--actor", "fin@op.example"), url, "is not a date"),
        (
            ("finalize", "--through", str(D), "--actor", "fin@op.example"),
            blocked,
            f"{D} cannot be finalized: the latest run of {D} was blocked",
        ),
    ]
    results = run_all([(args, {"env": clean_env(db, **GRACE)}) for args, db, _ in cases])
    for (args, _, words), res in zip(cases, results):
        assert words in one_line_error(res), (args, res.stderr)
    assert contents(url) == before and contents(blocked) == before_blocked


def test_two_finalizations_at_once_give_a_serial_order_with_gapless_unique_numbers(world):
    url = world.clone("drafts")
    first_d0, first_d = world.clone("drafts"), world.clone("drafts")
    _finalize(first_d0, D0, "a@op.example")
    _finalize(first_d0, D, "b@op.example")
    _finalize(first_d, D, "b@op.example")
    _finalize(first_d, D0, "a@op.example")  # nothing left: b finalized everything
    env = clean_env(url, **GRACE)
    results = run_all(
        [
            (("finalize", "--through", str(D0), "--actor", "a@op.example"), {"env": env}),
            (("finalize", "--through", str(D), "--actor", "b@op.example"), {"env": env}),
        ]
    )
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    raced = contents(url)
    assert raced in (contents(first_d0), contents(first_d)), "not one of the serial orders"
    assert_documents_consistent(_engine(url))


def _engine(url: str):
    return make_engine(url)


def test_a_finalization_killed_after_taking_its_numbers_leaves_nothing_half_numbered(world):
    url, reference = world.clone("drafts"), world.clone("drafts")
    before = contents(url)
    proc = start(
        "finalize",
        "--through",
        str(D),
        "--actor",
        "fin@op.example",
        env=clean_env(url, FLEXBILL_PAUSE_AT="mid_finalize", FLEXBILL_PAUSE_SECONDS=str(TIMEOUT), **GRACE),
    )
    proc.wait_for_line("paused at mid_finalize")
    proc.kill()
    assert contents(url) == before, "a killed finalization left numbers or statuses behind"
    res = flexbill("finalize", "--through", str(D), "--actor", "fin@op.example", env=clean_env(url, **GRACE))
    assert res.returncode == 0, res.stderr
    _finalize(reference, D, "fin@op.example")
    assert contents(url) == contents(reference)
    assert_documents_consistent(_engine(url))


@pytest.mark.parametrize("first", ["rerun", "finalize"])
def test_a_finalization_and_a_rerun_of_the_same_date_give_a_serial_order(world, first):
    """The data fix makes the rerun change D's invoices: run first, its drafts are replaced and then finalized;
    finalize first, the rerun finds them finalized and corrects them (credit notes, corrective invoices).
    The first one holds the run lock (a pause) while the second starts and waits for it."""
    url, reference = world.clone("drafts"), world.clone("drafts")
    for target in (url, reference):
        _fix(target)
    if first == "rerun":
        _run(reference, **GRACE)
        _finalize(reference, D, "fin@op.example")
    else:
        _finalize(reference, D, "fin@op.example")
        _run(reference, **GRACE)
    holder_args = (
        (("run", "--date", str(D)), "locked")
        if first == "rerun"
        else (("finalize", "--through", str(D), "--actor", "fin@op.example"), "mid_finalize")
    )
    other = (
        ("finalize", "--through", str(D), "--actor", "fin@op.example")
        if first == "rerun"
        else ("run", "--date", str(D))
    )
    holder = start(
        *holder_args[0], env=clean_env(url, FLEXBILL_PAUSE_AT=holder_args[1], FLEXBILL_PAUSE_SECONDS="4", **GRACE)
    )
    holder.wait_for_line(f"paused at {holder_args[1]}")
    waiting = start(*other, env=clean_env(url, **GRACE))
    results = [holder.wait(), waiting.wait()]
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert same(contents(url), contents(reference))
    doc = assert_documents_consistent(_engine(url))
    assert bool(doc["credit_notes"]) == (first == "finalize")
    assert duplicate_periods(url) == []


def test_a_correction_killed_after_its_credit_note_leaves_nothing_and_the_rerun_corrects_once(world):
    url, reference = world.clone("final"), world.clone("final")
    for target in (url, reference):
        _fix(target)
    before = contents(url)
    proc = start(
        "run",
        "--date",
        str(D),
        env=clean_env(url, FLEXBILL_PAUSE_AT="mid_correction", FLEXBILL_PAUSE_SECONDS=str(TIMEOUT)),
    )
    proc.wait_for_line("paused at mid_correction")
    proc.kill()
    assert contents(url) == before, "a killed correction left a credit note or a credited invoice behind"
    res = flexbill("run", "--date", str(D), env=clean_env(url))
    assert res.returncode == 0, res.stderr
    _run(reference)
    assert same(contents(url), contents(reference))
    doc = assert_documents_consistent(_engine(url))
    assert doc["credit_notes"] and duplicate_periods(url) == []


def test_two_reruns_of_a_finalized_date_at_once_credit_each_invoice_once(world):
    url, reference = world.clone("final"), world.clone("final")
    for target in (url, reference):
        _fix(target)
    _run(reference)
    results = run_all([(("run", "--date", str(D)), {"env": clean_env(url)})] * 2)
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert same(contents(url), contents(reference))
    doc = assert_documents_consistent(_engine(url))
    credited = [n["invoice_id"] for n in doc["credit_notes"]]
    assert credited and len(credited) == len(set(credited))
    assert duplicate_periods(url) == []


HOSTILE_ACTOR = '<script>alert(1)</script>Robert\'); DROP TABLE invoices;-- \u202eevil\u202c "q" Zoë 🚀'


def test_a_hostile_actor_is_stored_verbatim_and_escaped_on_the_page(world, tmp_path):
    url = world.clone("drafts")
    res = flexbill("finalize", "--through", str(D), "--actor", HOSTILE_ACTOR, env=clean_env(url, **GRACE))
    assert res.returncode == 0, res.stderr
    engine = _engine(url)
    with engine.connect() as conn:
        actors = set(conn.execute(select(s.invoices.c.finalized_by).where(s.invoices.c.billing_date == D)).scalars())
    assert actors == {HOSTILE_ACTOR}
    html = write_report(engine, D, tmp_path / "reports", tmp_path / "gx").read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;Robert&#39;); DROP TABLE invoices;--" in html
    engine.dispose()
