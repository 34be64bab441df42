"""Finance's data-quality record of a billing date: Great Expectations results kept on disk, with Data Docs.

The two suites are versioned in the repository and ship inside the package as data (flexbill/gx_suites/
flexbill_inputs.json and flexbill_outputs.json; include/gx/expectations is a symlink to that folder), generated
from flexbill.validation by scripts/write-gx-suites and checked by a test:

  flexbill_inputs   the source snapshot as of D's cutoff; a failing row is quarantined;
  flexbill_outputs  D's invoices, lines, skips and active-user report; a failure blocks publishing.

A billing run validates both suites itself (flexbill.validation: the inputs to quarantine rows, the outputs
to gate the publish) and publishes what each check found, one row per expectation, into `data_quality` with
D's other outputs.  `kept_date` turns those rows into GX validation results in a file-based GX context under
the GX directory (--gx-dir, $FLEXBILL_GX_DIR, else var/gx), which keeps every validation result, and rebuilds
the Data Docs site from them: the report never validates the snapshot a second time.  `validate_date` is the
fallback for a date published without those rows (by a flexbill before them): it runs both suites through
checkpoints.  Everything is added with add_or_update, so rerunning a date never fails on "already exists";
each validation is kept under the run name `flexbill-<D>`.
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


def stored_checks(conn: Connection, d: date):
    """D's data_quality rows (the checks its latest publish ran), or None when they cannot stand for both suites
    as committed: none kept (a date published by an older flexbill), or kept under another suite version."""
    import pandas as pd
    from sqlalchemy import select

    from .db import schema as s

    dq = s.data_quality
    rows = conn.execute(select(dq).where(dq.c.billing_date == d).order_by(dq.c.suite, dq.c.position)).mappings().all()
    frame = pd.DataFrame([dict(r) for r in rows])
    if frame.empty or set(frame["suite_version"]) != {validation.SUITE_VERSION}:
        return None
    for name in SUITE_NAMES:
        rows = frame[frame["suite"] == name]
        committed = [(e["type"], _column(e["kwargs"])) for e in load_suite(name)["expectations"]]
        if rows["position"].tolist() != list(range(len(committed))):
            return None
        if list(zip(rows["expectation"], rows["column_name"])) != committed:
            return None
    return frame


def _column(kwargs: dict) -> str:
    """The column(s) an expectation reads, as one text: `column`, else `column_A, column_B`, else the list."""
    return kwargs.get("column") or ", ".join(
        c for c in [kwargs.get("column_A"), kwargs.get("column_B"), *(kwargs.get("column_list") or [])] if c
    )


def kept_date(
    conn: Connection, d: date, checks, directory: str | os.PathLike | None = None, run_name: str | None = None
) -> DateQuality:
    """D's quality from the checks its run kept (stored_checks): no second validation.  Each suite's result is
    written into the GX project as the validation of that run (run time: when it was validated, so a second
    report of the same run replaces its own result instead of adding one) and the Data Docs are rebuilt."""
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    ctx = _Context(gx_dir(directory))
    out = DateQuality(billing_date=d)
    identifiers = []
    for name in SUITE_NAMES:
        rows = checks[checks["suite"] == name].sort_values("position")
        committed = load_suite(name)["expectations"]
        when = rows["validated_at"].iloc[0].to_pydatetime().replace(tzinfo=UTC)
        run_id = RunIdentifier(run_name=run_name or f"flexbill-{d}", run_time=when)
        elements = int(rows["element_count"].iloc[0])
        results = []
        for row, expectation in zip(rows.itertuples(), committed):
            n = int(row.unexpected_count)
            config = ExpectationConfiguration(
                type=expectation["type"], kwargs=expectation["kwargs"], meta=expectation.get("meta")
            )
            results.append(
                ExpectationValidationResult(
                    success=bool(row.success),
                    expectation_config=config,
                    result={
                        "element_count": elements,
                        "unexpected_count": n,
                        "unexpected_percent": 100 * n / elements if elements else 0.0,
                        "partial_unexpected_list": [],
                    },
                )
            )
            out.checks.append(_check(name, config, bool(row.success), n))
        passed = sum(r.success for r in results)
        out.success[name] = passed == len(results)
        out.evaluated_rows[name] = elements
        result = ExpectationSuiteValidationResult(
            success=out.success[name],
            results=results,
            suite_name=name,
            statistics={
                "evaluated_expectations": len(results),
                "successful_expectations": passed,
                "unsuccessful_expectations": len(results) - passed,
                "success_percent": 100 * passed / len(results) if results else 100.0,
            },
            meta={
                "run_id": run_id,
                "validation_time": when,
                "active_batch_definition": {"datasource_name": "flexbill", "data_asset_name": name},
                "kept_by": "the billing run (flexbill data_quality): not validated again",
            },
        )
        suite_id = ExpectationSuiteIdentifier(name=name)
        result_id = ValidationResultIdentifier(
            expectation_suite_identifier=suite_id, run_id=run_id, batch_identifier=f"flexbill-{name}"
        )
        ctx.context.validation_results_store.store_validation_results(result, result_id, suite_id)
        identifiers += [result_id, suite_id]
    ctx.context.build_data_docs(resource_identifiers=identifiers)
    out.docs_index = ctx.docs_index()
    return out


def _check(suite: str, config, success: bool, unexpected: int) -> Check:
    return Check(
        suite=suite,
        expectation=config.type,
        column=_column(config.kwargs).replace("__", "."),
        finance=(config.meta or {}).get("finance", ""),
        success=success,
        unexpected=unexpected,
    )


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
                unexpected = int((res.result or {}).get("unexpected_count") or 0)
                out.checks.append(_check(name, res.expectation_config, bool(res.success), unexpected))
    out.docs_index = ctx.docs_index()
    validation.release_batches(ctx.context.data_sources.get("flexbill"))  # the stacked snapshot among them
    return out
