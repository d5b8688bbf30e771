"""Kernels behind one small functional API: `rms_norm`, `add_rms_norm` (residual add fused in) and `attention`.

Each call picks an implementation for its tensors: the Triton kernels (kernels/rmsnorm.py, kernels/flash_attention.py)
for CUDA tensors when Triton is importable, the plain-torch reference (kernels/reference.py) otherwise. The model never
knows which one ran; `backend(device)` says, for the run record: what the calls on that device actually ran, including
calls that fell back to the reference (`fallbacks()` says why), and `configs_used()` gives the launch configurations.

`MUPBENCH_KERNELS=torch|triton|auto` (default auto) forces one. Forced `triton` raises a clear error where Triton is
missing or cannot take the tensors (CPU tensors run only under TRITON_INTERPRET=1, the tests' CPU interpreter, and
there in float32 or float16, not bfloat16); `auto` falls back to the reference for what the Triton kernels do not
cover (e.g. float64, head dims above 128).

Triton is imported on first use, so `import kernels` works where it is not installed.
"""
from __future__ import annotations

import functools
import sys
import os

import torch

from mupbench.kernels import reference

_CHOICES = ("auto", "torch", "triton")
_AUTOCAST_ELIGIBLE = (torch.float32, torch.float16, torch.bfloat16)  # autocast never casts float64


def _forced() -> str:
    choice = os.environ.get("MUPBENCH_KERNELS", "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ValueError(f"MUPBENCH_KERNELS={choice!r} is not one of {', '.join(_CHOICES)}")
    return choice


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether Triton imports here (checked once)."""
    try:
        import triton  # noqa: F401
    except Exception:  # ImportError, or a broken install failing on import
        return False
    return True


def _require_triton() -> None:
    if not triton_available():
        raise RuntimeError(
            "MUPBENCH_KERNELS=triton but Triton cannot be imported here: install triton, or set MUPBENCH_KERNELS=torch"
        )


def _choice(device: torch.device | str) -> str:
    """'triton' or 'torch': what a call on `device` tries first."""
    choice = _forced()
    if choice != "auto":
        return choice
    return "triton" if torch.device(device).type == "cuda" and triton_available() else "torch"


# device type → implementation → calls; and the reasons calls fell back
_RAN: dict[str, dict[str, int]] = {}
_FALLBACKS: dict[str, str] = {}


def _note(device: torch.device, op: str, impl: str, reason: str | None = None) -> None:
    ran = _RAN.setdefault(device.type, {})
    ran[impl] = ran.get(impl, 0) + 1
    if reason:
        _FALLBACKS[f"{op} on {device.type}"] = reason


def backend(device: torch.device | str) -> str:
    """What `rms_norm`, `add_rms_norm` and `attention` ran on `device`: 'triton', 'torch', or 'triton+torch' when some
    calls fell back to the reference (see `fallbacks()`); before any call, what they would try."""
    ran = _RAN.get(torch.device(device).type)
    if not ran:
        return _choice(device)
    return "+".join(impl for impl in ("triton", "torch") if ran.get(impl))


def fallbacks() -> dict[str, str]:
    """'<op> on <device type>' → why the last such call ran the reference although Triton was chosen."""
    return dict(_FALLBACKS)


def configs_used() -> dict[str, dict]:
    """The Triton launch configurations used since `reset_record()` (empty where no Triton kernel ran)."""
    if "mupbench.kernels.configs" not in sys.modules:
        return {}
    from mupbench.kernels import configs

    return configs.used()


def reset_record() -> None:
    """Forget what ran (call at the start of a run whose record should say what it ran)."""
    _RAN.clear()
    _FALLBACKS.clear()
    if "mupbench.kernels.configs" in sys.modules:
        sys.modules["mupbench.kernels.configs"].clear_used()


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def _autocast_inputs(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What autocast does to SDPA's inputs (it does not reach inside our operators): float16/32 and bfloat16 tensors
    to the autocast dtype; float64 is left alone, as autocast leaves it."""
    dtype = _autocast_dtype(tensors[0].device)
    if dtype is None:
        return tensors
    return tuple(t.to(dtype) if t.dtype in _AUTOCAST_ELIGIBLE else t for t in tensors)


def _run(op: str, device: torch.device, triton_fn, unsupported, reference_fn, *args):
    """The Triton implementation where chosen and able, else the reference; records which ran."""
    if _choice(device) == "triton":
        if _forced() == "triton":
            _require_triton()
        elif not triton_available():
            _note(device, op, "torch", "Triton cannot be imported")
            return reference_fn(*args)
        reason = unsupported()
        if reason is None or _forced() == "triton":  # forced: the Triton wrapper raises with the reason
            _note(device, op, "triton")
            return triton_fn(*args)
        _note(device, op, "torch", reason)
    else:
        _note(device, op, "torch")
    return reference_fn(*args)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """x · rsqrt(mean(x², last dim) + eps) · weight; weight None, a scalar gain (1,) or a vector gain (x.shape[-1],)."""

    def triton_fn(*args):
        from mupbench.kernels import rmsnorm

        return rmsnorm.rms_norm(*args)

    def unsupported():
        from mupbench.kernels import rmsnorm

        return rmsnorm.unsupported(x, weight)

    return _run("rms_norm", x.device, triton_fn, unsupported, reference.rms_norm, x, weight, eps)


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None = None,
                 eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(h, weight, eps), h) with h = x + residual, the new residual stream; one fused kernel on CUDA.

    Under autocast the normalised output comes in the autocast dtype (what the next matmul casts it to anyway), while
    h keeps the promoted dtype of x and residual (the fp32 residual stream stays fp32)."""
    out_dtype = _autocast_dtype(x.device) or torch.promote_types(x.dtype, residual.dtype)

    def triton_fn(*args):
        from mupbench.kernels import rmsnorm

        return rmsnorm.add_rms_norm(*args)

    def unsupported():
        from mupbench.kernels import rmsnorm

        return rmsnorm.unsupported(x, weight, residual)

    return _run("add_rms_norm", x.device, triton_fn, unsupported, reference.add_rms_norm,
                x, residual, weight, eps, out_dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool = True) -> torch.Tensor:
    """softmax(scale · q kᵀ) v in the layout of F.scaled_dot_product_attention; q (B, H, T, D), k and v (B, H_kv, T, D)."""
    if _choice(q.device) == "triton":
        q, k, v = _autocast_inputs(q, k, v)

    def triton_fn(*args):
        from mupbench.kernels import flash_attention

        return flash_attention.attention(*args)

    def unsupported():
        from mupbench.kernels import flash_attention

        return flash_attention.unsupported(q, k, v, scale)

    return _run("attention", q.device, triton_fn, unsupported, reference.attention, q, k, v, scale, causal)
