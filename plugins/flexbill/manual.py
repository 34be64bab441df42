"""Manual suspend / lift: validated, explained, and written under the run lock.

Before checking a manual event at instant `at`, the automatic triggers of that
customer that happened before `at` are recorded (exactly as the next run would
record them), so "lift" works on a customer suspended by a rule that no run has
applied yet.  A refused event raises EventRefused and writes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from . import rules, validation
from .steps import apply_rules, bump_publish_seq
from .db import dialect, extract, schema
from .db.connect import require_schema
from .errors import EventRefused, InputError
from .suspension import CustomerView, check_manual


def parse_instant(text: str | None, now: datetime) -> datetime:
    """ISO-8601 instant -> naive UTC; no offset means UTC."""
    if text is None or str(text).strip() == "":
        return now
    try:
        value = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"'{text}' is not a timestamp: use ISO 8601, e.g. 2026-01-31T09:30:00Z") from None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _customer_snapshot(conn, customer_id: int, at: datetime) -> dict:
    s = schema
    by_customer = {
        "customers": s.customers.c.id == customer_id,
        "contracts": s.contracts.c.customer_id == customer_id,
        "suspension_events": s.suspension_events.c.customer_id == customer_id,
        "crm_stage_entries": s.crm_stage_entries.c.customer_id == customer_id,
    }
    return {t.name: extract.read_table(conn, t, at, where=by_customer.get(t.name)) for t in s.SOURCE_TABLES}


def record_manual_event(engine: Engine, customer_id: int, action: str, actor: str, reason: str | None,
                        at: datetime) -> dict:
    """Append one manual event after the checks of `suspension.check_manual`."""
    if not actor or not str(actor).strip():
        raise InputError("--actor is required: who is doing this (an admin's e-mail)")
    require_schema(engine)
    with engine.begin() as conn:
        dialect.lock_for_run(conn)
        # rows at or before `at` exist for the check (an event at `at` itself is earlier in id order)
        src = _customer_snapshot(conn, customer_id, at + timedelta(microseconds=1))
        exists = bool(conn.execute(select(schema.customers.c.id).where(schema.customers.c.id == customer_id)).first())
        verdict = validation.check_inputs(src)
        valid_events, _ = apply_rules(conn, verdict.valid, customer_id)
        state = rules.suspended_at(valid_events, at + timedelta(microseconds=1))
        cust = src["customers"]
        row = cust[cust["id"] == customer_id]
        archived = row["archived_at"].iloc[0] if len(row) else None
        e = schema.suspension_events  # the latest event of all, whatever `at` says
        latest = conn.execute(select(func.max(e.c.occurred_at)).where(e.c.customer_id == customer_id)).scalar()
        view = CustomerView(
            customer_id=customer_id,
            exists=exists,
            archived_at=None if archived is None or pd.isna(archived) else pd.Timestamp(archived).to_pydatetime(),
            suspended=bool(state.get(customer_id, False)),
            latest_event_at=None if latest is None else pd.Timestamp(latest).to_pydatetime(),
        )
        if exists and not len(row):
            raise EventRefused(f"customer {customer_id} was created after {at:%Y-%m-%d %H:%M:%S} UTC: "
                               "use an --at on or after its signup")
        check_manual(action, view, at)
        event = {"customer_id": customer_id, "occurred_at": at, "action": action, "source": "manual",
                 "reason": reason, "actor": actor, "trigger_key": None}
        conn.execute(schema.suspension_events.insert(), event)
        bump_publish_seq(conn)  # a DAG run that staged before this event must not publish a mix
    return event
