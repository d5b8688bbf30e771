"""Plain-torch RMSNorm (alone and after a residual add) and attention: the fallback on every device and the reference the Triton kernels are tested against."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """x · rsqrt(mean(x², last dim) + eps) · weight, computed in float32 (or float64 for a float64 input)."""
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.to(y.dtype)
    return y.to(x.dtype)


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6,
                 out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(h, weight, eps) in out_dtype (default h's), h) with h = x + residual: the new residual stream."""
    h = x + residual
    y = rms_norm(h, weight, eps)
    return (y if out_dtype is None else y.to(out_dtype)), h


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool = True) -> torch.Tensor:
    """Softmax attention in the layout of F.scaled_dot_product_attention: q (B, H, T, D), k and v (B, H_kv, T, D).

    H_kv must divide H; each group of H / H_kv query heads shares one K/V head (multi-query when H_kv = 1).
    """
    heads, kv_heads = q.shape[1], k.shape[1]
    if heads % kv_heads:
        raise ValueError(f"query heads ({heads}) must be a multiple of KV heads ({kv_heads})")
    if kv_heads != heads:
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
