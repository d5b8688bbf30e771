"""Fault injection: bad input of every kind is refused before anything is written (one line, exit 2); a killed worker,
a second `run`, damaged files, a full or read-only disk and Ctrl-C end in one accurate line and lose no stored run; an
unanticipated exception is exit 3 with its traceback saved; damaged store contents are one line; the gate fails a
diverging μP model and does not count SP transferring as an improvement; a broken model or hook is refused before any
training; a run's identity covers the user's code (imports, ablation files), and code edited during a sweep stops it
once without storing failures.

Most cases need no training (validation, synthetic stores written with Store.record); a few train cpu-micro runs of a
tiny user model (two widths, two learning rates). Mount-based cases (tmpfs, read-only bind) need root and skip without
it.
"""
from __future__ import annotations

import contextlib
import html
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_cli
from test_gate import SHIFTS, TRANSFERS, WIDTHS, make_sweep

from mupbench import data, directory
from mupbench.executors.local import LocalExecutor
from mupbench.sweep import run_sweep
from mupbench.cli import main
from mupbench.config import RunSpec
from mupbench.errors import UserError
from mupbench.store import Store

MICRO = ["--preset", "cpu-micro", "--quiet"]
TINY_SWEEP = ["--suite", "pr", "--ablation", "baseline", "--widths", "8,16", "--lrs", "2^-6,2^-5", "--workers", "1"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mupbench: error: "), err
    return lines[0]


def refused(argv, capsys, out: Path | None = None) -> str:
    assert main(argv) == 2
    if out is not None:
        assert not out.exists(), f"{out} was written before the input was refused"
    return one_line_error(capsys)


# --- bad input, refused before anything is written -----------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "short.txt").write_bytes(b"x" * 300_000)  # passes "not empty", cannot be split into train and validation
    negative = np.arange(700_000, dtype=np.int64) % 300
    negative[3] = -7
    np.save(d / "negative.npy", negative)
    (d / "a_file").write_text("not a directory")
    (d / "ablations.py").write_text(textwrap.dedent('''
        from mupbench.ablations import ablation

        def _register(name, change):
            ablation(name, reported="unknown", source="test")(change)

        _register("string_steps", lambda base: {"train.steps": "30"})
        _register("beta_above_one", lambda base: {"train.beta1": 1.5})
        _register("negative_eps", lambda base: {"train.eps": -1e-8})
        _register("negative_data_seed", lambda base: {"train.data_seed": -1})
        _register("negative_final_lr", lambda base: {"train.final_lr_fraction": -0.1})

        def _raise(base):
            raise RuntimeError("boom")

        def _exit(base):
            raise SystemExit(0)

        _register("raises", _raise)
        _register("exits", _exit)
    '''))
    model = (ROOT / "examples" / "my_model.py").read_text()
    (d / "exit_at_import.py").write_text(model + "\nimport sys\nsys.exit(0)\n")
    (d / "exit_in_factory.py").write_text(model + "\n\ndef exits(width):\n    import sys\n    sys.exit(3)\n")
    return d


CASES = {  # name: (argv after `run`, a fragment of the message)
    "lr overflow": (["--lrs", "2^2000"], "too large"),
    "lr zero": (["--lrs", "0"], "must be > 0"),
    "negative tolerance": (["--tolerance", "-1"], "--tolerance"),
    "infinite tolerance": (["--tolerance", "inf"], "--tolerance"),
    "huge width": (["--widths", "16,1000000"], "GiB"),
    "zero seeds": (["--seeds", "0"], "--seeds"),
    "device zero": (["--data", "/dev/zero"], "not a regular file"),
    "short text": (["--data", "{d}/short.txt"], "train/validation split"),
    "negative token ids": (["--data", "{d}/negative.npy"], "negative token id"),
    "ablation value of the wrong type": (["--ablations", "{d}/ablations.py", "--ablation", "string_steps"], "integer"),
    "beta1 out of range": (["--ablations", "{d}/ablations.py", "--ablation", "beta_above_one"], "beta1"),
    "negative eps": (["--ablations", "{d}/ablations.py", "--ablation", "negative_eps"], "eps"),
    "negative data seed": (["--ablations", "{d}/ablations.py", "--ablation", "negative_data_seed"], "data_seed"),
    "negative final lr": (["--ablations", "{d}/ablations.py", "--ablation", "negative_final_lr"], "final_lr_fraction"),
    "ablation raises": (["--ablations", "{d}/ablations.py", "--ablation", "raises"], "RuntimeError: boom"),
    "ablation exits": (["--ablations", "{d}/ablations.py", "--ablation", "exits"], "SystemExit"),
    "model exits at import": (["--model", "{d}/exit_at_import.py:build"], "SystemExit"),
    "model exits in factory": (["--model", "{d}/exit_in_factory.py:exits"], "SystemExit: 3"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_run_input_is_refused_before_writing(case, bad_files, corpus_file, tmp_path, capsys):
    extra, fragment = CASES[case]
    extra = [a.format(d=bad_files) for a in extra]
    data_args = [] if "--data" in extra else ["--data", str(corpus_file)]
    out = tmp_path / "sweep"
    line = refused(["run", *MICRO, "--out", str(out), *data_args, *extra], capsys, out)
    assert fragment in line


@pytest.mark.parametrize("where, fragment", [
    ("{d}/a_file", "is a file"),
    ("{d}/a_file/below", "lies under the file"),
    ("/proc/mupbench-test", "cannot write"),
])
def test_unusable_out_is_refused(where, fragment, bad_files, corpus_file, capsys):
    out = where.format(d=bad_files)
    line = refused(["run", *MICRO, "--data", str(corpus_file), "--out", out], capsys)
    assert fragment in line


@pytest.mark.parametrize("argv", [
    ["explain", "--width", "1000000"],
    ["analyze", "DIR", "--tolerance", "inf"],
    ["report", "DIR", "--tolerance", "nan"],
    ["gate", "DIR", "--optimum-tolerance", "-1"],
])
def test_other_commands_refuse_bad_numbers(argv, tmp_path, capsys):
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): TRANSFERS})
    refused([str(d) if a == "DIR" else a for a in argv], capsys)


