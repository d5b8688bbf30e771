"""Scale presets: the width, depth, duration and learning-rate grids and the model/training shape, independent of any
ablation.

Each preset's `model` and `train` dicts are the base recipe an ablation changes; the grids come on top. A width sweep
varies the width over `widths`; a depth sweep varies the depth over `depths` at the fixed width `axis_width` (base
depth = the smallest depth); a duration sweep varies the training length over `durations` (steps; the tokens are steps
× batch × sequence) at `duration_width`, 4× the base width (at the base width μP and SP differ only in the
unembedding's init, so a duration sweep there could not tell them apart), with a warmup of DURATION_WARMUP_FRACTION of
the shortest duration for every length (so the warmup is at most that fraction of any run, and the runs of every length
still share their stable phase: mupbench.branches) and every other setting of the recipe unchanged.
Lion gets its own grid, shifted down, since its optimum sits 3–10× below AdamW's (lion-pytorch README).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mupbench.config import ModelConfig, TrainConfig
from mupbench.errors import UserError


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    widths: tuple[int, ...]
    log2_lrs: tuple[float, ...]  # the AdamW grid of base learning rates α
    model: dict
    train: dict
    lion_log2_shift: float = -3.0  # Lion's grid = AdamW's grid shifted by this many log2 units
    seeds: int = 3  # replicas per point by default: seed 0 runs the grid, the others each width's optimum neighbourhood
    # sequential seeds: a row inconclusive for noise gets one more seed at a time, up to this many (8: the calibration's
    # choice, mupbench.calibration and docs/reading-verdicts.md)
    max_seeds: int = 8
    depths: tuple[int, ...] = (2, 4, 8, 16)  # the depth grid of depth sweeps
    durations: tuple[int, ...] = (75, 150, 300, 600)  # the training lengths (steps) of duration sweeps
    axis_width: int = 32  # the width of depth sweeps
    duration_width: int = 128  # the width of duration sweeps: 4× the base width (cpu-micro, a sanity check: its base)

    def duration_warmup(self, durations: tuple[int, ...] | None = None) -> int:
        """The warmup (steps) of every run of a duration sweep over `durations` (default the preset's)."""
        return max(1, round(DURATION_WARMUP_FRACTION * min(durations or self.durations)))

    def log2_grid(self, optimizer: str) -> tuple[float, ...]:
        shift = self.lion_log2_shift if optimizer == "lion" else 0.0
        return tuple(x + shift for x in self.log2_lrs)

    def base(self, parameterization: str) -> dict:
        """The complete base recipe (every config field), with the width and LR left to the grid."""
        model = {**_defaults(ModelConfig, "width"), **self.model, "parameterization": parameterization}
        return {"model": model, "train": {**_defaults(TrainConfig, "lr"), **self.train}}


# a duration sweep's warmup, as a fraction of its shortest run: the recipe's 30 of 300 steps. A fixed warmup of 30
# steps was 40% of a 75-step run and 5% of a 600-step one, a confound in the direction of the effect measured (a long
# warmup tolerates a higher LR); now it is 10% of the shortest run and 1.3% of the longest.
DURATION_WARMUP_FRACTION = 0.1


def _defaults(cls, grid_field: str) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.name != grid_field}


def _ints(lo: int, hi: int) -> tuple[float, ...]:
    return tuple(float(i) for i in range(lo, hi + 1))


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            name="cpu-tiny",
            description="the smoke shape: minutes on a 2-core CPU per ablation",
            widths=(32, 64, 128),
            log2_lrs=_ints(-11, -4),
            model=dict(depth=2, head_dim=16, base_width=32, vocab_size=256),
            train=dict(steps=300, warmup=30, batch_size=16, seq_len=64, eval_every=50, eval_tokens=8192),
            depths=(2, 4, 8), durations=(75, 150, 300, 600), axis_width=32, duration_width=128,
        ),
        Preset(
            name="cpu-micro",
            description="a seconds-long sanity sweep: checks that everything runs, too small to judge transfer",
            widths=(16, 32),
            log2_lrs=_ints(-8, -5),
            model=dict(depth=1, head_dim=8, base_width=16, vocab_size=256),
            train=dict(steps=30, warmup=3, batch_size=4, seq_len=32, eval_every=10, eval_tokens=256),
            seeds=1, max_seeds=1, depths=(1, 2), durations=(15, 30), axis_width=16, duration_width=16,
        ),
        Preset(
            name="gpu-small",
            description="one GPU: widths 128–1024, depth 4, 8k tokens per step, 500 steps",
            widths=(128, 256, 512, 1024),
            log2_lrs=_ints(-10, -3),
            model=dict(depth=4, head_dim=64, base_width=128, vocab_size=256),
            train=dict(steps=500, warmup=50, batch_size=32, seq_len=256, eval_every=100, eval_tokens=131072),
            depths=(2, 4, 8, 16, 32), durations=(250, 500, 1000, 2000), axis_width=256, duration_width=512,
        ),
        Preset(
            name="paper",
            description="Lingle's protocol: depth 24, 2^18 tokens per step, 125k steps (a cluster's job)",
            widths=(128, 512, 2048),
            log2_lrs=_ints(-10, -2),
            model=dict(depth=24, head_dim=128, base_width=128, vocab_size=256, norm_eps=1e-6),
            train=dict(
                steps=125_000, warmup=10_000, batch_size=1024, seq_len=256, beta1=0.9, beta2=0.98, eps=1e-9,
                eval_every=5000, eval_tokens=1 << 24,
            ),
            depths=(6, 12, 24, 48), durations=(31_250, 62_500, 125_000, 250_000), axis_width=512,
            duration_width=512,
        ),
    ]
}


def _paper_heads(p: Preset) -> Preset:
    """Lingle's head layout at a preset's scale: head dim = base width, so the heads (width / base width) grow with
    width — one head at the base width, as the paper's one head of 128 at width 128."""
    return dataclasses.replace(
        p, name=f"{p.name}-paper-heads", model={**p.model, "head_dim": p.model["base_width"]},
        description=f"{p.name} with the paper's head layout: head dim {p.model['base_width']} = base width, "
                    "heads grow with width",
    )


PRESETS.update({q.name: q for q in (_paper_heads(PRESETS["cpu-tiny"]), _paper_heads(PRESETS["gpu-small"]))})


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]

