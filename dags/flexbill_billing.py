"""
### flexbill billing run

**What one run bills.** The run for billing date **D** bills what customers owe on D: every
billing period that starts on or before D and has no invoice line yet, as the billing database
was at **D+1 00:00 UTC** (the end of the run's data interval; rows created later do not exist for
it). D is the *start of the data interval*, not the logical date: a scheduled run for
[D, D+1) bills D, and so does `airflow dags test flexbill_billing <D+1>`.

**Steps.** `extract_snapshot` reads and validates the source tables (bad rows go to
`quarantine`), `apply_rule` appends the signup / plan / CRM-stage suspensions, then per location
`owed_periods` → `suspension_filter` → `build_invoices`; `active_user_report`; `validate_output`
(Great Expectations) and `publish`, which replaces D's outputs in one transaction; then
`data_quality_report` writes the page finance reads before invoices go out (and the GX Data Docs)
under `$FLEXBILL_REPORT_DIR` / `$FLEXBILL_GX_DIR`; last, `finalize` numbers the drafts of dates up to
D minus `FLEXBILL_GRACE_DAYS` (default 0: D's invoices are final at once). Intermediate results stay
in staging tables keyed by the run id.

**Rerun safety.** Clearing a failed task and rerunning it is safe; clearing the whole run
republishes D: its drafts are replaced, and a finalized invoice the rerun would change is never
touched: it is credited by a credit note and replaced by a corrective invoice (unchanged inputs
change nothing). A period is never invoiced twice: the database refuses it. Finance approves drafts
with the `flexbill_finalize` DAG.

**Backfill.** `airflow backfill create --dag-id flexbill_billing --from-date D1 --to-date D2
--reprocess-behavior failed --max-active-runs 1` runs the dates in order (one active run at a time, and `publish`
waits for the previous date's publish).

**On failure.** `validate_output` failing means the staged invoices broke a rule: nothing was
published; the task writes the data-quality report showing the run as blocked and why (its path is
in the task log) and fails at once, without retries; do not force the run green. A database error
is retried with backoff. A task that fails for good e-mails `FLEXBILL_ALERT_EMAILS` (through the SMTP
connection `FLEXBILL_SMTP_CONN_ID`, default `smtp_default`) with the date, the reason and the report's
path. Quarantined source rows do not fail the run: fix them in the billing database and rerun the date.
"""

from airflow.sdk import CronDataIntervalTimetable, dag, task

from flexbill import airflow_steps as steps


@dag(
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),  # run for [D, D+1) bills D
    start_date=steps.FIRST_RUN,
    catchup=steps.CATCHUP,
    max_active_runs=1,
    default_args=steps.BILLING_ARGS,  # retries with backoff; a final failure e-mails FLEXBILL_ALERT_EMAILS
    tags=steps.TAGS,
    doc_md=__doc__,
)
def flexbill_billing():
    @task
    def extract_snapshot(data_interval_start=None, run_id=None) -> list[int]:
        """Read the source tables as of the cutoff, validate them, stage the quarantine; returns the locations."""
        return steps.extract_snapshot(data_interval_start, run_id)["locations"]

    @task
    def apply_rule(rule: str, data_interval_start=None, run_id=None) -> int:
        """Append the suspend events one automatic rule owes, at the triggers' own instants."""
        return steps.apply_rule(data_interval_start, run_id, rule)

    @task
    def owed_periods(location_id: int, data_interval_start=None, run_id=None) -> int:
        """Stage the periods each contract of the location owes on D."""
        return steps.owed_periods(data_interval_start, run_id, location_id)

    @task
    def suspension_filter(location_id: int, data_interval_start=None, run_id=None) -> int:
        """Skip suspended and archived customers of the location; their periods stay owed."""
        return steps.suspension_filter(data_interval_start, run_id, location_id)

    @task
    def build_invoices(location_id: int, data_interval_start=None, run_id=None) -> int:
        """Stage one invoice per customer of the location."""
        return steps.build_invoices(data_interval_start, run_id, location_id)

    @task(trigger_rule=steps.AFTER_LOCATIONS)
    def active_user_report(data_interval_start=None, run_id=None) -> int:
        """Stage the active-user report as of the cutoff."""
        return steps.active_user_report(data_interval_start, run_id)

    @task(trigger_rule=steps.AFTER_LOCATIONS)
    def validate_output(data_interval_start=None, run_id=None) -> dict:
        """Great Expectations on the staged outputs; a failure publishes nothing."""
        return steps.validate_output(data_interval_start, run_id)

    @task(depends_on_past=True, trigger_rule=steps.AFTER_LOCATIONS)
    def publish(data_interval_start=None, run_id=None) -> dict:
        """Replace D's outputs with the staged ones in one transaction (after D-1 has published)."""
        return steps.publish_summary(data_interval_start, run_id)

    @task(trigger_rule=steps.AFTER_LOCATIONS)
    def data_quality_report(data_interval_start=None) -> str:
        """Write D's data-quality report for finance (HTML, CSV, GX Data Docs); returns its path."""
        return steps.data_quality_report(data_interval_start)

    @task
    def finalize(data_interval_start=None) -> dict:
        """Finalize the drafts of dates up to D minus FLEXBILL_GRACE_DAYS (actor `grace`), numbering them."""
        return steps.finalize_grace(data_interval_start)

    locations = extract_snapshot()
    rules = apply_rule.expand(rule=list(steps.RULES))
    owed = owed_periods.expand(location_id=locations)
    filtered = suspension_filter.expand(location_id=locations)
    invoiced = build_invoices.expand(location_id=locations)
    report = active_user_report()
    checked = validate_output()
    (
        locations
        >> rules
        >> owed
        >> filtered
        >> invoiced
        >> report
        >> checked
        >> publish()
        >> data_quality_report()
        >> finalize()
    )


flexbill_billing()
