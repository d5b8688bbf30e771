"""`mupbench gate`: exit 1 when a change broke μ-transfer — the CI step that guards a training repo's pull requests.

On a finished sweep directory (or one it runs first: `--suite S [--preset P] --out DIR`, through `mupbench run`, so
`--model` works here too) the gate judges one case per (ablation, parameterization) and one per coordinate check:

    finding        when                                                               exit status
    regression     an ablation expected to transfer shifts                            1
                   an ablation that transferred on the baseline shifts now            1
                   an optimum moved more than --optimum-tolerance (log2 LR) from the baseline  1
                   a μP coordinate check in DIR/coord_check.json failed                1
                   runs crashed (status failed): the code under test raised            1
                   a μP configuration diverged at every width (no LR of the grid      1
                   trains it), or at the widest width where the baseline trained (or,
                   expected to transfer, where the smallest width trained)
    improvement    an ablation expected to shift (or shifting on the baseline) transfers   0, 1 with --strict
                   (not SP: SP transferring only says the sweep cannot tell SP from μP, a warning)
    warning        a verdict is inconclusive (noise as large as the effect, optimum   0, 1 with --strict
                   on the grid edge, divergence, missing runs, one seed); the sweep
                   is incomplete; a baseline entry is gone, or a case is not in the
                   baseline; the baseline comes from another preset, suite or model,
                   or holds no verdicts; SP transfers, or an SP coordinate check
                   passed (the sweep or the check could not tell SP from μP)
    note           no registered expectation (e.g. an ablation with reported "unknown") 0

Inconclusive is a warning, not a failure: it says the grid or the budget cannot judge, not that transfer broke —
fix the grid (the message says how); `--strict` makes it fail for teams that want every verdict decided.

`--baseline FILE` compares with a results.json from the main branch (schema mupbench.results/3, /2 or /1; only each
verdict's ablation, parameterization, verdict and optimal_log2_lr are read, which every version has). A /1 baseline's
verdicts came from one seed's spread of optima: it is still compared, and a regression against it says so — regenerate
the baseline (delete it and run the gate once) to compare verdicts made by the same rule. A FILE that does not exist yet is written from this
sweep (the full results.json) and the comparison passes, saying so; the other checks still apply.

This module judges (`evaluate` → GateResult); the command line (harness/cli/gate.py) runs the sweep first if asked,
writes DIR/junit.xml and DIR/summary.md with the report writers and prints a compact table. Usage and input errors
(no sweep directory, malformed baseline or coord_check.json) exit 2 with one line.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from mupbench.coord_check import SCHEMA as COORD_CHECK_SCHEMA
from mupbench.coord_check import Slope, describe_failure, worst_failures
from mupbench.errors import UserError
from mupbench.expectations import expectation

RESULTS_SCHEMA = "mupbench.results/3"
# /1: single-seed verdicts; /2: widths only (/3 adds depth and duration axes); the fields read are the same
ACCEPTED_SCHEMAS = ("mupbench.results/1", "mupbench.results/2", RESULTS_SCHEMA)
DEFAULT_OPTIMUM_TOLERANCE = 1.0


@dataclass
class Finding:
    severity: str  # regression | improvement | warning | note
    text: str


@dataclass
class Case:
    name: str  # "baseline[mup]" or "coord-check[mup]"
    kind: str  # "verdict" | "coord-check"
    expected: str = "–"
    observed: str = "–"
    baseline: str = "–"
    optimum_shift: float | None = None  # largest |Δ optimal log2 LR| vs the baseline
    findings: list[Finding] = field(default_factory=list)

    def add(self, severity: str, text: str) -> None:
        self.findings.append(Finding(severity, text))

    def has(self, severity: str) -> bool:
        return any(f.severity == severity for f in self.findings)

    def fails(self, strict: bool) -> bool:
        return self.has("regression") or (strict and (self.has("improvement") or self.has("warning")))

    def result(self, strict: bool) -> str:
        for severity, label in (("regression", "REGRESSION"), ("improvement", "improvement"), ("warning", "warning")):
            if self.has(severity):
                return label + (" (strict)" if strict and severity != "regression" else "")
        return "note" if self.has("note") else "pass"

    def message(self) -> str:
        return "; ".join(f.text for f in self.findings)

    def to_json(self, strict: bool) -> dict:
        return {"name": self.name, "kind": self.kind, "expected": self.expected, "observed": self.observed,
                "baseline": self.baseline, "optimum_shift": self.optimum_shift, "result": self.result(strict),
                "failed": self.fails(strict), "findings": [{"severity": f.severity, "text": f.text} for f in self.findings]}


# --- the baseline -----------------------------------------------------------------------------------------------------
VERDICTS = ("transfers", "shifts", "inconclusive")


@dataclass
class Baseline:
    """A results.json of the main branch: its verdicts by (ablation, parameterization) and what produced them."""

    path: Path
    schema: str
    entries: dict[tuple[str, str], dict]
    preset: str | None = None
    suites: list[str] = field(default_factory=list)
    model: str | None = None  # the --model spec its runs trained; None: the built-in model (or a document without it)

    def get(self, key: tuple[str, str]) -> dict | None:
        return self.entries.get(key)


def read_baseline(path: Path) -> Baseline:
    """The Baseline in a results.json; UserError when it is malformed."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--baseline {path} cannot be read ({e})") from None
    except ValueError as e:
        raise UserError(f"--baseline {path} is not valid JSON ({e}): pass a results.json from `mupbench report`") from None
    if not isinstance(doc, dict) or doc.get("schema") not in ACCEPTED_SCHEMAS:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise UserError(f"--baseline {path} is not a mupbench.results/1, /2 or /3 document (schema {found!r}): "
                        "pass a results.json from `mupbench report`, or a path that does not exist yet to write one")
    verdicts = doc.get("verdicts")
    if not isinstance(verdicts, list):
        raise UserError(f"--baseline {path}: 'verdicts' must be a list")
    out = {}
    for i, v in enumerate(verdicts):
        if not isinstance(v, dict) or not all(isinstance(v.get(k), str) for k in ("ablation", "parameterization", "verdict")):
            raise UserError(f"--baseline {path}: verdicts[{i}] needs string 'ablation', 'parameterization' and 'verdict'")
        if v["verdict"] not in VERDICTS:
            raise UserError(f"--baseline {path}: verdicts[{i}].verdict {v['verdict']!r} is not one of: "
                            f"{', '.join(VERDICTS)}")
        optima = v.get("optimal_log2_lr") or {}
        if not isinstance(optima, dict) or not all(x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))
                                                   for x in optima.values()):
            raise UserError(f"--baseline {path}: verdicts[{i}].optimal_log2_lr must map widths to numbers or null")
        key = (v["ablation"], v["parameterization"])
        if key in out:
            raise UserError(f"--baseline {path}: verdicts[{i}] repeats {key[0]}[{key[1]}]")
        out[key] = {"verdict": v["verdict"], "optimal_log2_lr": optima, "schema": doc["schema"]}
    sweep = doc.get("sweep") if isinstance(doc.get("sweep"), dict) else {}
    model = sweep.get("model")
    return Baseline(path, doc["schema"], out, sweep.get("preset") if isinstance(sweep.get("preset"), str) else None,
                    [x for x in sweep.get("suites") or [] if isinstance(x, str)],
                    model.get("spec") if isinstance(model, dict) and isinstance(model.get("spec"), str) else None)


