"""`mupbench gate` on small synthetic sweeps (Store.record, no training): each exit status, the files it writes."""
import json
import math

import numpy as np
import pytest

from mupbench.cli import main
from mupbench.config import DataSpec, ModelConfig, RunSpec, TrainConfig
from mupbench.store import Store

WIDTHS = (32, 64, 128)
GRID = tuple(range(-10, -2))  # log2 LR
DATA = DataSpec("synthetic", "0" * 64, 0, 256)
ENV = {"device": "test", "versions": {}, "git_rev": "test"}
INFO = {
    "baseline": {"expected": "transfers", "reported": "transfers", "description": "", "source": "", "family": "baseline"},
    "lion": {"expected": "shifts", "reported": "shifts", "description": "", "source": "", "family": "optimizers"},
    "gelu": {"expected": "unknown", "reported": "unknown", "description": "", "source": "", "family": "activations"},
}


def make_sweep(path, optima: dict, info=INFO, seeds=3, diverged: dict = {}, preset: str | None = None):
    """A finished sweep whose loss over log2 LR is a parabola around optima[(ablation, param)][i] at WIDTHS[i], with
    `seeds` replicas (a per-seed offset and a little per-point noise); every run at the widths in
    diverged[(ablation, param)] diverged."""
    store = Store(path, create=True)
    specs = []
    noise = iter(np.random.default_rng(0).standard_normal(100_000))
    for i, ((ablation, param), per_width) in enumerate(optima.items()):
        for width, opt in zip(WIDTHS, per_width):
            model = ModelConfig(width=width, head_dim=16, base_width=32, parameterization=param)
            for x in GRID:  # data_seed = i: a distinct run (hash) per ablation, as a real ablation's change makes
                for seed in range(seeds):
                    spec = RunSpec(ablation, model, TrainConfig(lr=2.0**x, data_seed=i, seed=seed), DATA)
                    loss = 2.0 + 0.05 * (x - opt) ** 2 - 0.01 * math.log2(width) + 0.02 * seed + 0.002 * next(noise)
                    specs.append((spec, loss))
    store.add_plan([s for s, _ in specs])
    for spec, loss in specs:
        gone = spec.model.width in diverged.get((spec.ablation, spec.model.parameterization), ())
        result = {"status": "diverged", "final_val_loss": None} if gone else {"status": "ok", "final_val_loss": loss}
        store.record(spec, {**result, "steps_done": 1, "curve": []}, ENV)
    store.set_meta("ablation_info", info)
    if preset is not None:
        store.set_meta("preset", preset)
    store.set_meta("suites", ["test"])
    store.close()
    return path


def gate(*args):
    return main(["gate", *map(str, args)])


TRANSFERS = (-6.0, -6.1, -5.9)
SHIFTS = (-5.0, -6.0, -7.0)


def test_pass_writes_junit_and_summary(tmp_path, capsys):
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): TRANSFERS, ("baseline", "sp"): SHIFTS})
    assert gate(d) == 0
    out = capsys.readouterr().out
    assert "baseline[mup]" in out and "gate: PASS" in out
    junit = (d / "junit.xml").read_text()
    assert 'tests="2"' in junit and 'failures="0"' in junit
    summary = (d / "summary.md").read_text()
    assert "gate: PASS" in summary and "| baseline\\[mup\\] |" in summary


def test_expected_transfer_that_shifts_is_a_regression(tmp_path, capsys):
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): SHIFTS})
    assert gate(d) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "expected to transfer, shifts" in out
    assert 'failures="1"' in (d / "junit.xml").read_text()


def test_improvement_passes_unless_strict(tmp_path, capsys):
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): TRANSFERS, ("lion", "mup"): TRANSFERS})
    assert gate(d) == 0
    assert "expected to shift, transfers now" in capsys.readouterr().out
    assert gate(d, "--strict") == 1


def test_inconclusive_is_a_warning_unless_strict(tmp_path, capsys):
    edge = (-10.0, -10.0, -10.0)  # every optimum on the grid's lowest LR
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): edge})
    assert gate(d) == 0
    assert "warning: inconclusive" in capsys.readouterr().out
    assert gate(d, "--strict") == 1


def test_no_expectation_is_a_note(tmp_path, capsys):
    d = make_sweep(tmp_path / "s", {("gelu", "mup"): SHIFTS})
    assert gate(d) == 0
    assert "no registered expectation; observed shifts" in capsys.readouterr().out


def test_missing_baseline_is_written_then_compared(tmp_path, capsys):
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): TRANSFERS})
    base = tmp_path / "ci" / "baseline.json"
    assert gate(d, "--baseline", base) == 0
    assert "did not exist: wrote this sweep's results there" in capsys.readouterr().out
    doc = json.loads(base.read_text())
    assert doc["schema"] == "mupbench.results/3" and doc["verdicts"][0]["ablation"] == "baseline"
    assert gate(d, "--baseline", base) == 0
    assert "transfers  transfers  +0.00" in capsys.readouterr().out


