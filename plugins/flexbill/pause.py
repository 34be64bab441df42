"""Test hook: FLEXBILL_PAUSE_AT=<point> makes a run pause there (FLEXBILL_PAUSE_SECONDS, default 30), printing
"paused at <point>", so the fault suite can SIGKILL it inside its transaction.  Points: locked, after_rules,
mid_write, before_commit (a run), mid_correction (a credit note written, its corrective invoice not yet),
mid_finalize (numbers taken, invoices not yet updated)."""

from __future__ import annotations

import os
import time


def pause(point: str) -> None:
    if os.environ.get("FLEXBILL_PAUSE_AT") == point:
        print(f"paused at {point}", flush=True)
        time.sleep(float(os.environ.get("FLEXBILL_PAUSE_SECONDS", "30")))
