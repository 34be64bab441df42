"""docker-compose.yaml's CeleryExecutor deployment, run natively from the venv for the tests.

The same components and settings as the compose file (see `compose_parity` in
test_compose.py): metadata in PostgreSQL, Redis as the Celery broker, `airflow
api-server`, `airflow scheduler`, `airflow dag-processor` and two `airflow celery
worker`s, with the `flexbill_db` connection given by AIRFLOW_CONN_FLEXBILL_DB.
Differences that only exist because everything shares one machine here:

- free loopback ports chosen at start (api-server, scheduler health check, each
  worker's log server) and AIRFLOW_HOME in a temporary directory;
- a Redis database number that was empty (claimed with a key) and a queue of our
  own, so other Celery users of the same Redis see nothing of ours;
- each worker reports its own task-instance hostname through
  `[core] hostname_callable` = tests.distributed.hostname.worker_hostname;
- `[scheduler] use_job_schedule = False`: the scheduler creates no scheduled run
  of its own, so only the backfills a test creates bill anything;
- a short task-instance heartbeat timeout, so a killed worker's tasks are failed
  (and retried elsewhere) within the test's time.

Every component runs in its own process group (and Airflow puts each task
process in another one); stopping kills every group of the component's process
tree, so nothing outlives the stack.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import psutil
import redis
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")
DAG_ID = "flexbill_billing"
REDIS_HOST = os.environ.get("FLEXBILL_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("FLEXBILL_TEST_REDIS_PORT", "6379"))
CLAIM_KEY = "flexbill-test-stack:claim"
TERMINAL = ("success", "failed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def claim_redis_db(token: str) -> int:
    """The number of a Redis database that is empty, claimed for this stack with a key."""
    for n in range(15, 0, -1):
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=n)
        try:
            if client.dbsize() == 0 and client.set(CLAIM_KEY, token, nx=True, ex=6 * 3600):
                if client.dbsize() == 1:  # nobody else started writing meanwhile
                    return n
                client.delete(CLAIM_KEY)
        except redis.ResponseError:  # fewer databases configured
            continue
        finally:
            client.close()
    raise RuntimeError(f"no empty Redis database on {REDIS_HOST}:{REDIS_PORT} for the Celery broker")


def release_redis_db(n: int, token: str) -> None:
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=n)
    try:
        if client.get(CLAIM_KEY) == token.encode():
            client.flushdb()  # only our broker's keys: the database was empty and claimed
    finally:
        client.close()


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_tree(pid: int, sig=signal.SIGKILL) -> None:
    """Send `sig` to every process group of the process tree under `pid` (its own group first)."""
    groups = []
    for p in _tree(pid):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            g = os.getpgid(p.pid)
            if g not in groups and g != os.getpgrp():
                groups.append(g)
    for g in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(g, sig)


class Component:
    """One long-running Airflow process, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict, log: Path):
        self.name, self.args, self.log = name, args, log
        self._out = open(log, "ab")
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process tree at once, as a lost host would."""
        kill_tree(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(30)
        self._out.close()

    def stop(self, grace: float = 15) -> None:
        if self.alive():
            procs = _tree(self.pid)
            kill_tree(self.pid, signal.SIGTERM)
            _, left = psutil.wait_procs(procs, timeout=grace)
            if left:
                for p in left:
                    with contextlib.suppress(psutil.Error, ProcessLookupError):
                        os.killpg(os.getpgid(p.pid), signal.SIGKILL)
        kill_tree(self.pid, signal.SIGKILL)  # stragglers in other groups (task processes)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        self._out.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Stack:
    home: Path
    metadata_url: str  # postgresql://... (a fresh database)
    billing_url: str  # the flexbill_db connection's database
    workers: tuple = ("worker-a", "worker-b")
    concurrency: int = 2
    heartbeat_timeout: int = 40
    components: dict = field(default_factory=dict)

    def __post_init__(self):
        self.token = uuid.uuid4().hex
        self.queue = f"flexbill-{self.token[:10]}"
        self.redis_db = None
        self.api_port = free_port()
        self.health_port = free_port()
        self.log_ports = {w: free_port() for w in self.workers}
        self.other_log_port, self.trigger_log_port = free_port(), free_port()
        self.logs = self.home / "component-logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._meta = None

    # ------------------------------------------------------------ configuration
    def env(self, **extra: str) -> dict:
        """The environment of every component: docker-compose.yaml's x-airflow-common, natively."""
        from flexbill.airflow_steps import connection_json

        sqla = self.metadata_url.replace("postgresql://", "postgresql+psycopg2://", 1)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW", "FLEXBILL_", "_AIRFLOW")) and k not in ("PYTHONPATH",)
        }
        env.update(
            {
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "PYTHONPATH": str(ROOT),  # tests.distributed.hostname
                "PYTHONUNBUFFERED": "1",
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__PARALLELISM": str(2 * self.concurrency * len(self.workers)),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.distributed.hostname.worker_hostname",
                "AIRFLOW__CORE__FERNET_KEY": "",
                "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
                    self.home / "simple_auth_manager_passwords.json"
                ),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqla,
                "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.redis_db}",
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{sqla}",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency),
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
                "AIRFLOW__API_AUTH__JWT_SECRET": self.token,
                "AIRFLOW__API__SECRET_KEY": self.token,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.api_port}",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(self.health_port),
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(self.heartbeat_timeout),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "180",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.other_log_port),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.trigger_log_port),
                "AIRFLOW_CONN_FLEXBILL_DB": connection_json(self.billing_url),
                "FLEXBILL_REPORT_DIR": str(self.home / "flexbill" / "reports"),
                "FLEXBILL_GX_DIR": str(self.home / "flexbill" / "gx"),
            }
        )
        env.update(extra)
        return env

    # ------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 300) -> Stack:
        deadline = time.monotonic() + timeout
        self.redis_db = claim_redis_db(self.token)
        self.airflow("db", "migrate", timeout=max(30.0, deadline - time.monotonic()))
        self._spawn("api-server", ["api-server", "--port", str(self.api_port), "--host", "127.0.0.1", "--workers", "1"])
        self._spawn("scheduler", ["scheduler"])
        self._spawn("dag-processor", ["dag-processor"])
        for w in self.workers:
            self.start_worker(w)
        self._wait("api-server", lambda: _http_ok(f"http://127.0.0.1:{self.api_port}/api/v2/monitor/health"), deadline)
        self._wait("scheduler", lambda: _http_ok(f"http://127.0.0.1:{self.health_port}/health"), deadline)
        self._wait("dag-processor", self.dag_parsed, deadline)
        for w in self.workers:
            self.wait_worker(w, deadline)
        return self

    def start_worker(self, name: str) -> Component:
        env = self.env(
            FLEXBILL_WORKER_HOSTNAME=name, AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(self.log_ports[name])
        )
        return self._spawn(
            name,
            [
                "celery",
                "worker",
                "--celery-hostname",
                name,
                "--concurrency",
                str(self.concurrency),
                "--queues",
                self.queue,
            ],
            env=env,
        )

    def wait_worker(self, name: str, deadline: float) -> None:
        self._wait(name, lambda: f"celery@{name} ready" in self.components[name].text(), deadline)

    def kill_worker(self, name: str) -> None:
        self.components[name].kill()

    def stop(self) -> None:
        for name in reversed(list(self.components)):
            with contextlib.suppress(Exception):
                self.components[name].stop()
        if self._meta is not None:
            self._meta.dispose()
        if self.redis_db is not None:
            with contextlib.suppress(Exception):
                release_redis_db(self.redis_db, self.token)

    def _spawn(self, name: str, args: list[str], env: dict | None = None) -> Component:
        old = self.components.get(name)
        if old is not None and old.alive():
            raise RuntimeError(f"{name} is already running")
        comp = Component(name, [AIRFLOW, *args], env or self.env(), self.logs / f"{name}.log")
        self.components[name] = comp
        return comp

    def _wait(self, name: str, ready, deadline: float) -> None:
        while True:
            comp = self.components.get(name)
            if comp is not None and not comp.alive():
                raise RuntimeError(
                    f"{name} exited with {comp.popen.returncode} while starting:\n{_tail(comp.text(), 60)}"
                )
            with contextlib.suppress(Exception):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} was not ready in time")
            time.sleep(1)

    # ------------------------------------------------------------ commands and queries
    def airflow(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
        """Run an `airflow ...` command against the stack (as an operator would, from any host)."""
        res = subprocess.run(
            [AIRFLOW, *args],
            env=self.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"airflow {' '.join(args)} exited {res.returncode}\nstdout:\n{_tail(res.stdout)}"
                f"\nstderr:\n{_tail(res.stderr)}"
            )
        return res

    @property
    def meta(self):
        if self._meta is None:
            self._meta = create_engine(self.metadata_url, pool_size=2, max_overflow=2)
        return self._meta

    def query(self, sql: str, **params) -> list:
        with self.meta.connect() as conn:
            return list(conn.execute(text(sql), params))

    def dag_parsed(self) -> bool:
        errors = self.query("select filename, stacktrace from import_error")
        if errors:
            raise RuntimeError(f"DAG import errors: {errors}")
        return bool(self.query("select 1 from serialized_dag where dag_id = :d", d=DAG_ID))

    def backfill(
        self, first: date, last: date, reprocess: str, max_active_runs: int | None = 1, check: bool = True
    ) -> subprocess.CompletedProcess:
        """`airflow backfill create --dag-id flexbill_billing` over [first, last], as an analyst types it."""
        args = [
            "backfill",
            "create",
            "--dag-id",
            DAG_ID,
            "--from-date",
            first.isoformat(),
            "--to-date",
            last.isoformat(),
            "--reprocess-behavior",
            reprocess,
        ]
        if max_active_runs is not None:
            args += ["--max-active-runs", str(max_active_runs)]
        return self.airflow(*args, check=check)

    def latest_backfill(self) -> int | None:
        rows = self.query("select id from backfill where dag_id = :d order by id desc limit 1", d=DAG_ID)
        return rows[0][0] if rows else None

    def wait_backfill(self, backfill_id: int, timeout: float = 600) -> list:
        """Wait until the backfill is complete; returns its (billing date, run id, state) rows, oldest first."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.query("select completed_at from backfill where id = :b", b=backfill_id)[0][0]
            runs = self.backfill_runs(backfill_id)
            if done is not None and all(r[2] in TERMINAL for r in runs):
                return runs
            for name, comp in self.components.items():
                if name in ("api-server", "scheduler", "dag-processor") and not comp.alive():
                    raise RuntimeError(f"{name} died (rc={comp.popen.returncode})")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"backfill {backfill_id} not complete after {timeout:.0f}s: {runs}\n{self.task_states(backfill_id)}"
                )
            time.sleep(1)

    def backfill_runs(self, backfill_id: int) -> list:
        return [
            (r[0].date(), r[1], r[2])
            for r in self.query(
                "select dr.data_interval_start, dr.run_id, dr.state from dag_run dr "
                "where dr.backfill_id = :b order by dr.data_interval_start",
                b=backfill_id,
            )
        ]

    def task_states(self, backfill_id: int) -> list:
        return [
            tuple(r)
            for r in self.query(
                "select dr.data_interval_start::date, ti.task_id, ti.map_index, ti.state, ti.try_number, ti.hostname "
                "from task_instance ti join dag_run dr on dr.dag_id = ti.dag_id and dr.run_id = ti.run_id "
                "where dr.backfill_id = :b order by 1, 2, 3",
                b=backfill_id,
            )
        ]

    # ------------------------------------------------------------ diagnostics
    def diagnostics(self, lines: int = 80) -> str:
        """Tails of every component's log and of every task log that did not succeed."""
        out = []
        for name, comp in self.components.items():
            state = "running" if comp.alive() else f"exited {comp.popen.returncode}"
            out.append(f"===== {name} ({state}) {comp.log}\n{_tail(comp.text(), lines)}")
        task_logs = sorted((self.home / "logs").rglob("*.log")) if (self.home / "logs").exists() else []
        for path in task_logs:
            body = path.read_text(errors="replace")
            if '"level":"error"' in body.replace(" ", "") or "Traceback" in body or "ERROR" in body:
                out.append(f"===== task log {path.relative_to(self.home)}\n{_tail(body, lines)}")
        return "\n".join(out)


def _tail(s: str, n: int = 80) -> str:
    return "\n".join(s.splitlines()[-n:])


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status == 200


@contextlib.contextmanager
def running_stack(home: Path, metadata_url: str, billing_url: str, **kwargs):
    """Start a Stack; stop it (every process group) on the way out, even after a failure,
    with the component logs dumped to stderr if the start or the body failed."""
    stack = Stack(home=home, metadata_url=metadata_url, billing_url=billing_url, **kwargs)
    try:
        stack.start()
        yield stack
    except BaseException:
        with contextlib.suppress(Exception):
            sys.stderr.write(f"\n----- Celery stack diagnostics ({home})\n{stack.diagnostics()}\n")
        raise
    finally:
        stack.stop()
