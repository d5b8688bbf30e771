"""Everything a report shows, read from a sweep directory: the store, the transfer analysis, and coord_check.json.

Reports never train and never write into the store, so they can be built at any time on a finished or a partial sweep.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mupbench.config import AXES, BYO_SPEC_KEY
from mupbench.expectations import agreement, expectation
from mupbench.store import Store
from mupbench.transfer import MIN_FINITE_POINTS, Verdict, analyze

COORD_CHECK_FILE = "coord_check.json"
COORD_CHECK_SCHEMA = "mupbench.coord_check/2"
COORD_CHECK_SCHEMAS = ("mupbench.coord_check/1", COORD_CHECK_SCHEMA)  # /2 adds seeds, init slopes and read exponents
PARAMETERIZATION_ORDER = ("mup", "sp")


@dataclass
class SweepData:
    dir: Path
    runs: pd.DataFrame
    plan: pd.DataFrame
    counts: dict
    info: dict
    suites: list[str]
    preset: str | None
    created_at: float | None
    tolerance: float | None
    verdicts: list[Verdict]
    entries: list[dict]  # one per verdict, results.json's "verdicts", in display order
    progress: list[dict]  # per (ablation, parameterization) of the plan: planned / finished / failed
    curves: pd.DataFrame  # validation curves of every run at a scale's grid optimum
    coord_check: dict | None = None
    coord_check_error: str | None = None
    model: dict | None = None  # the user's model the runs trained (store meta byo_model), None: the built-in one
    generated_at: float = field(default_factory=time.time)

    @property
    def axes(self) -> dict[str, list[int]]:
        """Every axis swept (width first, then depth, then tokens) and its values, from the runs and the plan."""
        out: dict[str, set[int]] = {}
        for table in (self.runs, self.plan):
            for axis, scale in zip(table["axis"], table["scale"]):
                out.setdefault(axis, set()).add(int(scale))
        return {a: sorted(out[a]) for a in sorted(out, key=lambda a: AXES.index(a) if a in AXES else len(AXES))}

    @property
    def widths(self) -> list[int]:
        return self.axes.get("width", [])

    @property
    def finished(self) -> int:
        return self.counts["ok"] + self.counts["diverged"]

    @property
    def complete(self) -> bool:
        return self.counts["planned"] > 0 and self.finished >= self.counts["planned"]

    def ablations(self) -> list[str]:
        """Ablations in registry order (as stored), then any others alphabetically."""
        names = set(self.runs["ablation"]) | set(self.plan["ablation"])
        ordered = [n for n in self.info if n in names]
        return ordered + sorted(names - set(ordered))

    def meta(self) -> dict:
        """The sweep section of results.json."""
        runs = self.runs
        versions: dict[str, list[str]] = {}
        for text in runs["versions"].dropna().unique():
            for package, version in _versions(text).items():
                versions.setdefault(package, [])
                if str(version) not in versions[package]:
                    versions[package].append(str(version))
        wall = runs["wall_s"].astype(float).fillna(0.0)
        span = float((runs["finished_at"] - wall).min()) if len(runs) else None
        return {
            "dir": str(self.dir),
            "suites": list(self.suites),
            "preset": self.preset,
            "model": ({k: self.model.get(k) for k in ("spec", "factory", "sha256", "reinit")}
                      if isinstance(self.model, dict) else None),
            "created_at": _iso(self.created_at),
            "devices": _by_frequency(runs["device"]),
            "versions": versions,
            "git_revs": _by_frequency(runs["git_rev"]),
            "corpus": self.corpus(),
            "widths": self.widths,
            "axes": self.axes,
            "counts": {**self.counts, "finished": self.finished, "complete": self.complete},
            "wall_s": {
                "sum": float(wall.sum()),
                "span": float(runs["finished_at"].max() - span) if span is not None else 0.0,
            },
            "progress": self.progress,
        }

    def corpus(self) -> dict | None:
        specs = list(self.plan["spec"][:1]) or list(self.runs["spec"][:1])
        return json.loads(specs[0])["data"] if specs else None


def _versions(text: str) -> dict:
    """A run's stored package versions (informational: unreadable ones are left out, not fatal)."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _by_frequency(column: pd.Series) -> list[str]:
    return [str(v) for v, _ in Counter(column.dropna()).most_common()]


def _progress(plan: pd.DataFrame, runs: pd.DataFrame) -> list[dict]:
    out = []
    keys = pd.concat([plan[["ablation", "parameterization"]], runs[["ablation", "parameterization"]]])
    for (ablation, param), _ in keys.groupby(["ablation", "parameterization"], sort=False):
        planned = plan[(plan["ablation"] == ablation) & (plan["parameterization"] == param)]
        done = runs[(runs["ablation"] == ablation) & (runs["parameterization"] == param)]
        finished = int(done["status"].isin(["ok", "diverged"]).sum())
        out.append({"ablation": ablation, "parameterization": param, "planned": max(len(planned), finished),
                    "finished": finished, "diverged": int((done["status"] == "diverged").sum()),
                    "failed": int((done["status"] == "failed").sum())})
    return out


def verdict_entry(v: Verdict, info: dict | None, parameterizations_run: set[str], progress: dict | None,
                  seeds: int = 1) -> dict:
    """One element of results.json's "verdicts": the analysis' Verdict plus expectation, agreement and progress.
    Complete once every planned run finished and every one of the sweep's `seeds` is in the verdict (the other seeds'
    runs are planned only once seed 0 has found each width's optimum)."""
    expected, reported, note = expectation(info, v.parameterization, parameterizations_run)
    entry = v.to_json()
    entry.update(
        expected=expected,
        reported=reported,
        expectation_note=note,
        agreement=agreement(v.verdict, expected),
        runs={k: progress[k] for k in ("planned", "finished", "diverged", "failed")} if progress else None,
        complete=bool(progress) and progress["finished"] >= progress["planned"] and v.n_seeds >= seeds,
        diverged_at=diverged_at(v),
    )
    return entry


