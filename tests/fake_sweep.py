"""A sweep run through the real command line and sweep loop with a fake executor that stores results of the right shape
instead of training (tests of what happens around training: trackers, export). Imported by test_tracking and
test_export."""
from __future__ import annotations

import math
from pathlib import Path

import mupbench.executors
from mupbench.cli import main

ENV = {"device": "cpu (1 thread)", "versions": {"torch": "2.13.0+cpu"}, "git_rev": "abc123"}
# width 16 at the largest LR diverges under SP; width 32 at the smallest LR fails under SP
DIVERGES = ("sp", 16, -6)
FAILS = ("sp", 32, -8)


def result(spec) -> dict:
    key = (spec.model.parameterization, spec.model.width, spec.train.log2_lr)
    loss = 3.0 + 0.1 * (spec.train.log2_lr + 7) ** 2 - 0.1 * math.log2(spec.model.width) + 0.01 * spec.train.seed
    steps = spec.train.steps
    curve = [(step, "train", loss + 1.0 / step) for step in range(5, steps + 1, 5)]
    curve += [(step, "val", loss + 0.5 / step) for step in (10, 20, steps)]
    if key == FAILS:
        return {"status": "failed", "final_val_loss": None, "wall_s": 0.5, "error": "RuntimeError: boom at step 3"}
    if key == DIVERGES:
        return {"status": "diverged", "final_val_loss": math.inf, "wall_s": 0.25, "steps_done": 10,
                "curve": [(5, "train", loss), (10, "train", math.inf)]}
    return {"status": "ok", "final_val_loss": curve[-1][2], "wall_s": 1.0 + spec.model.width / 100, "steps_done": steps,
            "n_params": 1000 * spec.model.width, "tokens_per_s": 1234.5, "curve": curve}


class FakeExecutor:
    """Stores `result(spec)` for every spec, then tells `on_stored` — as the real executors do in the driver."""

    def __init__(self):
        self.trained: list[str] = []

    def describe(self):
        return "a fake executor"

    def train(self, store, specs, progress=True, on_stored=None):
        for spec in specs:
            store.record(spec, result(spec), ENV)
            self.trained.append(spec.run_hash)
            if on_stored is not None:
                on_stored(spec)

    def close(self):
        pass


def run_fake_sweep(monkeypatch, corpus_file: Path, out: Path, *extra: str, seeds: int = 2) -> tuple[int, FakeExecutor]:
    """`mupbench run` of the smoke suite at cpu-micro, widths 16 and 32, LRs 2^-8..2^-6, with the fake executor."""
    executor = FakeExecutor()
    monkeypatch.setattr(mupbench.executors, "make_executor", lambda *a, **k: executor)
    status = main(["run", "--suite", "smoke", "--preset", "cpu-micro", "--widths", "16,32", "--lrs", "2^-8,2^-7,2^-6",
                   "--seeds", str(seeds), "--data", str(corpus_file), "--out", str(out), "--quiet", *extra])
    return status, executor
