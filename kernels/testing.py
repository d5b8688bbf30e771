"""Shape cases and error measures for checking the kernels against a float64 reference (used by the kernel tests).

`measure_*` runs a case forward and backward through `kernels.rms_norm` / `kernels.attention` (whichever backend
MUPBENCH_KERNELS selects) in a given dtype on a device, runs the same case through kernels.reference in float64 on
that device, and returns, for the output and every gradient, the largest absolute error and the reference's largest
magnitude (to scale tolerances by), plus "node": the autograd node's class name, which says what ran.
`RMSNormCase.fused` runs `add_rms_norm` (the residual add fused in; gradients of x, the residual and the gain, with an
incoming gradient on the new residual too); `strided_gain` feeds the gain as a stride-2 view. `AttentionCase.config`
picks candidate launch configurations by index (kernels/configs.py) instead of the pinned ones.
`reference_dtype=True` runs the plain-torch reference itself in that dtype instead: the "same-dtype torch" error
that FlashAttention-style bounds compare against.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mupbench import kernels
from mupbench.kernels import configs, reference


@dataclass(frozen=True)
class RMSNormCase:
    shape: tuple[int, ...]
    gain: str  # "none" | "scalar" | "vector"
    eps: float = 1e-6
    transposed: bool = False  # feed a non-contiguous view (first two dims swapped)
    strided_gain: bool = False  # feed the gain as a stride-2 view of a longer tensor
    fused: bool = False  # add_rms_norm(x, residual, gain): the residual add fused in

    @property
    def id(self) -> str:
        shape = "x".join(map(str, self.shape))
        return (f"{'add-rms' if self.fused else 'rms'}-{shape}-{self.gain}-eps{self.eps:g}"
                + ("-transposed" if self.transposed else "") + ("-strided-gain" if self.strided_gain else ""))


@dataclass(frozen=True)
class AttentionCase:
    batch: int
    heads: int
    kv_heads: int
    seq: int
    head_dim: int
    causal: bool
    scale: str = "inv_d"  # "inv_d" (μP) | "inv_sqrt_d"
    layout: str = "bhtd"  # "bhtd", or "bthd": q/k/v are transposed views of (B, T, H, D) tensors, as a model makes them
    config: int | None = None  # index into configs.FWD_CANDIDATES and BWD_CANDIDATES (None: the pinned ones)

    @property
    def softmax_scale(self) -> float:
        return 1.0 / self.head_dim if self.scale == "inv_d" else 1.0 / math.sqrt(self.head_dim)

    @property
    def id(self) -> str:
        mask = "causal" if self.causal else "full"
        return (
            f"attn-b{self.batch}-h{self.heads}kv{self.kv_heads}-t{self.seq}-d{self.head_dim}-{mask}-{self.scale}"
            + ("-bthd" if self.layout == "bthd" else "") + (f"-config{self.config}" if self.config is not None else "")
        )


# Small enough for the CPU interpreter: 1 and 7 rows, width 300 (not a power of two), enough rows at width 64 for the
# backward's grid-stride loop, a wide row (one row per program), every gain, a large eps, a non-contiguous input.
RMS_NORM_CASES = [
    RMSNormCase((1, 300), "vector"),
    RMSNormCase((7, 300), "none"),
    RMSNormCase((7, 300), "scalar"),
    RMSNormCase((7, 300), "vector"),
    RMSNormCase((7, 300), "vector", eps=0.5),
    RMSNormCase((5, 13, 64), "vector"),
    RMSNormCase((5, 13, 64), "scalar"),
    RMSNormCase((3, 2500), "vector"),
    RMSNormCase((3, 5, 48), "vector", transposed=True),
    RMSNormCase((7, 300), "vector", strided_gain=True),
    RMSNormCase((5, 13, 64), "vector", fused=True),
    RMSNormCase((7, 300), "scalar", fused=True),
    RMSNormCase((3, 5, 48), "none", fused=True, transposed=True),
]

# Sequence lengths 1, 77 and 200; head dims 48 and 80 (padded) and 16/64 (not); 8 query heads over 1 and 2 KV heads;
# causal and not; both scales; and the transposed layout a model produces.
ATTENTION_CASES = [
    AttentionCase(1, 2, 2, 1, 16, causal=True),
    AttentionCase(1, 2, 1, 1, 48, causal=False),
    AttentionCase(1, 8, 1, 77, 48, causal=True),
    AttentionCase(1, 8, 2, 77, 80, causal=False, scale="inv_sqrt_d"),
    AttentionCase(2, 2, 2, 77, 16, causal=True, layout="bthd"),
    AttentionCase(1, 2, 1, 200, 48, causal=True),
    AttentionCase(1, 8, 2, 200, 80, causal=True),
    AttentionCase(1, 2, 2, 200, 64, causal=False, scale="inv_sqrt_d"),
    AttentionCase(1, 4, 2, 200, 48, causal=False),
]

# Every candidate launch configuration (forward i with backward i), on a shape with a partial last block, GQA and the
# causal mask: blocks of 16 to 128 rows.
CONFIG_CASES = [
    AttentionCase(1, 4, 2, 77, 48, causal=True, config=i)
    for i in range(max(len(configs.FWD_CANDIDATES), len(configs.BWD_CANDIDATES)))
]


# Realistic sizes, for the CUDA tests (tests/test_kernels_cuda.py).
REALISTIC_RMS_NORM = [
    RMSNormCase((8, 512, 4096), "vector"),
    RMSNormCase((16384, 1000), "scalar"),
    RMSNormCase((4, 256, 8192), "none"),
    RMSNormCase((2, 1024, 1024), "vector", eps=1e-5),
    RMSNormCase((64, 256, 128), "vector"),
    RMSNormCase((8, 256, 1024), "vector", fused=True),
    RMSNormCase((4, 256, 2048), "none", fused=True),
]
REALISTIC_ATTENTION = [
    AttentionCase(4, 16, 16, 1024, 64, causal=True, layout="bthd"),
    AttentionCase(4, 16, 16, 1024, 64, causal=False),
    AttentionCase(2, 8, 8, 2048, 128, causal=True),
    AttentionCase(2, 16, 4, 512, 128, causal=True, scale="inv_sqrt_d"),
    AttentionCase(2, 12, 12, 1000, 80, causal=True),
    AttentionCase(1, 8, 1, 777, 96, causal=False),
    AttentionCase(64, 4, 4, 256, 64, causal=True, layout="bthd"),
    AttentionCase(32, 16, 2, 1024, 64, causal=True),  # GQA with enough programs: the group loops in one program
    AttentionCase(2, 16, 1, 1024, 128, causal=True, layout="bthd"),  # multi-query, few programs: the split path
    AttentionCase(4100, 16, 16, 8, 16, causal=True),  # B·H = 65,600 programs' worth of heads
]

# What `scripts/gpu-check --lease` tests in bf16: every attention case compiles its own forward and backward (a JIT
# specialisation per head dim, mask, sequence-length class and GQA path, ~10 s each on a host), so eight that cover
# padded head dims, partial blocks, both GQA backward paths, the model's layout, T 2048 and d128; all RMSNorm cases
# are cheap.
LEASE_CASES = ([ATTENTION_CASES[i] for i in (2, 3, 4)] + [REALISTIC_ATTENTION[i] for i in (0, 2, 4, 7, 8)]
               + [RMS_NORM_CASES[i] for i in (3, 7, 8, 11)] + REALISTIC_RMS_NORM)


def lease_attention_cases() -> list[AttentionCase]:
    """Every attention shape the lease launches (its tests, the benchmark, the training step and the gpu-small sweep
    slice), for warming the compile cache before it starts (kernels/tune.py `warm`)."""
    from mupbench.kernels import bench, tune

    shape = tune.COMPILE_SHAPE
    cases = [c for c in LEASE_CASES if isinstance(c, AttentionCase)]
    cases.append(AttentionCase(4, 16, 1, 1000, 64, causal=True))  # the deterministic-backward test's
    cases += [AttentionCase(shape["batch"], shape["heads"], shape["heads"], shape["seq"], d, causal=True)
              for d in (64, 128)]  # the offline-against-JIT test's
    cases += [AttentionCase(bench.TOKENS // seq, heads, kv, seq, d, causal=True)
              for seq, d, heads, kv in bench.SIZES["lease"].attention]
    # gpu-small: head dim 64, seq 256, batch 32, heads = width / 64 at widths 128–1024 (the model's layout)
    cases += [AttentionCase(32, w // 64, w // 64, 256, 64, causal=True, layout="bthd") for w in (128, 256, 512, 1024)]
    return cases


def candidate(index: int) -> tuple[configs.FwdConfig, configs.BwdConfig]:
    """Forward and backward candidate `index` (the shorter list wraps around)."""
    return (configs.FWD_CANDIDATES[index % len(configs.FWD_CANDIDATES)],
            configs.BWD_CANDIDATES[index % len(configs.BWD_CANDIDATES)])


def _max_abs(t: torch.Tensor) -> float:
    return t.detach().double().abs().max().item()


def _errors(got: dict, want: dict) -> dict:
    out = {"node": got["node"]}
    for name, ref in want.items():
        if name == "node":
            continue
        value = got[name]
        if value is None or tuple(value.shape) != tuple(ref.shape):
            shape = None if value is None else tuple(value.shape)
            raise AssertionError(f"{name}: shape {shape}, expected {tuple(ref.shape)}")
        out[name] = {
            "err": _max_abs(value.detach().cpu().double() - ref.detach().cpu().double()),
            "ref_max": _max_abs(ref),
        }
    return out


def _rms_inputs(case: RMSNormCase, seed: int) -> dict[str, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(case.shape, generator=gen, dtype=torch.float64) * 2.0 + 0.5
    weight = None
    if case.gain == "scalar":
        weight = torch.rand(1, generator=gen, dtype=torch.float64) + 0.5
    elif case.gain == "vector":
        weight = torch.rand(case.shape[-1], generator=gen, dtype=torch.float64) + 0.5
    dy = torch.randn(case.shape, generator=gen, dtype=torch.float64)
    inputs = {"x": x, "weight": weight, "dy": dy}
    if case.fused:
        inputs["residual"] = torch.randn(case.shape, generator=gen, dtype=torch.float64) * 3.0
        inputs["dh"] = torch.randn(case.shape, generator=gen, dtype=torch.float64)
    return inputs


def _rms_run(fn, case, inputs, dtype, device) -> dict[str, torch.Tensor]:
    def leaf(t):
        t = t.to(device=device, dtype=dtype, copy=True)
        if case.transposed:
            t = t.transpose(0, 1).contiguous().transpose(0, 1)  # same values, non-contiguous layout
        return t.requires_grad_(True)

    x = leaf(inputs["x"])
    weight = base = inputs["weight"]
    if weight is not None:
        base = weight.to(device=device, dtype=dtype, copy=True)
        if case.strided_gain:
            base = torch.stack([base, torch.full_like(base, 7.0)], dim=-1).flatten()  # gain at even positions
        base.requires_grad_(True)
        weight = base[::2] if case.strided_gain else base
    if case.fused:
        residual = leaf(inputs["residual"])
        y, h = fn(x, residual, weight, case.eps)
        torch.autograd.backward((y, h), (inputs["dy"].to(device=device, dtype=dtype),
                                         inputs["dh"].to(device=device, dtype=dtype)))
        out = {"y": y, "h": h, "dx": x.grad, "dresidual": residual.grad}
    else:
        y = fn(x, weight, case.eps)
        y.backward(inputs["dy"].to(device=device, dtype=dtype))
        out = {"y": y, "dx": x.grad}
    out["node"] = type(y.grad_fn).__name__
    if weight is not None:
        out["dweight"] = base.grad[::2] if case.strided_gain else base.grad
    return out


def _measure(make_inputs, run, kernel, ref, case, dtype, device, seed, reference_dtype) -> dict:
    """Errors of `kernel` (or, with reference_dtype, of `ref` in `dtype`) against `ref` in float64, on one case."""
    inputs = make_inputs(case, seed)
    want = run(ref, case, inputs, torch.float64, device)
    got = run(ref if reference_dtype else kernel, case, inputs, dtype, device)
    return _errors(got, want)


def measure_rms_norm(case: RMSNormCase, dtype: torch.dtype, device: str, seed: int = 0,
                     reference_dtype: bool = False) -> dict:
    """Errors of kernels.rms_norm (or, with reference_dtype, of the reference in `dtype`) against float64."""
    kernel, ref = (kernels.add_rms_norm, reference.add_rms_norm) if case.fused else (kernels.rms_norm, reference.rms_norm)
    return _measure(_rms_inputs, _rms_run, kernel, ref, case, dtype, device, seed, reference_dtype)


def _attn_inputs(case: AttentionCase, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    q_shape = (case.batch, case.heads, case.seq, case.head_dim)
    kv_shape = (case.batch, case.kv_heads, case.seq, case.head_dim)
    # Scores of order one under either scale, so the softmax is neither flat nor one-hot.
    amp = case.head_dim**0.25 if case.scale == "inv_d" else 1.0
    return {
        "q": torch.randn(q_shape, generator=gen, dtype=torch.float64) * amp,
        "k": torch.randn(kv_shape, generator=gen, dtype=torch.float64) * amp,
        "v": torch.randn(kv_shape, generator=gen, dtype=torch.float64),
        "do": torch.randn(q_shape, generator=gen, dtype=torch.float64),
    }


def _attn_run(fn, case, inputs, dtype, device) -> dict[str, torch.Tensor]:
    def leaf(t):
        t = t.to(device=device, dtype=dtype, copy=True)
        if case.layout == "bthd":
            t = t.transpose(1, 2).contiguous().transpose(1, 2)
        return t.requires_grad_(True)

    q, k, v = leaf(inputs["q"]), leaf(inputs["k"]), leaf(inputs["v"])
    fwd, bwd = candidate(case.config) if case.config is not None else (None, None)
    with configs.forced(fwd, bwd):
        o = fn(q, k, v, case.softmax_scale, case.causal)
        o.backward(inputs["do"].to(device=device, dtype=dtype))
    return {"o": o, "dq": q.grad, "dk": k.grad, "dv": v.grad, "node": type(o.grad_fn).__name__}


def measure_attention(case: AttentionCase, dtype: torch.dtype, device: str, seed: int = 0,
                      reference_dtype: bool = False) -> dict:
    """Errors of kernels.attention (or, with reference_dtype, of the reference in `dtype`) against float64."""
    return _measure(_attn_inputs, _attn_run, kernels.attention, reference.attention, case, dtype, device, seed,
                    reference_dtype)


