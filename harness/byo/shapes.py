"""Shape inference: which parameterization-table role each parameter of a user's model takes, from its shapes at two
widths (the way microsoft/mup's set_base_shapes tells hidden from vector-like tensors)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn as nn

from mupbench.byo.loading import call_factory
from mupbench.errors import UserError
from mupbench.parameterization import HIDDEN_ROLES, PARAMETERIZATIONS, ROLES

HOOK_ROLES = "mup_roles"

# Every hidden role shares one rule in every parameterization, so a matrix-like tensor can take any of them.
MATRIX_ROLE = "ff_in"
assert all(len({PARAMETERIZATIONS[p][r] for r in HIDDEN_ROLES}) == 1 for p in PARAMETERIZATIONS), (
    "hidden roles no longer share one rule: harness/byo/shapes.py must learn to tell them apart"
)
KIND_ROLE = {"matrix": MATRIX_ROLE, "input": "embedding", "output": "unembedding"}
KIND_TEXT = {
    "matrix": "matrix-like (hidden)",
    "input": "input-like (embedding)",
    "output": "output-like (readout)",
    "vector": "vector-like (width-sized)",
    "fixed": "fixed size",
}



@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    kind: str  # matrix | input | output | vector | fixed
    role: str  # a parameterization-table role
    in_dims: tuple[int, ...]  # the dimensions that make up fan_in
    source: str  # "inferred" or "mup_roles"

    @property
    def fan_in(self) -> int:
        return math.prod(self.shape[d] for d in self.in_dims) if self.shape else 1


def _owners(model: nn.Module) -> dict[str, nn.Module]:
    out = {}
    for module_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            full = f"{module_name}.{pname}" if module_name else pname
            out.setdefault(full, module)
    return out


def _fan_dims(module: nn.Module, ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(fan_out dims, fan_in dims) of a parameter of `ndim` dims owned by `module`."""
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return (1,), (0,)
    return (0,), tuple(range(1, ndim))


def _classify(name: str, shape_a, shape_b, module: nn.Module) -> tuple[str, str, tuple[int, ...], set[int]]:
    """(kind, role, fan_in dims, scaling dims) of one parameter from its shapes at two widths."""
    scaling = {i for i, (a, b) in enumerate(zip(shape_a, shape_b)) if a != b}
    is_bias = name.rsplit(".", 1)[-1] == "bias"
    vector_role = "bias" if is_bias else "gain"
    if len(shape_a) <= 1:
        return ("vector" if scaling else "fixed"), vector_role, tuple(range(len(shape_a))), scaling
    out_dims, in_dims = _fan_dims(module, len(shape_a))
    out_scales, in_scales = bool(scaling & set(out_dims)), bool(scaling & set(in_dims))
    kind = {(True, True): "matrix", (True, False): "input", (False, True): "output", (False, False): "fixed"}[
        (out_scales, in_scales)]
    return kind, KIND_ROLE.get(kind, vector_role), in_dims, scaling


def _override_in_dims(role: str, ndim: int, scaling: set[int], in_dims: tuple[int, ...]) -> tuple[int, ...]:
    """fan_in dims for a tensor whose role the model names: a readout's fan_in is the width-scaling dim, an
    embedding's the fixed one, whatever the layout; otherwise torch's (fan_out, fan_in...) layout."""
    if ndim < 2 or len(scaling) != 1:
        return in_dims
    if role == "unembedding":
        return tuple(sorted(scaling))
    if role == "embedding":
        return tuple(d for d in range(ndim) if d not in scaling)
    return in_dims


def _hook_roles(model: nn.Module, label: str) -> dict[str, str]:
    roles = getattr(model, HOOK_ROLES, None)
    if roles is None:
        return {}
    if callable(roles):
        try:
            roles = roles()
        except (Exception, SystemExit) as e:  # user code: one line
            raise UserError(f"--model {label}: {HOOK_ROLES}() raised {type(e).__name__}: {e}") from None
    if not isinstance(roles, dict):
        raise UserError(f"--model {label}: {HOOK_ROLES} must be a dict from parameter name to role")
    names = dict(model.named_parameters())
    for name, role in roles.items():
        if name not in names:
            raise UserError(f"--model {label}: {HOOK_ROLES} names {name!r}, which is not a parameter of the model")
        if role not in ROLES:
            raise UserError(f"--model {label}: {HOOK_ROLES}[{name!r}] = {role!r} is not one of: {', '.join(ROLES)}")
    return roles


