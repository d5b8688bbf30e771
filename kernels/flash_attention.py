"""Flash attention in Triton (FlashAttention-2 scheme), forward and backward, causal or not.

Layout and meaning follow F.scaled_dot_product_attention: q (B, H, T, D), k and v (B, H_kv, T, D), H_kv dividing H
(each group of H / H_kv query heads reads one K/V head), softmax(scale · q kᵀ) v (scale > 0) with an optional causal
mask. Any strides with a unit last stride are read as they are; the output and the gradients come back in their input's
layout (a q that is a transposed view of a (B, T, H, D) tensor gives an output laid out (B, T, H, D), so the model's
transpose + reshape afterwards is a view, not a copy).

- Forward: one program per (query block, batch·head) streams over key blocks with an online softmax in base 2: the
  running maximum is taken over the raw scores, and scale·log2(e) enters once, in the one fused multiply-subtract
  before exp2 (K is never copied, never pre-scaled); it saves the per-row log-sum-exp (base 2, of the scaled scores).
- Backward: a preprocess computes delta = rowsum(dO·O); then ONE launch where each program owns a block of BLOCK rows:
  as keys, it walks the query blocks for dK and dV (accumulated in registers; no atomics); as queries, it walks the
  key blocks for dQ. Under a causal mask the two halves of a program's work are complementary (early key blocks see
  many queries, early query blocks few keys), which balances the programs.
- Grouped KV heads: a program either walks every query head of its KV head (dK/dV summed in registers), or, when that
  gives too few programs to fill the GPU (few KV heads, short sequences), owns one query head and writes its fp32
  dK/dV share to a scratch buffer that one deterministic sum reduces afterwards. Both are deterministic.
- Blocks wholly inside the sequence and the causal mask run without masks; only diagonal and last partial blocks are
  masked. Head dims 1–128, padded to a power of two (at least 16, the smallest tl.dot) with masked loads; any length.
- Grids are one-dimensional (programs × batch·heads flattened), so no axis meets CUDA's 65535 limit on axes 1 and 2.
  Batch and head offsets are int64; row offsets are int64 only where T × row stride reaches 2³¹ (ROWS64, chosen per
  call: int64 offsets cost registers), offsets inside a tile stay int32.

Block sizes come from the pinned table in kernels/configs.py (never autotuned at run time), chosen outside the
operators and passed to them as arguments (so they are part of a compiled graph and of torch.compile's cache key);
fp32 matmuls use IEEE precision (fp32 is for exact tests, bf16/fp16 for training). The kernels are torch.library
operators (kernels/library.py): `torch.compile(fullgraph=True)` traces through them; double backward raises.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from mupbench.kernels import configs
from mupbench.kernels.library import INTERPRET, operator, refuse_bf16_in_interpreter, wrap_triton

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_HEAD_DIM = 128
_PREPROCESS_BLOCK = 64
ROWS64_AT = 2**31  # row offsets T × stride from here on need int64 (the tests lower it to run that path)
_INTERPRET_SMS = 4  # the interpreter's pretend SM count: small enough that both GQA backward paths get tested

@triton.jit
def _load_rows(ptrs, rows, T, offs_d, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, CHECK_ROWS: tl.constexpr):
    """A (rows × D_PAD) tile; rows ≥ T and padded head-dim columns read as 0."""
    if CHECK_ROWS:
        if HEAD_DIM == D_PAD:
            tile = tl.load(ptrs, mask=(rows < T)[:, None], other=0.0)
        else:
            tile = tl.load(ptrs, mask=(rows < T)[:, None] & (offs_d < HEAD_DIM)[None, :], other=0.0)
    else:
        if HEAD_DIM == D_PAD:
            tile = tl.load(ptrs)
        else:
            tile = tl.load(ptrs, mask=(offs_d < HEAD_DIM)[None, :], other=0.0)
    return tile


@triton.jit
def _store_rows(ptrs, tile, rows, T, offs_d, HEAD_DIM: tl.constexpr):
    tl.store(ptrs, tile, mask=(rows < T)[:, None] & (offs_d < HEAD_DIM)[None, :])


@triton.jit
def _row_offset(start, stride_t, ROWS64: tl.constexpr):
    """Offset of row `start` in a (T, D) slice: int64 where T × row stride may pass 2³¹ (ROWS64), else int32 (an
    int64 offset makes Triton carry 64-bit offsets for whole tiles: +30 registers in the backward)."""
    if ROWS64:
        offset = tl.cast(start, tl.int64) * stride_t
    else:
        offset = start * stride_t
    return offset


@triton.jit
def _tile(base, start, stride_t, offs_r, offs_d, ROWS64: tl.constexpr):
    """Pointers to rows start + offs_r of a (T, D) slice at `base` (batch and head offsets are int64 already)."""
    return base + _row_offset(start, stride_t, ROWS64) + offs_r[:, None] * stride_t + offs_d[None, :]


@triton.jit
def _program_heads(bh, H, GROUP):
    """(batch, query head, KV head) of a program over batch·heads, as int64 for pointer arithmetic."""
    h = bh % H
    return (bh // H).to(tl.int64), h.to(tl.int64), (h // GROUP).to(tl.int64)


@triton.jit
def _score_mask(rows, cols, T, CAUSAL: tl.constexpr):
    """Where a (query rows × key cols) score is real: the key inside the sequence and, if causal, not after the query."""
    valid = cols[None, :] < T
    if CAUSAL:
        valid = valid & (cols[None, :] <= rows[:, None])
    return valid


@triton.jit
def _key_bounds(start_m, T, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr):
    """For the query block at start_m: key blocks in [0, unmasked_end) need no mask, [unmasked_end, hi) do."""
    if CAUSAL:
        unmasked_end = (start_m // BLOCK_N) * BLOCK_N  # key blocks ending at or before the first query row
        hi = tl.minimum(start_m + BLOCK_M, T)
    else:
        unmasked_end = (T // BLOCK_N) * BLOCK_N
        hi = T
    return unmasked_end, hi


# ---------------------------------------------------------------------------------------------------------- forward


@triton.jit
def _fwd_inner(
    acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, offs_n, offs_d, lo, hi, T, qk_scale,
    CAUSAL: tl.constexpr, MASK: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, ROWS64: tl.constexpr,
):
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        k = _load_rows(k_ptrs + _row_offset(start_n, stride_kt, ROWS64), cols, T, offs_d, HEAD_DIM, D_PAD, MASK)
        v = _load_rows(v_ptrs + _row_offset(start_n, stride_vt, ROWS64), cols, T, offs_d, HEAD_DIM, D_PAD, MASK)
        qk = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # raw scores: the scale enters once, below
        if MASK:
            qk = tl.where(_score_mask(offs_m, cols, T, CAUSAL), qk, float("-inf"))
        # Every row sees key 0 in the first block it visits, so m_new is finite from then on (qk_scale > 0, so the
        # maximum of the scaled scores is the scaled maximum).
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        p = tl.math.exp2(qk * qk_scale - m_new[:, None])  # one fused multiply-subtract per score
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(
    Q, K, V, O, LSE, sm_scale,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot,
    H, GROUP, T, N_BLOCKS,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr, ROWS64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    bh = pid // N_BLOCKS
    block = pid % N_BLOCKS
    if CAUSAL:
        block = N_BLOCKS - 1 - block  # the longest query blocks of each head start first
    start_m = block * BLOCK_M
    b, h, hk = _program_heads(bh, H, GROUP)

    offs_r = tl.arange(0, BLOCK_M)
    offs_m = start_m + offs_r
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    k_ptrs = _tile(K + b * stride_kb + hk * stride_kh, 0, stride_kt, offs_n, offs_d, ROWS64)
    v_ptrs = _tile(V + b * stride_vb + hk * stride_vh, 0, stride_vt, offs_n, offs_d, ROWS64)
    q = _load_rows(_tile(Q + b * stride_qb + h * stride_qh, start_m, stride_qt, offs_r, offs_d, ROWS64), offs_m, T,
                   offs_d, HEAD_DIM, D_PAD, True)

    qk_scale = sm_scale * 1.4426950408889634  # scores in base 2: exp(x) = exp2(x·log2 e)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, D_PAD), dtype=tl.float32)

    unmasked_end, hi = _key_bounds(start_m, T, CAUSAL, BLOCK_N, BLOCK_M)
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, offs_n, offs_d, 0, unmasked_end, T, qk_scale,
        CAUSAL, False, HEAD_DIM, D_PAD, BLOCK_N, PRECISION, ROWS64,
    )
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, offs_n, offs_d, unmasked_end, hi, T, qk_scale,
        CAUSAL, True, HEAD_DIM, D_PAD, BLOCK_N, PRECISION, ROWS64,
    )

    acc = acc / l_i[:, None]
    o_ptrs = _tile(O + b * stride_ob + h * stride_oh, start_m, stride_ot, offs_r, offs_d, ROWS64)
    _store_rows(o_ptrs, acc.to(O.dtype.element_ty), offs_m, T, offs_d, HEAD_DIM)
    tl.store(LSE + bh.to(tl.int64) * T + offs_m, m_i + tl.math.log2(l_i), mask=offs_m < T)


# --------------------------------------------------------------------------------------------------------- backward


@triton.jit
def _bwd_preprocess(
    O, DO, DELTA,
    stride_ob, stride_oh, stride_ot, stride_dob, stride_doh, stride_dot,
    H, T, N_BLOCKS,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, ROWS64: tl.constexpr, BLOCK_M: tl.constexpr,
):
    pid = tl.program_id(0)
    bh = pid // N_BLOCKS
    start_m = (pid % N_BLOCKS) * BLOCK_M
    offs_r = tl.arange(0, BLOCK_M)
    offs_m = start_m + offs_r
    b, h, _ = _program_heads(bh, H, 1)
    offs_d = tl.arange(0, D_PAD)
    o = _load_rows(_tile(O + b * stride_ob + h * stride_oh, start_m, stride_ot, offs_r, offs_d, ROWS64),
                   offs_m, T, offs_d, HEAD_DIM, D_PAD, True)
    do = _load_rows(_tile(DO + b * stride_dob + h * stride_doh, start_m, stride_dot, offs_r, offs_d, ROWS64),
                    offs_m, T, offs_d, HEAD_DIM, D_PAD, True)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(DELTA + bh.to(tl.int64) * T + offs_m, delta, mask=offs_m < T)


@triton.jit
def _bwd_dkdv_inner(
    dk, dv, k, v, q_ptrs, do_ptrs, stride_qt, stride_dot, lse_ptr, delta_ptr,
    offs_n, offs_m0, offs_d, lo, hi, T, qk_scale,
    CAUSAL: tl.constexpr, MASK: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, PRECISION: tl.constexpr, ROWS64: tl.constexpr,
):
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + offs_m0
        q = _load_rows(q_ptrs + _row_offset(start_m, stride_qt, ROWS64), offs_m, T, offs_d, HEAD_DIM, D_PAD, MASK)
        do = _load_rows(do_ptrs + _row_offset(start_m, stride_dot, ROWS64), offs_m, T, offs_d, HEAD_DIM, D_PAD, MASK)
        if MASK:
            lse = tl.load(lse_ptr + offs_m, mask=offs_m < T, other=0.0)
            delta = tl.load(delta_ptr + offs_m, mask=offs_m < T, other=0.0)
        else:
            lse = tl.load(lse_ptr + offs_m)
            delta = tl.load(delta_ptr + offs_m)
        # Transposed scores: rows are this program's keys, columns the step's queries.
        p_t = tl.math.exp2(tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale - lse[None, :])
        if MASK:
            valid = offs_m[None, :] < T
            if CAUSAL:
                valid = valid & (offs_m[None, :] >= offs_n[:, None])
            p_t = tl.where(valid, p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=PRECISION)
        dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=PRECISION)
    return dk, dv


@triton.jit
def _bwd_dq_inner(
    dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, offs_n, offs_d, lo, hi, T, qk_scale,
    CAUSAL: tl.constexpr, MASK: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, ROWS64: tl.constexpr,
):
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        k = _load_rows(k_ptrs + _row_offset(start_n, stride_kt, ROWS64), cols, T, offs_d, HEAD_DIM, D_PAD, MASK)
        v = _load_rows(v_ptrs + _row_offset(start_n, stride_vt, ROWS64), cols, T, offs_d, HEAD_DIM, D_PAD, MASK)
        p = tl.math.exp2(tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale - lse[:, None])
        if MASK:
            p = tl.where(_score_mask(offs_m, cols, T, CAUSAL), p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)
    return dq


@triton.jit
def _attn_bwd(
    Q, K, V, DO, LSE, DELTA, DQ, DK, DV, sm_scale,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt, stride_dob, stride_doh, stride_dot,
    stride_dqb, stride_dqh, stride_dqt, stride_dkb, stride_dkh, stride_dkt, stride_dvb, stride_dvh, stride_dvt,
    H, GROUP, T, N_BLOCKS, H_PROGRAMS,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr, ROWS64: tl.constexpr,
    HEADS_PER_PROGRAM: tl.constexpr, BLOCK: tl.constexpr, BLOCK_M1: tl.constexpr, BLOCK_N2: tl.constexpr,
):
    """Program (block j, batch b, p): dK/dV of keys [j·BLOCK, (j+1)·BLOCK) summed over query heads
    p·HEADS_PER_PROGRAM … +HEADS_PER_PROGRAM, stored at head p of DK/DV; then dQ of queries in the same rows for each
    of those heads."""
    pid = tl.program_id(0)
    block = pid % N_BLOCKS
    bp = pid // N_BLOCKS
    b = (bp // H_PROGRAMS).to(tl.int64)
    p = (bp % H_PROGRAMS).to(tl.int64)
    hk = (p * HEADS_PER_PROGRAM) // GROUP
    start = block * BLOCK
    offs_d = tl.arange(0, D_PAD)
    offs_r = tl.arange(0, BLOCK)
    qk_scale = sm_scale * 1.4426950408889634

    # ---- dK, dV: this program's keys against every query block that sees them
    offs_n = start + offs_r
    offs_m1 = tl.arange(0, BLOCK_M1)
    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh
    k = _load_rows(_tile(k_base, start, stride_kt, offs_r, offs_d, ROWS64), offs_n, T, offs_d, HEAD_DIM, D_PAD, True)
    v = _load_rows(_tile(v_base, start, stride_vt, offs_r, offs_d, ROWS64), offs_n, T, offs_d, HEAD_DIM, D_PAD, True)
    dk = tl.zeros((BLOCK, D_PAD), dtype=tl.float32)
    dv = tl.zeros((BLOCK, D_PAD), dtype=tl.float32)
    # Query blocks (starts are multiples of BLOCK_M1): [lo, diag_end) straddle the causal diagonal; [diag_end,
    # full_end) are wholly below it and inside the sequence; a last partial block from full_end needs the row mask.
    full_end = (T // BLOCK_M1) * BLOCK_M1
    if CAUSAL:
        lo = (start // BLOCK_M1) * BLOCK_M1
        diag_end = tl.cdiv(start + BLOCK, BLOCK_M1) * BLOCK_M1
    else:
        lo = 0
        diag_end = 0
    tail_start = tl.maximum(diag_end, full_end)
    for g in range(HEADS_PER_PROGRAM):
        h = p * HEADS_PER_PROGRAM + g
        q_ptrs = _tile(Q + b * stride_qb + h * stride_qh, 0, stride_qt, offs_m1, offs_d, ROWS64)
        do_ptrs = _tile(DO + b * stride_dob + h * stride_doh, 0, stride_dot, offs_m1, offs_d, ROWS64)
        lse_ptr = LSE + (b * H + h) * T
        delta_ptr = DELTA + (b * H + h) * T
        if CAUSAL:
            dk, dv = _bwd_dkdv_inner(
                dk, dv, k, v, q_ptrs, do_ptrs, stride_qt, stride_dot, lse_ptr, delta_ptr,
                offs_n, offs_m1, offs_d, lo, tl.minimum(diag_end, T), T, qk_scale,
                CAUSAL, True, HEAD_DIM, D_PAD, BLOCK_M1, PRECISION, ROWS64,
            )
        dk, dv = _bwd_dkdv_inner(
            dk, dv, k, v, q_ptrs, do_ptrs, stride_qt, stride_dot, lse_ptr, delta_ptr,
            offs_n, offs_m1, offs_d, diag_end, full_end, T, qk_scale,
            CAUSAL, False, HEAD_DIM, D_PAD, BLOCK_M1, PRECISION, ROWS64,
        )
        dk, dv = _bwd_dkdv_inner(
            dk, dv, k, v, q_ptrs, do_ptrs, stride_qt, stride_dot, lse_ptr, delta_ptr,
            offs_n, offs_m1, offs_d, tail_start, T, T, qk_scale,
            CAUSAL, True, HEAD_DIM, D_PAD, BLOCK_M1, PRECISION, ROWS64,
        )
    dk = dk * sm_scale
    _store_rows(_tile(DK + b * stride_dkb + p * stride_dkh, start, stride_dkt, offs_r, offs_d, ROWS64),
                dk.to(DK.dtype.element_ty), offs_n, T, offs_d, HEAD_DIM)
    _store_rows(_tile(DV + b * stride_dvb + p * stride_dvh, start, stride_dvt, offs_r, offs_d, ROWS64),
                dv.to(DV.dtype.element_ty), offs_n, T, offs_d, HEAD_DIM)

    # ---- dQ: the same rows as queries, against every key block they see
    offs_m = start + offs_r
    offs_n2 = tl.arange(0, BLOCK_N2)
    k_ptrs = _tile(k_base, 0, stride_kt, offs_n2, offs_d, ROWS64)
    v_ptrs = _tile(v_base, 0, stride_vt, offs_n2, offs_d, ROWS64)
    unmasked_end, hi = _key_bounds(start, T, CAUSAL, BLOCK_N2, BLOCK)
    for g in range(HEADS_PER_PROGRAM):
        h = p * HEADS_PER_PROGRAM + g
        q = _load_rows(_tile(Q + b * stride_qb + h * stride_qh, start, stride_qt, offs_r, offs_d, ROWS64),
                       offs_m, T, offs_d, HEAD_DIM, D_PAD, True)
        do = _load_rows(_tile(DO + b * stride_dob + h * stride_doh, start, stride_dot, offs_r, offs_d, ROWS64),
                        offs_m, T, offs_d, HEAD_DIM, D_PAD, True)
        row = (b * H + h) * T + offs_m
        lse = tl.load(LSE + row, mask=offs_m < T, other=0.0)
        delta = tl.load(DELTA + row, mask=offs_m < T, other=0.0)
        dq = tl.zeros((BLOCK, D_PAD), dtype=tl.float32)
        dq = _bwd_dq_inner(
            dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, offs_n2, offs_d, 0, unmasked_end,
            T, qk_scale, CAUSAL, False, HEAD_DIM, D_PAD, BLOCK_N2, PRECISION, ROWS64,
        )
        dq = _bwd_dq_inner(
            dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, offs_n2, offs_d, unmasked_end, hi,
            T, qk_scale, CAUSAL, True, HEAD_DIM, D_PAD, BLOCK_N2, PRECISION, ROWS64,
        )
        dq = dq * sm_scale
        _store_rows(_tile(DQ + b * stride_dqb + h * stride_dqh, start, stride_dqt, offs_r, offs_d, ROWS64),
                    dq.to(DQ.dtype.element_ty), offs_m, T, offs_d, HEAD_DIM)


# ---------------------------------------------------------------------------------------------------------- wrapper


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _like(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An output in t's layout (t's strides when they are dense, else contiguous)."""
    return torch.empty_like(t, dtype=dtype, memory_format=torch.preserve_format)


