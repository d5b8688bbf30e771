"""The Triton kernels on a CUDA GPU, against float64 references; skipped without one.

- The interpreter's cases (kernels/testing.py) in float32 with the same tolerance as there, and in bf16.
- Realistic sizes in bf16 (and one in fp16).
- 16-bit results meet the FlashAttention bound: max|kernel − float64| ≤ 2 · max|same-dtype torch − float64| + atol,
  with atol one unit in the last place of the dtype at the reference's largest magnitude (and 1e-5 for gradients that
  are exactly zero, as at sequence length 1).
- A model trained a few hundred steps with the Triton kernels follows the torch-kernel run's loss curve.
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

from kernels.testing import (
    ATTENTION_CASES,
    RMS_NORM_CASES,
    AttentionCase,
    RMSNormCase,
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

REALISTIC_RMS_NORM = [
    RMSNormCase((8, 512, 4096), "vector"),
    RMSNormCase((16384, 1000), "scalar"),
    RMSNormCase((4, 256, 8192), "none"),
    RMSNormCase((2, 1024, 1024), "vector", eps=1e-5),
    RMSNormCase((64, 256, 128), "vector"),
]
REALISTIC_ATTENTION = [
    AttentionCase(4, 16, 16, 1024, 64, causal=True, layout="bthd"),
    AttentionCase(4, 16, 16, 1024, 64, causal=False),
    AttentionCase(2, 8, 8, 2048, 128, causal=True),
    AttentionCase(2, 16, 4, 512, 128, causal=True, scale="inv_sqrt_d"),
    AttentionCase(2, 12, 12, 1000, 80, causal=True),
    AttentionCase(1, 8, 1, 777, 96, causal=False),
    AttentionCase(64, 4, 4, 256, 64, causal=True, layout="bthd"),
]


@pytest.fixture(autouse=True)
def _force_triton(monkeypatch):
    monkeypatch.setenv("MUPBENCH_KERNELS", "triton")


def _measure(case, dtype, reference_dtype=False):
    fn = measure_attention if isinstance(case, AttentionCase) else measure_rms_norm
    return fn(case, dtype, "cuda", reference_dtype=reference_dtype)


def _expected_node(case) -> str:
    return "_FlashAttentionBackward" if isinstance(case, AttentionCase) else "_RMSNormBackward"


@pytest.mark.parametrize("case", RMS_NORM_CASES + ATTENTION_CASES, ids=lambda c: c.id)
def test_float32_matches_float64(case):
    result = _measure(case, torch.float32)
    assert result.pop("node") == _expected_node(case)
    for name, r in result.items():
        assert r["err"] <= RTOL_FP32 * max(1.0, r["ref_max"]), f"{name}: {r}"


@pytest.mark.parametrize(
    "case, dtype",
    [(c, torch.bfloat16) for c in RMS_NORM_CASES + ATTENTION_CASES + REALISTIC_RMS_NORM + REALISTIC_ATTENTION]
    + [(REALISTIC_ATTENTION[0], torch.float16), (REALISTIC_RMS_NORM[0], torch.float16)],
    ids=lambda v: v.id if hasattr(v, "id") else str(v).removeprefix("torch."),
)
def test_16bit_within_flash_attention_bound(case, dtype):
    result = _measure(case, dtype)
    assert result.pop("node") == _expected_node(case)
    torch_result = _measure(case, dtype, reference_dtype=True)
    torch_result.pop("node")
    ulp = torch.finfo(dtype).eps
    for name, r in result.items():
        bound = 2 * torch_result[name]["err"] + ulp * r["ref_max"] + 1e-5
        assert r["err"] <= bound, f"{name}: kernel error {r['err']:.3g} > {bound:.3g} (torch {dtype}: {torch_result[name]['err']:.3g})"


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
    from harness import ModelConfig, build_model, build_optimizer

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
    pytest.importorskip("harness")
    import kernels.flash_attention
    import kernels.rmsnorm

    calls = {"attention": 0, "rms_norm": 0}

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(kernels.flash_attention, "attention", spy("attention", kernels.flash_attention.attention))
    monkeypatch.setattr(kernels.rmsnorm, "rms_norm", spy("rms_norm", kernels.rmsnorm.rms_norm))

    steps, window = 300, 25
    ref = _train("torch", steps, autocast, monkeypatch)
    assert calls == {"attention": 0, "rms_norm": 0}
    tri = _train("triton", steps, autocast, monkeypatch)
    assert calls["attention"] == steps * 4 and calls["rms_norm"] == steps * 9  # depth 4: 2 norms per block + final

    def smooth(xs):
        return [sum(xs[i:i + window]) / window for i in range(0, len(xs), window)]

    ref_s, tri_s = smooth(ref), smooth(tri)
    assert all(math.isfinite(x) for x in ref + tri)
    assert ref_s[-1] < ref_s[0] - 1.0, f"the reference run did not learn: {ref_s}"
    rtol = 0.02 if autocast else 0.005
    for i, (a, b) in enumerate(zip(ref_s, tri_s)):
        assert abs(a - b) <= rtol * a, f"window {i}: torch kernels {a:.4f}, Triton kernels {b:.4f}\n{ref_s}\n{tri_s}"
