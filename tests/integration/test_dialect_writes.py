"""flexbill's bulk writes store what SQLAlchemy's own insert stores (SQLite binds dates itself, for speed)."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd
import pytest
from sqlalchemy import Column, Date, DateTime, Integer, MetaData, Table

from flexbill.db import dialect
from flexbill.db.connect import make_engine


def _tables():
    md = MetaData()
    columns = lambda: [Column("k", Integer, primary_key=True), Column("d", Date), Column("at", DateTime)]  # noqa: E731
    return md, Table("ours", md, *columns()), Table("sqlalchemys", md, *columns())


def test_sqlite_dates_are_stored_as_sqlalchemy_stores_them(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/dates.sqlite")
    md, ours, theirs = _tables()
    md.create_all(engine)
    days = [date(2026, 11, 1), datetime(2026, 2, 28, 23, 59), pd.Timestamp("2024-02-29 12:00"), date(1, 1, 9), None]
    at = [datetime(2026, 11, 1, 6, 30, 1, 250), None, datetime(1999, 12, 31), None, datetime(2026, 1, 1)]
    frame = pd.DataFrame({"k": range(len(days)), "d": pd.Series(days, dtype=object), "at": pd.Series(at, dtype=object)})
    typed = pd.DataFrame(  # the datetime64 path too (numpy gives the dates)
        {"k": range(10, 13), "d": pd.to_datetime(["2026-11-01", None, "2026-12-31"]), "at": pd.to_datetime([None] * 3)}
    )
    with engine.begin() as conn:
        dialect.insert_frame(conn, ours, frame)
        dialect.insert_frame(conn, ours, typed)
        rows = [
            {"k": k, "d": d.date() if isinstance(d, datetime) else d, "at": a}
            for k, d, a in zip(range(len(days)), days, at)
        ] + [
            {"k": 10, "d": date(2026, 11, 1), "at": None},
            {"k": 11, "d": None, "at": None},
            {"k": 12, "d": date(2026, 12, 31), "at": None},
        ]
        conn.execute(theirs.insert(), rows)
        stored = conn.exec_driver_sql("SELECT k, d, at, typeof(d) FROM ours ORDER BY k").all()
        expected = conn.exec_driver_sql("SELECT k, d, at, typeof(d) FROM sqlalchemys ORDER BY k").all()
    assert stored == expected
    assert stored[0][1] == "2026-11-01" and stored[3][1] == "0001-01-09" and stored[1][1] == "2026-02-28"


def test_sqlite_refuses_text_in_a_date_column_as_sqlalchemy_does(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/text.sqlite")
    md, ours, theirs = _tables()
    md.create_all(engine)
    with engine.begin() as conn:
        with pytest.raises(TypeError):
            dialect.insert_frame(conn, ours, pd.DataFrame({"k": [1], "d": pd.Series(["2026-11-01"], dtype=object)}))
        with pytest.raises(Exception, match="SQLite Date type only accepts Python date objects"):
            conn.execute(theirs.insert(), [{"k": 1, "d": "2026-11-01"}])


CENTS = [0, 1, 5, 10, 99, 100, 101, 1234, -1, -5, -1234, 999_999_999_999, -(10**15) + 1, 10**16 - 1, 2**53 + 1, None]


def test_money_given_as_cents_is_stored_as_sqlalchemy_stores_its_decimal(db_url):
    """insert_frame takes a money column as integer cents (`<name>_cents`): without a Decimal per value, it must
    store exactly what SQLAlchemy's own insert of `money.from_cents(c)` stores (SQLite: a REAL; PostgreSQL: the
    NUMERIC)."""
    from decimal import Decimal

    from sqlalchemy import Numeric

    from flexbill.money import from_cents

    engine = make_engine(db_url)
    db = engine.dialect.name
    md = MetaData()
    columns = lambda: [Column("k", Integer, primary_key=True), Column("amount", Numeric(20, 2))]  # noqa: E731
    ours, theirs = Table("ours", md, *columns()), Table("sqlalchemys", md, *columns())
    md.create_all(engine)
    as_ints = pd.DataFrame({"k": range(len(CENTS)), "amount_cents": pd.Series(CENTS, dtype=object)})
    as_int64 = pd.DataFrame({"k": range(100, 103), "amount_cents": pd.Series([7, -700, 0], dtype="int64")})
    with engine.begin() as conn:
        dialect.insert_frame(conn, ours, as_ints)
        dialect.insert_frame(conn, ours, as_int64)
        conn.execute(
            theirs.insert(),
            [{"k": k, "amount": None if c is None else from_cents(c)} for k, c in enumerate(CENTS)]
            + [{"k": 100 + i, "amount": from_cents(c)} for i, c in enumerate([7, -700, 0])],
        )
        cast = "quote(amount)" if db == "sqlite" else "amount::text"
        stored = conn.exec_driver_sql(f"SELECT k, {cast} FROM ours ORDER BY k").all()
        expected = conn.exec_driver_sql(f"SELECT k, {cast} FROM sqlalchemys ORDER BY k").all()
    engine.dispose()
    assert stored == expected and len(stored) == len(CENTS) + 3
    if db == "postgresql":  # exact to the cent
        assert [Decimal(v) if v is not None else None for _, v in stored[: len(CENTS)]] == [
            None if c is None else from_cents(c) for c in CENTS
        ]


def test_writes_in_slices_store_every_row_once(db_url, monkeypatch):
    """insert_frame, upsert_frame and update_frame turn a frame into Python values and CSV text one slice of
    dialect.WRITE_ROWS rows at a time (bounded memory at 10M): with slices of 3 rows, every row is stored once,
    exactly, fixed values and money given as cents included."""
    from sqlalchemy import Numeric, Text, select

    monkeypatch.setattr(dialect, "WRITE_ROWS", 3)
    engine = make_engine(db_url)
    md = MetaData()
    table = Table(
        "sliced",
        md,
        Column("k", Integer, primary_key=True),
        Column("d", Date),
        Column("amount", Numeric(20, 2)),
        Column("tag", Text),
    )
    md.create_all(engine)
    n = 10
    frame = pd.DataFrame(
        {
            "k": range(n),
            "d": pd.to_datetime([f"2026-11-{i + 1:02d}" for i in range(n)]),
            "amount_cents": pd.Series([i * 101 - 5 for i in range(n)], dtype="int64"),
        }
    )
    with engine.begin() as conn:
        assert dialect.insert_frame(conn, table, frame, {"tag": "new"}) == n
        dialect.upsert_frame(  # keys 7..13, in three slices: three of them exist
            conn,
            table,
            pd.DataFrame({"k": [8, 10, 11, 9, 12, 13, 7], "tag": ["a", "c", "d", "e", "f", "g", "h"]}),
            ["k"],
        )
        assert dialect.update_frame(conn, table, pd.DataFrame({"k": [0, 4, 7, 13]}), "k", {"tag": "upd"}) == 4
        rows = conn.execute(select(table).order_by(table.c.k)).all()
    engine.dispose()
    from decimal import Decimal

    want_tag = {0: "upd", 4: "upd", 7: "upd", 8: "a", 9: "e", 10: "c", 11: "d", 12: "f", 13: "upd"}  # 13 upserted
    assert [r.k for r in rows] == list(range(14))
    assert [r.tag for r in rows] == [want_tag.get(k, "new") for k in range(14)]
    assert [r.d for r in rows[:n]] == [date(2026, 11, i + 1) for i in range(n)]
    assert [Decimal(str(r.amount)) for r in rows[:n]] == [Decimal(i * 101 - 5) / 100 for i in range(n)]
