"""A sweep's runs in experiment trackers: W&B, MLflow and TensorBoard (`mupbench run --log NAME`).

The store stays the source of truth; trackers are told of what it holds. Logging happens in the driver only (the
process running `mupbench run`): an executor calls `on_stored(spec)` after each result is stored, and `Tracking` reads
that run back from the store and hands it to every tracker. At the end of the sweep `finish` logs any stored run not
logged yet (runs stored before `--log` was given), then the verdict table and the report files.

A tracker (one module per library, each an optional extra: mupbench[wandb], mupbench[mlflow], mupbench[tensorboard]):

    open(sweep)                    start or resume the sweep's group (W&B group, MLflow parent run, TensorBoard folder)
    log_run(run) -> str            one tracker run per training run (a StoredRun); returns its id in the tracker
    log_sweep(verdicts, artifacts) the verdict table (Verdict.to_json() entries) and the report files (name → path,
                                   the name relative to the sweep directory, e.g. report/report.html)
    close()

What was logged is remembered in DIR/tracking/logged.jsonl (tracker, run hash, the stored result's time), so a resumed
sweep logs only what is new; a failed run trained again (--retry-failed) is a new result and is logged again. A tracker
that fails (unreachable, misconfigured) is reported once through `warn` and left out for the rest of the sweep, unless
`required`: then the failure is a UserError.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from mupbench.config import RunSpec
from mupbench.errors import UserError
from mupbench.store import Store, atomic_write
from mupbench.transfer import analyze

TRACKING_DIR = "tracking"  # inside the sweep directory: local tracker files and what was logged
LEDGER_FILE = "logged.jsonl"
STATE_FILE = "state.json"
# name → (module of mupbench.tracking, the library it needs, the extra that installs it)
TRACKERS = {
    "wandb": ("wandb_tracker", "wandb", "wandb"),
    "mlflow": ("mlflow_tracker", "mlflow", "mlflow"),
    "tensorboard": ("tensorboard_tracker", "tensorboard", "tensorboard"),
}
STATUS_NAMES = {"ok": "finished", "diverged": "diverged", "failed": "failed"}


def install_hint(name: str) -> str:
    return f'pip install "mupbench[{TRACKERS[name][2]}]"'


@dataclass
class Sweep:
    """The sweep the trackers group runs under: its directory, a name (the directory's), an id kept for the sweep's
    life (DIR/tracking/state.json), and each tracker's own state there (e.g. MLflow's parent run)."""
    dir: Path
    name: str
    id: str
    state: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name}-{self.id}"

    @property
    def tracking_dir(self) -> Path:
        return self.dir / TRACKING_DIR


@dataclass
class StoredRun:
    """One stored run as the trackers log it."""
    run_hash: str
    name: str            # e.g. "baseline mup w64 lr=2^-7 seed1"
    params: dict         # the settings a person filters by: ablation, parameterization, width, lr, seed, ...
    spec: dict           # the whole run spec (RunSpec.to_json())
    status: str          # ok | diverged | failed (the store's)
    error: str | None
    final_val_loss: float | None  # inf when diverged, None when failed
    wall_s: float | None
    steps_done: int | None
    n_params: int | None
    tokens_per_s: float | None
    finished_at: float
    curve: list[tuple[int, str, float]]  # (step, split, loss), split train | val

    @property
    def state(self) -> str:
        """finished, diverged or failed."""
        return STATUS_NAMES.get(self.status, self.status)

    def summary(self) -> dict[str, float]:
        """The run's final numbers (finite ones only: a diverged run's loss is its status, not a number)."""
        values = {"final_val_loss": self.final_val_loss, "wall_s": self.wall_s, "steps_done": self.steps_done,
                  "n_params": self.n_params, "tokens_per_s": self.tokens_per_s}
        return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}


class Tracker(Protocol):
    name: str
    key: str  # where it logs (the ledger's key): logging the same runs elsewhere is not a duplicate; the local
    #           stores inside the sweep directory have a key without its path, so a moved directory logs nothing twice

    def open(self, sweep: Sweep) -> None: ...

    def log_run(self, run: StoredRun) -> str: ...

    def log_sweep(self, verdicts: list[dict], artifacts: dict[str, Path]) -> None: ...

    def close(self) -> None: ...


def check(names: list[str], sweep_dir: Path) -> None:
    """UserError for an unknown tracker name, a library not installed, or a tracking directory that cannot be written —
    before anything is trained."""
    for name in names:
        if name not in TRACKERS:
            raise UserError(f"--log {name!r}: use one of {', '.join(TRACKERS)}")
    for name in dict.fromkeys(names):
        _module(name).check(sweep_dir)


def _module(name: str):
    return importlib.import_module(f"mupbench.tracking.{TRACKERS[name][0]}")


def import_library(name: str, module: str | None = None):
    """The tracker's library, or UserError naming the extra that installs it."""
    try:
        return importlib.import_module(module or TRACKERS[name][1])
    except ImportError as e:
        raise UserError(f"--log {name} needs {TRACKERS[name][1]}, which is not importable here ({e}): "
                        f"{install_hint(name)}") from None


