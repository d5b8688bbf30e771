"""The `mupbench` command line: run, status, analyze, explain, list, report, coord-check, gate, bench.

Every user mistake ends as one line `mupbench: error: …` and exit status 2; nothing is written before input is valid.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from harness.errors import UserError
from harness.tables import text_table
from reports import cli as report_cli


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's default prints the whole usage first)
        raise UserError(f"{message} (see `{self.prog} --help`)")


DEFAULT_GRID_EXTENSION = 2  # grid points `run` may add beyond an edge optimum, per side

# --- run --------------------------------------------------------------------------------------------------------
def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run a sweep (default: the CPU smoke suite) and print the verdicts")
    p.add_argument("--suite", default="smoke", help="smoke | lingle | pr (default smoke)")
    p.add_argument("--preset", default=None, help="cpu-tiny | gpu-small | paper (default: the suite's)")
    p.add_argument("--ablation", default=None, help="comma-separated ablation names: run only these of the suite")
    p.add_argument("--ablations", action="append", default=[], metavar="PATH_OR_MODULE",
                   help="a Python file or module registering more ablations with @ablation (repeatable)")
    p.add_argument("--out", default=None, help="sweep directory (default runs/<suite>-<preset>)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: one per GPU, or per CPU core)")
    p.add_argument("--seeds", type=int, default=1, help="initialisation seeds per point (default 1)")
    p.add_argument("--widths", default=None, help="comma-separated widths, replacing the preset's (e.g. 32,64,128)")
    p.add_argument("--lrs", default=None,
                   help="comma-separated base learning rates, replacing the preset's grid (e.g. 2^-8,2^-7 or 0.004)")
    p.add_argument("--data", default=None, help="text file, directory, or token file (.bin/.npy); default: stdlib sources")
    p.add_argument("--vocab-size", type=int, default=None, help="vocab size of a token file (default: max id + 1)")
    p.add_argument("--data-dtype", default="uint16", help="dtype of a .bin token file: uint16 | uint32")
    p.add_argument("--tolerance", type=float, default=None, help="allowed spread of optima in log2 LR (default one grid step)")
    p.add_argument("--extend-grid", type=int, default=None, metavar="N",
                   help="where a width's optimum sits on the edge of the LR grid, add up to N more grid points beyond "
                        "it, one at a time (default 2 on a preset's grid, 0 with --lrs; 0 keeps the grid fixed)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_run)


def select_entries(args):
    """The (ablation, parameterizations) entries and the preset a `run`-style command asks for."""
    import ablations
    from ablations.loader import load_user_ablations

    load_user_ablations(args.ablations)
    suite = ablations.get_suite(args.suite)
    preset = ablations.get_preset(args.preset or suite.preset)
    if getattr(args, "widths", None):
        preset = dataclasses.replace(preset, widths=tuple(_parse_list(args.widths, "--widths", _positive_int)))
    if getattr(args, "lrs", None):
        log2s = [math.log2(lr) for lr in _parse_list(args.lrs, "--lrs", _learning_rate)]
        preset = dataclasses.replace(preset, log2_lrs=tuple(sorted(log2s)))
    entries = suite.resolve()
    if args.ablation:
        names = dict.fromkeys(n.strip() for n in args.ablation.split(",") if n.strip())
        in_suite = {a.name: params for a, params in entries}
        entries = [(ablations.get(n), in_suite.get(n, ("mup",))) for n in names]
    return suite, preset, entries


def _parse_list(text: str, option: str, parse) -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UserError(f"{option} is empty: give comma-separated values")
    return [parse(t, option) for t in items]


def _positive_int(text: str, option: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{option}: {text!r} is not a positive integer")
    return value


def _learning_rate(text: str, option: str) -> float:
    try:
        value = 2.0 ** float(text[2:]) if text.startswith("2^") else float(text)
    except ValueError:
        raise UserError(f"{option}: {text!r} is not a number (write 0.004 or 2^-8)") from None
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{option}: learning rate {text} must be > 0")
    return value


def cmd_run(args) -> int:
    from ablations import plan
    from harness import data
    from harness.store import Store
    from harness.sweep import grid_extensions, plan_workers, run_sweep

    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    extend = args.extend_grid if args.extend_grid is not None else (0 if args.lrs else DEFAULT_GRID_EXTENSION)
    if extend < 0:
        raise UserError(f"--extend-grid must be 0 or more, got {extend}")
    suite, preset, entries = select_entries(args)
    plan_workers(args.device, args.workers)  # validates the device before anything is written
    out = Path(args.out or f"runs/{suite.name}-{preset.name}")
    existing = Store(out) if (out / "mupbench.sqlite").exists() else None
    if existing is not None:
        stored_preset = existing.get_meta("preset")
        existing.close()
        if stored_preset not in (None, preset.name):
            raise UserError(f"{out} holds a sweep at preset {stored_preset!r}, not {preset.name!r}: use another --out")
    spec_data, tokens = data.stored_spec(out), None
    if spec_data is None:
        tokens, spec_data = data.describe(*data.load_tokens(args.data, args.vocab_size, args.data_dtype))
    elif args.data is not None and spec_data.name != str(args.data):
        raise UserError(f"{out} was prepared from data {spec_data.name!r}, not {args.data!r}: use another --out")
    specs = plan(entries, preset, spec_data, seeds=args.seeds, labels={"suite": suite.name, "preset": preset.name})
    out.mkdir(parents=True, exist_ok=True)  # everything above validated the input; from here on we write
    if tokens is not None:
        data.write(out, tokens, spec_data)
    store = Store(out, create=True)
    store.set_meta("preset", preset.name)
    suites = store.get_meta("suites", [])
    store.set_meta("suites", sorted(set(suites) | {suite.name}))
    store.set_meta("ablation_info", {**store.get_meta("ablation_info", {}), **ablation_info(a for a, _ in entries)})
    store.close()
    try:
        run_sweep(out, specs, device=args.device, workers=args.workers, progress=not args.quiet)
        for _ in range(extend):  # an optimum on the grid's edge is no optimum yet: chase it a step at a time
            store = Store(out)
            runs = store.runs()
            store.close()
            more = grid_extensions(specs, runs)  # points beyond the grid's ends: never already in `specs`
            if not more:
                break
            _print_extensions(more)
            specs = specs + more
            run_sweep(out, specs, device=args.device, workers=args.workers, progress=not args.quiet)
    except KeyboardInterrupt:
        return 130
    print(f"sweep directory: {out}")
    status = _print_verdicts(out, args.tolerance)
    report_cli.report_after_run(out, args.tolerance)
    return status


def _print_extensions(specs) -> None:
    """One line per (ablation, parameterization) whose LR grid grows."""
    grown: dict[tuple[str, str], set[float]] = {}
    for s in specs:
        grown.setdefault((s.ablation, s.model.parameterization), set()).add(math.log2(s.train.lr))
    for (ablation, param), points in grown.items():
        at = ", ".join(f"2^{x:g}" for x in sorted(points))
        print(f"mupbench: {ablation}/{param}: an optimum sits on the grid's edge; extending the grid to {at}",
              file=sys.stderr)


def ablation_info(items) -> dict:
    """What reports need to know of each ablation, stored with the sweep (user ablations may not be importable later)."""
    return {
        a.name: {"description": a.description, "reported": a.reported, "expected": a.expected, "source": a.source,
                 "family": a.family}
        for a in items
    }


# --- status / analyze -------------------------------------------------------------------------------------------
def _add_status(sub) -> None:
    p = sub.add_parser("status", help="how far a sweep has got")
    p.add_argument("dir")
    p.set_defaults(func=cmd_status)


def cmd_status(args) -> int:
    from harness.store import Store

    store = Store(args.dir)
    plan, runs = store.planned(), store.runs()
    counts = store.counts()
    store.close()
    rows = []
    for (abl, param), group in plan.groupby(["ablation", "parameterization"], sort=False):
        done = runs[runs["run_hash"].isin(group["run_hash"])]
        rows.append([abl, param, len(group), int((done["status"] == "ok").sum()),
                     int((done["status"] == "diverged").sum()), int((done["status"] == "failed").sum()),
                     len(group) - int(done["status"].isin(["ok", "diverged"]).sum())])
    print(text_table(["ablation", "param", "planned", "ok", "diverged", "failed", "pending"], rows))
    finished = counts["ok"] + counts["diverged"]
    print(f"\n{finished}/{counts['planned']} runs finished ({counts['failed']} failed)")
    return 0


def _add_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="optimal LR per width and transfer verdicts of a sweep")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true", help="print JSON: {'verdicts': [...]}")
    p.add_argument("--tolerance", type=float, default=None, help="allowed spread of optima in log2 LR (default one grid step)")
    p.set_defaults(func=cmd_analyze)


def load_verdicts(sweep_dir, tolerance=None):
    from harness.store import Store
    from harness.transfer import analyze

    if tolerance is not None and not tolerance >= 0:
        raise UserError(f"--tolerance must be >= 0, got {tolerance}")
    store = Store(sweep_dir)
    runs = store.runs()
    store.close()
    return analyze(runs, tolerance)


def cmd_analyze(args) -> int:
    verdicts = load_verdicts(args.dir, args.tolerance)
    if args.json:
        print(json.dumps({"verdicts": [v.to_json() for v in verdicts]}, indent=1))
        return 0
    _print_table(verdicts)
    return 0


def _print_verdicts(sweep_dir, tolerance) -> int:
    _print_table(load_verdicts(sweep_dir, tolerance))
    return 0


def _print_table(verdicts) -> None:
    widths = sorted({w for v in verdicts for w in v.widths})
    rows = []
    for v in verdicts:
        opt = v.optimal_log2_lr
        rows.append([v.ablation, v.parameterization, v.verdict, *[opt.get(w) for w in widths],
                     v.drift_per_doubling, v.transfer_regret, v.wider_is_better])
    print(text_table(["ablation", "param", "verdict", *[f"w{w}" for w in widths], "drift/2x", "regret", "wider better"],
                     rows))
    for v in verdicts:
        if v.verdict == "inconclusive":
            print(f"  {v.ablation}/{v.parameterization}: {v.reason}")
    print("\ncolumns w<N>: optimal log2 LR at width N; drift: log2 LR per width doubling; "
          "regret: largest width's loss at the smallest width's best LR minus its best")


# --- explain / list ---------------------------------------------------------------------------------------------
def _add_explain(sub) -> None:
    p = sub.add_parser("explain", help="every tensor's shape, role, init std and LR multiplier at a width")
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--parameterization", default="mup", help="mup | sp (default mup)")
    p.add_argument("--base-width", type=int, default=None, help="default: the preset's")
    p.add_argument("--preset", default="cpu-tiny", help="shape to explain (default cpu-tiny)")
    p.add_argument("--ablation", default="baseline", help="explain the model of this ablation (default baseline)")
    p.set_defaults(func=cmd_explain)


def cmd_explain(args) -> int:
    import ablations
    from ablations.suites import apply_changes
    from harness.config import ModelConfig
    from harness.model import build_model, parameter_roles
    from harness.parameterization import init_std, lr_mult, rule

    preset = ablations.get_preset(args.preset)
    base = preset.base(args.parameterization)
    recipe = apply_changes(base, ablations.get(args.ablation).changes(base))
    if args.base_width is not None:
        recipe["model"]["base_width"] = args.base_width
    cfg = ModelConfig(width=args.width, **recipe["model"])
    model = build_model(cfg)
    rows = []
    for name, p, role, fan_in in parameter_roles(model):
        r = rule(cfg.parameterization, role)
        std = {"ones": "1 (const)", "zeros": "0 (const)"}.get(r.init) or f"{init_std(cfg, role, fan_in):.4g}"
        rows.append([name, "×".join(map(str, p.shape)), role, std, r.std.text if r.init == "normal" else r.init,
                     f"{lr_mult(cfg, role):.4g}", r.lr_mult.text, "yes" if r.weight_decay else "no"])
    print(f"{args.ablation} · {cfg.parameterization} · width {cfg.width} · base width {cfg.base_width} "
          f"(wm = {cfg.width_mult:g}) · depth {cfg.depth} · heads {cfg.heads}×{cfg.head_dim}")
    print(text_table(["tensor", "shape", "role", "init std", "rule", "LR mult", "rule", "decay"], rows))
    return 0


def _add_list(sub) -> None:
    p = sub.add_parser("list", help="registered ablations, suites and presets")
    p.add_argument("--json", action="store_true")
    p.add_argument("--ablations", action="append", default=[], metavar="PATH_OR_MODULE",
                   help="also load ablations from this file or module")
    p.set_defaults(func=cmd_list)


def cmd_list(args) -> int:
    import ablations
    from ablations.loader import load_user_ablations

    load_user_ablations(args.ablations)
    base = ablations.get_preset("cpu-tiny").base("mup")
    items = []
    for a in ablations.REGISTRY.values():
        items.append({"name": a.name, "family": a.family, "description": a.description, "changes": a.changes(base),
                      "reported": a.reported, "expected": a.expected, "source": a.source})
    suites = [{"name": s.name, "description": s.description, "preset": s.preset,
               "ablations": [a.name for a, _ in s.resolve()]} for s in ablations.SUITES.values()]
    presets = [{"name": p.name, "description": p.description, "widths": list(p.widths),
                "log2_lrs": list(p.log2_lrs), **p.model, **p.train} for p in ablations.PRESETS.values()]
    if args.json:
        print(json.dumps({"ablations": items, "suites": suites, "presets": presets}, indent=1, default=str))
        return 0
    print(text_table(["ablation", "family", "changes", "reported", "description"],
                     [[i["name"], i["family"], ", ".join(f"{k}={v}" for k, v in i["changes"].items()) or "–",
                       i["reported"], i["description"]] for i in items]))
    print("\nsources: " + "; ".join(sorted({i["source"] for i in items})))
    print("\n" + text_table(["suite", "preset", "ablations"],
                            [[s["name"], s["preset"], ", ".join(s["ablations"])] for s in suites]))
    print("\n" + text_table(["preset", "widths", "log2 LR grid", "description"],
                            [[p["name"], "/".join(map(str, p["widths"])), f"{p['log2_lrs'][0]:g}…{p['log2_lrs'][-1]:g}",
                              p["description"]] for p in presets]))
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="time the Triton kernels against torch on a CUDA GPU, or tune their configs")
    what = p.add_subparsers(dest="what", parser_class=_Parser, required=True, metavar="kernels|tune")
    k = what.add_parser("kernels", help="RMSNorm, attention and the training step vs torch eager, compile and SDPA")
    k.add_argument("--out", type=Path, default=Path("reports/benchmarks"),
                   help="directory for the JSON and markdown results (default: reports/benchmarks)")
    k.add_argument("--quick", action="store_true", help="fewer shapes and shorter timings: a smoke run of a few minutes")
    k.add_argument("--no-graphs", action="store_true", help="skip the CUDA-graph timings")
    k.add_argument("--no-train-step", action="store_true", help="skip the training-step benchmark")
    k.set_defaults(func=cmd_bench_kernels)
    t = what.add_parser("tune", help="time every candidate attention config; write a table to pin (kernels/pinned.py)")
    t.add_argument("--out", type=Path, default=None,
                   help="JSON file for the tuned table (default: reports/benchmarks/pinned-configs-<gpu>.json)")
    t.add_argument("--quick", action="store_true", help="only the first two shapes")
    t.add_argument("--compile-only", action="store_true",
                   help="no GPU needed: compile every candidate for sm_90 and print registers and spill bytes")
    t.set_defaults(func=cmd_bench_tune)


def cmd_bench_kernels(args) -> int:
    from kernels.bench import run

    train_step = None
    if not args.no_train_step:
        from harness.train_bench import measure_train_step as train_step
    return run(args.out, quick=args.quick, train_step=train_step, graphs=not args.no_graphs)


def cmd_bench_tune(args) -> int:
    from kernels import bench, tune

    if args.compile_only:
        rows = tune.compile_report()
        print(text_table(["kernel", "config", "head dim", "registers", "spill bytes", "kept at this head dim"],
                         [[r["kernel"], r["config"], r["head_dim"], r["registers"], r["spill_bytes"],
                           "yes" if r["fits"] else "no"] for r in rows]))
        return 0
    reason = bench.unavailable_reason()
    if reason:
        raise UserError(reason.removeprefix("mupbench: error: ").replace("bench kernels", "bench tune"))
    result = tune.tune(quick=args.quick)
    import torch

    out = args.out or Path("reports/benchmarks") / f"pinned-configs-{bench._slug(torch.cuda.get_device_name())}.json"
    print(f"wrote {tune.write(result, out)}: set MUPBENCH_KERNEL_CONFIGS to it, or copy its entries to kernels/pinned.py")
    return 0


from harness import byo, coord_check, gate  # noqa: E402  (byo.add_parser adds --model to `run`: keep it after _add_run)

COMMANDS = [_add_run, _add_status, _add_analyze, _add_explain, _add_list, report_cli.add_parser, byo.add_parser,
            coord_check.add_parser, gate.add_parser, _add_bench]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mupbench", description="μP learning-rate transfer benchmark")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return args.func(args)
    except UserError as e:
        print(f"mupbench: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
