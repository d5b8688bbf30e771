"""A team's own training code as the trainer: `--trainer file.py:func` and `--trainer-command TEMPLATE` sweep, store,
fail and gate like the built-in trainer (mupbench.trainers)."""
from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from mupbench.store import Store
from mupbench.trainers.external import parse_result

FAKE = ROOT / "tests" / "trainers" / "fake_trainer.py"
GRID = ["--suite", "pr", "--ablation", "baseline", "--preset", "cpu-micro", "--widths", "32,64", "--lrs", "2^-7,2^-6,2^-5",
        "--seeds", "1", "--workers", "2", "--quiet"]


def command(mode: str = "ok", result: bool = True) -> str:
    tail = " --result {result}" if result else ""
    return f"{sys.executable} {FAKE} --width {{width}} --lr {{lr}} --seed {{seed}} --mode {mode}{tail}"


def stored(out: Path):
    store = Store(out)
    try:
        return store.runs(), store.curves()
    finally:
        store.close()


@pytest.mark.parametrize("result_file", [True, False], ids=["result-file", "last-stdout-line"])
def test_a_command_trainer_sweeps_and_stores_every_run(tmp_path, corpus_file, result_file):
    out = tmp_path / "sweep"
    res = run_cli("run", *GRID, "--data", str(corpus_file), "--out", str(out),
                  "--trainer-command", command(result=result_file))
    assert res.returncode == 0, res.stderr
    runs, curves = stored(out)
    assert sorted(runs["status"]) == ["ok"] * 6
    for _, r in runs.iterrows():  # the loss the script computed from the settings it was given
        assert r["final_val_loss"] == pytest.approx(3.0 + 0.05 * (r["log2_lr"] + 6) ** 2 - 0.1 * math.log2(r["width"]))
    assert len(curves) == 12
    logs = list(out.glob("trainer-runs/*/output.log"))
    assert len(logs) == 6 and all("step 1: loss 5.0" in p.read_text() for p in logs)
    spec = json.loads(runs["spec"].iloc[0])
    assert spec["extra"]["trainer"]["identity"]["template"] == command(result=result_file)
    again = run_cli("run", *GRID, "--data", str(corpus_file), "--out", str(out), "--trainer-command",
                    command(result=result_file))
    assert again.returncode == 0 and "already stored" not in again.stdout  # resumed: nothing to train
    assert len(stored(out)[0]) == 6


def test_a_callable_trainer_gets_the_settings_and_returns_the_loss(tmp_path, corpus_file):
    out = tmp_path / "sweep"
    res = run_cli("run", *GRID, "--data", str(corpus_file), "--out", str(out), "--trainer", f"{FAKE}:train")
    assert res.returncode == 0, res.stderr
    runs, curves = stored(out)
    assert sorted(runs["status"]) == ["ok"] * 6 and set(curves["step"]) == {30}
    logs = sorted(out.glob("trainer-runs/*/output.log"))
    assert all(p.read_text().startswith("training width ") for p in logs)  # its prints, kept per run


def test_failing_commands_are_stored_with_their_reasons_and_the_sweep_goes_on(tmp_path, corpus_file):
    """One sweep whose every learning rate fails its own way (tests/trainers/fake_trainer.py COMMAND_BY_LR)."""
    out = tmp_path / "sweep"
    argv = ["run", *GRID[:6], "--lrs", "2^-9,2^-8,2^-7,2^-6,2^-5,2^-4", "--seeds", "1", "--quiet", "--data",
            str(corpus_file), "--out", str(out), "--trainer-command", command("by-lr"), "--run-timeout", "3"]
    res = run_cli(*argv)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    runs, _ = stored(out)
    by_lr = {lr: (g["status"].tolist(), g["error"].tolist()) for lr, g in runs.groupby("log2_lr")}
    expected = {-9: "trainer command exited with status 3", -8: "wrote no result", -7: "is not JSON",
                -5: "timed out after 3 s (--run-timeout)"}
    for lr, why in expected.items():
        statuses, errors = by_lr[lr]
        assert statuses == ["failed"] * 2 and all(why in e for e in errors), (lr, errors)
    assert "illegal memory access" in by_lr[-9][1][0]  # the output's tail comes with the reason
    assert by_lr[-6][0] == ["diverged"] * 2 and by_lr[-4][0] == ["ok"] * 2
    shown = run_cli("status", str(out)).stdout
    assert "exited with status 3" in shown and "| CUDA error: an illegal memory access" in shown
    assert "8 failed" in shown
    again = run_cli(*argv[:-2], "--run-timeout", "3", "--retry-failed")  # retried, failed again, each stored once
    assert again.returncode == 0 and len(stored(out)[0]) == 12


