"""Bring your own model: run coordinate checks and LR sweeps on a team's own PyTorch model.

A model is named `path/to/file.py:factory` or `package.module:factory`, where `factory(width: int) -> nn.Module`
maps token ids (B, T) to logits (B, T, V). The harness needs to know, for every parameter, which μP rule applies;
it finds out the way microsoft/mup's set_base_shapes does: it builds the model at two widths (on the meta device, so
no memory is spent) and compares shapes. A dimension that differs scales with width. With fan_out the first dimension
and fan_in the rest (torch's Linear/Conv layout; nn.Embedding is (fan_in = vocab, fan_out = dim)):

    kind     what scales             example                     table role     μP init        μP LR
    matrix   fan_in and fan_out      attention/MLP projections   hidden         fan_in^-1/2    α / wm
    input    fan_out only            embedding, input projection embedding      1              α
    output   fan_in only             readout / unembedding       unembedding    1/fan_in       α / wm
    vector   a 1-D tensor of width   gains, biases               gain / bias    1 / 0          α
    fixed    nothing                 a scalar gain, vocab bias   gain / bias    (kept)         α

The roles are the parameterization table's (harness/parameterization.py), so SP and μP apply to a user's model by
the same rules as to the built-in one; nothing is duplicated here. wm = width / base width.

Three ways a model can say more (documented in the README, "Gate your own training repo"):

* `model.mup_parameter_groups(lr) -> list[dict]`: the model's own optimizer groups (torch param-group dicts with
  "params" and "lr", optionally "weight_decay") for base rate `lr`. Used as given under μP — this is how a team tests
  the LRs their training code really uses. Every trainable parameter must be in exactly one group.
* `model.mup_roles`: a dict (or a method returning one) from parameter name to a table role, overriding the inference
  for those parameters (e.g. a raw nn.Parameter laid out (fan_in, fan_out), or tied embeddings).
* Initialisation: by default the model's own init is trusted (a team wants to test *their* init) and only learning
  rates are set. `reinit=True` (`--reinit`) re-initialises every width-scaling tensor by the table instead.

Under `sp` the model's hook is not used: SP is one global LR (and, with --reinit, SP init), the counterexample.

A BYO run in a sweep carries `extra["byo_model"]` (the factory's location, its name, the SHA-256 of its source file,
and the reinit flag); RunSpec.identity() hashes the name, digest and flag, so an edited model file is a new run and the
same file is the same run from any directory. The digest covers the factory's own file, not the files it imports.
"""
from __future__ import annotations

import argparse
import contextvars
import dataclasses
import hashlib
import importlib
import importlib.util
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from harness.errors import UserError
from harness.parameterization import HIDDEN_ROLES, PARAMETERIZATIONS, ROLES, rule

SPEC_KEY = "byo_model"  # RunSpec.extra key
STORE_META_KEY = "byo_model"  # store meta: the model a sweep directory belongs to
HOOK_GROUPS = "mup_parameter_groups"
HOOK_ROLES = "mup_roles"

# Every hidden role shares one rule in every parameterization, so a matrix-like tensor can take any of them.
MATRIX_ROLE = "ff_in"
assert all(len({PARAMETERIZATIONS[p][r] for r in HIDDEN_ROLES}) == 1 for p in PARAMETERIZATIONS), (
    "hidden roles no longer share one rule: harness/byo.py must learn to tell them apart"
)
KIND_ROLE = {"matrix": MATRIX_ROLE, "input": "embedding", "output": "unembedding"}
KIND_TEXT = {
    "matrix": "matrix-like (hidden)",
    "input": "input-like (embedding)",
    "output": "output-like (readout)",
    "vector": "vector-like (width-sized)",
    "fixed": "fixed size",
}