def baseline_case(sweep, baseline: Baseline) -> Case | None:
    """A warning case when the baseline was made by another preset, suite or model than this sweep, or holds no
    verdicts: its comparisons may mean nothing (regenerate it on the main branch)."""
    case = Case("baseline", "baseline")
    if not baseline.entries:
        case.add("warning", f"{baseline.path} holds no verdicts: nothing is compared with it")
    if baseline.preset is not None and sweep.preset is not None and baseline.preset != sweep.preset:
        case.add("warning", f"{baseline.path} comes from preset {baseline.preset}, this sweep is {sweep.preset}: "
                            "optima and verdicts at other widths and steps do not compare")
    if baseline.suites and sweep.suites and not set(sweep.suites) <= set(baseline.suites):
        case.add("warning", f"{baseline.path} comes from suite(s) {', '.join(baseline.suites)}, this sweep ran "
                            f"{', '.join(sweep.suites)}")
    model = (sweep.model or {}).get("spec") if isinstance(sweep.model, dict) else None
    if baseline.schema == RESULTS_SCHEMA and baseline.model != model:
        case.add("warning", f"{baseline.path} judged {baseline.model or 'the built-in model'}, this sweep "
                            f"{model or 'the built-in model'}")
    return case if case.findings else None


# --- judging ------------------------------------------------------------------------------------------------------------
SP_TRANSFERS = ("SP transfers here: at these {axis}s and this LR grid the sweep cannot tell SP from μP, so μP's "
                "transfer shows little (widen the {axis}s, or train longer)")


