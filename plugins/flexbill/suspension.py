"""Suspension state and the checks on manual events (pure).

A customer's state at instant t is the action of its latest event (ordered by
occurred_at, then id) with occurred_at < t; no event means not suspended.  Only
a manual lift ends a suspension, whatever started it; nothing automatic lifts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .errors import EventRefused

TRIGGER_KEYS = {
    "signup": "signup:{}",  # customer id
    "plan": "plan:{}",  # contract id
    "crm_stage": "crm_stage:{}",  # crm_stage_entries id
}


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    customer_id: int
    occurred_at: datetime
    action: str  # suspend | lift
    source: str = "manual"


def is_suspended(events: list[Event], at: datetime) -> bool:
    """The customer's state just before `at`."""
    before = [e for e in events if e.occurred_at < at]
    if not before:
        return False
    return max(before, key=lambda e: (e.occurred_at, e.id)).action == "suspend"


@dataclass(frozen=True, slots=True)
class CustomerView:
    """What a manual event is checked against."""

    customer_id: int
    exists: bool
    archived_at: datetime | None
    suspended: bool  # state at the event's instant, pending automatic triggers included
    latest_event_at: datetime | None


def check_manual(action: str, customer: CustomerView, at: datetime) -> None:
    """Refuse a manual suspend/lift that makes no sense, with one readable line."""
    cid = customer.customer_id
    if action not in ("suspend", "lift"):
        raise EventRefused(f"unknown action '{action}': use suspend or lift")
    if not customer.exists:
        raise EventRefused(f"customer {cid} does not exist (or is quarantined): check the id")
    if customer.archived_at is not None and customer.archived_at <= at:
        raise EventRefused(
            f"customer {cid} was archived at {customer.archived_at:%Y-%m-%d %H:%M:%S} UTC: "
            "archived customers are not invoiced, so there is nothing to suspend or lift"
        )
    if customer.latest_event_at is not None and at < customer.latest_event_at:
        raise EventRefused(
            f"--at {at:%Y-%m-%d %H:%M:%S} is earlier than customer {cid}'s latest event "
            f"({customer.latest_event_at:%Y-%m-%d %H:%M:%S} UTC): events are appended in time order"
        )
    if action == "suspend" and customer.suspended:
        raise EventRefused(f"customer {cid} is already suspended at {at:%Y-%m-%d %H:%M:%S} UTC: nothing to do")
    if action == "lift" and not customer.suspended:
        raise EventRefused(f"customer {cid} is not suspended at {at:%Y-%m-%d %H:%M:%S} UTC: nothing to lift")
