"""scripts/gpu-check's stage runner on any machine: a stage that hangs is cut at its timeout (SIGINT first, so it can
write what it has, then SIGKILL), a failing stage does not stop the later ones, the summary is rewritten after every
stage, the budget cuts the running stage and skips the rest, missing packages get one line each with the fix and skip
the stages that need them, and without CUDA the script refuses in one line, writing nothing. Also: the lease plan's
commands parse with the real CLI and pytest marker, and the sweep-slice estimate from a store."""
from __future__ import annotations

import importlib.util
import json
import re
import sqlite3
import subprocess
import sys
import time
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check"


def _load():
    loader = SourceFileLoader("gpu_check", str(SCRIPT))
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while the class is made
    loader.exec_module(module)
    return module


gpu_check = _load()


def _python(code: str):
    return lambda ctx: [sys.executable, "-c", code]


def _context(tmp_path: Path, deadline: float | None = None):
    out = tmp_path / "out"
    out.mkdir()
    return gpu_check.Context(out=out, stamp="test", python=sys.executable, env={"PATH": "/usr/bin:/bin"},
                             log=out / "gpu-check-test.log", summary_path=out / "gpu-check-test.json",
                             deadline=deadline, summary={"plan": "test"}, scratch=tmp_path)


def _summary(ctx) -> dict:
    return json.loads(ctx.summary_path.read_text())


def test_hanging_and_failing_stages_do_not_stop_the_later_ones(tmp_path, capsys):
    ctx = _context(tmp_path)
    written = ctx.out / "result.json"
    stages = [
        gpu_check.Stage("hangs", 1.0, _python("import time; print('started', flush=True); time.sleep(60)")),
        gpu_check.Stage("fails", 30, _python("import sys; print('broken'); sys.exit(3)")),
        gpu_check.Stage("writes", 30, _python(f"open({str(written)!r}, 'w').write('{{}}'); print('done')")),
    ]
    start = time.monotonic()
    assert gpu_check.run_stages(ctx, stages, missing=set()) == 1
    assert time.monotonic() - start < 20  # the hang was cut at 1 s (SIGINT ends a sleeping Python at once)
    stages_ = _summary(ctx)["stages"]
    assert [(s["name"], s["status"]) for s in stages_] == [("hangs", "timed out"), ("fails", "failed"),
                                                          ("writes", "passed")]
    assert stages_[1]["rc"] == 3 and stages_[0]["seconds"] < 15
    assert stages_[2]["files"] == [str(written)]
    log = ctx.log.read_text()
    assert "started" in log and "broken" in log and "done" in log and "== gpu-check fails: failed" in log
    assert "broken" in capsys.readouterr().out  # echoed to the console as it comes


def test_a_cut_stage_keeps_what_it_wrote_on_sigint_and_one_ignoring_it_is_killed(tmp_path, monkeypatch):
    """What pytest (JUnit XML on KeyboardInterrupt) and the benchmark (its report so far) rely on."""
    monkeypatch.setattr(gpu_check, "GRACE_S", 1.0)
    ctx = _context(tmp_path)
    partial = ctx.out / "partial.json"
    on_sigint = (f"import json, time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n"
                 f"    json.dump({{'partial': True}}, open({str(partial)!r}, 'w'))\n    raise SystemExit(130)\n")
    ignores = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)"
    stages = [gpu_check.Stage("interrupted", 1.0, _python(on_sigint)),
              gpu_check.Stage("stubborn", 1.0, _python(ignores))]
    start = time.monotonic()
    assert gpu_check.run_stages(ctx, stages, missing=set()) == 1
    assert time.monotonic() - start < 20
    first, second = _summary(ctx)["stages"]
    assert first["status"] == "timed out" and first["rc"] == 130
    assert json.loads(partial.read_text()) == {"partial": True}
    assert str(partial) in first["files"]
    assert second["status"] == "timed out" and second["rc"] == -9  # SIGKILL after the grace period


def test_the_summary_is_on_disk_when_the_next_stage_starts(tmp_path):
    ctx = _context(tmp_path)
    check = (f"import json, sys; d = json.load(open({str(ctx.summary_path)!r})); "
             "sys.exit(0 if [s['name'] for s in d['stages']] == ['first'] else 1)")
    stages = [gpu_check.Stage("first", 30, _python("pass")), gpu_check.Stage("reads", 30, _python(check))]
    assert gpu_check.run_stages(ctx, stages, missing=set()) == 0
    assert [s["status"] for s in _summary(ctx)["stages"]] == ["passed", "passed"]


