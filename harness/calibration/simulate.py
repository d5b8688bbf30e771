"""Calibration by simulation: whole sweeps of the real planner (mupbench.plan: the coarse grid, grid extensions, seed
neighbourhoods, sequential seeds) fed by the synthetic trainer (mupbench.calibration.synthetic), judged by the real
analysis (mupbench.transfer.analyze_group) — in memory, without the store, thousands of sweeps in a minute.

    simulate_sweep(design, noise, draw)      one sweep: its Verdict and how many runs it trained
    error_rates(design, drift, draws)        P(transfers / inconclusive / shifts) at a true drift, and runs per row
    Design                                   what is simulated: a preset's grids, seeds, --max-seeds, δ, extension

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


@dataclass(frozen=True)
class Design:
    """A sweep as `mupbench run` plans it: the preset's grids, `seeds`, `max_seeds` (sequential seeds up to it; None:
    none), δ and the grid extension."""

    preset: str = "cpu-tiny"
    seeds: int | None = None  # None: the preset's
    max_seeds: int | None = None  # None: the preset's
    tolerance: float = DEFAULT_TOLERANCE
    extend: int = EXTEND
    ablation: str = "baseline"
    parameterization: str = "mup"

    def resolved(self):
        from mupbench.ablations import get_preset

        p = get_preset(self.preset)
        seeds = self.seeds or p.seeds
        return p, seeds, max(seeds, self.max_seeds if self.max_seeds is not None else p.max_seeds)

    def specs(self) -> list[RunSpec]:
        from mupbench import ablations

        preset, _, _ = self.resolved()
        entries = [(ablations.get(self.ablation), (self.parameterization,))]
        return ablations.plan(entries, preset, DATA, seeds=1)


def settings(spec: RunSpec) -> dict:
    """The trainer protocol's settings of a run that the synthetic trainer reads."""
    m, t = spec.model, spec.train
    return {"width": m.width, "depth": m.depth, "tokens": t.steps * t.tokens_per_step, "lr": t.lr,
            "log2_lr": t.log2_lr, "seed": t.seed, "steps": t.steps, "ablation": spec.ablation,
            "parameterization": m.parameterization, "base_width": m.base_width}


def world(design: Design, drift: float, draw: int, noise: dict | None = None) -> dict:
    """The synthetic landscape of one simulated sweep: `noise` (default the measured one) with the true `drift`, its
    own random numbers, and the optimum moved by up to half a grid step so it is not tied to the grid (the preset's
    optimum sits where cpu-tiny's measured one does, relative to the top of its grid)."""
    preset, _, _ = design.resolved()
    base = dict(noise or synthetic.DEFAULTS)
    rng = np.random.default_rng([draw, 7])
    top = max(preset.log2_lrs)
    where = synthetic.DEFAULTS["optimum_log2_lr"] - (-4.0)  # cpu-tiny's optimum relative to its grid's top
    return {**base, "axis": "width", "drift": drift, "noise_seed": draw, "reference_scale": min(preset.widths),
            "optimum_log2_lr": top + where + float(rng.uniform(-0.5, 0.5))}


def simulate_sweep(design: Design, noise: dict) -> tuple[Verdict, int, dict[str, float], list[RunSpec]]:
    """One sweep of `design` in the landscape `noise`: (its verdict, runs trained, run hash → loss, every spec)."""
    _, seeds, max_seeds = design.resolved()
    specs = design.specs()
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