def test_gate_with_an_exiting_model_is_not_green(bad_files, corpus_file, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["gate", "--suite", "smoke", *MICRO, "--data", str(corpus_file), "--out", str(out),
            "--model", f"{bad_files}/exit_at_import.py:build"]
    assert "SystemExit" in refused(argv, capsys, out)


# --- the sweep directory: a lock, and damaged files --------------------------------------------------------------
def test_a_second_run_on_a_locked_directory_is_refused(corpus_file, tmp_path, capsys):
    out = tmp_path / "sweep"
    with directory.locked(out):
        line = refused(["run", *MICRO, *TINY_SWEEP, "--data", str(corpus_file), "--out", str(out)], capsys)
    assert f"pid {os.getpid()}" in line and "another `mupbench run`" in line
    assert not (out / "mupbench.sqlite").exists() and not (out / data.TOKEN_FILE).exists()
    with directory.locked(out):  # released when the holder is done
        pass


def _prepared(out: Path, source: Path):
    spec, tokens = data.sweep_data(out, str(source), None, "uint16")
    directory.record_sweep(out, tokens, spec, "cpu-micro", "pr", {})
    return spec


def test_missing_or_damaged_corpus_is_rebuilt_from_its_source(corpus_file, tmp_path):
    out, source = tmp_path / "sweep", tmp_path / "corpus.txt"
    source.write_bytes(corpus_file.read_bytes())
    spec = _prepared(out, source)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    (out / data.TOKEN_FILE).unlink()
    again, tokens = data.sweep_data(out, None, None, "uint16")
    assert again == spec and tokens is not None  # rebuilt: the same digest
    directory.record_sweep(out, tokens, spec, "cpu-micro", "pr", {})
    assert data.corpus_intact(out, spec)

    (out / data.META_FILE).write_text('{"name": "trunc')  # a truncated tokens.json: recovered from the plan
    store = Store(out)
    store.add_plan([sweep_spec(spec)])
    store.close()
    assert data.sweep_data(out, None, None, "uint16")[0] == spec

    with open(out / data.TOKEN_FILE, "r+b") as f:  # damaged, and the source changed since: refused
        f.truncate(1000)
    source.write_bytes(source.read_bytes() + b"# edited\n")
    with pytest.raises(UserError, match="now gives other tokens"):
        data.sweep_data(out, None, None, "uint16")


def sweep_spec(data_spec):
    from mupbench.config import ModelConfig, RunSpec, TrainConfig

    return RunSpec("baseline", ModelConfig(width=16, head_dim=8), TrainConfig(lr=0.01), data_spec)


def test_damaged_store_is_one_line_for_every_command(tmp_path, capsys):
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): TRANSFERS, ("baseline", "sp"): SHIFTS})
    with open(d / "mupbench.sqlite", "r+b") as f:
        f.seek(2 * 4096)
        f.write(os.urandom(3 * 4096))
    for argv in (["status", d], ["analyze", d], ["report", d], ["gate", d]):
        assert "is damaged" in refused([str(a) for a in argv], capsys)


