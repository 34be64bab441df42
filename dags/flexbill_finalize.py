"""
### flexbill finalize (finance's approval)

Finalizes **every draft invoice with a billing date on or before `through`**, exactly as
`flexbill finalize --through <through> --actor <actor>`: oldest billing date first, then by customer,
each numbered from its location's gapless series (`3-000042`), with `finalized_by` = the actor.
A finalized invoice never changes: a later data fix is corrected by a credit note and a corrective
invoice when the date is rerun.

Refused, with the reason and nothing finalized: `through` in the future or without a billing run,
a date holding drafts whose latest run was blocked by the output gate (fix it and rerun the date
first), an empty actor. It is not retried. Drafts wait here only when `FLEXBILL_GRACE_DAYS` is above
0; with the default 0 every billing run finalizes its own invoices.

Trigger it from the UI form or with
`airflow dags trigger flexbill_finalize --conf '{"through": "2026-10-31", "actor": "ana@op.example"}'`.
"""

from airflow.sdk import Param, dag, task

from flexbill import airflow_steps as steps


@dag(
    **steps.ON_DEMAND,  # no schedule; a refused request is not retried
    doc_md=__doc__,
    params={
        "through": Param(
            "",
            type="string",
            format="date",
            title="Finalize through",
            description="Billing date (YYYY-MM-DD): every draft on or before it is finalized.",
        ),
        "actor": Param(
            "",
            type="string",
            format="idn-email",
            title="Approved by",
            description="Who approves the invoices: your e-mail, kept on each invoice.",
        ),
    },
)
def flexbill_finalize():
    @task
    def finalize(params=None) -> dict:
        """Finalize and number every draft up to `through`, approved by `actor`."""
        return steps.finalize(params)

    finalize()


flexbill_finalize()
