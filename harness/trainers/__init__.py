"""Trainers: what trains one run. An executor hands a run spec to `train_spec`, which returns the run's result record
and writes nothing but checkpoints and the run's log; the executor stores the record (Store.record).

Three trainers, chosen by the spec (`extra["trainer"]`, set by `with_trainer`):

    built-in   mupbench.train: the built-in model (or `--model`'s) with mupbench's parameterization, optimizer, data
    callable   `--trainer file.py:train` or `package.module:train`: a team's own Python training function
    command    `--trainer-command 'python train.py --width {width} --lr {lr} ... --result {result}'`: a team's own
               training script, one subprocess per run

A user's trainer gets one run's settings (`settings(spec)`: width, depth, lr, log2_lr, seed, steps, tokens, ablation,
parameterization, … as a plain dict, or as `{placeholders}` of the command) and returns the final validation loss.
The protocol (docs/your-trainer.md) is in mupbench.trainers.external.

Failure is data: an exception, a non-zero exit, a timeout, a missing or malformed result comes back as a `failed`
record with the reason (and the log's tail); a NaN or infinite loss is `diverged`.
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path

from mupbench.config import TRAINER_SPEC_KEY, RunSpec


def is_external(spec: RunSpec) -> bool:
    """The run is trained by a user's trainer, not mupbench's loop."""
    return TRAINER_SPEC_KEY in (spec.extra or {})


def train_spec(spec: RunSpec, tokens, device: str, checkpoints: Path | None = None, logs: Path | None = None) -> dict:
    """Train one run and return its result record, writing nothing but checkpoints (with `checkpoints`, a WSD
    family's, mupbench.branches) and, for a user's trainer, its log under `logs`: the executor stores the record.
    A crash in the run (a bug, out of memory, user code exiting) is a result too, `failed` with its traceback."""
    from mupbench.errors import CodeChanged

    start = time.perf_counter()
    try:
        if is_external(spec):
            from mupbench.trainers.external import train_external

            result = train_external(spec, device, logs)
        else:
            from mupbench.train import train

            result = train(spec, tokens, device, checkpoints=checkpoints)
    except CodeChanged:  # not the run's failure: the sweep stops once and says why
        raise
    except (Exception, SystemExit) as e:  # a crash in one run is stored as failed; the sweep goes on
        result = {"status": "failed", "final_val_loss": None, "error": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc()}
    result["wall_s"] = time.perf_counter() - start
    return result