def test_optimum_moved_from_baseline_is_a_regression(tmp_path, capsys):
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): (-7.5, -7.5, -7.6)})
    base = tmp_path / "baseline.json"
    base.write_text(json.dumps({"schema": "mupbench.results/1", "verdicts": [
        {"ablation": "baseline", "parameterization": "mup", "verdict": "transfers",
         "optimal_log2_lr": {"32": -6.0, "64": -6.0, "128": -6.1}}]}))
    assert gate(d, "--baseline", base) == 1
    out = capsys.readouterr().out
    assert "optimum moved more than 1 log2 LR from the baseline" in out and "width 32" in out
    assert gate(d, "--baseline", base, "--optimum-tolerance", "2") == 0


def test_shift_against_a_transferring_baseline_is_a_regression(tmp_path, capsys):
    d = make_sweep(tmp_path / "s", {("gelu", "mup"): SHIFTS})
    base = tmp_path / "baseline.json"
    base.write_text(json.dumps({"schema": "mupbench.results/1", "verdicts": [
        {"ablation": "gelu", "parameterization": "mup", "verdict": "transfers", "optimal_log2_lr": {}}]}))
    assert gate(d, "--baseline", base) == 1
    out = capsys.readouterr().out
    assert "transferred on the baseline, shifts now" in out and "judged on one seed: regenerate it" in out
    base.write_text(base.read_text().replace("results/1", "results/2"))
    assert gate(d, "--baseline", base) == 1
    out = capsys.readouterr().out
    assert "transferred on the baseline, shifts now" in out and "regenerate" not in out


def test_inconclusive_is_a_warning_and_fails_under_strict(tmp_path, capsys):
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): TRANSFERS}, seeds=1)  # one seed: no interval
    assert gate(d) == 0
    assert "warning: inconclusive: one seed" in capsys.readouterr().out
    assert gate(d, "--strict") == 1


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    (json.dumps({"schema": "something/else", "verdicts": []}), "is not a mupbench.results/1, /2 or /3 document"),
    (json.dumps({"schema": "mupbench.results/1", "verdicts": [{"ablation": "baseline"}]}), "verdicts[0] needs"),
])
def test_malformed_baseline_is_a_usage_error(tmp_path, capsys, content, message):
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): TRANSFERS})
    base = tmp_path / "baseline.json"
    base.write_text(content)
    assert gate(d, "--baseline", base) == 2
    err = capsys.readouterr().err
    assert err.startswith("mupbench: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (d / "junit.xml").exists()


def test_missing_directory_is_a_usage_error(tmp_path, capsys):
    assert gate(tmp_path / "nope") == 2
    assert "is not a mupbench sweep directory" in capsys.readouterr().err
    assert gate() == 2
    assert "which sweep?" in capsys.readouterr().err


def _coord_doc(mup_passed: bool, sp_passed: bool = False) -> dict:
    def check(param, passed):
        slope = {"module": "blocks.0.mlp", "step": 2, "quantity": "mean_abs_delta", "slope": 0.1 if passed else 0.93,
                 "passed": passed, "bound": "both", "stderr": 0.04, "seeds": [0.9, 0.92, 0.97]}
        frozen = {"module": "blocks.1.mlp.up", "step": 0, "quantity": "mean_abs_update", "slope": None,
                  "passed": passed, "bound": "frozen", "stderr": None, "seeds": []}
        return {"label": f"model · {param}", "parameterization": param, "widths": [64, 128, 256], "steps": [0, 1, 2],
                "threshold": 0.25, "passed": passed, "records": [], "slopes": [slope, frozen], "seeds": [0, 1, 2]}

    return {"schema": "mupbench.coord_check/2", "checks": [check("mup", mup_passed), check("sp", sp_passed)]}


def test_failed_coordinate_check_is_a_regression(tmp_path, capsys):
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): TRANSFERS})
    (d / "coord_check.json").write_text(json.dumps(_coord_doc(mup_passed=True)))
    assert gate(d) == 0  # μP passes, SP fails as expected
    capsys.readouterr()
    (d / "coord_check.json").write_text(json.dumps(_coord_doc(mup_passed=False)))
    assert gate(d) == 1
    out = capsys.readouterr().out
    assert "coord-check[mup]" in out and "blocks.0.mlp: mean|Δx| grows 2^+0.93 per width doubling at step 2" in out
    assert "blocks.1.mlp.up: its weight never changes" in out


def test_coord_check_from_the_older_check_is_refused(tmp_path, capsys):
    """A coord_check.json of schema /1 (one seed, growth-only update bounds) is not what the gate judges any more."""
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): TRANSFERS})
    (d / "coord_check.json").write_text(json.dumps(_coord_doc(mup_passed=True) | {"schema": "mupbench.coord_check/1"}))
    assert gate(d) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "older coordinate check (mupbench.coord_check/1" in err
    assert f"mupbench coord-check --out {d}" in err


def test_malformed_coord_check_is_a_usage_error(tmp_path, capsys):
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): TRANSFERS})
    (d / "coord_check.json").write_text('{"schema": "wrong"}')
    assert gate(d) == 2
    assert "coord_check.json" in capsys.readouterr().err
