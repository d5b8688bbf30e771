"""The Triton kernels on CPU under Triton's interpreter (TRITON_INTERPRET=1), in float32 against float64 references:
the output and every gradient (dx, dgain; dx, dresidual, dgain of the fused residual add; dq, dk, dv) on odd shapes
(kernels/testing.py lists them), every candidate attention launch configuration, and a small harness model, forward
and backward, against the same model on the torch kernels, eager and under `torch.compile(fullgraph=True)`. Also:
bf16 inputs are refused there (the interpreter has no bf16 arithmetic) while fp16 runs, the int64 row-offset path
(forced at a small size), the fused add's gain gradient (None when only the new residual is used), and double
backward raises.

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

from mupbench.kernels.testing import (  # noqa: E402
    ATTENTION_CASES,
    CONFIG_CASES,
    RMS_NORM_CASES,
    AttentionCase,
    measure_attention,
    measure_rms_norm,
)

CASES = RMS_NORM_CASES + ATTENTION_CASES + CONFIG_CASES
SHARDS = 2
EXTRAS_SHARE = 0.33  # the model runs and checks take about a third of the cases' time
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


def _expected_node(case) -> str:
    if isinstance(case, AttentionCase):
        return "mupbench_flash_attn"
    return "mupbench_add_rms_norm" if case.fused else "mupbench_rms_norm"


def _expected_outputs(case) -> list[str]:
    if isinstance(case, AttentionCase):
        return ["o", "dq", "dk", "dv"]
    names = ["y", "h", "dx", "dresidual"] if case.fused else ["y", "dx"]
    return names + (["dweight"] if case.gain != "none" else [])


def _shard(index: int, count: int) -> list:
    """Greedy split of CASES into `count` groups of about equal estimated cost; returns group `index`."""
    groups: list[list] = [[] for _ in range(count)]
    loads = [0.0] * count
    loads[-1] = EXTRAS_SHARE * sum(map(_cost, CASES))  # the last shard also runs the model and the checks
    for case in sorted(CASES, key=_cost, reverse=True):
        i = loads.index(min(loads))
        groups[i].append(case)
        loads[i] += _cost(case)
    return groups[index]


def _model_errors() -> dict:
    """A small harness model (vector gains, grouped KV heads) forward and backward with each backend, and with the
    Triton kernels under torch.compile(fullgraph=True) (aot_eager: fake-tensor tracing of forward and backward, then
    the kernels run): the kernels as the model calls them (transposed views, RoPE'd q and k, the fused residual add).
    Relative errors of the logits and of every gradient against the torch kernels, and what ran."""
    from mupbench import kernels
    from mupbench import ModelConfig, build_model

    cfg = ModelConfig(width=64, depth=1, head_dim=16, kv_heads=2, norm_gains="vector", vocab_size=64)
    tokens = torch.randint(0, cfg.vocab_size, (2, 37), generator=torch.Generator().manual_seed(0))
    runs, backends = {}, {}
    for run in ("triton", "torch", "triton-compiled"):
        os.environ["MUPBENCH_KERNELS"] = run.split("-")[0]
        kernels.reset_record()
        torch.manual_seed(0)
        model = build_model(cfg)
        forward = torch.compile(model, fullgraph=True, backend="aot_eager") if run.endswith("compiled") else model
        logits = forward(tokens)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
        runs[run] = {"logits": logits.detach(), **{n: p.grad for n, p in model.named_parameters()}}
        backends[run] = kernels.backend("cpu")
    os.environ["MUPBENCH_KERNELS"] = "triton"
    return {
        "backends": backends,
        "errors": {
            f"{run} {name}": (runs[run][name] - ref).abs().max().item() / max(ref.abs().max().item(), 1e-12)
            for run in ("triton", "triton-compiled") for name, ref in runs["torch"].items()
        },
    }


def _checks() -> dict:
    """Refusals and errors that must be loud (bf16 inputs under the interpreter; double backward), and what runs there
    beyond the float32 cases: fp16 inputs, the int64 row-offset path, the fused add's gain gradient when only the new
    residual is used."""
    from mupbench import kernels
    from mupbench.kernels import flash_attention, reference
    out = {}
    x = torch.randn(4, 32)
    q = torch.randn(1, 2, 8, 16)
    for name, call in (
        ("rms_norm bf16", lambda: kernels.rms_norm(x.bfloat16(), None)),
        ("add_rms_norm bf16", lambda: kernels.add_rms_norm(x.bfloat16(), x, None)),
        ("attention bf16", lambda: kernels.attention(q.bfloat16(), q.bfloat16(), q.bfloat16(), 0.25)),
    ):
        try:
            call()
            out[name] = "no error"
        except ValueError as err:
            out[name] = str(err)
    for name, make in (
        ("rms_norm", lambda x_: kernels.rms_norm(x_, None)),
        ("attention", lambda x_: kernels.attention(x_.view(1, 2, 8, 8).repeat(1, 1, 1, 2), q, q, 0.25)),
    ):
        x_ = torch.randn(4, 32, requires_grad=True)
        (g,) = torch.autograd.grad(make(x_).square().sum(), x_, create_graph=True)
        try:
            torch.autograd.grad(g.sum(), x_)
            out[f"double backward {name}"] = "no error"
        except RuntimeError as err:
            out[f"double backward {name}"] = str(err)

    # fp16: relative error against the float32 reference on the same (fp16-rounded) inputs
    gen = torch.Generator().manual_seed(3)
    xh, rh = (torch.randn(7, 96, generator=gen).half() for _ in range(2))
    wh = (torch.rand(96, generator=gen) + 0.5).half()
    qh, kh, vh = (torch.randn(1, 4, 37, 32, generator=gen).half() for _ in range(3))
    pairs = {"rms_norm": (kernels.rms_norm(xh, wh), reference.rms_norm(xh.float(), wh.float())),
             "add_rms_norm": (kernels.add_rms_norm(xh, rh, wh)[0], reference.add_rms_norm(xh.float(), rh.float(),
                                                                                        wh.float())[0]),
             "attention": (kernels.attention(qh, kh, vh, 1 / 32), reference.attention(qh.float(), kh.float(),
                                                                                   vh.float(), 1 / 32))}
    out["fp16"] = {name: ((a.float() - b).abs().max() / b.abs().max()).item() for name, (a, b) in pairs.items()}

    # int64 row offsets (the path T × stride ≥ 2³¹ takes), forced at a small size
    previous = flash_attention.ROWS64_AT
    flash_attention.ROWS64_AT = 0
    try:
        case = AttentionCase(1, 4, 2, 45, 32, causal=True, layout="bthd")
        out["rows64"] = measure_attention(case, torch.float32, "cpu")
    finally:
        flash_attention.ROWS64_AT = previous

    # add_rms_norm with only the new residual h used: the gain gets no gradient (None), x and the residual get dh
    xg, rg, wg = (torch.randn(3, 64, requires_grad=True), torch.randn(3, 64, requires_grad=True),
                  torch.ones(64, requires_grad=True))
    _, h = kernels.add_rms_norm(xg, rg, wg)
    (h * 2).sum().backward()
    out["gain grad, y unused"] = {"gain": None if wg.grad is None else "a tensor",
                                  "x": xg.grad.tolist() == torch.full((3, 64), 2.0).tolist(),
                                  "residual": rg.grad.tolist() == torch.full((3, 64), 2.0).tolist()}
    return out


def _run_shard(index: int, count: int) -> dict:
    torch.set_num_threads(1)
    results = {}
    if index == count - 1:
        for name, check in (("model", _model_errors), ("checks", _checks)):
            try:
                results[name] = check()
            except Exception:
                results[name] = {"exception": traceback.format_exc()}
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
    assert _expected_node(case) in result["node"], f"the Triton kernel did not run: autograd node {result['node']}"
    expected = _expected_outputs(case)
    assert sorted(k for k in result if k not in ("node", "seconds")) == sorted(expected)
    for name in expected:
        err, ref_max = result[name]["err"], result[name]["ref_max"]
        assert err <= RTOL * max(1.0, ref_max), f"{name}: max error {err:.3g} (reference max {ref_max:.3g})"


def test_model_matches_torch_kernels_eager_and_compiled(results: dict) -> None:
    result = results["model"]
    assert "exception" not in result, result["exception"]
    assert result["backends"] == {"triton": "triton", "torch": "torch", "triton-compiled": "triton"}
    errors = result["errors"]
    for run in ("triton", "triton-compiled"):
        assert f"{run} logits" in errors and any(n.startswith(run + " ") and "norm_mlp.weight" in n for n in errors)
    # float32 on both sides: only summation order differs
    assert max(errors.values()) <= 1e-4, {k: f"{v:.2g}" for k, v in errors.items() if v > 1e-4}


@pytest.mark.parametrize("name", ["rms_norm bf16", "add_rms_norm bf16", "attention bf16"])
def test_bf16_inputs_are_refused_under_the_interpreter(results: dict, name: str) -> None:
    checks = results["checks"]
    assert "exception" not in checks, checks["exception"]
    assert "TRITON_INTERPRET" in checks[name] and "float32" in checks[name], checks[name]


def test_fp16_runs_under_the_interpreter(results: dict) -> None:
    checks = results["checks"]
    assert "exception" not in checks, checks["exception"]
    # fp16 outputs (and, for attention, fp16 probabilities into the PV product): a few fp16 ulps of the largest value
    assert set(checks["fp16"]) == {"rms_norm", "add_rms_norm", "attention"}
    assert all(err < 4e-3 for err in checks["fp16"].values()), checks["fp16"]


def test_int64_row_offsets_match_the_reference(results: dict) -> None:
    result = results["checks"]["rows64"]
    for name in ("o", "dq", "dk", "dv"):
        assert result[name]["err"] <= RTOL * max(1.0, result[name]["ref_max"]), (name, result[name])


def test_fused_add_gives_the_gain_no_gradient_when_only_the_residual_is_used(results: dict) -> None:
    assert results["checks"]["gain grad, y unused"] == {"gain": None, "x": True, "residual": True}


@pytest.mark.parametrize("name", ["rms_norm", "attention"])
def test_double_backward_raises(results: dict, name: str) -> None:
    checks = results["checks"]
    assert "exception" not in checks, checks["exception"]
    message = checks[f"double backward {name}"]
    assert message != "no error" and "backward" in message, message


if __name__ == "__main__":
    shard, count = (int(n) for n in sys.argv[sys.argv.index("--shard") + 1].split("/"))
    print(json.dumps(_run_shard(shard, count)))
