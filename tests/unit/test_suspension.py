"""Suspension state from the event log, and the checks on manual suspend/lift events."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from flexbill.errors import EventRefused, FlexbillError
from flexbill.suspension import CustomerView, Event, check_manual, is_suspended

T = datetime(2024, 3, 1, 12, 0, 0)
S = timedelta(seconds=1)


def ev(id, at, action, source="manual", customer_id=7):
    return Event(id=id, customer_id=customer_id, occurred_at=at, action=action, source=source)


# --------------------------------------------------------------------------- is_suspended


def test_no_event_means_not_suspended():
    assert is_suspended([], T) is False


def test_suspend_event_suspends_from_just_after_its_instant():
    events = [ev(1, T, "suspend")]
    assert is_suspended(events, T - S) is False
    assert is_suspended(events, T) is False  # strict '<': not yet at the event's own instant
    assert is_suspended(events, T + timedelta(microseconds=1)) is True


def test_lift_takes_effect_just_after_its_instant():
    events = [ev(1, T, "suspend"), ev(2, T + 10 * S, "lift")]
    assert is_suspended(events, T + 10 * S) is True  # the lift is not yet seen at its own instant
    assert is_suspended(events, T + 11 * S) is False


def test_latest_event_by_occurred_at_wins_regardless_of_list_order():
    events = [ev(5, T + 10 * S, "lift"), ev(9, T, "suspend")]  # higher id but earlier
    assert is_suspended(events, T + 20 * S) is False
    events = [ev(5, T + 10 * S, "suspend"), ev(9, T, "lift")]
    assert is_suspended(events, T + 20 * S) is True


def test_events_at_the_same_instant_are_ordered_by_id():
    events = [ev(4, T, "lift"), ev(3, T, "suspend")]
    assert is_suspended(events, T + S) is False  # id 4 (lift) is the latest
    events = [ev(3, T, "lift"), ev(4, T, "suspend")]
    assert is_suspended(events, T + S) is True  # id 4 (suspend) is the latest


def test_events_after_the_instant_are_ignored():
    events = [ev(1, T, "suspend"), ev(2, T + timedelta(days=1), "lift")]
    assert is_suspended(events, T + timedelta(hours=1)) is True


@pytest.mark.parametrize("source", ["manual", "signup", "plan", "crm_stage"])
def test_any_source_of_suspend_suspends(source):
    assert is_suspended([ev(1, T, "suspend", source)], T + S) is True


def test_only_a_lift_ends_a_suspension_later_automatic_suspends_keep_it():
    events = [
        ev(1, T, "suspend", "manual"),
        ev(2, T + S, "suspend", "signup"),
        ev(3, T + 2 * S, "suspend", "plan"),
        ev(4, T + 3 * S, "suspend", "crm_stage"),
    ]
    assert is_suspended(events, T + timedelta(days=365)) is True
    events.append(ev(5, T + 4 * S, "lift"))
    assert is_suspended(events, T + 5 * S) is False


def test_suspension_after_a_lift_suspends_again():
    events = [ev(1, T, "suspend", "signup"), ev(2, T + S, "lift"), ev(3, T + 2 * S, "suspend", "crm_stage")]
    assert is_suspended(events, T + 2 * S) is False
    assert is_suspended(events, T + 3 * S) is True


# --------------------------------------------------------------------------- check_manual

LATEST = T - timedelta(days=1)


def view(exists=True, archived_at=None, suspended=False, latest_event_at=LATEST, customer_id=42):
    return CustomerView(
        customer_id=customer_id,
        exists=exists,
        archived_at=archived_at,
        suspended=suspended,
        latest_event_at=latest_event_at,
    )


def refusal(action, customer, at=T) -> str:
    with pytest.raises(EventRefused) as err:
        check_manual(action, customer, at)
    msg = str(err.value)
    assert "\n" not in msg and msg.strip() == msg and len(msg) > 20  # one readable line
    return msg


def test_suspend_of_an_active_customer_is_accepted():
    assert check_manual("suspend", view(suspended=False), T) is None


def test_lift_of_a_suspended_customer_is_accepted():
    assert check_manual("lift", view(suspended=True), T) is None


def test_event_for_a_customer_with_no_previous_event_is_accepted():
    assert check_manual("suspend", view(latest_event_at=None), T) is None


def test_event_at_the_same_instant_as_the_latest_event_is_accepted():
    assert check_manual("lift", view(suspended=True, latest_event_at=T), T) is None


def test_event_before_a_future_archival_is_accepted():
    assert check_manual("suspend", view(archived_at=T + timedelta(days=3)), T) is None


@pytest.mark.parametrize("action", ["suspend", "lift"])
def test_unknown_customer_is_refused(action):
    msg = refusal(action, view(exists=False, customer_id=999))
    assert "999" in msg and "does not exist" in msg


@pytest.mark.parametrize("action, suspended", [("suspend", False), ("lift", True)])
def test_archived_customer_is_refused(action, suspended):
    msg = refusal(action, view(archived_at=T - timedelta(hours=2), suspended=suspended))
    assert "42" in msg and "archived" in msg
    assert "2024-03-01 10:00:00" in msg  # when it was archived


def test_customer_archived_at_the_event_instant_is_refused():
    msg = refusal("suspend", view(archived_at=T))
    assert "archived" in msg


def test_suspend_of_an_already_suspended_customer_is_refused():
    msg = refusal("suspend", view(suspended=True))
    assert "42" in msg and "already suspended" in msg


def test_lift_of_a_customer_who_is_not_suspended_is_refused():
    msg = refusal("lift", view(suspended=False))
    assert "42" in msg and "not suspended" in msg and "nothing to lift" in msg


@pytest.mark.parametrize("action, suspended", [("suspend", False), ("lift", True)])
def test_at_earlier_than_the_latest_event_is_refused(action, suspended):
    msg = refusal(action, view(suspended=suspended, latest_event_at=T + S), at=T)
    assert "--at" in msg and "earlier" in msg and "latest event" in msg
    assert "2024-03-01 12:00:00" in msg and "2024-03-01 12:00:01" in msg  # both instants shown


def test_unknown_action_is_refused():
    msg = refusal("unsuspend", view())
    assert "unsuspend" in msg and "suspend or lift" in msg


def test_refusal_is_a_flexbill_error():
    with pytest.raises(FlexbillError):
        check_manual("lift", view(suspended=False), T)
