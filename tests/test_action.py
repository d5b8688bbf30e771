"""The composite action (action.yml) and the example workflow, checked without GitHub.

Statically: every input is documented, has a default and is used; inputs reach shell text only through `env:`; every
called action is pinned to a commit; the outputs name real step outputs; the workflow passes only declared inputs.

Then the action runs the way a runner would run it: its `run:` steps in order (the `uses:` steps are recorded, not
run), `${{ … }}` expressions and `if:` conditions evaluated, GITHUB_OUTPUT / GITHUB_ENV / GITHUB_PATH /
GITHUB_STEP_SUMMARY files between steps, GITHUB_ACTION_PATH pointing at a copy of this repository, in a temporary
"user repository" that holds only a copy of examples/my_model.py. `python-version: ""` and `torch: keep` make the
action use a `python3` that already has torch (this interpreter), and pip runs with no index, so nothing is
downloaded — yet mupbench is really installed from the action path into the action's own environment. Three runs at
the cpu-micro preset share one workspace (a git repository): the first writes the baseline and passes, the second is a
pull request that deletes the baseline while its base commit holds one whose optimum lies far away — it is compared
with the base's and fails (exit 1) with its report still uploaded — and the third meets a malformed baseline at the
base commit and stops with exit 2, saying why in the job summary. Inputs that would build unsafe paths, a sweep
directory that exists or is tracked, and a coordinate check that cannot run are refused with exit 2.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is a dev dependency: pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parent.parent
ACTION_FILE = ROOT / "action.yml"
WORKFLOW_FILE = ROOT / ".github" / "workflows" / "mup-transfer.yml"
ACTION = yaml.safe_load(ACTION_FILE.read_text())
WORKFLOW = yaml.safe_load(WORKFLOW_FILE.read_text())
STEPS = ACTION["runs"]["steps"]
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.S)
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def _strings(node):
    """Every string in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def _workflow_steps():
    for job_id, job in WORKFLOW["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


# --- static checks -------------------------------------------------------------------------------------------------------
def test_inputs_are_documented_defaulted_and_used():
    used = {m for s in _strings(STEPS) for e in EXPRESSION.findall(s) for m in re.findall(r"inputs\.([\w-]+)", e)}
    used |= {m for s in STEPS if "if" in s for m in re.findall(r"inputs\.([\w-]+)", str(s["if"]))}
    inputs = ACTION["inputs"]
    assert {"model", "suite", "preset", "baseline", "extra-args", "python-version", "torch", "install"} <= set(inputs)
    for name, spec in inputs.items():
        assert spec.get("description", "").strip(), f"input {name} has no description"
        assert isinstance(spec.get("default"), str), f"input {name} has no default"
        assert spec.get("required") is False, f"input {name}: every input has a default, so none is required"
        assert name in used, f"input {name} is declared but no step uses it"
    assert used <= set(inputs), f"steps use undeclared inputs: {used - set(inputs)}"


def test_inputs_reach_shell_only_through_env():
    for step in STEPS:
        if "run" in step:
            assert "${{" not in step["run"], f"step {step.get('name')!r} splices an expression into shell text"
            assert step.get("shell") == "bash", f"composite run step {step.get('name')!r} must name its shell"


def test_every_called_action_is_pinned_to_a_commit():
    calls = [s["uses"] for s in STEPS if "uses" in s] + [s["uses"] for _, s in _workflow_steps() if "uses" in s]
    assert calls
    for ref in calls:
        assert ref.startswith("./") or PINNED.match(ref), f"{ref} is not pinned to a full commit SHA"
    for path in (ACTION_FILE, WORKFLOW_FILE):  # the version a pin stands for is written beside it
        for line in path.read_text().splitlines():
            if re.search(r"uses:\s*[\w.-]+/[\w.-]+@", line):
                assert re.search(r"@[0-9a-f]{40} # v\d", line), line


def test_outputs_name_real_step_outputs():
    ids = {s["id"]: s for s in STEPS if "id" in s}
    assert {"result", "report"} <= set(ACTION["outputs"])
    for name, spec in ACTION["outputs"].items():
        assert spec.get("description", "").strip(), name
        m = re.fullmatch(r"\$\{\{\s*steps\.([\w-]+)\.outputs\.([\w-]+)\s*\}\}", spec["value"])
        assert m, f"output {name} is not a step output: {spec['value']}"
        step_id, key = m.groups()
        assert step_id in ids, f"output {name}: no step {step_id}"
        assert re.search(rf"echo \"{re.escape(key)}=", ids[step_id]["run"]), f"step {step_id} never writes {key}"


def test_workflow_uses_the_action_on_a_cpu_and_a_gpu_runner():
    uses = {job_id: s for job_id, s in _workflow_steps() if s.get("uses") == "./"}
    assert set(uses) == {"cpu", "gpu"}, "both jobs run the action"
    inputs = set(ACTION["inputs"])
    for job_id, step in uses.items():
        assert set(step.get("with", {})) <= inputs, f"{job_id}: unknown inputs {set(step['with']) - inputs}"
    jobs = WORKFLOW["jobs"]
    assert jobs["cpu"]["runs-on"] == "ubuntu-latest"
    assert uses["cpu"]["with"].get("torch", ACTION["inputs"]["torch"]["default"]) != "keep"
    assert "self-hosted" in jobs["gpu"]["runs-on"]
    assert uses["gpu"]["with"]["torch"] == "keep" and uses["gpu"]["with"]["python-version"] == ""
    # the committed baseline is where the action looks by default for the CPU job's suite and preset
    cpu = uses["cpu"]["with"]
    suite, preset = cpu.get("suite", "smoke"), cpu.get("preset", ACTION["inputs"]["preset"]["default"])
    assert (ROOT / cpu.get("baseline", f".github/mupbench/baseline-{suite}-{preset}.json")).is_file()


# --- a runner, enough of one to execute this action ---------------------------------------------------------------------
class Expression:
    """GitHub Actions expressions, the part this action uses: literals, context lookups, ! == != && || (), and the
    status functions. Anything else raises, so the action cannot drift beyond what this emulation checks."""

    TOKEN = re.compile(r"\s*(?:('(?:[^']|'')*')|(&&|\|\||==|!=|!|\(|\))|([A-Za-z_][\w.-]*))")

    def __init__(self, text: str, contexts: dict, failed: bool):
        self.tokens, pos, text = [], 0, text.strip()
        while pos < len(text):
            m = self.TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise ValueError(f"cannot parse expression {text!r} at {text[pos:]!r}")
            self.tokens.append(m.group(1) and ("str", m.group(1)[1:-1].replace("''", "'"))
                               or m.group(2) and ("op", m.group(2)) or ("name", m.group(3)))
            pos = m.end()
        self.contexts, self.failed, self.i = contexts, failed, 0

    def value(self):
        v = self._or()
        if self.i != len(self.tokens):
            raise ValueError(f"trailing tokens {self.tokens[self.i:]}")
        return v

    def _peek(self, *ops):
        return self.i < len(self.tokens) and self.tokens[self.i] in [("op", o) for o in ops]

    def _or(self):
        return self._chain("||", self._and, lambda a, b: a or b)

    def _and(self):
        return self._chain("&&", self._cmp, lambda a, b: a and b)

    def _chain(self, op, operand, combine):
        v = operand()
        while self._peek(op):
            self.i += 1
            v = combine(v, operand())
        return v

    def _cmp(self):
        v = self._unary()
        if self._peek("==", "!="):
            op = self.tokens[self.i][1]
            self.i += 1
            same = _loose(v) == _loose(self._unary())
            return same if op == "==" else not same
        return v

    def _unary(self):
        if self._peek("!"):
            self.i += 1
            return not self._unary()
        if self._peek("("):
            self.i += 1
            v = self._or()
            assert self._peek(")"), "unbalanced parenthesis"
            self.i += 1
            return v
        kind, text = self.tokens[self.i]
        self.i += 1
        if kind == "str":
            return text
        if self._peek("("):
            self.i += 2
            return {"success": not self.failed, "failure": self.failed, "always": True, "cancelled": False}[text]
        if text in ("true", "false"):
            return text == "true"
        head, *rest = text.split(".")
        node = self.contexts[head]  # an unknown context raises
        for key in rest:
            node = node.get(key, "") if isinstance(node, dict) else ""
        return node


def _loose(v):
    return "" if v is None else str(v).lower() if not isinstance(v, bool) else v


def render(text: str, contexts: dict) -> str:
    def one(m):
        v = Expression(m.group(1), contexts, failed=False).value()
        return "" if v is None else ("true" if v else "false") if isinstance(v, bool) else str(v)

    return EXPRESSION.sub(one, text)


def _read_commands_file(path: Path) -> dict:
    """GITHUB_OUTPUT / GITHUB_ENV: name=value lines and name<<DELIMITER blocks."""
    out, lines = {}, path.read_text().splitlines() if path.exists() else []
    while lines:
        line = lines.pop(0)
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            body = []
            while lines[0] != delim:
                body.append(lines.pop(0))
            lines.pop(0)
            out[name] = "\n".join(body)
        elif line:
            name, value = line.split("=", 1)
            out[name] = value
    return out


@dataclass
class ActionRun:
    exit_code: int
    outputs: dict
    summary: str
    steps: list = field(default_factory=list)  # (name, "ran" | "skipped" | "uses", exit code or the rendered `with`)
    log: str = ""
    step_contexts: dict = field(default_factory=dict)  # steps.<id>: outputs and outcome

    def step(self, name_start: str):
        return next(s for s in self.steps if s[0].startswith(name_start))


def run_action(inputs: dict, workspace: Path, action_path: Path, temp: Path, env: dict,
               installed: ActionRun | None = None) -> ActionRun:
    """Run the action's steps; with `installed`, the install step is that run's (its environment is reused)."""
    unknown = set(inputs) - set(ACTION["inputs"])
    assert not unknown, f"unknown inputs {unknown}"  # the runner warns; here it is a mistake in the test
    contexts = {
        "inputs": {k: inputs.get(k, spec["default"]) for k, spec in ACTION["inputs"].items()},
        "steps": {},
        "github": {"action_path": str(action_path), "workspace": str(workspace)},
        "runner": {"temp": str(temp), "os": "Linux"},
    }
    job_env, job_path, summary, log, record, failed, exit_code = {}, [], [], [], [], False, 0
    for n, step in enumerate(STEPS):
        name = step.get("name", f"step {n}")
        condition = str(step.get("if", "success()"))
        condition = EXPRESSION.sub(lambda m: m.group(1), condition)
        if not re.search(r"\b(success|failure|always|cancelled)\(", condition):
            condition = f"success() && ({condition})"
        if not Expression(condition, contexts, failed).value():
            record.append((name, "skipped", None))
            continue
        if "uses" in step:
            record.append((name, "uses", {k: render(str(v), contexts) for k, v in step.get("with", {}).items()}))
            continue
        if installed is not None and step.get("id") == "install":
            contexts["steps"]["install"] = installed.step_contexts["install"]
            record.append((name, "reused", 0))
            continue
        files = {key: temp / f"_runner_{n}_{key}" for key in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH",
                                                              "GITHUB_STEP_SUMMARY")}
        for f in files.values():
            f.write_text("")
        script = temp / f"_runner_{n}.sh"
        script.write_text(step["run"])
        step_env = {**env, **job_env, **{k: str(v) for k, v in files.items()},
                    "GITHUB_ACTION_PATH": str(action_path), "GITHUB_WORKSPACE": str(workspace),
                    "RUNNER_TEMP": str(temp), "RUNNER_OS": "Linux", "CI": "true", "GITHUB_ACTIONS": "true",
                    **{k: render(str(v), contexts) for k, v in step.get("env", {}).items()}}
        step_env["PATH"] = os.pathsep.join([*reversed(job_path), step_env["PATH"]])
        cwd = workspace / render(step.get("working-directory", "."), contexts)
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=cwd,
                              env=step_env, capture_output=True, text=True, timeout=600)
        log.append(f"::group::{name} (exit {proc.returncode})\n{proc.stdout}{proc.stderr}")
        outputs = _read_commands_file(files["GITHUB_OUTPUT"])
        job_env.update(_read_commands_file(files["GITHUB_ENV"]))
        job_path += [p for p in files["GITHUB_PATH"].read_text().splitlines() if p]
        summary.append(files["GITHUB_STEP_SUMMARY"].read_text())
        if "id" in step:
            contexts["steps"][step["id"]] = {"outputs": outputs,
                                             "outcome": "success" if proc.returncode == 0 else "failure"}
        record.append((name, "ran", proc.returncode))
        if proc.returncode != 0 and not failed:
            failed, exit_code = True, proc.returncode
    outputs = {k: render(spec["value"], contexts) for k, spec in ACTION["outputs"].items()}
    return ActionRun(exit_code, outputs, "".join(summary), record, "\n".join(log), contexts["steps"])


