"""A user's model ready to train: (re-)initialisation, optimizer groups (its own hook or the table's), and run specs
that carry the model."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from mupbench.byo.loading import call_factory, check_backward, check_forward, load_factory, source_from_entry
from mupbench.byo.shapes import TensorInfo, infer, partner_width
from mupbench.config import BYO_SPEC_KEY as SPEC_KEY
from mupbench.errors import UserError
from mupbench.parameterization import PARAMETERIZATIONS, rule

HOOK_GROUPS = "mup_parameter_groups"
STORE_META_KEY = "byo_model"  # store meta: the model a sweep directory belongs to


@dataclass(frozen=True)
class Scale:
    """Anything the table's formulas need: duck-types ModelConfig for parameterization.lr_mult."""

    parameterization: str
    width: int
    base_width: int


@torch.no_grad()
def reinitialise(model: nn.Module, infos: dict[str, TensorInfo], scale: Scale) -> None:
    """Initialise every width-scaling tensor (and 1-D gains/biases) by the parameterization table."""
    for name, p in model.named_parameters():
        info = infos[name]
        if info.kind == "fixed" and p.ndim > 1:
            continue  # a fixed-size matrix: nothing in the table describes it, keep the model's own init
        r = rule(scale.parameterization, info.role)
        if r.init == "ones":
            p.fill_(1.0)
        elif r.init == "zeros":
            p.zero_()
        else:
            std = r.std(info.fan_in, scale.width, scale.base_width)
            p.normal_(0.0, std) if std > 0 else p.zero_()


def uses_hook(model: nn.Module, parameterization: str) -> bool:
    return parameterization == "mup" and callable(getattr(model, HOOK_GROUPS, None))


def parameter_groups(model: nn.Module, infos: dict[str, TensorInfo], scale: Scale, lr: float,
                     weight_decay: float = 0.0, weight_decay_mode: str = "coupled", label: str = "model",
                     **table_options) -> list[dict]:
    """Optimizer groups: the model's own (`mup_parameter_groups`, under μP) or the table's by inferred role
    (`table_options`: mupbench.optim.parameter_groups' keyword options, e.g. weight_decay_tensors, optimizer)."""
    from mupbench.optim import parameter_groups as table_groups

    if uses_hook(model, scale.parameterization):
        return _hook_groups(model, lr, weight_decay, weight_decay_mode, label)
    roles = [(name, p, infos[name].role) for name, p in model.named_parameters() if p.requires_grad]
    return table_groups(model, lr, weight_decay, weight_decay_mode, roles=roles, cfg=scale, **table_options)


# Keys of a hook's group besides params, lr and weight_decay: HONOURED ones go to AdamW as the group's own settings;
# the rest of torch's Adam/AdamW group keys are accepted at the value AdamW uses anyway (so MuAdamW(...).param_groups
# can be returned as is); anything else is refused, never silently passed on.
HONOURED_KEYS = ("betas", "eps")
NEUTRAL_KEYS = {"amsgrad": False, "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
                "fused": None, "decoupled_weight_decay": True, "initial_lr": None}


def _optimizer_settings(group: dict, i: int, weight_decay: float, label: str) -> dict:
    """The hook group's AdamW settings to keep (betas, eps), refusing keys that would change what AdamW does."""
    kept = {}
    for key, value in group.items():
        if key in ("params", "lr", "weight_decay", "initial_lr"):
            continue
        if key in HONOURED_KEYS:
            kept[key] = tuple(value) if key == "betas" else value
        elif key == "decoupled_weight_decay" and not value and not weight_decay:
            continue  # Adam's L2 form with no decay: nothing to change
        elif key not in NEUTRAL_KEYS or value != NEUTRAL_KEYS[key]:
            raise UserError(f"--model {label}: {HOOK_GROUPS} group {i} sets {key}={value!r}, which mupbench does not "
                            f"apply (its optimizer is AdamW with decoupled decay; a group may set only lr, "
                            f"weight_decay, {', '.join(HONOURED_KEYS)})")
    return kept


def hook_sets_weight_decay(factory, width: int, label: str) -> bool:
    """Whether the model's own optimizer groups fix weight_decay (so a weight-decay ablation cannot apply)."""
    model = call_factory(factory, width, label)
    if not uses_hook(model, "mup"):
        return False
    groups = getattr(model, HOOK_GROUPS)(1e-3)
    return any(isinstance(g, dict) and "weight_decay" in g for g in groups or [])


