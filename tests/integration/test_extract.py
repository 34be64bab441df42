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
