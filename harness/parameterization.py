"""Parameterizations as data: a table from each tensor's role to its init, learning-rate multiplier and weight decay.

SP and μP are two tables, not two code paths. Formulas follow Lingle's μ-transfer formulation (no output multiplier):
with M the width, wm = M / M_base, and fan_in the tensor's input dimension,

    role                      μP init        μP LR     SP init        SP LR
    embedding                 N(0, 1)        α         N(0, 1)        α
    attn q/k/v/o, ff in/out   fan_in^-1/2    α / wm    fan_in^-1/2    α
    unembedding               1 / fan_in     α / wm    fan_in^-1/2    α
    gain                      1              α         1              α
    bias                      0              α         0              α

Under Adam this is equivalent to microsoft/mup's MuReadout + MuAdam. Model switches that override an init
(zero query, unembedding variants) are applied in `init_std`, the single place a model asks; switches that override a
learning rate (`embedding_lr`, the Muon optimizer) in `lr_mult`.

Muon (torch.optim.Muon, on the hidden matrices only) has its own rule. Its orthogonalised update O has singular values
≈ 1 at every width, and torch multiplies the rate by √max(1, fan_out/fan_in) (`adjust_lr_fn="original"`, Keller
Jordan's factor), so the update's spectral norm is lr·√max(1, fan_out/fan_in): already what μP's spectral condition
asks (Θ(√(fan_out/fan_in)), independent of width, since every hidden matrix keeps its aspect ratio as width grows). The
μP-consistent rate is therefore a constant: α·0.2·√M_base, where 0.2·√M_base is Moonshot's AdamW-RMS-matching factor
(0.2·√max(A, B)) taken once, at the base width's square matrix, so one α serves Muon and the AdamW tensors.
Multiplying by μP's 1/wm as well ("double scaling", fixed in Megatron-LM PR #3715) would shrink Muon's updates as
1/width; `adjust_lr_fn="match_rms_adamw"` alone would grow them as √width. Neither is done here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

ROLES = (
    "embedding",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_o",
    "ff_in",
    "ff_out",
    "unembedding",
    "gain",
    "bias",
)
HIDDEN_ROLES = ("attn_q", "attn_k", "attn_v", "attn_o", "ff_in", "ff_out")


@dataclass(frozen=True)
class Formula:
    """A number as a function of (fan_in, width, base_width), with the text `explain` prints."""

    text: str
    fn: Callable[[int, int, int], float]

    def __call__(self, fan_in: int, width: int, base_width: int) -> float:
        return float(self.fn(fan_in, width, base_width))


@dataclass(frozen=True)
class Rule:
    init: str  # "normal" (std below), "ones" or "zeros"
    std: Formula
    lr_mult: Formula
    weight_decay: bool  # whether weight decay applies to this role


ONE = Formula("1", lambda f, m, b: 1.0)
ZERO = Formula("0", lambda f, m, b: 0.0)
INV_SQRT_FAN_IN = Formula("fan_in^-1/2", lambda f, m, b: f**-0.5)
INV_FAN_IN = Formula("1/fan_in", lambda f, m, b: 1.0 / f)
INV_WIDTH_MULT = Formula("1/wm", lambda f, m, b: b / m)
# Muon's hidden-matrix LR multiplier (see the module docstring): constant in width; torch adds √max(1, fan_out/fan_in).
MUON_HIDDEN = Formula("0.2·√M_base (Muon adds √max(1,out/in))", lambda f, m, b: 0.2 * b**0.5)
MUON_ADJUST_LR_FN = "original"

_MATRIX_SP = Rule("normal", INV_SQRT_FAN_IN, ONE, True)
_MATRIX_MUP = Rule("normal", INV_SQRT_FAN_IN, INV_WIDTH_MULT, True)
_SHARED = {
    "embedding": Rule("normal", ONE, ONE, True),
    "gain": Rule("ones", ONE, ONE, False),
    "bias": Rule("zeros", ZERO, ONE, False),
}

PARAMETERIZATIONS: dict[str, dict[str, Rule]] = {
    "sp": {**_SHARED, **{r: _MATRIX_SP for r in HIDDEN_ROLES}, "unembedding": _MATRIX_SP},
    "mup": {
        **_SHARED,
        **{r: _MATRIX_MUP for r in HIDDEN_ROLES},
        "unembedding": Rule("normal", INV_FAN_IN, INV_WIDTH_MULT, True),
    },
}

# The `unembedding_init` switch: "default" keeps the parameterization's rule.
UNEMBEDDING_STD = {"mup": INV_FAN_IN, "sp": INV_SQRT_FAN_IN, "zero": ZERO}


def rule(parameterization: str, role: str) -> Rule:
    return PARAMETERIZATIONS[parameterization][role]


def init_std(cfg, role: str, fan_in: int) -> float:
    """The init std of a normal-initialised tensor of `role` in a model built from ModelConfig `cfg`."""
    if role == "attn_q" and cfg.query_init == "zero":
        return 0.0
    if role == "unembedding" and cfg.unembedding_init != "default":
        return UNEMBEDDING_STD[cfg.unembedding_init](fan_in, cfg.width, cfg.base_width)
    return rule(cfg.parameterization, role).std(fan_in, cfg.width, cfg.base_width)


def lr_formula(cfg, role: str, optimizer: str = "adamw") -> Formula:
    """The LR multiplier's formula for `role`: the table's, unless a switch or the optimizer overrides it."""
    if optimizer == "muon" and role in HIDDEN_ROLES:
        return MUON_HIDDEN
    if role == "embedding" and getattr(cfg, "embedding_lr", "default") == "inv_wm":
        return INV_WIDTH_MULT
    return rule(cfg.parameterization, role).lr_mult


def lr_mult(cfg, role: str, optimizer: str = "adamw") -> float:
    return lr_formula(cfg, role, optimizer)(0, cfg.width, cfg.base_width)
