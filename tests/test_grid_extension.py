"""mupbench.plan.grid_extensions: the next LR grid point beyond each width's edge optimum, at every width and seed."""
import math

import numpy as np
import pandas as pd
import pytest

from mupbench.config import DataSpec, ModelConfig, RunSpec, TrainConfig
from mupbench.plan import grid_extensions

DATA = DataSpec("synthetic", "0" * 64, 0, 256)
GRID = (-8, -7, -6, -5)


def specs(grid=GRID, widths=(32, 64), seeds=(0,), ablation="a"):
    return [RunSpec(ablation, ModelConfig(width=w, head_dim=16, base_width=32), TrainConfig(lr=2.0**x, seed=s), DATA)
            for w in widths for x in grid for s in seeds]


def runs(optima: dict, grid=GRID, seeds=(0,), diverged=(), ablation="a"):
    """The runs table of specs(grid, seeds): loss a parabola around optima[width]; (width, log2 LR) in diverged → inf."""
    rows = []
    for s in specs(grid, tuple(optima), seeds, ablation):
        w, x = s.model.width, math.log2(s.train.lr)
        bad = (w, x) in diverged
        rows.append({"run_hash": s.run_hash, "ablation": ablation, "parameterization": "mup", "width": w,
                     "log2_lr": x, "seed": s.train.seed, "status": "diverged" if bad else "ok",
                     "final_val_loss": math.inf if bad else 2.0 + (x - optima[w]) ** 2})
    return pd.DataFrame(rows)


def lrs(extra):
    return sorted({(s.model.width, math.log2(s.train.lr), s.train.seed) for s in extra})


def test_interior_optima_need_nothing():
    assert grid_extensions(specs(), runs({32: -6.5, 64: -6.8})) == []


def test_top_edge_adds_the_next_point_at_every_width_and_seed():
    extra = grid_extensions(specs(seeds=(0, 1)), runs({32: -6.5, 64: -4.0}, seeds=(0, 1)))
    assert lrs(extra) == [(32, -4.0, 0), (32, -4.0, 1), (64, -4.0, 0), (64, -4.0, 1)]
    base = specs(seeds=(0, 1))[0]
    assert all(s.ablation == "a" and s.train.steps == base.train.steps for s in extra)


def test_bottom_edge_adds_the_point_below():
    assert lrs(grid_extensions(specs(), runs({32: -9.0, 64: -7.0}))) == [(32, -9.0, 0), (64, -9.0, 0)]


def test_both_edges_and_a_diverged_top():
    # width 32 prefers the bottom; width 64's best finite point is the top: both ends grow
    assert {x for _, x, _ in lrs(grid_extensions(specs(), runs({32: -10.0, 64: -3.0})))} == {-9.0, -4.0}
    # a diverged top LR is not an optimum: the best finite point (-6) is interior
    assert grid_extensions(specs(), runs({32: -6.0, 64: -6.0}, diverged={(32, -5), (64, -5)})) == []


def test_every_lr_diverged_or_lr_above_one_is_not_chased():
    dead = {(w, x) for w in (32, 64) for x in GRID}
    assert grid_extensions(specs(), runs({32: -6.0, 64: -6.0}, diverged=dead)) == []
    grid = (-3, -2, -1, 0)
    assert grid_extensions(specs(grid), runs({32: 1.0, 64: 1.0}, grid=grid)) == []


def test_runs_outside_the_plan_do_not_count():
    # a stored point beyond the planned grid (an earlier round's extension) is not this plan's optimum
    table = pd.concat([runs({32: -4.0, 64: -4.0}), runs({32: -4.0, 64: -4.0}, grid=(-4,))])
    assert lrs(grid_extensions(specs(), table)) == [(32, -4.0, 0), (64, -4.0, 0)]


def test_extended_points_are_stable_run_identities():
    first = grid_extensions(specs(), runs({32: -4.0, 64: -4.0}))
    again = grid_extensions(specs(), runs({32: -4.0, 64: -4.0}))
    assert [s.run_hash for s in first] == [s.run_hash for s in again]
    assert not {s.run_hash for s in first} & {s.run_hash for s in specs()}


# --- the adaptive grid: seeds 1… run each width's optimum neighbourhood -------------------------------------------
def seeds_runs(optima: dict, grid, seeds, offset=0.1):
    """runs() for several seeds at the given grid points: seed k adds a per-seed offset (shared across LRs)."""
    rows = []
    for s in specs(grid, tuple(optima), seeds):
        w, x = s.model.width, math.log2(s.train.lr)
        rows.append({"run_hash": s.run_hash, "ablation": "a", "parameterization": "mup", "width": w, "log2_lr": x,
                     "seed": s.train.seed, "status": "ok",
                     "final_val_loss": 2.0 + offset * s.train.seed + (x - optima[w]) ** 2})
    return pd.DataFrame(rows)


WIDE = (-9, -8, -7, -6, -5, -4)


def test_other_seeds_run_each_widths_neighbourhood_and_nothing_before_seed_0_is_done():
    from mupbench.plan import seed_neighbourhoods

    assert seed_neighbourhoods(specs(WIDE), runs({32: -7.0, 64: -6.0}, grid=WIDE[:3]), seeds=3) == []
    near = seed_neighbourhoods(specs(WIDE), runs({32: -7.0, 64: -6.0}, grid=WIDE), seeds=3)
    assert lrs(near) == sorted((w, float(x), k) for w, c in ((32, -7), (64, -6)) for x in (c - 1, c, c + 1)
                               for k in (1, 2))
    assert seed_neighbourhoods(specs(WIDE), runs({32: -7.0, 64: -6.0}, grid=WIDE), seeds=1) == []