def stored_runs(store: Store, run_hashes: list[str] | None = None) -> list[StoredRun]:
    """The stored runs (those of `run_hashes`, or all) with their curves."""
    runs = store.runs()
    if run_hashes is not None:
        runs = runs[runs["run_hash"].isin(run_hashes)]
    if runs.empty:
        return []
    curves = store.curves(list(runs["run_hash"]))
    points: dict[str, list] = {}
    for h, step, split, loss in curves.sort_values(["run_hash", "step"]).itertuples(index=False):
        points.setdefault(h, []).append((int(step), split, float("nan") if loss is None else float(loss)))
    return [_stored_run(row, points.get(row["run_hash"], [])) for row in runs.to_dict("records")]


def _optional(value, kind=float):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return kind(value)


def _stored_run(row: dict, curve: list) -> StoredRun:
    spec = json.loads(row["spec"])
    axis = row["axis"]
    where = {"width": f"w{row['width']}", "depth": f"w{row['width']} d{row['depth']}",
             "tokens": f"w{row['width']} {row['steps']}steps"}.get(axis, f"w{row['width']}")
    name = f"{row['ablation']} {row['parameterization']} {where} lr=2^{row['log2_lr']:g} seed{row['seed']}"
    extra = spec.get("extra", {})
    params = {"ablation": row["ablation"], "parameterization": row["parameterization"], "axis": axis,
              "width": int(row["width"]), "depth": int(row["depth"]), "steps": int(row["steps"]),
              "tokens": int(row["tokens"]), "lr": float(row["lr"]), "log2_lr": float(row["log2_lr"]),
              "seed": int(row["seed"]), "run_hash": row["run_hash"],
              **{k: extra[k] for k in ("suite", "preset") if k in extra}}
    return StoredRun(run_hash=row["run_hash"], name=name, params=params, spec=spec, status=row["status"],
                     error=row["error"] if isinstance(row["error"], str) else None,
                     final_val_loss=_optional(row["final_val_loss"]), wall_s=_optional(row["wall_s"]),
                     steps_done=_optional(row["steps_done"], int), n_params=_optional(row["n_params"], int),
                     tokens_per_s=_optional(row["tokens_per_s"]), finished_at=float(row["finished_at"]), curve=curve)


def verdict_rows(verdicts: list[dict]) -> tuple[list[str], list[list]]:
    """The verdict table: one row per (ablation, parameterization), the optima per scale as `scale: log2 LR` pairs."""
    headers = ["ablation", "parameterization", "axis", "verdict", "reason", "drift", "drift_low", "drift_high",
               "regret", "seeds", "optimal_log2_lr"]
    rows = []
    for v in verdicts:
        low, high = v.get("drift_interval") or (None, None)
        optima = ", ".join(f"{scale}: {'–' if x is None else f'{x:.2f}'}" for scale, x in v["optimal_log2_lr"].items())
        rows.append([v["ablation"], v["parameterization"], v.get("axis", "width"), v["verdict"], v["reason"],
                     v.get("drift_per_doubling"), low, high, v.get("transfer_regret"), v.get("n_seeds"), optima])
    return headers, rows


