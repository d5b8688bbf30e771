"""A team's own trainer: a Python callable or a command, given one run's settings, returning its final validation loss.

Settings (`settings(spec, ...)`), each also a `{placeholder}` of a command template:

    width, depth, heads       the model's shape (width is the swept axis of width suites)
    lr, log2_lr               the base learning rate α (the trainer applies its own per-group multipliers)
    seed                      the replica: the trainer must seed its initialisation AND its data order with it
    steps, tokens             training steps; tokens = steps × batch_size × seq_len
    batch_size, seq_len, warmup, schedule, optimizer, weight_decay
    ablation, parameterization   which row of the suite this run belongs to ("mup" or "sp": the trainer applies it)
    base_width                the width at which μP and SP coincide
    device                    "cpu" or "cuda:N" (a command also gets CUDA_VISIBLE_DEVICES=N)
    data                      path of the sweep's token file (a NumPy array of token ids), for trainers that use it
    run_hash, run_dir         the run's identity and a directory of its own (logs, checkpoints)
    result                    (commands only) the path the command writes its result JSON to

Result protocol. A callable returns a number (the final validation loss) or a dict; a command writes a JSON object to
`{result}` or, without that placeholder, prints it as the last line of its standard output:

    {"final_val_loss": 3.21,                 # a number; NaN, ±inf, "nan", "inf" or null with "status": "diverged"
                                              # mean the run diverged
     "curve": [[50, 3.9], [100, 3.5]],        # optional: [step, loss] (validation) or [step, split, loss]
     "status": "ok" | "diverged",            # optional
     "steps_done": 300, "tokens_per_s": 1e5}  # optional

Anything else — an exception, a non-zero exit, a timeout (`--run-timeout`), no or malformed result, a loss that is not
a number — is a `failed` run with the reason and the tail of the run's output (kept in `run_dir/output.log`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import string
import subprocess
import tempfile
from pathlib import Path

from mupbench.byo.code import changed_since, code_identity
from mupbench.config import TRAINER_SPEC_KEY, RunSpec
from mupbench.errors import CodeChanged, UserError  # CodeChanged: a trainer's file changed mid-sweep

SETTINGS = ("width", "depth", "heads", "lr", "log2_lr", "seed", "steps", "tokens", "batch_size", "seq_len", "warmup",
            "schedule", "optimizer", "weight_decay", "ablation", "parameterization", "base_width", "device", "data",
            "run_hash", "run_dir")
PLACEHOLDERS = SETTINGS + ("result",)
REQUIRED_PLACEHOLDERS = (("lr", "log2_lr"), ("width",))  # one of each tuple
RUN_DIRS = "trainer-runs"  # <sweep dir>/trainer-runs/<run hash>/: output.log, result.json
TAIL_LINES = 20


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- resolving what the user named, before any run ----------------------------------------------------------------
def resolve_callable(target: str) -> dict:
    """`file.py:func` or `package.module:func`, imported now (UserError on any problem); the spec entry to carry."""
    from mupbench.byo.loading import load_target

    module, path, name, attr = load_target(target, "--trainer", "function")
    if not callable(getattr(module, attr, None)):
        raise UserError(f"--trainer: {path.name}:{attr} is not a callable train(run: dict) -> float")
    code = code_identity(name or path)  # the file and every file of the user's it imports
    return {"kind": "callable", "spec": target, "file": str(path), "module": name, "attr": attr,
            "label": f"{name or path.name}:{attr}", "identity": {"kind": "callable", "attr": attr, "code": code}}


def resolve_command(template: str, shell: bool = False, cwd: str | None = None) -> dict:
    """A command template, checked now: its placeholders are known settings, it names `{lr}` (or `{log2_lr}`) and
    `{width}`, and its program exists. Its identity is the template and the digests of the files it names."""
    cwd = str(Path(cwd or os.getcwd()).resolve())
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise UserError(f"--trainer-command: {e} in {template!r} (write a literal brace as {{{{ or }}}})") from None
    unknown = sorted({f for f in fields if f not in PLACEHOLDERS})
    if unknown:
        raise UserError(f"--trainer-command: unknown placeholder {{{unknown[0]}}}: use "
                        + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS))
    for options in REQUIRED_PLACEHOLDERS:
        if not any(o in fields for o in options):
            raise UserError(f"--trainer-command must pass {{{options[0]}}} to the trainer: every run differs in it")
    try:
        argv = shlex.split(template)
    except ValueError as e:
        raise UserError(f"--trainer-command: cannot split {template!r} into arguments ({e})") from None
    if not argv:
        raise UserError("--trainer-command is empty")
    if not shell:
        program = argv[0]
        found = shutil.which(program, path=os.environ.get("PATH")) if "/" not in program else None
        if found is None and not (Path(cwd) / program).is_file():
            raise UserError(f"--trainer-command: program {program!r} not found (not on PATH, not a file in {cwd})")
    files = {}
    for token in argv:
        path = Path(cwd) / token
        if "{" not in token and path.is_file():  # a script it runs, a config or data file it reads
            files[token] = code_identity(path) if path.suffix == ".py" else _digest(path)
    return {"kind": "command", "template": template, "argv": argv, "shell": bool(shell), "cwd": cwd,
            "label": template, "identity": {"kind": "command", "template": template, "shell": bool(shell),
                                            "files": files}}


def with_trainer(specs: list[RunSpec], entry: dict, timeout: float | None = None) -> list[RunSpec]:
    """The specs, trained by the user's trainer `entry` (resolve_callable / resolve_command); `timeout` seconds per
    run (None: no limit) is a label, not part of the run's identity."""
    carried = {**entry, "timeout": timeout}
    return [dataclasses.replace(s, extra={**s.extra, TRAINER_SPEC_KEY: carried}) for s in specs]


