"""The benchmark runner: generate, run flexbill, the SQL anchor and the naive baseline side by side, check equality.

    python -m bench.run --sizes 100k,1m --dbs postgresql,sqlite --out bench/results.json [--compare old.json]

For each database kind and size N: a fresh database (PostgreSQL: `flexbill_bench_<n>`, dropped afterwards unless
--keep; SQLite: var/bench/flexbill_bench_<n>.sqlite), loaded by bench.generate; then for the first-of-month and
the mid-month date, each prepared as the steady state of a daily schedule:
  flexbill   `flexbill run --date D --db URL --no-report` in a child process (rules, owed, filter, invoices, GX
             validation, write, active-user report), its wall time and its peak RSS (os.wait4);
  report     `flexbill report` for D in a child (finance's data-quality report, up to --report-max contracts);
  rerun      the same command again with unchanged inputs: its time (the issue's "unchanged rerun" ratio), a
             check that it changed none of D's documents (lines, invoices by status, credit notes), and whether
             it kept D's outputs without recomputing them (`rerun_kept`: nothing it reads had changed);
  anchor     bench/anchor.sql, one set-based statement (PostgreSQL only), materialised with CREATE TABLE AS;
  naive      bench.naive in a child process (skipped where its estimate, from the last size measured, is over
             --naive-limit seconds);
  check      set equality of flexbill's invoice lines for D with the anchor's and with the naive baseline's
             (contract_id, period_start, period_end, quantity, unit_price, amount, prorated); a mismatch is
             printed and fails the run (exit status 1).
Every timed step starts after a CHECKPOINT on PostgreSQL (`settle`), not in the write debt of the step before.
Results go to a Rich table and to --out as JSON; --compare prints the deltas against an earlier JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .common import (
    DATES,
    PG_ADMIN_URL,
    ROOT,
    SEED,
    VAR,
    create_fresh,
    disk_bytes,
    drop,
    is_pg,
    load,
    parse_size,
    pg_connect,
    size_label,
    url_for,
)

console = Console(width=None if sys.stdout.isatty() else 200)
PYTHON = sys.executable
FLEXBILL = str(Path(sys.executable).with_name("flexbill"))
LINE_COLUMNS = "contract_id, period_start, period_end, quantity, unit_price, amount, prorated"
FLEXBILL_LINES = (
    f"select {', '.join('l.' + c.strip() for c in LINE_COLUMNS.split(','))} "
    "from invoice_lines l join invoices i on i.invoice_id = l.invoice_id "
    "where i.billing_date = '{d}' and i.status <> 'credited'"
)
GIB = 1024**3


class Failed(Exception):
    pass


def log_path(db: str, n: int, step: str) -> Path:
    path = VAR / "logs" / f"{db}_{size_label(n)}_{step}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def child(cmd: list[str], label: str, log: Path, env: dict | None = None) -> dict:
    """Run one child process to its end, showing elapsed time; returns wall seconds, peak RSS, exit code, output."""
    console.print(f"  [dim]{time.strftime('%H:%M:%S')}[/] {label} ...", highlight=False)
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        last = t0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.05)
            if time.perf_counter() - last > 60:  # progress on long steps
                last = time.perf_counter()
                console.print(f"    ... {label}: {last - t0:.0f}s", highlight=False)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    console.print(
        f"    {label}: {seconds:.1f}s, peak RSS {usage.ru_maxrss / 1024:.0f} MiB, exit {proc.returncode}",
        highlight=False,
    )
    return {"seconds": seconds, "rss_mib": usage.ru_maxrss / 1024, "code": proc.returncode, "output": text}


def settle(url: str) -> None:
    """PostgreSQL: CHECKPOINT before a timed step, so it starts with no dirty buffers of the step before (the
    generator writes ~1 GB per 1M contracts: a run right after it paid the checkpoint of that write, 35.8 s after a
    CHECKPOINT against 40.7 s without, 2026-12-07). SQLite: nothing (generate checkpoints its WAL)."""
    if is_pg(url):
        with pg_connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")


def run_anchor(url: str, d) -> float:
    sql = (ROOT / "bench" / "anchor.sql").read_text()
    with pg_connect(url) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_anchor")
        conn.commit()
        t0 = time.perf_counter()
        conn.execute(
            "CREATE TABLE bench_anchor AS " + sql.replace(":billing_date", "%(billing_date)s"), {"billing_date": d}
        )
        conn.commit()
        return time.perf_counter() - t0


def _rows(url: str, sql: str) -> list[tuple]:
    if is_pg(url):
        with pg_connect(url) as conn:
            return [tuple(r) for r in conn.execute(sql).fetchall()]
    import sqlite3

    conn = sqlite3.connect(url.split("sqlite:///", 1)[1])
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()


def compare(url: str, d, other_table: str) -> dict:
    """Set equality of flexbill's lines for D and `other_table`'s, both ways; up to 10 examples each way."""
    ours = FLEXBILL_LINES.format(d=d)
    theirs = f"select {LINE_COLUMNS} from {other_table}"
    count = f"select (select count(*) from ({ours}) a), (select count(*) from ({theirs}) b)"
    ((n_ours, n_theirs),) = _rows(url, count)
    only_ours = _rows(url, f"select * from ({ours} except {theirs}) x limit 10")
    only_theirs = _rows(url, f"select * from ({theirs} except {ours}) x limit 10")
    n_only_ours = _rows(url, f"select count(*) from ({ours} except {theirs}) x")[0][0]
    n_only_theirs = _rows(url, f"select count(*) from ({theirs} except {ours}) x")[0][0]
    equal = n_ours == n_theirs and n_only_ours == 0 and n_only_theirs == 0
    return {
        "equal": equal,
        "flexbill_lines": n_ours,
        "other_lines": n_theirs,
        "only_flexbill": n_only_ours,
        "only_other": n_only_theirs,
        "examples_only_flexbill": [list(map(str, r)) for r in only_ours],
        "examples_only_other": [list(map(str, r)) for r in only_theirs],
    }


def run_stats(url: str, d) -> dict:
    rows = _rows(
        url,
        "select contracts_owed, contracts_invoiced, contracts_skipped, contracts_quarantined, invoices, "
        f"lines, back_billed_lines, events_appended, quarantined_rows from billing_runs "
        f"where billing_date = '{d}'",
    )
    keys = [
        "contracts_owed",
        "contracts_invoiced",
        "contracts_skipped",
        "contracts_quarantined",
        "invoices",
        "lines",
        "back_billed_lines",
        "events_appended",
        "quarantined_rows",
    ]
    stats = dict(zip(keys, map(int, rows[0]))) if rows else {}
    total = _rows(url, f"select coalesce(sum(amount), 0), count(*) from ({FLEXBILL_LINES.format(d=d)}) x")[0]
    stats["lines_amount"] = f"{float(total[0]):.2f}" if not is_pg(url) else str(total[0])
    return stats


def flexbill_run(url: str, d, label: str, log: Path) -> dict:
    """`flexbill run --date D --no-report` in a child (see `child`); a failure stops the benchmark."""
    settle(url)
    out = child([FLEXBILL, "run", "--date", str(d), "--db", url, "--no-report"], label, log, env={"COLUMNS": "200"})
    if out["code"]:
        raise Failed(f"{label} failed:\n{out['output'][-3000:]}")
    return out


def documents(url: str, d) -> tuple:
    """What a rerun must leave alone: D's live lines (count and sum), its invoices by status, every credit note."""
    lines = _rows(url, f"select count(*), coalesce(sum(amount), 0) from ({FLEXBILL_LINES.format(d=d)}) x")[0]
    invoices = _rows(
        url,
        f"select status, count(*), coalesce(sum(total), 0) from invoices where billing_date = '{d}' "
        "group by status order by status",
    )
    notes = _rows(url, "select count(*) from credit_notes")[0]
    return tuple(map(str, lines)), tuple(tuple(map(str, r)) for r in invoices), tuple(map(str, notes))