def test_store_errors_name_their_cause(tmp_path):
    from mupbench.store import store_error

    path = tmp_path / "mupbench.sqlite"
    assert "disk full" in str(store_error(path, sqlite3.OperationalError("database or disk is full")))
    assert "read-only" in str(store_error(path, sqlite3.OperationalError("attempt to write a readonly database")))
    assert "damaged" in str(store_error(path, sqlite3.DatabaseError("database disk image is malformed")))


def _mount(*args) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs or a read-only bind needs root")
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")


@pytest.fixture
def mounts():
    mounted: list[Path] = []
    yield mounted
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_read_only_store_is_readable_and_writes_fail_in_one_line(tmp_path, mounts, capsys):
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): TRANSFERS, ("baseline", "sp"): SHIFTS})
    ro = tmp_path / "ro"
    ro.mkdir()
    _mount("--bind", "-o", "ro", str(d), str(ro))
    mounts.append(ro)
    assert main(["status", str(ro)]) == 0 and main(["analyze", str(ro)]) == 0
    capsys.readouterr()
    assert "read-only" in refused(["report", str(ro)], capsys).lower()
    store = Store(ro)
    try:
        with pytest.raises(UserError, match="read-only"):
            store.set_meta("x", 1)
    finally:
        store.close()


def test_full_disk_names_itself_and_leaves_no_temporary_file(corpus_file, tmp_path, mounts, capsys):
    small = tmp_path / "small"
    small.mkdir()
    _mount("-t", "tmpfs", "-o", "size=400k", "tmpfs", str(small))
    mounts.append(small)
    out = small / "sweep"
    line = refused(["run", *MICRO, *TINY_SWEEP, "--data", str(corpus_file), "--out", str(out)], capsys)
    assert "disk full" in line and data.TOKEN_FILE in line
    assert [p.name for p in out.iterdir()] == [directory.LOCK_FILE]  # no half-written corpus, no temporary file

    store = Store(small / "store", create=True)  # the store itself running out of space
    with open(small / "filler", "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    with pytest.raises(UserError, match="disk full"):
        for i in range(1000):
            store.set_meta(f"key{i}", "x" * 4096)
    store.close()


# --- reports: every user string escaped for its target -----------------------------------------------------------
def test_hostile_names_are_escaped_in_every_report_file(tmp_path, capsys):
    name = "$\\alpha$ <b>bold</b> | pipe \x01"
    info = {name: {"expected": "transfers", "reported": "transfers", "description": "<i>x</i>", "source": "",
                   "family": "x"}}
    d = make_sweep(tmp_path / "s", {(name, "mup"): TRANSFERS}, info=info)
    assert main(["report", str(d)]) == 0
    report = d / "report"
    summary = (report / "summary.md").read_text()
    assert "<b>" not in summary and "&lt;b&gt;" in summary
    assert all(line.count("|") - line.count("\\|") == line.count(" | ") + 2 for line in summary.splitlines()
               if line.startswith("| ") and "pipe" in line)
    ET.parse(report / "junit.xml")  # well-formed despite the control character
    assert "\\x01" in (report / "junit.xml").read_text()
    html = (report / "report.html").read_text()
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html


# --- training: a killed worker, a sweep where nothing finishes, Ctrl-C ------------------------------------------------
KILL_ONCE = '''
import multiprocessing, os, signal, sys
from pathlib import Path
sys.path.insert(0, {examples!r})
from my_model import build

MARK = Path(__file__).with_suffix(".killed")


def factory(width):
    if multiprocessing.current_process().name != "MainProcess" and not MARK.exists():
        MARK.write_text("killed")  # the first run a worker trains kills it, as the OOM killer would
        os.kill(os.getpid(), signal.SIGKILL)
    return build(width)


def fails(width):
    if multiprocessing.current_process().name != "MainProcess":
        raise RuntimeError("this model never trains")
    return build(width)
'''


@pytest.fixture
def user_model(tmp_path) -> Path:
    path = tmp_path / "model.py"
    path.write_text(KILL_ONCE.format(examples=str(ROOT / "examples")))
    return path


def test_killed_worker_fails_only_its_run_and_is_retried_only_when_asked(user_model, corpus_file, tmp_path, capfd):
    out = tmp_path / "sweep"
    argv = ["run", *MICRO, *TINY_SWEEP, "--data", str(corpus_file), "--out", str(out), "--model", f"{user_model}:factory"]
    first = run_cli(*argv)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    store = Store(out)
    runs = store.runs()
    store.close()
    assert sorted(runs["status"]) == ["failed", "ok", "ok", "ok"]  # the other runs went on in a fresh worker
    assert "killed by SIGKILL: out of memory?" in runs.loc[runs["status"] == "failed", "error"].iloc[0]

    store = Store(out)
    specs = [RunSpec.from_json(json.loads(text)) for text in store.planned()["spec"]]
    store.close()
    again = run_sweep(out, specs, LocalExecutor("cpu", 1), progress=False)  # a stored failure is a result:
    assert again["trained"] == 0 and again["failed"] == 1  # not trained again
    assert "1 stored run(s) failed and are kept" in capfd.readouterr().err
    status = run_cli("status", str(out))
    assert "killed by SIGKILL" in status.stdout and "1 failed" in status.stdout

    retried = run_sweep(out, specs, LocalExecutor("cpu", 1), progress=False, retry_failed=True)
    assert retried["trained"] == 1 and retried["ok"] == 4 and retried["failed"] == 0


def test_a_sweep_where_no_run_finished_fails_the_gate(user_model, corpus_file, tmp_path):
    out = tmp_path / "sweep"
    done = run_cli("gate", *MICRO, *TINY_SWEEP, "--data", str(corpus_file), "--out", str(out),
                   "--model", f"{user_model}:fails")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no run finished (4 failed)" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("delay", [1.5, 4.0])  # once main runs (before it, it is Python's own start-up)
def test_ctrl_c_is_exit_130_without_a_traceback(delay, tmp_path):
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): TRANSFERS, ("baseline", "sp"): SHIFTS})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "mupbench.cli", "report", str(d)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err
    assert proc.returncode in (0, 130)  # 0: it finished first
    if proc.returncode == 130:
        assert err.strip().endswith("mupbench: interrupted")
    assert not [p for p in (d / "report").glob(".*.tmp")] if (d / "report").exists() else True
    json.loads((d / "report" / "results.json").read_text()) if (d / "report" / "results.json").exists() else None


