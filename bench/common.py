"""What the benchmark's scripts share: the measured dates, database URLs, creation and sizes."""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VAR = ROOT / "var" / "bench"
PG_ADMIN_URL = os.environ.get("FLEXBILL_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

# The two measured billing dates: a first-of-month date (billing-day-1 contracts, the month's peak) and a
# mid-month date (anniversaries on the 17th and weekly plans only).
FIRST_OF_MONTH = date(2026, 11, 1)
MID_MONTH = date(2026, 11, 17)
DATES = {"first-of-month": FIRST_OF_MONTH, "mid-month": MID_MONTH}
SEED = 20261101


def parse_size(text: str) -> int:
    """'100k' -> 100000, '1m' -> 1000000, '2500' -> 2500."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", text)
    if not m:
        raise ValueError(f"'{text}' is not a size: use e.g. 100k, 1m or 2500")
    factor = {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()]
    return int(float(m.group(1)) * factor)


def size_label(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def pg_name(n: int) -> str:
    return f"flexbill_bench_{size_label(n)}"


def pg_url(n: int) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{pg_name(n)}"


def sqlite_path(n: int) -> Path:
    return VAR / f"flexbill_bench_{size_label(n)}.sqlite"


def url_for(db: str, n: int) -> str:
    if db == "postgresql":
        return pg_url(n)
    if db == "sqlite":
        return f"sqlite:///{sqlite_path(n)}"
    raise ValueError(f"unknown database kind '{db}': postgresql or sqlite")


def is_pg(url: str) -> bool:
    return url.startswith("postgresql")


def pg_connect(url: str, autocommit: bool = False):
    """A psycopg 3 connection for a SQLAlchemy-style postgresql:// URL."""
    import psycopg

    return psycopg.connect(re.sub(r"^postgresql\+\w+://", "postgresql://", url), autocommit=autocommit)


def create_fresh(db: str, n: int) -> str:
    """Drop (if present) and create the benchmark database of size n; returns its URL."""
    if db == "postgresql":
        with pg_connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{pg_name(n)}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{pg_name(n)}"')
    else:
        path = sqlite_path(n)
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return url_for(db, n)


def drop(db: str, n: int) -> None:
    if db == "postgresql":
        with pg_connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{pg_name(n)}" WITH (FORCE)')
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{sqlite_path(n)}{suffix}").unlink(missing_ok=True)


def disk_bytes(db: str, n: int) -> int:
    if db == "postgresql":
        with pg_connect(PG_ADMIN_URL, autocommit=True) as conn:
            return int(conn.execute("select pg_database_size(%s)", (pg_name(n),)).fetchone()[0])
    return sum(
        Path(f"{sqlite_path(n)}{s}").stat().st_size
        for s in ("", "-wal", "-shm")
        if Path(f"{sqlite_path(n)}{s}").exists()
    )


def load() -> str:
    """The machine's load averages (1, 5, 15 min), as `uptime` shows them."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"
