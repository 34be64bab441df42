"""The fault suite's operator, its databases and how their contents are compared.

One scenario (two locations, every kind of output on the billing date D, all
three automatic rules firing on D, a back-billing after a lift) is built once
per dialect in a template database that also holds D0's run; each fault works on
a clone of it (a file copy on SQLite, `CREATE DATABASE ... TEMPLATE` on
PostgreSQL), so no test pays for building the operator again.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from datetime import date, datetime
from pathlib import Path

from sqlalchemy import create_engine, func, select, text

from flexbill.db import schema as s
from flexbill.db.connect import init_db, make_engine
from flexbill.runner import run_billing_date
from tests.builders import Operator
from tests.processes import DUMP_IGNORES, PG_ADMIN_URL, dump

D0 = date(2024, 2, 15)  # published in the template
D = date(2024, 3, 1)  # the billing date every fault hits
LOCATIONS = [1, 2]
DIALECTS = ["sqlite", "postgresql"]
SUSPEND_AT = datetime(2024, 3, 1, 12, 0)  # before D's cutoff: decides whether customer 1 is invoiced on D
LIFT_AT = datetime(2024, 3, 1, 9, 0)  # lifts customer 11 before D's cutoff: decides whether it is invoiced on D


def scenario(op: Operator) -> None:
    """Every output kind on D: invoices in two currencies (prorated, weekly, back-billed after a lift),
    skips (suspended, archived), quarantine, the report, and one event from each automatic rule."""
    op.location(1, currency="EUR", tax_rate="0.2000")
    op.location(2, currency="GBP", tax_rate="0.1000", keep_new_accounts_suspended_since=datetime(2024, 2, 15))
    op.plan(1, price="100.00")
    op.plan(2, price="30.00", months=0, weeks=1)
    op.plan(3, price="50.00", suspend_customers_joining_since=datetime(2024, 2, 20))
    op.plan(4, price="80.00", location_id=2, currency="GBP")
    op.board(1)
    op.stage(1, deactivate_account_since=datetime(2024, 2, 1))
    op.customer(1)
    op.contract(1, 1, 1, start_date=date(2024, 1, 20), billing_day=1)  # prorated first period, then every 1st
    op.customer(2)
    op.contract(2, 2, 2, start_date=date(2024, 2, 5), quantity=2)  # weekly
    op.customer(3)
    op.contract(3, 3, 1, start_date=date(2024, 2, 1))
    op.event(3, datetime(2024, 2, 10), action="suspend")  # skipped on D0 ...
    op.event(3, datetime(2024, 2, 20), action="lift")  # ... back-billed on D
    op.customer(4, location_id=2, created_at=datetime(2024, 2, 25))  # signup rule fires on D
    op.contract(4, 4, 4, start_date=date(2024, 2, 26), created_at=datetime(2024, 2, 25))
    op.customer(5)
    op.contract(5, 5, 3, start_date=date(2024, 2, 22), created_at=datetime(2024, 2, 22))  # plan rule fires on D
    op.customer(6)
    op.contract(6, 6, 1, start_date=date(2024, 2, 1), quantity=0)  # quarantined
    op.customer(7, archived_at=datetime(2024, 2, 20))
    op.contract(7, 7, 1, start_date=date(2024, 1, 1))  # archived on D
    op.customer(8, portal_access=False)  # a contact
    op.customer(9)
    op.contract(9, 9, 1, start_date=date(2024, 1, 1))
    op.entry(1, 9, 1, entered_at=datetime(2024, 2, 25))  # crm_stage rule fires on D
    op.customer(10, location_id=2)
    op.contract(10, 10, 4, start_date=date(2024, 2, 1))  # GBP, invoiced
    op.customer(11)
    op.contract(11, 11, 1, start_date=date(2024, 2, 1))
    op.event(11, datetime(2024, 2, 5), action="suspend")  # suspended with portal access; a lift races runs


# ---------------------------------------------------------------- databases


class Databases:
    """Databases of one dialect created by a test (empty, or clones); all dropped by close()."""

    def __init__(self, dialect: str, folder: Path):
        self.dialect, self.folder = dialect, Path(folder)
        self.names: list[str] = []
        self.admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT") if dialect == "postgresql" else None

    def _new_name(self) -> str:
        return f"flexbill_test_{uuid.uuid4().hex[:12]}"

    def empty(self) -> str:
        if self.dialect == "sqlite":
            path = self.folder / f"{uuid.uuid4().hex[:12]}.sqlite"
            return f"sqlite:///{path}"
        name = self._new_name()
        with self.admin.connect() as conn:
            conn.execute(text(f'create database "{name}"'))
        self.names.append(name)
        return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"

    def clone(self, url: str) -> str:
        """A copy of the database at `url` (nobody may be writing to it)."""
        if self.dialect == "sqlite":
            source = Path(url.removeprefix("sqlite:///"))
            target = self.folder / f"{uuid.uuid4().hex[:12]}.sqlite"
            shutil.copy(source, target)
            if Path(f"{source}-wal").exists():  # a killed process leaves committed pages in the WAL
                shutil.copy(f"{source}-wal", f"{target}-wal")
            return f"sqlite:///{target}"
        source, name = url.rsplit("/", 1)[1], self._new_name()
        with self.admin.connect() as conn:
            self.disconnect(conn, source)
            conn.execute(text(f'create database "{name}" template "{source}"'))
        self.names.append(name)
        return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"

    @staticmethod
    def disconnect(conn, name: str) -> None:
        conn.execute(
            text(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = :n and pid <> pg_backend_pid()"
            ),
            {"n": name},
        )

    def close(self) -> None:
        """Drop the databases, in the background: `wait_for_cleanup` (at the end of the session) waits."""
        if self.admin is None:
            return
        janitor = threading.Thread(target=self._drop, daemon=True)
        janitor.start()
        JANITORS.append(janitor)

    def _drop(self) -> None:
        with self.admin.connect() as conn:
            for name in self.names:
                conn.execute(text(f'alter database "{name}" allow_connections true'))
                self.disconnect(conn, name)
                conn.execute(text(f'drop database if exists "{name}"'))
        self.admin.dispose()


JANITORS: list[threading.Thread] = []


def wait_for_cleanup() -> None:
    while JANITORS:
        JANITORS.pop().join()


def revoke(url: str) -> int:
    """The PostgreSQL database at `url` goes away: no new connections, and every session on it is
    terminated (from an admin connection; the server stays up). Returns how many sessions were ended."""
    name = url.rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'alter database "{name}" allow_connections false'))
            return conn.execute(
                text(
                    "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                    "where datname = :n and pid <> pg_backend_pid()"
                ),
                {"n": name},
            ).scalar_one()
    finally:
        admin.dispose()


def restore(url: str) -> None:
    """The database at `url` is back."""
    name = url.rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'alter database "{name}" allow_connections true'))
    finally:
        admin.dispose()


def template(dbs: Databases, through: date | None = D0) -> str:
    """A database holding the scenario and (by default) D0's run; returns its URL."""
    url = dbs.empty()
    engine = make_engine(url)
    init_db(engine)
    scenario(Operator(engine))
    if through is not None:
        run_billing_date(engine, through)
    engine.dispose()
    return url


