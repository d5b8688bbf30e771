"""Sweeps along depth and duration: planning, the analysis along another axis, the suites, the command line, the
report — and the bad grids that must stop before any run."""
import json

import numpy as np
import pandas as pd
import pytest

from mupbench import ablations
from conftest import run_cli
from mupbench.config import DataSpec
from mupbench.errors import UserError
from mupbench.transfer import analyze_frame
from mupbench.reports import results

DATA = DataSpec("stdlib", "0" * 64, 1_000_000, 256)


def _plan(suite, preset="cpu-tiny", **changes):
    p = ablations.get_preset(preset)
    if changes:
        import dataclasses

        p = dataclasses.replace(p, **changes)
    return ablations.plan(ablations.get_suite(suite).resolve(), p, DATA)


def test_depth_suite_sweeps_depth_at_the_axis_width_with_the_smallest_depth_as_base():
    specs = _plan("depth")
    preset = ablations.get_preset("cpu-tiny")
    assert {s.ablation for s in specs} == {"depth_standard", "depth_mup", "completep"}
    assert {s.model.depth for s in specs} == set(preset.depths)
    assert {s.model.width for s in specs} == {preset.axis_width}
    assert {s.model.base_depth for s in specs} == {min(preset.depths)}
    assert {s.extra["axis"] for s in specs} == {"depth"}
    assert len(specs) == 3 * len(preset.depths) * len(preset.log2_lrs)
    assert len({s.run_hash for s in specs}) == len(specs)  # the rules differ even at the base depth


def test_duration_suite_sweeps_steps_with_wsd():
    specs = _plan("duration")
    preset = ablations.get_preset("cpu-tiny")
    assert {s.train.steps for s in specs} == set(preset.durations)
    assert {s.train.schedule for s in specs} == {"wsd"} and {s.train.warmup for s in specs} == {8}  # 10% of 75
    assert {s.model.width for s in specs} == {4 * preset.model["base_width"]}  # where μP and SP differ
    assert {s.model.parameterization for s in specs} == {"mup", "sp"}
    assert {s.extra["axis"] for s in specs} == {"tokens"}


def test_width_suites_are_unchanged_and_hold_only_width_ablations():
    lingle = [a for a, _ in ablations.get_suite("lingle").resolve()]
    assert lingle and all(a.axis == "width" for a in lingle)
    assert not {"completep", "depth_mup", "depth_standard", "wsd_duration"} & {a.name for a in lingle}


@pytest.mark.parametrize("durations, text", [((1, 300), "at or after the end of training")])
def test_a_branch_point_after_the_end_of_training_is_refused(durations, text):
    with pytest.raises(UserError, match=text):
        _plan("duration", durations=durations)


def test_axes_do_not_combine():
    with pytest.raises(UserError, match="different axes"):
        ablations.get("completep+wsd_duration").changes(ablations.get_preset("cpu-tiny").base("mup"))


