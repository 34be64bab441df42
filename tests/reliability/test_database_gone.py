"""The database going away in the middle of a run.

Promise (CONTRACT.md "Commands", README "Command line" and "Running on Airflow"): a run
whose database goes away fails with one clear line (no traceback, no password), publishes
nothing of its date, and once the database is back, the retry succeeds and gives what an
uninterrupted run gives.

PostgreSQL: while a run waits at a FLEXBILL_PAUSE_AT hook (or between two DAG tasks), an
admin connection forbids new connections to the run's database and terminates its sessions
(`ALTER DATABASE ... ALLOW_CONNECTIONS false` + `pg_terminate_backend`); the server stays up
for everyone else.  Every URL carries a password (trust authentication ignores it) that
must appear nowhere.

SQLite: another connection holds an exclusive lock (locking_mode=EXCLUSIVE) for longer than
the busy timeout.  flexbill waits 120 s for a lock; these tests give their engines a 1 s busy
timeout (a listener that runs before flexbill's) so the lock outlasts it within the suite's
time.  A `flexbill run` holds the write lock for its whole transaction, so on SQLite the lock
can only stop it where it connects; a DAG run can be stopped between two tasks.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading

import pytest
from sqlalchemy import event

from flexbill import airflow_steps
from flexbill.db.connect import make_engine
from flexbill.errors import DatabaseError
from flexbill.runner import run_billing_date
from tests.processes import TIMEOUT, clean_env, start
from tests.reliability.dag_driver import dag_tasks, position, run_task
from tests.reliability.world import LOCATIONS, D, Databases, contents, outputs_of, restore, revoke, template

PASSWORD = "S3cretPW-gone"
CLI_POINTS = ["after_rules", "mid_write", "before_commit"]
BETWEEN = [4, 10]  # DAG tasks done before the database goes away: the rules; every build_invoices
PUBLISH = position("publish", LOCATIONS)


def with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")


def one_line_error(res) -> str:
    assert res.returncode == 1, f"{res.args}: rc={res.returncode}\nstdout={res.stdout!r}\nstderr={res.stderr!r}"
    assert "Traceback" not in res.stdout + res.stderr, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


class PausedRun:
    """`flexbill run --date D` that pauses at `point`; its database goes away as soon as it says so."""

    def __init__(self, url, point, cwd):
        self.url, self.revoked, self.error = url, None, None
        env = clean_env(with_password(url), FLEXBILL_PAUSE_AT=point, FLEXBILL_PAUSE_SECONDS="8")
        self.proc = start("run", "--date", D.isoformat(), env=env, cwd=cwd)
        self.thread = threading.Thread(target=self._revoke, daemon=True)
        self.thread.start()

    def _revoke(self):
        try:
            self.proc.wait_for_line("paused at")
            self.revoked = revoke(self.url)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = f"{type(exc).__name__}: {exc}"

    def finish(self):
        self.result = self.proc.wait()
        self.thread.join(TIMEOUT)
        restore(self.url)


@pytest.fixture(scope="module")
def postgres(driver, tmp_path_factory):
    """Every PostgreSQL fault at once: CLI runs paused at hooks, DAG runs between tasks and mid-publish."""
    with contextlib.ExitStack() as stack:
        dbs = Databases("postgresql", tmp_path_factory.mktemp("gone"))
        stack.callback(dbs.close)
        tpl = template(dbs)
        cwd = tmp_path_factory.mktemp("cwd")
        runs = {point: PausedRun(dbs.clone(tpl), point, cwd) for point in CLI_POINTS}
        ref = dbs.clone(tpl)
        engine = make_engine(ref)
        run_billing_date(engine, D)
        engine.dispose()
        out = {"template": contents(tpl), "ref": contents(ref)}

        dag = {k: with_password(dbs.clone(tpl)) for k in BETWEEN}
        dag["publish"] = with_password(dbs.clone(tpl))

        def job(key, **kw):  # the DAG run's tasks from position `start` on (or up to `stop`)
            return {
                "id": key,
                "url": dag[key],
                "date": D.isoformat(),
                "run_id": "dag-gone",
                "locations": LOCATIONS,
                **kw,
            }

        # the tasks up to k (to validate_output for "publish") succeed
        driver.run([job(k, stop=k) for k in BETWEEN] + [job("publish", stop=PUBLISH - 1)])
        for k in BETWEEN:
            revoke(dag[k])
        # the next task fails; publish's session is terminated in the middle of its write
        failed = driver.run(
            [job(k, start=k) for k in BETWEEN]
            + [job("publish", start=PUBLISH - 1, pause_at="mid_write", pause_seconds=3, on_pause="revoke")]
        )
        for url in dag.values():
            restore(url)
        out["dag failed"] = {k: (failed[k], outputs_of(url)) for k, url in dag.items()}
        # Airflow retries the failed task, then the rest runs
        retried = driver.run([job(k, start=k) for k in BETWEEN] + [job("publish", start=PUBLISH - 1)])
        out["dag retried"] = {k: (retried[k], contents(url)) for k, url in dag.items()}

        out["cli"] = {}
        for point, run in runs.items():
            run.finish()
            counts, after = outputs_of(run.url), contents(run.url)
            engine = make_engine(run.url)
            run_billing_date(engine, D)  # the retry, once the database is back
            engine.dispose()
            out["cli"][point] = (run, counts, after, contents(run.url))
        yield out


@pytest.mark.parametrize("point", CLI_POINTS)
def test_postgresql_gone_while_flexbill_run_is_paused(postgres, point):
    run, counts, after, retried = postgres["cli"][point]
    assert run.error is None, run.error
    assert run.revoked >= 1, "the run had no session to terminate"
    line = one_line_error(run.result)
    assert "failed on the database and wrote nothing" in line and "rerun the date" in line, line
    assert PASSWORD not in run.result.stdout + run.result.stderr
    assert "postgres:***@" in line  # the database is named, its password hidden
    assert counts == {name: 0 for name in counts}, counts
    assert after == postgres["template"]  # nothing at all: the rule events rolled back with the rest
    assert retried == postgres["ref"]


@pytest.mark.parametrize("key", [*BETWEEN, "publish"])
def test_postgresql_gone_during_a_dag_run(postgres, key):
    """Between two tasks (the next task cannot connect) or in the middle of publish's write (its
    session is terminated): the task fails and says why, nothing of D is published; retrying
    the failed task once the database is back completes the run as if nothing happened."""
    result, counts = postgres["dag failed"][key]
    assert not result["completed"] and result["error"], result
    assert PASSWORD not in result["error"]
    if key == "publish":
        assert result["paused"] and result["revoked"] >= 1, result
    else:
        assert result["error"].startswith("DatabaseError: cannot connect to postgresql://postgres:***@"), result
        assert "not currently accepting connections" in result["error"], result
    assert counts == {name: 0 for name in counts}, counts
    retry, retried = postgres["dag retried"][key]
    assert retry["completed"], retry
    assert retried == postgres["ref"]


# ---------------------------------------------------------------- SQLite


def short_busy_timeout(url: str):
    """flexbill's engine on `url`, waiting 1 s (not 120 s) for a lock."""
    engine = make_engine(url)

    def first(dbapi_connection, _record):
        dbapi_connection.execute("PRAGMA busy_timeout=1000")

    event.listen(engine, "connect", first, insert=True)
    return engine


