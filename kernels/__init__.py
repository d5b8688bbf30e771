"""Kernels behind one small functional API: `rms_norm` and `attention`.

Each call picks an implementation for its tensors: the Triton kernels (kernels/rmsnorm.py, kernels/flash_attention.py)
for CUDA tensors when Triton is importable, the plain-torch reference (kernels/reference.py) otherwise. The model never
knows which one ran; `backend(device)` says, for the run record.

`MUPBENCH_KERNELS=torch|triton|auto` (default auto) forces one. Forced `triton` raises a clear error where Triton is
missing or cannot take the tensors (CPU tensors run only under TRITON_INTERPRET=1, the tests' CPU interpreter); `auto`
falls back to the reference for what the Triton kernels do not cover (e.g. float64, head dims above 128).

Triton is imported on first use, so `import kernels` works where it is not installed.
"""
from __future__ import annotations

import functools
import os

import torch

from kernels import reference

_CHOICES = ("auto", "torch", "triton")


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


def backend(device: torch.device | str) -> str:
    """'triton' or 'torch': what `rms_norm` and `attention` run for tensors on `device`."""
    choice = _forced()
    if choice != "auto":
        return choice
    return "triton" if torch.device(device).type == "cuda" and triton_available() else "torch"


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """x · rsqrt(mean(x², last dim) + eps) · weight; weight None, a scalar gain (1,) or a vector gain (x.shape[-1],)."""
    choice = backend(x.device)
    if choice == "torch":
        return reference.rms_norm(x, weight, eps)
    if choice == "triton":
        _require_triton()
    from kernels import rmsnorm

    if _forced() == "auto" and rmsnorm.unsupported(x, weight):
        return reference.rms_norm(x, weight, eps)
    return rmsnorm.rms_norm(x, weight, eps)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool = True) -> torch.Tensor:
    """softmax(scale · q kᵀ) v in the layout of F.scaled_dot_product_attention; q (B, H, T, D), k and v (B, H_kv, T, D)."""
    choice = backend(q.device)
    if choice == "torch":
        return reference.attention(q, k, v, scale, causal)
    if choice == "triton":
        _require_triton()
    # Autocast casts SDPA's inputs to its dtype; do the same, since it does not reach inside a custom Function.
    dtype = _autocast_dtype(q.device)
    if dtype is not None:
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    from kernels import flash_attention

    if _forced() == "auto" and flash_attention.unsupported(q, k, v):
        return reference.attention(q, k, v, scale, causal)
    return flash_attention.attention(q, k, v, scale, causal)
