"""The planner: which runs a sweep trains next, and in what order. Decisions only: it reads specs and the store's table
of runs and returns specs; it never starts a process, trains or writes.

    to_train(specs, stored, retry_failed)  the planned runs not stored yet (and the failed ones, with retry_failed)
    next_round(specs, runs, seeds, ...)    what the stored results ask for next: a grid point beyond an edge optimum
                                           (grid_extensions), seeds 1… on each scale's optimum neighbourhood
                                           (seed_neighbourhoods)
    Dispatch(specs, branching)             the order an executor hands runs out in: the most expensive first, a WSD
                                           family's shorter runs only once its longest run is stored (mupbench.branches)
    run_cost(spec)                         a run's cost in FLOPs (with a per-step overhead), for ordering and the ETA

Everything is derived from the specs and the stored runs alone, so a resumed sweep plans the same runs again and finds
them stored.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mupbench import branches
from mupbench.config import RunSpec, axis_value, spec_axis

# A step costs this many FLOPs' worth of fixed overhead (Python, kernel launches) besides its arithmetic: measured on
# a 2-core CPU, it makes the cost model's width ratios match wall-clock ratios at the smoke scale.
STEP_OVERHEAD_FLOPS = 1e9


def run_cost(spec: RunSpec) -> float:
    from mupbench.model import flops_per_token

    tc = spec.train
    return tc.steps * (flops_per_token(spec.model, tc.seq_len) * tc.tokens_per_step + STEP_OVERHEAD_FLOPS)


def branch_cost(spec: RunSpec) -> float:
    """run_cost of a shorter WSD run that starts from its family's checkpoint: only its decay is trained."""
    return run_cost(spec) * (1 - branches.branch_point(spec) / spec.train.steps)



def to_train(specs: list[RunSpec], stored: dict[str, str], retry_failed: bool = False) -> list[RunSpec]:
    """The runs of `specs` (unique by hash) with no stored result (`stored`: run hash → status), plus the stored
    failures with `retry_failed`; WSD specs are annotated with their family's branch points (mupbench.branches)."""
    unique = {s.run_hash: s for s in branches.annotate(specs)}
    return [s for h, s in unique.items() if h not in stored or (retry_failed and stored[h] == "failed")]


@dataclass
class Dispatch:
    """The order an executor trains `specs` in. `next(finished)` gives the first pending run that waits for no trunk
    (or whose trunk is in `finished`), None while every pending run waits; `cost` maps run hashes to run_cost (only the
    decay, for a run that branches off a checkpoint). Without `branching` (an executor whose nodes share no
    checkpoints) every run trains from scratch and nothing waits."""

    specs: list[RunSpec]
    branching: bool = True
    waits_for: dict[str, str] = field(init=False)
    cost: dict[str, float] = field(init=False)
    pending: list[RunSpec] = field(init=False)

    def __post_init__(self):
        # a shorter WSD run → its family's longest run, which it branches off
        self.waits_for = branches.trunks(self.specs) if self.branching else {}
        self.cost = {s.run_hash: branch_cost(s) if s.run_hash in self.waits_for else run_cost(s) for s in self.specs}
        ordered = sorted(self.specs, key=run_cost, reverse=True)
        # the most expensive first, the runs that wait for a trunk last
        self.pending = branches.branch_order(ordered) if self.branching else ordered

    @property
    def total_cost(self) -> float:
        return sum(self.cost.values())

    def next(self, finished: set[str]) -> RunSpec | None:
        for i, spec in enumerate(self.pending):
            trunk = self.waits_for.get(spec.run_hash)
            if trunk is None or trunk in finished:
                return self.pending.pop(i)
        return None


def next_round(specs: list[RunSpec], runs: pd.DataFrame, seeds: int, extend: bool) -> tuple[list[RunSpec], list[RunSpec]]:
    """What the stored `runs` ask for beyond `specs`: (grid extensions — only when `extend`, none already in `specs` —,
    the seed-neighbourhood runs not yet in `specs`). Both empty: the sweep is complete."""
    more = grid_extensions(specs, runs) if extend else []
    known = {s.run_hash for s in specs} | {s.run_hash for s in more}
    near = [s for s in seed_neighbourhoods(specs + more, runs, seeds) if s.run_hash not in known]
    return more, list({s.run_hash: s for s in near}.values())


MAX_LOG2_LR = 0.0  # a grid is never extended past LR 1
MIN_COMMON_LRS = 3  # LRs every seed ran at a scale before their mean may call for a grid extension


def _groups(specs: list[RunSpec]) -> dict[tuple[str, str], list[RunSpec]]:
    groups: dict[tuple[str, str], list[RunSpec]] = {}
    for s in specs:
        groups.setdefault((s.ablation, s.model.parameterization), []).append(s)
    return groups


def _lr_key(spec: RunSpec) -> float:
    return round(math.log2(spec.train.lr), 6)


def _scale(spec: RunSpec) -> int:
    """The spec's value on the axis it was planned on (its width, depth or training tokens)."""
    return axis_value(spec, spec_axis(spec))


def coarse_seeds(group: list[RunSpec]) -> set[int]:
    """The seeds that run the group's whole LR grid at every scale (seed 0 of an adaptive sweep); the other seeds run
    only each scale's optimum neighbourhood."""
    grid = {_lr_key(s) for s in group}
    have: dict[tuple[int, int], set[float]] = {}
    for s in group:
        have.setdefault((s.train.seed, _scale(s)), set()).add(_lr_key(s))
    widths = {_scale(s) for s in group}
    return {seed for seed in {k for k, _ in have} if all(have.get((seed, w)) == grid for w in widths)}


