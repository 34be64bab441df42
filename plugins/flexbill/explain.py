"""`flexbill explain --contract ID --date D`: why a contract was, or was not, billed on D.  Reads only.

For each period of the contract that starts on or before D (computed by the reference rules of
`flexbill.periods`), the answer names the invoice line that bills it (the invoice's number, or "draft",
and its billing date) or why there is none: invoiced outside flexbill (before next_invoice_date), the
customer suspended (since when, by which event: source, actor, reason), archived, the contract quarantined
(and why), billed on a later date, or credited and not yet billed again.  It also lists the periods'
credit history (credited by which credit note, re-billed by which invoice) and the next period not yet due.

`as_dict` is the stable JSON form (documented in docs/data-contract.md, "explain").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from . import periods as P
from .clock import cutoff_of
from .db import schema as s
from .errors import InputError
from .suspension import Event, is_suspended

JSON_VERSION = 1


@dataclass
class Suspension:
    since: str  # ISO instant of the suspending event
    event_id: int
    source: str
    actor: str | None
    reason: str | None
    trigger_key: str | None


@dataclass
class PeriodLine:
    period_start: str
    period_end: str
    amount: str | None  # what the period costs at the contract's terms (Decimal as text), if computable
    state: str  # billed | billed_earlier | billed_later | not_billed | before_flexbill | credited_owed
    why: str  # one sentence for a person
    billing_date: str | None = None  # of the live line's invoice
    invoice_id: str | None = None
    invoice_number: str | None = None  # null while the invoice is a draft
    invoice_status: str | None = None  # draft | finalized
    credited: list = field(default_factory=list)  # [{invoice_id, invoice_number, billing_date, credit_note}]


@dataclass
class Explanation:
    version: int
    contract_id: int
    billing_date: str
    verdict: str  # billed | skipped_suspended | skipped_archived | quarantined | nothing_due | billed_elsewhere
    summary: str
    customer_id: int | None
    plan_id: int | None
    location_id: int | None
    start_date: str | None
    cancellation_date: str | None
    next_invoice_date: str | None
    run: dict  # status of D's latest run: published | failed
    customer: dict  # archived_at, suspended, suspension (Suspension or null)
    quarantine: (
        list  # [{source_table, row_id, reason}] of D concerning this contract (its own row, or what it depends on)
    )
    skipped: dict | None  # D's skipped_contracts row: reason, owed_periods, owed_amount
    periods: list  # [PeriodLine]
    next_period: dict | None  # {start, why} the first period after D, when there is one

    def as_dict(self) -> dict:
        return asdict(self)


def _iso(value) -> str | None:
    if value is None:
        return None
    return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()


def _date(value) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _stamp(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def explain(engine: Engine, contract_id: int, d: date) -> Explanation:
    with engine.connect() as conn:
        return _explain(conn, contract_id, d)


def _row(conn: Connection, table, row_id) -> dict | None:
    """One source row, typed as a run reads it (a malformed value is missing, never an exception)."""
    import pandas as pd

    from .db import extract

    if row_id is None or pd.isna(row_id):
        return None
    frame = extract.read_table(conn, table, where=table.c.id == int(row_id))
    if frame.empty:
        return None
    return {
        k: (None if not isinstance(v, (list, dict)) and pd.isna(v) else v) for k, v in frame.iloc[0].to_dict().items()
    }


def _explain(conn: Connection, contract_id: int, d: date) -> Explanation:
    from .inputs import id_fits

    c = _row(conn, s.contracts, contract_id) if id_fits(contract_id) else None
    if c is None:
        raise InputError(f"contract {contract_id} does not exist: check the id (contracts.id)")
    run = conn.execute(select(s.billing_runs).where(s.billing_runs.c.billing_date == d)).mappings().first()
    if run is None:
        raise InputError(
            f"{d} has no billing run: nothing to explain yet; run `flexbill run --date {d}` "
            f"(or `--dry-run` to preview it) first"
        )
    cutoff = cutoff_of(d)
    customer = _row(conn, s.customers, c["customer_id"])
    plan = _row(conn, s.plans, c["plan_id"])
    q = s.quarantine
    bad = [
        dict(r._mapping)
        for r in conn.execute(
            select(q.c.source_table, q.c.row_id, q.c.reason).where(q.c.billing_date == d).order_by(q.c.source_table)
        )
    ]
    mine = [
        r
        for r in bad
        if (r["source_table"], r["row_id"])
        in {("contracts", contract_id), ("customers", c["customer_id"]), ("plans", c["plan_id"])}
        or (customer is not None and (r["source_table"], r["row_id"]) == ("locations", customer["location_id"]))
    ]
    held_events = {r["row_id"] for r in bad if r["source_table"] == "suspension_events"}
    k = s.skipped_contracts
    skip = (
        conn.execute(
            select(k.c.reason, k.c.owed_periods, k.c.owed_amount).where(
                k.c.billing_date == d, k.c.contract_id == contract_id
            )
        )
        .mappings()
        .first()
    )

    state = _customer_state(conn, _int(c["customer_id"]), customer, cutoff, held_events)
    lines = _lines(conn, contract_id)
    created = _stamp(c["created_at"])
    exists_for_d = created is not None and created < cutoff
    terms, unit, quantity = _terms(c, plan)
    rows: list[PeriodLine] = []
    next_period = None
    if terms is not None and not any(r["source_table"] == "contracts" for r in mine):
        try:
            computed = list(P.periods(terms, d))
            following = P.next_period_start(terms, d)
        except (ValueError, OverflowError):
            computed, following = [], None
        for p in computed:
            amount = str(p.amount(unit, quantity)) if unit is not None and quantity is not None else None
            rows.append(_period(p.start, p.end, amount, terms, lines, d, state, skip, exists_for_d))
        cancel = terms.cancellation_date
        if following is not None and (cancel is None or following < cancel):
            next_period = {
                "start": following.isoformat(),
                "why": f"not yet due: it starts on {following}, so the run of {following} bills it",
            }
        elif cancel is not None:
            next_period = {
                "start": None,
                "why": f"cancelled: the contract ends on {cancel}, no period starts on or after it",
            }
    seen = {r.period_start for r in rows}
    for key in sorted(lines):  # lines flexbill holds for periods the rules no longer give
        if key[0].isoformat() not in seen and key[0] <= d:
            rows.append(_period(key[0], key[1], None, None, lines, d, state, skip, exists_for_d))
    rows.sort(key=lambda r: r.period_start)

    verdict, summary = _verdict(contract_id, d, rows, mine, skip, state, exists_for_d)
    return Explanation(
        version=JSON_VERSION,
        contract_id=contract_id,
        billing_date=d.isoformat(),
        verdict=verdict,
        summary=summary,
        customer_id=_int(c["customer_id"]),
        plan_id=_int(c["plan_id"]),
        location_id=_int(customer["location_id"]) if customer is not None else None,
        start_date=_iso(_date(c["start_date"])),
        cancellation_date=_iso(_date(c["cancellation_date"])),
        next_invoice_date=_iso(_date(c["next_invoice_date"])),
        run={"status": run["status"], "published_at": _iso(_stamp(run["published_at"])), "message": run["message"]},
        customer=state,
        quarantine=mine,
        skipped=None
        if skip is None
        else {
            "reason": skip["reason"],
            "owed_periods": int(skip["owed_periods"]),
            "owed_amount": str(Decimal(str(skip["owed_amount"])).quantize(Decimal("0.01"))),
        },
        periods=rows,
        next_period=next_period,
    )


def _int(value) -> int | None:
    return None if value is None else int(value)


def _terms(c, plan):
    try:
        if plan is None or c["start_date"] is None:
            return None, None, None
        every_months, every_weeks = int(plan["invoice_every_months"] or 0), int(plan["invoice_every_weeks"] or 0)
        terms = P.Terms(
            start_date=_date(c["start_date"]),
            every_months=every_months,
            every_weeks=every_weeks,
            billing_day=_int(c["billing_day"]),
            cancellation_date=_date(c["cancellation_date"]),
            next_invoice_date=_date(c["next_invoice_date"]),
        )
        cents = c["price_cents"] if c["price_cents"] is not None else plan["price_cents"]
        unit = None if cents is None else Decimal(int(cents)).scaleb(-2)
        return terms, unit, _int(c["quantity"])
    except (TypeError, ValueError, ArithmeticError):
        return None, None, None


def _customer_state(conn: Connection, customer_id: int, customer, cutoff: datetime, held: set) -> dict:
    from .db import extract

    e = s.suspension_events
    frame = extract.read_table(conn, e, cutoff, where=e.c.customer_id == customer_id)
    frame = frame[frame["id"].notna() & frame["occurred_at"].notna() & ~frame["id"].isin(list(held))]
    frame = extract.without_voided(conn, frame)  # voided by `flexbill void-event`: never counted
    frame = frame.sort_values(["occurred_at", "id"], kind="stable")  # quarantined events do not count
    rows = [
        {k: (None if v is None or (not isinstance(v, str) and v != v) else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]
    events = [Event(int(r["id"]), customer_id, _stamp(r["occurred_at"]), r["action"], r["source"]) for r in rows]
    suspended = is_suspended(events, cutoff)
    suspension = None
    if suspended:
        last = rows[-1]
        suspension = asdict(
            Suspension(
                since=_iso(_stamp(last["occurred_at"])),
                event_id=int(last["id"]),
                source=last["source"],
                actor=last["actor"],
                reason=last["reason"],
                trigger_key=last["trigger_key"],
            )
        )
    archived = _stamp(customer["archived_at"]) if customer is not None else None
    return {
        "exists": customer is not None,
        "archived_at": _iso(archived),
        "archived": archived is not None and archived < cutoff,
        "suspended": suspended,
        "suspension": suspension,
    }


def _lines(conn: Connection, contract_id: int) -> dict:
    """(period_start, period_end) -> every line of the contract for it, live or credited, oldest first."""
    li, i, cn = s.invoice_lines, s.invoices, s.credit_notes
    rows = conn.execute(
        select(
            li.c.period_start,
            li.c.period_end,
            li.c.amount,
            i.c.invoice_id,
            i.c.number,
            i.c.status,
            i.c.billing_date,
            cn.c.number.label("credit_note"),
        )
        .select_from(li.join(i, i.c.invoice_id == li.c.invoice_id).outerjoin(cn, cn.c.invoice_id == i.c.invoice_id))
        .where(li.c.contract_id == contract_id)
        .order_by(li.c.period_start, i.c.finalized_at, i.c.invoice_id)
    ).all()
    out: dict = {}
    for start, end, amount, invoice_id, number, status, billing_date, note in rows:
        out.setdefault((_date(start), _date(end)), []).append(
            {
                "amount": str(Decimal(str(amount)).quantize(Decimal("0.01"))),
                "invoice_id": invoice_id,
                "invoice_number": number,
                "status": status,
                "billing_date": _date(billing_date),
                "credit_note": note,
            }
        )
    return out


def _period(start: date, end: date, amount, terms, lines: dict, d: date, state: dict, skip, exists_for_d) -> PeriodLine:
    entries = [e for (ps, _), es in lines.items() if ps == start for e in es]
    live = [e for e in entries if e["status"] != "credited"]
    credited = [
        {
            "invoice_id": e["invoice_id"],
            "invoice_number": e["invoice_number"],
            "billing_date": e["billing_date"].isoformat(),
            "credit_note": e["credit_note"],
        }
        for e in entries
        if e["status"] == "credited"
    ]
    row = PeriodLine(
        period_start=start.isoformat(), period_end=end.isoformat(), amount=amount, state="", why="", credited=credited
    )
    history = ""
    if credited:
        history = (
            " Earlier "
            + "; ".join(
                f"invoice {c['invoice_number'] or c['invoice_id']} of {c['billing_date']} billed it and was credited by "
                f"credit note {c['credit_note']}"
                for c in credited
            )
            + "."
        )
    if live:
        line = live[0]
        row.billing_date, row.invoice_id = line["billing_date"].isoformat(), line["invoice_id"]
        row.invoice_number, row.invoice_status = line["invoice_number"], line["status"]
        doc = f"invoice {line['invoice_number']}" if line["invoice_number"] else f"draft invoice {line['invoice_id']}"
        if row.amount is None:
            row.amount = line["amount"]
        if line["billing_date"] == d:
            row.state = "billed"
            rebilled = " (re-billed after a correction)" if credited else ""
            row.why = f"billed on {d} by {doc}{rebilled}." + history
        elif line["billing_date"] < d:
            row.state = "billed_earlier"
            row.why = f"billed on {line['billing_date']} by {doc}: not owed on {d}." + history
        else:
            row.state = "billed_later"
            row.why = (
                f"billed on a later date, {line['billing_date']}, by {doc}: on {d} it was "
                f"{_not_billed_because(d, state, skip, exists_for_d)}." + history
            )
        return row
    if terms is not None and terms.next_invoice_date is not None and start < terms.next_invoice_date:
        row.state = "before_flexbill"
        row.why = f"invoiced outside flexbill: it starts before next_invoice_date {terms.next_invoice_date}."
        return row
    row.state = "credited_owed" if credited else "not_billed"
    row.why = f"not billed: {_not_billed_because(d, state, skip, exists_for_d)}; it stays owed." + history
    return row


def _not_billed_because(d: date, state: dict, skip, exists_for_d: bool) -> str:
    if not exists_for_d:
        return f"not yet recorded (the contract was created after {d}'s cutoff, so that run did not see it)"
    if state["archived"]:
        return f"not billed: the customer was archived at {state['archived_at']} UTC (archived customers are never invoiced)"
    if state["suspended"]:
        sp = state["suspension"]
        who = f", actor {sp['actor']}" if sp["actor"] else ""
        why = f", reason: {sp['reason']}" if sp["reason"] else ""
        return (
            f"skipped: the customer was suspended since {sp['since']} UTC by event {sp['event_id']} "
            f"(source {sp['source']}{who}{why})"
        )
    if skip is not None:
        return f"skipped ({skip['reason']})"
    return "not billed by the run of that date (a later run or a rerun bills it)"


def _verdict(
    contract_id: int, d: date, rows: list, quarantine: list, skip, state: dict, exists_for_d
) -> tuple[str, str]:
    on_d = [r for r in rows if r.state == "billed"]
    if quarantine:
        first = quarantine[0]
        return "quarantined", (
            f"contract {contract_id} was not billed on {d}: quarantined "
            f"({first['source_table']} {first['row_id']}: {first['reason']})"
        )
    if on_d:
        return "billed", f"contract {contract_id} was billed on {d}: {len(on_d)} period{'s' * (len(on_d) != 1)}"
    if not exists_for_d:
        return "not_recorded", f"contract {contract_id} did not exist for the run of {d} (created after its cutoff)"
    if skip is not None:
        reason = _not_billed_because(d, state, skip, exists_for_d)
        return f"skipped_{skip['reason']}", (
            f"contract {contract_id} owed {skip['owed_periods']} period(s) on {d} and was {reason}"
        )
    if any(r.state == "billed_later" for r in rows):
        return (
            "billed_elsewhere",
            f"contract {contract_id} had nothing to bill on {d}: its periods are billed on other dates",
        )
    return "nothing_due", f"contract {contract_id} had nothing due on {d}"