def judge_verdict(entry: dict, base: dict | None, optimum_tolerance: float) -> Case:
    """One case for a results.json verdict entry (reports.sweep.verdict_entry), against its baseline entry if any."""
    case = Case(f"{entry['ablation']}[{entry['parameterization']}]", "verdict",
                expected=entry.get("expected", "unknown"), observed=entry["verdict"])
    expected, observed, reason = case.expected, case.observed, entry.get("reason", "")
    runs = entry.get("runs") or {}
    complete = entry.get("complete", True)
    axis = entry.get("axis", "width")
    sp = entry["parameterization"] == "sp"  # the counterexample: its transferring is no improvement, only a blunt test
    if runs.get("failed"):
        case.add("regression", f"{runs['failed']} run(s) crashed (status failed): `mupbench status` and the store's "
                               "error column say why")
    if not complete:
        finished, planned = runs.get("finished", 0), runs.get("planned", 0)
        if finished < planned:
            case.add("warning", f"sweep incomplete: {finished}/{planned} runs finished; so far {observed}")
        else:
            case.add("warning", f"sweep incomplete: the {planned} runs planned so far finished, but the verdict has "
                                f"{entry.get('n_seeds', '?')} seed(s) of the sweep's: run the same command again to "
                                f"train the other seeds; so far {observed}")
    if not sp:
        _judge_divergence(case, entry, base)
    if observed == "inconclusive":
        case.add("warning", f"inconclusive: {reason}")
    elif expected == "transfers" and observed == "shifts":
        case.add("regression", f"expected to transfer, shifts: {reason}")
    elif expected == "shifts" and observed == "transfers":
        if sp:
            case.add("warning", SP_TRANSFERS.format(axis=axis))
        else:
            case.add("improvement", f"expected to shift, transfers now: {reason} (update the expectation if this is meant)")
    elif expected not in ("transfers", "shifts"):
        case.add("note", f"no registered expectation; observed {observed}")
    if base is None:
        return case
    case.baseline = base["verdict"]
    if complete and observed in ("transfers", "shifts") and base["verdict"] != observed:
        if base["verdict"] == "transfers":
            old = base.get("schema") == "mupbench.results/1"
            case.add("regression", "transferred on the baseline, shifts now" + (
                f" (the baseline is a {base['schema']} document, judged on one seed: regenerate it)" if old else ""))
        elif base["verdict"] == "shifts" and not sp:
            case.add("improvement", "shifted on the baseline, transfers now")
        elif base["verdict"] == "shifts" and expected != "shifts":  # else said above
            case.add("warning", SP_TRANSFERS.format(axis=axis))
    elif complete and base["verdict"] == "transfers" and observed == "inconclusive":
        case.add("warning", "transferred on the baseline, inconclusive now")
    now = entry.get("optimal_log2_lr") or {}
    moved = []
    for width, before in sorted(base["optimal_log2_lr"].items(), key=lambda kv: _width_key(kv[0])):
        after = now.get(str(width))
        if before is None or after is None or not (math.isfinite(before) and math.isfinite(after)):
            continue
        shift = after - before
        if case.optimum_shift is None or abs(shift) > abs(case.optimum_shift):
            case.optimum_shift = shift
        if complete and abs(shift) > optimum_tolerance + 1e-9:
            moved.append(f"{entry.get('axis', 'width')} {width}: 2^{before:.2f} → 2^{after:.2f} ({shift:+.2f})")
    if moved:
        case.add("regression", f"optimum moved more than {optimum_tolerance:g} log2 LR from the baseline: "
                               + ", ".join(moved))
    return case


def _judge_divergence(case: Case, entry: dict, base: dict | None) -> None:
    """Divergence is evidence: a μP configuration that trains at no LR of the grid at every scale, or at the widest
    scale where the baseline found an optimum (or, expected to transfer, where its smallest scale trained), is broken
    — not inconclusive."""
    scales = [int(s) for s in entry.get("scales") or []]
    diverged = {int(s) for s in entry.get("diverged_at") or []}
    if not scales or not diverged:
        return
    axis, widest = entry.get("axis", "width"), scales[-1]
    if set(scales) <= diverged:
        case.add("regression", f"diverged at every {axis} ({', '.join(map(str, scales))}): no learning rate of the "
                               "grid trains this configuration")
        return
    if widest not in diverged:
        return
    trained_on_base = base is not None and (base["optimal_log2_lr"].get(str(widest)) is not None)
    if trained_on_base:
        case.add("regression", f"diverged at the widest {axis} {widest}, where the baseline trained (optimum "
                               f"2^{base['optimal_log2_lr'][str(widest)]:.2f})")
    elif case.expected == "transfers" and scales[0] not in diverged:
        case.add("regression", f"expected to transfer, but {axis} {widest} diverged at the learning rates where "
                               f"{axis} {scales[0]} trained")


def _width_key(w) -> tuple:
    try:
        return (0, int(w))
    except (TypeError, ValueError):
        return (1, str(w))


