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
