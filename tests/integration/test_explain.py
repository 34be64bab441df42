"""`flexbill explain --contract ID --date D [--json]` (CONTRACT.md v2, "Preview and explain"): why a contract was
or was not billed on D, period by period; it reads only; an unknown contract or a date with no run is one
`error:` line.  On the exactly-once scenario (tests.integration.test_exactly_once), billed on D0 and D."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import update

from flexbill.db import schema as s
from flexbill.db.connect import init_db, make_engine
from flexbill.errors import InputError
from flexbill.explain import explain
from flexbill.runner import run_billing_date
from tests.builders import Operator
from tests.documents import checksum
from tests.integration.test_cli import one_line_error
from tests.integration.test_exactly_once import D0, D, scenario
from tests.processes import clean_env, flexbill

D1 = date(2024, 3, 2)
TOP_LEVEL = {
    "version",
    "contract_id",
    "billing_date",
    "verdict",
    "summary",
    "customer_id",
    "plan_id",
    "location_id",
    "start_date",
    "cancellation_date",
    "next_invoice_date",
    "run",
    "customer",
    "quarantine",
    "skipped",
    "periods",
    "next_period",
}
PERIOD_FIELDS = {
    "period_start",
    "period_end",
    "amount",
    "state",
    "why",
    "billing_date",
    "invoice_id",
    "invoice_number",
    "invoice_status",
    "credited",
}


@pytest.fixture
def billed(db_url):
    engine = make_engine(db_url)
    init_db(engine)
    op = Operator(engine)
    scenario(op)
    op.contract(20, 1, 1, start_date=date(2023, 12, 10), next_invoice_date=date(2024, 2, 10))  # invoiced before
    op.contract(21, 2, 1, start_date=date(2024, 2, 1), cancellation_date=date(2024, 3, 1))  # ends on D
    run_billing_date(engine, D0)
    run_billing_date(engine, D)
    yield engine
    engine.dispose()


def by_start(x) -> dict:
    return {p.period_start: p for p in x.periods}


def test_a_billed_contract_names_the_invoice_of_each_period_and_the_next_one(billed):
    x = explain(billed, 1, D)
    assert (x.verdict, x.customer_id, x.plan_id, x.location_id) == ("billed", 1, 1, 1)
    periods = by_start(x)
    assert list(periods) == ["2024-01-20", "2024-02-01", "2024-03-01"]
    first, second, third = periods.values()
    assert (first.state, first.billing_date, first.amount, first.period_end) == (
        "billed_earlier",
        str(D0),
        "38.71",
        "2024-02-01",
    )
    assert first.invoice_number == second.invoice_number == "1-000001"
    assert (third.state, third.billing_date, third.invoice_status, third.amount) == (
        "billed",
        str(D),
        "finalized",
        "100.00",
    )
    assert f"billed on {D} by invoice {third.invoice_number}" in third.why
    assert x.next_period == {
        "start": "2024-04-01",
        "why": "not yet due: it starts on 2024-04-01, so the run of 2024-04-01 bills it",
    }


def test_a_suspended_customer_says_since_when_by_which_event(billed):
    x = explain(billed, 3, D)
    assert x.verdict == "skipped_suspended" and x.skipped["owed_periods"] == 1
    sp = x.customer["suspension"]
    assert (sp["since"], sp["source"], sp["actor"]) == ("2024-02-20 00:00:00", "manual", "admin@x.io")
    [owed] = [p for p in x.periods if p.period_start == "2024-03-01"]
    assert owed.state == "not_billed" and f"by event {sp['event_id']} (source manual, actor admin@x.io)" in owed.why


def test_an_automatic_rule_suspension_names_its_trigger(billed):
    x = explain(billed, 4, D)
    assert x.verdict == "skipped_suspended"
    assert x.customer["suspension"]["source"] == "signup"
    assert x.customer["suspension"]["trigger_key"] == "signup:4"


def test_archived_quarantined_before_flexbill_and_cancelled(billed):
    archived = explain(billed, 7, D)
    assert archived.verdict == "skipped_archived" and archived.customer["archived"]
    assert "archived at 2024-02-20 00:00:00" in by_start(archived)["2024-03-01"].why

    quarantined = explain(billed, 6, D)
    assert quarantined.verdict == "quarantined" and quarantined.periods == []
    assert (
        quarantined.quarantine[0]["source_table"] == "contracts" and "quantity 0" in quarantined.quarantine[0]["reason"]
    )

    before = explain(billed, 20, D)
    states = {p.period_start: p.state for p in before.periods}
    assert states["2024-01-10"] == "before_flexbill" and states["2024-02-10"] == "billed_earlier"

    cancelled = explain(billed, 21, D)
    assert [p.period_start for p in cancelled.periods] == ["2024-02-01"]
    assert cancelled.next_period["start"] is None and "cancelled" in cancelled.next_period["why"]
    assert cancelled.verdict == "nothing_due"


def test_credited_and_re_billed_then_billed_on_a_later_date_after_an_out_of_order_rerun(billed):
    op = Operator(billed)
    with billed.begin() as conn:
        conn.execute(update(s.plans).where(s.plans.c.id == 1).values(price=Decimal("110.00")))
    run_billing_date(billed, D)  # customer 1's finalized invoice of D is credited and corrected
    period = by_start(explain(billed, 1, D))["2024-03-01"]
    assert period.state == "billed" and period.invoice_id == "INV-20240301-0000001-R1"
    assert [c["credit_note"] for c in period.credited] == ["1-C000001"]
    assert "re-billed after a correction" in period.why and "credited by credit note 1-C000001" in period.why

    op.event(3, datetime(2024, 3, 2, 9), action="lift")
    run_billing_date(billed, D1)  # back-bills customer 3's period of D
    run_billing_date(billed, D)  # an analyst reruns D after D1
    x = explain(billed, 3, D)
    later = by_start(x)["2024-03-01"]
    assert (later.state, later.billing_date) == ("billed_later", str(D1))
    assert "on 2024-03-01 it was skipped: the customer was suspended since 2024-02-20" in later.why


def test_explain_reads_only_and_refuses_an_unknown_contract_or_a_date_without_run(billed, db_url):
    before = checksum(billed)
    res = flexbill("explain", "--contract", "1", "--date", str(D), "--json", env=clean_env(db_url))
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert set(data) == TOP_LEVEL and data["version"] == 1
    assert all(set(p) == PERIOD_FIELDS for p in data["periods"])
    assert data["verdict"] == "billed" and data["periods"][-1]["invoice_number"]
    text = flexbill("explain", "--contract", "3", "--date", str(D), env=clean_env(db_url))
    assert text.returncode == 0 and "suspended since 2024-02-20 00:00:00 UTC by event" in text.stdout
    assert checksum(billed) == before

    assert "contract 999 does not exist" in one_line_error(
        flexbill("explain", "--contract", "999", "--date", str(D), env=clean_env(db_url))
    )
    assert "2024-05-01 has no billing run" in one_line_error(
        flexbill("explain", "--contract", "1", "--date", "2024-05-01", env=clean_env(db_url))
    )
    with pytest.raises(InputError):
        explain(billed, 1, date(2024, 5, 1))