def judge_coord_check(check: dict) -> Case:
    param = check.get("parameterization", "?")
    expected = check.get("expected") or ("fail" if param == "sp" else "pass")
    passed = bool(check.get("passed"))
    axis = check.get("axis", "width")
    name = f"coord-check[{param}]" if axis == "width" else f"depth-coord-check[{check.get('depth_parameterization')}]"
    case = Case(name, "coord-check", expected=expected, observed="pass" if passed else "fail")
    failing = [Slope(s.get("module", "?"), s.get("step", 0), s.get("quantity", ""), s.get("slope"), False,
                     s.get("bound", "both"), s.get("stderr"), s.get("seeds") or [])
               for s in check.get("slopes", []) if isinstance(s, dict) and not s.get("passed", True)]
    described = [describe_failure(s, axis) for s in worst_failures(failing, per="module")]
    threshold = check.get("threshold")
    label = check.get("label", param)
    if expected == "pass" and not passed:
        more = f" and {len(described) - 4} more" if len(described) > 4 else ""
        case.add("regression", f"{label}: {len(described)} module(s) drift (threshold {threshold}), worst first: "
                               + "; ".join(described[:4]) + more)
    elif expected == "fail" and passed:
        cannot = ("at these widths and LR the check cannot tell SP from μP (raise --lr)" if axis == "width" else
                  "at these depths and LR the check cannot tell this depth rule from CompleteP")
        case.add("warning", f"{label} passed: {cannot}")
    elif expected == "fail":
        case.add("note", f"{label} fails as expected ({len(described)} module(s) drift)")
    return case


@dataclass
class GateResult:
    cases: list[Case]
    strict: bool
    baseline_note: str | None = None

    @property
    def failed(self) -> list[Case]:
        return [c for c in self.cases if c.fails(self.strict)]

    @property
    def passed(self) -> bool:
        return not self.failed

    def count(self, severity: str) -> int:
        return sum(c.has(severity) for c in self.cases)

    def headline(self) -> str:
        counts = ", ".join(f"{self.count(s)} {s}{'s' if self.count(s) != 1 else ''}"
                           for s in ("regression", "improvement", "warning"))
        return f"gate: {'PASS' if self.passed else 'FAIL'} ({counts}{', strict' if self.strict else ''})"

    def to_json(self) -> dict:
        return {"schema": "mupbench.gate/1", "passed": self.passed, "strict": self.strict,
                "baseline_note": self.baseline_note, "cases": [c.to_json(self.strict) for c in self.cases]}


def evaluate(sweep, baseline: Baseline | None, strict: bool = False,
             optimum_tolerance: float = DEFAULT_OPTIMUM_TOLERANCE) -> GateResult:
    """Judge a loaded sweep (reports.sweep.SweepData) against its expectations, its coord check and a baseline."""
    cases = [] if baseline is None else [c for c in [baseline_case(sweep, baseline)] if c is not None]
    if sweep.coord_check_error:
        raise UserError(f"{sweep.coord_check_error}: re-run `mupbench coord-check --out {sweep.dir}` or remove it")
    if sweep.coord_check and sweep.coord_check.get("schema") != COORD_CHECK_SCHEMA:
        raise UserError(f"{sweep.dir}/coord_check.json comes from an older coordinate check "
                        f"({sweep.coord_check.get('schema')}, one seed, growth-only update bounds): re-run "
                        f"`mupbench coord-check --out {sweep.dir}`")
    for check in (sweep.coord_check or {}).get("checks", []):
        cases.append(judge_coord_check(check))
    seen = set()
    for entry in sweep.entries:
        key = (entry["ablation"], entry["parameterization"])
        seen.add(key)
        base = baseline.get(key) if baseline is not None else None
        case = judge_verdict(entry, base, optimum_tolerance)
        if baseline is not None and base is None:
            case.add("warning", f"not in the baseline {baseline.path}: nothing to compare with")
        cases.append(case)
    for p in sweep.progress:  # planned groups with no finished run have no verdict: the gate must still see them
        key = (p["ablation"], p["parameterization"])
        if key in seen:
            continue
        seen.add(key)
        run_under = {q["parameterization"] for q in sweep.progress if q["ablation"] == key[0]}
        expected, _, _ = expectation(sweep.info.get(key[0]), key[1], run_under)
        case = Case(f"{key[0]}[{key[1]}]", "verdict", expected=expected, observed="no runs")
        if p["failed"]:
            case.add("regression", f"{p['failed']} run(s) crashed (status failed) and none finished")
        else:
            case.add("warning", f"no finished runs yet (0/{p['planned']})")
        cases.append(case)
    for key in sorted(set(baseline.entries if baseline is not None else {}) - seen):
        case = Case(f"{key[0]}[{key[1]}]", "verdict", baseline=baseline.entries[key]["verdict"], observed="absent")
        case.add("warning", "in the baseline but not in this sweep")
        cases.append(case)
    if all(c.kind == "baseline" for c in cases):
        raise UserError(f"{sweep.dir} has no runs and no coordinate check to judge: run a sweep into it first")
    return GateResult(cases, strict)