def test_list_json_shows_the_new_ablations_suites_and_grids():
    res = run_cli("list", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    by_name = {a["name"]: a for a in doc["ablations"]}
    for name, axis, reported in (("depth_standard", "depth", "shifts"), ("depth_mup", "depth", "shifts"),
                                 ("completep", "depth", "transfers"), ("wsd_duration", "duration", "shifts")):
        a = by_name[name]
        assert a["axis"] == axis and a["reported"] == reported and a["expected"] and a["source"]
    suites = {s["name"]: s for s in doc["suites"]}
    assert suites["depth"]["ablations"] == ["depth_standard", "depth_mup", "completep"]
    assert suites["duration"]["ablations"] == ["wsd_duration"]
    tiny = next(p for p in doc["presets"] if p["name"] == "cpu-tiny")
    assert tiny["depths"] and tiny["durations"] and tiny["axis_width"]


# --- analysis along another axis -----------------------------------------------------------------------------------
def _frame(axis, scales, drift, seeds=3, noise=0.01):
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        for k, scale in enumerate(scales):
            centre = -6 + drift * k
            for x in np.arange(-10, -1.0):
                loss = 2 + 0.05 * (x - centre) ** 2 + rng.normal(0, noise)
                rows.append({"ablation": "a", "parameterization": "mup", axis: scale, "log2_lr": x, "seed": seed,
                             "final_val_loss": loss})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("axis, scales", [("depth", [2, 4, 8, 16]), ("tokens", [76800, 153600, 307200, 614400])])
def test_analyze_frame_along_depth_and_tokens(axis, scales):
    stays = analyze_frame(_frame(axis, scales, 0.0), axis=axis)[0]
    assert stays.axis == axis and stays.scales == scales and stays.verdict == "transfers"
    moves = analyze_frame(_frame(axis, scales, -1.0), axis=axis)[0]
    assert moves.verdict == "shifts" and moves.drift_per_doubling == pytest.approx(-1.0, abs=0.15)
    assert ("per doubling of the training tokens" if axis == "tokens" else "per depth doubling") in moves.reason
    doc = moves.to_json()
    assert doc["axis"] == axis and doc["scales"] == scales and set(doc["optimal_log2_lr"]) == {str(s) for s in scales}


def test_a_frame_with_an_axis_column_is_judged_per_axis():
    frame = pd.concat([_frame("depth", [2, 4, 8], 0.0).assign(axis="depth", width=32),
                       _frame("width", [32, 64, 128], -1.0).assign(ablation="b", axis="width", depth=2)])
    verdicts = {v.ablation: v for v in analyze_frame(frame)}
    assert verdicts["a"].axis == "depth" and verdicts["a"].verdict == "transfers"
    assert verdicts["b"].axis == "width" and verdicts["b"].verdict == "shifts"


@pytest.mark.parametrize("frame, axis, text", [
    (_frame("depth", [2, 4], 0.0), None, "lacks column(s) width"),
    (_frame("width", [32, 64], 0.0), "depth", "lacks column(s) depth"),
    (_frame("depth", [0, 4], 0.0), "depth", "must be positive"),
    (_frame("depth", [2, 4], 0.0), "height", "axis 'height' is not one of"),
])
def test_bad_frames_along_an_axis(frame, axis, text):
    with pytest.raises(UserError, match=text.replace("(", r"\(").replace(")", r"\)")):
        analyze_frame(frame, axis=axis)


# --- end to end ------------------------------------------------------------------------------------------------------
LRS = ["--lrs", "2^-7,2^-5,2^-3", "--extend-grid", "0", "--seeds", "1"]


def test_depth_sweep_end_to_end(tmp_path, corpus_file):
    out = tmp_path / "depth"
    res = run_cli("run", "--suite", "depth", "--preset", "cpu-micro", "--ablation", "completep", "--depths", "1,2",
                  *LRS, "--data", str(corpus_file), "--out", str(out), "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert "L1" in res.stdout and "L2" in res.stdout and "drift/2x depth" in res.stdout
    assert "depth 2 lr" in res.stderr  # progress names the axis
    doc = json.loads((out / "report" / "results.json").read_text())
    assert results.validate(doc) == []
    assert doc["sweep"]["axes"] == {"depth": [1, 2]} and doc["verdicts"][0]["axis"] == "depth"
    html = (out / "report" / "report.html").read_text()
    assert "Optimal learning rate vs depth" in html and "one line per depth" in html
    check = run_cli("coord-check", "--depth-rule", "all", "--depths", "2,4,8", "--seeds", "0", "--out", str(out))
    assert check.returncode == 0, check.stderr
    gate = run_cli("gate", str(out))  # each depth rule as expected, the one-seed verdict a warning: the gate passes
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "depth-coord-check[completep]" in gate.stdout and "depth-coord-check[standard]" in gate.stdout


def test_duration_sweep_branches_and_cleans_up(tmp_path, corpus_file):
    out = tmp_path / "duration"
    res = run_cli("run", "--suite", "duration", "--preset", "cpu-micro", "--durations", "15,30", *LRS,
                  "--data", str(corpus_file), "--out", str(out), "--workers", "1")
    assert res.returncode == 0, res.stderr
    assert "30 steps lr" in res.stderr and "tok" in res.stdout
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())
    doc = json.loads((out / "report" / "results.json").read_text())
    assert results.validate(doc) == [] and set(doc["sweep"]["axes"]) == {"tokens"}
    assert {e["axis"] for e in doc["verdicts"]} == {"tokens"} and len(doc["verdicts"]) == 2
    summary = (out / "report" / "summary.md").read_text()
    assert "tok |" in summary and "drift/2x tokens" in summary


@pytest.mark.parametrize("args, text", [
    (["--suite", "depth", "--depths", "0,2"], "--depths: '0' is not a positive integer"),
    (["--suite", "duration", "--durations", "1,30"], "at or after the end of training"),
    (["--suite", "duration", "--durations", "-5"], "--durations"),
])
def test_bad_depth_and_duration_grids_exit_2_before_any_run(tmp_path, args, text):
    out = tmp_path / "bad"
    res = run_cli("run", *args, "--preset", "cpu-micro", "--out", str(out))
    assert res.returncode == 2 and text in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (out / "mupbench.sqlite").exists()
