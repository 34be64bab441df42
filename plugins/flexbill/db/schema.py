"""The one schema definition for PostgreSQL and SQLite (SQLAlchemy Core metadata).

Source tables carry the contract's types, NOT NULL and primary keys, but no CHECK
and no FOREIGN KEY: operators point flexbill at billing databases it did not
create, so bad rows are caught by the pipeline (quarantine), not by the database.
Output tables carry every key the contract names.  Invoices follow a lifecycle
(draft -> finalized -> credited): the primary key of `billed_periods` (one row per
(contract, period) billed on an invoice that is not credited, kept by triggers, see
include/sql/lifecycle.*.sql) makes double billing an error the database refuses, and
triggers refuse any change to a finalized invoice, its lines or a credit note.
"""

from __future__ import annotations

from sqlalchemy import (
    CHAR,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

Money = Numeric(18, 2, asdecimal=True)
Stamp = DateTime(timezone=False)  # every timestamp is UTC, stored naive

# ---------------------------------------------------------------- source tables
locations = Table(
    "locations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", Text, nullable=False),
    Column("currency", CHAR(3), nullable=False),
    Column("tax_rate", Numeric(6, 4, asdecimal=True), nullable=False),
    Column("keep_new_accounts_suspended_since", Stamp),
)

customers = Table(
    "customers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("location_id", Integer, nullable=False),
    Column("full_name", Text, nullable=False),
    Column("email", Text),
    Column("created_at", Stamp, nullable=False),
    Column("archived_at", Stamp),
    Column("portal_access", Boolean, nullable=False, server_default=text("true")),
)

