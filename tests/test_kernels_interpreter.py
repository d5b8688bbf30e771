"""The Triton kernels on CPU under Triton's interpreter (TRITON_INTERPRET=1), in float32 against float64 references:
the output and every gradient (dx, dgain; dq, dk, dv) on odd shapes (kernels/testing.py lists them); and a small
harness model, forward and backward, against the same model on the torch kernels.

Why child processes: Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when kernels/rmsnorm.py and
kernels/flash_attention.py are first imported, and a process imports them once. Setting the variable from a conftest
or fixture would work only if nothing in the pytest process had imported those modules before, and on a GPU machine
the CUDA tests in the same session need them compiled for the GPU. So the cases run in fresh Python processes started
with TRITON_INTERPRET=1 and MUPBENCH_KERNELS=triton (forced, so a case cannot quietly fall back to the reference);
two of them run side by side with the cases split by estimated cost, and each prints its errors as JSON. One test per
case asserts on them. The pytest process itself never imports Triton here.

The file is also the children's entry point: `python tests/test_kernels_interpreter.py --shard I/N`.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the children start in tests/
    sys.path.insert(0, str(ROOT))

from kernels.testing import ATTENTION_CASES, RMS_NORM_CASES, AttentionCase, measure_attention, measure_rms_norm  # noqa: E402

CASES = RMS_NORM_CASES + ATTENTION_CASES
SHARDS = 2
CHILD_TIMEOUT_S = 900
# float32 kernels against float64: observed errors are ≤ 1e-6 of the largest reference value; a masking or
# indexing mistake shows up at 1e-3 or more. The floor of 1 covers gradients that are exactly zero (sequence length 1).
RTOL = 2e-5

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="Triton is not installed (pip install triton): nothing to interpret"
)


def _cost(case) -> float:
    if isinstance(case, AttentionCase):
        return case.batch * case.heads * case.seq * (case.seq // 16 + 1) * max(16, case.head_dim)
    return 2e4


def _shard(index: int, count: int) -> list:
    """Greedy split of CASES into `count` groups of about equal estimated cost; returns group `index`."""
    groups: list[list] = [[] for _ in range(count)]
    loads = [0.0] * count
    for case in sorted(CASES, key=_cost, reverse=True):
        i = loads.index(min(loads))
        groups[i].append(case)
        loads[i] += _cost(case)
    return groups[index]


def _model_errors() -> dict:
    """A small harness model (vector gains, grouped KV heads) forward and backward with each backend: the kernels as
    the model calls them (transposed views, RoPE'd q and k). Relative errors of the logits and of every gradient."""
    from harness import ModelConfig, build_model

    cfg = ModelConfig(width=64, depth=1, head_dim=16, kv_heads=2, norm_gains="vector", vocab_size=64)
    tokens = torch.randint(0, cfg.vocab_size, (2, 37), generator=torch.Generator().manual_seed(0))
    runs = {}
    for backend in ("triton", "torch"):
        os.environ["MUPBENCH_KERNELS"] = backend
        torch.manual_seed(0)
        model = build_model(cfg)
        logits = model(tokens)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
        runs[backend] = {"logits": logits.detach(), **{n: p.grad for n, p in model.named_parameters()}}
    os.environ["MUPBENCH_KERNELS"] = "triton"
    return {
        name: (runs["triton"][name] - ref).abs().max().item() / max(ref.abs().max().item(), 1e-12)
        for name, ref in runs["torch"].items()
    }


def _run_shard(index: int, count: int) -> dict:
    torch.set_num_threads(1)
    results = {}
    if index == count - 1:
        try:
            results["model"] = {"errors": _model_errors()}
        except Exception:
            results["model"] = {"exception": traceback.format_exc()}
    for case in _shard(index, count):
        start = time.perf_counter()
        try:
            if isinstance(case, AttentionCase):
                result = measure_attention(case, torch.float32, "cpu")
            else:
                result = measure_rms_norm(case, torch.float32, "cpu")
        except Exception:
            result = {"exception": traceback.format_exc()}
        result["seconds"] = round(time.perf_counter() - start, 2)
        results[case.id] = result
    return results


@pytest.fixture(scope="module")
def results() -> dict:
    env = dict(os.environ)
    env.update(TRITON_INTERPRET="1", MUPBENCH_KERNELS="triton", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--shard", f"{i}/{SHARDS}"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(SHARDS)
    ]
    merged: dict = {}
    for child in children:
        try:
            out, err = child.communicate(timeout=CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for other in children:
                other.kill()
            pytest.fail(f"interpreter child ran past {CHILD_TIMEOUT_S} s")
        if child.returncode != 0:
            pytest.fail(f"interpreter child exited {child.returncode}:\n{err[-4000:]}")
        merged.update(json.loads(out.strip().splitlines()[-1]))
    return merged


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matches_float64_reference(results: dict, case) -> None:
    result = results[case.id]
    assert "exception" not in result, result["exception"]
    expected_node = "_FlashAttentionBackward" if isinstance(case, AttentionCase) else "_RMSNormBackward"
    assert result["node"] == expected_node, f"the Triton kernel did not run: autograd node {result['node']}"
    expected = ["o", "dq", "dk", "dv"] if isinstance(case, AttentionCase) else ["y", "dx"]
    if getattr(case, "gain", "none") != "none":
        expected.append("dweight")
    assert sorted(k for k in result if k not in ("node", "seconds")) == sorted(expected)
    for name in expected:
        err, ref_max = result[name]["err"], result[name]["ref_max"]
        assert err <= RTOL * max(1.0, ref_max), f"{name}: max error {err:.3g} (reference max {ref_max:.3g})"


def test_model_matches_torch_kernels(results: dict) -> None:
    result = results["model"]
    assert "exception" not in result, result["exception"]
    errors = result["errors"]
    assert "logits" in errors and any(".weight" in name and "norm" in name for name in errors)
    # float32 on both sides: only summation order differs
    assert max(errors.values()) <= 1e-4, {k: f"{v:.2g}" for k, v in errors.items() if v > 1e-4}


if __name__ == "__main__":
    shard, count = (int(n) for n in sys.argv[sys.argv.index("--shard") + 1].split("/"))
    print(json.dumps(_run_shard(shard, count)))
