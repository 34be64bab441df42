"""Where a flexbill run spends its time and memory, on a database prepared by bench.generate.

    python -m bench.profile --db URL --date 2026-11-01 [--pyspy /tmp/pyspy-venv/bin/py-spy] [--top 25]

1. steps: the steps of `flexbill run` (flexbill.steps, in the order run_billing_date calls them, in one
   transaction that commits, then the data-quality report) in this process, with the wall seconds, the
   RSS after each step and the peak RSS so far;
2. py-spy (when given): `py-spy record --idle` of the real `flexbill run` child, aggregated into the
   functions with the most inclusive and self seconds (time waiting on the database included: --idle).
The database must be prepared for the date again between the two (bench.generate --prepare-only): this
script does it.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

from .common import ROOT, SEED, VAR

RATE = 100  # py-spy samples per second


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def steps(url: str, d: date) -> list[tuple[str, float, float, float]]:
    """(step, seconds, RSS after, peak RSS so far) for each step of one run: flexbill.runner.run_billing_date
    itself (what `flexbill run` calls), timed through its on_step hook, then the data-quality report."""
    from flexbill import runner as st
    from flexbill.db.connect import make_engine
    from flexbill.finance_report import write_report

    out = []
    t0 = time.perf_counter()
    engine = make_engine(url)

    def record(name: str, seconds: float) -> None:
        out.append((name, seconds, _rss_mib(), _peak_mib()))
        print(f"  {name:<22} {seconds:7.2f}s  RSS {out[-1][2]:6.0f} MiB  peak {out[-1][3]:6.0f} MiB", flush=True)

    record("imports + connect", time.perf_counter() - t0)
    st.run_billing_date(engine, d, on_step=record)
    t = time.perf_counter()
    write_report(engine, d, str(VAR / "reports"), str(VAR / "gx"))
    record("data-quality report", time.perf_counter() - t)
    return out


def _frame_name(frame: str) -> str:
    """'func (path/to/module.py:123)' -> 'func (module.py)' so the lines of a function add up."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{name} ({short})"


def pyspy(pyspy_bin: str, url: str, d: date, top: int) -> dict:
    raw = VAR / "profile" / f"flexbill_{d}.raw"
    raw.parent.mkdir(parents=True, exist_ok=True)
    flexbill = str(Path(sys.executable).with_name("flexbill"))
    t0 = time.perf_counter()
    subprocess.run(
        [
            pyspy_bin,
            "record",
            "--idle",
            "-r",
            str(RATE),
            "-f",
            "raw",
            "-o",
            str(raw),
            "--",
            flexbill,
            "run",
            "--date",
            str(d),
            "--db",
            url,
            "--out",
            str(VAR / "reports"),
            "--gx-dir",
            str(VAR / "gx"),
        ],
        check=True,
        cwd=ROOT,
    )
    return aggregate(raw, top, time.perf_counter() - t0)


def aggregate(raw: Path, top: int, wall: float = 0.0) -> dict:
    inclusive, own = Counter(), Counter()
    total = 0
    idle_threads = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [_frame_name(f) for f in stack.split(";")]
        if frames[0].startswith("_bootstrap (") or frames[0].startswith("Thread."):  # helper threads (tqdm's monitor)
            idle_threads += n
            continue
        total += n
        for f in set(frames):
            inclusive[f] += n
        own[frames[-1]] += n
    print(
        f"\npy-spy: {total / RATE:.1f}s sampled in the main thread ({wall:.1f}s wall with py-spy; "
        f"{idle_threads / RATE:.1f}s of helper threads left out), raw stacks in {raw}"
    )
    print(f"\ntop {top} functions by inclusive seconds (what they and their callees took):")
    for f, n in inclusive.most_common(top):
        print(f"  {n / RATE:7.2f}s  {f}")
    print(f"\ntop {top} functions by self seconds (time in the function itself, waits included):")
    for f, n in own.most_common(top):
        print(f"  {n / RATE:7.2f}s  {f}")
    return {
        "sampled_s": total / RATE,
        "inclusive": [(f, n / RATE) for f, n in inclusive.most_common(top)],
        "self": [(f, n / RATE) for f, n in own.most_common(top)],
    }


def prepare(url: str, n: int, seed: int, d: date) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.generate",
            "--db",
            url,
            "--n",
            str(n),
            "--seed",
            str(seed),
            "--date",
            str(d),
            "--prepare-only",
        ],
        check=True,
        cwd=ROOT,
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--n", type=int, required=True, help="the size the database was generated with")
    ap.add_argument("--date", type=date.fromisoformat, required=True)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--pyspy", help="path of a py-spy binary (pip install py-spy into a scratch venv)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--raw", help="only aggregate this py-spy raw file (no run)")
    args = ap.parse_args(argv)
    if args.raw:
        aggregate(Path(args.raw), args.top)
        return
    print(f"steps of one run for {args.date} (in-process):")
    steps(args.db, args.date)
    if args.pyspy:
        prepare(args.db, args.n, args.seed, args.date)
        pyspy(args.pyspy, args.db, args.date, args.top)


if __name__ == "__main__":
    main()