# --- exit codes: 3 for what nobody anticipated, 2 for damaged contents --------------------------------------------------
def test_an_unanticipated_exception_is_exit_3_with_its_traceback_saved(tmp_path, monkeypatch, capsys):
    from mupbench.cli import analyze

    def boom(args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(analyze, "cmd_analyze", boom)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert main(["analyze", str(tmp_path)]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("mupbench: internal error: RuntimeError: boom second line (traceback saved to ")
    saved = Path(err.split("saved to ")[1].split(")")[0])
    assert saved.parent == tmp_path and "raise RuntimeError" in saved.read_text()


def _damage(d: Path, sql: str) -> None:
    conn = sqlite3.connect(d / "mupbench.sqlite")
    conn.execute(sql)
    conn.commit()
    conn.close()


READ_META = ("report", "gate")  # status and analyze read no sweep settings; analyze reads no plan
READ_PLAN = ("status", "report", "gate")


@pytest.mark.parametrize("sql, fragment, readers", [
    ("UPDATE meta SET value='{not json' WHERE key='ablation_info'", "'ablation_info' in the store is damaged", READ_META),
    ("UPDATE meta SET value='[1, 2]' WHERE key='ablation_info'", "'ablation_info' in the store is damaged", READ_META),
    ("UPDATE meta SET value='\"x\"' WHERE key='suites'", "'suites' in the store is damaged", READ_META),
    ("UPDATE runs SET spec='{not json' WHERE rowid=1", "the spec of run", ("status", "analyze", "report", "gate")),
    ("UPDATE plan SET spec='{\"model\": 1}' WHERE rowid=1", "not a mupbench run spec", READ_PLAN),
])
def test_damaged_store_contents_are_one_line_for_every_command(sql, fragment, readers, tmp_path, capsys):
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): TRANSFERS}, seeds=1)
    _damage(d, sql)
    for command in ("status", "analyze", "report", "gate"):
        if command in readers:
            assert fragment in refused([command, str(d)], capsys), command
        else:
            assert main([command, str(d)]) == 0
            capsys.readouterr()