def contents(url: str, ignore: dict | None = None) -> dict:
    """tests.processes.dump of the database at `url`."""
    engine = make_engine(url)
    try:
        return dump(engine, ignore)
    finally:
        engine.dispose()


def without_attempt(dumped: dict) -> dict:
    """A dump without billing_runs.events_appended and data_quality.element_count: how many rule events *this
    attempt* appended, and so how many source rows its input suite checked, is bookkeeping of the attempt (a run
    after a killed or concurrent one finds their rule events there and checks them too); what each check found
    (success, failing rows) stays compared."""
    return {
        **dumped,
        "billing_runs": _without(dumped["billing_runs"], s.billing_runs, "events_appended"),
        "data_quality": _without(dumped["data_quality"], s.data_quality, "element_count"),
    }


def _without(rows: list[tuple], table, column: str) -> list[tuple]:
    """`rows` of `table` as dump holds them by default (DUMP_IGNORES already left out), less `column`."""
    cols = [c.name for c in table.columns if c.name not in DUMP_IGNORES.get(table.name, ())]
    keep = [i for i, c in enumerate(cols) if c != column]
    return [tuple(r[i] for i in keep) for r in rows]


# ---------------------------------------------------------------- what a date holds


def outputs_of(url: str, d: date = D) -> dict:
    """How many rows of each output of date d there are."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            lines = (
                select(func.count())
                .select_from(s.invoice_lines.join(s.invoices, s.invoices.c.invoice_id == s.invoice_lines.c.invoice_id))
                .where(s.invoices.c.billing_date == d)
            )
            counts = {"invoice_lines": conn.execute(lines).scalar_one()}
            for table, column in (
                (s.invoices, "billing_date"),
                (s.skipped_contracts, "billing_date"),
                (s.quarantine, "billing_date"),
                (s.active_user_report, "report_date"),
                (s.billing_runs, "billing_date"),
            ):
                counts[table.name] = conn.execute(
                    select(func.count()).select_from(table).where(table.c[column] == d)
                ).scalar_one()
        return counts
    finally:
        engine.dispose()


def duplicate_periods(url: str) -> list:
    """(contract_id, period_start) invoiced more than once: must always be empty."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [
                tuple(r)
                for r in conn.execute(
                    text(  # lines of credited invoices are cancelled
                        "select l.contract_id, l.period_start, count(*) from invoice_lines as l "
                        "join invoices as i on i.invoice_id = l.invoice_id where i.status <> 'credited' "
                        "group by l.contract_id, l.period_start having count(*) > 1"
                    )
                )
            ]
    finally:
        engine.dispose()


def periods(url: str) -> set:
    """Every invoiced (contract_id, period_start), on invoices that stand (not credited)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                tuple(r)
                for r in conn.execute(
                    select(s.invoice_lines.c.contract_id, s.invoice_lines.c.period_start)
                    .join(s.invoices, s.invoices.c.invoice_id == s.invoice_lines.c.invoice_id)
                    .where(s.invoices.c.status != "credited")
                )
            }
    finally:
        engine.dispose()


def staging_rows(url: str) -> dict:
    """run_id -> how many staging rows it left (stg_runs and every staging table)."""
    engine = make_engine(url)
    out: dict = {}
    try:
        with engine.connect() as conn:
            for table in (s.stg_runs, *s.STAGING_TABLES):
                for run_id, n in conn.execute(select(table.c.run_id, func.count()).group_by(table.c.run_id)):
                    out[run_id] = out.get(run_id, 0) + n
        return out
    finally:
        engine.dispose()
