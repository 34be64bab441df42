"""Output gate (issue 4): an invoice in another currency than its location's is not published
(CONTRACT.md "One run" 4: one invoice per customer, in the location's currency). Found by this suite:
the gate used to let it through.
"""

import tempfile
from pathlib import Path

import pytest

from flexbill.db.connect import make_engine
from flexbill.errors import OutputRejected
from flexbill.runner import run_billing_date
from tests.reliability.world import D, Databases, outputs_of, template


def test_an_invoice_in_the_wrong_currency_is_not_published():
    dbs = Databases("sqlite", Path(tempfile.mkdtemp()))
    url = template(dbs)
    engine = make_engine(url)

    def usd(result, report_frame):
        result.invoices.loc[result.invoices["customer_id"] == 1, "currency"] = "USD"  # location 1 bills in EUR

    with pytest.raises(OutputRejected):
        run_billing_date(engine, D, tamper=usd)
    assert outputs_of(url)["invoices"] == 0
