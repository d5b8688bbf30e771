"""Argument parsing shared by the commands: the one-line-error parser, number and list parsers, the options that name
a user's model, and the ablation selection of `run`-style commands."""
from __future__ import annotations

import argparse
import dataclasses
import math

from mupbench.errors import UserError


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's default prints the whole usage first)
        raise UserError(f"{message} (see `{self.prog} --help`)")


def parse_list(text: str, option: str, parse) -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UserError(f"{option} is empty: give comma-separated values")
    return [parse(t, option) for t in items]


def positive_int(text: str, option: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{option}: {text!r} is not a positive integer")
    return value


def learning_rate(text: str, option: str) -> float:
    try:
        value = 2.0 ** float(text[2:]) if text.startswith("2^") else float(text)
    except ValueError:
        raise UserError(f"{option}: {text!r} is not a number (write 0.004 or 2^-8)") from None
    except OverflowError:
        raise UserError(f"{option}: learning rate {text} is too large to represent: use one at most 1") from None
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{option}: learning rate {text} must be > 0")
    return value


def tolerance(text: str) -> float:
    """argparse type of --tolerance-like options: a finite number >= 0 (checked before anything runs)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number >= 0")
    return value


def add_model_arguments(p) -> None:
    """--model and --reinit: a user's own model, for `run`, `gate` and `coord-check`."""
    p.add_argument("--model", default=None, metavar="FILE.py:FACTORY",
                   help="your own model: path/to/file.py:factory or package.module:factory, factory(width) -> nn.Module "
                        "mapping token ids (B, T) to logits (B, T, V)")
    p.add_argument("--reinit", action="store_true",
                   help="with --model: re-initialise its weights by the parameterization table "
                        "(default: trust the model's own init, set only the learning rates)")


def add_trainer_arguments(p) -> None:
    """--trainer, --trainer-command, --trainer-shell, --run-timeout: a team's own training code, for `run` and `gate`."""
    p.add_argument("--trainer", default=None, metavar="FILE.py:FUNC",
                   help="your own training function: path/to/file.py:train or package.module:train, called with one "
                        "run's settings (a dict: width, lr, seed, steps, parameterization, ...) and returning the final "
                        "validation loss (see docs/your-trainer.md)")
    p.add_argument("--trainer-command", default=None, metavar="TEMPLATE",
                   help="your own training script, run once per run: a command with placeholders, e.g. 'python "
                        "train.py --width {width} --lr {lr} --seed {seed} --steps {steps} --result {result}'")
    p.add_argument("--trainer-shell", action="store_true",
                   help="run --trainer-command through the shell (default: split it into arguments, no shell)")
    p.add_argument("--run-timeout", type=float, default=None, metavar="SECONDS",
                   help="with --trainer or --trainer-command: a run taking longer is stopped and stored as failed")


def resolve_trainer(args) -> dict | None:
    """The user's trainer the options name (imported or checked now, UserError on any problem), or None."""
    from mupbench.trainers import external

    trainer, command = getattr(args, "trainer", None), getattr(args, "trainer_command", None)
    if trainer and command:
        raise UserError("give --trainer or --trainer-command, not both")
    if getattr(args, "trainer_shell", False) and not command:
        raise UserError("--trainer-shell applies only with --trainer-command")
    timeout = getattr(args, "run_timeout", None)
    if timeout is not None:
        if not (trainer or command):
            raise UserError("--run-timeout applies only with --trainer or --trainer-command")
        if not (math.isfinite(timeout) and timeout > 0):
            raise UserError(f"--run-timeout must be a positive number of seconds, got {timeout:g}")
    if (trainer or command) and getattr(args, "model", None):
        raise UserError("--model and a trainer exclude each other: your trainer builds its own model")
    if trainer:
        return external.resolve_callable(trainer)
    if command:
        return external.resolve_command(command, shell=args.trainer_shell)
    return None


def select_entries(args):
    """The suite, the preset (with --widths/--depths/--durations/--lrs applied) and the (ablation, parameterizations) entries a
    `run`-style command asks for."""
    from mupbench import ablations
    from mupbench.ablations.loader import load_user_ablations

    load_user_ablations(args.ablations)
    suite = ablations.get_suite(args.suite)
    preset = ablations.get_preset(args.preset or suite.preset)
    for option in ("widths", "depths", "durations"):
        if getattr(args, option, None):
            values = tuple(sorted(set(parse_list(getattr(args, option), f"--{option}", positive_int))))
            preset = dataclasses.replace(preset, **{option: values})
    if getattr(args, "steps", None):
        steps = positive_int(args.steps, "--steps")
        warmup = preset.train.get("warmup", 0)  # the preset's warmup, as the same share of the run
        if warmup:
            warmup = max(1, round(warmup * steps / preset.train.get("steps", steps)))
        preset = dataclasses.replace(preset, train={**preset.train, "steps": steps, "warmup": warmup})
    if getattr(args, "lrs", None):
        log2s = [math.log2(lr) for lr in parse_list(args.lrs, "--lrs", learning_rate)]
        preset = dataclasses.replace(preset, log2_lrs=tuple(sorted(log2s)))
    entries = suite.resolve()
    if args.ablation is not None:
        names = dict.fromkeys(parse_list(args.ablation, "--ablation", lambda n, _: n))
        in_suite = {a.name: params for a, params in entries}
        entries = [(ablations.get(n), in_suite.get(n, ("mup",))) for n in names]
    check_grid(preset, entries)
    return suite, preset, entries


AXIS_GRID = {"width": ("widths", "--widths"), "depth": ("depths", "--depths"), "duration": ("durations", "--durations")}


def check_grid(preset, entries) -> None:
    """At least two values on every axis swept and two learning rates: one point locates no optimum and judges no
    transfer (refused before any training, not reported after it as "diverged at 0 of 1")."""
    if len(preset.log2_lrs) < 2:
        raise UserError(f"--lrs: one learning rate ({2 ** preset.log2_lrs[0]:g}) locates no optimum: give at least two")
    for axis in dict.fromkeys(a.axis if a.axis in AXIS_GRID else "width" for a, _ in entries):
        field, option = AXIS_GRID[axis]
        values = getattr(preset, field)
        if len(values) < 2:
            raise UserError(f"{option}: one {axis} ({values[0]}) cannot show whether the optimal LR moves with it: "
                            "give at least two")
