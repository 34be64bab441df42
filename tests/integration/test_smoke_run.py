from datetime import date
from decimal import Decimal

from flexbill.runner import run_billing_date
from tests.builders import Operator


def test_billing_day_first_period_is_prorated_and_rerun_is_identical(engine):
    op = Operator(engine)
    op.location(1, tax_rate="0.2000")
    op.customer(1)
    op.plan(1, price="100.00")
    op.contract(1, 1, 1, start_date=date(2024, 2, 20), billing_day=1)
    run_billing_date(engine, date(2024, 2, 20))
    first = op.lines()
    assert [(l["period_start"], l["period_end"], l["amount"], l["prorated"]) for l in first] == [
        (date(2024, 2, 20), date(2024, 3, 1), Decimal("34.48"), True)
    ]
    run_billing_date(engine, date(2024, 2, 20))
    assert op.lines() == first
    inv = op.rows(__import__("flexbill.db.schema", fromlist=["x"]).invoices)
    assert [(i["subtotal"], i["tax"], i["total"]) for i in inv] == [
        (Decimal("34.48"), Decimal("6.90"), Decimal("41.38"))
    ]