def test_neighbourhood_grows_while_the_seed_mean_optimum_is_on_its_edge():
    from mupbench.plan import seed_neighbourhoods

    # seed 0 alone puts width 32's optimum at -7; seeds 1 and 2 put it at -5.2, so the mean's best is the edge -6
    table = pd.concat([runs({32: -7.0, 64: -6.0}, grid=WIDE),
                       seeds_runs({32: -5.2, 64: -6.0}, (-8, -7, -6, -5), seeds=(1, 2))])
    near = lrs(seed_neighbourhoods(specs(WIDE), table, seeds=3))
    assert {x for w, x, _ in near if w == 32} == {-8.0, -7.0, -6.0, -5.0}
    assert {x for w, x, _ in near if w == 64} == {-7.0, -6.0, -5.0}
    # a resumed sweep asks for the same runs (nothing beyond the grid: -4 is its last point)
    assert lrs(seed_neighbourhoods(specs(WIDE), table, seeds=3)) == near


def test_an_edge_optimum_of_every_seeds_mean_extends_even_when_seed_0s_is_interior():
    """Seed 0 (the whole grid) prefers −6 at width 64; seeds 1 and 2 ran only the neighbourhood −7…−5 and prefer −5,
    the top of the grid: their mean over the LRs all three ran sits on the edge, and the grid grows."""
    seed0 = runs({32: -6.5, 64: -6.0})
    others = runs({32: -6.5, 64: -4.0}, grid=(-7, -6, -5), seeds=(1, 2))
    near = [s for s in specs(grid=(-7, -6, -5), seeds=(1, 2))]
    extra = grid_extensions(specs() + near, pd.concat([seed0, others]))
    assert {x for _, x, _ in lrs(extra)} == {-4.0}
    assert (64, -4.0, 1) in lrs(extra) and (32, -4.0, 0) in lrs(extra)
    # with fewer than three LRs in common the seeds' mean does not count (a neighbourhood still being run)
    partial = others[others["log2_lr"] >= -6]
    assert grid_extensions(specs() + near, pd.concat([seed0, partial])) == []


# --- sequential seeds: a row inconclusive for noise gets one more seed at a time, up to max_seeds -------------------
def noisy_runs(spec_list, sd, drift=0.0, seed=0):
    """Stored runs of spec_list: a parabola around -6.5 + drift·log2(width/32) plus per-point noise of sd."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in spec_list:
        w, x = s.model.width, math.log2(s.train.lr)
        rows.append({"run_hash": s.run_hash, "ablation": "a", "parameterization": "mup", "width": w, "log2_lr": x,
                     "seed": s.train.seed, "status": "ok",
                     "final_val_loss": 2.0 + 0.05 * (x + 6.5 - drift * math.log2(w / 32)) ** 2 + sd * rng.normal()})
    return pd.DataFrame(rows)


def settle(spec_list, sd, max_seeds, drift=0.0):
    """Plan round by round as run_sweep does, every asked-for run stored at once; the specs at the end."""
    from mupbench.plan import next_round

    while True:
        more, near = next_round(spec_list, noisy_runs(spec_list, sd, drift), 3, extend=False, max_seeds=max_seeds)
        if not more and not near:
            return spec_list
        spec_list = spec_list + more + near


def test_a_noise_limited_row_gets_seeds_up_to_max_seeds_and_a_clear_one_none():
    grid = (-9, -8, -7, -6, -5, -4)
    clear = settle(specs(grid, widths=(32, 64, 128)), sd=0.0005, max_seeds=6)
    assert {s.train.seed for s in clear} == {0, 1, 2}
    noisy = settle(specs(grid, widths=(32, 64, 128)), sd=0.08, max_seeds=5)
    assert {s.train.seed for s in noisy} == {0, 1, 2, 3, 4}
    # a sequential seed runs each width's neighbourhood only, like seeds 1 and 2
    assert {(s.model.width, s.train.log2_lr) for s in noisy if s.train.seed == 4} == \
        {(s.model.width, s.train.log2_lr) for s in noisy if s.train.seed == 1}
    # resumed: the stored runs say how many seeds the row has; nothing more is asked for
    from mupbench.plan import next_round

    assert next_round(noisy, noisy_runs(noisy, 0.08), 3, extend=False, max_seeds=5) == ([], [])


@pytest.mark.parametrize("args, message", [
    (["--seeds", "4", "--max-seeds", "3"], "--max-seeds (3) is below --seeds (4)"),
    (["--max-seeds", "2"], "--max-seeds (2) is below --seeds (3)"),
    (["--max-seeds", "0"], "--max-seeds must be at least 1"),
    (["--max-seeds", "-2"], "--max-seeds must be at least 1"),
])
def test_bad_max_seeds_is_one_line_exit_2_before_any_run(tmp_path, args, message):
    from conftest import run_cli

    res = run_cli("run", *args, "--out", str(tmp_path / "o"))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and message in lines[0], res.stderr
    assert not (tmp_path / "o").exists()