def test_the_budget_cuts_the_running_stage_and_skips_the_rest(tmp_path):
    ctx = _context(tmp_path, deadline=time.monotonic() + 2.0)
    stages = [gpu_check.Stage("long", 60, _python("import time; time.sleep(60)"), min_s=0.5),
              gpu_check.Stage("next", 60, _python("pass"), min_s=0.5)]
    assert gpu_check.run_stages(ctx, stages, missing=set()) == 1
    long, next_ = _summary(ctx)["stages"]
    assert long["status"] == "timed out" and long["timeout_s"] <= 2.0
    assert next_["status"] == "skipped" and "budget" in next_["note"]


def test_later_stages_keep_their_reserve(tmp_path):
    ctx = _context(tmp_path, deadline=time.monotonic() + 4.0)
    stages = [gpu_check.Stage("first", 60, _python("import time; time.sleep(60)"), min_s=0.5),
              gpu_check.Stage("second", 60, _python("pass"), min_s=0.5, reserve_s=2.5)]
    assert gpu_check.run_stages(ctx, stages, missing=set()) == 1
    first, second = _summary(ctx)["stages"]
    assert first["status"] == "timed out" and first["timeout_s"] <= 1.5  # cut where the reserve begins
    assert second["status"] == "passed"


def test_a_missing_package_skips_the_stages_that_need_it(tmp_path):
    ctx = _context(tmp_path)
    stages = [gpu_check.Stage("needs", 30, _python("raise SystemExit(1)"), needs=("pytest_benchmark",)),
              gpu_check.Stage("runs", 30, _python("pass"))]
    assert gpu_check.run_stages(ctx, stages, missing={"pytest_benchmark"}) == 0
    needs, runs = _summary(ctx)["stages"]
    assert needs["status"] == "skipped" and "pytest_benchmark" in needs["note"] and runs["status"] == "passed"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where there is no GPU")
def test_refuses_cleanly_without_cuda(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(SCRIPT), "--lease", "--out", str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"gpu-check: error: no CUDA GPU visible to {sys.executable} "
                           "(torch.cuda.is_available() is False)\n")
    assert "Traceback" not in done.stdout and not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="runs to the CUDA refusal")
def test_missing_packages_get_one_line_each_with_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "PACKAGES", gpu_check.PACKAGES + (("no_such_module_xyz", "no-such-dist",
                                                                       "a test"),))
    assert gpu_check.main(["--lease", "--out", str(tmp_path / "out")]) == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if "no-such-dist" in line]
    assert len(lines) == 1 and lines[0].startswith("gpu-check: missing no-such-dist (needed by a test): carry a wheel")
    assert "pip download" in lines[0] and "--no-index" in lines[0]


@pytest.mark.parametrize("argv, message", [
    (["--budget", "-1"], "gpu-check: error: --budget must be positive, got -1"),
    (["--lease", "--only", "nosuch"], "gpu-check: error: no stage nosuch in this plan"),
    (["--frobnicate"], "gpu-check: error: unrecognized arguments: --frobnicate"),
])
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    try:
        status = gpu_check.main(argv)
    except SystemExit as stop:
        status = stop.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_the_lease_plan_fits_the_lease_and_its_commands_parse(tmp_path):
    """Stage timeouts within the 8-minute budget (with the dependency check's 45 s); each command parses with the real
    CLI; the tests stage selects a registered marker that selects tests."""
    from mupbench.cli import build_parser

    plan = gpu_check.plans(gpu_check.parse(["--lease"]))["lease"]
    assert [s.name for s in plan] == ["warm", "bench", "tests", "slice"]
    assert gpu_check.LEASE_BUDGET_S <= 8 * 60
    # every stage can start: the dependency check's 45 s, the first stage's min_s and the later stages' reserves fit
    assert 45 + plan[0].min_s + sum(s.reserve_s for s in plan[1:]) <= gpu_check.LEASE_BUDGET_S
    assert all(s.reserve_s >= s.min_s for s in plan[1:])
    ctx = _context(tmp_path)
    commands = {s.name: s.command(ctx) for s in plan}
    warm = commands["warm"]
    assert warm[:2] == [sys.executable, "-c"] and "lease_attention_cases()" in warm[2]
    compile(warm[2], "warm", "exec")
    for name in ("bench", "slice"):
        argv = commands[name]
        assert argv[:3] == [sys.executable, "-m", "mupbench.cli"]
        args = build_parser().parse_args(argv[3:])
        assert args.func is not None
    assert vars(build_parser().parse_args(commands["bench"][3:]))["lease"] is True
    tests = commands["tests"]
    marker = tests.index("-m", 3)  # after `python -m pytest`
    assert tests[marker + 1] == "lease" and any(a.startswith("--junitxml=") for a in tests)
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                "-W", "error::pytest.PytestUnknownMarkWarning", *tests[marker - 1:marker + 2]],
                               cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
    selected = re.search(r"(\d+)/(\d+) tests collected", collected.stdout)
    assert selected and 20 <= int(selected.group(1)) < int(selected.group(2)), collected.stdout[-500:]


