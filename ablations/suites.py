"""Suites (which ablations, under which parameterizations) and their expansion into fully resolved run specs."""
from __future__ import annotations

from dataclasses import dataclass

from mupbench.ablations.presets import Preset
from mupbench.ablations.registry import REGISTRY, Ablation, get
from mupbench.config import AXIS_KEY, DataSpec, ModelConfig, RunSpec, TrainConfig, wsd_decay_start
from mupbench.errors import UserError


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    entries: tuple[tuple[str, tuple[str, ...]], ...] | None  # (ablation, parameterizations); None = every registered
    preset: str  # the default scale

    def resolve(self) -> list[tuple[Ablation, tuple[str, ...]]]:
        """The entries; None stands for every registered width ablation (depth and duration ones have suites of their
        own: their sweeps vary another axis)."""
        if self.entries is not None:
            return [(get(name), params) for name, params in self.entries]
        return [(a, ("mup",)) for a in REGISTRY.values() if a.axis == "width"]


SUITES: dict[str, Suite] = {
    s.name: s
    for s in [
        Suite("smoke", "μP and SP baselines: the promise and its counterexample", (("baseline", ("mup", "sp")),), "cpu-tiny"),
        Suite("lingle", "every registered width ablation (Lingle's μ-transfer study and more)", None, "cpu-tiny"),
        Suite("depth", "depth × LR at a fixed width: no depth scaling, Depth-μP and CompleteP",
              (("depth_standard", ("mup",)), ("depth_mup", ("mup",)), ("completep", ("mup",))), "cpu-tiny"),
        Suite("duration", "training length × LR with WSD (one stable run per LR, decays branched off it): μP and SP",
              (("wsd_duration", ("mup", "sp")),), "cpu-tiny"),
        Suite(
            "pr",
            "a fast gate for the common breakages: SP, gains, attention scale, weight decay, Lion",
            tuple(
                (n, ("mup",))
                for n in ("baseline", "standard_parameterization", "rmsnorm_gains_vector", "sp_attention_scale",
                          "weight_decay_coupled", "lion")
            ),
            "cpu-tiny",
        ),
    ]
}


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise UserError(f"unknown suite {name!r}: choose one of {', '.join(SUITES)}")
    return SUITES[name]


def apply_changes(base: dict, changes: dict) -> dict:
    out = {"model": dict(base["model"]), "train": dict(base["train"])}
    for key, value in changes.items():
        section, _, name = key.partition(".")
        out[section][name] = value
    return out


# the analysis' name for each ablation axis: a duration sweep's scale is its training tokens
ANALYSIS_AXIS = {"width": "width", "depth": "depth", "duration": "tokens"}


def _scale_points(axis: str, preset: Preset, recipe: dict) -> list[tuple[dict, dict]]:
    """(model fields, train fields) of every point of the ablation's axis grid."""
    if axis == "width":
        return [({"width": w}, {}) for w in preset.widths]
    if axis == "depth":
        return [({"width": preset.axis_width, "depth": d, "base_depth": min(preset.depths)}, {})
                for d in preset.depths]
    train = recipe["train"]
    warmup = preset.duration_warmup()
    for steps in preset.durations:
        start = wsd_decay_start(steps, warmup, train["decay_fraction"])
        if start >= steps:
            raise UserError(f"duration {steps} steps: its decay would branch off at step {start}, at or after the end "
                            f"of training (warmup is {warmup} steps): choose durations longer than the warmup")
    return [({"width": preset.duration_width}, {"steps": t, "warmup": warmup}) for t in preset.durations]


def plan(
    entries: list[tuple[Ablation, tuple[str, ...]]],
    preset: Preset,
    data: DataSpec,
    seeds: int = 1,
    labels: dict | None = None,
) -> list[RunSpec]:
    """Every run of a sweep, resolved; raises UserError before any run starts if an ablation yields a bad config.
    Each ablation is swept along its own axis (width, depth or duration; see ablations/presets.py)."""
    specs = []
    for abl, parameterizations in entries:
        for param in parameterizations:
            base = preset.base(param)
            base["model"]["vocab_size"] = data.vocab_size
            recipe = apply_changes(base, abl.changes(base))
            extra = {**(labels or {}), AXIS_KEY: ANALYSIS_AXIS[abl.axis]}
            try:
                grid = preset.log2_grid(recipe["train"]["optimizer"])
                for model_fields, train_fields in _scale_points(abl.axis, preset, recipe):
                    model = ModelConfig(**{**recipe["model"], **model_fields})
                    for log2_lr in grid:
                        for seed in range(seeds):
                            train = TrainConfig(**{**recipe["train"], **train_fields, "lr": 2.0**log2_lr, "seed": seed})
                            specs.append(RunSpec(abl.name, model, train, data, extra=dict(extra)))
            except UserError as e:
                raise UserError(f"ablation {abl.name!r} at preset {preset.name!r}: {e}") from None
    return specs
