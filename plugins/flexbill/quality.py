"""Finance's data-quality record of a billing date: Great Expectations results kept on disk, with Data Docs.

The two suites are versioned in the repository and ship inside the package as data (flexbill/gx_suites/
flexbill_inputs.json and flexbill_outputs.json; include/gx/expectations is a symlink to that folder), generated
from flexbill.validation by scripts/write-gx-suites and checked by a test:

  flexbill_inputs   the source snapshot as of D's cutoff; a failing row is quarantined;
  flexbill_outputs  D's invoices, lines, skips and active-user report; a failure blocks publishing.

`validate_date` runs both through checkpoints of a file-based GX context under the GX directory
(--gx-dir, $FLEXBILL_GX_DIR, else var/gx), which keeps every validation result and rebuilds the
Data Docs site.  Everything is added with add_or_update, so rerunning a date never fails on
"already exists"; each validation is kept under the run name `flexbill-<D>`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from importlib.resources import files
from pathlib import Path

from sqlalchemy.engine import Connection

from . import validation

# Package data (pyproject.toml), read through importlib.resources wherever flexbill is installed; never written
# at run time (write_suites is the developer's regeneration step and writes where it is told).
SUITES_DIR = files("flexbill") / "gx_suites"
SUITE_NAMES = ("flexbill_inputs", "flexbill_outputs")


def gx_dir(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("FLEXBILL_GX_DIR") or "var/gx").resolve()


def load_suite(name: str) -> dict:
    """The suite as committed in the repository (shipped in the package: flexbill/gx_suites/<name>.json)."""
    return json.loads((SUITES_DIR / f"{name}.json").read_text(encoding="utf-8"))


def write_suites(directory: str | os.PathLike) -> list[Path]:
    """Regenerate the suites from flexbill.validation into `directory` (after a rule changes: bump SUITE_VERSION).
    A development step: scripts/write-gx-suites writes them into the checkout's plugins/flexbill/gx_suites, to be
    committed; nothing calls this at run time, and an installed package is never written to."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SUITE_NAMES:
        path = directory / f"{name}.json"
        path.write_text(json.dumps(validation.suite_json(name), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


@dataclass
class Check:
    suite: str
    expectation: str
    column: str
    finance: str
    success: bool
    unexpected: int


@dataclass
class DateQuality:
    billing_date: date
    success: dict = field(default_factory=dict)  # suite -> bool
    checks: list = field(default_factory=list)  # [Check]
    evaluated_rows: dict = field(default_factory=dict)  # suite -> rows validated
    docs_index: Path | None = None


def published_frames(conn: Connection, d: date) -> dict:
    """D's published outputs as the frames the `flexbill_outputs` suite reads (amounts in cents)."""
    import pandas as pd
    from sqlalchemy import select

    from .db import extract
    from .db import schema as s
    from .frames import lookup

    live = (s.invoices.c.billing_date == d) & (s.invoices.c.status != "credited")  # credited ones are cancelled
    ids = select(s.invoices.c.invoice_id).where(live)
    lines = extract.read_table(conn, s.invoice_lines, where=s.invoice_lines.c.invoice_id.in_(ids))
    lines["full_cents"] = lines["unit_price_cents"] * lines["quantity"]
    invoices = extract.read_table(conn, s.invoices, where=live)
    sums = lines.groupby("invoice_id")["amount_cents"].sum()
    locations = extract.read_table(conn, s.locations)
    invoices = invoices.assign(
        location_currency=lookup(invoices["location_id"], locations, "currency"),
        lines_cents=invoices["invoice_id"].map(sums).fillna(0).astype("int64"),
        subtotal_plus_tax=invoices["subtotal_cents"] + invoices["tax_cents"],
    )
    skipped = extract.read_table(conn, s.skipped_contracts, where=s.skipped_contracts.c.billing_date == d)
    report = extract.read_table(conn, s.active_user_report, where=s.active_user_report.c.report_date == d)
    report = report.assign(active_plus_suspended=report["active_users"] + report["suspended_members"])
    return {
        "invoice_lines": lines.reset_index(drop=True),
        "invoices": invoices,
        "skipped_contracts": skipped,
        "active_user_report": pd.DataFrame(report),
    }


class _Context:
    """The file-based GX context: suites, validation definitions and checkpoints, created idempotently."""

    def __init__(self, root: Path) -> None:
        gx = validation._Gx.get().gx  # analytics and progress bars are configured there
        from great_expectations.checkpoint import UpdateDataDocsAction

        root.mkdir(parents=True, exist_ok=True)
        self.gx = gx
        self.context = gx.get_context(mode="file", project_root_dir=str(root))
        try:
            from great_expectations.data_context.types.base import ProgressBarsConfig

            self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        except (ImportError, AttributeError):  # pragma: no cover - older GX
            pass
        source = self.context.data_sources.add_or_update_pandas("flexbill")
        self.checkpoints = {}
        for name in SUITE_NAMES:
            try:
                asset = source.get_asset(name)
            except LookupError:
                asset = source.add_dataframe_asset(name)
            try:
                batch = asset.get_batch_definition(name)
            except (KeyError, LookupError, ValueError):
                batch = asset.add_batch_definition_whole_dataframe(name)
            committed = load_suite(name)
            suite = self.context.suites.add_or_update(
                gx.ExpectationSuite(
                    name=name,
                    meta=committed.get("meta", {}),
                    expectations=[
                        getattr(gx.expectations, _class_name(e["type"]))(**e["kwargs"], meta=e.get("meta"))
                        for e in committed["expectations"]
                    ],
                )
            )
            definition = self.context.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=name, data=batch, suite=suite)
            )
            self.checkpoints[name] = self.context.checkpoints.add_or_update(
                gx.Checkpoint(
                    name=name,
                    validation_definitions=[definition],
                    actions=[UpdateDataDocsAction(name="update_data_docs")],
                    # BASIC: counts and a sample of failing values, which is what the report and Data Docs show;
                    # SUMMARY's index lists cost twice the time on a 1M-contract snapshot (15 s -> 8 s measured)
                    result_format={"result_format": "BASIC"},
                )
            )

    def docs_index(self) -> Path | None:
        for site in self.context.get_docs_sites_urls():
            url = site.get("site_url") or ""
            if url.startswith("file://"):
                return Path(url[len("file://") :])
        return None