def _coord_check_doc(**check) -> str:
    base = {"label": "μP", "parameterization": "mup", "passed": False, "expected": "pass", "threshold": 0.3,
            "records": [], "slopes": [{"module": "mlp", "step": 1, "quantity": "mean_abs_delta", "slope": 0.9,
                                       "passed": False, "bound": "both", "stderr": None, "seeds": [0.9]}]}
    return json.dumps({"schema": "mupbench.coord_check/2", "checks": [{**base, **check}]})


@pytest.mark.parametrize("check, fragment", [
    ({"slopes": [{"module": "m", "slope": "steep", "passed": False}]}, "must be numbers"),
    ({"label": None}, "needs a string 'label'"),
    ({"passed": "no"}, "'passed'"),
])
def test_a_malformed_coord_check_is_one_line_in_the_gate_and_a_banner_in_the_report(check, fragment, tmp_path, capsys):
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): TRANSFERS}, seeds=1)
    (d / "coord_check.json").write_text(_coord_check_doc(**check))
    assert fragment in refused(["gate", str(d)], capsys)
    assert main(["report", str(d)]) == 0
    assert fragment in html.unescape((d / "report" / "report.html").read_text())
    (d / "coord_check.json").write_text(_coord_check_doc())  # the same document, well formed: a judged regression
    capsys.readouterr()
    assert main(["gate", str(d)]) == 1


@pytest.mark.parametrize("extra, fragment", [
    (["--ablation", ","], "--ablation is empty"),
    (["--widths", "16"], "one width (16)"),
    (["--lrs", "2^-6"], "one learning rate"),
    (["--data-dtype", "int8"], "invalid choice: 'int8'"),
])
def test_grids_that_cannot_be_judged_are_refused_before_writing(extra, fragment, corpus_file, tmp_path, capsys):
    out = tmp_path / "sweep"
    line = refused(["run", *MICRO, "--data", str(corpus_file), "--out", str(out), *extra], capsys, out)
    assert fragment in line
    if "--data-dtype" not in extra:  # an option of `run` only
        gate = ["gate", "--suite", "pr", *MICRO, "--data", str(corpus_file), "--out", str(out), *extra]
        assert fragment in refused(gate, capsys, out)


@pytest.mark.parametrize("extra, fragment", [
    (["--base-width", "0"], "--base-width must be a positive integer"),
    (["--seeds", "-1"], "is not an integer seed (>= 0)"),
    (["--out", "/proc/mupbench-test"], "cannot write"),
])
def test_coord_check_refuses_bad_input_before_its_work(extra, fragment, capsys):
    start = time.monotonic()
    assert fragment in refused(["coord-check", "--widths", "32,64,128", *extra], capsys)
    assert time.monotonic() - start < 5  # nothing was measured first


def test_incomplete_seeds_are_not_called_unfinished_runs():
    from mupbench.gate import judge_verdict

    entry = {"ablation": "baseline", "parameterization": "mup", "verdict": "transfers", "expected": "transfers",
             "n_seeds": 1, "complete": False, "runs": {"planned": 8, "finished": 8, "failed": 0}}
    text = judge_verdict(entry, None, 1.0).message()
    assert "8/8" not in text and "the 8 runs planned so far finished" in text and "other seeds" in text


# --- the gate: divergence is evidence, SP is no baseline, the baseline says where it came from --------------------------
def _gate(d, *args, capsys) -> tuple[int, str]:
    status = main(["gate", str(d), *map(str, args)])
    return status, capsys.readouterr().out