def test_package_links_make_the_tree_importable_without_an_install(tmp_path):
    links = gpu_check.package_links(ROOT, tmp_path / "site")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import mupbench.kernels.configs as c, mupbench.cli, os; "
            "print(c.__file__); print(os.path.realpath(c.__file__))")
    done = subprocess.run([sys.executable, "-c", code, str(links)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    via, real = done.stdout.split()
    assert via == str(links / "mupbench" / "kernels" / "configs.py")  # the links, ahead of any install
    assert real == str(ROOT / "kernels" / "configs.py")


def _store(path: Path, rows: list[tuple]) -> Path:
    from mupbench.store import _SCHEMA

    path.mkdir(parents=True)
    with sqlite3.connect(path / "mupbench.sqlite") as db:
        db.executescript(_SCHEMA)
        for i, (width, lr, wall, tps) in enumerate(rows):
            db.execute("INSERT INTO runs (run_hash, ablation, parameterization, width, lr, log2_lr, seed, status, "
                       "wall_s, tokens_per_s, steps_done, spec, finished_at) VALUES (?, 'baseline', 'mup', ?, ?, 0, 0, "
                       "'ok', ?, ?, 500, '{}', 0)", (f"h{i}", width, lr, wall, tps))
    return path / "mupbench.sqlite"


def test_slice_estimate_from_the_store():
    listing = json.loads(subprocess.run([sys.executable, "-m", "mupbench.cli", "list", "--json"], cwd=ROOT,
                                        capture_output=True, text=True, timeout=120, check=True).stdout)
    lingle = next(s for s in listing["suites"] if s["name"] == "lingle")
    width_ablations = [a for a in listing["ablations"] if a["name"] in lingle["ablations"] and a["axis"] == "width"]
    preset = next(p for p in listing["presets"] if p["name"] == "gpu-small")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        walls = {128: (10.0, 12.0), 256: (20.0, 20.0), 512: (30.0, 30.0), 1024: (60.0, 64.0)}
        store = _store(Path(tmp) / "s", [(w, lr, wall, 4e5) for w, pair in walls.items()
                                         for lr, wall in zip((2**-8, 2**-6), pair)])
        result = gpu_check.slice_estimate(store, listing)
        partial = gpu_check.slice_estimate(_store(Path(tmp) / "p", [(128, 2**-8, 10.0, 4e5)]), listing)
    assert result["by_width"][128]["wall_s"] == 11.0 and result["by_width"][1024]["tokens_per_s"] == 4e5
    per_lr = 11.0 + 20.0 + 30.0 + 62.0  # one LR at every width
    n, grid = len(width_ablations), len(preset["log2_lrs"])
    est = result["estimate"]
    assert est["runs_seed0"] == n * grid * len(preset["widths"])
    assert est["hours_seed0"] == pytest.approx(n * grid * per_lr / 3600)
    assert est["hours_3_seeds"] == pytest.approx(n * (grid + 2 * 3) * per_lr / 3600)
    assert partial["estimate"] is None and "256" in partial["why"] and partial["by_width"][128]["runs"] == 1


def test_the_benchmark_targets_are_printed_last(tmp_path, capsys):
    report = tmp_path / "kernels-gpu-1.json"
    report.write_text(json.dumps({"targets": [{"target": "attention d64 T 1024 fwd+bwd: ≥ 1.0× best SDPA",
                                               "value": "0.93×", "met": False},
                                              {"target": "rms_norm width 1024: ≥ 85% of copy bandwidth",
                                               "value": "88%", "met": True}]}))
    gpu_check.print_targets([{"name": "bench", "files": [str(report), str(tmp_path / "kernels-gpu-1.md")]},
                             {"name": "tests", "files": []}])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "targets (1 of 2 met, kernels-gpu-1.json):"
    assert out[1].startswith("  NOT    0.93×  attention") and out[2].startswith("  met      88%  rms_norm")
