"""The analysis on synthetic sweeps with known optima."""
import math

import numpy as np
import pandas as pd
import pytest

from mupbench.errors import UserError
from mupbench.transfer import analyze, analyze_frame, analyze_group, refine_optimum

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
    v = analyze_group("a", "mup", sweep({32: -6.2, 64: -6.0, 128: -5.8}, seeds=3, noise=0.002))
    assert v.verdict == "transfers", v.reason
    assert v.optimal_log2_lr[32] == pytest.approx(-6.2, abs=0.05) and v.optimal_log2_lr[128] == pytest.approx(-5.8, abs=0.05)
    assert v.spread == pytest.approx(0.4, abs=0.1)
    assert v.strict_transfer is True
    assert v.drift_per_doubling == pytest.approx(0.2, abs=0.05)
    lo, hi = v.drift_interval
    assert -v.tolerance <= lo < v.drift_per_doubling < hi <= v.tolerance
    assert v.wider_is_better is True
    assert v.transfer_regret == 0.0 and v.regret_within_noise  # same grid argmin at both ends


def test_shifts_with_drift_per_doubling():
    v = analyze_group("a", "sp", sweep({32: -6.0, 64: -7.0, 128: -8.0}, seeds=3, noise=0.002))
    assert v.verdict == "shifts"
    assert v.drift_per_doubling == pytest.approx(-1.0, abs=0.05)
    assert v.drift_interval[1] < 0
    assert v.strict_transfer is False
    assert v.transfer_regret == pytest.approx(0.05 * 4, abs=0.01)


def test_one_seed_is_inconclusive_whatever_the_drift():
    v = analyze_group("a", "sp", sweep({32: -6.0, 64: -7.0, 128: -8.0}))
    assert v.verdict == "inconclusive" and v.reason.startswith("one seed") and v.drift_interval is None
    assert v.drift_per_doubling == pytest.approx(-1.0)  # still reported


def test_tolerance_is_a_drift_per_doubling():
    data = sweep({32: -6.0, 64: -6.2, 128: -6.4}, seeds=3, noise=0.002)
    assert analyze_group("a", "mup", data).verdict == "transfers"  # |drift| 0.2 within the default δ
    tight = analyze_group("a", "mup", data, tolerance=0.1)
    assert tight.verdict == "shifts" and "δ = 0.1" in tight.reason


def test_noise_as_large_as_the_effect_is_inconclusive():
    v = analyze_group("a", "mup", sweep({32: -6.0, 64: -6.3, 128: -6.6}, seeds=3, noise=0.03, curvature=0.02))
    assert v.verdict == "inconclusive" and v.reason.startswith("noise as large as the effect"), v.reason
    assert "add seeds" in v.reason


def test_pairing_cancels_per_seed_offsets():
    """A seed's offset is shared by all its LRs: resampling whole seeds keeps the interval tight. Resampling seeds
    independently at each LR (what the paired bootstrap avoids) would make it as wide as the offsets."""
    data = sweep({32: -6.0, 64: -6.0, 128: -6.0}, seeds=3)
    data["final_val_loss"] += 0.3 * data["seed"]
    v = analyze_group("a", "mup", data)
    assert v.verdict == "transfers"
    lo, hi = v.drift_interval
    assert hi - lo < 0.05


def test_edge_optimum_is_inconclusive():
    v = analyze_group("a", "mup", sweep({32: -6.0, 64: -6.0, 128: -3.0}, seeds=3))
    assert v.verdict == "inconclusive"
    assert v.reason.startswith("optimum on the grid edge") and "highest LR" in v.reason and "128" in v.reason


def test_divergence_counts_as_infinite_loss_not_error():
    v = analyze_group("a", "mup", sweep({32: -6.0, 64: -6.0, 128: -6.0}, diverge_above={128: -5.5}, seeds=3))
    assert v.verdict == "transfers"
    assert v.optima[-1].n_finite == 6
    # Too many diverged runs at one width: cannot tell.
    v = analyze_group("a", "mup", sweep({32: -6.0, 64: -6.0, 128: -6.0}, diverge_above={128: -10.5}, seeds=3))
    assert v.verdict == "inconclusive" and v.reason.startswith("diverged")


def test_a_transferred_lr_that_diverges_is_infinite_regret_and_shift_evidence():
    # the SP failure: the narrow model's best LR blows up the wide one
    data = sweep({32: -5.0, 64: -6.0, 128: -7.0}, diverge_above={128: -5.5}, seeds=3, noise=0.002)
    v = analyze_group("a", "sp", data)
    assert v.regret_diverged and math.isinf(v.transfer_regret) and v.regret_within_noise is False
    assert v.verdict == "shifts" and "diverges" in v.reason
    js = v.to_json()
    assert js["transfer_regret"] is None and js["regret_diverged"] is True


