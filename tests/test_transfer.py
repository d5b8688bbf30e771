"""The analysis on synthetic sweeps with known optima."""
import math

import numpy as np
import pandas as pd
import pytest

from harness.transfer import analyze, analyze_group, refine_optimum

GRID = np.arange(-11.0, -3.0)  # 2^-11 … 2^-4


def sweep(optima: dict, curvature=0.05, diverge_above=None, seeds=1, noise=0.0, floor=None) -> pd.DataFrame:
    """Parabolic loss curves in log2 LR with the given optimum per width; wider is better by 0.02 per width."""
    rng = np.random.default_rng(1)
    rows = []
    for i, (width, opt) in enumerate(sorted(optima.items())):
        for x in GRID:
            for seed in range(seeds):
                loss = 2.0 - 0.02 * i + curvature * (x - opt) ** 2 + noise * rng.standard_normal()
                status = "ok"
                if diverge_above is not None and x > diverge_above.get(width, math.inf):
                    loss, status = math.inf, "diverged"
                rows.append(dict(ablation="a", parameterization="mup", width=width, log2_lr=x, seed=seed,
                                 final_val_loss=loss, status=status))
    return pd.DataFrame(rows)


def test_refinement_recovers_off_grid_optimum():
    losses = 0.1 * (GRID - (-6.3)) ** 2
    arg, opt, edge = refine_optimum(GRID, losses)
    assert arg == -6 and opt == pytest.approx(-6.3) and not edge


def test_refinement_falls_back_when_not_convex_or_neighbour_diverged():
    losses = np.array([5, 4, 3, 2, 1.0, 2.0, 2.0, 9])
    losses[5] = math.inf
    arg, opt, _ = refine_optimum(GRID, losses)
    assert arg == opt == GRID[4]


def test_transfers():
    v = analyze_group("a", "mup", sweep({32: -6.2, 64: -6.0, 128: -5.8}))
    assert v.verdict == "transfers"
    assert v.optimal_log2_lr[32] == pytest.approx(-6.2) and v.optimal_log2_lr[128] == pytest.approx(-5.8)
    assert v.spread == pytest.approx(0.4)
    assert v.strict_transfer is True
    assert v.drift_per_doubling == pytest.approx(0.2)
    assert v.wider_is_better is True
    assert v.transfer_regret == 0.0  # same grid argmin at both ends


def test_shifts_with_drift_per_doubling():
    v = analyze_group("a", "sp", sweep({32: -6.0, 64: -7.0, 128: -8.0}))
    assert v.verdict == "shifts"
    assert v.drift_per_doubling == pytest.approx(-1.0)
    assert v.strict_transfer is False
    assert v.transfer_regret == pytest.approx(0.05 * 4)


def test_tolerance_is_configurable():
    data = sweep({32: -6.0, 64: -6.6, 128: -7.2})
    assert analyze_group("a", "mup", data).verdict == "shifts"  # spread 1.2 > one grid step
    assert analyze_group("a", "mup", data, tolerance=1.5).verdict == "transfers"


def test_edge_optimum_is_inconclusive():
    v = analyze_group("a", "mup", sweep({32: -6.0, 64: -6.0, 128: -3.0}))
    assert v.verdict == "inconclusive"
    assert "highest LR" in v.reason and "128" in v.reason


def test_divergence_counts_as_infinite_loss_not_error():
    v = analyze_group("a", "mup", sweep({32: -6.0, 64: -6.0, 128: -6.0}, diverge_above={128: -5.5}))
    assert v.verdict == "transfers"
    assert v.optima[-1].n_finite == 6
    # Too many diverged runs at one width: cannot tell.
    v = analyze_group("a", "mup", sweep({32: -6.0, 64: -6.0, 128: -6.0}, diverge_above={128: -10.5}))
    assert v.verdict == "inconclusive" and "diverged" in v.reason


def test_missing_runs_are_inconclusive():
    data = sweep({32: -6.0, 64: -6.0})
    data = data[~((data["width"] == 64) & (data["log2_lr"] == -9))]
    v = analyze_group("a", "mup", data)
    assert v.verdict == "inconclusive" and "7 of 8" in v.reason


def test_failed_runs_are_ignored_as_results():
    data = sweep({32: -6.0, 64: -6.0})
    data.loc[0, "status"] = "failed"
    assert analyze_group("a", "mup", data).verdict == "inconclusive"


def test_seeds_are_averaged_with_bootstrap_interval():
    v = analyze_group("a", "mup", sweep({32: -6.0, 64: -6.0, 128: -6.0}, seeds=4, noise=0.003))
    assert v.verdict == "transfers" and v.n_seeds == 4
    for o in v.optima:
        lo, hi = o.interval
        assert lo <= o.optimal_log2_lr <= hi and hi - lo < 1.0


def test_analyze_groups_and_json():
    data = pd.concat([sweep({32: -6.0, 64: -6.0}), sweep({32: -6.0, 64: -8.0}).assign(parameterization="sp")])
    verdicts = {v.parameterization: v for v in analyze(data)}
    assert verdicts["mup"].verdict == "transfers" and verdicts["sp"].verdict == "shifts"
    js = verdicts["sp"].to_json()
    assert js["optimal_log2_lr"] == {"32": pytest.approx(-6.0), "64": pytest.approx(-8.0)}
    assert {"ablation", "parameterization", "verdict", "optimal_log2_lr"} <= set(js)