def trainer_entry(specs: list[RunSpec]) -> dict | None:
    """The user's trainer the specs carry (the first one's), or None."""
    return next((s.extra[TRAINER_SPEC_KEY] for s in specs if TRAINER_SPEC_KEY in (s.extra or {})), None)


def settings(spec: RunSpec, device: str, run_dir: Path, data: Path | None) -> dict:
    """One run's settings, as a plain dict (module docstring)."""
    m, t = spec.model, spec.train
    return {"width": m.width, "depth": m.depth, "heads": m.heads, "lr": t.lr, "log2_lr": t.log2_lr, "seed": t.seed,
            "steps": t.steps, "tokens": t.steps * t.tokens_per_step, "batch_size": t.batch_size, "seq_len": t.seq_len,
            "warmup": t.warmup, "schedule": t.schedule, "optimizer": t.optimizer, "weight_decay": t.weight_decay,
            "ablation": spec.ablation, "parameterization": m.parameterization, "base_width": m.base_width,
            "device": device, "data": str(data) if data is not None else "", "run_hash": spec.run_hash,
            "run_dir": str(run_dir)}


# --- training one run ----------------------------------------------------------------------------------------------
def train_external(spec: RunSpec, device: str, logs: Path | None) -> dict:
    """Train `spec` with the user's trainer it carries; the result record (status ok, diverged or failed)."""
    entry = spec.extra[TRAINER_SPEC_KEY]
    root = Path(logs) if logs is not None else Path(tempfile.mkdtemp(prefix="mupbench-run-"))
    run_dir = root / RUN_DIRS / spec.run_hash
    run_dir.mkdir(parents=True, exist_ok=True)
    data = (root / "tokens.npy") if logs is not None and (root / "tokens.npy").exists() else None
    values = settings(spec, device, run_dir, data)
    if entry["kind"] == "callable":
        return _train_callable(entry, values, run_dir / "output.log", entry.get("timeout"))
    return _train_command(entry, values, run_dir, entry.get("timeout"))


def _train_callable(entry: dict, values: dict, log: Path, timeout: float | None) -> dict:
    from mupbench.byo.loading import import_file, import_module

    path = Path(entry["file"])
    _check_unchanged(entry["identity"]["code"], entry["module"] or path, entry["label"])
    module = import_module(entry["module"], entry["spec"], "--trainer") if entry["module"] else \
        import_file(path, entry["spec"], "--trainer")
    with open(log, "w") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), \
            _time_limit(timeout):
        try:
            returned = getattr(module, entry["attr"])(dict(values))
        except _RunTimedOut:
            return _failed(f"timed out after {timeout:g} s (--run-timeout)", log)
    return parse_result(returned, f"{entry['label']} returned")


class _RunTimedOut(BaseException):  # not an Exception: a trainer's own `except Exception` does not swallow it
    pass


