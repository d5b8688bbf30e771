"""Optimizers with per-tensor learning rates from the parameterization, weight-decay forms, and LR schedules.

Every parameter group carries `peak_lr` (α × the role's LR multiplier `mult`); `set_lr(optimizer, s)` sets each group's
rate to peak_lr · s for the schedule value s ∈ (0, 1]. Weight decay uses the optimizer's own decoupled decay
(p ← p − lr_group · wd_group · p: the same form in AdamW, lion-pytorch and torch's Muon), with wd_group chosen per form:

    coupled      wd_group = λ              → p ← p − s(t) · α · mult · λ · p   (Lingle; shrinks as 1/wm under μP)
    independent  wd_group = λ / (α · mult) → p ← p − s(t) · λ · p             (Lingle's later code: any width, any α)
    mup_adamw    wd_group = λ / mult       → p ← p − s(t) · α · λ · p         (microsoft/mup's MuAdam: λ·wm, so lr·λ
                                                                                stays fixed across widths)

A tensor's AdamW timescale is τ = 1 / (lr_group · wd_group) steps at the peak rate; over a run its decay exposure is
Σ_t s(t) · lr_group · wd_group = T_eff / τ with T_eff = Σ_t s(t) (ablations/weight_decay.py sets λ from it).
`weight_decay_tensors` says which tensors decay: "matrices" (embedding, hidden matrices, unembedding — common
practice) or "all" (gains and biases too, as Lingle's optax.adamw does with no mask). With `eps_scaling` each AdamW
group's ε is ε × mult (Lingle's later `use_eps_scaling`; Everett et al. 2024). The `muon` optimizer runs torch.optim.Muon
on the hidden matrices (LR rule in harness/parameterization.py) and AdamW on every other tensor.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from mupbench.config import WEIGHT_DECAY_MODES, wsd_decay_start
from mupbench.errors import UserError
from mupbench.parameterization import HIDDEN_ROLES, MUON_ADJUST_LR_FN, depth_factor, in_block, lr_mult, rule


def parameter_groups(
    model: nn.Module, lr: float, weight_decay: float, weight_decay_mode: str, roles=None, cfg=None, *,
    weight_decay_tensors: str = "matrices", optimizer: str = "adamw", eps: float | None = None, eps_scaling: bool = False,
) -> list[dict]:
    """One optimizer group per (LR multiplier, decays, optimizer) triple, from the model's parameter roles.

    `roles` ((name, parameter, role) triples) and `cfg` (anything with parameterization, width, base_width) default
    to a built-in model's own; harness/byo passes them for a model of the user's. Groups for torch's Muon (the hidden
    matrices under optimizer "muon") carry "optimizer": "muon" and Muon's `adjust_lr_fn`; the others "adamw"/"lion".
    With `eps_scaling` (and `eps`) every non-Muon group carries its own "eps" = eps × its LR multiplier; inside the
    residual blocks the depth rule's LR and ε factors multiply in (harness/parameterization.py).
    """
    from mupbench.model import parameter_roles

    cfg = model.cfg if cfg is None else cfg
    roles = [(name, p, role) for name, p, role, _ in parameter_roles(model)] if roles is None else roles
    groups: dict[tuple[float, bool, bool, float], dict] = {}
    for name, p, role in roles:
        block = in_block(name)
        mult = lr_mult(cfg, role, optimizer, in_block=block)
        # ε follows the width LR rule (eps_scaling) and the depth rule's own ε factor, not the depth LR factor
        eps_mult = (lr_mult(cfg, role, optimizer) if eps_scaling else 1.0) * (depth_factor(cfg, "eps_mult") if block else 1.0)
        decays = weight_decay > 0 and (weight_decay_tensors == "all" or rule(cfg.parameterization, role).weight_decay)
        muon = optimizer == "muon" and role in HIDDEN_ROLES and p.ndim == 2
        group = groups.setdefault((mult, decays, muon, eps_mult),
                                  {"params": [], "names": [], "lr_mult": mult, "roles": set()})
        group["params"].append(p)
        group["names"].append(name)
        group["roles"].add(role)
    out = []
    for (mult, decays, muon, eps_mult), group in groups.items():
        peak = lr * mult
        wd = group_weight_decay(weight_decay_mode, weight_decay, lr, mult) if decays else 0.0
        extra = {"optimizer": "muon", "adjust_lr_fn": MUON_ADJUST_LR_FN} if muon else {}
        if not muon and eps is not None and (eps_scaling or eps_mult != 1.0):
            extra["eps"] = eps * eps_mult
        out.append({**group, "roles": sorted(group["roles"]), "lr": peak, "peak_lr": peak, "weight_decay": wd, **extra})
    return out


def group_weight_decay(mode: str, weight_decay: float, lr: float, mult: float) -> float:
    """wd_group of a group at rate lr·mult for decay λ = `weight_decay` in form `mode` (the module docstring's table)."""
    if mode == "coupled":
        return weight_decay
    if mode == "independent":
        return weight_decay / (lr * mult)
    if mode == "mup_adamw":
        return weight_decay / mult
    raise UserError(f"weight_decay_mode={mode!r} is not one of: {', '.join(WEIGHT_DECAY_MODES)}")


def build_optimizer(
    model: nn.Module,
    lr: float,
    optimizer: str = "adamw",
    weight_decay: float = 0.0,
    weight_decay_mode: str = "coupled",
    betas: tuple[float, float] | None = None,
    eps: float = 1e-8,
    groups: list[dict] | None = None,
    weight_decay_tensors: str = "matrices",
    eps_scaling: bool = False,
) -> torch.optim.Optimizer:
    """A torch optimizer whose per-tensor learning rates follow the model's parameterization.

    `lr` is the base rate α. Lion defaults to betas (0.95, 0.98) and AdamW to (0.9, 0.95); Muon (on the hidden
    matrices) uses torch's defaults, momentum 0.95 with Nesterov, and AdamW with `betas` on the rest. `groups` (each
    with `peak_lr`) replaces the groups made from the model's roles (harness/byo makes them for a user's model).
    """
    if not (math.isfinite(lr) and lr > 0):
        raise UserError(f"learning rate must be a positive number, got {lr!r}")
    if weight_decay_mode not in WEIGHT_DECAY_MODES:
        raise UserError(f"weight_decay_mode={weight_decay_mode!r} is not one of: {', '.join(WEIGHT_DECAY_MODES)}")
    if groups is None:
        groups = parameter_groups(model, lr, weight_decay, weight_decay_mode, weight_decay_tensors=weight_decay_tensors,
                                  optimizer=optimizer, eps=eps, eps_scaling=eps_scaling)
    if optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas or (0.9, 0.95), eps=eps)
    if optimizer == "lion":
        from lion_pytorch import Lion  # never its Triton path: a failed triton import there exits the process

        return Lion(groups, lr=lr, betas=betas or (0.95, 0.98), use_triton=False)
    if optimizer == "muon":
        muon = [g for g in groups if g.get("optimizer") == "muon"]
        if not muon:
            raise UserError("optimizer=muon found no hidden matrix to give Muon: it needs parameter groups by role")
        rest = [g for g in groups if g.get("optimizer") != "muon"]
        return MuonWithAdamW(torch.optim.Muon(muon, lr=lr, adjust_lr_fn=MUON_ADJUST_LR_FN),
                             torch.optim.AdamW(rest, lr=lr, betas=betas or (0.9, 0.95), eps=eps) if rest else None)
    raise UserError(f"optimizer={optimizer!r} is not one of: adamw, lion, muon")


