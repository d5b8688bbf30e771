"""`mupbench coord-check`: the coordinate check's options, its tables and its exit status (harness/coord_check measures)."""
from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path

import torch

from mupbench import byo
from mupbench.cli.args import add_model_arguments, learning_rate, parse_list, positive_int
from mupbench.coord_check import (
    BATCH_SIZE,
    DEFAULT_LR,
    DEFAULT_SEEDS,
    DEFAULT_STEPS,
    DEFAULT_WIDTHS,
    FILE_NAME,
    SEQ_LEN,
    THRESHOLD,
    Check,
    Slope,
    describe_failure,
    document,
    run_check,
    worst_failures,
    write,
)
from mupbench.coord_check.depth import DEFAULT_DEPTHS, run_depth_check
from mupbench.coord_check.depth import DEFAULT_WIDTH as DEFAULT_DEPTH_WIDTH
from mupbench.errors import UserError
from mupbench.parameterization import DEPTH_PARAMETERIZATIONS
from mupbench.reports.tables import text_table

DEPTH_RULES = tuple(DEPTH_PARAMETERIZATIONS)


def add_parser(sub) -> None:
    p = sub.add_parser("coord-check", help="coordinate check: do activation updates keep their size as width grows?")
    p.add_argument("--parameterization", default="mup", help="mup | sp | both (default mup)")
    p.add_argument("--widths", default=",".join(map(str, DEFAULT_WIDTHS)),
                   help=f"comma-separated widths (default {','.join(map(str, DEFAULT_WIDTHS))})")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"AdamW steps on one batch, 1-10 (default {DEFAULT_STEPS})")
    p.add_argument("--lr", default=None, help="base learning rate, e.g. 2^-7 or 0.01 (default 2^-7)")
    p.add_argument("--threshold", type=float, default=THRESHOLD,
                   help=f"largest allowed |slope| (log2 magnitude per width doubling, mean over seeds; default {THRESHOLD})")
    p.add_argument("--base-width", type=int, default=None, help="width whose LR is α (default the smallest width)")
    p.add_argument("--seeds", "--seed", default=",".join(map(str, DEFAULT_SEEDS)),
                   help=f"comma-separated seeds, each a replica of init and batch (default {','.join(map(str, DEFAULT_SEEDS))})")
    p.add_argument("--seq-len", type=int, default=SEQ_LEN,
                   help=f"tokens per sequence of the fixed batch (default {SEQ_LEN}; at most your model's block size)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                   help=f"sequences in the fixed batch (default {BATCH_SIZE}: few tokens keep updates coherent)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the same numbers on every machine, no oversubscription)")
    add_model_arguments(p)
    p.add_argument("--depth-rule", default=None, metavar="RULE",
                   help="check depth instead of width: the built-in model at --depths under this depth_parameterization "
                        f"({' | '.join(DEPTH_RULES)} | all); expected: completep passes, the others fail")
    p.add_argument("--depths", default=",".join(map(str, DEFAULT_DEPTHS)),
                   help=f"with --depth-rule: comma-separated depths (default {','.join(map(str, DEFAULT_DEPTHS))})")
    p.add_argument("--width", type=int, default=DEFAULT_DEPTH_WIDTH,
                   help=f"with --depth-rule: the fixed width (default {DEFAULT_DEPTH_WIDTH})")
    p.add_argument("--out", default=None, help="directory to write coord_check.json into (e.g. a sweep directory)")
    p.add_argument("--json", action="store_true", help="print the coord_check.json document instead of tables")
    p.set_defaults(func=cmd_coord_check)


def cmd_coord_check(args) -> int:
    params = {"mup": ["mup"], "sp": ["sp"], "both": ["mup", "sp"]}.get(args.parameterization)
    if params is None:
        raise UserError(f"--parameterization {args.parameterization!r} is not one of: mup, sp, both")
    rules = None
    if args.depth_rule is not None:
        rules = list(DEPTH_RULES) if args.depth_rule == "all" else [args.depth_rule]
        if not set(rules) <= set(DEPTH_RULES):
            raise UserError(f"--depth-rule {args.depth_rule!r} is not one of: {', '.join(DEPTH_RULES)}, all")
        if args.model:
            raise UserError("--depth-rule checks the built-in model; --model is checked in width only")
        if args.width < 1 or args.width % 16:
            raise UserError(f"--width must be a positive multiple of the head dim 16, got {args.width}")
    scale_option = "--depths" if rules else "--widths"
    scales = sorted(set(parse_list(args.depths if rules else args.widths, scale_option, positive_int)))
    if len(scales) < 3:
        raise UserError(f"{scale_option} needs at least three different {scale_option[2:]} to fit a slope, got {scales}")
    if not 1 <= args.steps <= 10:
        raise UserError(f"--steps must be between 1 and 10, got {args.steps}")
    lr = DEFAULT_LR if args.lr is None else learning_rate(args.lr, "--lr")
    if not (math.isfinite(args.threshold) and args.threshold > 0):
        raise UserError(f"--threshold must be > 0, got {args.threshold}")
    if args.reinit and not args.model:
        raise UserError("--reinit applies only with --model")
    if args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    seeds = list(dict.fromkeys(parse_list(args.seeds, "--seeds", _seed)))
    for option, value in (("--seq-len", args.seq_len), ("--batch-size", args.batch_size)):
        if value < 1:
            raise UserError(f"{option} must be at least 1, got {value}")
    if args.base_width is not None and args.base_width < 1:
        raise UserError(f"--base-width must be a positive integer, got {args.base_width}")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    if out is not None:
        from mupbench.directory import check_writable

        check_writable(out, "--out")  # before the work, not after it
    torch.set_num_threads(args.threads)
    # with --json, stdout carries only the document: whatever the model's code prints goes to stderr
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        source = byo.resolve(args.model) if args.model else None
        if source is not None:  # a broken model or hook: one line now, not an exception halfway through the check
            byo.validate(byo.load_factory(source), scales, args.base_width or min(scales), params, args.reinit,
                         source.label, lr)
        if rules:
            checks = [run_depth_check(r, scales, args.width, args.steps, lr, args.threshold, seeds, p)
                      for p in params for r in rules]
        else:
            checks = [run_check(p, scales, args.steps, lr, args.threshold, source, args.reinit, seeds, args.base_width,
                                args.batch_size, args.seq_len) for p in params]
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


