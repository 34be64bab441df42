"""An operator database without primary keys (issue 4, "duplicate ids in a source extract"): a repeated id
is quarantined (every copy, one reason naming the id), a row without an id is quarantined as row -1 of its table,
and the rest is billed. Found by this suite: a repeated id used to fail the whole run as a database error, a
NULL id crashed it, and a repeated CRM entry id silently collided on its trigger key.
"""

import contextlib
import tempfile
from datetime import date, datetime
from pathlib import Path

import pytest

from flexbill.db import schema as s
from flexbill.db.connect import init_db, make_engine
from flexbill.runner import run_billing_date
from tests.builders import T0, Operator
from tests.reliability.test_corrupted_inputs import loosen, loosened_database

D = date(2024, 3, 1)

CASES = {
    "contract id twice": lambda op: (
        op.customer(10),
        op.contract(10, 10, 1, start_date=D),
        op.contract(10, 1, 1, start_date=D, price="5.00"),
    ),
    "customer id twice": lambda op: (
        op.customer(10),
        op.customer(10, archived_at=datetime(2024, 2, 1)),
        op.contract(10, 10, 1, start_date=D),
    ),
    "plan id twice": lambda op: (
        op.plan(10, price="10.00"),
        op.plan(10, price="20.00"),
        op.contract(10, 1, 10, start_date=D),
    ),
    "location id twice": lambda op: (
        op.location(10, tax_rate="0.1000"),
        op.location(10, tax_rate="0.2000"),
        op.customer(10, location_id=10),
        op.contract(10, 10, 1, start_date=D),
    ),
    "crm entry id twice": lambda op: (
        op.customer(10),
        op.contract(10, 10, 1, start_date=D),
        op.customer(11),
        op.contract(11, 11, 1, start_date=D),
        op.board(1),
        op.stage(1, deactivate_account_since=T0),
        op.entry(1, 10, 1, datetime(2024, 2, 1)),
        op.entry(1, 11, 1, datetime(2024, 2, 1)),
    ),
    "contract id null": lambda op: op._insert(
        s.contracts, id=None, customer_id=1, plan_id=1, quantity=1, start_date=D, created_at=T0
    ),
}


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
@pytest.mark.parametrize("kind", list(CASES))
def test_a_bad_id_is_quarantined_and_the_rest_billed(dialect, kind):
    with contextlib.ExitStack() as stack:
        engine = loosened_database(dialect, Path(tempfile.mkdtemp()), stack)
        op = Operator(engine)
        op.one_contract(D)
        CASES[kind](op)
        run_billing_date(engine, D)
        billed = {l["contract_id"] for l in op.lines(D)}
        assert 1 in billed, "the healthy contract was not billed"
        reasons = [r["reason"] for r in op.rows(s.quarantine)]
        assert reasons, "the bad id is not quarantined"
        if "twice" in kind:  # every copy of the id is held back, with one reason naming the id
            assert any("appears more than once" in r for r in reasons), reasons
        if kind == "crm entry id twice":  # automatic rules ignore quarantined rows (CONTRACT.md "Bad input")
            assert {10, 11} <= billed


def test_a_repeated_id_is_found_even_when_one_copy_was_validated_before(tmp_path):
    """Uniqueness reads other rows: the per-row verdict cache of a primed backfill must not hide a repeated id
    whose first copy it already knows (found when the full suite ran this after other tests)."""
    from flexbill import validation
    from flexbill.clock import cutoff_of
    from flexbill.db import extract

    engine = make_engine(f"sqlite:///{tmp_path / 'x.sqlite'}")
    init_db(engine)
    loosen(engine)
    op = Operator(engine)
    op.one_contract(D, contract_id=7)
    with engine.connect() as conn:
        validation.prime(extract.snapshot(conn, cutoff_of(D)))  # contract 7's verdict is now cached
    op.customer(2)
    op.contract(7, 2, 1, start_date=D)  # the same id again, another row
    with engine.connect() as conn:
        verdict = validation.check_inputs(extract.snapshot(conn, cutoff_of(D)))
    held = verdict.quarantine[verdict.quarantine["source_table"] == "contracts"]
    assert held["row_id"].tolist() == [7] and "appears more than once" in held["reason"].iloc[0]
    assert verdict.valid["contracts"].empty
    engine.dispose()
