"""Calibration by simulation: whole sweeps of the real planner (mupbench.plan: the coarse grid, grid extensions, seed
neighbourhoods, sequential seeds) fed by the synthetic trainer (mupbench.calibration.synthetic), judged by the real
analysis (mupbench.transfer.analyze_group) — in memory, without the store, thousands of sweeps in a minute.

    Design                                   what is simulated: seed 0's grid (a preset's), seeds, --max-seeds, δ
    world(design, drift, draw)               one simulated sweep's landscape (mupbench.calibration.synthetic)
    simulate_sweep(design, noise)            one sweep: its Verdict, the runs it trained, their losses
    error_rates(design, drift, draws)        P(transfers / inconclusive / shifts) at a true drift, and runs per row

The loop is run_sweep's (mupbench.sweep) with a dict for the store: to_train → train → next_round, until the planner
asks for nothing; tests/test_calibration.py checks that run_sweep itself, with an in-process executor training the
synthetic trainer into a real store, reaches the same runs and verdict.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mupbench import plan
from mupbench.calibration import synthetic
from mupbench.config import DataSpec, RunSpec, axis_value, spec_axis
from mupbench.transfer import DEFAULT_TOLERANCE, VERDICT_CODES, Verdict, analyze_group

DATA = DataSpec("synthetic", "0" * 64, 0, 256)
EXTEND = 2  # mupbench run's default --extend-grid
CPU_TINY_TOP_LOG2_LR = -4.0  # the top of cpu-tiny's LR grid, where the noise was measured


@dataclass(frozen=True)
class Design:
    """A sweep as `mupbench run` plans it: `specs` is seed 0's coarse grid of one (ablation, parameterization) — a
    preset's, `ablations.plan([(ablation, (parameterization,))], preset, DATA, seeds=1)` —; `seeds`, `max_seeds`
    (sequential seeds up to it), δ and the grid extension as `run`'s options."""

    specs: tuple[RunSpec, ...]
    seeds: int = 3
    max_seeds: int = 3
    tolerance: float = DEFAULT_TOLERANCE
    extend: int = EXTEND
    optimum_log2_lr: float | None = None  # the true optimum at the narrowest scale; None: where cpu-tiny's measured
    #                                       one sits relative to the top of the grid

    @property
    def top_log2_lr(self) -> float:
        return max(s.train.log2_lr for s in self.specs)

    @property
    def reference_scale(self) -> int:
        return min(axis_value(s, spec_axis(s)) for s in self.specs)

    @property
    def axis(self) -> str:
        return spec_axis(self.specs[0])


def settings(spec: RunSpec) -> dict:
    """The trainer protocol's settings of a run that the synthetic trainer reads."""
    m, t = spec.model, spec.train
    return {"width": m.width, "depth": m.depth, "tokens": t.steps * t.tokens_per_step, "lr": t.lr,
            "log2_lr": t.log2_lr, "seed": t.seed, "steps": t.steps, "ablation": spec.ablation,
            "parameterization": m.parameterization, "base_width": m.base_width}


def world(design: Design, drift: float, draw: int, noise: dict | None = None) -> dict:
    """The synthetic landscape of one simulated sweep: `noise` (default the measured one) with the true `drift`, its
    own random numbers, and the optimum (the design's, by default where cpu-tiny's measured one sits relative to the
    top of its grid) moved by up to half a grid step so it is not tied to the grid."""
    base = dict(noise or synthetic.DEFAULTS)
    rng = np.random.default_rng([draw, 7])
    centre = design.optimum_log2_lr
    if centre is None:
        centre = design.top_log2_lr + synthetic.DEFAULTS["optimum_log2_lr"] - CPU_TINY_TOP_LOG2_LR
    return {**base, "axis": design.axis, "drift": drift, "noise_seed": draw,
            "reference_scale": design.reference_scale, "optimum_log2_lr": centre + float(rng.uniform(-0.5, 0.5))}


def simulate_sweep(design: Design, noise: dict) -> tuple[Verdict, int, dict[str, float], list[RunSpec]]:
    """One sweep of `design` in the landscape `noise`: (its verdict, runs trained, run hash → loss, every spec)."""
    seeds, max_seeds = design.seeds, max(design.seeds, design.max_seeds)
    specs = list(design.specs)
    loss: dict[str, float] = {}
    rounds = 0
    while True:
        for s in plan.to_train(specs, {h: "ok" for h in loss}):
            loss[s.run_hash] = synthetic.loss(settings(s), noise)
        more, near = plan.next_round(specs, loss, seeds, extend=rounds < design.extend, max_seeds=max_seeds,
                                     tolerance=design.tolerance)
        if not more and not near:
            break
        if more:
            rounds += 1
        specs = specs + more + near
    return verdict_of(specs, loss, design.tolerance), len(loss), loss, specs


def verdict_of(specs: list[RunSpec], loss: dict[str, float], tolerance: float) -> Verdict:
    """The analysis' verdict on the finished runs of one (ablation, parameterization)."""
    unique = {s.run_hash: s for s in specs}.values()
    axis = spec_axis(next(iter(unique)))
    frame = pd.DataFrame([{"ablation": s.ablation, "parameterization": s.model.parameterization,
                           axis: axis_value(s, axis), "log2_lr": s.train.log2_lr, "seed": s.train.seed,
                           "final_val_loss": loss[s.run_hash]} for s in unique if s.run_hash in loss])
    first = frame.iloc[0]
    return analyze_group(first["ablation"], first["parameterization"], frame, tolerance, axis=axis)


@dataclass
class Rates:
    drift: float
    draws: int
    transfers: float
    inconclusive: float
    shifts: float
    runs: float  # mean runs per row
    seeds: float  # mean seeds per row at the end
    covered: float  # share of decided draws whose interval holds the true drift

    def row(self) -> dict:
        return dataclasses.asdict(self)


def error_rates(design: Design, drift: float, draws: int, noise: dict | None = None, first_draw: int = 0) -> Rates:
    """The verdicts of `draws` simulated sweeps of `design` at a true drift (log2 LR per doubling)."""
    counts = dict.fromkeys(VERDICT_CODES, 0)
    runs = seeds = covered = intervals = 0
    for d in range(first_draw, first_draw + draws):
        v, n, _, _ = simulate_sweep(design, world(design, drift, d, noise))
        counts[v.verdict] += 1
        runs += n
        seeds += v.n_seeds
        if v.drift_interval is not None:
            intervals += 1
            covered += v.drift_interval[0] <= drift <= v.drift_interval[1]
    return Rates(drift, draws, counts["transfers"] / draws, counts["inconclusive"] / draws, counts["shifts"] / draws,
                 runs / draws, seeds / draws, covered / intervals if intervals else math.nan)