def _best(means: pd.Series) -> float | None:
    """The log2 LR (the index) of the lowest finite mean loss; None when every point diverged."""
    finite = means[means < math.inf]
    return float(finite.idxmin()) if len(finite) else None


def grid_extensions(specs: list[RunSpec], runs) -> list[RunSpec]:
    """The next grid point beyond each edge optimum.

    For every (ablation, parameterization) of `specs` where some scale's (width's, depth's, duration's) best finished
    LR is the lowest or the highest of the group's grid — the best of the coarse seeds' mean, or the best of the mean
    over every seed at the LRs all of them ran there (at least MIN_COMMON_LRS: a neighbourhood, whose seeds may prefer
    the edge although seed 0 did not) — the runs one grid step further out, for every spec at that edge: every scale,
    and every seed that has the edge point, so the scales keep one shared grid. `runs` is the store's table
    (Store.runs()); only the runs of `specs` count, so a resumed sweep re-derives the same extensions, round by round,
    and finds them stored.
    """
    from mupbench.transfer import grid_step

    out = []
    finished = runs[runs["status"].isin(["ok", "diverged"])]
    for group in _groups(specs).values():
        hashes = {s.run_hash for s in group}
        coarse = coarse_seeds(group)
        done = finished[finished["run_hash"].isin(hashes)]
        grid = sorted({math.log2(s.train.lr) for s in group})
        if len(grid) < 2 or done.empty:
            continue
        step = grid_step(grid)
        ends = set()
        scale_of = {s.run_hash: _scale(s) for s in group}
        for _, table in done.groupby(done["run_hash"].map(scale_of)):
            bests = [_best(table[table["seed"].isin(coarse)].groupby("log2_lr")["final_val_loss"].mean())]
            common = table.pivot_table(index="seed", columns="log2_lr", values="final_val_loss").dropna(axis=1)
            if common.shape[1] >= MIN_COMMON_LRS:
                bests.append(_best(common.mean(axis=0)))
            for best in bests:  # None: every LR diverged at this scale, no optimum to chase
                if best is not None and math.isclose(best, grid[0]):
                    ends.add((grid[0], -step))
                elif best is not None and math.isclose(best, grid[-1]):
                    ends.add((grid[-1], step))
        for edge, delta in sorted(ends):
            if edge + delta > MAX_LOG2_LR:
                continue
            for s in group:
                if math.isclose(math.log2(s.train.lr), edge):
                    out.append(dataclasses.replace(s, train=dataclasses.replace(s.train, lr=2.0 ** (edge + delta))))
    return out


def seed_neighbourhoods(specs: list[RunSpec], runs, seeds: int) -> list[RunSpec]:
    """The runs of seeds 1…seeds-1 that the adaptive grid asks for, given what is stored.

    Per (ablation, parameterization) and scale (width, depth or duration): the grid points within one step of the
    coarse seeds' best LR; once
    all of them are finished, while the best mean loss over every seed sits on the neighbourhood's edge (and the grid
    goes further), one more point on that side. Derived from the stored runs alone, so a resumed sweep asks for the
    same runs. Returns every neighbourhood run so far, stored or not.
    """
    from mupbench.transfer import grid_step

    out: dict[str, RunSpec] = {}
    finished = runs[runs["status"].isin(["ok", "diverged"])]
    loss = dict(zip(finished["run_hash"], finished["final_val_loss"].astype(float)))
    for group in _groups(specs).values():
        coarse = coarse_seeds(group)
        others = [k for k in range(seeds) if k not in coarse]
        if not coarse or not others:
            continue
        grid = sorted({_lr_key(s) for s in group})
        step = grid_step(grid)
        by_width: dict[int, dict[float, list[RunSpec]]] = {}
        for s in group:
            if s.train.seed in coarse:
                by_width.setdefault(_scale(s), {}).setdefault(_lr_key(s), []).append(s)
        for width, at in by_width.items():
            template = {x: min(ss, key=lambda s: s.train.seed) for x, ss in at.items()}
            coarse_means = pd.Series({x: _mean([loss.get(s.run_hash) for s in ss]) for x, ss in at.items()})
            centre = _best(coarse_means.dropna())
            if centre is None or coarse_means.isna().any():
                continue  # the coarse seeds are not done at this width yet, or every LR diverged
            hood = [x for x in grid if abs(x - centre) <= step * 1.001]
            while True:
                wanted = {x: [dataclasses.replace(template[x], train=dataclasses.replace(template[x].train, seed=k))
                              for k in others] for x in hood}
                for ss in wanted.values():
                    out.update((s.run_hash, s) for s in ss)
                means = pd.Series({x: _mean([loss.get(s.run_hash) for s in ss + at[x]]) for x, ss in wanted.items()})
                if means.isna().any():
                    break  # wait for these runs
                best = _best(means)
                i = grid.index(hood[0]) if best is not None else -1
                if best == hood[0] and i > 0:
                    hood.insert(0, grid[i - 1])
                elif best == hood[-1] and grid.index(hood[-1]) < len(grid) - 1:
                    hood.append(grid[grid.index(hood[-1]) + 1])
                else:
                    break
    return list(out.values())


def _mean(values: list) -> float:
    """Mean of stored losses (inf = diverged); NaN while any is missing."""
    return math.nan if any(v is None for v in values) else float(np.mean(values))
