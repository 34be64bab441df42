"""Airflow's part, without Airflow: runs the `flexbill_billing` DAG's tasks of one DAG run, in DAG order.

Each task is its `flexbill.airflow_steps` function (what the DAG's @task function calls): its own
engine, its own transaction, the run's staging keyed by the run id; `publish` goes
through `airflow_steps.publish_summary`, as in the DAG.  Only the database lookup is
replaced: `airflow_steps.engine` returns an engine on the job's URL instead of reading
the Airflow connection `flexbill_db`.

Run as `python -m tests.reliability.dag_driver`, it is a small server: it imports
pandas and Great Expectations once, then reads batches of jobs (one JSON list per
line on stdin) and answers each batch with one JSON object per line on stdout.
Every job runs in a child forked from the warm server, so a child costs its work and
not seconds of imports.  A job can make its child

* SIGKILL itself right after the task at position `die_after` (1-based, DAG order) has
  committed: the task ran and committed, and the process died before anything else;
* pause in the middle of publish's write (`pause_at: "mid_write"`, the FLEXBILL_PAUSE_AT
  hook), where the server SIGKILLs it as soon as it says so (or, with `on_pause: "revoke"`,
  makes its PostgreSQL database go away instead and lets the child carry on);
* record a manual suspend or lift (`event_after`: position, customer, action, at), in its own
  transaction, between two tasks: what the `flexbill_manual_suspension` DAG (or
  `flexbill suspend|lift`) does when it runs while a billing DAG run is between tasks.

Jobs of one batch run two at a time (`parallel`), or all at once for races.
`Driver` is the test-side client.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime

RULES = ("signup", "plan", "crm_stage")
CHILD_TIMEOUT = 120


def dag_tasks(locations: list[int]) -> list[tuple[str, tuple]]:
    """The DAG's task instances in an order the DAG allows: extract_snapshot >> apply_rule (mapped)
    >> owed_periods (mapped) >> suspension_filter (mapped) >> build_invoices (mapped)
    >> active_user_report >> validate_output >> publish >> finalize (the grace-period finalization; the
    data_quality_report task between them writes files only and has its own tests)."""
    return [
        ("extract_snapshot", ()),
        *[("apply_rule", (r,)) for r in RULES],
        *[(name, (loc,)) for name in ("owed_periods", "suspension_filter", "build_invoices") for loc in locations],
        ("active_user_report", ()),
        ("validate_output", ()),
        ("publish", ()),
        ("finalize", ()),
    ]


def position(name: str, locations: list[int]) -> int:
    """The 1-based position of task `name` in dag_tasks(locations)."""
    return [n for n, _ in dag_tasks(locations)].index(name) + 1


def interval_start(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def use_database(url: str) -> None:
    """Make every later `airflow_steps` task use `url` (instead of the `flexbill_db` connection)."""
    from flexbill import airflow_steps
    from flexbill.db.connect import make_engine

    airflow_steps.engine = lambda: make_engine(url)


def run_task(d: date, run_id: str, name: str, args: tuple):
    """One task instance of the DAG run for billing date d, exactly as its @task calls it."""
    from flexbill import airflow_steps

    if name == "publish":
        return airflow_steps.publish_summary(interval_start(d), run_id)
    if name == "finalize":
        return airflow_steps.finalize_grace(interval_start(d))
    return getattr(airflow_steps, name)(interval_start(d), run_id, *args)  # the DAG task's own function


def run_tasks(
    url: str, d: date, run_id: str, locations: list[int], start: int = 0, stop: int | None = None, after=None
):
    """Run the tasks at positions start+1..stop (1-based; all by default) in this process;
    `after(position)` is called once each has committed."""
    use_database(url)
    tasks = dag_tasks(locations)
    for position in range(start, len(tasks) if stop is None else stop):
        name, args = tasks[position]
        result = run_task(d, run_id, name, args)
        if name == "extract_snapshot" and result["locations"] != locations:
            raise AssertionError(f"extract_snapshot mapped over {result['locations']}, the job expected {locations}")
        if after is not None:
            after(position + 1)


def record_event(url: str, event: dict) -> None:
    """A manual suspend or lift, through the code `flexbill suspend|lift` and the manual DAG call."""
    from flexbill.db.connect import make_engine
    from flexbill.manual import record_manual_event

    engine = make_engine(url)
    try:
        record_manual_event(
            engine,
            event["customer"],
            event["action"],
            "ops@example.com",
            "race",
            datetime.fromisoformat(event["at"]),
            backdate=True,
        )
    finally:
        engine.dispose()


# ---------------------------------------------------------------- the server


def _child(job: dict, out_fd: int) -> None:
    """Runs in the forked child; never returns."""
    os.dup2(out_fd, 1)  # the pause hook prints "paused at ..." here
    try:
        if job.get("pause_at"):
            os.environ["FLEXBILL_PAUSE_AT"] = job["pause_at"]
            os.environ["FLEXBILL_PAUSE_SECONDS"] = str(job.get("pause_seconds", CHILD_TIMEOUT))

        event = job.get("event_after")

        def after(position):
            os.write(out_fd, f"done {position}\n".encode())
            if job.get("die_after") == position:
                os.kill(os.getpid(), signal.SIGKILL)
            if event is not None and event["position"] == position:
                record_event(job["url"], event)
                os.write(out_fd, b"event\n")

        if event is not None and event["position"] == job.get("start", 0):  # before the first task
            record_event(job["url"], event)
            os.write(out_fd, b"event\n")

        run_tasks(
            job["url"],
            date.fromisoformat(job["date"]),
            job["run_id"],
            job["locations"],
            job.get("start", 0),
            job.get("stop"),
            after,
        )
        os.write(out_fd, b"completed\n")
        code = 0
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        os.write(out_fd, ("error " + json.dumps(f"{type(exc).__name__}: {exc}") + "\n").encode())
        code = 1
    sys.stdout.flush()
    os._exit(code)


def _run_batch(jobs: list[dict], parallel: int) -> list[dict]:
    pending, running, results = list(jobs), {}, {}
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_fd)
                _child(job, write_fd)
            os.close(write_fd)
            running[read_fd] = {
                "job": job,
                "pid": pid,
                "buffer": b"",
                "started": time.monotonic(),
                "result": {
                    "id": job["id"],
                    "done": [],
                    "paused": False,
                    "completed": False,
                    "event": False,
                    "error": None,
                    "signal": None,
                    "exit": None,
                },
            }
        ready, _, _ = select.select(list(running), [], [], 1.0)
        for fd, state in list(running.items()):
            if time.monotonic() - state["started"] > CHILD_TIMEOUT and fd not in ready:
                os.kill(state["pid"], signal.SIGKILL)
                state["result"]["error"] = f"timed out after {CHILD_TIMEOUT}s"
        for fd in ready:
            state = running[fd]
            chunk = os.read(fd, 65536)
            if chunk:
                state["buffer"] += chunk
                *lines, state["buffer"] = state["buffer"].split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace")
                    res = state["result"]
                    if line.startswith("done "):
                        res["done"].append(int(line.split()[1]))
                    elif line == "completed":
                        res["completed"] = True
                    elif line == "event":
                        res["event"] = True
                    elif line.startswith("error "):
                        res["error"] = json.loads(line[6:])
                    elif line.startswith("paused at "):
                        res["paused"] = True
                        if state["job"].get("on_pause") == "revoke":
                            from tests.reliability.world import revoke

                            res["revoked"] = revoke(state["job"]["url"])
                        else:
                            os.kill(state["pid"], signal.SIGKILL)  # killed from the parent, mid-write
                continue
            os.close(fd)
            _, status = os.waitpid(state["pid"], 0)
            res = state["result"]
            if os.WIFSIGNALED(status):
                res["signal"] = os.WTERMSIG(status)
            else:
                res["exit"] = os.WEXITSTATUS(status)
            results[res["id"]] = res
            del running[fd]
    return [results[job["id"]] for job in jobs]


def _warm_up() -> None:
    """Import what every task needs before forking, so children start warm."""
    import pandas as pd

    from flexbill import airflow_steps, steps, validation  # noqa: F401

    validation._Gx.get().validate(
        "warm_up",
        [("ExpectColumnValuesToBeBetween", {"column": "x", "min_value": 0}, "warm-up", "warm-up")],
        pd.DataFrame({"x": [1]}),
    )


def serve() -> None:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed by libraries goes to stderr, not into the protocol
    _warm_up()
    protocol.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        results = _run_batch(request["jobs"], request.get("parallel", 2))
        protocol.write(json.dumps({"results": results}) + "\n")


# ---------------------------------------------------------------- the client


class Driver:
    """The test-side handle on a `dag_driver` server process."""

    def __init__(self, cwd, env: dict, log_path):
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.dag_driver"],
            cwd=str(cwd),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        self._answer(600)

    def _answer(self, timeout: float) -> dict:
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            line = self.proc.stdout.readline()
        finally:
            timer.cancel()
        if not line:
            self.log.flush()
            raise AssertionError(f"the DAG driver ended (rc={self.proc.poll()}): see {self.log.name}")
        return json.loads(line)

    def submit(self, jobs: list[dict], parallel: int = 2) -> None:
        """Start a batch of jobs and return at once (one batch at a time); `collect` waits for it."""
        self.proc.stdin.write(json.dumps({"jobs": jobs, "parallel": parallel}) + "\n")
        self.proc.stdin.flush()

    def collect(self, timeout: float = 600) -> dict:
        """The submitted batch's results: {job id: result}."""
        return {r["id"]: r for r in self._answer(timeout)["results"]}

    def run(self, jobs: list[dict], parallel: int = 2, timeout: float = 600) -> dict:
        """Run a batch of jobs; returns {job id: result}."""
        self.submit(jobs, parallel)
        return self.collect(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


if __name__ == "__main__":
    serve()
