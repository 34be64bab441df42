"""Upgrading a billing database written by flexbill before the invoice lifecycle (contract v2).

Such a database has `invoices` without `status` and a unique key on `invoice_lines (contract_id,
period_start)` that a credited line and its re-bill would break.  `flexbill init-db` upgrades it in its
transaction: the lifecycle columns are added (every existing invoice becomes a draft: the next run or
`flexbill finalize` numbers them, oldest date first, as if they had just been written), the old keys are
replaced by the v2 ones and `billed_periods` is filled from the existing lines.  Nothing is lost: every
invoice and line keeps its values.
"""

from __future__ import annotations

from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateIndex, CreateTable

from . import schema

LIFECYCLE_COLUMNS = ("status", "number", "finalized_at", "finalized_by", "corrects")


def needs_upgrade(conn: Connection) -> bool:
    inspector = inspect(conn)
    if not inspector.has_table("invoices"):
        return False
    return "status" not in {c["name"] for c in inspector.get_columns("invoices")}


def upgrade(conn: Connection) -> bool:
    """Upgrade a pre-lifecycle database in the caller's transaction; returns whether anything was done."""
    if not needs_upgrade(conn):
        return False
    if conn.dialect.name == "postgresql":
        _upgrade_postgresql(conn)
    else:
        _upgrade_sqlite(conn)
    schema.billed_periods.create(conn, checkfirst=True)
    conn.execute(
        text(
            "insert into billed_periods (contract_id, period_start, invoice_id) "
            "select contract_id, period_start, invoice_id from invoice_lines"
        )
    )
    return True


def _upgrade_postgresql(conn: Connection) -> None:
    for statement in (
        "alter table invoices add column status text not null default 'draft', add column number text, "
        "add column finalized_at timestamp without time zone, add column finalized_by text, add column corrects text",
        "alter table invoices add constraint invoices_number_key unique (number)",
        "alter table invoices add constraint ck_invoices_status check (status in ('draft', 'finalized', 'credited'))",
        "alter table invoices add constraint ck_invoices_number check ((status = 'draft') = (number is null))",
        "alter table invoices drop constraint if exists uq_invoices_customer_date",
        "create unique index uq_invoices_live_customer_date on invoices (customer_id, billing_date) "
        "where status <> 'credited'",
        "alter table invoice_lines drop constraint if exists uq_invoice_lines_contract_period",
        "alter table invoice_lines add constraint uq_invoice_lines_invoice_period "
        "unique (invoice_id, contract_id, period_start)",
        "drop index if exists ix_invoice_lines_invoice",
    ):
        conn.exec_driver_sql(statement)


def _upgrade_sqlite(conn: Connection) -> None:
    """SQLite cannot drop a constraint: both tables are rebuilt (lines copied aside first, so dropping the old
    invoices cascades into nothing)."""
    old = [c["name"] for c in inspect(conn).get_columns("invoices")]
    line_columns = [c.name for c in schema.invoice_lines.columns]
    conn.exec_driver_sql("create temporary table flexbill_v1_lines as select * from invoice_lines")
    conn.exec_driver_sql("drop table invoice_lines")
    staging = schema.invoices.to_metadata(MetaData(), name="invoices_v2")
    conn.execute(CreateTable(staging))
    shared = ", ".join(f'"{c}"' for c in old if c in schema.invoices.c)
    conn.exec_driver_sql(f"insert into invoices_v2 ({shared}) select {shared} from invoices")
    conn.exec_driver_sql("drop table invoices")  # its indexes go with it
    conn.exec_driver_sql("alter table invoices_v2 rename to invoices")
    for index in schema.invoices.indexes:
        conn.execute(CreateIndex(index))
    schema.invoice_lines.create(conn)
    columns = ", ".join(f'"{c}"' for c in line_columns)
    conn.exec_driver_sql(f"insert into invoice_lines ({columns}) select {columns} from flexbill_v1_lines")
    conn.exec_driver_sql("drop table flexbill_v1_lines")
