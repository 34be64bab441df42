"""A rerun of a date whose inputs did not change keeps its outputs instead of recomputing them (issue 11).

`flexbill run --date D` fingerprints what D reads (every source row visible at the cutoff, the voided events,
flexbill's code) under the run lock before reading anything; when the fingerprint is the one D's latest publish
recorded and nothing was published or recorded since, D's outputs are what a recomputation would write again.
These tests hold the shortcut to that: it leaves the database exactly as a recomputation leaves it, and every
change a recomputation would see makes the rerun recompute.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import insert, update

from flexbill.db import schema as s
from flexbill.manual import record_manual_event, void_event
from flexbill.runner import run_billing_date
from tests.documents import checksum
from tests.integration.test_exactly_once import D0, D, prepare
from tests.processes import clean_env, dump, flexbill

# the bookkeeping of an attempt, not a result (as in test_exactly_once)
# (a recomputation also checks the rule events D's first run appended after its own checks: 2 more rows checked)
ATTEMPT = {
    "billing_runs": {"started_at", "finished_at", "published_at", "events_appended"},
    "data_quality": {"validated_at", "element_count"},
}


def billed(url: str, first: list | None = None):
    """The exactly-once scenario with D0 and D published (D's run appended its signup and plan rule events)."""
    engine = prepare(url)
    summary = run_billing_date(engine, D)
    assert summary.stats["events_appended"] == 2 and not summary.unchanged
    if first is not None:
        first.append(summary)
    return engine


def test_an_unchanged_rerun_keeps_the_outputs_exactly_as_a_recomputation_writes_them(db_url):
    engine = billed(db_url)
    before = dump(engine, ATTEMPT)
    kept = run_billing_date(engine, D)
    assert kept.unchanged, "the rule events D's run appended are part of what the rerun reads: same inputs"
    after_kept = dump(engine, ATTEMPT)
    assert after_kept == before
    full = run_billing_date(engine, D, recompute=True)
    assert not full.unchanged
    assert dump(engine, ATTEMPT) == after_kept, "a recomputation writes what the kept outputs already are"
    # the summary of the kept run is the recomputation's: figures, totals, invoices kept
    assert kept.stats == full.stats
    assert kept.totals == full.totals
    assert (kept.corrections.kept, kept.corrections.drafts) == (full.corrections.kept, full.corrections.drafts)
    assert kept.corrections.kept > 0  # FLEXBILL_GRACE_DAYS=0: D's invoices are final
    assert run_billing_date(engine, D).unchanged, "the recomputation recorded its fingerprint too"


def test_a_changed_source_row_makes_the_rerun_recompute_and_correct(db_url):
    engine = billed(db_url)
    with engine.begin() as conn:
        conn.execute(update(s.plans).where(s.plans.c.id == 1).values(price=Decimal("105.00")))
    rerun = run_billing_date(engine, D)
    assert not rerun.unchanged
    assert rerun.corrections.credit_notes, "the price change is billed: credit notes and corrective invoices"
    assert run_billing_date(engine, D).unchanged


def test_a_publish_of_another_date_since_makes_the_rerun_recompute(db_url):
    engine = billed(db_url)
    run_billing_date(engine, D + timedelta(days=1))
    assert not run_billing_date(engine, D).unchanged  # the ledger moved: D recomputes from it


@pytest.mark.parametrize("change", ["suspend", "void"])
def test_a_manual_event_or_a_void_makes_the_rerun_recompute(db_url, change):
    first = []
    engine = billed(db_url, first)
    if change == "suspend":
        record_manual_event(
            engine, 1, "suspend", "ops@example.com", "moved out", datetime(2024, 3, 1, 12), backdate=True
        )
    else:
        with engine.connect() as conn:
            event = conn.execute(s.suspension_events.select().where(s.suspension_events.c.customer_id == 3)).first()
        void_event(engine, event.id, "ops@example.com", "recorded by mistake", backdate=True)
    rerun = run_billing_date(engine, D)
    assert not rerun.unchanged
    if change == "void":  # customer 3 is no longer suspended: D bills it now
        assert rerun.stats["contracts_skipped"] == first[0].stats["contracts_skipped"] - 1
    else:  # customer 1 is suspended on D now
        assert rerun.stats["contracts_skipped"] == first[0].stats["contracts_skipped"] + 1


def test_a_row_born_after_the_cutoff(db_url):
    """PostgreSQL leaves out rows born at or after the cutoff (typed timestamps): D keeps its outputs.  SQLite
    counts every change: it recomputes, which is slower, never wrong."""
    engine = billed(db_url)
    with engine.begin() as conn:
        conn.execute(
            insert(s.customers).values(
                id=99,
                location_id=1,
                full_name="Late Comer",
                email="late@example.com",
                created_at=datetime(2024, 3, 5),
                portal_access=True,
            )
        )
    rerun = run_billing_date(engine, D)
    assert rerun.unchanged == (engine.dialect.name == "postgresql")


def test_a_dry_run_of_an_unchanged_date_writes_nothing(db_url):
    engine = billed(db_url)
    before = checksum(engine)
    seen = []
    summary = run_billing_date(engine, D, preview=lambda conn, summary: seen.append(summary))
    assert summary.unchanged and summary.preview and seen == [summary]
    assert checksum(engine) == before


def test_the_cli_says_the_outputs_were_kept_and_recompute_recomputes(db_url):
    engine = billed(db_url)
    env = clean_env(db_url, FLEXBILL_REPORT="0")
    kept = flexbill("run", "--date", str(D), env=env)
    assert kept.returncode == 0, kept.stderr
    assert f"nothing {D} reads changed since its latest publish" in kept.stdout
    assert "(`--recompute` recomputes them)" in kept.stdout
    full = flexbill("run", "--date", str(D), "--recompute", env=env)
    assert full.returncode == 0, full.stderr
    assert "reads changed" not in full.stdout
    first_lines = [out.stdout.splitlines()[0].rsplit(" [", 1)[0] for out in (kept, full)]
    assert first_lines[0] == first_lines[1]  # the same figures
    with engine.connect() as conn:
        assert conn.execute(s.run_inputs.select().where(s.run_inputs.c.billing_date == D)).first() is not None
        assert conn.execute(s.run_inputs.select().where(s.run_inputs.c.billing_date == D0)).first() is not None


def test_the_fingerprint_changes_with_any_column_of_any_source_row(db_url):
    """Every column counts (not only those the rules read): a changed e-mail recomputes too.  PostgreSQL: the
    changed table's hash sum moves; SQLite: the triggers count the change."""
    from flexbill.clock import cutoff_of
    from flexbill.db import fingerprint

    engine = billed(db_url)
    with engine.connect() as conn:
        before = fingerprint.parts(conn, cutoff_of(D))
    with engine.begin() as conn:
        conn.execute(update(s.customers).where(s.customers.c.id == 2).values(email="new@example.com"))
    with engine.connect() as conn:
        after = fingerprint.parts(conn, cutoff_of(D))
    changed = {name for name in before if before[name] != after[name]}
    if engine.dialect.name == "postgresql":
        assert changed == {"customers"}
        assert before["customers"].split(":")[0] == after["customers"].split(":")[0]  # same rows, one changed
    else:
        assert changed == {"source_changes"}
        assert int(after["source_changes"]) == int(before["source_changes"]) + 1
    assert not run_billing_date(engine, D).unchanged


def test_sqlite_without_the_change_triggers_always_recomputes(tmp_path):
    """A SQLite database whose change triggers are missing (not yet upgraded by `flexbill init-db`) cannot tell
    what changed: every rerun recomputes, and init-db puts the triggers back."""
    from sqlalchemy import text

    from flexbill.db.connect import init_db

    url = f"sqlite:///{tmp_path / 'flexbill.sqlite'}"
    engine = billed(url)
    with engine.begin() as conn:
        conn.execute(text("drop trigger flexbill_changed_contracts_update"))
    assert not run_billing_date(engine, D).unchanged
    assert not run_billing_date(engine, D).unchanged
    init_db(engine)
    assert not run_billing_date(engine, D).unchanged  # the first run with the triggers records its fingerprint
    assert run_billing_date(engine, D).unchanged
    with engine.begin() as conn:  # the restored trigger counts a change of a row the run reads
        conn.execute(update(s.contracts).where(s.contracts.c.id == 1).values(quantity=2))
    assert not run_billing_date(engine, D).unchanged