# --- the action, executed -----------------------------------------------------------------------------------------------
def _no_mupbench(path: str) -> str:
    """PATH without directories that hold a `mupbench` command, so only the action's own install can provide it."""
    return os.pathsep.join(d for d in path.split(os.pathsep) if d and not (Path(d) / "mupbench").exists())


@pytest.fixture(scope="module")
def user_repo(tmp_path_factory):
    """A training repository holding only its model, an action checkout, a runner temp dir and a torch-ready python3."""
    import setuptools

    if tuple(int(x) for x in re.findall(r"\d+", setuptools.__version__)[:2]) < (70, 1):  # bdist_wheel built in
        pytest.skip(f"building mupbench with no download needs setuptools >= 70.1 here, not {setuptools.__version__}")
    base = tmp_path_factory.mktemp("action")
    workspace = base / "workspace"
    workspace.mkdir()
    shutil.copy(ROOT / "examples" / "my_model.py", workspace / "my_model.py")
    _git(workspace, "init", "-q")
    _commit(workspace, "the model")
    action_path = base / "actions" / "mupbench"  # where the runner checks out `uses: owner/mupbench@ref`
    shutil.copytree(ROOT, action_path, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", ".pytest_cache", ".benchmarks", "runs", "sweeps", "build"))
    temp = base / "runner-temp"
    temp.mkdir()
    bin_dir = base / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    env = {"PATH": os.pathsep.join([str(bin_dir), _no_mupbench(os.environ.get("PATH", "/usr/bin:/bin"))]),
           "HOME": os.environ.get("HOME", str(base)), "LANG": "C.UTF-8",
           # No downloads: pip may use only what the python3 above already has (torch, setuptools, …).
           "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return workspace, action_path, temp, env


def _git(workspace: Path, *args) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=workspace, check=True,
                          capture_output=True, text=True).stdout.strip()


def _commit(workspace: Path, message: str) -> str:
    """Commit everything in the workspace; the new commit's sha (a pull request's base commit)."""
    _git(workspace, "add", "-A")
    _git(workspace, "commit", "-q", "--allow-empty", "-m", message)
    return _git(workspace, "rev-parse", "HEAD")


INPUTS = {"model": "my_model.py:build", "preset": "cpu-micro", "python-version": "", "torch": "keep",
          # 3 x 2 widths x μP/SP = 12 runs of 30 steps; a fixed grid has no edge extension, so the sweep stays short
          "extra-args": "--lrs 2^-7,2^-6,2^-5", "coord-check-args": "--widths 64,128,256"}
BASELINE = ".github/mupbench/baseline-smoke-cpu-micro.json"


@pytest.fixture(scope="module")
def first_run(user_repo):
    workspace, action_path, temp, env = user_repo
    return run_action(INPUTS, workspace, action_path, temp, env)


def test_action_installs_mupbench_gates_and_writes_the_baseline(first_run, user_repo):
    workspace, action_path, temp, _ = user_repo
    run = first_run
    assert run.exit_code == 0, run.log
    assert run.step("Set up Python")[1] == "skipped"  # python-version "" keeps the runner's python3
    assert run.step("Install your package")[1] == "skipped"
    assert run.step("Exit with")[1:] == ("ran", 0)
    assert run.outputs["result"] == "pass" and run.outputs["exit-code"] == "0"
    assert run.outputs["baseline-created"] == "true"
    # mupbench was installed from the action path into the action's environment, not imported from this checkout
    venv = temp / "mupbench-venv"
    installed = list(venv.glob("lib/python*/site-packages/mupbench/gate.py"))
    assert installed and (venv / "bin" / "mupbench").exists(), run.log
    assert not list(venv.glob("lib/python*/site-packages/harness")), "one namespace: nothing installed as harness/"
    assert not (workspace / "harness").exists()

    out = temp / "mupbench-out" / "mupbench-smoke-cpu-micro"  # a new directory, never one in the repository
    report = Path(run.outputs["report"])
    assert report == out / "report" and (report / "report.html").stat().st_size > 1000
    results = json.loads((report / "results.json").read_text())
    assert {(v["ablation"], v["parameterization"]) for v in results["verdicts"]} == {("baseline", "mup"),
                                                                                    ("baseline", "sp")}
    assert json.loads((out / "coord_check.json").read_text())["checks"], "the coordinate check ran into the sweep"
    # the gate judged the coordinate check too, and its summary is the job summary
    assert Path(run.outputs["summary"]).read_text() in run.summary
    shown = run.summary.replace("\\", "")  # names are markdown-escaped: coord-check\\[mup\\]
    assert "coord-check[mup]" in shown and "baseline[mup]" in shown
    assert "does not exist on the base branch: this run wrote it" in run.summary
    assert not (workspace / BASELINE).exists()  # written for the artifact, to be committed to the base branch

    upload = run.step("Upload")
    assert upload[1] == "uses" and upload[2]["name"] == "mupbench-smoke-cpu-micro"
    uploaded = Path(upload[2]["path"])
    for name in ("report/report.html", "report/results.json", "junit.xml", "summary.md", "coord_check.json",
                 "mupbench.log", "baseline-smoke-cpu-micro.json"):
        assert (uploaded / name).is_file(), name
    assert json.loads((uploaded / "baseline-smoke-cpu-micro.json").read_text())["schema"] == "mupbench.results/3"
    assert "::stop-commands::" in run.log  # mupbench's and the model's output cannot issue workflow commands


def test_action_fails_with_the_gate_and_still_uploads(first_run, user_repo):
    """The base commit holds a baseline whose μP optimum lies far from this sweep's, and the pull request deletes it:
    the gate still compares with the base's — a regression, exit 1, report and summary written."""
    workspace, action_path, temp, env = user_repo
    uploaded = Path(first_run.step("Upload")[2]["path"])
    doc = json.loads((uploaded / "baseline-smoke-cpu-micro.json").read_text())
    for v in doc["verdicts"]:
        if v["parameterization"] == "mup":
            v["optimal_log2_lr"] = {w: -12.0 for w in v["optimal_log2_lr"]}
    baseline = workspace / BASELINE
    baseline.parent.mkdir(parents=True, exist_ok=True)
    baseline.write_text(json.dumps(doc))
    base = _commit(workspace, "the baseline")
    baseline.unlink()  # the pull request deletes it (or could edit it): the gate reads the base commit's

    run = run_action({**INPUTS, "base-ref": base}, workspace, action_path, temp, env)
    assert run.exit_code == 1, run.log
    assert run.step("Exit with")[1:] == ("ran", 1)
    assert run.outputs["result"] == "fail" and run.outputs["exit-code"] == "1"
    assert run.outputs["baseline-created"] == "false"
    assert "gate: FAIL" in run.summary and "optimum moved more than 1 log2 LR" in run.summary
    assert "This pull request changes `.github/mupbench/baseline-smoke-cpu-micro.json`" in run.summary
    upload = run.step("Upload")
    assert upload[1] == "uses", "the report is uploaded when the gate fails"
    uploaded = Path(upload[2]["path"])
    assert (uploaded / "report" / "report.html").is_file() and (uploaded / "junit.xml").is_file()
    assert 'failures="1"' in (uploaded / "junit.xml").read_text() or "<failure" in (uploaded / "junit.xml").read_text()
    assert json.loads((uploaded / "baseline-smoke-cpu-micro.json").read_text())["verdicts"] == doc["verdicts"]


def test_action_reports_a_malformed_baseline_with_exit_2(first_run, user_repo):
    """Also: `install` runs the user's command inside the action's environment; `skip` leaves the coord check out."""
    workspace, action_path, temp, env = user_repo
    broken = workspace / ".github" / "mupbench" / "broken.json"
    broken.write_text('{"schema": "something else"}')
    base = _commit(workspace, "a malformed baseline")
    valid = Path(first_run.step("Upload")[2]["path"]) / "baseline-smoke-cpu-micro.json"
    broken.write_text(valid.read_text())  # the pull request's own file is well formed, and not what is read
    package = workspace / "team"
    package.mkdir()
    (package / "pyproject.toml").write_text('[project]\nname = "team-models"\nversion = "0"\n'
                                            '[tool.setuptools]\npy-modules = ["team_models"]\n')
    (package / "team_models.py").write_text("")

    run = run_action({**INPUTS, "baseline": ".github/mupbench/broken.json", "coord-check-args": "skip", "base-ref": base,
                      "install": "pip install --no-deps ./team"}, workspace, action_path, temp, env)
    assert run.step("Install your package")[1:] == ("ran", 0), run.log
    assert list((temp / "mupbench-venv").glob("lib/python*/site-packages/team_models.py")), run.log
    assert run.exit_code == 2, run.log
    assert run.outputs["result"] == "error" and run.outputs["report"] == "" and run.outputs["summary"] == ""
    assert "mupbench gate: error (exit 2)" in run.summary
    assert "is not a mupbench.results/1, /2 or /3 document" in run.summary  # the gate's one-line reason, in the job summary
    upload = run.step("Upload")
    assert upload[1] == "uses"
    uploaded = Path(upload[2]["path"])
    assert (uploaded / "mupbench.log").is_file() and (uploaded / "broken.json").is_file()
    assert not (uploaded / "report").exists() and not (uploaded / "coord_check.json").exists()


def test_action_logs_to_the_trackers_it_is_given(user_repo):
    """The input `log` installs the trackers' extras (here already present: no index), reaches the gate as --log, and
    the sweep's tracking/ folder is uploaded with the report."""
    pytest.importorskip("tensorboard", reason='tensorboard not installed: pip install "mupbench[tensorboard]"')
    workspace, action_path, temp, env = user_repo
    run = run_action({**INPUTS, "log": "tensorboard", "coord-check-args": "skip", "out": "mupbench-logged",
                      "extra-args": "--lrs 2^-7,2^-6 --seeds 1", "baseline": ".github/mupbench/baseline-logged.json",
                      "artifact-name": "mupbench-logged"}, workspace, action_path, temp, env)
    assert run.exit_code == 0, run.log
    uploaded = Path(run.step("Upload")[2]["path"])
    ledger = (uploaded / "tracking" / "logged.jsonl").read_text().splitlines()
    assert len(ledger) == 8  # 2 widths x 2 LRs x μP/SP, one seed
    assert list((uploaded / "tracking" / "tensorboard" / "_sweep").glob("events.out.tfevents.*"))


def test_action_gates_a_teams_own_training_script(user_repo):
    """The input trainer-command: every run is trained by the repository's own script (run from its root); with no
    model the coordinate check, which needs one, is skipped and the gate judges the sweep."""
    workspace, action_path, temp, env = user_repo
    shutil.copy(ROOT / "tests" / "trainers" / "fake_trainer.py", workspace / "train.py")
    run = run_action({**INPUTS, "model": "", "suite": "pr", "out": "mupbench-trained",
                      "trainer-command": "python3 train.py --width {width} --lr {lr} --seed {seed} --result {result}",
                      "extra-args": "--ablation baseline --lrs 2^-7,2^-6,2^-5 --seeds 1",
                      "baseline": ".github/mupbench/baseline-trained.json", "artifact-name": "mupbench-trained"},
                     workspace, action_path, temp, env)
    assert run.exit_code == 0, run.log
    uploaded = Path(run.step("Upload")[2]["path"])
    assert not (uploaded / "coord_check.json").exists()
    log = (uploaded / "mupbench.log").read_text()
    assert "coord-check" not in log, log
    results = json.loads((uploaded / "report" / "results.json").read_text())
    assert [(v["ablation"], v["parameterization"], v["n_runs"]) for v in results["verdicts"]] == [("baseline", "mup", 6)]


# --- refused before anything runs: unsafe names and paths, a sweep directory that exists, a check that cannot run -----
@pytest.mark.parametrize("inputs, fragment", [
    ({"artifact-name": "../../victim"}, "artifact-name '../../victim' is not a plain name"),
    ({"suite": "smoke/../../x"}, "suite 'smoke/../../x' is not a plain name"),
    ({"preset": ".."}, "preset '..' is not a plain name"),
    ({"baseline": "../outside.json"}, "baseline '../outside.json' must be a path inside the repository"),
    ({"out": "my_model.py"}, "out 'my_model.py' is tracked by git"),
    ({"out": "left-over"}, "out 'left-over' already exists"),
    ({"coord-check-args": "--base-width 0"}, "the coordinate check did not run (exit 2): mupbench: error: --base-width"),
])
def test_action_refuses_unsafe_inputs_and_a_check_that_cannot_run(inputs, fragment, first_run, user_repo):
    workspace, action_path, temp, env = user_repo
    victim = temp.parent / "victim"
    victim.mkdir(exist_ok=True)
    (victim / "keep").write_text("not the action's to delete")
    (workspace / "left-over").mkdir(exist_ok=True)
    run = run_action({**INPUTS, **inputs}, workspace, action_path, temp, env, installed=first_run)
    assert run.exit_code == 2 and run.outputs["result"] == "error", run.log
    assert "mupbench gate: error (exit 2)" in run.summary and fragment in run.summary.replace("\\", ""), run.summary
    assert (victim / "keep").is_file()
    assert "gate --suite" not in run.log  # the gate never ran


def test_action_job_summary_keeps_log_text_inside_its_fence(first_run, user_repo):
    """A model whose output holds a code fence, a markdown image and a workflow command: the job summary shows the
    log tail inside a longer fence, and the command cannot take effect in the runner log."""
    workspace, action_path, temp, env = user_repo
    (workspace / "loud_model.py").write_text(
        "from my_model import build\nprint('```\\n![x](http://example.invalid/x.png)\\n::error::injected\\n````')\n"
        "def factory(width):\n    raise RuntimeError('``` [click](http://example.invalid)')\n")
    run = run_action({**INPUTS, "model": "loud_model.py:factory"}, workspace, action_path, temp, env,
                     installed=first_run)
    assert run.exit_code == 2, run.log
    tail = run.summary.split("The end of its output:", 1)[1]
    fence = tail.strip().splitlines()[0]
    assert set(fence) == {"`"} and len(fence) >= 5 and tail.rstrip().endswith(fence)
    assert "\\[click\\]" in run.summary.split("The end of its output:")[0]  # the reason line is escaped
    step_log = run.log.split("::group::Coordinate check and gate", 1)[1]
    assert step_log.index("::stop-commands::") < step_log.index("::error::injected")