class MuonWithAdamW:
    """torch.optim.Muon on the hidden matrices and AdamW on the other tensors, stepped as one optimizer.

    `param_groups` lists both optimizers' groups (the same dicts), so `set_lr` schedules them together.
    """

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer | None):
        self.optimizers = [o for o in (muon, adamw) if o is not None]

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        for o, s in zip(self.optimizers, state["optimizers"]):
            o.load_state_dict(s)


def set_lr(opt: torch.optim.Optimizer, scale: float) -> None:
    for group in opt.param_groups:
        group["lr"] = group["peak_lr"] * scale


def schedule(step: int, steps: int, warmup: int, kind: str, floor: float = 1e-4, decay_fraction: float = 0.2) -> float:
    """The LR multiplier s(t) for step t in [0, steps): linear warmup from `floor` to 1, then

    linear  — linear decay to `floor` at the last step (Lingle's baseline);
    cosine  — cosine decay to `floor`;
    wsd     — stay at 1, then decay linearly to `floor` over the last `decay_fraction` of steps (from
              mupbench.config.wsd_decay_start, which the duration sweeps' checkpoints rely on).
    """
    if step < warmup:
        return floor + (1.0 - floor) * step / warmup
    last = max(steps - 1, 1)
    if kind == "wsd":
        start = wsd_decay_start(steps, warmup, decay_fraction)
        if step < start:
            return 1.0
        progress = (step - start) / max(last - start, 1)
        return 1.0 - (1.0 - floor) * min(progress, 1.0)
    progress = min((step - warmup) / max(last - warmup, 1), 1.0)
    if kind == "linear":
        return 1.0 - (1.0 - floor) * progress
    if kind == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise UserError(f"schedule={kind!r} is not one of: linear, cosine, wsd")