# --- naming and loading a factory ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSource:
    """Where a factory lives: `spec` as the user wrote it, the resolved file, and its digest."""

    spec: str
    attr: str
    file: str  # absolute path of the factory's source file
    module: str | None  # the importable module name, when named as package.module
    sha256: str

    @property
    def label(self) -> str:
        return f"{Path(self.file).name}:{self.attr}" if self.module is None else f"{self.module}:{self.attr}"

    def to_json(self, reinit: bool) -> dict:
        return {"spec": self.spec, "file": self.file, "module": self.module, "factory": self.attr,
                "sha256": self.sha256, "reinit": bool(reinit)}

    @staticmethod
    def identity(entry: dict) -> dict:
        """What of a spec's `extra["byo_model"]` changes the result: the factory's name, source digest, reinit flag."""
        return {"factory": entry["factory"], "sha256": entry["sha256"], "reinit": entry["reinit"]}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve(spec: str) -> ModelSource:
    """Parse `file.py:factory` or `package.module:factory` and import it (raising UserError on any problem)."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise UserError(f"--model {spec!r} must be path/to/file.py:factory or package.module:factory")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"--model: model file {target} does not exist")
        module = _import_file(path, spec)
        source = ModelSource(spec, attr, str(path), None, _digest(path))
    else:
        module = _import_module(target, spec)
        file = getattr(module, "__file__", None)
        if not file:
            raise UserError(f"--model: module {target!r} has no source file to identify it by")
        source = ModelSource(spec, attr, str(Path(file).resolve()), target, _digest(Path(file)))
    if not callable(getattr(module, attr, None)):
        raise UserError(f"--model: {source.label} is not a callable factory(width) -> nn.Module")
    return source


def _import_file(path: Path, spec: str):
    name = f"mupbench_model_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    if name in sys.modules and getattr(sys.modules[name], "__mupbench_sha256__", None) == _digest(path):
        return sys.modules[name]
    if str(path.parent) not in sys.path:  # like `python path/to/file.py`: the file's own imports resolve beside it
        sys.path.append(str(path.parent))
    try:
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise UserError(f"--model {spec}: importing {path} failed: {type(e).__name__}: {e}") from None
    module.__mupbench_sha256__ = _digest(path)
    return module


def _import_module(name: str, spec: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        if str(Path.cwd()) not in sys.path:  # like `python -m`: the current directory is importable
            sys.path.insert(0, str(Path.cwd()))
            return _import_module(name, spec)
        raise UserError(f"--model {spec}: cannot import {name!r}: pass a file path or fix PYTHONPATH") from None
    except Exception as e:
        raise UserError(f"--model {spec}: importing {name} failed: {type(e).__name__}: {e}") from None


def load_factory(source: ModelSource) -> Callable[[int], nn.Module]:
    module = _import_module(source.module, source.spec) if source.module else _import_file(Path(source.file), source.spec)
    return getattr(module, source.attr)


def source_from_entry(entry: dict) -> ModelSource:
    """The ModelSource of a run spec's `extra["byo_model"]`, refusing a file that changed since the sweep was planned."""
    path = Path(entry["file"])
    if not path.is_file():
        raise UserError(f"model file {path} (from --model {entry['spec']}) no longer exists")
    digest = _digest(path)
    if digest != entry["sha256"]:
        raise UserError(f"model file {path} changed since this run was planned: re-run the command")
    return ModelSource(entry["spec"], entry["factory"], str(path), entry.get("module"), digest)


def call_factory(factory, width: int, label: str, device: str | torch.device | None = None) -> nn.Module:
    try:
        if device is None:
            model = factory(width)
        else:
            with torch.device(device):
                model = factory(width)
    except Exception as e:
        raise UserError(f"--model {label}: factory({width}) raised {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"--model {label}: factory({width}) returned {type(model).__name__}, not an nn.Module")
    return model


# --- shape inference ---------------------------------------------------------------------------------------------
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
        roles = roles()
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
    owners = _owners(models[0])
    overrides = _hook_roles(models[0], label)
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
    return out


def partner_width(width: int, widths=()) -> int:
    """The second width to compare against: another width of the sweep, or twice `width`."""
    others = [w for w in widths if w != width]
    return others[0] if others else 2 * width


# --- initialisation and parameter groups ----------------------------------------------------------------------------
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
                     weight_decay: float = 0.0, weight_decay_mode: str = "coupled", label: str = "model") -> list[dict]:
    """Optimizer groups: the model's own (`mup_parameter_groups`, under μP) or the table's by inferred role."""
    from harness.optim import parameter_groups as table_groups

    if uses_hook(model, scale.parameterization):
        return _hook_groups(model, lr, weight_decay, weight_decay_mode, label)
    roles = [(name, p, infos[name].role) for name, p in model.named_parameters() if p.requires_grad]
    return table_groups(model, lr, weight_decay, weight_decay_mode, roles=roles, cfg=scale)


def _hook_groups(model, lr, weight_decay, weight_decay_mode, label) -> list[dict]:
    try:
        groups = getattr(model, HOOK_GROUPS)(lr)
    except Exception as e:
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
        if "weight_decay" in group:
            wd = float(group["weight_decay"])
        else:
            wd = weight_decay if weight_decay_mode == "coupled" or not weight_decay else weight_decay / peak
        extra = {k: v for k, v in group.items() if k not in ("params", "lr", "weight_decay")}
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

    def groups(self, lr: float, weight_decay: float = 0.0, weight_decay_mode: str = "coupled") -> list[dict]:
        return parameter_groups(self.model, self.infos, self.scale, lr, weight_decay, weight_decay_mode, self.label)

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


def check_forward(model: nn.Module, label: str, vocab_size: int | None = None) -> int:
    """Run a (2, 8) batch of token ids through the model; return V of its (B, T, V) logits."""
    tokens = torch.zeros(2, 8, dtype=torch.long)
    try:
        with torch.no_grad():
            out = model(tokens)
    except Exception as e:
        raise UserError(f"--model {label}: forward on token ids of shape (2, 8) raised {type(e).__name__}: {e}") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 3 or tuple(out.shape[:2]) != (2, 8):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"--model {label}: the model must map token ids (B, T) to logits (B, T, V); got {shape}")
    if vocab_size is not None and out.shape[-1] < vocab_size:
        raise UserError(f"--model {label}: the model's vocabulary ({out.shape[-1]}) is smaller than the data's "
                        f"({vocab_size}): give the model a larger vocabulary or use other --data")
    return int(out.shape[-1])


