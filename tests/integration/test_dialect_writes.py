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
