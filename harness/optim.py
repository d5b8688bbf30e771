"""Optimizers with per-tensor learning rates from the parameterization, weight-decay forms, and LR schedules.

Every parameter group carries `peak_lr` (α × the role's LR multiplier); `set_lr(optimizer, s)` sets each group's rate
to peak_lr · s for the schedule value s ∈ (0, 1]. Weight decay uses the optimizer's own decoupled decay
(p ← p − lr_group · wd_group · p, the same form in AdamW and lion-pytorch), with wd_group chosen per form:

    coupled      wd_group = λ              → p ← p − s(t) · α · mult · λ · p   (shrinks with width under μP)
    independent  wd_group = λ / (α · mult) → p ← p − s(t) · λ · p             (the same at every width and LR)
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from harness.errors import UserError
from harness.parameterization import lr_mult, rule


def parameter_groups(
    model: nn.Module, lr: float, weight_decay: float, weight_decay_mode: str, roles=None, cfg=None
) -> list[dict]:
    """One optimizer group per (LR multiplier, decays) pair, from the model's parameter roles.

    `roles` ((name, parameter, role) triples) and `cfg` (anything with parameterization, width, base_width) default
    to a built-in model's own; harness/byo passes them for a model of the user's.
    """
    from harness.model import parameter_roles

    cfg = model.cfg if cfg is None else cfg
    roles = [(name, p, role) for name, p, role, _ in parameter_roles(model)] if roles is None else roles
    groups: dict[tuple[float, bool], dict] = {}
    for name, p, role in roles:
        mult = lr_mult(cfg, role)
        decays = rule(cfg.parameterization, role).weight_decay and weight_decay > 0
        group = groups.setdefault((mult, decays), {"params": [], "names": [], "lr_mult": mult, "roles": set()})
        group["params"].append(p)
        group["names"].append(name)
        group["roles"].add(role)
    out = []
    for (mult, decays), group in groups.items():
        peak = lr * mult
        wd = 0.0
        if decays:
            wd = weight_decay if weight_decay_mode == "coupled" else weight_decay / peak
        out.append({**group, "roles": sorted(group["roles"]), "lr": peak, "peak_lr": peak, "weight_decay": wd})
    return out


def build_optimizer(
    model: nn.Module,
    lr: float,
    optimizer: str = "adamw",
    weight_decay: float = 0.0,
    weight_decay_mode: str = "coupled",
    betas: tuple[float, float] | None = None,
    eps: float = 1e-8,
    groups: list[dict] | None = None,
) -> torch.optim.Optimizer:
    """A torch optimizer whose per-tensor learning rates follow the model's parameterization.

    `lr` is the base rate α. Lion defaults to betas (0.95, 0.98) and AdamW to (0.9, 0.95). `groups` (each with
    `peak_lr`) replaces the groups made from the model's roles (harness/byo makes them for a user's model).
    """
    if not (math.isfinite(lr) and lr > 0):
        raise UserError(f"learning rate must be a positive number, got {lr!r}")
    if weight_decay_mode not in ("coupled", "independent"):
        raise UserError(f"weight_decay_mode={weight_decay_mode!r} is not one of: coupled, independent")
    if groups is None:
        groups = parameter_groups(model, lr, weight_decay, weight_decay_mode)
    if optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas or (0.9, 0.95), eps=eps)
    if optimizer == "lion":
        from lion_pytorch import Lion  # never its Triton path: a failed triton import there exits the process

        return Lion(groups, lr=lr, betas=betas or (0.95, 0.98), use_triton=False)
    raise UserError(f"optimizer={optimizer!r} is not one of: adamw, lion")


def set_lr(opt: torch.optim.Optimizer, scale: float) -> None:
    for group in opt.param_groups:
        group["lr"] = group["peak_lr"] * scale


def schedule(step: int, steps: int, warmup: int, kind: str, floor: float = 1e-4, decay_fraction: float = 0.2) -> float:
    """The LR multiplier s(t) for step t in [0, steps): linear warmup from `floor` to 1, then

    linear  — linear decay to `floor` at the last step (Lingle's baseline);
    cosine  — cosine decay to `floor`;
    wsd     — stay at 1, then decay linearly to `floor` over the last `decay_fraction` of steps.
    """
    if step < warmup:
        return floor + (1.0 - floor) * step / warmup
    last = max(steps - 1, 1)
    if kind == "wsd":
        decay_start = max(warmup, steps - max(1, round(decay_fraction * steps)))
        if step < decay_start:
            return 1.0
        progress = (step - decay_start) / max(last - decay_start, 1)
        return 1.0 - (1.0 - floor) * min(progress, 1.0)
    progress = min((step - warmup) / max(last - warmup, 1), 1.0)
    if kind == "linear":
        return 1.0 - (1.0 - floor) * progress
    if kind == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise UserError(f"schedule={kind!r} is not one of: linear, cosine, wsd")
