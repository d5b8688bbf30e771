"""Loading a user's model factory: naming it, importing its file or module, calling it, probing its forward."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from mupbench.byo.code import changed_since, code_digest, code_identity
from mupbench.config import BYO_IDENTITY_KEYS
from mupbench.errors import CodeChanged, UserError


@dataclass(frozen=True)
class ModelSource:
    """Where a factory lives: `spec` as the user wrote it, the resolved file, and the digest of its code: the file and
    every file of the user's it imports (mupbench.byo.code; the file's own SHA-256 when it imports none)."""

    spec: str
    attr: str
    file: str  # absolute path of the factory's source file
    module: str | None  # the importable module name, when named as package.module
    sha256: str
    code: dict = field(default_factory=dict, compare=False)  # label → SHA-256 of each file (code_identity)

    @property
    def label(self) -> str:
        return f"{Path(self.file).name}:{self.attr}" if self.module is None else f"{self.module}:{self.attr}"

    def to_json(self, reinit: bool) -> dict:
        return {"spec": self.spec, "file": self.file, "module": self.module, "factory": self.attr,
                "sha256": self.sha256, "reinit": bool(reinit), "code": self.code}

    @staticmethod
    def identity(entry: dict) -> dict:
        """What of a spec's `extra["byo_model"]` changes the result: the factory's name, source digest, reinit flag."""
        return {k: entry[k] for k in BYO_IDENTITY_KEYS}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_code(file: str | Path, module: str | None) -> tuple[str, dict]:
    """(digest, code identity) of a factory's code: the file's own SHA-256 when it imports no other file of the
    user's (so such a model keeps the identity it had before imports counted), else the digest of the whole map."""
    code = code_identity(module or file)
    values = list(code.values())
    return (values[0] if len(values) == 1 and values[0] == _digest(Path(file)) else code_digest(code)), code


def load_target(spec: str, option: str, what: str):
    """Import what `path/to/file.py:name` or `package.module:name` names (UserError on any problem): (the module, its
    source file, the module's importable name or None for a file, the attribute name). `what` names the attribute in
    messages ("factory", "function")."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise UserError(f"{option} {spec!r} must be path/to/file.py:{what} or package.module:{what}")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"{option}: file {target} does not exist")
        return import_file(path, spec, option), path, None, attr
    module = import_module(target, spec, option)
    file = getattr(module, "__file__", None)
    if not file:
        raise UserError(f"{option}: module {target!r} has no source file to identify it by")
    return module, Path(file).resolve(), target, attr


def resolve(spec: str) -> ModelSource:
    """Parse `file.py:factory` or `package.module:factory` and import it (raising UserError on any problem)."""
    module, path, name, attr = load_target(spec, "--model", "factory")
    source = ModelSource(spec, attr, str(path), name, *model_code(path, name))
    if not callable(getattr(module, attr, None)):
        raise UserError(f"--model: {source.label} is not a callable factory(width) -> nn.Module")
    return source


def import_file(path: Path, spec: str, option: str = "--model"):
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
    except (Exception, SystemExit) as e:  # user code: an exception or an exit is one line
        sys.modules.pop(name, None)
        raise UserError(f"{option} {spec}: importing {path} failed: {type(e).__name__}: {e}") from None
    module.__mupbench_sha256__ = _digest(path)
    return module


def import_module(name: str, spec: str, option: str = "--model"):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        if str(Path.cwd()) not in sys.path:  # like `python -m`: the current directory is importable
            sys.path.insert(0, str(Path.cwd()))
            return import_module(name, spec, option)
        raise UserError(f"{option} {spec}: cannot import {name!r}: pass a file path or fix PYTHONPATH") from None
    except (Exception, SystemExit) as e:  # user code: an exception or an exit is one line
        raise UserError(f"{option} {spec}: importing {name} failed: {type(e).__name__}: {e}") from None


def load_factory(source: ModelSource) -> Callable[[int], nn.Module]:
    module = import_module(source.module, source.spec) if source.module else import_file(Path(source.file), source.spec)
    return getattr(module, source.attr)


def source_from_entry(entry: dict) -> ModelSource:
    """The ModelSource of a run spec's `extra["byo_model"]`; CodeChanged when its code (the file, or a file it imports)
    changed since the sweep was planned: the sweep stops once rather than training other code under this run's name."""
    path = Path(entry["file"])
    if not path.is_file():
        raise CodeChanged(f"model file {path} (from --model {entry['spec']}) no longer exists: restore it, or run the "
                          "command again into a new --out")
    code = entry.get("code") or {}
    changed = changed_since(code, entry.get("module") or path) if code else (
        [path.name] if _digest(path) != entry["sha256"] else [])  # an entry from before imports counted
    if changed:
        raise CodeChanged(f"the code of --model {entry['spec']} changed while the sweep ran "
                          f"({', '.join(changed[:4])}): no run of the new code is stored under the old one's name; "
                          "revert the change and run the command again to finish the sweep, or run the new code into "
                          "a new --out")
    return ModelSource(entry["spec"], entry["factory"], str(path), entry.get("module"), entry["sha256"], code)


def call_factory(factory, width: int, label: str, device: str | torch.device | None = None) -> nn.Module:
    try:
        if device is None:
            model = factory(width)
        else:
            with torch.device(device):
                model = factory(width)
    except (Exception, SystemExit) as e:  # user code: an exception or an exit is one line
        raise UserError(f"--model {label}: factory({width}) raised {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"--model {label}: factory({width}) returned {type(model).__name__}, not an nn.Module")
    return model


def check_backward(model: nn.Module, label: str) -> None:
    """One forward and backward pass in training mode on a (2, 8) batch: the logits must reach the parameters through
    autograd (not computed under torch.no_grad(), not detached) and the backward must run. Gradients are cleared."""
    tokens = torch.zeros(2, 8, dtype=torch.long)
    model.train()
    try:
        out = model(tokens)
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.float().logsumexp(-1).mean().backward()
    except (Exception, SystemExit) as e:  # user code: an exception or an exit is one line
        raise UserError(f"--model {label}: a training step's forward and backward on token ids of shape (2, 8) raised "
                        f"{type(e).__name__}: {e}") from None
    if not (isinstance(out, torch.Tensor) and out.requires_grad):
        raise UserError(f"--model {label}: its logits do not require grad in training mode (computed under "
                        "torch.no_grad(), or detached): no update can reach the parameters")
    if all(p.grad is None for p in model.parameters()):
        raise UserError(f"--model {label}: no parameter received a gradient from the logits")
    model.zero_grad(set_to_none=True)


def check_forward(model: nn.Module, label: str, vocab_size: int | None = None) -> int:
    """Run a (2, 8) batch of token ids through the model; return V of its (B, T, V) logits."""
    tokens = torch.zeros(2, 8, dtype=torch.long)
    try:
        with torch.no_grad():
            out = model(tokens)
    except (Exception, SystemExit) as e:  # user code: an exception or an exit is one line
        raise UserError(f"--model {label}: forward on token ids of shape (2, 8) raised {type(e).__name__}: {e}") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 3 or tuple(out.shape[:2]) != (2, 8):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"--model {label}: the model must map token ids (B, T) to logits (B, T, V); got {shape}")
    if vocab_size is not None and out.shape[-1] < vocab_size:
        raise UserError(f"--model {label}: the model's vocabulary ({out.shape[-1]}) is smaller than the data's "
                        f"({vocab_size}): give the model a larger vocabulary or use other --data")
    return int(out.shape[-1])
