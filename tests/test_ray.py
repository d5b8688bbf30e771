"""The Ray executor on a real Ray cluster: one local instance shared by the module (2 CPUs, no dashboard, no network).

Drivers are `mupbench run --executor ray --ray-address ADDR` subprocesses connecting to it, as on a real cluster. They
show: the same losses (bit for bit) and verdicts as local workers; a run whose Ray worker is killed is retried and the
sweep completes; a driver killed midway loses only the runs in flight and a re-run trains only what is missing; a
genuine training failure is stored as `failed`, once; bad input is one line and exit 2 with nothing written.
"""
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

try:
    import ray
except ImportError:
    ray = None

needs_ray = pytest.mark.skipif(ray is None, reason='Ray is not installed: pip install "mupbench[ray]" (CI installs it)')

# 8 runs: baseline under μP and SP, widths 16 and 32, two learning rates, a fixed grid
SWEEP = ["run", "--suite", "smoke", "--preset", "cpu-micro", "--lrs", "2^-8,2^-6", "--extend-grid", "0"]
N_RUNS = 8


@pytest.fixture(scope="module")
def cluster():
    if ray is None:
        pytest.skip('Ray is not installed: pip install "mupbench[ray]" (CI installs it)')
    from mupbench.executors.ray import runtime_env

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", runtime_env=runtime_env())
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _driver(args, cwd=None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "mupbench.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _rows(out: Path) -> dict:
    con = sqlite3.connect(out / "mupbench.sqlite", timeout=10)
    try:
        runs = {h: (status, loss, finished) for h, status, loss, finished
                in con.execute("SELECT run_hash, status, final_val_loss, finished_at FROM runs")}
        curves = sorted(con.execute("SELECT run_hash, step, split, loss FROM metrics"))
    finally:
        con.close()
    return {"runs": runs, "curves": curves}


def _results(out: Path):
    """Status and loss per run, and every curve point: what must match bit for bit."""
    rows = _rows(out)
    return {h: r[:2] for h, r in rows["runs"].items()}, rows["curves"]


def _stored(out: Path) -> int:
    try:
        con = sqlite3.connect(out / "mupbench.sqlite", timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory, corpus_file):
    out = tmp_path_factory.mktemp("local") / "s"
    res = run_cli(*SWEEP, "--data", str(corpus_file), "--out", str(out), "--workers", "2", "--quiet")
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture(scope="module")
def ray_sweep(cluster, tmp_path_factory, corpus_file):
    out = tmp_path_factory.mktemp("ray") / "s"
    proc = _driver([*SWEEP, "--data", str(corpus_file), "--out", str(out), "--executor", "ray", "--ray-address", cluster])
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    return out, stdout, stderr


def _cli(capsys, *args):
    """`mupbench ARGS` in this process (cheaper than a subprocess): (exit status, stdout, stderr)."""
    from mupbench.cli import main

    capsys.readouterr()
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def _verdicts(capsys, out: Path):
    status, stdout, stderr = _cli(capsys, "analyze", out, "--json")
    assert status == 0, stderr
    return sorted((v["ablation"], v["parameterization"], v["verdict"], json.dumps(v["optimal_log2_lr"], sort_keys=True))
                  for v in json.loads(stdout)["verdicts"])


@needs_ray
def test_same_losses_and_verdicts_as_local_workers(ray_sweep, local_sweep, capsys):
    out, stdout, stderr = ray_sweep
    assert f"{N_RUNS} runs planned, 0 already stored, {N_RUNS} to train on Ray" in stderr
    assert f"[{N_RUNS}/{N_RUNS}] ok" in stderr  # the local executor's progress display
    assert "baseline" in stdout and (out / "report" / "report.html").exists()
    ray_runs, ray_curves = _results(out)
    local_runs, local_curves = _results(local_sweep)
    assert len(ray_runs) == N_RUNS and all(status == "ok" for status, _ in ray_runs.values())
    assert ray_runs == local_runs and ray_curves == local_curves  # bit-identical: same floats, every curve point
    assert _verdicts(capsys, out) == _verdicts(capsys, local_sweep)
    con = sqlite3.connect(out / "mupbench.sqlite")
    devices = {d for (d,) in con.execute("SELECT device FROM runs")}
    git_revs = {g for (g,) in con.execute("SELECT git_rev FROM runs")}
    con.close()
    assert devices == {"cpu (1 thread)"} and len(git_revs) == 1 and None not in git_revs


def _train_task_pids() -> list[int]:
    """Ray workers executing a mupbench run (Ray titles a busy worker process `ray::<task name>`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::_train_task"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@needs_ray
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds Ray's worker processes in /proc")
def test_killed_worker_is_retried_and_the_sweep_completes(cluster, local_sweep, tmp_path, corpus_file, capsys):
    out = tmp_path / "s"
    proc = _driver([*SWEEP, "--data", str(corpus_file), "--out", str(out), "--executor", "ray", "--ray-address", cluster,
                    "--quiet"])
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline and proc.poll() is None:
        pids = _train_task_pids()
        if pids:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)  # the worker process dies mid-run, as on an OOM kill or a lost node
        time.sleep(0.05)
    status = _cli(capsys, "status", out)  # while the driver writes (it is still retrying the killed run)
    _, stderr = proc.communicate(timeout=300)
    assert killed is not None, "no Ray worker was seen training"
    assert status[0] == 0 and "runs finished" in status[1], status
    assert proc.returncode == 0, stderr
    runs, curves = _results(out)
    assert len(runs) == N_RUNS and all(status == "ok" for status, _ in runs.values()), runs
    assert (runs, curves) == _results(local_sweep)  # the retried run trained from scratch, to the same numbers


@needs_ray
def test_killed_driver_loses_only_runs_in_flight_and_rerun_trains_the_rest(cluster, local_sweep, tmp_path, corpus_file,
                                                                          capsys):
    out = tmp_path / "s"
    args = [*SWEEP, "--data", str(corpus_file), "--out", str(out), "--executor", "ray", "--ray-address", cluster,
            "--workers", "1"]
    proc = _driver([*args, "--quiet"])
    deadline = time.time() + 120
    while _stored(out) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    if sys.platform.startswith("linux"):  # Ray ends the dead driver's job: its runs in flight stop training
        deadline = time.time() + 30
        while _train_task_pids() and time.time() < deadline:
            time.sleep(0.1)
        assert not _train_task_pids(), "the killed driver's tasks kept running"
    before = _rows(out)["runs"]
    assert 2 <= len(before) < N_RUNS, "the driver should have been killed midway"
    status = _cli(capsys, "status", out)
    assert status[0] == 0 and f"{len(before)}/{N_RUNS} runs finished" in status[1], status

    again = _driver(args)
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    n = len(before)
    assert f"{N_RUNS} runs planned, {n} already stored, {N_RUNS - n} to train" in stderr
    after = _rows(out)["runs"]
    assert {h: after[h] for h in before} == before  # stored runs were not trained again (same finished_at)
    assert _results(out) == _results(local_sweep)


@needs_ray
def test_training_failure_is_a_stored_result_and_the_corpus_is_put_once(cluster, ray_sweep):
    import dataclasses

    from mupbench.config import RunSpec
    from mupbench.executors.ray import RayExecutor
    from mupbench.store import Store

    out, _, _ = ray_sweep
    store = Store(out)
    spec = RunSpec.from_json(json.loads(store.planned()["spec"].iloc[0]))
    fresh = dataclasses.replace(spec, train=dataclasses.replace(spec.train, lr=2.0 ** -7))
    broken = dataclasses.replace(spec, model=dataclasses.replace(spec.model, vocab_size=16))  # byte ids >= 16: IndexError
    executor = RayExecutor(device="cpu")  # the module's Ray connection: not started (nor shut down) by the executor
    told = []  # on_stored, called in the driver: each run once, after its result is stored
    try:
        executor.train(store, [fresh, broken], progress=False,
                       on_stored=lambda s: told.append((s.run_hash, store.statuses().get(s.run_hash))))
        runs = store.runs().set_index("run_hash")
    finally:
        store.close()
    assert not executor.owns_ray and len(executor._corpus) == 1
    assert runs.loc[fresh.run_hash, "status"] == "ok"
    failed = runs.loc[broken.run_hash]
    assert failed["status"] == "failed" and "IndexError" in failed["error"] and "Ray" not in failed["error"]
    assert sorted(told) == sorted([(fresh.run_hash, "ok"), (broken.run_hash, "failed")])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_one_line_exit_2(result, message, out):
    status, _, stderr = result
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mupbench: error:") and message in lines[0], stderr
    assert not out.exists(), "nothing is written for bad input"


def test_ray_not_installed_names_the_extra(tmp_path, corpus_file, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as where Ray is not installed
    out = tmp_path / "o"
    result = _cli(capsys, *SWEEP, "--data", corpus_file, "--out", out, "--executor", "ray")
    _assert_one_line_exit_2(result, 'needs Ray, which is not installed here: pip install "mupbench[ray]"', out)


def test_unreachable_ray_address_is_one_line_exit_2(tmp_path, corpus_file, capsys):
    out = tmp_path / "o"
    result = _cli(capsys, *SWEEP, "--data", corpus_file, "--out", out, "--executor", "ray",
                  "--ray-address", f"127.0.0.1:{_free_port()}")
    _assert_one_line_exit_2(result, "cannot reach a Ray cluster at 127.0.0.1:", out)


@pytest.mark.parametrize("args,message", [
    (["--ray-address", "127.0.0.1:6379"], "--ray-address applies only with --executor ray"),
    (["--executor", "ray", "--device", "cuda:1"], "Ray assigns the GPUs"),
    (["--executor", "ray", "--ray-address", "head-node"], "is not host:port"),
    (["--executor", "slurm"], "invalid choice: 'slurm'"),
])
def test_bad_executor_options(tmp_path, corpus_file, capsys, args, message):
    out = tmp_path / "o"
    _assert_one_line_exit_2(_cli(capsys, *SWEEP, "--data", corpus_file, "--out", out, *args), message, out)


def test_gate_passes_the_executor_through(tmp_path, corpus_file, capsys):
    out = tmp_path / "o"
    result = _cli(capsys, "gate", "--suite", "smoke", "--preset", "cpu-micro", "--data", corpus_file, "--out", out,
                  "--executor", "ray", "--ray-address", f"127.0.0.1:{_free_port()}")
    _assert_one_line_exit_2(result, "cannot reach a Ray cluster", out)
    status, _, stderr = _cli(capsys, "gate", out, "--executor", "ray")
    assert status == 2 and "--executor applies only with --suite" in stderr


@needs_ray
def test_a_command_trainer_runs_on_the_ray_workers(cluster, tmp_path, corpus_file):
    """A team's training script as the trainer: each Ray task runs the command on its node; same results as locally."""
    fake = ROOT / "tests" / "trainers" / "fake_trainer.py"
    trainer = ["--trainer-command", f"{sys.executable} {fake} --width {{width}} --lr {{lr}} --seed {{seed}} --result {{result}}"]
    grid = ["run", "--suite", "pr", "--ablation", "baseline", "--preset", "cpu-micro", "--lrs", "2^-7,2^-6",
            "--seeds", "1", "--quiet", "--data", str(corpus_file), *trainer]
    proc = _driver([*grid, "--out", str(tmp_path / "ray"), "--executor", "ray", "--ray-address", cluster])
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    local = run_cli(*grid, "--out", str(tmp_path / "local"), "--workers", "2")
    assert local.returncode == 0, local.stderr
    ray_runs, _ = _results(tmp_path / "ray")
    assert len(ray_runs) == 4 and {s for s, _ in ray_runs.values()} == {"ok"}
    assert ray_runs == _results(tmp_path / "local")[0]
