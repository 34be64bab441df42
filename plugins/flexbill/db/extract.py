"""Reading the operator's source tables as of a run's cutoff, into typed DataFrames.

Money, dates and timestamps are read as text and parsed here, the same way on
both databases: money becomes exact integer cents in `<col>_cents` (never float; tax_rate
becomes `tax_rate_e4`, ten-thousandths), timestamps
become naive UTC (an offset, where SQLite holds one, is converted), and a value
that does not parse becomes missing with its raw text kept in `<col>__raw`, so
validation can quarantine the row with a reason instead of crashing.  PostgreSQL,
whose columns are typed, sends money, dates and booleans as exact integers instead
(`_encoded`: no text per value); whatever falls outside that encoding still comes
as text and is parsed as above, so both paths give the same frame.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, InvalidOperation

import numpy as np
import pandas as pd
from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Integer,
    Numeric,
    Table,
    Text,
    case,
    cast,
    func,
    literal,
    literal_column,
    null,
    select,
)
from sqlalchemy.engine import Connection

from . import dialect, schema

# The column that says when a row came into existence: rows at or after the
# cutoff do not exist for the run.
AS_OF = {
    "customers": "created_at",
    "contracts": "created_at",
    "suspension_events": "occurred_at",
    "crm_stage_entries": "entered_at",
}
# Columns no billing step reads: a run's snapshot leaves them out (names and e-mails are only shown
# for the few customers on the finance report's portal list, which reads them by id). A required one
# (full_name) is read as '' or null, so a missing value is still quarantined.
NOT_IN_SNAPSHOT = {"customers": ("full_name", "email")}
TRUE_TEXT = {"1", "true", "t", "yes", "y"}
FALSE_TEXT = {"0", "false", "f", "no", "n"}


def _scaled(raw: pd.Series, scale: int) -> tuple[pd.Series, pd.Series]:
    """Text -> exact integers of 10^-scale units (cents for money), and a 'malformed' mask."""
    values, bad = [], []
    factor = Decimal(10) ** scale
    for text in raw.tolist():
        if text is None or text != text:  # None, or NaN from a CSV read
            values.append(None)
            bad.append(False)
            continue
        try:
            number = Decimal(str(text).strip()) * factor
            if not number.is_finite() or number != number.to_integral_value():
                raise InvalidOperation
            values.append(int(number))
            bad.append(False)
        except (InvalidOperation, ValueError):
            values.append(None)
            bad.append(True)
    return pd.Series(values, index=raw.index, dtype=object), pd.Series(bad, index=raw.index)


def _parse_text(raw: pd.Series, kind) -> tuple[pd.Series, pd.Series]:
    """A column read as text -> its typed values and a 'malformed' mask."""
    if isinstance(kind, Numeric):
        return _scaled(raw, kind.scale or 0)
    if isinstance(kind, DateTime):
        parsed = pd.to_datetime(raw, errors="coerce", utc=True, format="ISO8601")
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[us]")
        return parsed, raw.notna() & parsed.isna()
    if isinstance(kind, Date):
        parsed = pd.to_datetime(raw, errors="coerce", format="ISO8601").astype("datetime64[s]")
        # a date column holding a time of day is malformed for billing
        bad = raw.notna() & (parsed.isna() | (parsed != parsed.dt.normalize()))
        return parsed.where(~bad), bad
    if isinstance(kind, Boolean):
        lowered = raw.map(lambda v: None if v is None else str(v).strip().lower())
        parsed = lowered.map(lambda v: True if v in TRUE_TEXT else (False if v in FALSE_TEXT else None))
        return parsed, raw.notna() & parsed.isna()
    if isinstance(kind, Integer):
        parsed = pd.to_numeric(raw, errors="coerce")
        whole = parsed.isna() | (parsed == np.floor(parsed.fillna(0)))
        bad = (raw.notna() & parsed.isna()) | ~whole
        return parsed.where(~bad).astype("Int64"), bad
    return raw.astype(object).where(raw.notna(), None), pd.Series(False, index=raw.index)


# PostgreSQL reads money, dates and booleans as integers (see _encoded): no text per value. Dates are encoded
# within these years only, where pandas' text parser gives every value (outside them, and for infinity or a NaN
# amount, the value comes as text and goes through _parse_text, as on SQLite). Timestamps stay text: pandas
# parses them in C, and extract(epoch ...) costs the server more than that saves.
ENCODED_YEARS = (1700, 2200)
AS_TEXT = "__text"  # the column beside an encoded one: the value's text where it is not encoded, else null
# Rows per part of a source table's read (read_table): a part's raw values are what the read holds beside the
# typed table (~60 MB for 250k contracts)
READ_ROWS = 250_000


def _encodable(kind) -> bool:
    return isinstance(kind, (Numeric, Date, Boolean))  # a DateTime is not a Date in SQLAlchemy


def _encoded(column) -> tuple:
    """PostgreSQL: (the column as an integer, its text where it is not encoded). Money and other NUMERIC(p, s):
    exact units of 10^-s (cents), while whole and within int64; dates: days since 1970-01-01; booleans: 0 or 1."""
    if isinstance(column.type, Boolean):
        return cast(column, Integer), null()
    if isinstance(column.type, Numeric):
        scaled = column * literal_column(str(10 ** (column.type.scale or 0)))
        ok = (scaled == func.trunc(scaled)) & (func.abs(scaled) < literal_column(str(10**18)))
        number = cast(scaled, BigInteger)
    else:  # a date
        first, last = ENCODED_YEARS
        number = column - literal(date(1970, 1, 1), Date)
        ok = (column >= literal(date(first, 1, 1), Date)) & (column < literal(date(last + 1, 1, 1), Date))
    return case((ok, number), else_=null()), case((column.is_not(None) & ~ok, cast(column, Text)), else_=null())


def _decoded(number: pd.Series, kind) -> pd.Series:
    """The values of an encoded column (Int64; missing where null or not encoded), as _parse_text types them."""
    missing = number.isna().to_numpy()
    if isinstance(kind, Numeric):
        return pd.Series(number.to_numpy(dtype=object, na_value=None), index=number.index, dtype=object)
    if isinstance(kind, Boolean):
        values = number.to_numpy(dtype="int64", na_value=0) != 0
        if not missing.any():  # bool, as mapping the text gives it when nothing is missing
            return pd.Series(values, index=number.index)
        values = np.array(values.tolist(), dtype=object)  # Python bools and None
        values[missing] = None
        return pd.Series(values, index=number.index, dtype=object)
    values = number.to_numpy(dtype="int64", na_value=0).astype("datetime64[D]")  # a date
    values[missing] = np.datetime64("NaT")
    return pd.Series(values.astype("datetime64[s]"), index=number.index)


def _parse(df: pd.DataFrame, columns: list) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    for column in columns:
        kind = column.type
        if f"{column.name}{AS_TEXT}" in df.columns:  # encoded (PostgreSQL)
            raw = df[f"{column.name}{AS_TEXT}"]
            parsed, bad = _decoded(df[column.name], kind), pd.Series(False, index=df.index)
            odd = raw.notna()
            if odd.any():  # values outside the encoded range: parsed from their text, as everywhere else
                parsed[odd], bad[odd] = _parse_text(raw[odd], kind)
        else:
            raw = df[column.name]
            parsed, bad = _parse_text(raw, kind)
        out[parsed_name(column)] = parsed  # exact integers for money: price_cents, tax_rate_e4
        if bad.any():
            out[f"{column.name}__raw"] = raw.where(bad)
    return out


def read_table(
    conn: Connection,
    table: Table,
    cutoff: datetime | None = None,
    where=None,
    skip: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """One source table, typed (less the columns in `skip`; with `only`, just those columns, for a reader that
    validates nothing); rows born at or after `cutoff` are left out."""
    # a skipped column that is required is still read as present ('') or missing (null), for validation
    wanted = [c for c in table.columns if c.name not in skip or not c.nullable]
    if only is not None:  # the instant the cutoff compares stays read
        wanted = [c for c in wanted if c.name in only or c.name == AS_OF.get(table.name)]
    encode = conn.dialect.name == "postgresql"
    columns, dtypes = [], {}
    for c in wanted:
        dtypes[c.name] = "Int64" if isinstance(c.type, Integer) else object
        if c.name in skip:
            columns.append(case((c.is_(None), null()), else_=literal("")).label(c.name))
        elif encode and _encodable(c.type):
            number, as_text = _encoded(c)
            columns += [number.label(c.name), as_text.label(f"{c.name}{AS_TEXT}")]
            dtypes[c.name], dtypes[f"{c.name}{AS_TEXT}"] = "Int64", object
        elif isinstance(c.type, (Numeric, Date, DateTime, Boolean)):
            columns.append(cast(c, Text).label(c.name))
        else:
            columns.append(c)
    stmt = select(*columns)
    if where is not None:
        stmt = stmt.where(where)
    when = AS_OF.get(table.name)
    parts = []
    # PostgreSQL: COPY and pandas' C reader (integers typed there); SQLite: fetched rows. Each part is typed and
    # cut at the cutoff before the next is read: only one part's raw values are held at a time
    for raw in dialect.read_frames(conn, stmt, dtypes=dtypes, rows=READ_ROWS):
        df = _parse(raw, wanted)
        del raw
        if cutoff is not None and when is not None:
            # a row whose instant is unreadable stays visible: validation quarantines it
            df = df[~(df[when] >= pd.Timestamp(cutoff))]
        parts.append(df)
    df = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    del parts
    # the columns in the order one part gives them: a `__raw` column right after its value, where any part has one
    names = [n for c in wanted for n in (parsed_name(c), f"{c.name}__raw") if n in df.columns]
    return df[names].reset_index(drop=True)


def parsed_name(column) -> str:
    """The frame's name for a source column: money and other NUMERIC(p, s) as exact integers (price_cents,
    tax_rate_e4), everything else by its own name."""
    kind = column.type
    if isinstance(kind, Numeric):
        return f"{column.name}_cents" if (kind.scale or 0) == 2 else f"{column.name}_e{kind.scale or 0}"
    return column.name


def snapshot(
    conn: Connection, cutoff: datetime, columns: dict[str, tuple[str, ...]] | None = None
) -> dict[str, pd.DataFrame]:
    """Every source table as the world was at `cutoff` (less the columns in NOT_IN_SNAPSHOT), or only the tables
    and columns `columns` names (table -> column names: what a reader that validates nothing needs)."""
    if columns is None:
        return {t.name: read_table(conn, t, cutoff, skip=NOT_IN_SNAPSHOT.get(t.name, ())) for t in schema.SOURCE_TABLES}
    return {
        t.name: read_table(conn, t, cutoff, only=columns[t.name]) for t in schema.SOURCE_TABLES if t.name in columns
    }


def without_voided(conn: Connection, events: pd.DataFrame) -> pd.DataFrame:
    """Suspension events less those voided by `flexbill void-event` (event_voids): no run or check counts them."""
    voided = set(conn.execute(select(schema.event_voids.c.event_id)).scalars())
    if not voided or events.empty:
        return events
    return events[~events["id"].isin(list(voided))].reset_index(drop=True)
