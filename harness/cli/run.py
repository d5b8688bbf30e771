"""`mupbench run` (a sweep, with `--model` a user's model) and `mupbench status`."""
from __future__ import annotations

import math
import sys
from pathlib import Path

from mupbench.cli.ablation_code import check_stored_code, user_ablation_code, with_ablation_code, with_code_info
from mupbench.cli.analyze import print_verdicts
from mupbench.cli.args import add_model_arguments, add_trainer_arguments, resolve_trainer, select_entries, tolerance
from mupbench.cli.report import print_paths
from mupbench.errors import UserError
from mupbench.transfer import DEFAULT_TOLERANCE
from mupbench.reports.tables import text_table

DEFAULT_GRID_EXTENSION = 2  # grid points `run` may add beyond an edge optimum, per side


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a sweep (default: the CPU smoke suite) and print the verdicts")
    p.add_argument("--suite", default="smoke", help="smoke | lingle | pr (default smoke)")
    p.add_argument("--preset", default=None, help="cpu-tiny | gpu-small | paper (default: the suite's)")
    p.add_argument("--ablation", default=None, help="comma-separated ablation names: run only these of the suite")
    p.add_argument("--ablations", action="append", default=[], metavar="PATH_OR_MODULE",
                   help="a Python file or module registering more ablations with @ablation (repeatable)")
    p.add_argument("--out", default=None, help="sweep directory (default runs/<suite>-<preset>)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: one per GPU, or per CPU core); with Ray, tasks in flight")
    p.add_argument("--executor", default="local", choices=("local", "ray"),
                   help="local worker processes, or Ray tasks on a cluster (default local)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="with --executor ray: the cluster's head (host:port, or auto); default $RAY_ADDRESS, or a "
                        "Ray instance started on this machine")
    p.add_argument("--seeds", type=int, default=None,
                   help="replicas (init and data order); seed 0 runs the LR grid, the others each width's optimum "
                        "neighbourhood (default: the preset's, 3 for cpu-tiny, gpu-small and paper)")
    p.add_argument("--max-seeds", type=int, default=None, metavar="N",
                   help="sequential seeds: a row inconclusive for noise gets one more seed (its neighbourhood runs "
                        "only) until it is conclusive or has N seeds (default: the preset's, 8 for cpu-tiny, gpu-small "
                        "and paper; --max-seeds equal to --seeds turns it off)")
    p.add_argument("--widths", default=None, help="comma-separated widths, replacing the preset's (e.g. 32,64,128)")
    p.add_argument("--depths", default=None,
                   help="comma-separated depths of depth sweeps (suite depth), replacing the preset's (e.g. 2,4,8)")
    p.add_argument("--durations", default=None,
                   help="comma-separated training lengths in steps of duration sweeps (suite duration), replacing the "
                        "preset's (e.g. 75,150,300,600)")
    p.add_argument("--lrs", default=None,
                   help="comma-separated base learning rates, replacing the preset's grid (e.g. 2^-8,2^-7 or 0.004)")
    p.add_argument("--steps", default=None,
                   help="training steps of every run, replacing the preset's (its warmup scales with it)")
    p.add_argument("--data", default=None, help="text file, directory, or token file (.bin/.npy); default: stdlib sources")
    p.add_argument("--vocab-size", type=int, default=None, help="vocab size of a token file (default: max id + 1)")
    p.add_argument("--data-dtype", default="uint16", choices=("uint16", "uint32"),
                   help="dtype of a .bin token file: uint16 | uint32")
    p.add_argument("--tolerance", type=tolerance, default=None,
                   help="δ: the drift of the optimum, log2 LR per doubling of the axis, that still counts as transferring "
                        f"(default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--extend-grid", type=int, default=None, metavar="N",
                   help="where a width's optimum sits on the edge of the LR grid, add up to N more grid points beyond "
                        "it, one at a time (default 2 on a preset's grid, 0 with --lrs; 0 keeps the grid fixed)")
    p.add_argument("--retry-failed", action="store_true",
                   help="train the stored failed runs again (a failed run is kept as a result otherwise)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    add_log_arguments(p)
    add_model_arguments(p)
    add_trainer_arguments(p)
    p.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="how far a sweep has got")
    s.add_argument("dir")
    s.set_defaults(func=cmd_status)