def targets(row: dict, rows: list[dict]) -> dict:
    """The issue's targets that apply to this row: name -> (met, text)."""
    out = {}
    n, db = row["n"], row["db"]
    if db == "postgresql" and n == 1_000_000:
        if row.get("anchor_s"):
            ratio = row["flexbill_s"] / row["anchor_s"]
            out["<=2x anchor"] = (ratio <= 2, f"{ratio:.1f}x")
        out["RSS<=1GiB"] = (row["flexbill_rss_mib"] <= 1024, f"{row['flexbill_rss_mib']:.0f} MiB")
        if row.get("rerun_s"):
            share = row["rerun_s"] / row["flexbill_s"]
            out["unchanged rerun<=15% of run"] = (share <= 0.15, f"{share:.0%}")
        if row.get("report_s"):
            out["report<=run"] = (row["report_s"] <= row["flexbill_s"], f"{row['report_s']:.0f}s")
            out["report RSS<=1GiB"] = (row["report_rss_mib"] <= 1024, f"{row['report_rss_mib']:.0f} MiB")
        first = next((r for r in rows if r["db"] == db and r["n"] == n and r["date_kind"] == "first-of-month"), None)
        if row["date_kind"] == "mid-month" and first:
            share = row["flexbill_s"] / first["flexbill_s"]
            out["mid<=25% of 1st"] = (share <= 0.25, f"{share:.0%}")
    if db == "postgresql" and n == 10_000_000:
        base = next(
            (r for r in rows if r["db"] == db and r["n"] == 1_000_000 and r["date_kind"] == row["date_kind"]), None
        )
        if base:
            ratio = row["flexbill_s"] / base["flexbill_s"]
            out["<=11x 1M"] = (ratio <= 11, f"{ratio:.1f}x")
        out["RSS<=3GiB"] = (row["flexbill_rss_mib"] <= 3072, f"{row['flexbill_rss_mib']:.0f} MiB")
        if row.get("report_s"):
            out["report RSS<=3GiB"] = (row["report_rss_mib"] <= 3072, f"{row['report_rss_mib']:.0f} MiB")
    if n == 1_000_000 and row.get("naive_s"):
        ratio = row["naive_s"] / row["flexbill_s"]
        out[">=10x naive"] = (ratio >= 10, f"{ratio:.1f}x")
    if db == "sqlite" and n == 1_000_000:
        out["<=60s"] = (row["flexbill_s"] <= 60, f"{row['flexbill_s']:.0f}s")
    return out