def test_adaptive_grid_uses_the_lrs_every_seed_ran():
    """Seed 0 on the whole grid, seeds 1 and 2 on each width's neighbourhood: the optimum comes from the common LRs."""
    data = sweep({32: -6.0, 64: -6.0, 128: -6.0}, seeds=3, noise=0.002)
    data = data[(data["seed"] == 0) | (data["log2_lr"].between(-7, -5))]
    v = analyze_group("a", "mup", data)
    assert v.verdict == "transfers" and v.n_seeds == 3
    assert [o.n_lrs for o in v.optima] == [3, 3, 3]


def test_regret_pairs_the_seeds_that_ran_both_points():
    """Under an adaptive grid only seed 0 may have run the narrowest width's best LR at the widest width (SP's optimum
    moves out of the other seeds' neighbourhood): the regret comes from the seeds that ran both, not from none."""
    data = sweep({32: -5.0, 64: -6.0, 128: -7.0}, seeds=3, noise=0.002)
    near = {32: (-6, -4), 64: (-7, -5), 128: (-8, -6)}
    data = data[(data["seed"] == 0) | data.apply(lambda r: near[r.width][0] <= r.log2_lr <= near[r.width][1], axis=1)]
    v = analyze_group("a", "mup", data)
    assert v.verdict == "shifts"
    assert v.transfer_regret == pytest.approx(0.05 * 2**2, abs=0.01)  # seed 0: 2^-5 is two steps off width 128's best


def test_missing_runs_are_inconclusive():
    data = sweep({32: -6.0, 64: -6.0}, seeds=3)
    data = data[~((data["width"] == 64) & (data["log2_lr"] == -9))]
    v = analyze_group("a", "mup", data)
    assert v.verdict == "inconclusive" and "7 of 8" in v.reason


def test_failed_runs_are_not_results():
    data = sweep({32: -6.0, 64: -6.0}, seeds=3)
    data.loc[0, "status"] = "failed"  # width 32, the lowest LR, seed 0
    v = analyze_group("a", "mup", data)
    assert v.optima[0].n_lrs == len(GRID) - 1 and v.optima[1].n_lrs == len(GRID)


def test_seed_intervals_per_width():
    v = analyze_group("a", "mup", sweep({32: -6.0, 64: -6.0, 128: -6.0}, seeds=4, noise=0.003))
    assert v.verdict == "transfers" and v.n_seeds == 4
    for o in v.optima:
        lo, hi = o.interval
        assert lo <= o.optimal_log2_lr <= hi and hi - lo < 1.0


def test_analyze_groups_and_json():
    data = pd.concat([sweep({32: -6.0, 64: -6.0}, seeds=3, noise=0.002),
                      sweep({32: -6.0, 64: -8.0}, seeds=3, noise=0.002).assign(parameterization="sp")])
    verdicts = {v.parameterization: v for v in analyze(data)}
    assert verdicts["mup"].verdict == "transfers" and verdicts["sp"].verdict == "shifts"
    js = verdicts["sp"].to_json()
    assert js["optimal_log2_lr"] == {"32": pytest.approx(-6.0, abs=0.05), "64": pytest.approx(-8.0, abs=0.05)}
    assert {"ablation", "parameterization", "verdict", "optimal_log2_lr", "drift_interval", "strict_transfer",
            "reason"} <= set(js)
    assert "min_detectable_drift" not in js  # the error-rate table gives the power (docs/reading-verdicts.md)
    assert len(js["drift_interval"]) == 2


def test_analyze_frame_is_the_public_entry_point():
    data = sweep({32: -6.0, 64: -6.0}, seeds=3, noise=0.002).drop(columns="status")
    (v,) = analyze_frame(data)
    assert v.verdict == "transfers"


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns="seed"), r"lacks column\(s\) seed"),
    (lambda f: f.assign(final_val_loss=f["final_val_loss"].astype(object).where(f.index != 3, "oops")), "non-numeric"),
    (lambda f: f.assign(width=f["width"].astype(object).where(f.index != 0, None)), "'width'"),
])
def test_analyze_frame_refuses_bad_frames(change, message):
    with pytest.raises(UserError, match=message):
        analyze_frame(change(sweep({32: -6.0, 64: -6.0}, seeds=2)))


@pytest.mark.parametrize("tolerance", [-0.1, float("nan"), "0.3"])
def test_analyze_frame_refuses_bad_tolerance(tolerance):
    with pytest.raises(UserError, match="tolerance"):
        analyze_frame(sweep({32: -6.0, 64: -6.0}, seeds=2), tolerance=tolerance)
