"""What an operator types, checked once for every front door (CLI, DAG Params): dates, instants, ids, actors.

Each check raises InputError with one line that says what is wrong and what to type instead; nothing here
touches a database.  Dates and instants are bounded to what the engine computes (pandas timestamps end in
2262; billing stays well inside): 1900-01-01 .. 2199-12-31.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from .errors import InputError

MIN_DATE, MAX_DATE = date(1900, 1, 1), date(2199, 12, 31)
INT32 = (-(2**31), 2**31 - 1)  # PostgreSQL `integer`; SQLite's integer is 64-bit, the schema's type is not
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
WORD = re.compile(r"[^\W\d_]{2,}")  # two or more letters, any script
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def parse_date(text: str, option: str) -> date:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text or ""):
        raise InputError(f"{option} '{text}' is not a date: use YYYY-MM-DD, e.g. 2026-01-31")
    try:
        value = date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{option} '{text}' is not a real calendar date: check the day and month") from None
    return in_range(value, option)


def in_range(value: date, option: str) -> date:
    if not MIN_DATE <= value <= MAX_DATE:
        raise InputError(
            f"{option} {value} is outside the dates flexbill bills ({MIN_DATE} .. {MAX_DATE}): check the year"
        )
    return value


def parse_instant(text: str | None, now: datetime, option: str = "--at") -> datetime:
    """ISO-8601 instant -> naive UTC; no offset means UTC; empty means `now`."""
    if text is None or str(text).strip() == "":
        return now
    try:
        value = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{option} '{text}' is not a timestamp: use ISO 8601, e.g. 2026-01-31T09:30:00Z") from None
    if value.tzinfo is not None:
        try:
            value = value.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            raise InputError(
                f"{option} '{text}' is outside the dates flexbill bills ({MIN_DATE} .. {MAX_DATE})"
            ) from None
    in_range(value.date(), option)
    return value


def check_actor(actor: str | None, option: str = "--actor") -> str:
    """Who does it: an e-mail address or a full name (two words or more), never an option name or empty."""
    value = (actor or "").strip()
    if not value:
        raise InputError(f"{option} is required: who is doing this (your e-mail, e.g. ana@operator.example)")
    if value.startswith("-"):
        raise InputError(
            f"{option} '{value[:40]}' looks like an option, not a person: give your e-mail "
            f"(e.g. {option} ana@operator.example)"
        )
    if CONTROL.search(value):
        raise InputError(f"{option} holds control characters: give your e-mail (e.g. {option} ana@operator.example)")
    if not EMAIL.search(value) and len(WORD.findall(value)) < 2:
        raise InputError(
            f"{option} '{value[:40]}' does not say who: give your e-mail (ana@operator.example) or your "
            "full name, as the audit trail keeps it"
        )
    return value


def id_fits(value: int) -> bool:
    """Whether an id can exist in an `integer` column (larger ones are simply not there)."""
    return INT32[0] <= int(value) <= INT32[1]
