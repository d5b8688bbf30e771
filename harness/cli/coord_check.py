"""`mupbench coord-check`: the coordinate check's options, its tables and its exit status (harness/coord_check measures)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from harness import byo
from harness.cli.args import add_model_arguments, learning_rate, parse_list, positive_int
from harness.coord_check import (
    DEFAULT_LR,
    DEFAULT_STEPS,
    DEFAULT_WIDTHS,
    FILE_NAME,
    THRESHOLD,
    Check,
    Slope,
    describe_failure,
    document,
    growth_only,
    run_check,
    worst_failures,
    write,
)
from harness.errors import UserError
from reports.tables import text_table


def add_parser(sub) -> None:
    p = sub.add_parser("coord-check", help="coordinate check: do activation updates keep their size as width grows?")
    p.add_argument("--parameterization", default="mup", help="mup | sp | both (default mup)")
    p.add_argument("--widths", default=",".join(map(str, DEFAULT_WIDTHS)),
                   help=f"comma-separated widths (default {','.join(map(str, DEFAULT_WIDTHS))})")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"AdamW steps on one batch, 1-10 (default {DEFAULT_STEPS})")
    p.add_argument("--lr", default=None, help="base learning rate, e.g. 2^-5 or 0.03 (default 2^-5: deliberately large)")
    p.add_argument("--threshold", type=float, default=THRESHOLD,
                   help=f"largest allowed |slope| of log2 mean|Δx| per width doubling (default {THRESHOLD})")
    p.add_argument("--base-width", type=int, default=None, help="width whose LR is α (default the smallest width)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the same numbers on every machine, no oversubscription)")
    add_model_arguments(p)
    p.add_argument("--out", default=None, help="directory to write coord_check.json into (e.g. a sweep directory)")
    p.add_argument("--json", action="store_true", help="print the coord_check.json document instead of tables")
    p.set_defaults(func=cmd_coord_check)


def cmd_coord_check(args) -> int:
    params = {"mup": ["mup"], "sp": ["sp"], "both": ["mup", "sp"]}.get(args.parameterization)
    if params is None:
        raise UserError(f"--parameterization {args.parameterization!r} is not one of: mup, sp, both")
    widths = sorted(set(parse_list(args.widths, "--widths", positive_int)))
    if len(widths) < 3:
        raise UserError(f"--widths needs at least three different widths to fit a slope, got {widths}")
    if not 1 <= args.steps <= 10:
        raise UserError(f"--steps must be between 1 and 10, got {args.steps}")
    lr = DEFAULT_LR if args.lr is None else learning_rate(args.lr, "--lr")
    if not (math.isfinite(args.threshold) and args.threshold > 0):
        raise UserError(f"--threshold must be > 0, got {args.threshold}")
    if args.reinit and not args.model:
        raise UserError("--reinit applies only with --model")
    if args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    source = None
    if args.model:
        source = byo.resolve(args.model)
    torch.set_num_threads(args.threads)
    checks = [run_check(p, widths, args.steps, lr, args.threshold, source, args.reinit, args.seed, args.base_width)
              for p in params]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write(out / FILE_NAME, checks)
    if args.json:
        print(json.dumps(document(checks), indent=1, allow_nan=False))
    else:
        print("\n\n".join(report(c) for c in checks))
        if out is not None:
            print(f"\nwrote {out / FILE_NAME}")
    return 0 if all(c.as_expected for c in checks) else 1


def _fmt_slope(s: Slope | None) -> str:
    if s is None or (s.slope is None and s.passed):
        return "–"
    text = "nan" if s.slope is None else f"{s.slope:+.2f}"
    return text if s.passed else text + "!"


def table(check: Check) -> str:
    """One row per module: the slope of log2 mean|Δx| vs log2 width at each step, the worst slope of its own update
    mean|ΔW·x| (weight layers), and whether it passed. '!' marks a slope over the threshold."""
    steps = [s for s in check.steps if s >= 1]
    delta: dict[str, dict[int, Slope]] = {}
    update: dict[str, list[Slope]] = {}
    scale: dict[str, Slope] = {}
    for s in check.slopes:
        if s.quantity == "attention_scale_exponent":
            scale[s.module] = s
        elif s.quantity == "mean_abs_update":
            update.setdefault(s.module, []).append(s)
        else:
            delta.setdefault(s.module, {})[s.step] = s
    out = []
    for module in dict.fromkeys([*delta, *update]):
        by_step, own = delta.get(module, {}), update.get(module, [])
        worst_own = max(own, key=lambda s: math.inf if s.slope is None else s.slope, default=None)
        ok = all(s.passed for s in [*by_step.values(), *own]) and (module not in scale or scale[module].passed)
        notes = (["growth only"] if growth_only(module, "mean_abs_delta") else []) + (
            [f"scale ∝ D^{scale[module].slope:+.2f}" + ("" if scale[module].passed else "!")] if module in scale else [])
        out.append([module + (f" ({', '.join(notes)})" if notes else ""),
                    *[_fmt_slope(by_step.get(t)) for t in steps], _fmt_slope(worst_own), "ok" if ok else "FAIL"])
    return text_table(["module", *[f"Δx step {t}" for t in steps], "ΔW·x max", ""], out)


def report(check: Check) -> str:
    verdict = "PASS" if check.passed else "FAIL"
    note = ""
    if check.expected == "fail":
        note = ("  (expected: SP is the counterexample)" if not check.passed else
                "  ← unexpected: SP should fail; at these widths and LR the check cannot tell μP from SP (raise --lr)")
    lines = [
        f"{check.label}: {verdict}{note}",
        f"  widths {'/'.join(map(str, check.widths))}, {len(check.steps) - 1} AdamW steps at lr {check.lr:g} "
        f"(LRs from {check.lr_source}); slopes are log2 magnitude per width doubling, allowed within "
        f"±{check.threshold:g} (growth-only rows and ΔW·x: ≤ {check.threshold:g}); {check.seconds:.1f}s",
        table(check),
    ]
    problems = [describe_failure(s) for s in worst_failures(check.failures(), per="module")]
    if problems:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        more = len(problems) - len(shown)
        lines.append(f"  {len(problems)} module(s) drift, worst first:")
        lines += [f"    {p}" for p in shown] + ([f"    … and {more} more (the table has them all)"] if more else [])
    return "\n".join(lines)


MAX_PROBLEMS_SHOWN = 8