def _seed(text: str, option: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if seed < 0:
        raise UserError(f"{option}: {text!r} is not an integer seed (>= 0)")
    return seed


def _fmt_slope(s: Slope | None) -> str:
    if s is None or (s.slope is None and s.passed):
        return "–"
    text = ("frozen" if s.bound == "frozen" else "nan") if s.slope is None else f"{s.slope:+.2f}"
    return text if s.passed else text + "!"


EXACT = ("attention_scale_exponent", "decay_exponent")


def table(check: Check) -> str:
    """One row per module: the slope (mean over seeds) of log2 mean|x| at init and of log2 mean|Δx| at each step
    against log2 width, the worst slope of its own update mean|ΔW·x| (weight layers), and whether it passed. '!' marks
    a slope out of bounds."""
    steps = [s for s in check.steps if s >= 1]
    init: dict[str, Slope] = {}
    delta: dict[str, dict[int, Slope]] = {}
    update: dict[str, list[Slope]] = {}
    exact: dict[str, list[Slope]] = {}
    for s in check.slopes:
        if s.quantity in EXACT:
            exact.setdefault(s.module, []).append(s)
        elif s.quantity == "mean_abs_update":
            update.setdefault(s.module, []).append(s)
        elif s.quantity == "mean_abs":
            init[s.module] = s
        else:
            delta.setdefault(s.module, {})[s.step] = s
    out = []
    for module in dict.fromkeys([*init, *delta, *update, *exact]):
        by_step, own, read = delta.get(module, {}), update.get(module, []), exact.get(module, [])
        worst_own = max(own, key=lambda s: math.inf if s.slope is None else abs(s.slope), default=None)
        ok = all(s.passed for s in [*by_step.values(), *own, *read]) and (module not in init or init[module].passed)
        notes = (["growth only"] if any(s.bound == "growth" for s in by_step.values()) else []) + [
            ("scale ∝ D^" if s.quantity == "attention_scale_exponent" else "lr·λ ∝ width^") + f"{s.slope:+.2f}"
            + ("" if s.passed else "!") for s in read]
        out.append([module + (f" ({', '.join(notes)})" if notes else ""), _fmt_slope(init.get(module)),
                    *[_fmt_slope(by_step.get(t)) for t in steps], _fmt_slope(worst_own), "ok" if ok else "FAIL"])
    return text_table(["module", "init", *[f"Δx step {t}" for t in steps], "ΔW·x worst", ""], out)


def report(check: Check) -> str:
    verdict = "PASS" if check.passed else "FAIL"
    note = ""
    if check.expected == "fail":
        if check.axis == "depth":
            note = ("  (expected: this depth rule is not CompleteP)" if not check.passed else
                    "  ← unexpected: only CompleteP should pass the depth check")
        else:
            note = ("  (expected: SP is the counterexample)" if not check.passed else
                    "  ← unexpected: SP should fail; at these widths and LR the check cannot tell μP from SP (raise --lr)")
    lines = [
        f"{check.label}: {verdict}{note}",
        f"  {check.axis}s {'/'.join(map(str, check.widths))}, {len(check.steps) - 1} AdamW steps at lr {check.lr:g} on "
        f"{check.batch[0]}×{check.batch[1]} tokens, seeds {','.join(map(str, check.seeds))} (LRs from "
        f"{check.lr_source}); slopes are log2 magnitude per {check.axis} doubling (mean over seeds), allowed within "
        f"±{check.threshold:g}" + ("" if check.axis == "depth" else
                                   f" (growth-only rows, outputs whose size is fixed: ≤ {check.threshold:g})")
        + f"; {check.seconds:.1f}s",
        table(check),
    ]
    problems = [describe_failure(s, check.axis) for s in worst_failures(check.failures(), per="module")]
    if problems:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        more = len(problems) - len(shown)
        lines.append(f"  {len(problems)} module(s) drift, worst first:")
        lines += [f"    {p}" for p in shown] + ([f"    … and {more} more (the table has them all)"] if more else [])
    return "\n".join(lines)


MAX_PROBLEMS_SHOWN = 8