@contextlib.contextmanager
def _time_limit(seconds: float | None):
    """Interrupt the callable after `seconds` (SIGALRM: in a worker's main thread; elsewhere no limit)."""
    import threading

    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise _RunTimedOut()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _train_command(entry: dict, values: dict, run_dir: Path, timeout: float | None) -> dict:
    result_path = run_dir / "result.json"
    result_path.unlink(missing_ok=True)
    values = {**values, "result": str(result_path)}
    for name, planned in entry["identity"]["files"].items():
        path = Path(entry["cwd"]) / name
        if isinstance(planned, dict):
            _check_unchanged(planned, path, name)
        elif not path.is_file() or _digest(path) != planned:
            raise CodeChanged(f"{path} (named by --trainer-command) changed since the sweep was planned: run the "
                              "command again (the changed trainer's runs are new runs)")
    text = {k: _placeholder(v) for k, v in values.items()}
    if entry["shell"]:
        command = entry["template"].format_map({k: shlex.quote(v) for k, v in text.items()})
    else:
        command = [part.format_map(text) for part in entry["argv"]]
    env = {**os.environ, "MUPBENCH_RUN_HASH": values["run_hash"], "MUPBENCH_RUN_DIR": values["run_dir"]}
    if values["device"].startswith("cuda:"):
        env["CUDA_VISIBLE_DEVICES"] = values["device"].split(":", 1)[1]
    env.setdefault("OMP_NUM_THREADS", str(_threads()))
    log_path = run_dir / "output.log"
    with open(log_path, "w") as log:
        try:
            proc = subprocess.Popen(command, cwd=entry["cwd"], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, shell=entry["shell"], env=env, start_new_session=True)
        except OSError as e:
            return _failed(f"could not start the trainer command ({e.strerror or e})", log_path)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            return _failed(f"timed out after {timeout:g} s (--run-timeout)", log_path)
        except BaseException:  # the worker is stopping: take the run's process group with it
            _kill(proc)
            raise
    if code != 0:
        why = f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else \
            f"exited with status {code}"
        return _failed(f"trainer command {why}", log_path)
    if "{result}" in entry["template"]:
        if not result_path.is_file():
            return _failed(f"trainer command wrote no result to {result_path}", log_path)
        raw, where = result_path.read_text(errors="replace"), f"result file {result_path.name}"
    else:
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
        raw, where = (lines[-1] if lines else ""), "last line of output"
    try:
        parsed = json.loads(raw)
    except ValueError:
        return _failed(f"the {where} is not JSON: {raw.strip()[:200]!r}", log_path)
    result = parse_result(parsed, f"the {where}")
    if result["status"] == "failed":
        result["error"] += _tail(log_path)
    return result


def _check_unchanged(planned: dict, target, label: str) -> None:
    """CodeChanged when a file of the code `target` imported when the sweep was planned now differs (read file by file:
    the answer does not depend on what this worker process has imported)."""
    changed = changed_since(planned, target)
    if changed:
        raise CodeChanged(f"trainer {label} changed since the sweep was planned ({', '.join(changed[:3])}): run the "
                          "command again (the changed trainer's runs are new runs)")


def _placeholder(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _threads() -> int:
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return 1


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()[-TAIL_LINES:]
    except OSError:
        return ""
    return ("\n" + "\n".join(lines)) if lines else ""


def _failed(why: str, log: Path | None = None) -> dict:
    return {"status": "failed", "final_val_loss": None, "error": why + (_tail(log) if log is not None else "")}


def _loss(value):
    """A loss as a float (inf for NaN/±inf/'nan'/'inf'), or None when it is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "+inf", "-inf", "infinity"):
        return math.inf
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else math.inf
    try:  # numpy and torch scalars
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else math.inf


def parse_result(value, source: str) -> dict:
    """A trainer's result (a number or a dict, module docstring) as a result record; `source` names it in errors."""
    if not isinstance(value, dict):
        value = {"final_val_loss": value}
    status = value.get("status", "ok")
    if status not in ("ok", "diverged"):
        return _failed(f"{source} status {status!r}: expected 'ok' or 'diverged'")
    raw = value.get("final_val_loss")
    loss = math.inf if raw is None and status == "diverged" else _loss(raw)
    if loss is None:
        what = "no final_val_loss" if "final_val_loss" not in value else f"final_val_loss {raw!r}"
        return _failed(f"{source} {what}, not a number")
    curve = []
    for point in value.get("curve") or []:
        if not isinstance(point, (list, tuple)) or len(point) not in (2, 3):
            return _failed(f"{source} a curve point {point!r}: expected [step, loss] or [step, split, loss]")
        step, split, y = (point[0], "val", point[1]) if len(point) == 2 else point
        y = _loss(y)
        if y is None or isinstance(step, bool) or not isinstance(step, int) or split not in ("train", "val"):
            return _failed(f"{source} a curve point {point!r}: expected an integer step, 'train' or 'val', a loss")
        curve.append((step, split, y))
    diverged = status == "diverged" or math.isinf(loss)
    out = {"status": "diverged" if diverged else "ok", "final_val_loss": math.inf if diverged else loss,
           "curve": curve}
    for key in ("steps_done", "tokens_per_s", "n_params"):
        if isinstance(value.get(key), (int, float)) and not isinstance(value.get(key), bool):
            out[key] = value[key]
    return out
