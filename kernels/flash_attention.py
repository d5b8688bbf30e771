"""Flash attention in Triton (FlashAttention-2 scheme), forward and backward, causal or not.

Layout and meaning follow F.scaled_dot_product_attention: q (B, H, T, D), k and v (B, H_kv, T, D), H_kv dividing H
(each group of H / H_kv query heads reads one K/V head), softmax(scale · q kᵀ) v with an optional causal mask.

- Forward: one program per (query block, batch·head) streams over key blocks with an online softmax in base 2
  (scores are scaled in registers; K is never copied) and saves the per-row log-sum-exp (base 2, of the scaled
  scores) for the backward. Causal programs stop at their diagonal.
- Backward: a preprocess computes delta = rowsum(dO·O); one kernel owns a key block and walks the query blocks of
  every query head in its group, accumulating dK and dV in registers (so the group sum needs no atomics); another
  owns a query block and walks the key blocks for dQ. Causal kernels skip fully masked blocks.
- Blocks that lie wholly inside the sequence and the causal mask run without masks; only the diagonal blocks and the
  last, partial block of the sequence are masked.
- Head dims 1–128, padded to a power of two (at least 16, the smallest tl.dot) with masked loads; any sequence length.

On a GPU the block sizes are autotuned per (sequence-length bucket, padded head dim, causal, group size, dtype). Under TRITON_INTERPRET=1
(CPU, numpy) one small fixed configuration is used instead, and fp32 matmuls use IEEE precision (as they do on a GPU:
fp32 here is for exact tests, bf16/fp16 for training).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_HEAD_DIM = 128

# Fixed blocks under the interpreter. They differ between M and N so that the tests cover blocks that do not line up.
_INTERPRET_FWD = {"BLOCK_M": 32, "BLOCK_N": 16}
_INTERPRET_DKDV = {"BLOCK_M": 16, "BLOCK_N": 32}
_INTERPRET_DQ = {"BLOCK_M": 32, "BLOCK_N": 16}
_PREPROCESS_BLOCK = 64


def _configs(shapes: list[tuple[int, int, int, int, int]]) -> list[triton.Config]:
    """(BLOCK_M, BLOCK_N, warps, stages, largest padded head dim) → configs; the last field feeds `_prune`."""
    configs = []
    for m, n, w, s, max_d in shapes:
        config = triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
        config.max_head_dim = max_d
        configs.append(config)
    return configs


# For Hopper-class GPUs. The head-dim limits drop configs that spill registers at D = 128 (checked with ptxas for sm_90).
_FWD_CONFIGS = _configs([
    (128, 64, 8, 3, 128), (128, 128, 8, 3, 128), (128, 128, 8, 2, 128), (64, 64, 4, 4, 128), (64, 32, 4, 4, 128),
    (128, 64, 4, 3, 64), (128, 32, 4, 4, 64), (64, 128, 4, 3, 64),
])
# dK/dV: BLOCK_N keys owned, BLOCK_M queries per step (it holds two fp32 BLOCK_N × D accumulators).
_DKDV_CONFIGS = _configs([
    (32, 128, 8, 3, 64), (64, 128, 8, 2, 64), (64, 64, 8, 3, 64), (16, 64, 4, 3, 64),
    (16, 128, 8, 3, 128), (32, 64, 8, 3, 128), (32, 32, 4, 3, 128), (32, 128, 8, 2, 128),
])
# dQ: BLOCK_M queries owned, BLOCK_N keys per step.
_DQ_CONFIGS = _configs([
    (128, 32, 8, 3, 128), (128, 64, 8, 3, 128), (128, 64, 8, 2, 128), (64, 32, 4, 3, 128), (128, 16, 8, 3, 128),
    (64, 64, 4, 3, 64),
])
# Sequence lengths share a tuning up to the next power of two (T_BUCKET), so odd lengths do not each re-tune.
_TUNE_KEY = ["T_BUCKET", "D_PAD", "CAUSAL", "GROUP"]


def _prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    d_pad = kwargs.get("D_PAD", named_args.get("D_PAD", 0))
    kept = [c for c in configs if d_pad <= getattr(c, "max_head_dim", d_pad)]
    return kept or configs


def _tuned(configs: list[triton.Config]):
    if INTERPRET:
        return lambda kernel: kernel
    return triton.autotune(configs=configs, key=_TUNE_KEY, prune_configs_by={"early_config_prune": _prune})


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
def _program_heads(bh, H, GROUP):
    """(batch, query head, KV head) of a program over batch·heads, as int64 for pointer arithmetic."""
    h = bh % H
    return (bh // H).to(tl.int64), h.to(tl.int64), (h // GROUP).to(tl.int64)


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
    BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        k = _load_rows(k_ptrs + start_n * stride_kt, cols, T, offs_d, HEAD_DIM, D_PAD, MASK)
        v = _load_rows(v_ptrs + start_n * stride_vt, cols, T, offs_d, HEAD_DIM, D_PAD, MASK)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        if MASK:
            valid = cols[None, :] < T
            if CAUSAL:
                valid = valid & (cols[None, :] <= offs_m[:, None])
            s = tl.where(valid, s, float("-inf"))
        # Every row sees key 0 in the first block it visits, so m_new is finite from then on.
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@_tuned(_FWD_CONFIGS)
@triton.jit
def _attn_fwd(
    Q, K, V, O, LSE, sm_scale,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot,
    H, GROUP, T, T_BUCKET,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b, h, hk = _program_heads(bh, H, GROUP)

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :]
    k_ptrs = K + b * stride_kb + hk * stride_kh + offs_n[:, None] * stride_kt + offs_d[None, :]
    v_ptrs = V + b * stride_vb + hk * stride_vh + offs_n[:, None] * stride_vt + offs_d[None, :]
    q = _load_rows(q_ptrs, offs_m, T, offs_d, HEAD_DIM, D_PAD, True)

    qk_scale = sm_scale * 1.4426950408889634  # scores in base 2: exp(x) = exp2(x·log2 e)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, D_PAD), dtype=tl.float32)

    unmasked_end, hi = _key_bounds(start_m, T, CAUSAL, BLOCK_N, BLOCK_M)
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, offs_n, offs_d, 0, unmasked_end, T, qk_scale,
        CAUSAL, False, HEAD_DIM, D_PAD, BLOCK_N, PRECISION,
    )
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, offs_n, offs_d, unmasked_end, hi, T, qk_scale,
        CAUSAL, True, HEAD_DIM, D_PAD, BLOCK_N, PRECISION,
    )

    acc = acc / l_i[:, None]
    o_ptrs = O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :]
    _store_rows(o_ptrs, acc.to(O.dtype.element_ty), offs_m, T, offs_d, HEAD_DIM)
    tl.store(LSE + bh.to(tl.int64) * T + offs_m, m_i + tl.math.log2(l_i), mask=offs_m < T)


# --------------------------------------------------------------------------------------------------------- backward


@triton.jit
def _bwd_preprocess(
    O, DO, DELTA,
    stride_ob, stride_oh, stride_ot, stride_dob, stride_doh, stride_dot,
    H, T,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    bh = tl.program_id(1)
    b, h, _ = _program_heads(bh, H, 1)
    offs_d = tl.arange(0, D_PAD)
    o = _load_rows(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :],
                   offs_m, T, offs_d, HEAD_DIM, D_PAD, True)
    do = _load_rows(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :],
                    offs_m, T, offs_d, HEAD_DIM, D_PAD, True)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(DELTA + bh.to(tl.int64) * T + offs_m, delta, mask=offs_m < T)


@triton.jit
def _bwd_dkdv_inner(
    dk, dv, k, v, q_ptrs, do_ptrs, stride_qt, stride_dot, lse_ptr, delta_ptr,
    offs_n, offs_m0, offs_d, lo, hi, T, qk_scale,
    CAUSAL: tl.constexpr, MASK: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, PRECISION: tl.constexpr,
):
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + offs_m0
        q = _load_rows(q_ptrs + start_m * stride_qt, offs_m, T, offs_d, HEAD_DIM, D_PAD, MASK)
        do = _load_rows(do_ptrs + start_m * stride_dot, offs_m, T, offs_d, HEAD_DIM, D_PAD, MASK)
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


@_tuned(_DKDV_CONFIGS)
@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, DO, LSE, DELTA, DK, DV, sm_scale,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt, stride_dob, stride_doh, stride_dot,
    stride_dkb, stride_dkh, stride_dkt, stride_dvb, stride_dvh, stride_dvt,
    H, H_KV, GROUP, T, T_BUCKET,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    start_n = tl.program_id(0) * BLOCK_N
    bhk = tl.program_id(1)
    b = (bhk // H_KV).to(tl.int64)
    hk = (bhk % H_KV).to(tl.int64)

    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_PAD)
    k = _load_rows(K + b * stride_kb + hk * stride_kh + offs_n[:, None] * stride_kt + offs_d[None, :],
                   offs_n, T, offs_d, HEAD_DIM, D_PAD, True)
    v = _load_rows(V + b * stride_vb + hk * stride_vh + offs_n[:, None] * stride_vt + offs_d[None, :],
                   offs_n, T, offs_d, HEAD_DIM, D_PAD, True)
    dk = tl.zeros((BLOCK_N, D_PAD), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, D_PAD), dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634

    # Query blocks (starts are multiples of BLOCK_M): [lo, diag_end) straddle the causal diagonal; [diag_end,
    # full_end) are wholly below it and inside the sequence; a last partial block from full_end needs the row mask.
    full_end = (T // BLOCK_M) * BLOCK_M
    if CAUSAL:
        lo = (start_n // BLOCK_M) * BLOCK_M
        diag_end = tl.cdiv(start_n + BLOCK_N, BLOCK_M) * BLOCK_M
    else:
        lo = 0
        diag_end = 0
    tail_start = tl.maximum(diag_end, full_end)

    for g in range(GROUP):
        h = hk * GROUP + g
        q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m0[:, None] * stride_qt + offs_d[None, :]
        do_ptrs = DO + b * stride_dob + h * stride_doh + offs_m0[:, None] * stride_dot + offs_d[None, :]
        lse_ptr = LSE + (b * H + h) * T
        delta_ptr = DELTA + (b * H + h) * T
        if CAUSAL:
            dk, dv = _bwd_dkdv_inner(
                dk, dv, k, v, q_ptrs, do_ptrs, stride_qt, stride_dot, lse_ptr, delta_ptr,
                offs_n, offs_m0, offs_d, lo, tl.minimum(diag_end, T), T, qk_scale,
                CAUSAL, True, HEAD_DIM, D_PAD, BLOCK_M, PRECISION,
            )
        dk, dv = _bwd_dkdv_inner(
            dk, dv, k, v, q_ptrs, do_ptrs, stride_qt, stride_dot, lse_ptr, delta_ptr,
            offs_n, offs_m0, offs_d, diag_end, full_end, T, qk_scale,
            CAUSAL, False, HEAD_DIM, D_PAD, BLOCK_M, PRECISION,
        )
        dk, dv = _bwd_dkdv_inner(
            dk, dv, k, v, q_ptrs, do_ptrs, stride_qt, stride_dot, lse_ptr, delta_ptr,
            offs_n, offs_m0, offs_d, tail_start, T, T, qk_scale,
            CAUSAL, True, HEAD_DIM, D_PAD, BLOCK_M, PRECISION,
        )

    dk = dk * sm_scale
    _store_rows(DK + b * stride_dkb + hk * stride_dkh + offs_n[:, None] * stride_dkt + offs_d[None, :],
                dk.to(DK.dtype.element_ty), offs_n, T, offs_d, HEAD_DIM)
    _store_rows(DV + b * stride_dvb + hk * stride_dvh + offs_n[:, None] * stride_dvt + offs_d[None, :],
                dv.to(DV.dtype.element_ty), offs_n, T, offs_d, HEAD_DIM)


@triton.jit
def _bwd_dq_inner(
    dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, offs_n, offs_d, lo, hi, T, qk_scale,
    CAUSAL: tl.constexpr, MASK: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        k = _load_rows(k_ptrs + start_n * stride_kt, cols, T, offs_d, HEAD_DIM, D_PAD, MASK)
        v = _load_rows(v_ptrs + start_n * stride_vt, cols, T, offs_d, HEAD_DIM, D_PAD, MASK)
        p = tl.math.exp2(tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale - lse[:, None])
        if MASK:
            valid = cols[None, :] < T
            if CAUSAL:
                valid = valid & (cols[None, :] <= offs_m[:, None])
            p = tl.where(valid, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)
    return dq


@_tuned(_DQ_CONFIGS)
@triton.jit
def _attn_bwd_dq(
    Q, K, V, DO, LSE, DELTA, DQ, sm_scale,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt, stride_dob, stride_doh, stride_dot,
    stride_dqb, stride_dqh, stride_dqt,
    H, GROUP, T, T_BUCKET,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b, h, hk = _program_heads(bh, H, GROUP)

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    q = _load_rows(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                   offs_m, T, offs_d, HEAD_DIM, D_PAD, True)
    do = _load_rows(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :],
                    offs_m, T, offs_d, HEAD_DIM, D_PAD, True)
    row = bh.to(tl.int64) * T + offs_m
    lse = tl.load(LSE + row, mask=offs_m < T, other=0.0)
    delta = tl.load(DELTA + row, mask=offs_m < T, other=0.0)
    k_ptrs = K + b * stride_kb + hk * stride_kh + offs_n[:, None] * stride_kt + offs_d[None, :]
    v_ptrs = V + b * stride_vb + hk * stride_vh + offs_n[:, None] * stride_vt + offs_d[None, :]
    dq = tl.zeros((BLOCK_M, D_PAD), dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634

    unmasked_end, hi = _key_bounds(start_m, T, CAUSAL, BLOCK_N, BLOCK_M)
    dq = _bwd_dq_inner(
        dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, offs_n, offs_d, 0, unmasked_end, T,
        qk_scale, CAUSAL, False, HEAD_DIM, D_PAD, BLOCK_N, PRECISION,
    )
    dq = _bwd_dq_inner(
        dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, offs_n, offs_d, unmasked_end, hi, T,
        qk_scale, CAUSAL, True, HEAD_DIM, D_PAD, BLOCK_N, PRECISION,
    )
    dq = dq * sm_scale
    _store_rows(DQ + b * stride_dqb + h * stride_dqh + offs_m[:, None] * stride_dqt + offs_d[None, :],
                dq.to(DQ.dtype.element_ty), offs_m, T, offs_d, HEAD_DIM)


# ---------------------------------------------------------------------------------------------------------- wrapper


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _bucket(seq: int) -> int:
    return max(16, triton.next_power_of_2(seq))


def _fixed(config: dict[str, int]) -> dict[str, int]:
    return config if INTERPRET else {}


def _meta(q: torch.Tensor, causal: bool) -> dict:
    head_dim = q.shape[-1]
    return {
        "HEAD_DIM": head_dim,
        "D_PAD": max(16, triton.next_power_of_2(head_dim)),
        "CAUSAL": bool(causal),
        "PRECISION": "ieee" if q.dtype == torch.float32 else "tf32",  # "tf32" is ignored for 16-bit inputs
    }


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, causal):
        q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
        batch, heads, seq, _ = q.shape
        kv_heads = k.shape[1]
        group = heads // kv_heads
        meta = _meta(q, causal)
        o = q.new_empty(q.shape)
        lse = torch.empty((batch, heads, seq), dtype=torch.float32, device=q.device)

        def grid(m):
            return (triton.cdiv(seq, m["BLOCK_M"]), batch * heads)

        _attn_fwd[grid](
            q, k, v, o, lse, float(scale),
            *_strides(q), *_strides(k), *_strides(v), *_strides(o),
            heads, group, seq, _bucket(seq), **meta, **_fixed(_INTERPRET_FWD),
        )
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.scale, ctx.causal = float(scale), bool(causal)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        do = _last_dim_contiguous(do)
        batch, heads, seq, _ = q.shape
        kv_heads = k.shape[1]
        group = heads // kv_heads
        meta = _meta(q, ctx.causal)

        delta = torch.empty_like(lse)
        _bwd_preprocess[(triton.cdiv(seq, _PREPROCESS_BLOCK), batch * heads)](
            o, do, delta, *_strides(o), *_strides(do), heads, seq,
            HEAD_DIM=meta["HEAD_DIM"], D_PAD=meta["D_PAD"], BLOCK_M=_PREPROCESS_BLOCK,
        )

        dk = k.new_empty(k.shape)
        dv = v.new_empty(v.shape)

        def grid_kv(m):
            return (triton.cdiv(seq, m["BLOCK_N"]), batch * kv_heads)

        _attn_bwd_dkdv[grid_kv](
            q, k, v, do, lse, delta, dk, dv, ctx.scale,
            *_strides(q), *_strides(k), *_strides(v), *_strides(do), *_strides(dk), *_strides(dv),
            heads, kv_heads, group, seq, _bucket(seq), **meta, **_fixed(_INTERPRET_DKDV),
        )

        dq = None
        if ctx.needs_input_grad[0]:
            dq = q.new_empty(q.shape)

            def grid_q(m):
                return (triton.cdiv(seq, m["BLOCK_M"]), batch * heads)

            _attn_bwd_dq[grid_q](
                q, k, v, do, lse, delta, dq, ctx.scale,
                *_strides(q), *_strides(k), *_strides(v), *_strides(do), *_strides(dq),
                heads, group, seq, _bucket(seq), **meta, **_fixed(_INTERPRET_DQ),
            )
        return dq, dk, dv, None, None


def unsupported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str | None:
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
    return None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool = True) -> torch.Tensor:
    """Same contract as kernels.reference.attention, on the Triton kernels; raises ValueError for what they cannot take."""
    reason = unsupported(q, k, v)
    if reason:
        raise ValueError(f"Triton attention: {reason}")
    return _FlashAttention.apply(q, k, v, scale, causal)
