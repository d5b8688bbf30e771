"""Kernel benchmarks for pytest-benchmark (`--benchmark-save`, `--benchmark-compare`), plus the bench command's plumbing.

The benchmarks need a CUDA GPU and measure, never assert speed. pytest-benchmark times on the host, so each round
replays a CUDA graph of CALLS kernel calls, each call preceded (inside the graph) by a write of twice the L2 cache, so
no call finds its inputs in L2; a graph of the flushes alone is timed too, and extra_info holds the per-call kernel
time (round − flush round) / CALLS, plus triton.testing.do_bench's CUDA-event median (which flushes L2 itself). SDPA
runs pinned to one backend per benchmark (FLASH, CUDNN), never its own choice.
"""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from mupbench.kernels import bench, reference

CALLS = 20
_skip_without_gpu = pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("triton") is None,
    reason="needs a CUDA GPU and Triton",
)


def needs_gpu(test):
    return pytest.mark.cuda(_skip_without_gpu(test))


def _l2_flush() -> tuple[torch.Tensor, callable]:
    size = 2 * torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
    buffer = torch.empty(max(size, 1 << 20) // 4, dtype=torch.int32, device="cuda")
    return buffer, buffer.zero_


def _record(benchmark, fn, grad_to_none=None):
    from triton.testing import do_bench

    _, flush = _l2_flush()

    def flushed():
        flush()
        fn()

    graph = bench.cuda_graph(flushed, CALLS)
    flush_graph = bench.cuda_graph(flush, CALLS)

    def replay():
        graph.replay()
        torch.cuda.synchronize()

    benchmark.pedantic(replay, rounds=20, warmup_rounds=2, iterations=1)
    benchmark.extra_info["calls_per_round"] = CALLS
    if getattr(benchmark, "stats", None) is not None:  # None under --benchmark-disable
        flush_ms = do_bench(flush_graph.replay, quantiles=[0.5])[0]
        round_ms = benchmark.stats.stats.median * 1e3
        benchmark.extra_info["flush_us_per_call"] = flush_ms / CALLS * 1e3
        benchmark.extra_info["kernel_us_per_call"] = (round_ms - flush_ms) / CALLS * 1e3
    benchmark.extra_info["do_bench_median_us"] = do_bench(fn, grad_to_none=grad_to_none, quantiles=[0.5])[0] * 1e3


def _rms_impl(name):
    from mupbench.kernels import rmsnorm

    return {"triton": rmsnorm.rms_norm, "torch": reference.rms_norm}[name]


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("width", [256, 1024, 2048])
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


def _attention_impl(name, gqa: bool):
    from mupbench.kernels import flash_attention

    if name == "triton":
        return flash_attention.attention
    return bench._sdpa({"sdpa-flash": "FLASH_ATTENTION", "sdpa-cudnn": "CUDNN_ATTENTION"}[name], gqa)


@pytest.mark.parametrize("impl", ["triton", "sdpa-flash", "sdpa-cudnn"])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("seq, kv_heads", [(256, 16), (1024, 16), (1024, 1)])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@needs_gpu
def test_attention(benchmark, impl, head_dim, seq, kv_heads, mode):
    heads = 16
    benchmark.group = f"attention-d{head_dim}-t{seq}-h{heads}kv{kv_heads}-{mode}"
    fn = _attention_impl(impl, kv_heads != heads)
    batch = 16384 // seq
    grad = mode != "fwd"
    q = torch.randn(batch, heads, seq, head_dim, device="cuda", dtype=torch.bfloat16, requires_grad=grad)
    k, v = (torch.randn(batch, kv_heads, seq, head_dim, device="cuda", dtype=torch.bfloat16, requires_grad=grad)
            for _ in range(2))
    do = torch.randn_like(q)
    scale = 1.0 / head_dim
    try:
        fn(q, k, v, scale, True)
    except RuntimeError as err:  # a pinned SDPA backend that cannot take this shape here
        pytest.skip(f"{impl}: {str(err).splitlines()[0]}")
    if mode == "fwd":
        _record(benchmark, lambda: fn(q, k, v, scale, True))
    else:
        _record(benchmark, lambda: torch.autograd.grad(fn(q, k, v, scale, True), (q, k, v), do), grad_to_none=[q, k, v])
    flops = 4 * batch * heads * seq * seq * head_dim / 2 * (1 if mode == "fwd" else 3.5)
    benchmark.extra_info["tflops_do_bench"] = flops / (benchmark.extra_info["do_bench_median_us"] * 1e-6) / 1e12


# ------------------------------------------------------------------------------------------ plumbing (any machine)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed where there is no GPU")
def test_bench_without_gpu_is_a_one_line_error(capsys):
    from mupbench.cli import main

    assert main(["bench", "kernels", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err == "mupbench: error: bench kernels needs a CUDA GPU (none found)\n"
    assert main(["bench", "tune", "--quick"]) == 2
    assert capsys.readouterr().err == "mupbench: error: bench tune needs a CUDA GPU (none found)\n"


def test_kernels_package_imports_nothing_of_ours_and_parses_no_arguments():
    import ast
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[1] / "kernels").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{a.name}" if node.module else a.name for a in node.names]
            for name in names:
                ours = name.startswith("mupbench.") or name == "mupbench"
                assert not (ours and not name.startswith("mupbench.kernels")), f"{path.name}: {name}"
                assert name.split(".")[0] != "argparse", f"{path.name}: {name}"


def _timing(ms):
    return {"ms": ms, "p20_ms": ms, "p80_ms": ms}


def _synthetic_report() -> dict:
    env = {"gpu": "NVIDIA H100 80GB HBM3", "capability": "9.0", "sms": 132, "gpu_memory_gib": 79.1, "torch": "2.11",
           "triton": "3.6.0", "cuda": "13.0", "cudnn": 91000, "python": "3.12", "driver": "580.1", "git": "abc1234",
           "kernel_table": "kernels/pinned.py", "date": "2025-01-02T03:04:05+00:00", "quick": False}
    rms = {"op": "add_rms_norm", "dtype": "bfloat16", "rows": 16384, "width": 1024, "gain": "vector",
           "mode": "fwd+bwd", "bytes": 1,
           "results": {"triton": {"plain": {**_timing(0.25), "tb_s": 2.68, "pct_copy": 89.0},
                                  "graph": {**_timing(0.20), "tb_s": 3.0, "pct_copy": 99.0}},
                       "torch": {"plain": {**_timing(0.80), "tb_s": 0.84, "pct_copy": 28.0}},
                       "compile": {"plain": {"error": "RuntimeError: no"}}}}
    attn = [{"dtype": "bfloat16", "batch": 16, "heads": 16, "kv_heads": kv, "seq": seq, "head_dim": 64,
             "causal": True, "mode": "fwd+bwd", "flops": 1e12, "sdpa_default_backend": "CUDNN_ATTENTION",
             "max_abs_err_vs_torch": 1e-3, "triton_config": {},
             "triton_resources": {"fwd-m128-n64-w8-s3": {"registers": 120, "spill_bytes": 0, "smem_kb": 64,
                                                         "mma": "wgmma m64n64k16"}},
             "results": {"triton": {"plain": {**_timing(5.0), "tflops": 200.0}, "graph": {**_timing(4.0), "tflops": 250.0}},
                         "sdpa[FLASH]": {"plain": {**_timing(6.0), "tflops": 166.0}, "graph": {**_timing(5.0), "tflops": 1}},
                         "sdpa[CUDNN]": {"plain": {**_timing(4.0), "tflops": 250.0}, "graph": {**_timing(3.9), "tflops": 1}}}}
            for seq, kv in ((1024, 16), (256, 1))]
    for record in [rms, *attn]:
        bench._add_speedups(record)
    train = [{"width": 256, "kv_heads": None, "depth": 4, "head_dim": 64, "seq": 256, "batch": 32, "steps": 30,
              "results": {"torch eager": {"tokens_per_s": 0.8e6}, "torch compile(model)": {"tokens_per_s": 1e6},
                          "triton eager": {"tokens_per_s": 1.1e6}, "triton compile(model)": {"tokens_per_s": 1.25e6}},
              "speedup_vs_compiled_torch": 1.25}]
    report = {"env": env, "copy": {"bytes": 2**31, "ms": 0.72, "tb_s": 3.0}, "rms_norm": [rms], "attention": attn,
              "train_step": train,
              "configs_used": {"attention sm90/d64/bfloat16/causal/g1": {"fwd": {"block_m": 128}, "source": "pinned"}}}
    report["targets"] = bench.check_targets(report)
    return report


def test_report_names_gpu_versions_ratios_and_targets(tmp_path):
    report = _synthetic_report()
    targets = {t["target"]: t for t in report["targets"]}
    # 89% ≥ 85%; compile failed (no ratio); T 1024 plain 4.0/5.0 = 0.8× < 1× best SDPA; T 256 graph 3.9/4.0 < 1×;
    # train 1.25× ≥ 1.2×
    assert [t["met"] for t in targets.values()] == [True, False, False, True], list(targets)
    assert any("(CUDA graphs)" in t for t in targets) and any("T 1024" in t for t in targets)
    json_path, md_path = bench.write_report(report, tmp_path / "out")
    assert json_path.name == "kernels-nvidia-h100-80gb-hbm3-20250102-0304.json"
    assert json.loads(json_path.read_text())["rms_norm"][0]["speedup"]["plain"] == {"torch": pytest.approx(3.2)}
    md = md_path.read_text()
    for text in ("NVIDIA H100 80GB HBM3", "driver 580.1", "git abc1234", "torch 2.11", "triton 3.6.0", "CUDA 13.0",
                 "3.00 TB/s", "| add_rms_norm | 1024 | vector | fwd+bwd | plain | 250 | 800 | n/a | 2.68 | 3.20× | n/a |",
                 "| graph |", "sdpa[CUDNN]", "CUDNN_ATTENTION", "| 256 | all | 800,000 | 1,000,000 | 1,100,000 | "
                 "1,250,000 | 1.25× |", "2 of 4 met", "attention sm90/d64/bfloat16/causal/g1",
                 "fwd-m128-n64-w8-s3 d64 120 / 0 / 64 / wgmma m64n64k16"):
        assert text in md, text


def test_the_report_is_written_after_every_section_and_kept_when_interrupted(tmp_path, monkeypatch, capsys):
    """A run cut short (the lease's stage timeout sends SIGINT) leaves the sections it measured on disk."""
    report = _synthetic_report()
    monkeypatch.setattr(bench, "unavailable_reason", lambda: None)
    monkeypatch.setattr(bench, "_timer", lambda warmup, rep: None)
    monkeypatch.setattr(bench, "environment", lambda size: {**report["env"], "size": size})
    monkeypatch.setattr(bench, "measure_copy", lambda time_ms: report["copy"])
    monkeypatch.setattr(bench, "measure_rms_norm", lambda *args, **kwargs: report["rms_norm"])

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "measure_attention", interrupted)
    assert bench.run(tmp_path, size="lease", train_step=lambda size: []) == 130
    (path,) = tmp_path.glob("kernels-*.json")
    saved = json.loads(path.read_text())
    assert saved["env"]["size"] == "lease" and saved["copy"] == report["copy"] and len(saved["rms_norm"]) == 1
    assert "attention" not in saved and any("copy bandwidth" in t["target"] for t in saved["targets"])
    assert "interrupted" in capsys.readouterr().err
    assert (tmp_path / path.name.replace(".json", ".md")).exists()

    monkeypatch.setattr(bench, "measure_attention", lambda *args, **kwargs: report["attention"])
    sizes = []
    assert bench.run(tmp_path / "full", size="quick", train_step=lambda size: sizes.append(size) or []) == 0
    assert sizes == ["quick"]
    assert json.loads(next((tmp_path / "full").glob("*.json")).read_text())["train_step"] == []
