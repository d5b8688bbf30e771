"""The Triton kernels on a CUDA GPU, against float64 references; skipped without one.

- The interpreter's cases (kernels/testing.py) in float32 with the same tolerance as there, and in bf16; every
  candidate launch configuration explicitly (CONFIG_CASES), not only the pinned one.
- Realistic sizes in bf16 (and one in fp16), both GQA backward paths, and B·H past 65,535 (CUDA's grid-axis limit).
- The backward is deterministic (bitwise equal on a rerun); the pinned configurations compile without spills.
- `torch.compile(model, fullgraph=True)` (Inductor) runs through the operators and matches eager.
- 16-bit results meet the FlashAttention bound: max|kernel − float64| ≤ 2 · max|same-dtype torch − float64| + atol,
  with atol one unit in the last place of the dtype at the reference's largest magnitude (and 1e-5 for gradients that
  are exactly zero, as at sequence length 1).
- A model trained a few hundred steps with the Triton kernels follows the torch-kernel run's loss curve.
- The offline compile (kernels/tune.py) builds what the JIT runs: same compile hash, registers and spills.

Tests marked `lease` are what `scripts/gpu-check --lease` runs in its two minutes for tests (JIT compiles dominate):
bf16 correctness at the pinned configurations on kernels/testing.py's LEASE_CASES, a deterministic backward (the split
GQA path), the offline compile against the JIT's build, no spills. The rest (fp32, every candidate config, layouts, Inductor, the
300-step training runs) run in the full check.
"""
from __future__ import annotations

import importlib.util
import math
import os
import sysconfig
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mupbench.kernels.testing import (
    ATTENTION_CASES,
    CONFIG_CASES,
    LEASE_CASES,
    REALISTIC_ATTENTION,
    REALISTIC_RMS_NORM,
    RMS_NORM_CASES,
    AttentionCase,
    measure_attention,
    measure_rms_norm,
)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed"),
    pytest.mark.skipif(
        os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on"),
        reason="TRITON_INTERPRET is set: these tests need the compiled kernels",
    ),
]

RTOL_FP32 = 2e-5  # as in test_kernels_interpreter.py: fp32 matmuls run in IEEE precision

@pytest.fixture(autouse=True)
def _force_triton(monkeypatch):
    monkeypatch.setenv("MUPBENCH_KERNELS", "triton")


def _measure(case, dtype, reference_dtype=False):
    fn = measure_attention if isinstance(case, AttentionCase) else measure_rms_norm
    return fn(case, dtype, "cuda", reference_dtype=reference_dtype)


def _expected_node(case) -> str:
    if isinstance(case, AttentionCase):
        return "mupbench_flash_attn"
    return "mupbench_add_rms_norm" if case.fused else "mupbench_rms_norm"


@pytest.mark.parametrize("case", RMS_NORM_CASES + ATTENTION_CASES + CONFIG_CASES, ids=lambda c: c.id)
def test_float32_matches_float64(case):
    result = _measure(case, torch.float32)
    assert _expected_node(case) in result.pop("node")
    for name, r in result.items():
        assert r["err"] <= RTOL_FP32 * max(1.0, r["ref_max"]), f"{name}: {r}"


_lease = pytest.mark.lease


@pytest.mark.parametrize(
    "case, dtype",
    [pytest.param(c, torch.bfloat16, marks=[_lease] if c in LEASE_CASES else [])
     for c in RMS_NORM_CASES + ATTENTION_CASES + CONFIG_CASES + REALISTIC_RMS_NORM + REALISTIC_ATTENTION]
    + [(REALISTIC_ATTENTION[0], torch.float16), (REALISTIC_RMS_NORM[0], torch.float16)],
    ids=lambda v: v.id if hasattr(v, "id") else str(v).removeprefix("torch."),
)
def test_16bit_within_flash_attention_bound(case, dtype):
    result = _measure(case, dtype)
    assert _expected_node(case) in result.pop("node")
    torch_result = _measure(case, dtype, reference_dtype=True)
    torch_result.pop("node")
    ulp = torch.finfo(dtype).eps
    for name, r in result.items():
        bound = 2 * torch_result[name]["err"] + ulp * r["ref_max"] + 1e-5
        assert r["err"] <= bound, f"{name}: kernel error {r['err']:.3g} > {bound:.3g} (torch {dtype}: {torch_result[name]['err']:.3g})"


