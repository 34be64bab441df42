"""The benchmark harness at a tiny size, on both databases: it must keep working, and its equality checks are an
independent test of billing: a hand-written SQL statement (the anchor, PostgreSQL) and a naive pandas baseline
compute the same date's invoice lines from the same generated operator, and must agree with flexbill's."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.processes import ROOT, clean_env


def test_the_benchmark_runs_and_all_three_bill_the_same_lines(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--sizes",
            "3000",
            "--dbs",
            "postgresql,sqlite",
            "--report-max",
            "0",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env={**clean_env(), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["db"], r["date_kind"]) for r in rows] == [
        ("postgresql", "first-of-month"),
        ("postgresql", "mid-month"),
        ("sqlite", "first-of-month"),
        ("sqlite", "mid-month"),
    ]
    for r in rows:
        assert r["stats"]["lines"] > 0 and r["flexbill_s"] > 0 and r["flexbill_rss_mib"] > 0, r
        assert r["rerun_s"] > 0 and r["rerun_unchanged"] is True, r  # a rerun with unchanged inputs changes nothing
        assert r["rerun_kept"] is True, r  # ... and keeps D's outputs on both databases (the harness's resets too)
        assert r["check_naive"]["equal"], r["check_naive"]
        assert r["report_skipped"], r
        if r["db"] == "postgresql":
            assert r["check_anchor"]["equal"], r["check_anchor"]
    by_date = {}
    for r in rows:  # both databases bill the same lines for the same generated data
        by_date.setdefault(r["date"], set()).add((r["stats"]["lines"], r["stats"]["lines_amount"]))
    assert all(len(v) == 1 for v in by_date.values()), by_date
    first, mid = (rows[0]["stats"]["lines"], rows[1]["stats"]["lines"])
    assert first > mid  # the first of the month is the peak
    table = subprocess.run(
        [sys.executable, "-m", "bench.table", str(out)],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert table.count("\n| postgresql | 3k |") == 2 and table.count("\n| sqlite | 3k |") == 2, table
