"""
### flexbill manual suspension

Records **one** manual `suspend` or `lift` event for a customer, with exactly the checks of
`flexbill suspend|lift`: unknown or archived customer, suspending a suspended customer,
lifting one that is not suspended, an instant earlier than the customer's latest event or
malformed, an instant in the future (unless `future`), an instant before the cutoff of dates already
billed (unless `backdate`: the result lists those dates and what a rerun of them will do). A refused
event fails the run with the reason and writes nothing.

A lift restarts invoicing: the next billing run invoices every period missed while the
customer was suspended. Trigger it from the UI form or with
`airflow dags trigger flexbill_manual_suspension --conf '{"customer_id": 42, "action": "lift", "actor": "ana@op.example"}'`.
"""

from airflow.sdk import Param, dag, task

from flexbill import airflow_steps as steps


@dag(
    **steps.ON_DEMAND,  # no schedule; a refused request is not retried
    doc_md=__doc__,
    params={
        "customer_id": Param(
            1, type="integer", minimum=1, title="Customer id", description="The customer to suspend or lift."
        ),
        "action": Param(
            "suspend",
            type="string",
            enum=["suspend", "lift"],
            title="Action",
            description="suspend pauses invoicing; lift restarts it and back-bills missed periods.",
        ),
        "actor": Param(
            "",
            type="string",
            format="idn-email",
            title="Actor",
            description="Who does it: your e-mail, kept in the audit trail.",
        ),
        "reason": Param(None, type=["null", "string"], title="Reason", description="Why, for the audit trail."),
        "at": Param(
            None,
            type=["null", "string"],
            title="Instant (UTC)",
            description="ISO 8601 instant of the event, e.g. 2026-01-31T09:30:00Z; empty means now.",
        ),
        "future": Param(
            False,
            type="boolean",
            title="The instant is in the future",
            description="Record an event that takes effect later (refused otherwise).",
        ),
        "backdate": Param(
            False,
            type="boolean",
            title="Backdate over billed dates",
            description="Record an event before the cutoff of dates already billed; rerun them "
            "afterwards (the run's result lists them).",
        ),
    },
)
def flexbill_manual_suspension():
    @task
    def record_event(params=None) -> dict:
        """Check and record the manual event of the trigger form."""
        return steps.manual_event(params)

    record_event()


flexbill_manual_suspension()
