"""Time in flexbill's core: the cutoff of a billing date, now (UTC), and the rule that a date is billed only once its
day is over.  Pure: no database, no pandas."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from .errors import InputError


def cutoff_of(billing_date: date) -> datetime:
    """The end of D's data interval, D+1 00:00 UTC (naive UTC): rows at or after it do not exist for the run."""
    return datetime.combine(billing_date, datetime.min.time()) + timedelta(days=1)


def utcnow() -> datetime:
    """Now, as naive UTC (every timestamp flexbill stores is UTC)."""
    return datetime.now(UTC).replace(tzinfo=None)


def check_cutoff(d: date, now: datetime, allow_future: bool, option: str = "--date") -> None:
    """Refuse a billing date whose cutoff (D+1 00:00 UTC) is after `now`: its day is not over, so its data is not
    complete (a contract created tonight would be missed, and nothing would ever bill it on D again)."""
    cutoff = cutoff_of(d)
    if cutoff > now and not allow_future:
        raise InputError(
            f"{option} {d} cannot be billed yet: its cutoff, {cutoff:%Y-%m-%d %H:%M} UTC, is after now "
            f"({now:%Y-%m-%d %H:%M} UTC), so its data is not complete. Bill it from "
            f"{cutoff:%Y-%m-%d %H:%M} UTC on (--allow-future runs it anyway, for tests and demos)"
        )
