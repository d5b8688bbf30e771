"""Kernel benchmarks for pytest-benchmark (`--benchmark-save`, `--benchmark-compare`), plus the bench command's plumbing.

The benchmarks need a CUDA GPU and measure, never assert speed. pytest-benchmark times on the host, so each round
replays a CUDA graph of CALLS kernel calls and waits for it: the per-call launch and synchronisation costs that would
swamp a few-µs kernel are paid once per round. Its statistics are per round (CALLS calls); `extra_info` holds the
per-call time of the replay and triton.testing.do_bench's CUDA-event median for the same call.
"""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from kernels import bench, reference

CALLS = 50
_skip_without_gpu = pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("triton") is None,
    reason="needs a CUDA GPU and Triton",
)


def needs_gpu(test):
    return pytest.mark.cuda(_skip_without_gpu(test))


def _record(benchmark, fn, grad_to_none=None):
    from triton.testing import do_bench

    graph = bench.cuda_graph(fn, CALLS)

    def replay():
        graph.replay()
        torch.cuda.synchronize()

    benchmark.pedantic(replay, rounds=20, warmup_rounds=2, iterations=1)
    benchmark.extra_info["calls_per_round"] = CALLS
    if getattr(benchmark, "stats", None) is not None:  # None under --benchmark-disable
        benchmark.extra_info["graph_us_per_call"] = benchmark.stats.stats.median / CALLS * 1e6
    benchmark.extra_info["do_bench_median_us"] = do_bench(fn, grad_to_none=grad_to_none, quantiles=[0.5])[0] * 1e3


def _rms_impl(name):
    from kernels import rmsnorm

    return {"triton": rmsnorm.rms_norm, "torch": reference.rms_norm}[name]


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("width", [1024, 4096])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@needs_gpu
def test_rms_norm(benchmark, impl, width, mode):
    benchmark.group = f"rms_norm-{width}-{mode}"
    fn = _rms_impl(impl)
    x = torch.randn(16384, width, device="cuda", dtype=torch.bfloat16, requires_grad=mode != "fwd")
    w = torch.ones(width, device="cuda", dtype=torch.bfloat16, requires_grad=mode != "fwd")
    dy = torch.randn_like(x)
    if mode == "fwd":
        _record(benchmark, lambda: fn(x, w, 1e-6))
    else:
        _record(benchmark, lambda: torch.autograd.grad(fn(x, w, 1e-6), (x, w), dy), grad_to_none=[x, w])


def _attention_impl(name):
    import torch.nn.functional as F

    from kernels import flash_attention

    if name == "triton":
        return flash_attention.attention
    return lambda q, k, v, scale, causal: F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)


@pytest.mark.parametrize("impl", ["triton", "sdpa"])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@needs_gpu
def test_attention(benchmark, impl, head_dim, mode):
    seq = 1024
    benchmark.group = f"attention-d{head_dim}-t{seq}-{mode}"
    fn = _attention_impl(impl)
    shape = (16384 // seq, 2048 // head_dim, seq, head_dim)
    grad = mode != "fwd"
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=grad) for _ in range(3))
    do = torch.randn_like(q)
    scale = 1.0 / head_dim
    if mode == "fwd":
        _record(benchmark, lambda: fn(q, k, v, scale, True))
    else:
        _record(benchmark, lambda: torch.autograd.grad(fn(q, k, v, scale, True), (q, k, v), do), grad_to_none=[q, k, v])
    flops = 4 * shape[0] * shape[1] * seq * seq * head_dim / 2 * (1 if mode == "fwd" else 3.5)
    benchmark.extra_info["tflops_do_bench"] = flops / (benchmark.extra_info["do_bench_median_us"] * 1e-6) / 1e12


# ------------------------------------------------------------------------------------------ plumbing (any machine)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed where there is no GPU")
def test_bench_without_gpu_is_a_one_line_error(capsys):
    from harness.cli import main

    assert main(["bench", "kernels", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err == "mupbench: error: bench kernels needs a CUDA GPU (none found)\n"


def _synthetic_report() -> dict:
    env = {"gpu": "NVIDIA H100 80GB HBM3", "capability": "9.0", "sms": 132, "gpu_memory_gib": 79.1, "torch": "2.11",
           "triton": "3.6.0", "cuda": "13.0", "cudnn": 91000, "python": "3.12", "date": "2025-01-02T03:04:05+00:00",
           "quick": False}
    rms = {"dtype": "bfloat16", "rows": 16384, "width": 4096, "gain": "vector", "mode": "fwd+bwd",
           "bytes": 5 * 16384 * 4096 * 2,
           "results": {"triton": {"ms": 0.25, "tb_s": 2.68, "pct_copy": 89.0},
                       "torch": {"ms": 0.80, "tb_s": 0.84, "pct_copy": 28.0},
                       "compile": {"error": "RuntimeError: no"}}}
    attn = {"dtype": "bfloat16", "batch": 16, "heads": 32, "seq": 1024, "head_dim": 64, "causal": True,
            "mode": "fwd+bwd", "flops": 1e12, "sdpa_default_backend": "CUDNN_ATTENTION", "max_abs_err_vs_torch": 1e-3,
            "results": {"triton": {"ms": 5.0, "tflops": 200.0}, "sdpa[FLASH]": {"ms": 6.0, "tflops": 166.0},
                        "sdpa[CUDNN]": {"ms": 4.0, "tflops": 250.0}},
            "best_sdpa": "sdpa[CUDNN]"}
    for record in (rms, attn):
        bench._add_speedups(record)
    report = {"env": env, "copy": {"bytes": 2**31, "ms": 0.72, "tb_s": 3.0}, "rms_norm": [rms], "attention": [attn],
              "train_step": [{"width": 256, "depth": 4, "head_dim": 64, "seq": 256, "batch": 64,
                              "results": {"torch": {"tokens_per_s": 1e6}, "triton": {"tokens_per_s": 1.25e6}},
                              "speedup": 1.25}]}
    report["targets"] = bench.check_targets(report)
    return report


def test_report_names_gpu_versions_ratios_and_targets(tmp_path):
    report = _synthetic_report()
    targets = {t["target"]: t for t in report["targets"]}
    assert [t["met"] for t in targets.values()] == [True, False]  # 89% ≥ 80%; 4.0/5.0 = 0.8× < 0.9× best SDPA
    json_path, md_path = bench.write_report(report, tmp_path / "out")
    assert json_path.name == "kernels-nvidia-h100-80gb-hbm3-20250102-0304.json"
    assert json.loads(json_path.read_text())["rms_norm"][0]["speedup"] == {"torch": pytest.approx(3.2)}
    md = md_path.read_text()
    for text in ("NVIDIA H100 80GB HBM3", "torch 2.11", "triton 3.6.0", "CUDA 13.0", "3.00 TB/s",
                 "| bfloat16 | 4096 | vector | fwd+bwd | 250 | 800 | n/a | 2.68 | 89% | 3.20× | n/a |",
                 "sdpa[CUDNN] | 0.80×", "CUDNN_ATTENTION", "| 256 | 1,000,000 | 1,250,000 | 1.25× |", "1 of 2 met"):
        assert text in md, text
