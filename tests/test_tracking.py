"""`mupbench run --log`: each tracker's own files or store, read back with the tracker's own reader, hold the numbers
the sweep's store holds; resumes log nothing twice; a failing tracker warns once; bad input is exit 2 before training.

The sweeps are the real command line and sweep loop with a fake executor (tests/fake_sweep.py): 21 runs, one diverged,
one failed. One test trains a cpu-micro sweep for real with the local executor, whose driver calls the trackers.
Each tracker's tests skip, saying which extra to install, when its library is missing.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fake_sweep import DIVERGES, FAILS, run_fake_sweep
from mupbench.cli import main
from mupbench.store import Store
from mupbench.tracking import LEDGER_FILE, TRACKING_DIR, Tracking


def _needs(module: str, extra: str):
    return pytest.importorskip(module, reason=f'{module} not installed: pip install "mupbench[{extra}]"')


def _stored(out: Path):
    store = Store(out)
    try:
        runs, curves = store.runs(), store.curves()
    finally:
        store.close()
    return {r["run_hash"]: r for r in runs.to_dict("records")}, curves


def _val_curve(curves, run_hash: str) -> list[tuple[int, float]]:
    rows = curves[(curves["run_hash"] == run_hash) & (curves["split"] == "val")].sort_values("step")
    return [(int(s), float(v)) for s, v in zip(rows["step"], rows["loss"])]


def _ledger(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / TRACKING_DIR / LEDGER_FILE).read_text().splitlines()]


def _key(run: dict) -> tuple:
    return (run["parameterization"], run["width"], run["log2_lr"])


# --- TensorBoard ----------------------------------------------------------------------------------------------------
def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def _text(events, tag: str) -> str:
    return events.Tensors(f"{tag}/text_summary")[-1].tensor_proto.string_val[0].decode()


def test_tensorboard_event_files_hold_the_stored_numbers(tmp_path, corpus_file, monkeypatch):
    _needs("tensorboard", "tensorboard")
    out = tmp_path / "sweep"
    status, executor = run_fake_sweep(monkeypatch, corpus_file, out, "--log", "tensorboard")
    assert status == 0
    runs, curves = _stored(out)
    root = out / TRACKING_DIR / "tensorboard"
    folders = {}
    for h, run in runs.items():
        folder = root / "baseline" / run["parameterization"] / f"w{run['width']}_lr2^{run['log2_lr']:g}_seed{run['seed']}"
        events = _events(folder)
        folders[h] = folder
        val = [(e.step, e.value) for e in events.Scalars("loss/val")] if "loss/val" in events.Tags()["scalars"] else []
        assert val == [(s, pytest.approx(v, rel=1e-6)) for s, v in _val_curve(curves, h)]
        config = _text(events, "run/config")
        assert f"| width | {run['width']} |" in config and f"| seed | {run['seed']} |" in config
        if run["status"] == "ok":
            assert events.Scalars("final/val_loss")[-1].value == pytest.approx(run["final_val_loss"], rel=1e-6)
            assert events.Scalars("final/wall_s")[-1].value == pytest.approx(run["wall_s"], rel=1e-6)
            assert _text(events, "run/status") == "finished"
        elif run["status"] == "failed":
            assert _key(run) == FAILS and _text(events, "run/status") == "failed: RuntimeError: boom at step 3"
            assert "final/val_loss" not in events.Tags()["scalars"]
        else:
            assert _key(run) == DIVERGES and _text(events, "run/status") == "diverged"
            assert [e.value for e in events.Scalars("loss/train")][-1] == math.inf
    sweep = _events(root / "_sweep")
    verdicts = _text(sweep, "verdicts")
    assert "| baseline | mup | width | transfers |" in verdicts and "| baseline | sp | width | inconclusive |" in verdicts
    assert str((out / "report" / "report.html").resolve()) in _text(sweep, "artifacts")
    assert {e.step for e in sweep.Scalars("optimum/baseline/mup")} == {16, 32}
    assert sorted(e["run_hash"] for e in _ledger(out)) == sorted(runs)

    # the same command again: nothing to train, nothing logged twice
    files = {h: sorted(f.iterdir()) for h, f in folders.items()}
    sweep_files = sorted((root / "_sweep").iterdir())
    status, executor = run_fake_sweep(monkeypatch, corpus_file, out, "--log", "tensorboard")
    assert status == 0 and executor.trained == []
    assert {h: sorted(f.iterdir()) for h, f in folders.items()} == files
    assert sorted((root / "_sweep").iterdir()) == sweep_files
    assert len(_ledger(out)) == len(runs)


# --- MLflow ---------------------------------------------------------------------------------------------------------
def test_mlflow_sqlite_store_holds_the_stored_numbers(tmp_path, corpus_file, monkeypatch):
    _needs("mlflow", "mlflow")
    _needs("sqlalchemy", "mlflow")
    from mlflow import MlflowClient

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "sweep"
    status, _ = run_fake_sweep(monkeypatch, corpus_file, out, "--log", "mlflow")
    assert status == 0
    runs, curves = _stored(out)
    client = MlflowClient(tracking_uri=f"sqlite:///{(out / TRACKING_DIR / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("mupbench")
    logged = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in logged if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in logged if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == len(runs)
    parent = parents[0]
    assert parent.info.run_name.startswith("sweep-") and parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    for child in children:
        run = runs[child.data.tags["mupbench.run_hash"]]
        params = child.data.params
        assert (params["width"], params["seed"], params["parameterization"]) == (str(run["width"]), str(run["seed"]),
                                                                                 run["parameterization"])
        assert float(params["lr"]) == run["lr"] and params["spec.train.lr"] == str(run["lr"])
        assert child.info.run_name == (f"baseline {run['parameterization']} w{run['width']} lr=2^{run['log2_lr']:g} "
                                       f"seed{run['seed']}")
        history = sorted((m.step, m.value) for m in client.get_metric_history(child.info.run_id, "loss/val"))
        assert history == _val_curve(curves, run["run_hash"])
        assert child.data.metrics.get("wall_s") == run["wall_s"]
        assert child.info.end_time - child.info.start_time == pytest.approx(run["wall_s"] * 1000, abs=2)
        if run["status"] == "ok":
            assert child.data.metrics["final_val_loss"] == run["final_val_loss"]
            assert (child.info.status, child.data.tags["mupbench.status"]) == ("FINISHED", "finished")
        elif run["status"] == "failed":
            assert (child.info.status, child.data.tags["mupbench.status"]) == ("FAILED", "failed")
            assert child.data.tags["mupbench.error"] == "RuntimeError: boom at step 3"
            assert "final_val_loss" not in child.data.metrics
        else:
            assert (child.info.status, child.data.tags["mupbench.status"]) == ("FINISHED", "diverged")
            assert "final_val_loss" not in child.data.metrics
    assert parent.data.tags["verdict.baseline.mup"].startswith("transfers")
    assert parent.data.tags["verdict.baseline.sp"].startswith("inconclusive")
    optimum = {m.step for m in client.get_metric_history(parent.info.run_id, "optimum/baseline/mup")}
    assert optimum == {16, 32}
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/results.json", "report/junit.xml"} <= artifacts
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "verdicts.json", str(tmp_path))).read_text())
    assert [row[table["columns"].index("verdict")] for row in table["data"]] == ["transfers", "inconclusive"]

    # resumed: the same parent run, no child twice
    status, executor = run_fake_sweep(monkeypatch, corpus_file, out, "--log", "mlflow")
    assert status == 0 and executor.trained == []
    again = client.search_runs([experiment.experiment_id], max_results=1000)
    assert sorted(r.info.run_id for r in again) == sorted(r.info.run_id for r in logged)


# --- W&B ------------------------------------------------------------------------------------------------------------
def _wandb_records(path: Path):
    """The records of an offline W&B run file (a LevelDB-style log of wandb's own protobuf Records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's trailer
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL, FIRST / MIDDLE, LAST
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def _wandb_run(path: Path) -> dict:
    """What an offline run file holds: name, group, job type, config, history by step, summary, exit code."""
    out = {"config": {}, "history": {}, "summary": {}, "exit_code": None, "artifacts": {}}
    for record in _wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            out.update(name=r.display_name, group=r.run_group, job_type=r.job_type, tags=list(r.tags))
            out["config"].update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
            out["history"][record.history.step.num] = items
        elif kind == "summary":
            out["summary"].update({(u.key or "/".join(u.nested_key)): json.loads(u.value_json)
                                   for u in record.summary.update})
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
        elif kind == "artifact":
            a = record.artifact
            out["artifacts"][a.type] = {c.path: c.size for c in a.manifest.contents}
    return out


def test_wandb_offline_runs_hold_the_stored_numbers(tmp_path, corpus_file, monkeypatch):
    _needs("wandb", "wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):  # artifacts staged here, not in $HOME
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    for name in ("WANDB_PROJECT", "WANDB_DIR", "WANDB_RUN_GROUP", "WANDB_NAME", "WANDB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "sweep"
    status, _ = run_fake_sweep(monkeypatch, corpus_file, out, "--log", "wandb")
    assert status == 0
    runs, curves = _stored(out)
    files = sorted((out / TRACKING_DIR / "wandb").glob("offline-run-*/run-*.wandb"))
    logged = [_wandb_run(f) for f in files]
    trains = [r for r in logged if r["job_type"] == "train"]
    sweeps = [r for r in logged if r["job_type"] == "sweep"]
    assert len(trains) == len(runs) and len(sweeps) == 1
    assert len({r["group"] for r in logged}) == 1 and logged[0]["group"].startswith("sweep-")
    for w in trains:
        run = runs[w["config"]["run_hash"]]
        assert (w["config"]["width"], w["config"]["seed"], w["config"]["lr"]) == (run["width"], run["seed"], run["lr"])
        assert w["config"]["spec"]["train"]["lr"] == run["lr"]
        assert w["name"] == f"baseline {run['parameterization']} w{run['width']} lr=2^{run['log2_lr']:g} seed{run['seed']}"
        val = sorted((step, items["loss/val"]) for step, items in w["history"].items() if "loss/val" in items)
        assert val == _val_curve(curves, run["run_hash"])
        assert w["summary"]["wall_s"] == run["wall_s"]
        if run["status"] == "ok":
            assert w["summary"]["final_val_loss"] == run["final_val_loss"]
            assert (w["summary"]["status"], w["exit_code"]) == ("finished", 0)
        elif run["status"] == "failed":
            assert (w["summary"]["status"], w["summary"]["error"], w["exit_code"]) == (
                "failed", "RuntimeError: boom at step 3", 1)
        else:
            assert (w["summary"]["status"], w["exit_code"]) == ("diverged", 0) and "final_val_loss" not in w["summary"]
    summary = sweeps[0]
    assert summary["summary"]["verdict/baseline/mup"] == "transfers"
    assert summary["summary"]["verdict/baseline/sp"] == "inconclusive"
    assert {step for step, items in summary["history"].items() if "optimum/baseline/mup" in items} == {16, 32}
    report = out / "report"
    assert summary["artifacts"]["mupbench-report"] == {f"report/{name}": (report / name).stat().st_size
                                                       for name in ("report.html", "results.json", "summary.md",
                                                                    "junit.xml")}

    status, executor = run_fake_sweep(monkeypatch, corpus_file, out, "--log", "wandb")
    assert status == 0 and executor.trained == []
    assert sorted((out / TRACKING_DIR / "wandb").glob("offline-run-*/run-*.wandb")) == files


def test_wandb_defaults_to_offline_without_credentials(monkeypatch, tmp_path):
    from mupbench.tracking import wandb_tracker

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_IDENTITY_TOKEN_FILE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert wandb_tracker.mode() == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password k\n")
    assert wandb_tracker.mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_tracker.mode() == "disabled"


# --- failures and bad input -----------------------------------------------------------------------------------------
def test_a_failing_tracker_warns_once_and_the_sweep_goes_on(tmp_path, corpus_file, monkeypatch, capsys):
    _needs("tensorboard", "tensorboard")
    from mupbench.tracking import tensorboard_tracker

    calls = []
    real = tensorboard_tracker.TensorBoardTracker.log_run

    def unreachable(self, run):
        calls.append(run.run_hash)
        raise ConnectionError("tracker unreachable")

    monkeypatch.setattr(tensorboard_tracker.TensorBoardTracker, "log_run", unreachable)
    out = tmp_path / "sweep"
    status, executor = run_fake_sweep(monkeypatch, corpus_file, out, "--log", "tensorboard")
    assert status == 0 and len(executor.trained) == len(_stored(out)[0])
    err = capsys.readouterr().err
    assert err.count("mupbench: warning: --log tensorboard") == 1 and "tracker unreachable" in err
    assert len(calls) == 1  # left out after the first failure

    # --log-required: the failure stops the sweep (exit 2, one line)
    status, executor = run_fake_sweep(monkeypatch, corpus_file, tmp_path / "required", "--log", "tensorboard",
                                      "--log-required")
    err = capsys.readouterr().err
    assert status == 2 and len(executor.trained) == 1
    assert err.strip().splitlines()[-1].startswith("mupbench: error: --log tensorboard: could not log run")

    # the tracker back: the same command logs every stored run it missed
    monkeypatch.setattr(tensorboard_tracker.TensorBoardTracker, "log_run", real)
    status, executor = run_fake_sweep(monkeypatch, corpus_file, out, "--log", "tensorboard")
    assert status == 0 and executor.trained == []
    assert sorted(e["run_hash"] for e in _ledger(out)) == sorted(_stored(out)[0])


def test_an_unreachable_mlflow_server_warns_once_within_seconds(tmp_path, corpus_file, monkeypatch, capsys):
    _needs("mlflow", "mlflow")
    import time

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # loopback, nothing listens: refused at once
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    start = time.perf_counter()
    status, executor = run_fake_sweep(monkeypatch, corpus_file, tmp_path / "sweep", "--log", "mlflow", seeds=1)
    assert status == 0 and executor.trained
    assert time.perf_counter() - start < 60  # MLflow's own retries would take minutes
    err = capsys.readouterr().err
    assert err.count("mupbench: warning: --log mlflow: could not open") == 1 and "127.0.0.1:9" in err


def test_bad_log_input_is_one_line_and_exit_2_before_training(tmp_path, corpus_file, monkeypatch, capsys):
    import importlib.util
    import sys

    cases = [
        (["--log", "neptune"], "--log 'neptune': use one of wandb, mlflow, tensorboard"),
        (["--log-required"], "--log-required applies only with --log"),
    ]
    (tmp_path / "file-sweep").mkdir()
    (tmp_path / "file-sweep" / TRACKING_DIR).write_text("a file where the tracking directory goes")
    if importlib.util.find_spec("tensorboard") is not None:  # else the missing extra is the error
        cases.append((["--log", "tensorboard"], "lies under the file"))
    for extra, message in cases:
        out = tmp_path / ("file-sweep" if "tensorboard" in extra else "sweep")
        status, executor = run_fake_sweep(monkeypatch, corpus_file, out, *extra)
        err = capsys.readouterr().err
        assert status == 2 and executor.trained == [], extra
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not (out / "mupbench.sqlite").exists()
    for name, module in (("wandb", "wandb"), ("mlflow", "mlflow"), ("tensorboard", "tensorboard")):
        monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
        status, executor = run_fake_sweep(monkeypatch, corpus_file, tmp_path / "sweep", "--log", name)
        err = capsys.readouterr().err
        assert status == 2 and executor.trained == []
        assert f'pip install "mupbench[{name}]"' in err and len(err.strip().splitlines()) == 1, err


def test_the_local_executors_driver_logs_each_run_as_it_is_stored(tmp_path, corpus_file, monkeypatch):
    """A real cpu-micro sweep on local worker processes: the driver (this process) logs each run when its worker
    reports it stored, before the sweep's end."""
    _needs("tensorboard", "tensorboard")
    seen = []
    real = Tracking.on_stored

    def on_stored(self, spec):
        seen.append((spec.run_hash, (Path(self.dir) / TRACKING_DIR / "tensorboard" / "_sweep").exists()))
        real(self, spec)

    monkeypatch.setattr(Tracking, "on_stored", on_stored)
    out = tmp_path / "micro"
    assert main(["run", "--suite", "smoke", "--preset", "cpu-micro", "--ablation", "baseline", "--widths", "16,32",
                 "--lrs", "2^-7,2^-6", "--seeds", "1", "--workers", "2", "--device", "cpu", "--data", str(corpus_file),
                 "--out", str(out), "--quiet", "--log", "tensorboard"]) in (0, 1)
    runs, _ = _stored(out)
    assert sorted(h for h, _ in seen) == sorted(runs) and not any(swept for _, swept in seen)
    assert sorted(e["run_hash"] for e in _ledger(out)) == sorted(runs)


def test_gate_logs_through_run_or_itself(tmp_path, corpus_file, monkeypatch):
    """`gate --suite ... --log` hands --log to the run; `gate DIR --log` logs the sweep it judges, its own junit.xml
    and summary.md among the files."""
    _needs("tensorboard", "tensorboard")
    import mupbench.executors
    from fake_sweep import FakeExecutor

    executor = FakeExecutor()
    monkeypatch.setattr(mupbench.executors, "make_executor", lambda *a, **k: executor)
    out = tmp_path / "gated"
    main(["gate", "--suite", "smoke", "--preset", "cpu-micro", "--widths", "16,32", "--lrs", "2^-8,2^-7,2^-6",
          "--seeds", "1", "--data", str(corpus_file), "--out", str(out), "--quiet", "--log", "tensorboard"])
    runs, _ = _stored(out)
    assert executor.trained and sorted(e["run_hash"] for e in _ledger(out)) == sorted(runs)

    out = tmp_path / "judged"
    status, _ = run_fake_sweep(monkeypatch, corpus_file, out, seeds=1)
    assert not (out / TRACKING_DIR).exists()
    main(["gate", str(out), "--quiet", "--log", "tensorboard"])
    assert sorted(e["run_hash"] for e in _ledger(out)) == sorted(_stored(out)[0])
    artifacts = _text(_events(out / TRACKING_DIR / "tensorboard" / "_sweep"), "artifacts")
    assert str((out / "junit.xml").resolve()) in artifacts and str((out / "summary.md").resolve()) in artifacts


def test_the_ledger_survives_a_line_cut_short(tmp_path):
    """A process killed while appending leaves half a line: the entries before it count, the cut one does not (its
    run is logged again, once)."""
    from mupbench.tracking import _read_ledger

    entry = {"tracker": "tensorboard:/x", "run_hash": "a" * 16, "finished_at": 1.5, "id": "w16"}
    path = tmp_path / LEDGER_FILE
    path.write_text(json.dumps(entry) + "\n" + json.dumps({**entry, "run_hash": "b" * 16})[:30])
    assert _read_ledger(path) == {"tensorboard:/x": {"a" * 16: 1.5}}
    with open(path, "a") as f:  # what Tracking appends next
        f.write(json.dumps({**entry, "run_hash": "c" * 16}) + "\n")
    assert _read_ledger(path) == {"tensorboard:/x": {"a" * 16: 1.5, "c" * 16: 1.5}}
    assert _read_ledger(tmp_path / "missing.jsonl") == {}


def test_a_moved_sweep_directory_logs_nothing_twice(tmp_path, corpus_file, monkeypatch):
    _needs("tensorboard", "tensorboard")
    import shutil

    status, _ = run_fake_sweep(monkeypatch, corpus_file, tmp_path / "here", "--log", "tensorboard", seeds=1)
    assert status == 0
    shutil.move(tmp_path / "here", tmp_path / "there")
    before = sorted(p for p in (tmp_path / "there" / TRACKING_DIR / "tensorboard").rglob("*") if p.is_file())
    status, executor = run_fake_sweep(monkeypatch, corpus_file, tmp_path / "there", "--log", "tensorboard", seeds=1)
    assert status == 0 and executor.trained == []
    assert sorted(p for p in (tmp_path / "there" / TRACKING_DIR / "tensorboard").rglob("*") if p.is_file()) == before
