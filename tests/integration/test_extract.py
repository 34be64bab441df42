"""Reading source tables: PostgreSQL reads through COPY ... TO STDOUT (CSV), SQLite fetches rows; both must
give the same typed frame, whatever the text holds."""

from __future__ import annotations

from datetime import datetime

from flexbill.db import extract
from flexbill.db import schema as s
from flexbill.db.connect import init_db
from tests.builders import Operator

AWKWARD = ['a,"b"\nc', "", "\\N", "NULL", " padded ", "<<flexbill", "naïve — ünïcode", "'; DROP TABLE customers;--"]


def test_text_numbers_and_missing_values_read_back_exactly(engine):
    init_db(engine)
    op = Operator(engine)
    op.location(1)
    for i, _name in enumerate(AWKWARD, start=1):
        op.customer(i, archived_at=datetime(2024, 1, 2, 3, 4, 5) if i % 2 else None)
    with engine.begin() as conn:
        for i, name in enumerate(AWKWARD, start=1):
            conn.execute(s.customers.update().where(s.customers.c.id == i).values(full_name=name))
        conn.execute(s.customers.update().where(s.customers.c.id == 2).values(email=None))
        conn.execute(s.customers.update().where(s.customers.c.id == 3).values(email=""))
    with engine.connect() as conn:
        frame = extract.read_table(conn, s.customers).sort_values("id").reset_index(drop=True)
    assert frame["full_name"].tolist() == AWKWARD
    assert frame.loc[1, "email"] is None and frame.loc[2, "email"] == ""
    assert frame["id"].tolist() == list(range(1, len(AWKWARD) + 1))
    assert frame.loc[0, "archived_at"] == datetime(2024, 1, 2, 3, 4, 5) and frame["archived_at"].isna().tolist() == [
        i % 2 == 0 for i in range(1, len(AWKWARD) + 1)
    ]
    assert "full_name__raw" not in frame.columns  # nothing read as malformed


def test_a_read_larger_than_one_copy_chunk_streams_every_row_in_order(engine):
    """PostgreSQL's reader parses the COPY stream as it arrives (dialect._CopyStream), never the whole text at once:
    rows that straddle chunk boundaries, quoted newlines included, must come back whole."""
    from sqlalchemy import text

    from flexbill.db import dialect

    n = 60_000  # ~3 MB of CSV: many COPY chunks and several of the reader's 1 MiB buffers
    rows = ", ".join(f"({i}, :t{i % 3})" for i in range(n))
    stmt = text(f"WITH v (k, t) AS (VALUES {rows}) SELECT k, t FROM v ORDER BY k")
    values = {"t0": 'a,"b"\nc' * 3, "t1": "ünïcode " * 5, "t2": "x" * 40}
    with engine.connect() as conn:
        frame = dialect.read_frame(conn, stmt, values)
    assert len(frame) == n
    assert [int(k) for k in frame["k"]] == list(range(n))
    assert frame["t"].tolist() == [values[f"t{i % 3}"] for i in range(n)]


def test_the_copy_stream_hands_out_every_byte_across_chunk_boundaries():
    import io

    from flexbill.db.dialect import _CopyStream

    chunks = [b"k,t\n1,", memoryview(b'"a\nb"\n2,'), b"", bytearray(b"c\n"), b"3,d\n"]
    reader = io.BufferedReader(_CopyStream(chunks), buffer_size=4)
    assert reader.read() == b"".join(bytes(c) for c in chunks)
    assert _CopyStream([]).read() == b""


def test_postgresql_integer_encoding_reads_what_the_text_read_gives(pg_database, monkeypatch):
    """PostgreSQL reads money, dates and booleans as integers (extract._encoded), a value outside the encoded range
    as text. Every kind of value, edge and odd ones included, must come back exactly as the text read types it:
    the same frame, dtypes and Python types, and the same malformed marks."""
    from datetime import date

    import pandas as pd
    from sqlalchemy import text

    from flexbill.db.connect import make_engine

    engine = make_engine(pg_database)
    init_db(engine)
    op = Operator(engine)
    op.location(1)
    op.location(2, tax_rate="1.0000")
    op.plan(1, price="0.01")
    op.plan(2, price="99999999.99", location_id=2)
    for i in range(1, 4):
        op.customer(i, portal_access=i != 2, archived_at=datetime(2200, 12, 31, 23, 59, 59, 999999) if i == 3 else None)
    starts = [
        date(1970, 1, 1),
        date(1969, 12, 31),
        date(1700, 1, 1),
        date(2200, 12, 31),
        date(2201, 1, 1),
        date(1699, 12, 31),
        date(2026, 2, 28),
    ]
    prices = [None, "0.00", "-0.01", "12345.67", "9999999999.99", "-9999999999.99", "1.50"]
    for i, (start, price) in enumerate(zip(starts, prices), start=1):
        op.contract(i, customer_id=1 + i % 3, plan_id=1 + i % 2, start_date=start, price=price)
    with engine.begin() as conn:  # what only PostgreSQL holds: infinite dates, a NaN amount
        conn.execute(
            text("update contracts set cancellation_date = 'infinity', next_invoice_date = '-infinity' where id = 2")
        )
        conn.execute(text("update contracts set price = 'NaN' where id = 3"))
    reads = {}
    with engine.connect() as conn:
        for how in ("integers", "text"):
            if how == "text":
                monkeypatch.setattr(extract, "_encodable", lambda kind: False)
            reads[how] = {t.name: extract.read_table(conn, t) for t in (s.locations, s.plans, s.customers, s.contracts)}
    engine.dispose()
    for name, frame in reads["integers"].items():
        other = reads["text"][name]
        pd.testing.assert_frame_equal(frame, other, check_exact=True)
        for column in frame.columns:
            if frame[column].dtype == object:
                assert frame[column].map(type).tolist() == other[column].map(type).tolist(), (name, column)
    contracts = reads["integers"]["contracts"].set_index("id")
    assert contracts.at[5, "price_cents"] == 999999999999 and contracts.at[3, "price_cents"] is None
    assert "price__raw" in contracts.columns and contracts.at[3, "price__raw"] == "NaN"  # quarantined, not billed
    assert contracts.at[5, "start_date"] == pd.Timestamp(2201, 1, 1) and contracts.at[2, "start_date"] == pd.Timestamp(
        1969, 12, 31
    )
    assert contracts.at[2, "cancellation_date__raw"] == "infinity"
    assert reads["integers"]["locations"].set_index("id").at[2, "tax_rate_e4"] == 10000
    assert reads["integers"]["customers"]["portal_access"].tolist() == [True, False, True]