def describe(infos: dict[str, TensorInfo]) -> str:
    counts: dict[str, int] = {}
    for info in infos.values():
        counts[info.kind] = counts.get(info.kind, 0) + 1
    return ", ".join(f"{n} {KIND_TEXT[k]}" for k, n in counts.items())


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


_ACTIVE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("mupbench_byo_model", default=None)


def attach_active_model(specs: list, store=None) -> list:
    """Called by the sweep runner: the specs with the active `--model` attached (unchanged when none is active).

    With a store, also records which model the sweep directory belongs to.
    """
    entry = _ACTIVE.get()
    if entry is None:
        return specs
    if store is not None:
        store.set_meta(STORE_META_KEY, entry)
    return [dataclasses.replace(s, extra={**s.extra, SPEC_KEY: entry}) for s in specs]


def model_field_changes(ablation, base: dict) -> list[str]:
    """The model fields an ablation changes that a BYO factory cannot follow (all but the parameterization)."""
    return [k for k in ablation.changes(base) if k.startswith("model.") and k != "model.parameterization"]


# --- CLI: `mupbench run --model` --------------------------------------------------------------------------------------
def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, metavar="FILE.py:FACTORY",
                   help="your own model: path/to/file.py:factory or package.module:factory, factory(width) -> nn.Module "
                        "mapping token ids (B, T) to logits (B, T, V)")
    p.add_argument("--reinit", action="store_true",
                   help="with --model: re-initialise its weights by the parameterization table "
                        "(default: trust the model's own init, set only the learning rates)")


def add_parser(sub) -> None:
    """Teach `mupbench run` the --model and --reinit options (this module owns them; cli.py owns `run`)."""
    run = sub.choices.get("run")
    if run is None:
        return
    add_model_arguments(run)
    run.set_defaults(func=_wrap_run(run.get_default("func")))


def _wrap_run(cmd_run):
    def cmd_run_with_model(args) -> int:
        return run_with_model(args, cmd_run)

    return cmd_run_with_model


def run_with_model(args, cmd_run) -> int:
    """`mupbench run`, with `--model`: validate the model, keep the ablations it can follow, then run as usual."""
    from harness.cli import select_entries
    from harness.store import Store

    model_spec = getattr(args, "model", None)
    if model_spec is None and getattr(args, "reinit", False):
        raise UserError("--reinit applies only with --model")
    suite, preset, entries = select_entries(args)
    out = Path(args.out or f"runs/{suite.name}-{preset.name}")
    stored = None
    if (out / "mupbench.sqlite").exists():
        store = Store(out)
        stored = store.get_meta(STORE_META_KEY)
        has_runs = bool(store.counts()["planned"])
        store.close()
    else:
        has_runs = False
    if model_spec is None:
        if stored is not None:
            raise UserError(f"{out} holds runs of --model {stored['spec']}: pass that --model, or use another --out")
        return cmd_run(args)

    source = resolve(model_spec)
    entry = source.to_json(args.reinit)
    if stored is not None and ModelSource.identity(stored) != ModelSource.identity(entry):
        same_file = stored["file"] == entry["file"] and stored["factory"] == entry["factory"]
        what = "an earlier version of this model file" if same_file else "a different model"
        raise UserError(f"{out} holds runs of {what} ({stored['spec']}, sha256 {stored['sha256'][:12]}, reinit "
                        f"{stored['reinit']}): use a new --out for this one")
    if stored is None and has_runs:
        raise UserError(f"{out} holds runs of the built-in model: use a new --out for --model {model_spec}")
    base = preset.base("mup")
    kept, skipped = [], []
    for ablation, params in entries:
        changes = model_field_changes(ablation, base)
        (skipped if changes else kept).append((ablation, changes))
    for ablation, changes in skipped:
        print(f"mupbench: skipping ablation {ablation.name!r} for --model: it changes {', '.join(changes)}, "
              "which a model factory cannot follow", file=sys.stderr)
    if not kept:
        raise UserError(f"none of the selected ablations applies to --model (each changes the built-in model's "
                        f"architecture): choose train-side ablations, e.g. --ablation baseline")
    args.ablation = ",".join(a.name for a, _ in kept)
    # Validate the model before anything is written: its shapes at two widths (meta device), and a forward pass at
    # the smallest width mapping (B, T) to (B, T, V) with V at least the byte vocabulary (unknown yet for token files).
    factory = load_factory(source)
    widths = sorted(preset.widths)
    infer(factory, widths[0], partner_width(widths[0], widths), source.label)
    token_file = str(args.data or "").endswith((".bin", ".npy"))
    vocab = args.vocab_size or (None if token_file else 256)
    check_forward(call_factory(factory, widths[0], source.label), source.label, vocab_size=vocab)
    token = _ACTIVE.set(entry)
    try:
        return cmd_run(args)
    finally:
        _ACTIVE.reset(token)
