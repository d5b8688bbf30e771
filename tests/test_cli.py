"""The CLI end to end: a seconds-long sweep, resume after SIGKILL, and every bad-input error."""
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_cli

MICRO = ["--suite", "smoke", "--preset", "cpu-micro", "--extend-grid", "0"]  # a fixed grid: 16 runs


@pytest.fixture(scope="module")
def micro_sweep(tmp_path_factory, corpus_file):
    out = tmp_path_factory.mktemp("sweep") / "micro"
    res = run_cli("run", *MICRO, "--data", str(corpus_file), "--out", str(out), "--workers", "2")
    assert res.returncode == 0, res.stderr
    return out, res


def test_run_prints_verdicts_and_stores_every_run(micro_sweep):
    out, res = micro_sweep
    assert "16 runs planned" in res.stderr and "[16/16]" in res.stderr
    assert "baseline" in res.stdout and "mup" in res.stdout and "sp" in res.stdout
    con = sqlite3.connect(out / "mupbench.sqlite")
    rows = con.execute("SELECT status, device, versions, git_rev, tokens_per_s, wall_s, spec FROM runs").fetchall()
    assert len(rows) == 16
    for status, device, versions, git_rev, tps, wall, spec in rows:
        assert status in ("ok", "diverged") and device.startswith("cpu")
        assert json.loads(versions)["torch"] and git_rev and wall > 0
        assert json.loads(spec)["data"]["sha256"]
    assert con.execute("SELECT COUNT(*) FROM metrics WHERE split='val'").fetchone()[0] >= 16