_ROLE_KIND = {"embedding": "input", "unembedding": "output", "gain": "vector", "bias": "vector",
              **{r: "matrix" for r in HIDDEN_ROLES}}


def infer(factory, width: int, other_width: int, label: str) -> dict[str, TensorInfo]:
    """Every parameter's kind and table role at `width`, by comparing the model at `width` and `other_width`."""
    if width == other_width:
        raise UserError(f"--model {label}: shape inference needs two different widths")
    models = []
    for w in (width, other_width):
        try:
            models.append(call_factory(factory, w, label, device="meta"))
        except UserError:  # a factory that cannot build on the meta device: build it for real
            models.append(call_factory(factory, w, label))
    a, b = (dict(m.named_parameters()) for m in models)
    if list(a) != list(b):
        only = sorted(set(a) ^ set(b))[:3]
        raise UserError(f"--model {label}: factory({width}) and factory({other_width}) have different parameters "
                        f"({', '.join(only) or 'order differs'}): the depth and structure must not depend on width")
    if not a:
        raise UserError(f"--model {label}: factory({width}) has no parameters: there is nothing to train")
    owners = _owners(models[0])
    overrides = _hook_roles(models[0], label)
    _check_tied(models[0], overrides, label)
    out = {}
    for name, p in a.items():
        shape_a, shape_b = tuple(p.shape), tuple(b[name].shape)
        if len(shape_a) != len(shape_b):
            raise UserError(f"--model {label}: parameter {name} has shape {shape_a} at width {width} "
                            f"but {shape_b} at width {other_width}")
        kind, role, in_dims, scaling = _classify(name, shape_a, shape_b, owners[name])
        source = "inferred"
        if name in overrides:
            role, source = overrides[name], HOOK_ROLES
            kind = _ROLE_KIND[role] if kind != "fixed" else "fixed"
            in_dims = _override_in_dims(role, len(shape_a), scaling, in_dims)
        out[name] = TensorInfo(name, shape_a, kind, role, in_dims, source)
    if all(i.kind == "fixed" for i in out.values()):
        raise UserError(f"--model {label}: no parameter's shape changes between factory({width}) and "
                        f"factory({other_width}): the factory ignores its width argument, so there is no width to "
                        "transfer across (build the model from `width`)")
    return out


def _check_tied(model: nn.Module, overrides: dict[str, str], label: str) -> None:
    """A parameter shared under several names (tied embedding and unembedding) takes one role, the first name's, and
    with it that role's learning rate: refused unless mup_roles names it or the model's own mup_parameter_groups sets
    its rates, since μP gives the embedding and the readout different rules."""
    if callable(getattr(model, "mup_parameter_groups", None)):
        return
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    for shared in (n for n in names.values() if len(n) > 1):
        if not any(n in overrides for n in shared):
            raise UserError(f"--model {label}: {' and '.join(shared[:2])} are one tensor (tied weights), which would "
                            f"silently take {shared[0]}'s role: say which rule it follows in {HOOK_ROLES}, e.g. "
                            f"{{{shared[0]!r}: 'embedding'}} (or 'unembedding'), set its rate in mup_parameter_groups, "
                            "or untie them")


def partner_width(width: int, widths=()) -> int:
    """The second width to compare against: another width of the sweep, or twice `width`."""
    others = [w for w in widths if w != width]
    return others[0] if others else 2 * width


def describe(infos: dict[str, TensorInfo]) -> str:
    counts: dict[str, int] = {}
    for info in infos.values():
        counts[info.kind] = counts.get(info.kind, 0) + 1
    return ", ".join(f"{n} {KIND_TEXT[k]}" for k, n in counts.items())
