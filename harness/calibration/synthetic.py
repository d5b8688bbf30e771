"""A synthetic trainer: the final validation loss of a run drawn from a known loss landscape, in microseconds, through
the same trainer interface a user's own trainer uses (`mupbench run --trainer mupbench.calibration.synthetic:train`).
A sweep of it is a calibration run: the true drift is known, so the verdict can be checked against it.

    train(run) -> float   run: the trainer protocol's plain dict (width, depth, tokens, log2_lr, seed, ablation,
                          parameterization, …); returns the final validation loss, inf for a diverged run

The landscape, per (ablation, parameterization) and scale s on the axis (`axis`: width, depth or tokens), with
u = log2 LR − optimum:

    optimum(s, seed) = optimum_log2_lr + drift · log2(s / reference_scale) + seed_optimum_sd · z(seed)
    loss = best_loss + gain_per_doubling · log2(s / reference_scale)
           + curvature_below · u² (u < 0) or curvature_above · u² (u ≥ 0)
           + seed_offset_sd · z(seed, s)                     a per-seed offset shared across the LRs
           + sd(u) · noise_per_doubling^log2(s / reference_scale) · z(seed, s, LR)     per-point noise
    sd(u) = point_sd for u ≤ 0, rising linearly to point_sd_above at u = 1 and staying there (heteroscedastic;
            point_sd_above = point_sd: homoscedastic)
    u > cliff: diverged (inf)

Every z is a standard normal fixed by its key and `noise_seed`, so a run's loss does not depend on the order runs are
trained in, and a resumed sweep sees the same losses. `drift` is a number, or a table by parameterization
({"mup": 0, "sp": -1}; a "default" entry for the others).

Settings: DEFAULTS, or a JSON or TOML file named by $MUPBENCH_SYNTHETIC_NOISE that gives every key (a file with a key
missing or unknown is refused — UserError, exit 2 — when this module is imported, before any run).

How DEFAULTS were measured (2026-12, cpu-tiny μP baseline on the embedded corpus, 300 steps, one thread per run):
width 32, seeds 0–3, every LR 2^-10 … 2^-2 (36 runs, 3.5 s each); width 128, seeds 0–1, the same LRs (18 runs,
25–60 s each on the loaded machine; seed 2 was stopped after one run).
- optimum_log2_lr −5.27, curvature_below 0.036, curvature_above 0.041: a least-squares fit of the asymmetric
  parabola to width 32's seed-mean curve (rms residual 0.018 nats over the 9 LRs); the basin is close to quadratic
  four log2 units either side of the optimum. The per-seed vertices of the same fit: −5.42, −4.85, −5.47, −5.35.
  Width 128's mean curve: optimum −5.22, curvature 0.042 below and 0.047 above (rms 0.022): the same basin, so one
  curvature serves every width.
- point_sd 0.016, point_sd_above 0.045: the residual sd of the two-way (seed × LR) decomposition at width 32, pooled
  over the LRs at or below the optimum (0.013–0.021 each) and over the LRs one to three steps above it (0.051, 0.044,
  0.027); earlier, 5 seeds at 2^-6…2^-4 gave 0.012 at 2^-6 and 0.057 at 2^-4 (mupbench.transfer.NOISE).
- seed_offset_sd 0.015: the seed effects of that decomposition (+0.007, −0.021, +0.000, +0.013); 5 seeds gave 0.023.
- noise_per_doubling 1: width 128's pooled residual sd over seeds 0–1 is 0.023 against width 32's 0.029 for the same
  seeds (0.88 per doubling, from 9 degrees of freedom each); 1 keeps the wider widths as noisy as the narrowest, the
  conservative choice until more seeds measure it.
- gain_per_doubling −0.09 nats: best loss 2.048 / 1.947 / 1.864 at widths 32 / 64 / 128 (the committed lingle table).
- cliff 4: no run diverged up to 2^-2, 3.3 log2 above the optimum; seed_optimum_sd 0: not separable from the point
  noise with 3–4 seeds (0 keeps each width's noise independent, the harder case for the drift).
The raw losses are in measured_noise.json beside this module.
"""
from __future__ import annotations

import json
import math
import os
import random
import tomllib
from pathlib import Path

from mupbench.errors import UserError

NOISE_ENV = "MUPBENCH_SYNTHETIC_NOISE"

