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


def next_round(specs: list[RunSpec], runs, seeds: int, extend: bool, max_seeds: int | None = None,
               tolerance: float | None = None) -> tuple[list[RunSpec], list[RunSpec]]:
    """What the stored `runs` ask for beyond `specs`: (grid extensions — only when `extend`, none already in `specs` —,
    the seed-neighbourhood runs not yet in `specs`, sequential seeds included). Both empty: the sweep is complete.

    Sequential seeds: a group (ablation, parameterization) whose runs are all finished, that asks for nothing more, and
    whose verdict (at δ = `tolerance`) is `inconclusive` for noise gets one more seed on its neighbourhoods, up to
    `max_seeds` seeds (None: `seeds`, no sequential seeds)."""
    loss = finished_losses(runs)
    more = grid_extensions(specs, loss) if extend else []
    known = {s.run_hash for s in specs} | {s.run_hash for s in more}
    counts = seed_counts(specs + more, loss, seeds, max_seeds, tolerance)
    near = [s for s in seed_neighbourhoods(specs + more, loss, counts) if s.run_hash not in known]
    return more, list({s.run_hash: s for s in near}.values())


def finished_losses(runs) -> dict[str, float]:
    """run hash → final loss (inf: diverged) of the finished runs of the store's table (Store.runs()); a mapping of
    that form is returned as it is."""
    if isinstance(runs, dict):
        return runs
    done = runs[runs["status"].isin(["ok", "diverged"])]
    return dict(zip(done["run_hash"], done["final_val_loss"].astype(float)))


def seed_counts(specs: list[RunSpec], loss: dict[str, float], seeds: int, max_seeds: int | None,
                tolerance: float | None) -> dict[tuple[str, str], int]:
    """Seeds per group (ablation, parameterization): `seeds`, or one more than the highest seed the group has planned
    (a sequential seed, re-derived on resume), or one more again when the group is settled (every run finished,
    nothing more asked for) and its verdict is `inconclusive` for noise, up to `max_seeds`."""
    out = {}
    for key, group in _groups(specs).items():
        n = max(seeds, 1 + max(s.train.seed for s in group))
        out[key] = n
        if max_seeds is None or n >= max_seeds or not all(s.run_hash in loss for s in group):
            continue
        hashes = {s.run_hash for s in group}
        if any(s.run_hash not in hashes for s in seed_neighbourhoods(group, loss, n)):
            continue  # the neighbourhoods still ask for runs
        if noise_limited(group, loss, tolerance):
            out[key] = n + 1
    return out


def noise_limited(group: list[RunSpec], loss: dict[str, float], tolerance: float | None) -> bool:
    """Whether the group's verdict from its finished runs is `inconclusive` because the noise is as large as the
    effect (more seeds may decide it), not for an edge optimum, divergence or a regret above noise."""
    from mupbench.transfer import NOISE_REASON, analyze_group

    rows = [{"ablation": s.ablation, "parameterization": s.model.parameterization, "scale": _scale(s),
             "log2_lr": _lr_key(s), "seed": s.train.seed, "final_val_loss": loss[s.run_hash]}
            for s in group if s.run_hash in loss]
    if not rows:
        return False
    frame = pd.DataFrame(rows)
    v = analyze_group(rows[0]["ablation"], rows[0]["parameterization"], frame, tolerance, axis="scale")
    return v.verdict == "inconclusive" and v.reason.startswith(NOISE_REASON)


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


def _best(means: dict[float, float]) -> float | None:
    """The log2 LR (key) of the lowest finite mean loss (the lowest LR of a tie); None when every point diverged."""
    finite = sorted((x, m) for x, m in means.items() if m < math.inf)
    return min(finite, key=lambda p: p[1])[0] if finite else None