class Tracking:
    """The trackers `--log` named, for one sweep directory: the executors' `on_stored` observer and the end-of-sweep
    `finish`. Use as a context manager (closes the trackers)."""

    def __init__(self, names: list[str], sweep_dir: str | Path, required: bool = False,
                 warn: Callable[[str], None] | None = None):
        self.dir = Path(sweep_dir)
        self.required = required
        self.warn = warn or (lambda message: None)
        self.names = list(dict.fromkeys(names))
        self.trackers: list = []
        self.sweep: Sweep | None = None
        self._store: Store | None = None
        self._logged: dict[str, dict[str, float]] = {}  # tracker key → run hash → finished_at logged

    def __bool__(self) -> bool:
        return bool(self.names)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # --- the sweep ----------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Open every tracker on the sweep (creating DIR/tracking/); one that fails is warned about and left out."""
        if not self.names or self.sweep is not None:
            return
        folder = self.dir / TRACKING_DIR
        folder.mkdir(parents=True, exist_ok=True)
        state = _read_json(folder / STATE_FILE) or {}
        if "sweep_id" not in state:
            state["sweep_id"] = uuid.uuid4().hex[:8]
        self.sweep = Sweep(self.dir, self.dir.resolve().name, state["sweep_id"], state.get("trackers", {}))
        self._logged = _read_ledger(folder / LEDGER_FILE)
        for name in self.names:
            tracker = _module(name).make()
            if self._guard(tracker, "open", lambda: tracker.open(self.sweep)):
                self.trackers.append(tracker)
        self._save_state()

    def _save_state(self) -> None:
        atomic_write(self.dir / TRACKING_DIR / STATE_FILE,
                     json.dumps({"sweep_id": self.sweep.id, "trackers": self.sweep.state}, indent=1, sort_keys=True))

    def _guard(self, tracker, what: str, action) -> bool:
        """Run `action`; on failure warn once and drop the tracker (or raise UserError when logging is required)."""
        try:
            action()
            return True
        except Exception as e:  # the tracker's library raises anything: network, auth, its own errors
            if isinstance(e, UserError):  # a misconfiguration we recognised, said with its fix
                message = str(e)
            else:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                message = f"--log {tracker.name}: could not {what} ({type(e).__name__}: {first})"
            if self.required:
                raise UserError(message if isinstance(e, UserError) else f"{message}: fix the tracker's settings, or "
                                "drop --log-required to go on without it") from None
            self.warn(f"{message}; the sweep goes on without it (the store keeps every run: a later `mupbench run "
                      f"--log {tracker.name}` on this directory logs what is missing)")
            with contextlib.suppress(Exception):
                tracker.close()
            if tracker in self.trackers:
                self.trackers.remove(tracker)
            return False

    # --- runs ---------------------------------------------------------------------------------------------------
    def on_stored(self, spec: RunSpec) -> None:
        """The executors' observer: log the run just stored."""
        self.log_runs([spec.run_hash])

    def log_runs(self, run_hashes: list[str] | None = None) -> int:
        """Log the stored runs (of `run_hashes`, or all) that a tracker has not logged yet; returns how many were
        logged (counting each run once)."""
        self.open()
        if not self.trackers:
            return 0
        if self._store is None:
            self._store = Store(self.dir)
        count = 0
        for run in stored_runs(self._store, run_hashes):
            new = False
            for tracker in list(self.trackers):
                if self._logged.get(tracker.key, {}).get(run.run_hash) == run.finished_at:
                    continue
                ids = []
                if self._guard(tracker, f"log run {run.name}", lambda: ids.append(tracker.log_run(run))):
                    self._remember(tracker.key, run, ids[0])
                    new = True
            count += new
        return count

    def _remember(self, key: str, run: StoredRun, tracker_id: str) -> None:
        self._logged.setdefault(key, {})[run.run_hash] = run.finished_at
        line = json.dumps({"tracker": key, "run_hash": run.run_hash, "finished_at": run.finished_at, "id": tracker_id})
        with open(self.dir / TRACKING_DIR / LEDGER_FILE, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    # --- the end of the sweep -----------------------------------------------------------------------------------
    def finish(self, artifacts: list[Path], tolerance: float | None = None) -> None:
        """Log the stored runs not logged yet, then the verdicts (mupbench.transfer, at `tolerance`) and the
        `artifacts` that exist — unless the trackers already have these very verdicts and files (a re-run that
        changed nothing)."""
        self.log_runs()
        if not self.trackers:
            return
        verdicts = [v.to_json() for v in analyze(self._store.runs(), tolerance)]
        artifacts = {self._artifact_name(Path(p)): Path(p) for p in artifacts if Path(p).is_file()}
        # the report files carry the time they were written: what is new is the verdicts (or another set of files)
        digest = hashlib.sha256(json.dumps([verdicts, sorted(artifacts)], sort_keys=True,
                                           default=str).encode()).hexdigest()
        for tracker in list(self.trackers):
            logged = self.sweep.state.setdefault(tracker.key, {})
            if logged.get("sweep_digest") == digest:
                continue
            if self._guard(tracker, "log the sweep's verdicts and report",
                           lambda: tracker.log_sweep(verdicts, artifacts)):
                logged["sweep_digest"] = digest
        if self.sweep is not None:
            self._save_state()

    def _artifact_name(self, path: Path) -> str:
        """The path relative to the sweep directory (report/report.html, junit.xml), or the file's name."""
        try:
            return path.resolve().relative_to(self.dir.resolve()).as_posix()
        except ValueError:
            return path.name

    def close(self) -> None:
        for tracker in list(self.trackers):
            self._guard(tracker, "close", tracker.close)
        self.trackers = []
        if self._store is not None:
            self._store.close()
            self._store = None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_ledger(path: Path) -> dict[str, dict[str, float]]:
    """What the ledger says was logged; a last line cut short is ended, so the next entry starts a line of its own."""
    logged: dict[str, dict[str, float]] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return logged
    if text and not text.endswith("\n"):
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n")
    lines = text.splitlines()
    for line in lines:
        try:
            entry = json.loads(line)
            logged.setdefault(entry["tracker"], {})[entry["run_hash"]] = float(entry["finished_at"])
        except (ValueError, KeyError, TypeError):  # a line cut short by a killed process
            continue
    return logged
