"""RMSNorm in Triton, alone and fused with the residual add before it.

    rms_norm(x, gain, eps)                 y = x · rsqrt(mean(x², last dim) + eps) · gain
    add_rms_norm(x, residual, gain, eps)   h = x + residual;  y = rms_norm(h, gain, eps);  returns (y, h)

The gain is none, a scalar (shape (1,)) or a vector (N,) of any stride (a strided gain is copied to contiguous first).

Forward: each program normalises ROWS rows (one row for wide inputs, several for narrow ones, so every program still
moves a few KiB), accumulating in fp32, and saves the fp32 inverse RMS of each row. The fused form reads x and the
residual once, writes the new residual h and y (y may be narrower than h: bf16 under autocast while the residual stream
stays fp32), and normalises h as stored, so it matches the unfused computation.

Backward: a fixed number of programs (enough to fill the SMs, not more) walks the row blocks with a grid-stride loop
whose loads are software-pipelined (`tl.range(..., num_stages=2)`); each keeps an fp32 running sum of dy·x̂ per column
and writes it as one row of a (programs × N) partial buffer; the gain gradient is the sum of that buffer. The fused
form adds the new residual's incoming gradient and writes the gradient of x and of the residual (each in its dtype).

Every function here is a torch.library operator (see kernels/library.py): compile-traceable, no double backward; each
operator body launches its kernel itself (`wrap_triton(kernel)[grid](...)`), so torch.compile's cache sees it. A gain
gets no gradient (None, not zeros) when the normalised output is unused (the fused form's new residual alone feeds the
loss), so an optimizer's decay does not act on it as if it had a zero gradient.
Inputs fp32, bf16 or fp16 up to MAX_WIDTH wide. Under TRITON_INTERPRET=1 the same kernels run on CPU tensors (fp32,
fp16).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from mupbench.kernels import configs
from mupbench.kernels.library import INTERPRET, operator, refuse_bf16_in_interpreter, wrap_triton

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_WIDTH = 32768  # one row must fit in one program's registers

_GAIN_NONE, _GAIN_SCALAR, _GAIN_VECTOR = 0, 1, 2


@triton.jit
def _rms_norm_fwd(
    X, R, Y, H, W, RSTD,
    n_rows, n_cols, stride_x, stride_r, stride_y, stride_h, eps,
    GAIN: tl.constexpr, RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr, ROWS: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    row_mask = rows < n_rows
    col_mask = cols < n_cols
    mask = row_mask[:, None] & col_mask[None, :]
    rows64 = rows.to(tl.int64)

    x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if RESIDUAL:
        r = tl.load(R + rows64[:, None] * stride_r + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        h = (x + r).to(H.dtype.element_ty)
        tl.store(H + rows64[:, None] * stride_h + cols[None, :], h, mask=mask)
        x = h.to(tl.float32)  # normalise the residual as stored
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
    DY, DH, X, W, RSTD, DX, DR, DW_PARTIAL,
    n_rows, n_cols, stride_dy, stride_dh, stride_x, stride_dx, stride_dr,
    GAIN: tl.constexpr, GAIN_GRAD: tl.constexpr, HAS_DH: tl.constexpr, TWO_OUT: tl.constexpr,
    BLOCK_N: tl.constexpr, ROWS: tl.constexpr,
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

    for start in tl.range(pid * ROWS, n_rows, n_programs * ROWS, num_stages=2):
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
        if HAS_DH:
            dx += tl.load(DH + rows64[:, None] * stride_dh + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + rows64[:, None] * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
        if TWO_OUT:
            tl.store(DR + rows64[:, None] * stride_dr + cols[None, :], dx.to(DR.dtype.element_ty), mask=mask)
        if GAIN_GRAD:
            dw += tl.sum(dy * x_hat, axis=0)  # masked rows have x̂ = 0

    if GAIN_GRAD:
        tl.store(DW_PARTIAL + pid * n_cols + cols, dw, mask=col_mask)


def launch_config(n_cols: int) -> tuple[int, int, int]:
    """(BLOCK_N, ROWS, num_warps): at least 2K elements per program, ~8 per thread (one 16-byte bf16 load)."""
    block_n = triton.next_power_of_2(n_cols)
    rows = max(1, min(16, 2048 // block_n))
    num_warps = max(4, min(32, rows * block_n // 256))
    return block_n, rows, num_warps


_SM_COUNT: dict[int, int] = {}


def backward_programs(device: torch.device, row_blocks: int, num_warps: int) -> int:
    """Programs for the backward: as many as are resident at once (64 warps per SM), each walking many row blocks, so
    the partial buffer stays small and no program waits for a slot."""
    if INTERPRET or device.type != "cuda":
        return min(row_blocks, 2)  # small, so that the tests exercise the grid-stride loop
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return min(row_blocks, _SM_COUNT[index] * max(1, 64 // num_warps))


def _gain_mode(weight: torch.Tensor | None, n_cols: int) -> int:
    if weight is None:
        return _GAIN_NONE
    if weight.numel() == 1 and weight.dim() <= 1:
        return _GAIN_SCALAR
    if weight.shape == (n_cols,):
        return _GAIN_VECTOR
    raise ValueError(f"gain of shape {tuple(weight.shape)} is neither a scalar (1,) nor a vector ({n_cols},)")


def unsupported(x: torch.Tensor, weight: torch.Tensor | None, residual: torch.Tensor | None = None) -> str | None:
    """Why the Triton kernels cannot take these tensors, or None when they can."""
    if x.device.type != "cuda" and not INTERPRET:
        return f"Triton kernels need CUDA tensors (got {x.device.type}; TRITON_INTERPRET=1 runs them on CPU)"
    for name, t in (("input", x), ("residual", residual), ("gain", weight)):
        if t is not None and (t.dtype not in DTYPES or t.device != x.device):
            return f"{name} must be a float32/bfloat16/float16 tensor on {x.device} (got {t.dtype} on {t.device})"
    if x.dim() == 0 or x.numel() == 0:
        return "empty or 0-d input"
    if x.shape[-1] > MAX_WIDTH:
        return f"width {x.shape[-1]} exceeds {MAX_WIDTH}"
    if residual is not None and residual.shape != x.shape:
        return f"residual shape {tuple(residual.shape)} differs from the input's {tuple(x.shape)}"
    if weight is not None:
        try:
            _gain_mode(weight, x.shape[-1])
        except ValueError as err:
            return str(err)
    return refuse_bf16_in_interpreter(x, residual, weight)


def _rows(t: torch.Tensor, n_cols: int) -> torch.Tensor:
    t = t.reshape(-1, n_cols)
    return t if t.stride(-1) == 1 else t.contiguous()


def _gain(weight: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """The gain as the kernels read it (contiguous: they index it with stride 1); any pointer when there is none."""
    return weight.contiguous() if weight is not None else like


class _Launch(NamedTuple):
    grid: tuple[int]
    args: tuple
    kwargs: dict


def _forward(x, residual, weight, eps, y_dtype, h_dtype):
    """(launch, y, h, rstd) of the forward kernel: the operator body launches it."""
    n_cols = x.shape[-1]
    x2 = _rows(x, n_cols)
    r2 = _rows(residual, n_cols) if residual is not None else x2
    n_rows = x2.shape[0]
    y = torch.empty((n_rows, n_cols), dtype=y_dtype, device=x.device)
    h = torch.empty((n_rows, n_cols), dtype=h_dtype, device=x.device) if residual is not None else y
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    block_n, rows, num_warps = launch_config(n_cols)
    configs.note(f"rms_norm w{n_cols}", {"BLOCK_N": block_n, "ROWS": rows, "num_warps": num_warps})
    launch = _Launch(
        (triton.cdiv(n_rows, rows),),
        (x2, r2, y, h, _gain(weight, rstd), rstd, n_rows, n_cols,
         x2.stride(0), r2.stride(0), y.stride(0), h.stride(0), float(eps)),
        dict(GAIN=_gain_mode(weight, n_cols), RESIDUAL=residual is not None, BLOCK_N=block_n, ROWS=rows,
             num_warps=num_warps),
    )
    return launch, y.view(x.shape), h.view(x.shape), rstd


def _backward(dy, dh, x, weight, rstd, dx_dtype, dr_dtype, gain_grad):
    """(launch, dx, dresidual, partial gain-gradient buffer) of the backward kernel: the operator body launches it."""
    n_cols = x.shape[-1]
    x2, dy2 = _rows(x, n_cols), _rows(dy, n_cols)
    dh2 = _rows(dh, n_cols) if dh is not None else dy2
    n_rows = x2.shape[0]
    dx = torch.empty((n_rows, n_cols), dtype=dx_dtype, device=x.device)
    dr = torch.empty((n_rows, n_cols), dtype=dr_dtype, device=x.device) if dr_dtype is not None else dx
    block_n, rows, num_warps = launch_config(n_cols)
    gain_grad = weight is not None and gain_grad
    programs = backward_programs(x.device, triton.cdiv(n_rows, rows), num_warps)
    partial = torch.empty((programs, n_cols) if gain_grad else (1,), dtype=torch.float32, device=x.device)
    launch = _Launch(
        (programs,),
        (dy2, dh2, x2, _gain(weight, rstd), rstd, dx, dr, partial,
         n_rows, n_cols, dy2.stride(0), dh2.stride(0), x2.stride(0), dx.stride(0), dr.stride(0)),
        dict(GAIN=_gain_mode(weight, n_cols), GAIN_GRAD=gain_grad, HAS_DH=dh is not None,
             TWO_OUT=dr_dtype is not None, BLOCK_N=block_n, ROWS=rows, num_warps=num_warps),
    )
    return launch, dx.view(x.shape), dr.view(x.shape), partial


def _gain_gradient(partial, weight, rstd, gain_grad):
    """The gain's gradient from the backward's (programs × N) partial sums (an empty tensor when not wanted)."""
    if weight is None or not gain_grad:
        return rstd.new_empty(0)
    dweight = partial.sum() if _gain_mode(weight, partial.shape[-1]) == _GAIN_SCALAR else partial.sum(dim=0)
    return dweight.reshape(weight.shape).to(weight.dtype)


# --------------------------------------------------------------------------------------------------- operators


def _rms_norm_fake(x, weight, eps):
    rows = x.numel() // x.shape[-1]
    return torch.empty(x.shape, dtype=x.dtype, device=x.device), x.new_empty(rows, dtype=torch.float32)


def _rms_norm_impl(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    launch, y, _, rstd = _forward(x, None, weight, eps, x.dtype, x.dtype)
    wrap_triton(_rms_norm_fwd)[launch.grid](*launch.args, **launch.kwargs)
    return y, rstd


_rms_norm_op = operator("rms_norm", _rms_norm_fake)(_rms_norm_impl)


def _rms_norm_bwd_fake(dy, x, weight, rstd, gain_grad):
    dw = weight.new_empty(weight.shape) if (weight is not None and gain_grad) else rstd.new_empty(0)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device), dw


def _rms_norm_bwd_impl(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, rstd: torch.Tensor,
                     gain_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    launch, dx, _, partial = _backward(dy, None, x, weight, rstd, x.dtype, None, gain_grad)
    wrap_triton(_rms_norm_bwd)[launch.grid](*launch.args, **launch.kwargs)
    return dx, _gain_gradient(partial, weight, rstd, gain_grad)


_rms_norm_bwd_op = operator("rms_norm_bwd", _rms_norm_bwd_fake)(_rms_norm_bwd_impl)


def _rms_norm_setup(ctx, inputs, output):
    x, weight, _ = inputs
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, weight, output[1])


def _rms_norm_grad(ctx, dy, _drstd):
    if dy is None:  # the output is unused
        return None, None, None
    x, weight, rstd = ctx.saved_tensors
    gain_grad = weight is not None and ctx.needs_input_grad[1]
    dx, dw = torch.ops.mupbench.rms_norm_bwd(dy, x, weight, rstd, gain_grad)
    return dx, (dw if gain_grad else None), None


_rms_norm_op.register_autograd(_rms_norm_grad, setup_context=_rms_norm_setup)


def _add_rms_norm_fake(x, residual, weight, eps, out_dtype):
    h_dtype = torch.promote_types(x.dtype, residual.dtype)
    rows = x.numel() // x.shape[-1]
    return (torch.empty(x.shape, dtype=out_dtype, device=x.device),
            torch.empty(x.shape, dtype=h_dtype, device=x.device),
            x.new_empty(rows, dtype=torch.float32))


def _add_rms_norm_impl(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None, eps: float,
                     out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    launch, y, h, rstd = _forward(x, residual, weight, eps, out_dtype, torch.promote_types(x.dtype, residual.dtype))
    wrap_triton(_rms_norm_fwd)[launch.grid](*launch.args, **launch.kwargs)
    return y, h, rstd


_add_rms_norm_op = operator("add_rms_norm", _add_rms_norm_fake)(_add_rms_norm_impl)


def _add_rms_norm_bwd_fake(dy, dh, h, weight, rstd, x_dtype, gain_grad):
    dw = weight.new_empty(weight.shape) if (weight is not None and gain_grad) else rstd.new_empty(0)
    return (torch.empty(h.shape, dtype=x_dtype, device=h.device),
            torch.empty(h.shape, dtype=h.dtype, device=h.device), dw)


def _add_rms_norm_bwd_impl(dy: torch.Tensor, dh: torch.Tensor | None, h: torch.Tensor, weight: torch.Tensor | None,
                         rstd: torch.Tensor, x_dtype: torch.dtype,
                         gain_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    launch, dx, dr, partial = _backward(dy, dh, h, weight, rstd, x_dtype, h.dtype, gain_grad)
    wrap_triton(_rms_norm_bwd)[launch.grid](*launch.args, **launch.kwargs)
    return dx, dr, _gain_gradient(partial, weight, rstd, gain_grad)


_add_rms_norm_bwd_op = operator("add_rms_norm_bwd", _add_rms_norm_bwd_fake)(_add_rms_norm_bwd_impl)


def _add_rms_norm_setup(ctx, inputs, output):
    x, residual, weight, _, _ = inputs
    _, h, rstd = output
    ctx.x_dtype, ctx.residual_dtype = x.dtype, residual.dtype
    ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None, not zeros
    ctx.save_for_backward(h, weight, rstd)


def _add_rms_norm_grad(ctx, dy, dh, _drstd):
    if dy is None:  # the normalised output is unused: h = x + residual passes dh through, the gain gets no gradient
        if dh is None:
            return None, None, None, None, None
        return dh.to(ctx.x_dtype), dh.to(ctx.residual_dtype), None, None, None
    h, weight, rstd = ctx.saved_tensors
    gain_grad = weight is not None and ctx.needs_input_grad[2]
    dx, dres, dw = torch.ops.mupbench.add_rms_norm_bwd(dy, dh, h, weight, rstd, ctx.x_dtype, gain_grad)
    return dx, dres.to(ctx.residual_dtype), (dw if gain_grad else None), None, None


_add_rms_norm_op.register_autograd(_add_rms_norm_grad, setup_context=_add_rms_norm_setup)


# ------------------------------------------------------------------------------------------------------ public


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Same contract as kernels.reference.rms_norm, on the Triton kernels; raises ValueError for what they cannot take."""
    reason = unsupported(x, weight)
    if reason:
        raise ValueError(f"Triton rms_norm: {reason}")
    return torch.ops.mupbench.rms_norm(x, weight, float(eps))[0]


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6,
                 out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as kernels.reference.add_rms_norm: (rms_norm(x + residual) in out_dtype, x + residual)."""
    reason = unsupported(x, weight, residual)
    if reason:
        raise ValueError(f"Triton add_rms_norm: {reason}")
    h_dtype = torch.promote_types(x.dtype, residual.dtype)
    y, h, _ = torch.ops.mupbench.add_rms_norm(x, residual, weight, float(eps), out_dtype or h_dtype)
    return y, h
