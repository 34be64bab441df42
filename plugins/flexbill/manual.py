"""Manual suspend / lift and voiding a mistaken event: validated, explained, and written under the run lock.

Before checking a manual event at instant `at`, the automatic triggers of that customer that happened before
`at` are recorded (exactly as the next run would record them), so "lift" works on a customer suspended by a
rule that no run has applied yet.  A refused event raises EventRefused (or InputError) and writes nothing.

Events in time: an event counts for every billing date D whose cutoff (D+1 00:00 UTC) is after it, so it
first counts for the date of its own instant.  An event in the future (beyond CLOCK_SKEW) needs `future`; an
event before the cutoff of dates already billed changes what a rerun of them computes and needs `backdate`,
and the answer lists those dates, the customer's invoices on them and what a rerun will do.  A mistaken manual
event is voided by a row of `event_voids` (the log itself stays append-only): from then on nothing counts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from . import rules, validation
from .db import dialect, extract, schema
from .db.connect import require_schema
from .errors import EventRefused, InputError
from .inputs import check_actor, id_fits
from .inputs import parse_instant as parse_instant  # noqa: PLC0414 - re-exported for callers of flexbill.manual
from .publishing import bump_publish_seq
from .steps import apply_rules
from .suspension import CustomerView, check_manual

CLOCK_SKEW = timedelta(minutes=5)  # an --at this far past now is still "now" (clocks of two hosts differ)


@dataclass
class Impact:
    """What an event (or a void) changes for dates already billed."""

    first_date: date  # the first billing date the event counts for
    dates: list = field(default_factory=list)  # published billing dates it changes a rerun of
    invoices: list = field(default_factory=list)  # (billing_date, invoice_id, number, status, currency, total)
    skipped: list = field(default_factory=list)  # (billing_date, contract_id, reason, owed_periods)
    rerun: str = ""  # what a rerun of those dates will do, in one sentence


@dataclass
class Recorded:
    event: dict
    impact: Impact


def first_billing_date(at: datetime) -> date:
    """The first billing date whose cutoff (D+1 00:00 UTC) is after `at`: the date of `at` itself."""
    return at.date()


def _customer_snapshot(conn, customer_id: int, at: datetime) -> dict:
    s = schema
    by_customer = {
        "customers": s.customers.c.id == customer_id,
        "contracts": s.contracts.c.customer_id == customer_id,
        "suspension_events": s.suspension_events.c.customer_id == customer_id,
        "crm_stage_entries": s.crm_stage_entries.c.customer_id == customer_id,
    }
    return {t.name: extract.read_table(conn, t, at, where=by_customer.get(t.name)) for t in s.SOURCE_TABLES}


def _events_of(conn: Connection, customer_id: int) -> pd.DataFrame:
    """Every event of the customer that counts (voided ones left out), in log order."""
    e = schema.suspension_events
    events = extract.without_voided(conn, extract.read_table(conn, e, where=e.c.customer_id == customer_id))
    return events.sort_values(["occurred_at", "id"], kind="stable").reset_index(drop=True)


def impact(conn: Connection, customer_id: int, at: datetime, action: str, until: datetime | None = None) -> Impact:
    """The published dates whose cutoff is after `at` (and before the cutoff that `until`, the customer's next
    event, first counts for), the customer's invoices and skips on them, and what a rerun of them does once an
    event with `action` at `at` counts (`suspend`: no longer billed there; `lift`: billed)."""
    out = Impact(first_date=first_billing_date(at))
    r, i, k = schema.billing_runs, schema.invoices, schema.skipped_contracts
    window = [r.c.billing_date >= out.first_date, r.c.status == "published"]
    if until is not None:
        window.append(r.c.billing_date < first_billing_date(until))
    out.dates = [
        _day(d) for d in conn.execute(select(r.c.billing_date).where(*window).order_by(r.c.billing_date)).scalars()
    ]
    if not out.dates:
        return out
    last = out.dates[-1]
    out.invoices = [
        (_day(d), iid, number, status, cur, total)
        for d, iid, number, status, cur, total in conn.execute(
            select(i.c.billing_date, i.c.invoice_id, i.c.number, i.c.status, i.c.currency, i.c.total)
            .where(
                i.c.customer_id == customer_id, i.c.billing_date.between(out.first_date, last), i.c.status != "credited"
            )
            .order_by(i.c.billing_date, i.c.invoice_id)
        ).all()
    ]
    out.skipped = [
        (_day(d), cid, reason, n)
        for d, cid, reason, n in conn.execute(
            select(k.c.billing_date, k.c.contract_id, k.c.reason, k.c.owed_periods)
            .where(k.c.customer_id == customer_id, k.c.billing_date.between(out.first_date, last))
            .order_by(k.c.billing_date, k.c.contract_id)
        ).all()
    ]
    span = f"{out.dates[0]}..{last}" if len(out.dates) > 1 else str(last)
    finalized = [n for _, _, n, st, _, _ in out.invoices if st == "finalized"]
    if action == "suspend":
        out.rerun = (
            f"a rerun of {span} no longer bills customer {customer_id} on those dates: "
            + (
                f"its finalized invoices {', '.join(finalized)} are credited by credit notes"
                if finalized
                else "it has no finalized invoice there"
            )
            + "; its drafts there are replaced; the periods stay owed until a lift"
        )
    else:
        out.rerun = (
            f"a rerun of {span} bills customer {customer_id} again from {out.first_date}: the periods "
            "skipped there are invoiced by the first date rerun"
            + (
                f"; its finalized invoices {', '.join(finalized)} are credited and corrected if they change"
                if finalized
                else ""
            )
        )
    return out


def _day(value) -> date:
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _check_time(
    conn: Connection,
    customer_id: int,
    at: datetime,
    action: str,
    now: datetime,
    future: bool,
    backdate: bool,
    what: str,
    until: datetime | None = None,
) -> Impact:
    if at > now + CLOCK_SKEW and not future:
        raise InputError(
            f"{what} at {at:%Y-%m-%d %H:%M:%S} UTC is in the future (now is {now:%Y-%m-%d %H:%M:%S} "
            "UTC): check the date, or pass --future to record an event that takes effect later"
        )
    found = impact(conn, customer_id, at, action, until)
    if found.dates and not backdate:
        span = (
            f"{found.dates[0]}..{found.dates[-1]} ({len(found.dates)} dates)"
            if len(found.dates) > 1
            else str(found.dates[0])
        )
        raise InputError(
            f"{what} at {at:%Y-%m-%d %H:%M:%S} UTC falls before the cutoff of billing dates already "
            f"run: {span}. It changes what a rerun of them computes ({found.rerun}). Pass --backdate "
            "to record it, then rerun those dates; nothing was recorded"
        )
    return found


def record_manual_event(
    engine: Engine,
    customer_id: int,
    action: str,
    actor: str,
    reason: str | None,
    at: datetime,
    now: datetime | None = None,
    future: bool = False,
    backdate: bool = False,
) -> Recorded:
    """Append one manual event after the checks of `suspension.check_manual` and the time checks above."""
    from .clock import utcnow

    actor = check_actor(actor)
    now = utcnow() if now is None else now
    require_schema(engine)
    if not id_fits(customer_id):
        raise EventRefused(f"customer {customer_id} does not exist (or is quarantined): check the id")
    with engine.begin() as conn:
        dialect.lock_for_run(conn)
        # rows at or before `at` exist for the check (an event at `at` itself is earlier in id order)
        src = _customer_snapshot(conn, customer_id, at + timedelta(microseconds=1))
        exists = bool(conn.execute(select(schema.customers.c.id).where(schema.customers.c.id == customer_id)).first())
        verdict = validation.check_inputs(src)
        valid_events, _ = apply_rules(conn, verdict.valid, customer_id)
        state = rules.suspended_at(extract.without_voided(conn, valid_events), at + timedelta(microseconds=1))
        cust = src["customers"]
        row = cust[cust["id"] == customer_id]
        archived = row["archived_at"].iloc[0] if len(row) else None
        counted = _events_of(conn, customer_id)  # the latest event that counts, whatever `at` says
        latest = counted["occurred_at"].max() if len(counted) else None
        view = CustomerView(
            customer_id=customer_id,
            exists=exists,
            archived_at=None if archived is None or pd.isna(archived) else pd.Timestamp(archived).to_pydatetime(),
            suspended=bool(state.get(customer_id, False)),
            latest_event_at=None if latest is None or pd.isna(latest) else pd.Timestamp(latest).to_pydatetime(),
        )
        if exists and not len(row):
            raise EventRefused(
                f"customer {customer_id} was created after {at:%Y-%m-%d %H:%M:%S} UTC: "
                "use an --at on or after its signup"
            )
        check_manual(action, view, at)
        found = _check_time(conn, customer_id, at, action, now, future, backdate, f"--at {action}")
        event = {
            "customer_id": customer_id,
            "occurred_at": at,
            "action": action,
            "source": "manual",
            "reason": reason,
            "actor": actor,
            "trigger_key": None,
        }
        event["id"] = conn.execute(
            schema.suspension_events.insert().returning(schema.suspension_events.c.id), event
        ).scalar_one()
        bump_publish_seq(conn)  # a DAG run that staged before this event must not publish a mix
    return Recorded(event=event, impact=found)


def void_event(
    engine: Engine, event_id: int, actor: str, reason: str | None, now: datetime | None = None, backdate: bool = False
) -> Recorded:
    """Void a manual event recorded by mistake: a row of event_voids, never a change to the log."""
    from .clock import utcnow

    actor = check_actor(actor)
    if not (reason or "").strip():
        raise InputError("--reason is required: say why the event was a mistake (it is kept with the void)")
    now = utcnow() if now is None else now
    require_schema(engine)
    e, v = schema.suspension_events, schema.event_voids
    with engine.begin() as conn:
        dialect.lock_for_run(conn)
        row = None
        if id_fits(event_id):
            frame = extract.read_table(conn, e, where=e.c.id == event_id)
            row = frame.iloc[0].to_dict() if len(frame) else None
        if row is None:
            raise EventRefused(f"event {event_id} does not exist: check the id (suspension_events.id)")
        if conn.execute(select(v.c.event_id).where(v.c.event_id == event_id)).first():
            raise EventRefused(f"event {event_id} is already voided: nothing to do")
        if row["source"] != "manual":
            raise EventRefused(
                f"event {event_id} was recorded by the {row['source']} rule, not by a person: a rule's "
                "suspension is ended by a manual lift (`flexbill lift`), not voided"
            )
        customer = int(row["customer_id"])
        at = pd.Timestamp(row["occurred_at"]).to_pydatetime()
        later = _events_of(conn, customer)
        later = later[
            (later["occurred_at"] > row["occurred_at"])
            | ((later["occurred_at"] == row["occurred_at"]) & (later["id"] > event_id))
        ]
        until = pd.Timestamp(later["occurred_at"].iloc[0]).to_pydatetime() if len(later) else None
        undone = "lift" if row["action"] == "suspend" else "suspend"  # voiding a suspend acts like a lift
        found = _check_time(conn, customer, at, undone, now, True, backdate, f"voiding event {event_id}", until)
        void = {"event_id": event_id, "voided_at": now, "actor": actor, "reason": reason}
        conn.execute(v.insert(), void)
        bump_publish_seq(conn)
    return Recorded(event={**void, "customer_id": customer, "action": row["action"], "occurred_at": at}, impact=found)