def padded_head_dim(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def _rows64(*tensors: torch.Tensor) -> bool:
    """Whether a row offset T × row stride of any (B, H, T, D) tensor here reaches 2³¹ (int64 row offsets needed)."""
    return any(t.shape[2] * t.stride(2) >= ROWS64_AT for t in tensors)


def _meta(q: torch.Tensor, causal: bool, *tensors: torch.Tensor) -> dict:
    head_dim = q.shape[-1]
    return {
        "HEAD_DIM": head_dim,
        "D_PAD": padded_head_dim(head_dim),
        "CAUSAL": bool(causal),
        "PRECISION": "ieee" if q.dtype == torch.float32 else "tf32",  # "tf32" is ignored for 16-bit inputs
        "ROWS64": _rows64(q, *tensors),
    }


def _sm_count(device: torch.device) -> int:
    if INTERPRET or device.type != "cuda":
        return _INTERPRET_SMS
    return torch.cuda.get_device_properties(device).multi_processor_count


def split_gqa(device: torch.device, batch: int, kv_heads: int, group: int, blocks: int) -> bool:
    """Whether the backward gives each query head its own programs (fp32 dK/dV shares summed afterwards) rather than
    looping over a KV head's query heads in one program: only when the latter leaves the GPU under-filled (fewer than
    two programs per SM). A function of the shape and the GPU only, so runs are repeatable."""
    return group > 1 and blocks * batch * kv_heads < 2 * _sm_count(device)


@torch.compiler.assume_constant_result
def launch_configs(device: torch.device, head_dim: int, dtype: torch.dtype, causal: bool,
                   group: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The (forward, backward) launch configurations of one attention call, as the operators take them: read from the
    pinned table (or a forced override) outside the operators; under torch.compile, once while tracing, so they are
    constants of the graph (a different table or override compiles, and caches, a different graph)."""
    fwd, bwd, _ = configs.attention(device, padded_head_dim(head_dim), dtype, causal, group)
    return fwd.launch, bwd.launch


def _attn_fwd_fake(q, k, v, scale, causal, fwd_config, bwd_config):
    q = _last_dim_contiguous(q)
    batch, heads, seq, _ = q.shape
    return _like(q), q.new_empty((batch, heads, seq), dtype=torch.float32)


def _attn_fwd_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool,
                   fwd_config: list[int], bwd_config: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(o, lse); fwd_config = FwdConfig.launch; bwd_config is carried for the backward (see _attn_setup)."""
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    batch, heads, seq, _ = q.shape
    block_m, block_n, warps, stages = fwd_config
    o = _like(q)
    lse = torch.empty((batch, heads, seq), dtype=torch.float32, device=q.device)
    blocks = triton.cdiv(seq, block_m)
    wrap_triton(_attn_fwd)[(blocks * batch * heads,)](
        q, k, v, o, lse, float(scale),
        *_strides(q), *_strides(k), *_strides(v), *_strides(o),
        heads, heads // k.shape[1], seq, blocks, **_meta(q, causal, k, v, o),
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps, num_stages=stages,
    )
    return o, lse


_attn_fwd_op = operator("flash_attn", _attn_fwd_fake)(_attn_fwd_impl)


def _attn_bwd_fake(do, q, k, v, o, lse, scale, causal, bwd_config):
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    return _like(q), _like(k), _like(v)


def _attn_bwd_impl(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                   lse: torch.Tensor, scale: float, causal: bool,
                   bwd_config: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k, v, o, do = (_last_dim_contiguous(t) for t in (q, k, v, o, do))
    batch, heads, seq, _ = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    block, block_m1, block_n2, warps, stages = bwd_config
    dq, dk, dv = _like(q), _like(k), _like(v)
    meta = _meta(q, causal, k, v, o, do, dq, dk, dv)

    delta = torch.empty_like(lse)
    pre_blocks = triton.cdiv(seq, _PREPROCESS_BLOCK)
    wrap_triton(_bwd_preprocess)[(pre_blocks * batch * heads,)](
        o, do, delta, *_strides(o), *_strides(do), heads, seq, pre_blocks,
        HEAD_DIM=meta["HEAD_DIM"], D_PAD=meta["D_PAD"], ROWS64=meta["ROWS64"], BLOCK_M=_PREPROCESS_BLOCK,
    )

    blocks = triton.cdiv(seq, block)
    split = split_gqa(q.device, batch, kv_heads, group, blocks)
    if split:  # one program per query head: fp32 shares of dK/dV per query head, summed below
        dk_out = torch.empty((batch, heads, seq, q.shape[-1]), dtype=torch.float32, device=q.device)
        dv_out = torch.empty_like(dk_out)
        meta["ROWS64"] = meta["ROWS64"] or _rows64(dk_out)
    else:
        dk_out, dv_out = dk, dv
    heads_per_program = 1 if split else group
    programs_per_batch = heads if split else kv_heads
    wrap_triton(_attn_bwd)[(blocks * batch * programs_per_batch,)](
        q, k, v, do, lse, delta, dq, dk_out, dv_out, float(scale),
        *_strides(q), *_strides(k), *_strides(v), *_strides(do),
        *_strides(dq), *_strides(dk_out), *_strides(dv_out),
        heads, group, seq, blocks, programs_per_batch, **meta,
        HEADS_PER_PROGRAM=heads_per_program, BLOCK=block, BLOCK_M1=block_m1, BLOCK_N2=block_n2,
        num_warps=warps, num_stages=stages,
    )
    if split:
        shape = (batch, kv_heads, group, seq, q.shape[-1])
        dk.copy_(dk_out.view(shape).sum(dim=2))
        dv.copy_(dv_out.view(shape).sum(dim=2))
    return dq, dk, dv


_attn_bwd_op = operator("flash_attn_bwd", _attn_bwd_fake)(_attn_bwd_impl)


def _attn_setup(ctx, inputs, output):
    q, k, v, scale, causal, _, bwd_config = inputs
    o, lse = output
    ctx.scale, ctx.causal, ctx.bwd_config = scale, causal, bwd_config
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(q, k, v, o, lse)


def _attn_grad(ctx, do, _dlse):
    if do is None:  # the output is unused
        return None, None, None, None, None, None, None
    q, k, v, o, lse = ctx.saved_tensors
    dq, dk, dv = torch.ops.mupbench.flash_attn_bwd(do, q, k, v, o, lse, ctx.scale, ctx.causal, ctx.bwd_config)
    return dq, dk, dv, None, None, None, None


_attn_fwd_op.register_autograd(_attn_grad, setup_context=_attn_setup)


def unsupported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> str | None:
    """Why the Triton kernels cannot take these tensors, or None when they can."""
    if q.device.type != "cuda" and not INTERPRET:
        return f"Triton kernels need CUDA tensors (got {q.device.type}; TRITON_INTERPRET=1 runs them on CPU)"
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        return "q, k and v must be 4-d (B, H, T, D)"
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in DTYPES:
        return f"q, k, v must share one dtype of float32, bfloat16, float16 (got {q.dtype}, {k.dtype}, {v.dtype})"
    if not (q.device == k.device == v.device):
        return "q, k and v must be on one device"
    batch, heads, seq, head_dim = q.shape
    if k.shape != v.shape or k.shape[0] != batch or k.shape[2:] != (seq, head_dim):
        return f"k and v must be (B, H_kv, T, D) matching q {tuple(q.shape)} (got {tuple(k.shape)}, {tuple(v.shape)})"
    if k.shape[1] == 0 or heads % k.shape[1]:
        return f"query heads ({heads}) must be a multiple of KV heads ({k.shape[1]})"
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        return f"head dim {head_dim} is outside 1..{MAX_HEAD_DIM}"
    if q.numel() == 0:
        return "empty input"
    if scale is not None and not scale > 0:
        return f"scale {scale} is not positive (the kernel takes the softmax maximum before scaling)"
    return refuse_bf16_in_interpreter(q)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool = True) -> torch.Tensor:
    """Same contract as kernels.reference.attention, on the Triton kernels; raises ValueError for what they cannot take."""
    reason = unsupported(q, k, v, scale)
    if reason:
        raise ValueError(f"Triton attention: {reason}")
    fwd, bwd = launch_configs(q.device, q.shape[-1], q.dtype, bool(causal), q.shape[1] // k.shape[1])
    return torch.ops.mupbench.flash_attn(q, k, v, float(scale), bool(causal), list(fwd), list(bwd))[0]