plans = Table(
    "plans",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("location_id", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("price", Numeric(12, 2, asdecimal=True), nullable=False),
    Column("currency", CHAR(3), nullable=False),
    Column("invoice_every_months", Integer, nullable=False, server_default=text("1")),
    Column("invoice_every_weeks", Integer, nullable=False, server_default=text("0")),
    Column("suspend_customers_joining_since", Stamp),
)

contracts = Table(
    "contracts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("customer_id", Integer, nullable=False),
    Column("plan_id", Integer, nullable=False),
    Column("price", Numeric(12, 2, asdecimal=True)),
    Column("quantity", Integer, nullable=False, server_default=text("1")),
    Column("start_date", Date, nullable=False),
    Column("billing_day", Integer),
    Column("cancellation_date", Date),
    Column("next_invoice_date", Date),
    Column("created_at", Stamp, nullable=False),
)

suspension_events = Table(
    "suspension_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("customer_id", Integer, nullable=False),
    Column("occurred_at", Stamp, nullable=False),
    Column("action", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("reason", Text),
    Column("actor", Text),
    Column("trigger_key", Text, unique=True),
    Index("ix_suspension_events_customer", "customer_id", "occurred_at"),
)

crm_boards = Table(
    "crm_boards",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("location_id", Integer, nullable=False),
    Column("name", Text, nullable=False),
)

crm_stages = Table(
    "crm_stages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("board_id", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("deactivate_account_since", Stamp),
)

crm_stage_entries = Table(
    "crm_stage_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("customer_id", Integer, nullable=False),
    Column("stage_id", Integer, nullable=False),
    Column("entered_at", Stamp, nullable=False),
)

SOURCE_TABLES = (
    locations,
    customers,
    plans,
    contracts,
    suspension_events,
    crm_boards,
    crm_stages,
    crm_stage_entries,
)

# ---------------------------------------------------------------- output tables
INVOICE_STATUSES = ("draft", "finalized", "credited")

invoices = Table(
    "invoices",
    metadata,
    Column("invoice_id", Text, primary_key=True),
    Column("customer_id", Integer, nullable=False),
    Column("location_id", Integer, nullable=False),
    Column("billing_date", Date, nullable=False),
    Column("currency", CHAR(3), nullable=False),
    Column("subtotal", Money, nullable=False),
    Column("tax", Money, nullable=False),
    Column("total", Money, nullable=False),
    # the lifecycle (contract v2): a run writes drafts; finalization numbers them; a correction credits them
    Column("status", Text, nullable=False, server_default=text("'draft'")),
    Column("number", Text, unique=True),  # <location_id>-<seq, 6 digits>, null while draft
    Column("finalized_at", Stamp),
    Column("finalized_by", Text),  # `grace`, `correction` or the actor of `flexbill finalize`
    Column("corrects", Text),  # the credited invoice this corrective invoice replaces
    CheckConstraint("status in ('draft', 'finalized', 'credited')", name="ck_invoices_status"),
    CheckConstraint("(status = 'draft') = (number is null)", name="ck_invoices_number"),
    # one live (not credited) invoice per customer per billing date; credited ones stay beside their correction
    Index(
        "uq_invoices_live_customer_date",
        "customer_id",
        "billing_date",
        unique=True,
        postgresql_where=text("status <> 'credited'"),
        sqlite_where=text("status <> 'credited'"),
    ),
    Index("ix_invoices_billing_date", "billing_date"),
)

# Lines are never updated; those of a finalized or credited invoice are never deleted either (triggers).
invoice_lines = Table(
    "invoice_lines",
    metadata,
    Column("invoice_id", Text, ForeignKey("invoices.invoice_id", ondelete="CASCADE"), nullable=False),
    Column("contract_id", Integer, nullable=False),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", Numeric(12, 2, asdecimal=True), nullable=False),
    Column("amount", Money, nullable=False),
    Column("prorated", Boolean, nullable=False),
    UniqueConstraint("invoice_id", "contract_id", "period_start", name="uq_invoice_lines_invoice_period"),
)

# The live lines: one row per (contract, period) billed on an invoice that is not credited.  Written only by
# triggers (a line inserted adds its row; its invoice credited, or the draft line deleted, removes it), so its
# primary key is the database's own refusal of a period billed twice.
billed_periods = Table(
    "billed_periods",
    metadata,
    Column("contract_id", Integer, nullable=False),
    Column("period_start", Date, nullable=False),
    Column("invoice_id", Text, ForeignKey("invoices.invoice_id", ondelete="CASCADE"), nullable=False),
    PrimaryKeyConstraint("contract_id", "period_start", name="pk_billed_periods"),
    Index("ix_billed_periods_invoice", "invoice_id"),
)

# A credit note cancels one finalized invoice in full; it is never updated or deleted (triggers).
credit_notes = Table(
    "credit_notes",
    metadata,
    Column("credit_note_id", Text, primary_key=True),
    Column("number", Text, nullable=False, unique=True),  # <location_id>-C<seq, 6 digits>
    Column("invoice_id", Text, ForeignKey("invoices.invoice_id"), nullable=False, unique=True),
    Column("customer_id", Integer, nullable=False),
    Column("location_id", Integer, nullable=False),
    Column("billing_date", Date, nullable=False),  # of the credited invoice
    Column("issued_at", Stamp, nullable=False),
    Column("currency", CHAR(3), nullable=False),
    Column("subtotal", Money, nullable=False),
    Column("tax", Money, nullable=False),
    Column("total", Money, nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_credit_notes_billing_date", "billing_date"),
)

# The last number used in each location's series (`invoice`, `credit_note`): moved in the transaction that
# uses the numbers, under the run lock, so the series are gapless and never reuse a number.
number_series = Table(
    "number_series",
    metadata,
    Column("location_id", Integer, nullable=False),
    Column("series", Text, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    PrimaryKeyConstraint("location_id", "series"),
)

skipped_contracts = Table(
    "skipped_contracts",
    metadata,
    Column("billing_date", Date, nullable=False),
    Column("contract_id", Integer, nullable=False),
    Column("customer_id", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("owed_periods", Integer, nullable=False),
    Column("owed_amount", Money, nullable=False),
    PrimaryKeyConstraint("billing_date", "contract_id"),
)

active_user_report = Table(
    "active_user_report",
    metadata,
    Column("report_date", Date, nullable=False),
    Column("location_id", Integer, nullable=False),
    Column("members", Integer, nullable=False),
    Column("active_users", Integer, nullable=False),
    Column("suspended_members", Integer, nullable=False),
    Column("suspended_with_portal_access", Integer, nullable=False),
    Column("contacts", Integer, nullable=False),
    PrimaryKeyConstraint("report_date", "location_id"),
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("billing_date", Date, nullable=False),
    Column("source_table", Text, nullable=False),
    Column("row_id", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    PrimaryKeyConstraint("billing_date", "source_table", "row_id"),
)

# The Great Expectations checks of D's latest published run, one row per expectation of the two suites
# (flexbill_inputs on the source snapshot, flexbill_outputs on what it published), with how many rows failed
# each: the finance report shows them and renders the GX Data Docs from them, without validating again.
# Replaced with D's other outputs by every publish of D.
data_quality = Table(
    "data_quality",
    metadata,
    Column("billing_date", Date, nullable=False),
    Column("suite", Text, nullable=False),
    Column("position", Integer, nullable=False),  # the expectation's place in the suite
    Column("expectation", Text, nullable=False),  # GX's type, e.g. expect_column_values_to_be_between
    Column("column_name", Text, nullable=False),  # as the suite names it: <table>__<column>
    Column("success", Boolean, nullable=False),
    Column("unexpected_count", BigInteger, nullable=False),
    Column("element_count", BigInteger, nullable=False),  # rows the suite checked
    Column("suite_version", Text, nullable=False),
    Column("validated_at", Stamp, nullable=False),
    PrimaryKeyConstraint("billing_date", "suite", "position"),
)

# ---------------------------------------------------------------- flexbill's own bookkeeping
# One row per billing date: what the last attempt did, for finance and for reconciliation.
billing_runs = Table(
    "billing_runs",
    metadata,
    Column("billing_date", Date, primary_key=True),
    Column("status", Text, nullable=False),  # published | failed
    Column("started_at", Stamp, nullable=False),
    Column("finished_at", Stamp, nullable=False),
    Column("published_at", Stamp),  # last successful publish of this date
    Column("contracts_owed", Integer, nullable=False, server_default=text("0")),
    Column("contracts_invoiced", Integer, nullable=False, server_default=text("0")),
    Column("contracts_skipped", Integer, nullable=False, server_default=text("0")),
    Column("contracts_quarantined", Integer, nullable=False, server_default=text("0")),
    Column("contracts_billed_later", Integer, nullable=False, server_default=text("0")),
    Column("invoices", Integer, nullable=False, server_default=text("0")),
    Column("lines", Integer, nullable=False, server_default=text("0")),
    Column("back_billed_lines", Integer, nullable=False, server_default=text("0")),
    Column("events_appended", Integer, nullable=False, server_default=text("0")),
    Column("quarantined_rows", Integer, nullable=False, server_default=text("0")),
    Column("message", Text),
)

# Per-contract ledger cursor: every period of the contract that starts before
# `billed_before` has an invoice line (or lies before next_invoice_date).  A run
# reads only contracts whose cursor is on or before its billing date, so its cost
# grows with the work due, not with the length of the history.  It is a cache of
# invoice_lines, kept in the same transaction as the lines it summarises.
contract_ledger = Table(
    "contract_ledger",
    metadata,
    Column("contract_id", Integer, primary_key=True, autoincrement=False),
    Column("billed_before", Date, nullable=False),
    Index("ix_contract_ledger_billed_before", "billed_before"),
)

# A manual event recorded by mistake is voided by a row here (`flexbill void-event`): the event stays in the
# append-only log and every run, rerun and check ignores it from then on.  Append-only too.
event_voids = Table(
    "event_voids",
    metadata,
    Column("event_id", Integer, primary_key=True, autoincrement=False),
    Column("voided_at", Stamp, nullable=False),
    Column("actor", Text, nullable=False),
    Column("reason", Text, nullable=False),
)

OUTPUT_TABLES = (
    invoices,
    invoice_lines,
    billed_periods,
    credit_notes,
    number_series,
    skipped_contracts,
    active_user_report,
    quarantine,
    data_quality,
    billing_runs,
    contract_ledger,
    event_voids,
)

# ---------------------------------------------------------------- staging (write-audit-publish)
# Each run stages its intermediate results here, keyed by its run id (the CLI's own id or
# Airflow's run_id); publish copies them into the output tables in one transaction and
# deletes them.  Amounts are integer cents.  Nothing outside flexbill should read these.
Cents = BigInteger


def _staging(name: str, *columns: Column) -> Table:
    return Table(
        name,
        metadata,
        Column("run_id", Text, nullable=False),
        Column("location_id", Integer),
        *columns,
        Index(f"ix_{name}_run", "run_id", "location_id"),
    )


stg_runs = Table(
    "stg_runs",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("billing_date", Date, nullable=False),
    Column("started_at", Stamp, nullable=False),
    Column("publish_seq", Integer, nullable=False),  # publishes seen when staging began
    Column("quarantined_rows", Integer, nullable=False),
    Column("contracts_quarantined", Integer, nullable=False),
    Column("events_appended", Integer, nullable=False, server_default=text("0")),
    Column("validated", Boolean, nullable=False, server_default=text("false")),
)
stg_quarantine = _staging(
    "stg_quarantine", Column("source_table", Text), Column("row_id", Integer), Column("reason", Text)
)
stg_checks = _staging(
    "stg_checks",
    Column("suite", Text),
    Column("position", Integer),
    Column("expectation", Text),
    Column("column_name", Text),
    Column("success", Boolean),
    Column("unexpected_count", BigInteger),
    Column("element_count", BigInteger),
)
stg_candidates = _staging(
    "stg_candidates",
    Column("contract_id", Integer),
    Column("customer_id", Integer),
    Column("archived_at", Stamp),
    Column("next_start", Date),
)
stg_periods = _staging(
    "stg_periods",
    Column("contract_id", Integer),
    Column("customer_id", Integer),
    Column("period_start", Date),
    Column("period_end", Date),
    Column("quantity", Integer),
    Column("unit_cents", Cents),
    Column("amount_cents", Cents),
    Column("prorated", Boolean),
    Column("kind", Text),
)
stg_status = _staging(
    "stg_status",
    Column("contract_id", Integer),
    Column("customer_id", Integer),
    Column("reason", Text),
    Column("owed_periods", Integer),
    Column("owed_cents", Cents),
)
stg_ledger = _staging("stg_ledger", Column("contract_id", Integer), Column("billed_before", Date))
stg_lines = _staging(
    "stg_lines",
    Column("invoice_id", Text),
    Column("contract_id", Integer),
    Column("customer_id", Integer),
    Column("period_start", Date),
    Column("period_end", Date),
    Column("quantity", Integer),
    Column("unit_cents", Cents),
    Column("amount_cents", Cents),
    Column("prorated", Boolean),
)
stg_invoices = _staging(
    "stg_invoices",
    Column("invoice_id", Text),
    Column("customer_id", Integer),
    Column("currency", CHAR(3)),
    Column("subtotal_cents", Cents),
    Column("tax_cents", Cents),
    Column("total_cents", Cents),
)
stg_report = _staging(
    "stg_report",
    Column("members", Integer),
    Column("active_users", Integer),
    Column("suspended_members", Integer),
    Column("suspended_with_portal_access", Integer),
    Column("contacts", Integer),
)
STAGING_TABLES = (
    stg_quarantine,
    stg_checks,
    stg_candidates,
    stg_periods,
    stg_status,
    stg_ledger,
    stg_lines,
    stg_invoices,
    stg_report,
)

# A counter of publishes: a run staged by separate tasks refuses to publish over one that
# published in between (it staged from a ledger that has since moved).
flexbill_state = Table(
    "flexbill_state",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Integer, nullable=False),
)

# What the latest publish of each date read (flexbill.db.fingerprint), and the publish sequence it left: a
# `flexbill run` of the date with the same fingerprint and no publish or manual event since keeps D's outputs
# instead of recomputing them.  A publish that took no fingerprint (a DAG run) deletes its date's row.
run_inputs = Table(
    "run_inputs",
    metadata,
    Column("billing_date", Date, primary_key=True),
    Column("fingerprint", Text, nullable=False),
    Column("publish_seq", Integer, nullable=False),
)
