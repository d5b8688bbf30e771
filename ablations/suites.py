"""Suites (which ablations, under which parameterizations) and their expansion into fully resolved run specs."""
from __future__ import annotations

from dataclasses import dataclass

from ablations.presets import Preset
from ablations.registry import REGISTRY, Ablation, get
from harness.config import DataSpec, ModelConfig, RunSpec, TrainConfig
from harness.errors import UserError


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    entries: tuple[tuple[str, tuple[str, ...]], ...] | None  # (ablation, parameterizations); None = every registered
    preset: str  # the default scale

    def resolve(self) -> list[tuple[Ablation, tuple[str, ...]]]:
        entries = self.entries if self.entries is not None else tuple((n, ("mup",)) for n in REGISTRY)
        return [(get(name), params) for name, params in entries]


SUITES: dict[str, Suite] = {
    s.name: s
    for s in [
        Suite("smoke", "μP and SP baselines: the promise and its counterexample", (("baseline", ("mup", "sp")),), "cpu-tiny"),
        Suite("lingle", "every registered ablation (Lingle's μ-transfer study and more)", None, "cpu-tiny"),
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


def plan(
    entries: list[tuple[Ablation, tuple[str, ...]]],
    preset: Preset,
    data: DataSpec,
    seeds: int = 1,
    labels: dict | None = None,
) -> list[RunSpec]:
    """Every run of a sweep, resolved; raises UserError before any run starts if an ablation yields a bad config."""
    specs = []
    for abl, parameterizations in entries:
        for param in parameterizations:
            base = preset.base(param)
            base["model"]["vocab_size"] = data.vocab_size
            recipe = apply_changes(base, abl.changes(base))
            try:
                grid = preset.log2_grid(recipe["train"]["optimizer"])
                for width in preset.widths:
                    model = ModelConfig(width=width, **recipe["model"])
                    for log2_lr in grid:
                        for seed in range(seeds):
                            train = TrainConfig(**{**recipe["train"], "lr": 2.0**log2_lr, "seed": seed})
                            specs.append(RunSpec(abl.name, model, train, data, extra=dict(labels or {})))
            except UserError as e:
                raise UserError(f"ablation {abl.name!r} at preset {preset.name!r}: {e}") from None
    return specs