def bench_one(db: str, n: int, args, rows: list[dict], naive_rate: dict) -> dict:
    label = f"{db} {size_label(n)}"
    console.rule(f"[bold]{label}")
    url = url_for(db, n)
    record = {"db": db, "n": n, "url": url}
    console.print(f"  load {load()}", highlight=False)
    create_fresh(db, n)
    first = list(DATES.values())[0]
    gen = child(
        [PYTHON, "-m", "bench.generate", "--db", url, "--n", str(n), "--seed", str(args.seed), "--date", str(first)],
        f"generate {label} (load + prepare {first})",
        log_path(db, n, "generate"),
    )
    if gen["code"]:
        raise Failed(f"generate {label} failed:\n{gen['output'][-3000:]}")
    record.update(
        generate_s=round(gen["seconds"], 1),
        generate_rss_mib=round(gen["rss_mib"]),
        disk_after_generate_bytes=disk_bytes(db, n),
    )
    console.print(f"    disk: {record['disk_after_generate_bytes'] / 2**20:.0f} MiB", highlight=False)
    failures = []
    for i, (kind, d) in enumerate(DATES.items()):
        row = {"db": db, "n": n, "date_kind": kind, "date": str(d), "load_before": load(), "commit": _commit()}
        if i > 0:
            prep = child(
                [
                    PYTHON,
                    "-m",
                    "bench.generate",
                    "--db",
                    url,
                    "--n",
                    str(n),
                    "--seed",
                    str(args.seed),
                    "--date",
                    str(d),
                    "--prepare-only",
                ],
                f"prepare {label} for {d}",
                log_path(db, n, f"prepare_{kind}"),
            )
            if prep["code"]:
                raise Failed(f"prepare {label} {d} failed:\n{prep['output'][-3000:]}")
        # the billing run (rules, owed, filter, invoices, GX gates, write, active-user report), then finance's
        # data-quality report (which `flexbill run` writes by default) measured on its own
        fb = flexbill_run(url, d, f"flexbill run {label} {d}", log_path(db, n, f"flexbill_{kind}"))
        engine = re.search(r"\[(\d+\.\d+)s\]", fb["output"])
        row.update(
            flexbill_s=round(fb["seconds"], 2),
            flexbill_engine_s=float(engine.group(1)) if engine else None,
            flexbill_rss_mib=round(fb["rss_mib"]),
        )
        # the same date again with unchanged inputs (an analyst's rerun, a cleared DAG run): it must change nothing
        before = documents(url, d)
        rr = flexbill_run(url, d, f"flexbill rerun (unchanged inputs) {label} {d}", log_path(db, n, f"rerun_{kind}"))
        row.update(rerun_s=round(rr["seconds"], 2), rerun_rss_mib=round(rr["rss_mib"]))
        row["rerun_kept"] = "reads changed since its latest publish" in rr["output"]  # not recomputed
        row["rerun_unchanged"] = documents(url, d) == before
        if not row["rerun_unchanged"]:
            failures.append(f"{label} {d}: a rerun with unchanged inputs changed the date's documents")
        if n > args.report_max:
            row["report_skipped"] = f"over --report-max {size_label(args.report_max)}"
        else:
            settle(url)
            rp = child(
                [
                    FLEXBILL,
                    "report",
                    "--date",
                    str(d),
                    "--db",
                    url,
                    "--out",
                    str(VAR / "reports"),
                    "--gx-dir",
                    str(VAR / "gx"),
                ],
                f"flexbill report {label} {d}",
                log_path(db, n, f"report_{kind}"),
                env={"COLUMNS": "200"},
            )
            if rp["code"]:
                raise Failed(f"flexbill report {label} {d} failed:\n{rp['output'][-3000:]}")
            row.update(report_s=round(rp["seconds"], 2), report_rss_mib=round(rp["rss_mib"]))
        row["stats"] = run_stats(url, d)
        if db == "postgresql":
            console.print(f"  [dim]{time.strftime('%H:%M:%S')}[/] anchor {label} {d} ...", highlight=False)
            settle(url)
            row["anchor_s"] = round(run_anchor(url, d), 2)
            console.print(f"    anchor: {row['anchor_s']:.1f}s", highlight=False)
            row["check_anchor"] = compare(url, d, "bench_anchor")
        estimate = naive_rate.get(db, 0) * n
        if args.no_naive:
            row["naive_skipped"] = "--no-naive"
        elif estimate > args.naive_limit:
            row["naive_skipped"] = (
                f"estimated {estimate / 60:.0f} min from the last size measured (> {args.naive_limit / 60:.0f} min)"
            )
            console.print(f"    naive skipped: {row['naive_skipped']}", highlight=False)
        else:
            settle(url)
            nv = child(
                [PYTHON, "-m", "bench.naive", "--db", url, "--date", str(d)],
                f"naive {label} {d}",
                log_path(db, n, f"naive_{kind}"),
            )
            if nv["code"]:
                raise Failed(f"naive {label} {d} failed:\n{nv['output'][-3000:]}")
            row.update(naive_s=round(nv["seconds"], 2), naive_rss_mib=round(nv["rss_mib"]))
            naive_rate[db] = max(naive_rate.get(db, 0), nv["seconds"] / n)
            row["check_naive"] = compare(url, d, "naive_invoice_lines")
        row["load_after"] = load()
        for check in ("check_anchor", "check_naive"):
            c = row.get(check)
            if c and not c["equal"]:
                failures.append(
                    f"{label} {d} {check}: {c['only_flexbill']} lines only in flexbill, "
                    f"{c['only_other']} only in the other; e.g. flexbill {c['examples_only_flexbill'][:3]}"
                    f" / other {c['examples_only_other'][:3]}"
                )
                console.print(f"[bold red]MISMATCH[/] {failures[-1]}", highlight=False)
        earlier = json.loads(Path(args.baseline).read_text())["rows"] if args.baseline else []
        row["targets"] = {k: {"met": bool(v[0]), "value": v[1]} for k, v in targets(row, rows + earlier).items()}
        rows.append(row)
        save_partial(args, rows, record)
    record["disk_after_runs_bytes"] = disk_bytes(db, n)
    if not args.keep:
        drop(db, n)
    record["failures"] = failures
    return record