def test_failing_callables_are_stored_as_failed_and_nan_is_divergence(tmp_path, corpus_file, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINER_MODE", "by-lr")  # tests/trainers/fake_trainer.py CALLABLE_BY_LR
    out = tmp_path / "sweep"
    res = run_cli("run", *GRID[:6], "--lrs", "2^-7,2^-6,2^-5,2^-4", "--seeds", "1", "--quiet", "--data",
                  str(corpus_file), "--out", str(out), "--trainer", f"{FAKE}:train")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    runs, _ = stored(out)
    by_lr = {lr: g for lr, g in runs.groupby("log2_lr")}
    assert "RuntimeError: the trainer's own bug" in by_lr[-7]["error"].iloc[0]
    assert "'three point two', not a number" in by_lr[-6]["error"].iloc[0]
    assert list(by_lr[-5]["status"]) == ["diverged"] * 2 and (by_lr[-5]["final_val_loss"] == math.inf).all()
    assert list(by_lr[-4]["status"]) == ["ok"] * 2


BAD = {
    "unknown placeholder": (["--trainer-command", "python t.py --lr {lr} --width {widht}"], "unknown placeholder {widht}"),
    "no lr": (["--trainer-command", f"{sys.executable} {FAKE} --width {{width}}"], "must pass {lr}"),
    "no width": (["--trainer-command", f"{sys.executable} {FAKE} --lr {{lr}}"], "must pass {width}"),
    "missing program": (["--trainer-command", "no-such-trainer --lr {lr} --width {width}"], "not found"),
    "unbalanced brace": (["--trainer-command", "python t.py --lr {lr --width {width}"], "--trainer-command"),
    "missing file": (["--trainer", "no/such/file.py:train"], "does not exist"),
    "not callable": (["--trainer", f"{FAKE}:LOSS"], "is not a callable"),
    "import fails": (["--trainer", "no_such_package.trainer:train"], "cannot import"),
    "both": (["--trainer", f"{FAKE}:train", "--trainer-command", command()], "not both"),
    "timeout alone": (["--run-timeout", "5"], "applies only with --trainer"),
    "bad timeout": (["--trainer", f"{FAKE}:train", "--run-timeout", "0"], "positive number"),
    "with --model": (["--trainer", f"{FAKE}:train", "--model", "examples/my_model.py:build"], "exclude each other"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_trainer_input_is_one_line_before_any_run(case, tmp_path, corpus_file, capsys, monkeypatch):
    from mupbench.cli import main

    monkeypatch.chdir(ROOT)
    options, message = BAD[case]
    out = tmp_path / "sweep"
    assert main(["run", *GRID, "--data", str(corpus_file), "--out", str(out), *options]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_an_edited_trainer_is_a_new_trainer_not_averaged_with_the_old(tmp_path, corpus_file, capsys):
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(FAKE, code / "fake_trainer.py")
    (code / "entry.py").write_text("from fake_trainer import train  # noqa: F401\n")
    out = tmp_path / "sweep"
    first = run_cli("run", *GRID, "--data", str(corpus_file), "--out", str(out), "--trainer", f"{code}/entry.py:train")
    assert first.returncode == 0, first.stderr
    with open(code / "fake_trainer.py", "a") as f:  # an edit in a file the entry point imports
        f.write("\n# tuned\n")
    from mupbench.cli import main

    assert main(["run", *GRID, "--data", str(corpus_file), "--out", str(out), "--trainer", f"{code}/entry.py:train"]) == 2
    assert "an earlier version of this trainer" in capsys.readouterr().err
    assert main(["run", *GRID, "--data", str(corpus_file), "--out", str(out)]) == 2
    assert "holds runs of the trainer" in capsys.readouterr().err


def test_parse_result():
    assert parse_result(3.5, "x") == {"status": "ok", "final_val_loss": 3.5, "curve": []}
    assert parse_result({"final_val_loss": 2.0, "curve": [[10, 3.0], [20, "train", 2.5]]}, "x")["curve"] == \
        [(10, "val", 3.0), (20, "train", 2.5)]
    for diverged in (math.nan, math.inf, "nan", "inf", {"final_val_loss": None, "status": "diverged"}):
        assert parse_result(diverged, "x")["status"] == "diverged"
    for bad, why in ((None, "not a number"), (True, "not a number"), ({"loss": 3}, "no final_val_loss"),
                     ({"final_val_loss": 3, "status": "done"}, "status 'done'"),
                     ({"final_val_loss": 3, "curve": [[1.5, 3]]}, "curve point")):
        result = parse_result(bad, "x")
        assert result["status"] == "failed" and why in result["error"], (bad, result)


def test_the_gate_fails_a_planted_mup_mistake_in_a_teams_training_script(tmp_path, corpus_file, monkeypatch):
    """examples/train_gpt.py as it is passes the gate; with its width multiplier hard-coded to 1 (the hidden layers'
    LR no longer divided by it, the readout's logits no longer scaled by 1/m) the optimum moves with width and the gate
    fails."""
    monkeypatch.setenv("GPT_DATA", str(corpus_file))
    planted = tmp_path / "planted"
    shutil.copytree(ROOT / "examples", planted)
    script = planted / "train_gpt.py"
    line = "        self.mult = width / base_width"
    assert line in script.read_text()
    script.write_text(script.read_text().replace(line, "        self.mult = 1.0"))
    sweep = ["--suite", "pr", "--ablation", "baseline", "--preset", "cpu-micro", "--widths", "32,64,128", "--lrs",
             "2^-9,2^-8,2^-7,2^-6,2^-5,2^-4,2^-3", "--seeds", "3", "--steps", "100", "--quiet"]
    verdicts = {}
    for name, folder in (("correct", ROOT / "examples"), ("planted", planted)):
        out = tmp_path / name
        res = run_cli("gate", *sweep, "--out", str(out), "--trainer", f"{folder}/gpt_trainer.py:train")
        verdicts[name] = (res.returncode, json.loads((out / "report" / "results.json").read_text())["verdicts"][0])
    assert verdicts["correct"][0] == 0, verdicts
    assert verdicts["planted"][0] == 1 and verdicts["planted"][1]["verdict"] == "shifts", verdicts