def test_rerun_skips_finished_runs(micro_sweep, corpus_file):
    out, _ = micro_sweep
    res = run_cli("run", *MICRO, "--data", str(corpus_file), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "16 already stored, 0 to train" in res.stderr


def test_analyze_json_and_status(micro_sweep):
    out, _ = micro_sweep
    res = run_cli("analyze", str(out), "--json")
    assert res.returncode == 0, res.stderr
    verdicts = json.loads(res.stdout)["verdicts"]
    assert {(v["ablation"], v["parameterization"]) for v in verdicts} == {("baseline", "mup"), ("baseline", "sp")}
    for v in verdicts:
        assert v["verdict"] in ("transfers", "shifts", "inconclusive")
        assert set(v["optimal_log2_lr"]) == {"16", "32"}
    res = run_cli("status", str(out))
    assert res.returncode == 0 and "16/16 runs finished" in res.stdout


def test_edge_optimum_extends_the_grid_and_resumes(tmp_path, corpus_file):
    # Two LRs: every width's optimum is on an edge, so each group grows by exactly one point, at every width.
    args = ["run", "--suite", "smoke", "--preset", "cpu-micro", "--lrs", "2^-9,2^-8", "--extend-grid", "1",
            "--data", str(corpus_file), "--out", str(tmp_path / "s"), "--quiet"]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    assert "an optimum sits on the grid's edge; extending the grid to 2^" in res.stderr
    con = sqlite3.connect(tmp_path / "s" / "mupbench.sqlite")
    rows = con.execute("SELECT parameterization, width, log2_lr FROM runs").fetchall()
    planned = con.execute("SELECT COUNT(*) FROM plan").fetchone()[0]
    con.close()
    assert len(rows) == planned == 12  # (mup, sp) × widths 16, 32 × (2 + 1) LRs
    for param in ("mup", "sp"):
        grids = {w: sorted(x for p, w2, x in rows if p == param and w2 == w) for w in (16, 32)}
        assert grids[16] == grids[32] and len(grids[16]) == 3 and grids[16] in ([-10, -9, -8], [-9, -8, -7])
    again = run_cli(*args[:-1])  # with the progress display, which says what it skips
    assert again.returncode == 0 and "12 runs planned, 12 already stored, 0 to train" in again.stderr


def test_explain_prints_every_tensor():
    res = run_cli("explain", "--width", "128", "--parameterization", "mup")
    assert res.returncode == 0, res.stderr
    assert "unembed.weight" in res.stdout and "1/wm" in res.stdout and "0.25" in res.stdout


def test_resume_after_sigkill_gives_same_results_without_duplicates(tmp_path, corpus_file):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    args = ["run", *MICRO, "--data", str(corpus_file), "--workers", "1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "mupbench.cli", *args, "--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    stored = 0
    while time.time() < deadline and stored < 3:
        time.sleep(0.2)
        try:
            con = sqlite3.connect(killed / "mupbench.sqlite", timeout=5)
            stored = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            con.close()
        except sqlite3.Error:
            pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 3 <= stored < 16, "the sweep should have been killed midway"

    assert run_cli(*args, "--out", str(killed)).returncode == 0
    assert run_cli(*args, "--out", str(clean)).returncode == 0

    def results(path):
        con = sqlite3.connect(path / "mupbench.sqlite")
        rows = con.execute("SELECT run_hash, status, final_val_loss FROM runs").fetchall()
        n_metrics = con.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
        return sorted(rows), n_metrics

    assert results(killed) == results(clean)
    assert len(results(killed)[0]) == 16


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "--suite", "nope"], "unknown suite 'nope'"),
        (["run", "--ablation", "basline"], "did you mean baseline"),
        (["run", "--preset", "huge"], "unknown preset"),
        (["run", "--widths", "30,64"], "not divisible by head_dim"),
        (["run", "--lrs", "0.01,0"], "must be > 0"),
        (["run", "--lrs", "-0.5"], "must be > 0"),
        (["run", "--lrs", "fast"], "not a number"),
        (["run", "--data", "/nonexistent/corpus.bin"], "cannot read data file"),
        (["run", "--device", "tpu"], "unknown device"),
        (["run", "--workers", "0"], "--workers must be at least 1"),
        (["run", "--seeds", "0"], "--seeds must be at least 1"),
        (["run", "--tolerance", "-1"], "--tolerance: '-1' is not a finite number >= 0"),
        (["run", "--tolerance", "nan"], "--tolerance: 'nan' is not a finite number >= 0"),
        (["run", "--bogus"], "unrecognized arguments"),
        (["explain", "--width", "30"], "not divisible by head_dim"),
        (["status", "/nonexistent/sweep"], "not a mupbench sweep directory"),
        (["analyze", "/nonexistent/sweep"], "not a mupbench sweep directory"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    res = run_cli(*args, "--out", str(tmp_path / "o")) if args[0] == "run" else run_cli(*args)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mupbench: error:") and message in lines[0], res.stderr
    assert not (tmp_path / "o").exists(), "nothing is written for bad input"


def test_incompatible_store_is_refused_untouched(micro_sweep, tmp_path, corpus_file):
    import shutil

    src, _ = micro_sweep
    old = tmp_path / "old"
    shutil.copytree(src, old)
    con = sqlite3.connect(old / "mupbench.sqlite")
    con.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    con.commit()
    con.close()
    before = _digest(old / "mupbench.sqlite")
    for args in (["run", *MICRO, "--data", str(corpus_file), "--out", str(old)], ["analyze", str(old)], ["status", str(old)]):
        res = run_cli(*args)
        assert res.returncode == 2 and "schema 999" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert _digest(old / "mupbench.sqlite") == before


def test_corrupt_store_is_refused(tmp_path):
    (tmp_path / "mupbench.sqlite").write_bytes(b"this is not a database" * 100)
    res = run_cli("analyze", str(tmp_path))
    assert res.returncode == 2 and "not a readable mupbench store" in res.stderr


def test_preset_mismatch_is_refused(micro_sweep, corpus_file):
    out, _ = micro_sweep
    res = run_cli("run", "--preset", "cpu-tiny", "--data", str(corpus_file), "--out", str(out))
    assert res.returncode == 2 and "preset 'cpu-micro'" in res.stderr