def test_one_readinto_fills_the_buffer_from_many_row_chunks_and_holds_no_view():
    """psycopg yields a chunk per row: a read fills the reader's whole buffer (not one row per call), and what is
    left over is bytes, never a view that would keep libpq's buffer alive."""
    from flexbill.db.dialect import _CopyStream

    rows = [memoryview(f"{i},x\n".encode()) for i in range(100)]
    stream = _CopyStream(rows)
    buffer = bytearray(50)
    assert stream.readinto(buffer) == 50
    assert bytes(buffer) == b"".join(bytes(r) for r in rows)[:50]
    assert type(stream._pending) is bytes


def test_a_table_read_in_parts_is_the_table_read_at_once(engine, monkeypatch):
    """read_table types and cuts each part of a table (extract.READ_ROWS rows) before it reads the next: bounded
    memory at 10M. The parts must join into exactly the frame one read gives: the same rows past the cutoff, dtypes,
    Python types and column order, with a malformed value's `__raw` column where only a later part has one."""
    from datetime import date

    import pandas as pd
    from sqlalchemy import text

    init_db(engine)
    op = Operator(engine)
    op.location(1)
    op.plan(1, price="10.00")
    for i in range(1, 8):
        op.customer(i, portal_access=i % 3 != 0, archived_at=datetime(2024, 5, i) if i % 2 else None)
    for i in range(1, 12):
        born = datetime(2026, 1, 1) if i in (4, 9) else datetime(2024, 1, 1)  # after the cutoff: not read
        op.contract(i, 1 + i % 7, 1, start_date=date(2024, 1, i), price=None if i % 3 else "1.25", created_at=born)
    odd = ("'infinity'", "'NaN'") if engine.dialect.name == "postgresql" else ("'soon'", "'1.2.3'")
    with engine.begin() as conn:  # malformed values only in a middle part and in the last one
        conn.execute(text(f"update contracts set cancellation_date = {odd[0]} where id = 11"))
        conn.execute(text(f"update contracts set price = {odd[1]} where id = 6"))
    cutoff = datetime(2025, 1, 1)
    reads = {}
    with engine.connect() as conn:
        for rows in (0, 1, 2, 3):
            monkeypatch.setattr(extract, "READ_ROWS", rows)
            reads[rows] = {t.name: extract.read_table(conn, t, cutoff) for t in (s.customers, s.contracts)}
    whole = reads[0]
    assert sorted(whole["contracts"]["id"]) == [i for i in range(1, 12) if i not in (4, 9)]
    assert whole["contracts"].columns.tolist().index("cancellation_date__raw") == (
        whole["contracts"].columns.tolist().index("cancellation_date") + 1
    )
    assert whole["contracts"]["price__raw"].notna().sum() == 1
    for rows in (1, 2, 3):
        for name, frame in reads[rows].items():
            pd.testing.assert_frame_equal(frame, whole[name], check_exact=True)
            for column in frame.columns:
                if frame[column].dtype == object:
                    assert frame[column].map(type).tolist() == whole[name][column].map(type).tolist(), (rows, column)


def test_a_query_read_in_parts_yields_full_parts_then_the_rest_and_one_empty_frame_for_no_rows(engine):
    """dialect.read_frames: parts of at most `rows` rows, in order, none empty unless the query has no row (then
    exactly one empty frame with the query's columns), whether or not the row count is a multiple of `rows`."""
    from sqlalchemy import select

    from flexbill.db.dialect import read_frames

    init_db(engine)
    op = Operator(engine)
    op.location(1)
    for i in range(1, 7):
        op.customer(i)
    query = select(s.customers.c.id).order_by(s.customers.c.id)
    with engine.connect() as conn:
        for rows, sizes in ((3, [3, 3]), (4, [4, 2]), (6, [6]), (7, [6]), (0, [6])):
            parts = list(read_frames(conn, query, rows=rows))
            assert [len(p) for p in parts] == sizes, rows
            assert [int(v) for p in parts for v in p["id"]] == list(range(1, 7))
        nothing = list(read_frames(conn, query.where(s.customers.c.id > 99), rows=3))
    assert len(nothing) == 1 and len(nothing[0]) == 0 and nothing[0].columns.tolist() == ["id"]
