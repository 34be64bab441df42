"""GX lets go of what it validated: its execution engine keeps every batch it loads (the whole checked frame) for
the life of the process, which held every source table's checked frame through the rest of a run."""

from __future__ import annotations

import gc
from datetime import date

from flexbill import validation
from flexbill.db.connect import init_db, make_engine
from flexbill.runner import run_billing_date
from tests.builders import Operator

D = date(2024, 3, 1)


def _alive_batches() -> list:
    gc.collect()
    return [o for o in gc.get_objects() if type(o).__name__ == "PandasBatchData"]


def _new_batches(earlier: list) -> list:
    """The GX batches alive now that were not in `earlier` (other GX users in this process, such as the finance
    report's own context, keep theirs)."""
    return [b for b in _alive_batches() if not any(b is e for e in earlier)]


def test_no_validated_frame_outlives_its_checks(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'gx.sqlite'}")
    init_db(engine)
    Operator(engine).one_contract(D, contract_id=7)
    earlier = _alive_batches()
    summary = run_billing_date(engine, D)  # the input checks, then the output gate
    assert summary.stats["lines"] == 1  # the checks ran over real rows
    assert _new_batches(earlier) == []
    manager = validation._Gx.get().source.get_execution_engine().batch_manager
    assert manager.batch_data_cache == {} and len(manager.batch_cache) == 0
    engine.dispose()


def test_the_reports_own_validation_leaves_no_frame_behind(tmp_path):
    """The report's fallback (a date published without kept checks) runs both suites through GX checkpoints in a
    file-based context: the stacked snapshot it validated must not stay alive through the report's exports."""
    from flexbill import quality

    engine = make_engine(f"sqlite:///{tmp_path / 'gx.sqlite'}")
    init_db(engine)
    Operator(engine).one_contract(D, contract_id=7)
    run_billing_date(engine, D)
    earlier = _alive_batches()
    with engine.connect() as conn:
        dq = quality.validate_date(conn, D, tmp_path / "gx")
    assert dq.evaluated_rows["flexbill_inputs"] > 0 and dq.evaluated_rows["flexbill_outputs"] > 0
    assert _new_batches(earlier) == []
    engine.dispose()