def _hook_groups(model, lr, weight_decay, weight_decay_mode, label) -> list[dict]:
    from mupbench.optim import group_weight_decay

    try:
        groups = getattr(model, HOOK_GROUPS)(lr)
    except (Exception, SystemExit) as e:
        raise UserError(f"--model {label}: {HOOK_GROUPS}({lr:g}) raised {type(e).__name__}: {e}") from None
    names = {id(p): n for n, p in model.named_parameters()}
    seen: dict[int, str] = {}
    out = []
    for i, group in enumerate(groups if isinstance(groups, (list, tuple)) else [None]):
        if not isinstance(group, dict) or "params" not in group or "lr" not in group:
            raise UserError(f"--model {label}: {HOOK_GROUPS} must return a list of dicts with 'params' and 'lr'")
        params = list(group["params"])
        for p in params:
            if id(p) not in names:
                raise UserError(f"--model {label}: {HOOK_GROUPS} group {i} holds a tensor that is not a model parameter")
            if id(p) in seen:
                raise UserError(f"--model {label}: {HOOK_GROUPS} puts {names[id(p)]} in two groups")
            seen[id(p)] = names[id(p)]
        peak = float(group["lr"])
        if not (math.isfinite(peak) and peak >= 0):
            raise UserError(f"--model {label}: {HOOK_GROUPS}({lr:g}) gives group {i} the learning rate {peak:g}: "
                            "learning rates must be finite and not negative")
        if "weight_decay" in group:
            wd = float(group["weight_decay"])
            if weight_decay:
                raise UserError(f"--model {label}: {HOOK_GROUPS} sets weight_decay ({wd:g} in group {i}) while this "
                                f"run applies weight decay {weight_decay:g} ({weight_decay_mode}): drop weight_decay "
                                "from the hook's groups to run weight-decay ablations")
        else:
            wd = group_weight_decay(weight_decay_mode, weight_decay, lr, peak / lr) if weight_decay else 0.0
        extra = _optimizer_settings(group, i, wd, label)
        out.append({**extra, "params": params, "names": [names[id(p)] for p in params], "lr": peak, "peak_lr": peak,
                    "lr_mult": peak / lr, "weight_decay": wd})
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise UserError(f"--model {label}: {HOOK_GROUPS} leaves out {', '.join(missing[:3])}"
                        + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""))
    return out


# --- one model, ready to train ---------------------------------------------------------------------------------------
@dataclass
class Prepared:
    model: nn.Module
    infos: dict[str, TensorInfo]
    scale: Scale
    label: str
    reinit: bool

    def groups(self, lr: float, weight_decay: float = 0.0, weight_decay_mode: str = "coupled",
               **table_options) -> list[dict]:
        return parameter_groups(self.model, self.infos, self.scale, lr, weight_decay, weight_decay_mode, self.label,
                                **table_options)

    @property
    def lr_source(self) -> str:
        if uses_hook(self.model, self.scale.parameterization):
            return f"the model's {HOOK_GROUPS}"
        return f"the {self.scale.parameterization} table by inferred role"


def prepare(factory, width: int, base_width: int, parameterization: str, reinit: bool, label: str,
            infos: dict[str, TensorInfo] | None = None, other_width: int | None = None) -> Prepared:
    """Build the model at `width` (from torch's global RNG: seed it first), infer roles, re-initialise if asked."""
    if parameterization not in PARAMETERIZATIONS:
        raise UserError(f"parameterization {parameterization!r} is not one of: {', '.join(PARAMETERIZATIONS)}")
    model = call_factory(factory, width, label)  # first, so its init is the seed's whatever inference does
    if infos is None:
        with torch.random.fork_rng(devices=[]):
            infos = infer(factory, width, other_width or 2 * width, label)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    if set(shapes) != set(infos):
        raise UserError(f"--model {label}: factory({width}) has different parameters from the model roles were inferred on")
    infos = {n: (i if i.shape == shapes[n] else dataclasses.replace(i, shape=shapes[n])) for n, i in infos.items()}
    scale = Scale(parameterization, width, base_width)
    if reinit:
        reinitialise(model, infos, scale)
    return Prepared(model, infos, scale, label, reinit)


def validate(factory, widths, base_width: int, parameterizations, reinit: bool, label: str, lr: float,
             vocab_size: int | None = None) -> None:
    """Everything the runs will ask of the model, asked once before any training, so that a broken model or hook is
    one line (exit 2) and not one failed run per width: roles at two widths (a factory that ignores its width, tied
    weights without mup_roles, a raising mup_roles), then at the smallest width under each parameterization the
    parameters' device, the optimizer groups (a raising mup_parameter_groups, a parameter left out or listed twice),
    and one forward (logits (B, T, V), V at least `vocab_size`) and backward pass."""
    widths = sorted(widths)
    infos = infer(factory, widths[0], partner_width(widths[0], widths), label)
    for parameterization in parameterizations:
        prepared = prepare(factory, widths[0], base_width, parameterization, reinit, label, infos=infos)
        on_meta = [n for n, p in prepared.model.named_parameters() if p.is_meta]
        if on_meta:
            raise UserError(f"--model {label}: factory({widths[0]}) puts {', '.join(on_meta[:3])} on the meta device "
                            "(no data to train): build the model on a real device")
        prepared.groups(lr)
        check_forward(prepared.model, label, vocab_size)
        check_backward(prepared.model, label)


# --- sweeps: run specs that carry a model ---------------------------------------------------------------------------
def is_byo(spec) -> bool:
    return SPEC_KEY in (spec.extra or {})


def build_for_spec(spec) -> Prepared:
    """The model of a BYO run spec at its width (seed torch first), with roles inferred against twice the width."""
    entry = spec.extra[SPEC_KEY]
    source = source_from_entry(entry)
    factory = load_factory(source)
    cfg = spec.model
    return prepare(factory, cfg.width, cfg.base_width, cfg.parameterization, entry["reinit"], source.label)


def with_model(specs: list, entry: dict) -> list:
    """The specs of `mupbench run --model`: each carries the user's model (`entry`, ModelSource.to_json)."""
    return [dataclasses.replace(s, extra={**s.extra, SPEC_KEY: entry}) for s in specs]


def model_entry(specs: list) -> dict | None:
    """The user's model the specs carry, if any (what a sweep directory records as the model it belongs to)."""
    return next((s.extra[SPEC_KEY] for s in specs if is_byo(s)), None)


def model_field_changes(ablation, base: dict) -> list[str]:
    """The model fields an ablation changes that a BYO factory cannot follow (all but the parameterization)."""
    return [k for k in ablation.changes(base) if k.startswith("model.") and k != "model.parameterization"]