@pytest.mark.parametrize("kv_heads", [16, 2, pytest.param(1, marks=_lease)])
def test_backward_is_deterministic(kv_heads):
    from mupbench.kernels import flash_attention

    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(4, 16, 1000, 64, device="cuda", dtype=torch.bfloat16, generator=gen, requires_grad=True)
    k, v = (torch.randn(4, kv_heads, 1000, 64, device="cuda", dtype=torch.bfloat16, generator=gen, requires_grad=True)
            for _ in range(2))
    do = torch.randn_like(q)
    runs = [torch.autograd.grad(flash_attention.attention(q, k, v, 1 / 64, True), (q, k, v), do) for _ in range(3)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


def test_output_and_gradients_keep_the_input_layout():
    from mupbench.kernels import flash_attention

    q, k, v = (torch.randn(2, 77, h, 64, device="cuda", dtype=torch.bfloat16).transpose(1, 2).requires_grad_()
               for h in (8, 2, 2))
    o = flash_attention.attention(q, k, v, 1 / 64, True)
    assert o.stride() == q.stride()  # (B, T, H, D) memory: the model's transpose + reshape is a view
    dq, dk, dv = torch.autograd.grad(o, (q, k, v), torch.randn_like(o))
    assert (dq.stride(), dk.stride(), dv.stride()) == (q.stride(), k.stride(), v.stride())


@_lease
def test_pinned_configs_compile_without_spills():
    """Checked offline with Triton 3.9 for sm_90 (kernels/configs.py); here with this GPU's Triton and architecture,
    through the same offline build (which the next test ties to the JIT's)."""
    from mupbench.kernels import configs, tune

    major, minor = torch.cuda.get_device_capability()
    spills = {}
    for d in (64, 128):
        for config in configs.attention(torch.device("cuda"), d, torch.bfloat16, True, 1)[:2]:
            spills[f"{config.name} d{d}"] = tune.compile_config(config, d, major * 10 + minor)
    assert all(r["spill_bytes"] == 0 for r in spills.values()), spills


@_lease
@pytest.mark.parametrize("head_dim", [64, 128])
def test_offline_compile_builds_what_the_jit_runs(head_dim):
    """The pinned configs' forward and backward, launched through the JIT at the benchmarks' shape, against the offline
    build of the same launches (kernels/tune.py): the same compile hash, registers and spills."""
    import triton

    from mupbench.kernels import configs, tune

    major, minor = torch.cuda.get_device_capability()
    fwd, bwd, _ = configs.attention(torch.device("cuda"), head_dim, torch.bfloat16, True, 1)
    shape = tune.COMPILE_SHAPE
    for kernel, grid, args, kwargs in tune.attention_launches(fwd, bwd, head_dim):
        args = tuple(torch.randn(a.shape, dtype=a.dtype, device="cuda").as_strided(a.shape, a.stride())
                     if isinstance(a, torch.Tensor) else a for a in args)
        jit = kernel[grid](*args, **kwargs)
        offline = tune.compile_launch(kernel, args, kwargs, major * 10 + minor)
        offline._init_handles()  # loads it: registers and spills come from the driver, as for the JIT's kernel
        assert offline.hash == jit.hash, (kernel.__name__, shape)
        assert (offline.n_regs, offline.n_spills) == (jit.n_regs, jit.n_spills), kernel.__name__
        assert jit.n_spills == 0, (kernel.__name__, jit.n_regs, jit.n_spills)
    torch.cuda.synchronize()
    assert triton.__version__


def test_compiled_model_matches_eager(monkeypatch):
    """torch.compile(model, fullgraph=True) with Inductor: no graph break at the kernels, same loss and gradients."""
    from mupbench import ModelConfig, build_model

    monkeypatch.setenv("MUPBENCH_KERNELS", "triton")
    cfg = ModelConfig(width=256, depth=2, head_dim=64, kv_heads=1, vocab_size=256, norm_gains="vector")
    tokens = torch.randint(0, 256, (4, 129), device="cuda", generator=torch.Generator(device="cuda").manual_seed(0))
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg).cuda()
        forward = torch.compile(model, fullgraph=True) if compiled else model
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = forward(tokens[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        results.append((loss.item(), [p.grad.float() for p in model.parameters()]))
    (l0, g0), (l1, g1) = results
    assert abs(l0 - l1) <= 1e-2 * abs(l0)
    for a, b in zip(g0, g1):
        assert (a - b).abs().max() <= 0.05 * a.abs().max() + 1e-6


# ---------------------------------------------------------------------------------------------- model training


def _corpus(n_bytes: int = 1 << 21) -> torch.Tensor:
    """Bytes of the Python standard library's sources: real text, available everywhere."""
    chunks, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        data = path.read_bytes()
        chunks.append(data)
        total += len(data)
        if total >= n_bytes:
            break
    return torch.frombuffer(bytearray(b"".join(chunks)[:n_bytes]), dtype=torch.uint8).long()


def _train(backend: str, steps: int, autocast: bool, monkeypatch) -> list[float]:
    from mupbench import ModelConfig, build_model, build_optimizer

    monkeypatch.setenv("MUPBENCH_KERNELS", backend)
    cfg = ModelConfig(width=256, depth=4, head_dim=64, vocab_size=256, parameterization="mup", base_width=128,
                      norm_gains="vector")
    torch.manual_seed(0)
    model = build_model(cfg).cuda()
    opt = build_optimizer(model, lr=2**-7, optimizer="adamw")
    data = _corpus().cuda()
    gen = torch.Generator().manual_seed(1)
    batch, seq = 16, 256
    losses = []
    for _ in range(steps):
        starts = torch.randint(0, data.numel() - seq - 1, (batch,), generator=gen).cuda()
        idx = starts[:, None] + torch.arange(seq + 1, device="cuda")
        tokens = data[idx]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_training_follows_torch_kernels(autocast, monkeypatch):
    from mupbench.kernels import flash_attention, rmsnorm
    calls = {"attention": 0, "rms_norm": 0, "add_rms_norm": 0}

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(flash_attention, "attention", spy("attention", flash_attention.attention))
    monkeypatch.setattr(rmsnorm, "rms_norm", spy("rms_norm", rmsnorm.rms_norm))
    monkeypatch.setattr(rmsnorm, "add_rms_norm", spy("add_rms_norm", rmsnorm.add_rms_norm))

    steps, window = 300, 25
    ref = _train("torch", steps, autocast, monkeypatch)
    assert calls == {"attention": 0, "rms_norm": 0, "add_rms_norm": 0}
    tri = _train("triton", steps, autocast, monkeypatch)
    # depth 4: per block one norm and one fused residual add + norm, plus the final norm
    assert calls == {"attention": steps * 4, "rms_norm": steps * 5, "add_rms_norm": steps * 4}

    def smooth(xs):
        return [sum(xs[i:i + window]) / window for i in range(0, len(xs), window)]

    ref_s, tri_s = smooth(ref), smooth(tri)
    assert all(math.isfinite(x) for x in ref + tri)
    assert ref_s[-1] < ref_s[0] - 1.0, f"the reference run did not learn: {ref_s}"
    rtol = 0.02 if autocast else 0.005
    for i, (a, b) in enumerate(zip(ref_s, tri_s)):
        assert abs(a - b) <= rtol * a, f"window {i}: torch kernels {a:.4f}, Triton kernels {b:.4f}\n{ref_s}\n{tri_s}"