def test_a_mup_configuration_diverging_everywhere_fails(tmp_path, capsys):
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): TRANSFERS}, diverged={("baseline", "mup"): WIDTHS})
    status, out = _gate(d, capsys=capsys)
    assert status == 1 and "diverged at every width (32, 64, 128)" in out and "gate: FAIL" in out


def test_diverging_at_the_widest_width_fails_against_a_baseline_that_trained(tmp_path, capsys):
    base = make_sweep(tmp_path / "base", {("gelu", "mup"): TRANSFERS})
    assert main(["report", str(base)]) == 0
    d = make_sweep(tmp_path / "s", {("gelu", "mup"): TRANSFERS}, diverged={("gelu", "mup"): {128}})
    status, out = _gate(d, capsys=capsys)
    assert status == 0 and "inconclusive" in out  # no expectation, no baseline: the grid cannot judge
    status, out = _gate(d, "--baseline", base / "report" / "results.json", capsys=capsys)
    assert status == 1 and "diverged at the widest width 128, where the baseline trained" in out


def test_diverging_at_the_widest_width_fails_an_ablation_expected_to_transfer(tmp_path, capsys):
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): TRANSFERS}, diverged={("baseline", "mup"): {128}})
    status, out = _gate(d, capsys=capsys)
    assert status == 1 and "width 128 diverged at the learning rates where width 32 trained" in out


def test_sp_transferring_is_a_warning_not_an_improvement(tmp_path, capsys):
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): TRANSFERS, ("baseline", "sp"): TRANSFERS})
    status, out = _gate(d, capsys=capsys)
    assert status == 0 and "improvement" not in out.split("gate:")[0].lower()
    assert "cannot tell SP from μP" in out and "0 improvements, 1 warning" in out
    assert _gate(d, "--strict", capsys=capsys)[0] == 1
    d2 = make_sweep(tmp_path / "s2", {("baseline", "mup"): TRANSFERS}, diverged={("baseline", "sp"): WIDTHS})
    assert _gate(d2, capsys=capsys)[0] == 0  # SP diverging is SP's business, not a μP regression


@pytest.mark.parametrize("edit, fragment, status", [
    (lambda doc: doc.update(verdicts=[]), "holds no verdicts", 0),
    (lambda doc: doc["verdicts"].pop(), "not in the baseline", 0),
    (lambda doc: doc["sweep"].update(preset="gpu-small"), "comes from preset gpu-small, this sweep is cpu-tiny", 0),
    (lambda doc: doc["sweep"].update(model={"spec": "other.py:build"}), "judged other.py:build", 0),
    (lambda doc: doc["verdicts"][0].update(verdict="TRANSFERS"), "is not one of: transfers", 2),
])
def test_an_edited_baseline_is_warned_about_or_refused(edit, fragment, status, tmp_path, capsys):
    d = make_sweep(tmp_path / "s", {("baseline", "mup"): TRANSFERS, ("baseline", "sp"): SHIFTS}, preset="cpu-tiny")
    assert main(["report", str(d)]) == 0
    doc = json.loads((d / "report" / "results.json").read_text())
    edit(doc)
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(doc))
    capsys.readouterr()
    got = main(["gate", str(d), "--baseline", str(baseline)])
    captured = capsys.readouterr()
    assert got == status and fragment in captured.out + captured.err
    if status == 0:
        assert main(["gate", str(d), "--baseline", str(baseline), "--strict"]) == 1


