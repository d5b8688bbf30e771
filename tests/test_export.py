"""`mupbench export`: the runs as a table that `analyze_frame` redoes the verdicts from, the curves in long form, and
its bad input."""
from __future__ import annotations

import io
import json
import math

import pandas as pd
import pytest

from fake_sweep import DIVERGES, FAILS, run_fake_sweep
from mupbench.cli import main
from mupbench.store import Store
from mupbench.transfer import analyze, analyze_frame


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, corpus_file):
    out = tmp_path_factory.mktemp("export") / "sweep"
    with pytest.MonkeyPatch.context() as monkeypatch:
        status, _ = run_fake_sweep(monkeypatch, corpus_file, out)
    assert status == 0
    return out


def _read(path, fmt):
    if fmt == "csv":
        return pd.read_csv(path)
    if fmt == "jsonl":
        return pd.read_json(path, lines=True, precise_float=True)  # pandas rounds the last digit otherwise
    return pd.read_parquet(path)


def _stored(sweep):
    store = Store(sweep)
    try:
        return store.runs(), store.curves()
    finally:
        store.close()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_the_exported_runs_give_the_sweeps_own_verdicts(sweep, tmp_path, fmt, capsys):
    if fmt == "parquet":
        pytest.importorskip("pyarrow", reason='pyarrow not installed: pip install "mupbench[parquet]"')
    path = tmp_path / f"runs.{fmt}"
    assert main(["export", str(sweep), "--format", fmt, "--out", str(path)]) == 0
    assert f"runs: {path} (" in capsys.readouterr().out
    frame = _read(path, fmt)
    runs, _ = _stored(sweep)
    assert len(frame) == len(runs)
    by_key = frame.set_index(["parameterization", "width", "log2_lr", "seed"])
    assert by_key.loc[(DIVERGES[0], DIVERGES[1], DIVERGES[2], 0), "final_val_loss"] == math.inf
    failed = by_key.loc[(FAILS[0], FAILS[1], FAILS[2], 0)]
    assert failed["status"] == "failed" and pd.isna(failed["final_val_loss"]) and "boom" in failed["error"]
    # every setting, the store's and the spec's
    assert {"ablation", "parameterization", "width", "depth", "steps", "tokens", "lr", "log2_lr", "seed", "status",
            "final_val_loss", "wall_s", "axis", "model.width", "train.lr", "train.weight_decay", "data.sha256"} <= set(frame)
    assert (frame["model.width"] == frame["width"]).all() and (frame["train.lr"] == frame["lr"]).all()
    merged = runs.merge(frame, on="run_hash", suffixes=("", "_exported"))
    assert (merged["wall_s"] == merged["wall_s_exported"]).all()
    finite = merged["final_val_loss"].notna()
    assert (merged.loc[finite, "final_val_loss"] == merged.loc[finite, "final_val_loss_exported"]).all()

    own = [v.to_json() for v in analyze(runs)]
    again = [v.to_json() for v in analyze_frame(frame)]
    assert [v["verdict"] for v in own] == ["transfers", "inconclusive"]  # sp: a run failed, so runs are missing
    assert again == own


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_curves_in_long_form(sweep, tmp_path, fmt, capsys):
    path = tmp_path / f"runs.{fmt}"
    assert main(["export", str(sweep), "--format", fmt, "--curves", "--out", str(path)]) == 0
    curves_path = tmp_path / f"runs-curves.{fmt}"
    assert f"curves: {curves_path} (" in capsys.readouterr().out
    curves = _read(curves_path, fmt)
    runs, stored = _stored(sweep)
    assert len(curves) == len(stored)
    assert {"run_hash", "ablation", "parameterization", "width", "log2_lr", "seed", "step", "split", "loss"} <= set(curves)
    one = runs[runs["status"] == "ok"].iloc[0]
    mine = curves[(curves["run_hash"] == one["run_hash"]) & (curves["split"] == "val")].sort_values("step")
    theirs = stored[(stored["run_hash"] == one["run_hash"]) & (stored["split"] == "val")].sort_values("step")
    assert list(mine["step"]) == list(theirs["step"]) and list(mine["loss"]) == pytest.approx(list(theirs["loss"]))
    assert (mine["width"] == one["width"]).all()


def test_default_path_and_standard_output(sweep, capsys):
    assert main(["export", str(sweep)]) == 0
    assert (sweep / "runs.csv").is_file()
    capsys.readouterr()
    assert main(["export", str(sweep), "--format", "jsonl", "--out", "-"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == len(_stored(sweep)[0]) and any(r["final_val_loss"] == math.inf for r in rows)
    assert len(pd.read_json(io.StringIO("\n".join(lines)), lines=True)) == len(rows)


def test_bad_input_is_one_line_and_exit_2(sweep, tmp_path, capsys, monkeypatch):
    cases = [
        ([str(tmp_path / "missing")], "is not a directory"),
        ([str(tmp_path)], "not a mupbench sweep directory"),
        ([str(sweep), "--format", "xml"], "invalid choice"),
        ([str(sweep), "--format", "parquet", "--out", "-"], "standard output"),
        ([str(sweep), "--curves", "--out", "-"], "--curves writes a second file"),
        ([str(sweep), "--out", str(tmp_path / "no" / "such" / "runs.csv")], "does not exist"),
    ]
    for argv, message in cases:
        assert main(["export", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)  # as if not installed
    assert main(["export", str(sweep), "--format", "parquet"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "mupbench[parquet]"' in err and len(err.strip().splitlines()) == 1
