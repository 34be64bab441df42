"""What must hold of invoices and credit notes at any time, whatever ran (contract v2, "Invoice lifecycle").

`assert_documents_consistent(engine)` is called by the lifecycle tests after every step and by the fault
suite after every fault: it reads the tables and fails with the first broken rule.
"""

from __future__ import annotations

import re
from collections import defaultdict
from decimal import Decimal

from sqlalchemy import select, text

from flexbill.db import schema as s


def documents(engine) -> dict:
    with engine.connect() as conn:
        invoices = [dict(r._mapping) for r in conn.execute(select(s.invoices))]
        lines = [dict(r._mapping) for r in conn.execute(select(s.invoice_lines))]
        notes = [dict(r._mapping) for r in conn.execute(select(s.credit_notes))]
        billed = {
            tuple(r)
            for r in conn.execute(
                select(s.billed_periods.c.contract_id, s.billed_periods.c.period_start, s.billed_periods.c.invoice_id)
            )
        }
        series = {(r.location_id, r.series): r.last_seq for r in conn.execute(select(s.number_series))}
    return {"invoices": invoices, "lines": lines, "credit_notes": notes, "billed": billed, "series": series}


def _gapless(numbers: list[str], pattern: str) -> dict:
    """location -> sorted sequence numbers, checking each is 1..n."""
    by_location = defaultdict(list)
    for n in numbers:
        m = re.fullmatch(pattern, n)
        assert m, f"number {n!r} does not have the contract's form"
        by_location[int(m.group(1))].append(int(m.group(2)))
    for location, seqs in by_location.items():
        assert sorted(seqs) == list(range(1, len(seqs) + 1)), f"location {location}: numbers {sorted(seqs)} have gaps"
    return by_location


def assert_documents_consistent(engine) -> dict:
    doc = documents(engine)
    invoices = {i["invoice_id"]: i for i in doc["invoices"]}
    standing = {k for k, i in invoices.items() if i["status"] != "credited"}
    # one live line per (contract, period), and billed_periods is exactly the live lines
    live = [(l["contract_id"], l["period_start"], l["invoice_id"]) for l in doc["lines"] if l["invoice_id"] in standing]
    assert len({(c, p) for c, p, _ in live}) == len(live), "a (contract, period) has two lines that stand"
    assert doc["billed"] == set(live), "billed_periods differs from the lines that stand"
    # one standing invoice per customer and date
    per_day = defaultdict(int)
    for k in standing:
        per_day[(invoices[k]["customer_id"], invoices[k]["billing_date"])] += 1
    assert max(per_day.values(), default=1) == 1, "a customer has two standing invoices on one date"
    # statuses and numbers
    for i in invoices.values():
        assert i["status"] in ("draft", "finalized", "credited")
        assert (i["number"] is None) == (i["status"] == "draft"), f"{i['invoice_id']}: number and status disagree"
        if i["status"] != "draft":
            assert i["finalized_at"] is not None and i["finalized_by"], i
    numbered = [i["number"] for i in invoices.values() if i["number"]]
    assert len(numbered) == len(set(numbered)), "an invoice number is used twice"
    inv_series = _gapless(numbered, r"(\d+)-(\d{6,})")
    note_series = _gapless([n["number"] for n in doc["credit_notes"]], r"(\d+)-C(\d{6,})")
    for loc, seqs in inv_series.items():
        assert doc["series"].get((loc, "invoice")) == len(seqs), "number_series.invoice is not the last number used"
    for loc, seqs in note_series.items():
        assert doc["series"].get((loc, "credit_note")) == len(seqs)
    # credit notes: exactly the credited invoices, each once, for its full amounts
    credited = {k for k, i in invoices.items() if i["status"] == "credited"}
    assert sorted(n["invoice_id"] for n in doc["credit_notes"]) == sorted(credited)
    for n in doc["credit_notes"]:
        old = invoices[n["invoice_id"]]
        for key in ("customer_id", "location_id", "billing_date", "currency"):
            assert n[key] == old[key], (key, n, old)
        for key in ("subtotal", "tax", "total"):
            assert Decimal(str(n[key])) == Decimal(str(old[key])) >= 0, (key, n, old)
    # a corrective invoice replaces a credited invoice of its customer and date
    for i in invoices.values():
        if i["corrects"] is not None:
            old = invoices[i["corrects"]]
            assert old["status"] == "credited" and (old["customer_id"], old["billing_date"]) == (
                i["customer_id"],
                i["billing_date"],
            )
    # lines add up
    sums = defaultdict(Decimal)
    for l in doc["lines"]:
        sums[l["invoice_id"]] += Decimal(str(l["amount"]))
    for k, i in invoices.items():
        assert sums[k] == Decimal(str(i["subtotal"])), f"{k}: lines do not add up to the subtotal"
    return doc


def exact_rows(engine, table: str, key: str) -> dict:
    """Every row of `table` as the database stores it, each column cast to text (byte for byte), by key."""
    with engine.connect() as conn:
        cols = [c["name"] for c in conn.dialect.get_columns(conn, table)]
        cast = (lambda c: f'quote("{c}")') if conn.dialect.name == "sqlite" else (lambda c: f'"{c}"::text')
        rows = conn.execute(text(f'select {", ".join(cast(c) for c in cols)} from "{table}"')).all()
    index = cols.index(key)
    return {r[index]: dict(zip(cols, r)) for r in rows}


def checksum(engine) -> dict:
    """table -> sha256 of every row as the database stores it (sorted), for every table of the database, and
    PostgreSQL's sequences (a rolled-back insert still moves them): "the database did not change"."""
    import hashlib

    from sqlalchemy import inspect

    out = {}
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        for table in sorted(inspect(conn).get_table_names()):
            cols = [c["name"] for c in inspect(conn).get_columns(table)]
            cast = ", ".join(f'quote("{c}")' if sqlite else f"coalesce(\"{c}\"::text, '<null>')" for c in cols)
            rows = sorted(repr(tuple(r)) for r in conn.execute(text(f'select {cast} from "{table}"')))
            out[table] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
        if not sqlite:
            for (name,) in conn.execute(text("select sequencename from pg_sequences")).all():
                out[f"sequence {name}"] = tuple(conn.execute(text(f'select last_value, is_called from "{name}"')).one())
        else:
            out["sqlite_master"] = sorted(
                tuple(r) for r in conn.execute(text("select type, name, sql from sqlite_master"))
            )
    return out
