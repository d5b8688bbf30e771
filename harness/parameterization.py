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

Depth has its own table (`depth_parameterization`), applied on top of the width rules to what lies inside the residual
blocks. With L the depth, L_base the base depth and m_L = L / L_base, each block adds m_L^-α · branch(x) to the
residual stream, and under Adam the tensors inside a branch take the LR and ε that keep their updates' effect on the
residual stream Θ(1/L) per block (Θ(1) in total):

    depth_parameterization   α     branch mult   hidden & in-block gain/bias LR   in-block Adam ε   init
    standard                 –     1             1                                1                 unchanged
    depth_mup                1/2   m_L^-1/2      m_L^-1/2                         m_L^-1/2          unchanged
    completep                1     m_L^-1        1                                m_L^-1            unchanged

depth_mup is Depth-μP (Bordelon et al. 2023, arXiv 2309.16620; Yang et al. 2023, "Tensor Programs VI", 2310.02244:
branches × 1/√L and, for Adam, block LRs × 1/√L); completep is CompleteP (Dey et al. 2025, arXiv 2505.01618: α = 1,
LR m_L^(α−1) = 1, ε m_L^-α, init variance unchanged with depth). Both are the α-family of CompleteP's Table 1. The
embedding, the final norm and the unembedding sit outside every branch and keep their width rules. Weight decay is
not rescaled with depth: under completep lr·λ is unchanged anyway; under depth_mup with λ > 0 the per-step decay
shrinks as m_L^-1/2 (CompleteP's table would raise λ by m_L^(1−α) to hold it; the depth suite trains with λ = 0).
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


@dataclass(frozen=True)
class DepthFormula:
    """A factor as a function of (depth, base_depth), with the text `explain` prints."""

    text: str
    fn: Callable[[int, int], float]

    def __call__(self, depth: int, base_depth: int) -> float:
        return float(self.fn(depth, base_depth))


@dataclass(frozen=True)
class DepthRule:
    alpha: float | None  # the branch exponent (None: no depth scaling at all)
    branch_mult: DepthFormula  # on every residual branch's output
    lr_mult: DepthFormula  # on the LR of every tensor inside a branch (hidden matrices, in-block gains and biases)
    eps_mult: DepthFormula  # on Adam's ε of those tensors
    init_mult: DepthFormula  # on the init std of those tensors


DEPTH_ONE = DepthFormula("1", lambda d, b: 1.0)
DEPTH_INV_SQRT = DepthFormula("m_L^-1/2", lambda d, b: (d / b) ** -0.5)
DEPTH_INV = DepthFormula("m_L^-1", lambda d, b: b / d)

DEPTH_PARAMETERIZATIONS: dict[str, DepthRule] = {
    "standard": DepthRule(None, DEPTH_ONE, DEPTH_ONE, DEPTH_ONE, DEPTH_ONE),
    "depth_mup": DepthRule(0.5, DEPTH_INV_SQRT, DEPTH_INV_SQRT, DEPTH_INV_SQRT, DEPTH_ONE),
    "completep": DepthRule(1.0, DEPTH_INV, DEPTH_ONE, DEPTH_INV, DEPTH_ONE),
}


def depth_rule(cfg) -> DepthRule:
    return DEPTH_PARAMETERIZATIONS[getattr(cfg, "depth_parameterization", "standard")]


def depth_factor(cfg, what: str) -> float:
    """`what` ∈ branch_mult, lr_mult, eps_mult, init_mult: that factor of `cfg`'s depth rule at its depth. 1 under the
    standard rule — and for anything without a depth rule (a user's model: harness/byo scales width only)."""
    rule = depth_rule(cfg)
    if rule.alpha is None:
        return 1.0
    return getattr(rule, what)(cfg.depth, cfg.base_depth)


def rule(parameterization: str, role: str) -> Rule:
    return PARAMETERIZATIONS[parameterization][role]


def init_std(cfg, role: str, fan_in: int, in_block: bool = False) -> float:
    """The init std of a normal-initialised tensor of `role` in a model built from ModelConfig `cfg`; `in_block`: the
    tensor lies inside a residual branch, where the depth rule's init factor applies."""
    if role == "attn_q" and cfg.query_init == "zero":
        return 0.0
    if role == "unembedding" and cfg.unembedding_init != "default":
        return UNEMBEDDING_STD[cfg.unembedding_init](fan_in, cfg.width, cfg.base_width)
    std = rule(cfg.parameterization, role).std(fan_in, cfg.width, cfg.base_width)
    return std * depth_factor(cfg, "init_mult") if in_block else std


def lr_formula(cfg, role: str, optimizer: str = "adamw") -> Formula:
    """The LR multiplier's formula for `role`: the table's, unless a switch or the optimizer overrides it."""
    if optimizer == "muon" and role in HIDDEN_ROLES:
        return MUON_HIDDEN
    if role == "embedding" and getattr(cfg, "embedding_lr", "default") == "inv_wm":
        return INV_WIDTH_MULT
    return rule(cfg.parameterization, role).lr_mult


def lr_mult(cfg, role: str, optimizer: str = "adamw", in_block: bool = False) -> float:
    """The LR multiplier of a tensor of `role`: the width rule's, times the depth rule's for a tensor inside a block."""
    mult = lr_formula(cfg, role, optimizer)(0, cfg.width, cfg.base_width)
    return mult * depth_factor(cfg, "lr_mult") if in_block else mult


def in_block(name: str) -> bool:
    """Whether a built-in model's parameter lies inside a residual block (its name starts with `blocks.`)."""
    return name.startswith("blocks.")
