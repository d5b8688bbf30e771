"""Transfer analysis: the optimal learning rate per width, and whether it stays put.

Per (ablation, parameterization, width): the grid argmin of final validation loss over log2 LR, refined by a parabola
through the argmin and its two neighbours (kept only when convex; clipped to the neighbours). Per (ablation,
parameterization) a verdict:

    transfers     every width's optimum lies within `tolerance` log2 units of the others (default: one grid step)
    shifts        the spread of optima is larger than the tolerance
    inconclusive  an optimum sits on the grid's edge, a width has too few finite points (divergence), or runs are missing

Also reported: Lingle's strict criterion (the same grid argmin at every width), drift (slope of optimum vs log2 width,
i.e. log2 LR per width doubling), transfer regret (largest width's loss at the smallest width's best grid LR minus its
own best loss), and whether wider is better at the optimum. With several seeds, points are seed means and each
optimum gets a bootstrap interval over seeds.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

MIN_FINITE_POINTS = 3
BOOTSTRAP_SAMPLES = 200


@dataclass
class WidthOptimum:
    width: int
    argmin_log2_lr: float | None
    optimal_log2_lr: float | None
    best_loss: float
    on_edge: bool
    n_lrs: int
    n_finite: int
    interval: tuple[float, float] | None = None  # bootstrap 5–95% over seeds


@dataclass
class Verdict:
    ablation: str
    parameterization: str
    verdict: str
    reason: str
    tolerance: float
    grid_step: float
    widths: list[int]
    optima: list[WidthOptimum]
    spread: float | None = None
    strict_transfer: bool | None = None
    drift_per_doubling: float | None = None
    transfer_regret: float | None = None
    wider_is_better: bool | None = None
    n_seeds: int = 1

    @property
    def optimal_log2_lr(self) -> dict[int, float | None]:
        return {o.width: o.optimal_log2_lr for o in self.optima}

    def to_json(self) -> dict:
        def clean(x):
            if isinstance(x, float) and not math.isfinite(x):
                return None
            return x

        out = {k: clean(v) for k, v in asdict(self).items() if k != "optima"}
        out["optimal_log2_lr"] = {str(o.width): clean(o.optimal_log2_lr) for o in self.optima}
        out["argmin_log2_lr"] = {str(o.width): clean(o.argmin_log2_lr) for o in self.optima}
        out["best_loss"] = {str(o.width): clean(o.best_loss) for o in self.optima}
        out["interval"] = {str(o.width): list(o.interval) for o in self.optima if o.interval is not None}
        out["on_edge"] = {str(o.width): o.on_edge for o in self.optima}
        return out


def refine_optimum(log2_lrs: np.ndarray, losses: np.ndarray) -> tuple[float | None, float | None, bool]:
    """(grid argmin, refined optimum, on edge) for losses over a sorted log2-LR grid; inf marks divergence."""
    finite = np.isfinite(losses)
    if not finite.any():
        return None, None, False
    i = int(np.argmin(np.where(finite, losses, np.inf)))
    x = float(log2_lrs[i])
    if i == 0 or i == len(losses) - 1:
        return x, x, True
    xs, ys = log2_lrs[i - 1 : i + 2], losses[i - 1 : i + 2]
    if not np.isfinite(ys).all():
        return x, x, False
    a, b, _ = np.polyfit(xs, ys, 2)
    if a <= 0:
        return x, x, False
    return x, float(np.clip(-b / (2 * a), xs[0], xs[2])), False


def grid_step(log2_lrs: np.ndarray) -> float:
    return float(np.median(np.diff(log2_lrs))) if len(log2_lrs) > 1 else 1.0


def _bootstrap(table: pd.DataFrame, grid: np.ndarray, rng: np.random.Generator) -> tuple[float, float] | None:
    """5–95% interval of the refined optimum, resampling seeds with replacement at every LR."""
    per_lr = [table.loc[table["log2_lr"] == x, "final_val_loss"].to_numpy() for x in grid]
    if max(len(v) for v in per_lr) < 2:
        return None
    samples = []
    for _ in range(BOOTSTRAP_SAMPLES):
        means = np.array([rng.choice(v, size=len(v)).mean() if len(v) else np.inf for v in per_lr])
        opt = refine_optimum(grid, means)[1]
        if opt is not None:
            samples.append(opt)
    if not samples:
        return None
    return float(np.percentile(samples, 5)), float(np.percentile(samples, 95))


def analyze_group(ablation: str, parameterization: str, runs: pd.DataFrame, tolerance: float | None = None) -> Verdict:
    """The verdict for one (ablation, parameterization) from its finished runs (status ok or diverged)."""
    runs = runs[runs["status"].isin(["ok", "diverged"])]
    grid = np.array(sorted(runs["log2_lr"].unique()), dtype=float)
    step = grid_step(grid)
    tol = step if tolerance is None else tolerance
    widths = sorted(int(w) for w in runs["width"].unique())
    n_seeds = int(runs["seed"].nunique()) if len(runs) else 0
    rng = np.random.default_rng(0)
    optima: list[WidthOptimum] = []
    problems: list[str] = []
    for width in widths:
        table = runs[runs["width"] == width]
        means = table.groupby("log2_lr")["final_val_loss"].mean().reindex(grid)
        losses = means.to_numpy(dtype=float)
        missing = int(np.isnan(losses).sum())
        losses = np.where(np.isnan(losses), np.inf, losses)
        arg, opt, edge = refine_optimum(grid, losses)
        n_finite = int(np.isfinite(losses).sum())
        best = float(np.min(losses)) if n_finite else math.inf
        interval = _bootstrap(table, grid, rng) if n_seeds > 1 else None
        optima.append(WidthOptimum(width, arg, opt, best, edge, len(grid) - missing, n_finite, interval))
        if missing:
            problems.append(f"width {width} has {len(grid) - missing} of {len(grid)} learning rates")
        elif n_finite < MIN_FINITE_POINTS:
            problems.append(f"width {width} diverged at {len(grid) - n_finite} of {len(grid)} learning rates")
        elif edge:
            side = "lowest" if arg == grid[0] else "highest"
            problems.append(f"width {width}'s optimum is the {side} LR on the grid (2^{arg:g}): "
                            "extend the grid (run --extend-grid N, or --lrs)")
    verdict = Verdict(ablation, parameterization, "inconclusive", "", tol, step, widths, optima, n_seeds=n_seeds)
    if len(widths) < 2:
        verdict.reason = "fewer than two widths finished"
        return verdict

    found = [o for o in optima if o.optimal_log2_lr is not None]
    if len(found) >= 2:
        values = np.array([o.optimal_log2_lr for o in found])
        log_w = np.log2([o.width for o in found])
        verdict.spread = float(values.max() - values.min())
        verdict.strict_transfer = len({o.argmin_log2_lr for o in found}) == 1 and len(found) == len(widths)
        verdict.drift_per_doubling = float(np.polyfit(log_w, values, 1)[0])
        bests = [o.best_loss for o in optima]
        verdict.wider_is_better = all(b2 < b1 for b1, b2 in zip(bests, bests[1:]))
        small, large = optima[0], optima[-1]
        if small.argmin_log2_lr is not None:
            at = runs[(runs["width"] == large.width) & (runs["log2_lr"] == small.argmin_log2_lr)]["final_val_loss"]
            if len(at):
                verdict.transfer_regret = float(at.mean() - large.best_loss) if math.isfinite(large.best_loss) else None

    if problems:
        verdict.reason = "; ".join(problems)
    elif verdict.spread <= tol + 1e-9:
        verdict.verdict = "transfers"
        verdict.reason = f"optima spread {verdict.spread:.2f} ≤ tolerance {tol:g} (log2 LR)"
    else:
        verdict.verdict = "shifts"
        verdict.reason = (
            f"optima spread {verdict.spread:.2f} > tolerance {tol:g} (log2 LR); "
            f"drift {verdict.drift_per_doubling:+.2f} per width doubling"
        )
    return verdict


def analyze(runs: pd.DataFrame, tolerance: float | None = None) -> list[Verdict]:
    """Verdicts for every (ablation, parameterization) in a table of runs (the store's `runs()`)."""
    out = []
    for (ablation, param), group in runs.groupby(["ablation", "parameterization"], sort=False):
        out.append(analyze_group(ablation, param, group, tolerance))
    return out