DEFAULTS: dict = {
    "axis": "width",
    "reference_scale": 32,
    "optimum_log2_lr": -5.27,
    "drift": 0.0,
    "best_loss": 2.07,
    "gain_per_doubling": -0.09,
    "curvature_below": 0.036,
    "curvature_above": 0.041,
    "point_sd": 0.016,
    "point_sd_above": 0.045,
    "noise_per_doubling": 1.0,
    "seed_offset_sd": 0.015,
    "seed_optimum_sd": 0.0,
    "cliff": 4.0,
    "noise_seed": 0,
}
AXES = ("width", "depth", "tokens")


def check_noise(noise: dict, source: str = "the synthetic noise settings") -> dict:
    """`noise` with every key of DEFAULTS and nothing else, values of the right kind; UserError naming what is wrong."""
    if not isinstance(noise, dict):
        raise UserError(f"{source} must be a table of settings, got {type(noise).__name__}")
    missing = [k for k in DEFAULTS if k not in noise]
    unknown = [k for k in noise if k not in DEFAULTS]
    if missing or unknown:
        what = "; ".join(filter(None, [missing and f"lacks {', '.join(missing)}",
                                       unknown and f"has unknown {', '.join(unknown)}"]))
        raise UserError(f"{source} {what}: give every key of mupbench.calibration.synthetic.DEFAULTS "
                        f"({', '.join(DEFAULTS)})")
    if noise["axis"] not in AXES:
        raise UserError(f"{source}: axis {noise['axis']!r} is not one of {', '.join(AXES)}")
    drift = noise["drift"]
    numbers = {k: v for k, v in noise.items() if k not in ("axis", "drift")}
    if isinstance(drift, dict):
        numbers.update({f"drift.{k}": v for k, v in drift.items()})
    else:
        numbers["drift"] = drift
    for key, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{source}: {key} must be a finite number, got {value!r}")
    negative = [k for k in ("point_sd", "point_sd_above", "seed_offset_sd", "seed_optimum_sd") if noise[k] < 0]
    if negative or noise["reference_scale"] <= 0 or noise["noise_per_doubling"] <= 0:
        raise UserError(f"{source}: standard deviations must be ≥ 0, reference_scale and noise_per_doubling > 0")
    return noise


def load_noise(path: str | Path | None = None) -> dict:
    """The settings from `path` (JSON, or TOML by its .toml suffix), else from $MUPBENCH_SYNTHETIC_NOISE, else
    DEFAULTS."""
    path = path or os.environ.get(NOISE_ENV)
    if not path:
        return dict(DEFAULTS)
    p = Path(path)
    try:
        text = p.read_text()
        noise = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the synthetic noise file {p} ({e}): give a JSON or TOML file "
                        f"(${NOISE_ENV})") from None
    return check_noise(noise, f"synthetic noise file {p}")


def _z(*key) -> float:
    """A standard normal fixed by `key` (the same in every process and run order)."""
    return random.Random("|".join(map(str, key))).gauss(0.0, 1.0)


def true_optimum(run: dict, noise: dict) -> float:
    """The run's (ablation, parameterization, seed) optimum at its scale, log2 LR."""
    doublings = math.log2(run[noise["axis"]] / noise["reference_scale"])
    drift = noise["drift"]
    if isinstance(drift, dict):
        drift = drift.get(run["parameterization"], drift.get("default", 0.0))
    shift = noise["seed_optimum_sd"] * _z(noise["noise_seed"], "optimum", run["ablation"], run["parameterization"],
                                          run["seed"]) if noise["seed_optimum_sd"] else 0.0
    return noise["optimum_log2_lr"] + drift * doublings + shift


def loss(run: dict, noise: dict) -> float:
    """The final validation loss of `run` in the landscape `noise` (module docstring); inf: diverged."""
    s = run[noise["axis"]]
    doublings = math.log2(s / noise["reference_scale"])
    u = run["log2_lr"] - true_optimum(run, noise)
    if u > noise["cliff"]:
        return math.inf
    key = (noise["noise_seed"], run["ablation"], run["parameterization"], run["seed"], s)
    curvature = noise["curvature_below"] if u < 0 else noise["curvature_above"]
    sd = noise["point_sd"] + (noise["point_sd_above"] - noise["point_sd"]) * min(max(u, 0.0), 1.0)
    return (noise["best_loss"] + noise["gain_per_doubling"] * doublings + curvature * u * u
            + noise["seed_offset_sd"] * _z(*key)
            + sd * noise["noise_per_doubling"] ** doublings * _z(*key, round(run["log2_lr"], 6)))


NOISE = load_noise()  # from $MUPBENCH_SYNTHETIC_NOISE when set: refused at import, before any run


def train(run: dict) -> float:
    """The trainer protocol's entry point: the final validation loss of `run` (inf: diverged)."""
    return loss(run, NOISE)