def _class_name(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


def validate_date(
    conn: Connection, d: date, directory: str | os.PathLike | None = None, inputs=None, run_name: str | None = None
) -> DateQuality:
    """Validate D's inputs (as of its cutoff; `inputs`: validation.stacked_inputs of that snapshot when the caller
    has read it) and D's published outputs; keep the results, rebuild Data Docs."""
    import pandas as pd
    from great_expectations.core.run_identifier import RunIdentifier

    from .clock import cutoff_of
    from .db import extract

    frames = {
        "flexbill_inputs": inputs
        if inputs is not None
        else validation.stacked_inputs(extract.snapshot(conn, cutoff_of(d))),
        "flexbill_outputs": validation.stacked_outputs(published_frames(conn, d)),
    }
    ctx = _Context(gx_dir(directory))
    out = DateQuality(billing_date=d)
    run_time = datetime.now(UTC)
    for name, frame in frames.items():
        frame = pd.DataFrame(frame).reset_index(drop=True)
        result = ctx.checkpoints[name].run(
            batch_parameters={"dataframe": frame},
            run_id=RunIdentifier(run_name=run_name or f"flexbill-{d}", run_time=run_time),
        )
        out.success[name] = bool(result.success)
        out.evaluated_rows[name] = len(frame)
        for validation_result in result.run_results.values():
            for res in validation_result.results:
                config = res.expectation_config
                kwargs = config.kwargs
                column = kwargs.get("column") or ", ".join(
                    c for c in [kwargs.get("column_A"), kwargs.get("column_B"), *(kwargs.get("column_list") or [])] if c
                )
                out.checks.append(
                    Check(
                        suite=name,
                        expectation=config.type,
                        column=column.replace("__", "."),
                        finance=(config.meta or {}).get("finance", ""),
                        success=bool(res.success),
                        unexpected=int((res.result or {}).get("unexpected_count") or 0),
                    )
                )
    out.docs_index = ctx.docs_index()
    return out