_RUNS: list[dict] = []


def save_partial(args, rows, record) -> None:
    """Write what is known so far (a long run that dies keeps its finished rows)."""
    write_json(args.out, rows, _RUNS + [record])


def _commit() -> str | None:
    """The flexbill commit measured (with '+dirty' when plugins/flexbill has uncommitted changes)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "plugins/flexbill", "include"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def write_json(path: str, rows: list[dict], runs: list[dict]) -> None:
    pg_version = None
    try:
        with pg_connect(PG_ADMIN_URL, autocommit=True) as conn:
            pg_version = conn.execute("show server_version").fetchone()[0]
    except Exception:  # noqa: BLE001 - PostgreSQL not reachable: the SQLite rows stand
        pass
    doc = {
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "postgresql": pg_version,
            "platform": platform.platform(),
        },
        "commit": _commit(),
        "dates": {k: str(v) for k, v in DATES.items()},
        "runs": runs,
        "rows": rows,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=1, default=str) + "\n")


def _s(v, fmt="{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def print_table(rows: list[dict], runs: list[dict]) -> None:
    t = Table(title="flexbill benchmark (seconds are wall time; RSS is the child's peak)", show_lines=False)
    for col in [
        "db",
        "N",
        "date",
        "flexbill s",
        "engine s",
        "RSS MiB",
        "rerun s",
        "report s",
        "report MiB",
        "anchor s",
        "fb/anchor",
        "naive s",
        "naive/fb",
        "lines",
        "skipped",
        "equal",
        "targets",
        "load",
    ]:
        t.add_column(col, justify="right" if col not in ("db", "date", "targets", "equal") else "left")
    for r in rows:
        ratio_a = r["flexbill_s"] / r["anchor_s"] if r.get("anchor_s") else None
        ratio_n = r["naive_s"] / r["flexbill_s"] if r.get("naive_s") else None
        checks = []
        for key, name in (("check_anchor", "anchor"), ("check_naive", "naive")):
            if r.get(key):
                checks.append(f"{name} {'ok' if r[key]['equal'] else 'DIFF'}")
        tg = ", ".join(f"{k} {'met' if v['met'] else 'MISSED'} ({v['value']})" for k, v in r["targets"].items())
        t.add_row(
            r["db"],
            size_label(r["n"]),
            f"{r['date']}",
            _s(r["flexbill_s"]),
            _s(r.get("flexbill_engine_s")),
            _s(r["flexbill_rss_mib"], "{:.0f}"),
            _s(r.get("rerun_s")),
            _s(r.get("report_s")),
            _s(r.get("report_rss_mib"), "{:.0f}"),
            _s(r.get("anchor_s")),
            _s(ratio_a, "{:.1f}x"),
            _s(r.get("naive_s")) if not r.get("naive_skipped") else "skipped",
            _s(ratio_n, "{:.1f}x"),
            f"{r['stats'].get('lines', 0):,}",
            f"{r['stats'].get('contracts_skipped', 0):,}",
            ", ".join(checks) or "-",
            tg or "-",
            r["load_before"].split()[0] + "/" + r["load_after"].split()[0],
        )
    console.print(t)
    g = Table(title="generation (per database and size)")
    for col in ["db", "N", "generate s", "disk after load", "disk after runs"]:
        g.add_column(col, justify="right")
    for r in runs:
        g.add_row(
            r["db"],
            size_label(r["n"]),
            _s(r.get("generate_s")),
            _s(r.get("disk_after_generate_bytes", 0) / 2**20, "{:.0f} MiB"),
            _s((r.get("disk_after_runs_bytes") or 0) / 2**20, "{:.0f} MiB"),
        )
    console.print(g)


def print_compare(rows: list[dict], old_path: str) -> None:
    old = json.loads(Path(old_path).read_text())["rows"]
    index = {(r["db"], r["n"], r["date_kind"]): r for r in old}
    t = Table(title=f"before ({old_path}) -> after")
    for col in ["db", "N", "date", "flexbill s", "RSS MiB", "anchor s", "naive s"]:
        t.add_column(col, justify="right")
    for r in rows:
        o = index.get((r["db"], r["n"], r["date_kind"]))
        if not o:
            continue

        def delta(key, fmt="{:.1f}", o=o, r=r):
            a, b = o.get(key), r.get(key)
            if a is None or b is None:
                return "-"
            pct = (b - a) / a * 100 if a else 0
            return f"{fmt.format(a)} -> {fmt.format(b)} ({pct:+.0f}%)"

        t.add_row(
            r["db"],
            size_label(r["n"]),
            r["date"],
            delta("flexbill_s"),
            delta("flexbill_rss_mib", "{:.0f}"),
            delta("anchor_s"),
            delta("naive_s"),
        )
    console.print(t)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100k,1m", help="comma-separated contract counts (100k, 1m, 10m, 2500...)")
    ap.add_argument("--dbs", default="postgresql,sqlite", help="postgresql, sqlite or both")
    ap.add_argument("--out", default="bench/results.json")
    ap.add_argument("--compare", help="an earlier results JSON: print before/after deltas")
    ap.add_argument("--keep", action="store_true", help="keep the generated databases")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument(
        "--naive-limit",
        type=float,
        default=1800,
        help="skip the naive baseline where its estimate from the last size measured is over this many seconds [1800]",
    )
    ap.add_argument("--no-naive", action="store_true")
    ap.add_argument(
        "--baseline",
        help="an earlier results JSON whose rows serve the targets that compare sizes "
        "(10M within 11x the 1M time) when this run does not measure the smaller size",
    )
    ap.add_argument(
        "--report-max",
        type=parse_size,
        default=10**9,
        help="measure `flexbill report` only up to this size",
    )
    args = ap.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    dbs = [d.strip() for d in args.dbs.split(",") if d.strip()]
    rows: list[dict] = []
    naive_rate: dict = {}
    failures = []
    console.print(
        f"flexbill benchmark: sizes {', '.join(map(size_label, sizes))} on {', '.join(dbs)}; "
        f"load {load()} on {os.cpu_count()} cpus",
        highlight=False,
    )
    for db in dbs:
        for n in sorted(sizes):
            record = bench_one(db, n, args, rows, naive_rate)
            _RUNS.append(record)
            failures += record["failures"]
            write_json(args.out, rows, _RUNS)
    print_table(rows, _RUNS)
    if args.compare:
        print_compare(rows, args.compare)
    console.print(f"results: {args.out}", highlight=False)
    if failures:
        console.print("[bold red]FAILED[/]: flexbill's lines differ from the anchor's or the naive baseline's:")
        for f in failures:
            console.print(f"  {f}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except Failed as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)
