"""RMSNorm in Triton: y = x · rsqrt(mean(x², last dim) + eps) · gain, gain none, a scalar (shape (1,)) or a vector (N,).

Forward: each program normalises ROWS rows (one row for wide inputs, several for narrow ones, so that every program
still moves a few KiB), accumulating in fp32, and saves the fp32 inverse RMS of each row for the backward.

Backward: writes dx, one program per row block without a gain. With a gain, a fixed number of programs (enough to
fill the SMs) walks the row blocks with a grid-stride loop, keeping a fp32 running sum of dy·x̂ per column that it
writes as one row of a (programs × N) partial buffer; the gain gradient is the sum of that buffer (over programs; over
columns as well for a scalar gain).

Inputs fp32, bf16 or fp16 with any width up to MAX_WIDTH; the gain may have another float dtype than x (its gradient
comes back in the gain's dtype). Under TRITON_INTERPRET=1 the same kernels run on CPU tensors.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_WIDTH = 32768  # one row must fit in one program's registers

_GAIN_NONE, _GAIN_SCALAR, _GAIN_VECTOR = 0, 1, 2


@triton.jit
def _rms_norm_fwd(
    X, Y, W, RSTD,
    n_rows, n_cols, stride_x, stride_y, eps,
    GAIN: tl.constexpr, BLOCK_N: tl.constexpr, ROWS: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    row_mask = rows < n_rows
    col_mask = cols < n_cols
    mask = row_mask[:, None] & col_mask[None, :]
    rows64 = rows.to(tl.int64)

    x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / n_cols + eps)
    y = x * rstd[:, None]
    if GAIN == 1:
        y = y * tl.load(W).to(tl.float32)
    elif GAIN == 2:
        w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
        y = y * w[None, :]
    tl.store(Y + rows64[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + rows, rstd, mask=row_mask)


@triton.jit
def _rms_norm_bwd(
    DY, X, W, RSTD, DX, DW_PARTIAL,
    n_rows, n_cols, stride_dy, stride_x, stride_dx,
    GAIN: tl.constexpr, GAIN_GRAD: tl.constexpr, BLOCK_N: tl.constexpr, ROWS: tl.constexpr,
):
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    if GAIN == 1:
        w_scalar = tl.load(W).to(tl.float32)
    elif GAIN == 2:
        w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_N,), dtype=tl.float32)

    for start in range(pid * ROWS, n_rows, n_programs * ROWS):
        rows = start + tl.arange(0, ROWS)
        row_mask = rows < n_rows
        mask = row_mask[:, None] & col_mask[None, :]
        rows64 = rows.to(tl.int64)
        x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows64[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)
        x_hat = x * rstd[:, None]
        if GAIN == 1:
            g = dy * w_scalar
        elif GAIN == 2:
            g = dy * w[None, :]
        else:
            g = dy
        # d/dx of x̂ = x·rstd, with g = dL/dx̂: rstd · (g − x̂ · mean(g·x̂))
        c = tl.sum(g * x_hat, axis=1) / n_cols
        dx = (g - x_hat * c[:, None]) * rstd[:, None]
        tl.store(DX + rows64[:, None] * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
        if GAIN_GRAD:
            dw += tl.sum(dy * x_hat, axis=0)  # masked rows have x̂ = 0

    if GAIN_GRAD:
        tl.store(DW_PARTIAL + pid * n_cols + cols, dw, mask=col_mask)


def _launch_config(n_cols: int) -> tuple[int, int, int]:
    """(BLOCK_N, ROWS, num_warps): at least 2K elements per program, ~8 per thread (one 16-byte bf16 load)."""
    block_n = triton.next_power_of_2(n_cols)
    rows = max(1, min(16, 2048 // block_n))
    num_warps = max(4, min(32, rows * block_n // 256))
    return block_n, rows, num_warps


_SM_COUNT: dict[int, int] = {}


def _backward_programs(device: torch.device, row_blocks: int, num_warps: int, gain_grad: bool) -> int:
    """Programs for the backward: one per row block without a gain gradient; otherwise enough to fill every SM (about
    32 warps each), each walking many row blocks, so the partial buffer stays small."""
    if not gain_grad:
        return row_blocks
    if INTERPRET or device.type != "cuda":
        return min(row_blocks, 2)  # small, so that the tests exercise the grid-stride loop
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return min(row_blocks, _SM_COUNT[index] * max(1, 32 // num_warps))


def _gain_mode(weight: torch.Tensor | None, n_cols: int) -> int:
    if weight is None:
        return _GAIN_NONE
    if weight.numel() == 1 and weight.dim() <= 1:
        return _GAIN_SCALAR
    if weight.shape == (n_cols,):
        return _GAIN_VECTOR
    raise ValueError(f"gain of shape {tuple(weight.shape)} is neither a scalar (1,) nor a vector ({n_cols},)")


def unsupported(x: torch.Tensor, weight: torch.Tensor | None) -> str | None:
    """Why the Triton kernel cannot take these tensors, or None when it can."""
    if x.device.type != "cuda" and not INTERPRET:
        return f"Triton kernels need CUDA tensors (got {x.device.type}; TRITON_INTERPRET=1 runs them on CPU)"
    if x.dtype not in DTYPES:
        return f"dtype {x.dtype} is not one of float32, bfloat16, float16"
    if x.dim() == 0 or x.numel() == 0:
        return "empty or 0-d input"
    if x.shape[-1] > MAX_WIDTH:
        return f"width {x.shape[-1]} exceeds {MAX_WIDTH}"
    if weight is not None:
        if weight.dtype not in DTYPES or weight.device != x.device:
            return f"gain must be a float32/bfloat16/float16 tensor on {x.device}"
        try:
            _gain_mode(weight, x.shape[-1])
        except ValueError as err:
            return str(err)
    return None


def _rows(t: torch.Tensor, n_cols: int) -> torch.Tensor:
    t = t.reshape(-1, n_cols)
    return t if t.stride(-1) == 1 else t.contiguous()


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
        n_cols = x.shape[-1]
        x2 = _rows(x, n_cols)
        n_rows = x2.shape[0]
        gain = _gain_mode(weight, n_cols)
        y = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        block_n, rows, num_warps = _launch_config(n_cols)
        w = weight if weight is not None else rstd  # any pointer: never read without a gain
        _rms_norm_fwd[(triton.cdiv(n_rows, rows),)](
            x2, y, w, rstd, n_rows, n_cols, x2.stride(0), y.stride(0), float(eps),
            GAIN=gain, BLOCK_N=block_n, ROWS=rows, num_warps=num_warps,
        )
        ctx.gain = gain
        ctx.save_for_backward(x2, weight, rstd)
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x2, weight, rstd = ctx.saved_tensors
        n_rows, n_cols = x2.shape
        dy2 = _rows(dy, n_cols)
        dx = torch.empty_like(x2)
        block_n, rows, num_warps = _launch_config(n_cols)
        gain_grad = weight is not None and ctx.needs_input_grad[1]
        programs = _backward_programs(x2.device, triton.cdiv(n_rows, rows), num_warps, gain_grad)
        partial = torch.empty((programs, n_cols) if gain_grad else (1,), dtype=torch.float32, device=x2.device)
        _rms_norm_bwd[(programs,)](
            dy2, x2, weight if weight is not None else rstd, rstd, dx, partial,
            n_rows, n_cols, dy2.stride(0), x2.stride(0), dx.stride(0),
            GAIN=ctx.gain, GAIN_GRAD=gain_grad, BLOCK_N=block_n, ROWS=rows, num_warps=num_warps,
        )
        dweight = None
        if gain_grad:
            dweight = partial.sum() if ctx.gain == _GAIN_SCALAR else partial.sum(dim=0)
            dweight = dweight.reshape(weight.shape).to(weight.dtype)
        return dx.view(dy.shape), dweight, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Same contract as kernels.reference.rms_norm, on the Triton kernels; raises ValueError for what they cannot take."""
    reason = unsupported(x, weight)
    if reason:
        raise ValueError(f"Triton rms_norm: {reason}")
    return _RMSNorm.apply(x, weight, eps)