# --- a user's model: every hook and the model itself checked once, before any training -------------------------------
BROKEN_MODELS = '''
import torch
import torch.nn as nn


class Small(nn.Module):
    def __init__(self, width, vocab=256):
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.hidden = nn.Linear(width, width, bias=False)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, tokens):
        return self.head(torch.relu(self.hidden(self.emb(tokens))))


def ignores_width(width):
    return Small(32)


class Tied(Small):
    def __init__(self, width):
        super().__init__(width)
        self.head.weight = self.emb.weight


class TiedNamed(Tied):
    mup_roles = {"emb.weight": "embedding"}


class RolesRaise(Small):
    def mup_roles(self):
        raise RuntimeError("roles boom")


class NoParameters(nn.Module):
    def __init__(self, width):
        super().__init__()

    def forward(self, tokens):
        return torch.zeros(*tokens.shape, 256)


class NoGradInEval(Small):
    def forward(self, tokens):
        with torch.no_grad():
            return super().forward(tokens)


class Fails(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("backward boom")


class BackwardRaises(Small):
    def forward(self, tokens):
        return Fails.apply(super().forward(tokens))


class GroupsRaise(Small):
    def mup_parameter_groups(self, lr):
        raise ValueError("groups boom")


class GroupsMiss(Small):
    def mup_parameter_groups(self, lr):
        return [{"params": [self.emb.weight, self.hidden.weight], "lr": lr}]


class GroupsTwice(Tied):
    mup_roles = {"emb.weight": "embedding"}

    def mup_parameter_groups(self, lr):
        return [{"params": [self.emb.weight, self.hidden.weight], "lr": lr}, {"params": [self.head.weight], "lr": lr}]


class GroupsNegative(Small):
    def mup_parameter_groups(self, lr):
        return [{"params": list(self.parameters()), "lr": -lr}]


def on_meta(width):
    with torch.device("meta"):
        return Small(width)
'''

BROKEN = {  # factory: a fragment of the one-line error
    "ignores_width": "ignores its width argument",
    "Tied": "are one tensor (tied weights)",
    "RolesRaise": "mup_roles() raised RuntimeError: roles boom",
    "NoParameters": "has no parameters",
    "NoGradInEval": "do not require grad",
    "BackwardRaises": "RuntimeError: backward boom",
    "GroupsRaise": "raised ValueError: groups boom",
    "GroupsMiss": "leaves out head.weight",
    "GroupsTwice": "puts emb.weight in two groups",
    "on_meta": "on the meta device",
    "GroupsNegative": "gives group 0 the learning rate -",
}