def diverged_at(v: Verdict) -> list[int]:
    """The scales at which the verdict's seed-mean loss curve diverged: fewer than MIN_FINITE_POINTS finite points
    among two or more learning rates run (the gate fails μP where this covers every scale, or the widest)."""
    return [o.scale for o in v.optima if o.n_lrs >= MIN_FINITE_POINTS and o.n_finite < MIN_FINITE_POINTS]


def _param_key(param: str) -> tuple:
    return (PARAMETERIZATION_ORDER.index(param) if param in PARAMETERIZATION_ORDER else len(PARAMETERIZATION_ORDER),
            param)


def read_coord_check(sweep_dir: Path) -> tuple[dict | None, str | None]:
    """(document, None), (None, None) when the sweep has no coord check, or (None, why it cannot be shown)."""
    path = sweep_dir / COORD_CHECK_FILE
    if not path.exists():
        return None, None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, f"{path} is not readable JSON ({e})"
    if not isinstance(doc, dict) or doc.get("schema") not in COORD_CHECK_SCHEMAS or not isinstance(doc.get("checks"), list):
        return None, f"{path} is not a {COORD_CHECK_SCHEMA} document"
    for i, check in enumerate(doc["checks"]):
        if not isinstance(check, dict) or not isinstance(check.get("records"), list):
            return None, f"{path}: every check needs a list of records"
        problem = _check_problem(check)
        if problem:
            return None, f"{path}: checks[{i}] {problem}"
    return doc, None


def _number(value, none: bool = True) -> bool:
    return (value is None and none) or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _check_problem(check: dict) -> str | None:
    """What is wrong with one check of a coord_check.json (the fields the gate and the report read), or None."""
    for key in ("label", "parameterization"):
        if not isinstance(check.get(key), str):
            return f"needs a string {key!r}"
    if not isinstance(check.get("passed"), bool):
        return "needs 'passed': true or false"
    if check.get("expected", "pass") not in ("pass", "fail"):
        return "'expected' must be pass or fail"
    if not _number(check.get("threshold")):
        return "'threshold' must be a number"
    slopes = check.get("slopes", [])
    if not isinstance(slopes, list) or not all(isinstance(s, dict) for s in slopes):
        return "'slopes' must be a list of objects"
    for j, s in enumerate(slopes):
        if not (_number(s.get("slope")) and _number(s.get("stderr")) and isinstance(s.get("passed", True), bool)
                and isinstance(s.get("step", 0), int) and isinstance(s.get("seeds") or [], list)
                and all(_number(x) for x in s.get("seeds") or [])):
            return f"slopes[{j}]: 'slope', 'stderr' and 'seeds' must be numbers, 'passed' true or false"
    return None


def load(sweep_dir: str | Path, tolerance: float | None = None) -> SweepData:
    """Everything a report shows; `tolerance` (δ) is checked by mupbench.transfer.analyze."""
    sweep_dir = Path(sweep_dir)
    store = Store(sweep_dir)
    try:
        runs, plan, counts = store.runs(), store.planned(), store.counts()
        info = store.get_meta("ablation_info", {}) or {}
        suites = store.get_meta("suites", []) or []
        preset, created_at = store.get_meta("preset"), store.get_meta("created_at")
        model = store.get_meta(BYO_SPEC_KEY)  # the same key as mupbench.byo.STORE_META_KEY
        seeds = int(store.get_meta("seeds", 1) or 1)
        verdicts = analyze(runs, tolerance)
        optimum_runs = _optimum_runs(runs, verdicts)
        curves = store.curves(list(optimum_runs["run_hash"])) if len(optimum_runs) else store.curves([])
    finally:
        store.close()
    curves = curves[curves["split"] == "val"].merge(
        optimum_runs[["run_hash", "ablation", "parameterization", "axis", "scale", "log2_lr", "seed"]], on="run_hash")

    progress = _progress(plan, runs)
    by_group = {(p["ablation"], p["parameterization"]): p for p in progress}
    params_run = {a: set(g["parameterization"]) for a, g in pd.concat([plan, runs]).groupby("ablation")}
    order = {name: i for i, name in enumerate([n for n in info] + sorted(set(runs["ablation"]) - set(info)))}
    verdicts.sort(key=lambda v: (order.get(v.ablation, len(order)), _param_key(v.parameterization)))
    entries = [verdict_entry(v, info.get(v.ablation), params_run.get(v.ablation, set()),
                             by_group.get((v.ablation, v.parameterization)), seeds) for v in verdicts]
    coord_check, coord_error = read_coord_check(sweep_dir)
    return SweepData(sweep_dir, runs, plan, counts, info, suites, preset, created_at, tolerance, verdicts, entries,
                     progress, curves, coord_check, coord_error, model)


def _optimum_runs(runs: pd.DataFrame, verdicts: list[Verdict]) -> pd.DataFrame:
    """The finished runs at each scale's grid argmin (every seed)."""
    keys = [(v.ablation, v.parameterization, v.axis, o.scale, o.argmin_log2_lr)
            for v in verdicts for o in v.optima if o.argmin_log2_lr is not None]
    if not keys:
        return runs.iloc[0:0]
    on = ["ablation", "parameterization", "axis", "scale", "log2_lr"]
    wanted = pd.DataFrame(keys, columns=on)
    finished = runs[runs["status"] == "ok"]
    return finished.merge(wanted, on=on)
