"""`mupbench gate`: run the sweep first if asked, judge it (harness/gate.py), write junit.xml and summary.md, print the
findings, and exit 1 on a regression."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from mupbench.cli import run
from mupbench.cli.run import add_log_arguments, tracking_for
from mupbench.cli.args import Parser, add_model_arguments, add_trainer_arguments, tolerance
from mupbench.errors import UserError
from mupbench.gate import DEFAULT_OPTIMUM_TOLERANCE, GateResult, evaluate, read_baseline
from mupbench.transfer import DEFAULT_TOLERANCE
from mupbench.reports import junit
from mupbench.reports import sweep as sweep_data
from mupbench.reports.results import results_document, write_results
from mupbench.reports.summary import summary_markdown, write_summary
from mupbench.reports.tables import markdown_code, markdown_text, text_table


def write_baseline(path: Path, sweep) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_results(path, results_document(sweep))


HEADERS = ["check", "expected", "observed", "baseline", "Δopt", "result"]


def _rows(result: GateResult) -> list[list]:
    return [[c.name, c.expected, c.observed, c.baseline,
             f"{c.optimum_shift:+.2f}" if c.optimum_shift is not None else "–", c.result(result.strict)]
            for c in result.cases]


def junit_cases(result: GateResult) -> list:
    out = []
    for c in result.cases:
        case = junit.Case(name=c.name, classname=f"mupbench.gate.{c.kind}")
        if c.fails(result.strict):
            case.failure = c.message()
        elif c.has("warning") or c.has("note"):
            case.skipped = c.message()
        out.append(case)
    return out


def summary(result: GateResult, sweep_dir: Path, baseline_path: Path | None) -> str:
    intro = [f"**{markdown_text(result.headline())}** · sweep {markdown_code(sweep_dir)}"
             + (f" · baseline {markdown_code(baseline_path)}" if baseline_path else " · no baseline")]
    if result.baseline_note:
        intro.append(markdown_text(result.baseline_note))
    notes = [f"{markdown_code(c.name)} {f.severity}: {markdown_text(f.text)}"
             for c in result.cases for f in c.findings if f.severity != "note"]
    notes.append("Δopt: the largest move of a width's optimal log2 LR from the baseline")
    return summary_markdown("mupbench gate", HEADERS, _rows(result), intro, notes)


def add_parser(sub) -> None:
    p = sub.add_parser("gate", help="exit 1 when transfer regressed: verdicts vs expectations, a baseline, the coord check")
    p.add_argument("dir", nargs="?", default=None, help="a sweep directory (or give --suite and --out to run one first)")
    p.add_argument("--baseline", default=None, metavar="RESULTS_JSON",
                   help="results.json of the main branch to compare with; written from this sweep if it does not exist")
    p.add_argument("--strict", action="store_true", help="improvements and warnings (inconclusive, incomplete) fail too")
    p.add_argument("--tolerance", type=tolerance, default=None,
                   help="δ: the drift of the optimum, log2 LR per width doubling, that still counts as transferring "
                        f"(default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--optimum-tolerance", type=tolerance, default=DEFAULT_OPTIMUM_TOLERANCE,
                   help=f"how far an optimum may move from the baseline, log2 LR (default {DEFAULT_OPTIMUM_TOLERANCE:g})")
    p.add_argument("--junit", default=None, help="JUnit XML path (default DIR/junit.xml)")
    p.add_argument("--summary", default=None, help="markdown summary path (default DIR/summary.md)")
    p.add_argument("--json", action="store_true", help="print the gate's findings as JSON")
    add_log_arguments(p)  # with --suite, `run` logs the sweep; without, the gate logs the sweep it judges
    run = p.add_argument_group("running the sweep first (through `mupbench run`)")
    run.add_argument("--suite", default=None, help="run this suite into --out (or DIR) before judging")
    run.add_argument("--preset", default=None)
    run.add_argument("--out", default=None)
    run.add_argument("--ablation", default=None)
    run.add_argument("--ablations", action="append", default=[], metavar="PATH_OR_MODULE")
    run.add_argument("--device", default=None)
    run.add_argument("--workers", default=None)
    run.add_argument("--executor", default=None, help="local | ray (see `mupbench run --help`)")
    run.add_argument("--ray-address", default=None, metavar="ADDR")
    run.add_argument("--seeds", default=None)
    run.add_argument("--widths", default=None)
    run.add_argument("--depths", default=None)
    run.add_argument("--durations", default=None)
    run.add_argument("--lrs", default=None)
    run.add_argument("--steps", default=None)
    run.add_argument("--data", default=None)
    run.add_argument("--retry-failed", action="store_true", help="train the sweep's stored failed runs again")
    run.add_argument("--quiet", action="store_true")
    add_model_arguments(run)
    add_trainer_arguments(run)
    p.set_defaults(func=cmd_gate)


def _run_first(args, out: Path) -> int:
    """`mupbench run` with the gate's run options, parsed by run's own parser so both accept the same values."""
    argv = ["run", "--suite", args.suite, "--out", str(out)]
    for option in ("preset", "ablation", "device", "workers", "executor", "ray_address", "seeds", "widths", "depths",
                   "durations", "lrs", "steps", "data", "model", "tolerance", "trainer", "trainer_command", "run_timeout"):
        value = getattr(args, option)
        if value is not None:
            argv += [f"--{option.replace('_', '-')}", str(value)]
    for target in args.ablations:
        argv += ["--ablations", target]
    argv += ["--reinit"] if args.reinit else []
    argv += ["--trainer-shell"] if args.trainer_shell else []
    argv += ["--retry-failed"] if args.retry_failed else []
    argv += ["--quiet"] if args.quiet else []
    for tracker in args.log:
        argv += ["--log", tracker]
    argv += ["--log-required"] if args.log_required else []
    parser = Parser(prog="mupbench")
    run.add_parser(parser.add_subparsers(parser_class=Parser))
    run_args = parser.parse_args(argv)
    return run_args.func(run_args)


def cmd_gate(args) -> int:
    if args.dir and args.out and Path(args.dir) != Path(args.out):
        raise UserError("give the sweep directory once: as DIR or as --out")
    target = args.dir or args.out
    if target is None:
        raise UserError("which sweep? give a sweep directory, or --suite S --out DIR to run one first")
    sweep_dir = Path(target)
    run_only = ("ablation", "preset", "model", "device", "workers", "executor", "ray_address", "seeds", "widths", "depths",
                "durations", "lrs", "steps", "data", "trainer", "trainer_command", "run_timeout")
    if args.suite is None:
        given = [o for o in run_only if getattr(args, o) is not None] + (["ablations"] if args.ablations else [])
        flags = [f for f in ("reinit", "retry_failed", "trainer_shell") if getattr(args, f)]
        if given or flags:
            option = (given or flags)[0].replace("_", "-")
            raise UserError(f"--{option} applies only with --suite (running a sweep first)")
        if not (sweep_dir / "mupbench.sqlite").exists():
            raise UserError(f"{sweep_dir} is not a mupbench sweep directory: run `mupbench run --out {sweep_dir}` "
                            "first, or give --suite to run one")
    if not (math.isfinite(args.optimum_tolerance) and args.optimum_tolerance >= 0):
        raise UserError(f"--optimum-tolerance must be a number >= 0, got {args.optimum_tolerance}")
    baseline_path = Path(args.baseline) if args.baseline else None
    if baseline_path is not None and baseline_path.is_dir():
        raise UserError(f"--baseline {baseline_path} is a directory: pass a results.json path")
    baseline = read_baseline(baseline_path) if baseline_path is not None and baseline_path.exists() else None

    logs = tracking_for(args, sweep_dir)  # --log checked before any work
    if args.suite is not None:
        status = _run_first(args, sweep_dir)
        if status != 0:
            return status
    sweep = sweep_data.load(sweep_dir, args.tolerance)
    result = evaluate(sweep, baseline, args.strict, args.optimum_tolerance)
    if baseline_path is not None and baseline is None:
        write_baseline(baseline_path, sweep)
        result.baseline_note = (f"baseline {baseline_path} did not exist: wrote this sweep's results there; "
                                "nothing to compare with this time")

    junit_path = Path(args.junit) if args.junit else sweep_dir / "junit.xml"
    summary_path = Path(args.summary) if args.summary else sweep_dir / "summary.md"
    junit.write_junit(junit_path, junit_cases(result), suite_name="mupbench gate")
    write_summary(summary_path, summary(result, sweep_dir, baseline_path))
    if logs and args.suite is None:  # with --suite, the run logged its runs, verdicts and report
        from mupbench.reports.build import output_paths

        with logs:
            logs.finish([*output_paths(sweep_dir).values(), junit_path, summary_path], args.tolerance)
    if args.json:
        print(json.dumps(result.to_json(), indent=1, allow_nan=False))
    else:
        print(text_table(HEADERS, _rows(result)))
        for c in result.cases:
            for f in c.findings:
                if f.severity != "note" or not args.quiet:
                    print(f"  {c.name} {f.severity}: {f.text}")
        if result.baseline_note:
            print(result.baseline_note)
        print(result.headline())
        print(f"wrote {junit_path} and {summary_path}", file=sys.stderr)
    return 0 if result.passed else 1