@contextlib.contextmanager
def exclusive_lock(url: str):
    """Another connection holds an exclusive lock on the SQLite file: nobody can read or write it."""
    holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("SELECT count(*) FROM invoices").fetchall()
        yield
    finally:
        holder.close()


@pytest.fixture(scope="module")
def sqlite(tmp_path_factory):
    dbs = Databases("sqlite", tmp_path_factory.mktemp("gone-sqlite"))
    tpl = template(dbs)
    ref = dbs.clone(tpl)
    engine = make_engine(ref)
    run_billing_date(engine, D)
    engine.dispose()
    return dbs, tpl, {"template": contents(tpl), "ref": contents(ref)}


def test_sqlite_locked_beyond_the_busy_timeout_fails_flexbill_run_clearly(sqlite):
    dbs, tpl, expect = sqlite
    url = dbs.clone(tpl)
    engine = short_busy_timeout(url)
    with exclusive_lock(url):
        with pytest.raises(DatabaseError) as failure:
            run_billing_date(engine, D)
    engine.dispose()
    message = str(failure.value)
    assert "\n" not in message and "database is locked" in message and url in message, message
    assert contents(url) == expect["template"]
    engine = short_busy_timeout(url)
    run_billing_date(engine, D)  # the lock is gone: the retry succeeds
    engine.dispose()
    assert contents(url) == expect["ref"]


@pytest.mark.parametrize("k", BETWEEN)
def test_sqlite_locked_between_two_dag_tasks(sqlite, monkeypatch, k):
    """The task after k cannot open the locked file: it fails with the lock named, nothing of D is
    published; once the lock is gone, retrying it (same run id) completes the run."""
    dbs, tpl, expect = sqlite
    url = dbs.clone(tpl)
    monkeypatch.setattr(airflow_steps, "engine", lambda: short_busy_timeout(url))
    _tasks(0, k)
    with exclusive_lock(url):
        with pytest.raises(DatabaseError, match="database is locked") as failure:
            _tasks(k, None)
    assert "\n" not in str(failure.value)
    assert outputs_of(url) == {name: 0 for name in outputs_of(url)}
    _tasks(k, None)
    assert contents(url) == expect["ref"]


def _tasks(start: int, stop: int | None) -> None:
    """The DAG run's tasks at positions start+1..stop, with whatever airflow_steps.engine gives."""
    for name, args in dag_tasks(LOCATIONS)[start:stop]:
        run_task(D, "dag-locked", name, args)
