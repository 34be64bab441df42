"""Concise source-row builders for tests: defaults for every NOT NULL column."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import select

from flexbill.db import schema as s

T0 = datetime(2024, 1, 1)


class Operator:
    """Inserts source rows with sensible defaults; ids are chosen by the test."""

    def __init__(self, engine):
        self.engine = engine

    def _insert(self, table, **row):
        with self.engine.begin() as conn:
            conn.execute(table.insert(), row)
        return row

    def location(self, id=1, name=None, currency="EUR", tax_rate="0.2000", keep_new_accounts_suspended_since=None):
        return self._insert(
            s.locations,
            id=id,
            name=name or f"Location {id}",
            currency=currency,
            tax_rate=Decimal(tax_rate),
            keep_new_accounts_suspended_since=keep_new_accounts_suspended_since,
        )

    def customer(
        self, id, location_id=1, created_at=T0, archived_at=None, portal_access=True, full_name=None, email=None
    ):
        return self._insert(
            s.customers,
            id=id,
            location_id=location_id,
            full_name=full_name or f"Customer {id}",
            email=email,
            created_at=created_at,
            archived_at=archived_at,
            portal_access=portal_access,
        )

    def plan(
        self,
        id,
        price="100.00",
        location_id=1,
        currency="EUR",
        months=1,
        weeks=0,
        suspend_customers_joining_since=None,
        name=None,
    ):
        return self._insert(
            s.plans,
            id=id,
            location_id=location_id,
            name=name or f"Plan {id}",
            price=Decimal(price),
            currency=currency,
            invoice_every_months=months,
            invoice_every_weeks=weeks,
            suspend_customers_joining_since=suspend_customers_joining_since,
        )

    def contract(
        self,
        id,
        customer_id,
        plan_id,
        start_date,
        price=None,
        quantity=1,
        billing_day=None,
        cancellation_date=None,
        next_invoice_date=None,
        created_at=T0,
    ):
        return self._insert(
            s.contracts,
            id=id,
            customer_id=customer_id,
            plan_id=plan_id,
            price=None if price is None else Decimal(price),
            quantity=quantity,
            start_date=start_date,
            billing_day=billing_day,
            cancellation_date=cancellation_date,
            next_invoice_date=next_invoice_date,
            created_at=created_at,
        )

    def one_contract(self, start_date, contract_id=1):
        """Location 1, customer 1, plan 1 and one contract of theirs starting on `start_date` (a healthy operator)."""
        self.location(1)
        self.customer(1)
        self.plan(1)
        return self.contract(contract_id, 1, 1, start_date=start_date)

    def event(
        self,
        customer_id,
        occurred_at,
        action="suspend",
        source="manual",
        reason=None,
        actor="admin@x.io",
        trigger_key=None,
    ):
        return self._insert(
            s.suspension_events,
            customer_id=customer_id,
            occurred_at=occurred_at,
            action=action,
            source=source,
            reason=reason,
            actor=actor,
            trigger_key=trigger_key,
        )

    def board(self, id, location_id=1, name="Sales"):
        return self._insert(s.crm_boards, id=id, location_id=location_id, name=name)

    def stage(self, id, board_id=1, name="Lost", deactivate_account_since=None):
        return self._insert(
            s.crm_stages, id=id, board_id=board_id, name=name, deactivate_account_since=deactivate_account_since
        )

    def entry(self, id, customer_id, stage_id, entered_at):
        return self._insert(
            s.crm_stage_entries, id=id, customer_id=customer_id, stage_id=stage_id, entered_at=entered_at
        )

    # ---------------------------------------------------------------- reading outputs
    def rows(self, table, **where):
        stmt = select(table)
        for k, v in where.items():
            stmt = stmt.where(table.c[k] == v)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def lines(self, billing_date: date | None = None):
        stmt = select(s.invoice_lines, s.invoices.c.billing_date).join(
            s.invoices, s.invoices.c.invoice_id == s.invoice_lines.c.invoice_id
        )
        if billing_date is not None:
            stmt = stmt.where(s.invoices.c.billing_date == billing_date)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
        return sorted(rows, key=lambda r: (r["contract_id"], r["period_start"]))