def cmd_run(args) -> int:
    from mupbench import ablations
    from mupbench import byo, data, devices, directory
    from mupbench.executors import make_executor
    from mupbench.sweep import run_sweep
    from mupbench.trainers.external import with_trainer
    from mupbench.reports.build import write_report

    if args.seeds is not None and args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    if args.max_seeds is not None and args.max_seeds < 1:
        raise UserError(f"--max-seeds must be at least 1 (the most seeds a row may get), got {args.max_seeds}")
    if args.vocab_size is not None and args.vocab_size < 1:
        raise UserError(f"--vocab-size must be at least 1, got {args.vocab_size}")
    if args.reinit and args.model is None:
        raise UserError("--reinit applies only with --model")
    extend = args.extend_grid if args.extend_grid is not None else (0 if args.lrs else DEFAULT_GRID_EXTENSION)
    if extend < 0:
        raise UserError(f"--extend-grid must be 0 or more, got {extend}")
    if args.ray_address is not None and args.executor != "ray":
        raise UserError("--ray-address applies only with --executor ray")
    suite, preset, entries = select_entries(args)
    seeds = args.seeds or preset.seeds
    max_seeds = args.max_seeds if args.max_seeds is not None else max(seeds, preset.max_seeds)
    if max_seeds < seeds:
        raise UserError(f"--max-seeds ({max_seeds}) is below --seeds ({seeds}): give at least as many")
    # validates the device before anything is written (a Ray cluster's devices are its own: the executor checks them)
    plan = devices.plan_workers(args.device, args.workers) if args.executor == "local" else None
    out = Path(args.out or f"runs/{suite.name}-{preset.name}")
    directory.check_writable(out)
    logs = tracking_for(args, out)  # an unknown --log, a missing extra, an unwritable tracking directory: exit 2 here
    trainer = resolve_trainer(args)  # imports a --trainer, checks a --trainer-command
    model = byo.resolve(args.model).to_json(args.reinit) if args.model else None
    directory.check_directory(out, preset.name, model, trainer)
    if model is not None:
        entries = _entries_for_model(entries, preset, model)
        _validate_model(model, preset, args, entries)
    if trainer is not None:
        entries = _entries_for_model(entries, preset, None)
    codes = user_ablation_code(entries)  # an edited user ablation is refused here, never averaged with its old runs
    check_stored_code(out, codes)
    data_spec, tokens = data.sweep_data(out, args.data, args.vocab_size, args.data_dtype)
    specs = ablations.plan(entries, preset, data_spec, seeds=1,  # seed 0's grid; the other seeds follow its optima
                           labels={"suite": suite.name, "preset": preset.name})
    specs = with_ablation_code(specs, codes)
    if model is not None:
        specs = byo.with_model(specs, model)
    if trainer is not None:
        specs = with_trainer(specs, trainer, args.run_timeout)
    if plan is not None:
        devices.check_plan(specs, plan)
    # connects to Ray (or says why it cannot) before anything is written
    executor = make_executor(args.executor, args.device, args.workers, args.ray_address)
    # everything above validated the input; from here on we write, holding the directory against a second `run`
    try:
        with directory.locked(out):
            directory.check_directory(out, preset.name, model, trainer)  # another run may have prepared it since we looked
            if data.stored_spec(out) not in (None, data_spec):
                raise UserError(f"another `mupbench run` prepared {out} with other data meanwhile: run the command again")
            check_stored_code(out, codes)
            directory.record_sweep(out, tokens, data_spec, preset.name, suite.name,
                                   with_code_info(ablation_info(a for a, _ in entries), codes), seeds)
            logs.open()
            try:
                run_sweep(out, specs, executor, extend=extend, seeds=seeds, max_seeds=max_seeds,
                          tolerance=args.tolerance, progress=not args.quiet,
                          retry_failed=args.retry_failed, on_extend=_print_extensions,
                          on_stored=logs.on_stored if logs else None)
            except KeyboardInterrupt:
                logs.close()
                return 130
    finally:
        executor.close()
    print(f"sweep directory: {out}")
    status = print_verdicts(out, args.tolerance)
    paths = write_report(out, None, args.tolerance)
    print_paths(paths)
    with logs:
        logs.finish(list(paths.values()), args.tolerance)
    counts = directory.store_counts(out)
    if not counts["ok"] + counts["diverged"]:
        print(f"mupbench: no run finished ({counts['failed']} failed): see `mupbench status {out}` and the errors "
              "stored with the runs", file=sys.stderr)
        return 1
    return status


# The config fields a user's trainer receives as settings (mupbench.trainers.external): ablations changing only these
# (and the LR, seed and scale, which every run sets) can run under it.
TRAINER_FIELDS = {f"model.{k}" for k in ("width", "depth", "heads", "parameterization", "base_width")} | \
    {f"train.{k}" for k in ("lr", "seed", "steps", "warmup", "batch_size", "seq_len", "schedule", "optimizer",
                            "weight_decay")}


def add_log_arguments(p) -> None:
    from mupbench.tracking import TRACKERS

    p.add_argument("--log", action="append", default=[], metavar="TRACKER",
                   help=f"also log every run and the verdicts to an experiment tracker: {' | '.join(TRACKERS)} "
                        "(repeatable; see docs/trackers.md)")
    p.add_argument("--log-required", action="store_true",
                   help="stop with an error when a --log tracker fails (default: warn once and go on without it)")


