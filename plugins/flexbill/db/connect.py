"""Turning --db / FLEXBILL_DB_URL / the embedded default into a SQLAlchemy engine."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from ..errors import DatabaseError
from . import schema

ENV_VAR = "FLEXBILL_DB_URL"
DEFAULT_SQLITE = Path("var") / "flexbill.sqlite"


def default_url() -> str:
    """`FLEXBILL_DB_URL`, else the embedded SQLite file under ./var/."""
    return os.environ.get(ENV_VAR) or f"sqlite:///{DEFAULT_SQLITE}"


def redact(url: str) -> str:
    """The URL with its password hidden, safe for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # not parseable: everything between the user name and the LAST '@' may be password
        scheme, sep, rest = url.partition("://")
        if not sep:
            scheme, rest = "", url
        if "@" not in rest:
            return url
        userinfo, host = rest.rsplit("@", 1)
        user = userinfo.split(":", 1)[0] if ":" in userinfo else userinfo
        return f"{scheme}{sep}{user}:***@{host}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # Autocommit at the driver level: SQLAlchemy's "begin" event below issues
    # BEGIN IMMEDIATE, so a run holds the write lock for its whole transaction.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=120000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


SUPPORTED_DRIVERS = {"sqlite": ("", "pysqlite"), "postgresql": ("", "psycopg")}


def make_engine(url: str | None = None) -> Engine:
    """The engine of a SQLAlchemy URL (None: FLEXBILL_DB_URL, else the embedded file).  Nothing is created or
    connected here: a SQLite file that does not exist is reported by `require_schema` (only `init_db` creates one)."""
    url = default_url() if url is None else url
    if not str(url).strip():
        raise DatabaseError(
            "the database URL is empty: give --db a SQLAlchemy URL (e.g. sqlite:///var/flexbill.sqlite "
            "or postgresql://user@host:5432/dbname), or leave --db out to use $FLEXBILL_DB_URL or the "
            "embedded SQLite file"
        )
    try:
        parsed = make_url(url)
        _ = parsed.port  # a non-numeric port raises here, not at the first connection
    except (ArgumentError, ValueError):
        raise DatabaseError(
            f"'{redact(url)}' is not a database URL; use e.g. sqlite:///var/flexbill.sqlite "
            "or postgresql://user@host:5432/dbname"
        ) from None
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend not in SUPPORTED_DRIVERS:
        raise DatabaseError(f"unsupported database '{backend}': use PostgreSQL or SQLite")
    if parsed.drivername != backend and driver not in SUPPORTED_DRIVERS[backend]:
        raise DatabaseError(
            f"cannot use '{redact(url)}': flexbill does not support the driver '{driver}'. Use "
            + (
                "postgresql://user@host:5432/dbname (the psycopg driver is installed)"
                if backend == "postgresql"
                else "sqlite:///path/to/file.sqlite"
            )
        )
    if backend == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": 120})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    try:
        return create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    except (ArgumentError, ImportError) as exc:  # NoSuchModuleError (an unknown driver) is an ArgumentError
        raise DatabaseError(
            f"cannot use '{redact(url)}': {exc}. Use postgresql://user@host:5432/dbname "
            "(the psycopg driver is installed)"
        ) from None


def sqlite_file(engine: Engine) -> Path | None:
    """The file of a SQLite engine (None for PostgreSQL or an in-memory database)."""
    if engine.url.get_backend_name() != "sqlite":
        return None
    path = engine.url.database
    return Path(path) if path and path != ":memory:" and not path.startswith("file:") else None


def check_reachable(engine: Engine, create: bool = False) -> None:
    """Connect once; a SQLite file that does not exist is an error unless `create` (init-db creates it)."""
    path = sqlite_file(engine)
    if path is not None:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            where = engine.url.render_as_string(hide_password=False)
            raise DatabaseError(
                f"the SQLite database {path} does not exist: create it with "
                f"`flexbill init-db --db {where}` (or check the path)"
            )
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:  # OperationalError, and DatabaseError for a SQLite file that is not a database
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseError(
            f"cannot connect to {redact(str(engine.url.render_as_string(hide_password=False)))}: {reason}. "
            "Check that the database server is running and that --db / FLEXBILL_DB_URL is right."
        ) from None


def require_schema(engine: Engine) -> None:
    """Fail with a clear message when flexbill's tables are missing."""
    check_reachable(engine)
    try:
        present = set(inspect(engine).get_table_names())
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DatabaseError(
            f"cannot read the database schema of {redact(engine.url.render_as_string(hide_password=False))}: {reason}"
        ) from None
    from .migrate import needs_upgrade

    with engine.connect() as conn:
        if needs_upgrade(conn):
            raise DatabaseError(
                f"the database {redact(engine.url.render_as_string(hide_password=False))} was written by an earlier "
                "flexbill (invoices without drafts and numbers): run `flexbill init-db` to upgrade it (every invoice "
                "and line is kept)"
            )
    missing = [t.name for t in schema.metadata.sorted_tables if t.name not in present]
    if missing:
        raise DatabaseError(
            f"the database {redact(engine.url.render_as_string(hide_password=False))} has no flexbill tables "
            f"({', '.join(missing[:4])}{'...' if len(missing) > 4 else ''} missing): run `flexbill init-db` first"
        )


def init_db(engine: Engine) -> list[str]:
    """Create every table that is missing (idempotent); returns the tables created."""
    from . import dialect, migrate

    check_reachable(engine, create=True)
    before = set(inspect(engine).get_table_names())
    with engine.begin() as conn:
        dialect.lock_for_run(conn)
        migrate.upgrade(conn)  # a database of flexbill < 0.2 (invoices without a lifecycle)
        schema.metadata.create_all(conn)
        dialect.install_triggers(conn)
    return [t.name for t in schema.metadata.sorted_tables if t.name not in before]
