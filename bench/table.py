"""The README's benchmark table, in Markdown, from one or more results files of bench.run.

    python -m bench.table bench/results.json bench/results-10m.json

Rows keep the files' order; a size measured in two files is shown from the later file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import size_label

COLUMNS = [
    "db",
    "N",
    "date",
    "run s",
    "run RSS MiB",
    "unchanged rerun s",
    "anchor s",
    "run / anchor",
    "naive s",
    "naive / run",
    "report s",
    "report RSS MiB",
    "lines",
    "targets",
]


def _f(value, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def row_cells(r: dict) -> list[str]:
    naive = r.get("naive_s")
    targets = "; ".join(
        f"{name} {'met' if t['met'] else '**missed**'} ({t['value']})" for name, t in r.get("targets", {}).items()
    )
    return [
        r["db"],
        size_label(r["n"]),
        f"{r['date']} ({'1st' if r['date_kind'] == 'first-of-month' else 'mid'})",
        _f(r["flexbill_s"]),
        _f(r["flexbill_rss_mib"], "{:,.0f}"),
        _f(r.get("rerun_s")),
        _f(r.get("anchor_s")),
        _f(r["flexbill_s"] / r["anchor_s"] if r.get("anchor_s") else None, "{:.1f}x"),
        _f(naive, "{:.0f}") if naive else ("skipped" if r.get("naive_skipped") else "-"),
        _f(naive / r["flexbill_s"] if naive else None, "{:.1f}x"),
        _f(r.get("report_s")),
        _f(r.get("report_rss_mib"), "{:,.0f}"),
        f"{r.get('stats', {}).get('lines', 0):,}",
        targets or "-",
    ]


def markdown(paths: list[str]) -> str:
    rows: dict[tuple, dict] = {}
    for path in paths:
        for r in json.loads(Path(path).read_text())["rows"]:
            rows[(r["db"], r["n"], r["date_kind"])] = r
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(row_cells(r)) + " |" for r in rows.values()]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        sys.exit("usage: python -m bench.table RESULTS.json [MORE.json ...]")
    print(markdown(paths))


if __name__ == "__main__":
    main()