def grid_extensions(specs: list[RunSpec], runs) -> list[RunSpec]:
    """The next grid point beyond each edge optimum.

    For every (ablation, parameterization) of `specs` where some scale's (width's, depth's, duration's) best finished
    LR is the lowest or the highest of the group's grid — the best of the coarse seeds' mean, or the best of the mean
    over every seed at the LRs all of them ran there (at least MIN_COMMON_LRS: a neighbourhood, whose seeds may prefer
    the edge although seed 0 did not) — the runs one grid step further out, for every spec at that edge: every scale,
    and every seed that has the edge point, so the scales keep one shared grid. `runs` is the store's table
    (Store.runs()) or finished_losses of it; only the runs of `specs` count, so a resumed sweep re-derives the same
    extensions, round by round, and finds them stored.
    """
    from mupbench.transfer import grid_step

    loss = finished_losses(runs)
    out = []
    for group in _groups(specs).values():
        coarse = coarse_seeds(group)
        grid = sorted({_lr_key(s) for s in group})
        done: dict[int, dict[int, dict[float, float]]] = {}  # scale → seed → LR → loss
        for s in group:
            if s.run_hash in loss:
                done.setdefault(_scale(s), {}).setdefault(s.train.seed, {})[_lr_key(s)] = loss[s.run_hash]
        if len(grid) < 2 or not done:
            continue
        step = grid_step(grid)
        ends = set()
        for by_seed in done.values():
            coarse_points: dict[float, list[float]] = {}
            for seed in coarse & set(by_seed):
                for x, v in by_seed[seed].items():
                    coarse_points.setdefault(x, []).append(v)
            bests = [_best({x: float(np.mean(v)) for x, v in coarse_points.items()})]
            common = set.intersection(*(set(c) for c in by_seed.values()))
            if len(common) >= MIN_COMMON_LRS:
                bests.append(_best({x: float(np.mean([c[x] for c in by_seed.values()])) for x in common}))
            for best in bests:  # None: every LR diverged at this scale, no optimum to chase
                if best is not None and math.isclose(best, grid[0]):
                    ends.add((grid[0], -step))
                elif best is not None and math.isclose(best, grid[-1]):
                    ends.add((grid[-1], step))
        for edge, delta in sorted(ends):
            if edge + delta > MAX_LOG2_LR:
                continue
            for s in group:
                if math.isclose(_lr_key(s), edge):
                    out.append(dataclasses.replace(s, train=dataclasses.replace(s.train, lr=2.0 ** (edge + delta))))
    return out


NEIGHBOURHOOD_RADIUS = 1  # grid steps either side of the coarse seeds' best LR that seeds 1… run (see calibration)


def seed_neighbourhoods(specs: list[RunSpec], runs, seeds, radius: int | None = None) -> list[RunSpec]:
    """The runs of seeds 1…seeds-1 that the adaptive grid asks for, given what is stored.

    Per (ablation, parameterization) and scale (width, depth or duration): the grid points within `radius` steps
    (default NEIGHBOURHOOD_RADIUS) of the coarse seeds' best LR; once all of them are finished, while the best mean
    loss over every seed sits on the neighbourhood's edge (and the grid goes further), one more point on that side.
    `seeds`: a number, or one per group (seed_counts). `runs`: the store's table or finished_losses of it. Derived from
    the stored runs alone, so a resumed sweep asks for the same runs. Returns every neighbourhood run so far, stored
    or not.
    """
    from mupbench.transfer import grid_step

    radius = NEIGHBOURHOOD_RADIUS if radius is None else radius
    out: dict[str, RunSpec] = {}
    loss = finished_losses(runs)
    for key, group in _groups(specs).items():
        coarse = coarse_seeds(group)
        n = seeds if isinstance(seeds, int) else seeds.get(key, 1)
        others = [k for k in range(n) if k not in coarse]
        if not coarse or not others:
            continue
        grid = sorted({_lr_key(s) for s in group})
        step = grid_step(grid)
        by_width: dict[int, dict[float, list[RunSpec]]] = {}
        planned = {(_scale(s), _lr_key(s), s.train.seed): s for s in group}  # reused: their hashes are known
        for s in group:
            if s.train.seed in coarse:
                by_width.setdefault(_scale(s), {}).setdefault(_lr_key(s), []).append(s)
        for width, at in by_width.items():
            template = {x: min(ss, key=lambda s: s.train.seed) for x, ss in at.items()}
            coarse_means = {x: _mean([loss.get(s.run_hash) for s in ss]) for x, ss in at.items()}
            if any(math.isnan(m) for m in coarse_means.values()):
                continue  # the coarse seeds are not done at this width yet
            centre = _best(coarse_means)
            if centre is None:
                continue  # every LR diverged
            hood = [x for x in grid if abs(x - centre) <= step * (radius + 0.001)]
            while True:
                wanted = {x: [planned.get((width, x, k)) or dataclasses.replace(
                    template[x], train=dataclasses.replace(template[x].train, seed=k)) for k in others] for x in hood}
                for ss in wanted.values():
                    out.update((s.run_hash, s) for s in ss)
                means = {x: _mean([loss.get(s.run_hash) for s in ss + at[x]]) for x, ss in wanted.items()}
                if any(math.isnan(m) for m in means.values()):
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
