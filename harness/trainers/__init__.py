"""Trainers: what trains one run. An executor hands a run spec to `train_spec`, which returns its result record (status
ok, diverged or failed; the final validation loss; the loss curve) and writes nothing but checkpoints; the executor
stores the record.
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path

from mupbench.config import RunSpec


def train_spec(spec: RunSpec, tokens, device: str, checkpoints: Path | None = None) -> dict:
    """Train one run and return its result record, writing nothing but checkpoints (with `checkpoints`, a WSD
    family's, mupbench.branches): the executor stores it (Store.record).
    A crash in the run (a bug, out of memory, user code exiting) is a result too, `failed` with its traceback."""
    from mupbench.train import train

    start = time.perf_counter()
    try:
        result = train(spec, tokens, device, checkpoints=checkpoints)
    except (Exception, SystemExit) as e:  # a crash in one run is stored as failed; the sweep goes on
        result = {"status": "failed", "final_val_loss": None, "error": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc()}
    result["wall_s"] = time.perf_counter() - start
    return result