def tracking_for(args, out: Path):
    """The trackers `--log` names for the sweep directory `out` (checked: UserError before any work)."""
    from mupbench import tracking

    if args.log_required and not args.log:
        raise UserError("--log-required applies only with --log")
    tracking.check(args.log, out)
    return tracking.Tracking(args.log, out, args.log_required,
                             warn=lambda message: print(f"mupbench: warning: {message}", file=sys.stderr))


def _entries_for_model(entries, preset, model: dict | None):
    """The ablations a user's model (`model`) or a user's trainer (None) can follow: those changing only training (and
    the parameterization), and no weight decay where the model's own optimizer groups fix it."""
    from mupbench import byo

    what = "--model" if model is not None else "your trainer"
    base = preset.base("mup")
    kept = []
    fixed_decay = None
    for ablation, params in entries:
        changes = byo.model_field_changes(ablation, base) if model is not None else \
            [k for k in ablation.changes(base) if k not in TRAINER_FIELDS]
        decays = bool(ablation.changes(base).get("train.weight_decay"))
        if decays and fixed_decay is None and model is not None:
            source = byo.source_from_entry(model)
            fixed_decay = byo.hook_sets_weight_decay(byo.load_factory(source), min(preset.widths), source.label)
        if changes:
            print(f"mupbench: skipping ablation {ablation.name!r} for {what}: it changes {', '.join(changes)}, "
                  "which your code does not take as a setting", file=sys.stderr)
        elif decays and fixed_decay:
            print(f"mupbench: skipping ablation {ablation.name!r} for --model: the model's {byo.HOOK_GROUPS} sets "
                  "weight_decay, which would replace the ablation's", file=sys.stderr)
        else:
            kept.append((ablation, params))
    if not kept:
        raise UserError(f"none of the selected ablations applies to {what} (each changes the built-in model's "
                        "architecture): choose train-side ablations, e.g. --ablation baseline")
    return kept


def _validate_model(model: dict, preset, args, entries) -> None:
    """Everything the runs ask of the model, once, before anything is written (mupbench.byo.validate): shapes at two
    widths, hooks, devices, and a forward and backward pass at the smallest width mapping (B, T) to (B, T, V) with V at
    least the byte vocabulary (unknown yet for token files)."""
    from mupbench import byo

    source = byo.source_from_entry(model)
    factory = byo.load_factory(source)
    token_file = str(args.data or "").endswith((".bin", ".npy"))
    vocab = args.vocab_size or (None if token_file else 256)
    parameterizations = sorted({p for _, params in entries for p in params})
    byo.validate(factory, preset.widths, preset.base("mup")["model"]["base_width"], parameterizations, model["reinit"],
                 source.label, 2.0 ** min(preset.log2_lrs), vocab_size=vocab)


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
                 "family": a.family, "axis": a.axis}
        for a in items
    }


def cmd_status(args) -> int:
    from mupbench.store import Store

    store = Store(args.dir)
    plan, runs = store.planned(), store.runs()
    counts = store.counts()
    store.close()
    rows = []
    for (abl, param), group in plan.groupby(["ablation", "parameterization"], sort=False):
        done = runs[runs["run_hash"].isin(group["run_hash"])]
        rows.append([abl, param, len(group), int((done["status"] == "ok").sum()),
                     int((done["status"] == "diverged").sum()), int((done["status"] == "failed").sum()),
                     len(group) - len(done)])
    print(text_table(["ablation", "param", "planned", "ok", "diverged", "failed", "pending"], rows))
    failed = runs[runs["status"] == "failed"]
    for _, r in failed.head(MAX_ERRORS_SHOWN).iterrows():
        lines = [ln for ln in str(r["error"] or "").splitlines() if ln.strip()] or ["?"]
        print(f"  failed: {r['ablation']}/{r['parameterization']} width {r['width']} lr 2^{r['log2_lr']:g} "
              f"seed {r['seed']}: {lines[0]}")
        for line in lines[1:][-TAIL_SHOWN:]:  # the end of a trainer's output
            print(f"    | {line}")
    if len(failed) > MAX_ERRORS_SHOWN:
        print(f"  … and {len(failed) - MAX_ERRORS_SHOWN} more failed runs")
    finished = counts["ok"] + counts["diverged"]
    kept = " (kept as results: `mupbench run --retry-failed` trains them again)" if counts["failed"] else ""
    print(f"\n{finished}/{counts['planned']} runs finished, {counts['failed']} failed{kept}")
    return 0


MAX_ERRORS_SHOWN = 10
TAIL_SHOWN = 3  # lines of a failed run's output tail `status` shows