@pytest.fixture(scope="module")
def broken_models(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("broken") / "broken.py"
    path.write_text(BROKEN_MODELS)
    return path


@pytest.mark.parametrize("factory", list(BROKEN))
def test_a_broken_model_or_hook_is_refused_before_any_work(factory, broken_models, corpus_file, tmp_path, capsys):
    model = f"{broken_models}:{factory}"
    start = time.monotonic()
    assert BROKEN[factory] in refused(["coord-check", "--widths", "32,64,128", "--steps", "1", "--model", model], capsys)
    out = tmp_path / "sweep"
    assert BROKEN[factory] in refused(["run", *MICRO, "--data", str(corpus_file), "--out", str(out), "--model", model],
                                      capsys, out)
    assert time.monotonic() - start < 20  # nothing trained


def test_tied_weights_named_in_mup_roles_are_accepted(broken_models):
    from mupbench import byo

    source = byo.resolve(f"{broken_models}:TiedNamed")
    byo.validate(byo.load_factory(source), (16, 32), 16, ("mup", "sp"), False, source.label, 0.01, vocab_size=256)


# --- a run's identity covers the user's code: imports, ablation files, edits during a sweep ---------------------------
ABLATIONS_V1 = '''
from mupbench.ablations import ablation
import abl_helper


@ablation(reported="unknown", source="test")
def noop_a(base):
    return {}


@ablation(reported="unknown", source="test")
def noop_b(base):
    return {}
'''


@pytest.fixture
def user_ablations(tmp_path):
    from mupbench.ablations.registry import REGISTRY

    path = tmp_path / "code" / "team_ablations.py"
    path.parent.mkdir()
    path.write_text(ABLATIONS_V1)
    (path.parent / "abl_helper.py").write_text("FACTOR = 1\n")
    saved = dict(REGISTRY)
    yield path
    REGISTRY.clear()  # each test's file registers its own noop_a, and imports its own helper
    REGISTRY.update(saved)
    sys.modules.pop("abl_helper", None)


def test_user_ablations_are_identified_by_name_and_code(user_ablations, corpus_file, monkeypatch, tmp_path):
    from mupbench import ablations
    from mupbench.ablations.loader import load_user_ablations
    from mupbench.cli.ablation_code import user_ablation_code, with_ablation_code

    monkeypatch.syspath_prepend(str(user_ablations.parent))
    load_user_ablations([str(user_ablations)])
    entries = [(ablations.get(n), ("mup",)) for n in ("baseline", "noop_a", "noop_b")]
    codes = user_ablation_code(entries)
    assert set(codes) == {"noop_a", "noop_b"}  # mupbench's own ablations are identified by mupbench's version
    assert set(codes["noop_a"]["code"]) == {"team_ablations.py", "abl_helper.py"}
    preset = ablations.get_preset("cpu-micro")
    data_spec = data.DataSpec("x", "0" * 64, 1000, 256)
    specs = with_ablation_code(ablations.plan(entries, preset, data_spec), codes)
    hashes = {a: {s.run_hash for s in specs if s.ablation == a} for a in ("baseline", "noop_a", "noop_b")}
    assert not hashes["noop_a"] & hashes["noop_b"] and not hashes["noop_a"] & hashes["baseline"]
    (user_ablations.parent / "abl_helper.py").write_text("FACTOR = 2\n")  # an edit of what the file imports
    edited = user_ablation_code(entries)
    assert edited["noop_a"]["sha256"] != codes["noop_a"]["sha256"]


def test_a_directory_holding_an_earlier_version_of_an_ablation_is_refused(user_ablations, corpus_file, monkeypatch,
                                                                          tmp_path, capsys):
    monkeypatch.syspath_prepend(str(user_ablations.parent))
    info = {"noop_a": {"expected": "unknown", "reported": "unknown", "description": "", "source": "", "family": "x",
                       "code": {"sha256": "0" * 64, "code": {"team_ablations.py": "1" * 64, "abl_helper.py": "2" * 64}}}}
    d = make_sweep(tmp_path / "s", {("noop_a", "mup"): TRANSFERS}, info=info, seeds=1)
    line = refused(["run", *MICRO, "--data", str(corpus_file), "--out", str(d), "--ablations", str(user_ablations),
                    "--ablation", "noop_a"], capsys)
    assert "earlier version of ablation 'noop_a' (changed: abl_helper.py, team_ablations.py)" in line


CHANGES_ITS_HELPER = '''
import multiprocessing, sys
from pathlib import Path
sys.path.insert(0, {examples!r})
from my_model import build
import lr_helper

HELPER = Path(__file__).with_name("lr_helper.py")
MARK = Path(__file__).with_suffix(".saved")


def factory(width):
    if multiprocessing.current_process().name != "MainProcess" and not MARK.exists():
        MARK.write_text("once")
        HELPER.write_text("SCALE = 2  # saved while the sweep runs\\n")
    return build(width)
'''


def test_code_edited_during_a_sweep_stops_it_once_and_stores_no_failure(corpus_file, tmp_path, capfd):
    code = tmp_path / "code"
    code.mkdir()
    (code / "lr_helper.py").write_text("SCALE = 1\n")
    (code / "model.py").write_text(CHANGES_ITS_HELPER.format(examples=str(ROOT / "examples")))
    out = tmp_path / "sweep"
    argv = ["run", *MICRO, *TINY_SWEEP, "--data", str(corpus_file), "--out", str(out), "--model", f"{code}/model.py:factory"]
    assert main(argv) == 2
    err = capfd.readouterr().err
    assert err.count("changed while the sweep ran (lr_helper.py)") == 1 and "Traceback" not in err
    counts = directory.store_counts(out)
    assert counts["failed"] == 0 and counts["ok"] + counts["diverged"] >= 1
    # the edited code is other code: refused in this directory, naming the file
    line = refused(argv, capfd)
    assert "earlier version of this model's code (changed: lr_helper.py)" in line
    (code / "lr_helper.py").write_text("SCALE = 1\n")  # reverted: the sweep resumes where it stopped
    assert main(argv) == 0
    assert "changed" not in capfd.readouterr().err
    counts = directory.store_counts(out)
    assert counts["failed"] == 0 and counts["ok"] + counts["diverged"] == counts["planned"]


def test_a_local_ray_instance_needs_token_authentication(monkeypatch):
    from mupbench.executors import ray as ray_executor

    with pytest.raises(UserError, match=r"Ray 2.10.0 has no token authentication.*Ray >= 2.52"):
        ray_executor._require_token_auth("2.10.0")
    ray_executor._require_token_auth("2.52.0")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'ray = ["ray>=2.52"]' in pyproject  # the extra never installs a Ray without it
