"""`flexbill run --date D --dry-run` (CONTRACT.md v2, "Preview and explain"): computes D exactly as a run
would, prints the same summary marked as a preview, writes the report page marked "preview", and writes
nothing at all to the database: every table's checksum (every row, every column as stored) and PostgreSQL's
sequences are the same before and after, on a date with pending automatic suspensions, a finalized date
that would be corrected, and a date the output gate blocks.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import update

from flexbill.db import schema as s
from flexbill.db.connect import init_db, make_engine
from flexbill.errors import OutputRejected
from flexbill.finance_report import write_report
from flexbill.runner import run_billing_date
from tests.builders import Operator
from tests.documents import checksum
from tests.integration.test_exactly_once import D0, D, scenario
from tests.processes import clean_env, flexbill


def billed_once(url: str):
    """The exactly-once scenario with D0 billed: D has a pending signup rule and a pending plan rule."""
    engine = make_engine(url)
    init_db(engine)
    scenario(Operator(engine))
    run_billing_date(engine, D0)
    return engine


def _summary(stdout: str) -> list[str]:
    """The run's printed figures without the timing and the preview words."""
    lines = [
        re.sub(r" \[[0-9.]+s\]", "", line)
        .removeprefix("PREVIEW (nothing was written) ")
        .replace("would publish", "published")
        .replace("would be ", "")
        for line in stdout.splitlines()
    ]
    return [line for line in lines if line.startswith(("20", "  "))]


def test_a_dry_run_writes_nothing_and_previews_exactly_what_the_run_then_does(db_url, tmp_path):
    engine = billed_once(db_url)
    before = checksum(engine)
    env = clean_env(
        db_url, FLEXBILL_REPORT="1", FLEXBILL_REPORT_DIR=str(tmp_path / "reports"), FLEXBILL_GX_DIR=str(tmp_path / "gx")
    )
    preview = flexbill("run", "--date", str(D), "--dry-run", env=env)
    assert preview.returncode == 0, preview.stderr
    assert checksum(engine) == before, "the dry run changed the database"
    assert preview.stdout.startswith(f"PREVIEW (nothing was written) {D}: would publish")
    assert "2 rule events" in preview.stdout  # the signup and plan rules fire on D: computed, not recorded
    page = tmp_path / "reports" / str(D) / "preview" / "index.html"
    assert f"preview data-quality report: {page}" in preview.stdout.replace("\n", "")
    html = page.read_text()
    assert 'id="preview-banner"' in html and "Nothing was written to the billing database" in html
    assert not (tmp_path / "reports" / str(D) / "index.html").exists(), "the published date's page is not touched"

    real = flexbill("run", "--date", str(D), env={**env, "FLEXBILL_REPORT": "0"})
    assert real.returncode == 0, real.stderr
    assert _summary(preview.stdout) == _summary(real.stdout)  # same invoices, totals, numbers, rule events


def test_a_dry_run_of_a_finalized_date_previews_the_correction_and_uses_no_number(db_url):
    engine = billed_once(db_url)
    run_billing_date(engine, D)
    with engine.begin() as conn:
        conn.execute(update(s.plans).where(s.plans.c.id == 1).values(price=Decimal("105.00")))
    before = checksum(engine)
    seen = {}

    def look(conn, summary):
        seen["summary"] = summary
        seen["credit notes"] = conn.execute(s.credit_notes.select()).all()

    summary = run_billing_date(engine, D, preview=look)
    assert summary.preview and seen["summary"] is summary
    assert [n for n, _, _ in summary.corrections.credit_notes] == ["1-C000001"]
    assert len(seen["credit notes"]) == 1, "the preview saw the correction inside its transaction"
    assert checksum(engine) == before
    real = run_billing_date(engine, D)
    assert real.corrections.credit_notes == summary.corrections.credit_notes
    assert real.corrections.corrective == summary.corrections.corrective


def test_a_blocked_dry_run_shows_the_block_and_writes_nothing(db_url, tmp_path):
    engine = billed_once(db_url)
    before = checksum(engine)
    pages = []

    def page(conn, summary):
        assert summary.status == "blocked"
        pages.append(write_report(engine, D, tmp_path / "reports", tmp_path / "gx", conn=conn, preview=True))

    def negative(result, report_frame):
        result.lines.loc[:, "amount_cents"] = -1

    with pytest.raises(OutputRejected, match=f"preview of {D} \\(nothing was written\\)"):
        run_billing_date(engine, D, tamper=negative, preview=page)
    assert checksum(engine) == before, "a blocked preview records no failed run either"
    html = pages[0].read_text()
    assert "preview: would be blocked" in html and "a line amount is negative" in html


def test_the_checksum_sees_a_change(db_url):
    """The checksum the dry-run tests trust: a one-cent change, and a consumed sequence value, show."""
    engine = billed_once(db_url)
    before = checksum(engine)
    with engine.begin() as conn:
        conn.execute(update(s.plans).where(s.plans.c.id == 1).values(price=Decimal("100.01")))
    assert checksum(engine)["plans"] != before["plans"]
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:  # a rolled-back insert still moves the sequence
            tx = conn.begin()
            conn.execute(
                s.suspension_events.insert(),
                {"customer_id": 1, "occurred_at": datetime(2024, 1, 1), "action": "suspend", "source": "manual"},
            )
            tx.rollback()
        after = checksum(engine)
        assert after["suspension_events"] == before["suspension_events"]
        assert after["sequence suspension_events_id_seq"] != before["sequence suspension_events_id_seq"]
    assert date(2024, 3, 1) == D
