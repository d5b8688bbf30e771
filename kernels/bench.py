"""Timing the Triton kernels against torch on this GPU: `run(out, size, train_step)` (the CLI's `mupbench bench
kernels`) writes <out>/kernels-<gpu>-<date>.json and .md, rewritten after every section (copy, RMSNorm, attention,
training step), so a run cut short (a timeout, Ctrl-C) leaves what it measured. Sizes (`SIZES`): `full`, `lease` (what
`scripts/gpu-check --lease` runs in about three minutes: every baseline, fewer shapes) and `quick` (a smoke run).

One run measures, on the same GPU, at the shapes the presets run:
- device-to-device copy bandwidth (the memory-bound ceiling RMSNorm is reported against);
- RMSNorm and the fused residual add + RMSNorm over 16k rows at widths 128–2048 (bf16 input; the fused form as the
  model runs it under autocast: bf16 branch output + fp32 residual → fp32 residual, bf16 normalised output), forward
  and forward+backward: Triton, torch eager (kernels.reference), torch.compile of the reference, and F.rms_norm;
  achieved TB/s of the bytes the op must move and % of copy bandwidth;
- causal attention at 16k tokens per batch, T 256 and 1024, head dims 64 and 128, 16 query heads over 16 or 1 KV
  heads (multi-query), forward and forward+backward: Triton, torch eager (kernels.reference: SDPA's own choice, with
  K/V repeated for GQA), torch.compile of it, and SDPA pinned to each of FLASH / CUDNN / EFFICIENT / MATH (enable_gqa
  for GQA; whichever run); TFLOP/s with FLOPs = 4·B·H·T²·D, halved for causal, ×3.5 for forward+backward;
- every timing twice: plain launches, and replaying a CUDA graph of the same calls (launch cost removed: at T = 256
  it dominates);
- the training step, through `train_step(size)` (mupbench.train_bench.measure_train_step, passed in by the CLI: this
  package imports nothing from the harness).

Times are CUDA-event timings from triton.testing.do_bench (L2 flushed before each run; median and 20/80% quantiles),
never host wall clock per call. The report records the GPU, driver, CUDA/torch/Triton versions, the git revision, the
Triton launch configurations used (and whether pinned or default), and lists each H100 target as met or not.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from mupbench.kernels import reference

DEVICE = "cuda"
ROWS = 16384
COPY_ELEMENTS = 2**29  # 1 GiB of bf16
RMS_WIDTHS = (128, 256, 512, 1024, 2048)
TOKENS = 16384
HEADS = 16
SEQ_LENS = (256, 1024)
HEAD_DIMS = (64, 128)
KV_HEADS = (16, 1)
SDPA_BACKENDS = ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH")
GRAPH_CALLS = 20  # calls per CUDA-graph replay

# The H100 targets of issue 15; the report lists each as met or not (a statement, not a gate).
TARGET_ATTN_VS_SDPA = 1.0  # fwd+bwd speed ÷ best fused SDPA backend: T ≥ 1024 plain, T = 256 with CUDA graphs
TARGET_RMS_PCT_COPY = 85.0  # RMSNorm(+residual) fwd+bwd, widths ≥ 1024
TARGET_TRAIN_VS_COMPILE = 1.2  # train step tokens/s, Triton kernels ÷ torch.compile(model) with torch kernels

NO_GPU = "mupbench: error: bench kernels needs a CUDA GPU (none found)"


def unavailable_reason() -> str | None:
    """Why the benchmark cannot run here (a one-line message), or None."""
    if not torch.cuda.is_available():
        return NO_GPU
    from mupbench import kernels
    if not kernels.triton_available():
        return "mupbench: error: bench kernels needs Triton (pip install triton)"
    if os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on"):
        return "mupbench: error: bench kernels cannot time the interpreter: unset TRITON_INTERPRET"
    return None


@dataclass(frozen=True)
class Size:
    rms_widths: tuple[int, ...]
    gains: tuple[str, ...]
    attention: tuple[tuple[int, int, int, int], ...]  # (seq, head dim, heads, KV heads)
    with_math: bool  # SDPA's MATH backend too (slow: it materialises the scores)
    timer: tuple[int, int]  # do_bench warmup and repetition, ms


SIZES = {
    "full": Size(RMS_WIDTHS, ("none", "vector"),
                 tuple((t, d, HEADS, kv) for d in HEAD_DIMS for t in SEQ_LENS for kv in KV_HEADS), True, (25, 200)),
    # T 1024 at both head dims (the attention target) and T 256 (the CUDA-graph target); widths ≥ 1024 (the RMSNorm
    # target) and 256
    "lease": Size((256, 1024, 2048), ("vector",),
                  ((1024, 64, HEADS, HEADS), (1024, 128, HEADS, HEADS), (256, 64, HEADS, HEADS)), True, (10, 30)),
    "quick": Size((256, 1024), ("vector",), ((256, 64, HEADS, HEADS), (1024, 64, HEADS, 1)), False, (10, 40)),
}


def run(out: Path, size: str = "full", train_step: Callable[[str], list[dict]] | None = None,
        graphs: bool = True) -> int:
    """Measure everything, writing the JSON and markdown report under `out` after each section; returns an exit
    status (2: cannot run; 130: interrupted, the report holding what was measured)."""
    reason = unavailable_reason()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    paths: list[Path] = []

    def save(report: dict) -> None:
        paths[:] = write_report(report, out)

    try:
        measure_all(size, train_step, graphs, on_section=save)
    except KeyboardInterrupt:
        print(f"interrupted: {' and '.join(map(str, paths)) or 'nothing'} written so far", file=sys.stderr)
        return 130
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


# ------------------------------------------------------------------------------------------------------ timing


def cuda_graph(fn: Callable[[], object], calls: int) -> torch.cuda.CUDAGraph:
    """A CUDA graph replaying `calls` calls of fn (warmed up first, so compilation happens outside)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    torch.cuda.synchronize()
    return graph


def _timer(warmup: int, rep: int) -> Callable[..., dict]:
    from triton.testing import do_bench


    def time_ms(fn: Callable[[], object], grad_to_none: list[torch.Tensor] | None = None, graph: bool = False) -> dict:
        if graph:
            g = cuda_graph(fn, GRAPH_CALLS)
            median, p20, p80 = (t / GRAPH_CALLS for t in do_bench(g.replay, warmup=warmup, rep=rep,
                                                                   quantiles=[0.5, 0.2, 0.8]))
            del g
        else:
            fn()  # compile outside the timed runs
            torch.cuda.synchronize()
            median, p20, p80 = do_bench(fn, warmup=warmup, rep=rep, grad_to_none=grad_to_none,
                                        quantiles=[0.5, 0.2, 0.8])
        return {"ms": median, "p20_ms": p20, "p80_ms": p80}

    return time_ms


def _attempt(what: str, fn: Callable[[], dict]) -> dict:
    """Run one measurement; a failure (unsupported backend, out of memory) is recorded, not raised."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - every failure is a result here
        first_line = (str(err).strip().splitlines() or [""])[0]
        message = f"{type(err).__name__}: {first_line}"[:300]
        print(f"  {what}: unavailable ({message})", flush=True)
        with contextlib.suppress(Exception):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        return {"error": message}


def _compiled(fn: Callable) -> Callable:
    torch._dynamo.reset()  # a fresh cache per shape: no recompile limit, no dynamic-shape kernels
    return torch.compile(fn, dynamic=False)


def _modes(graphs: bool) -> tuple[str, ...]:
    return ("plain", "graph") if graphs else ("plain",)


def _time_impls(time_ms, impls: dict, call_for: Callable, leaves, graphs: bool, what: str, rate) -> dict:
    """results[name][plain|graph] for every implementation; `rate(ms)` adds the throughput (TB/s or TFLOP/s)."""
    results = {}
    for name, fn in impls.items():
        results[name] = {}
        for mode in _modes(graphs):
            def one(fn=fn, mode=mode):
                timing = time_ms(call_for(fn), grad_to_none=leaves, graph=mode == "graph")
                return {**timing, **rate(timing["ms"])}
            results[name][mode] = _attempt(f"{what} {name} {mode}", one)
    return results


# ----------------------------------------------------------------------------------------------------- measuring


def _git_revision() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) or "unknown"
    except Exception:  # noqa: BLE001 - informative only
        return "unknown"


def _driver() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip()
        return out.splitlines()[0] if out else "unknown"
    except Exception:  # noqa: BLE001 - informative only
        return "unknown"


def environment(size: str) -> dict:
    import triton

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {
        "gpu": torch.cuda.get_device_name(),
        "capability": f"{props.major}.{props.minor}",
        "sms": props.multi_processor_count,
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "driver": _driver(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "python": platform.python_version(),
        "git": _git_revision(),
        "kernel_table": os.environ.get("MUPBENCH_KERNEL_CONFIGS") or "kernels/pinned.py",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "size": size,
    }


def measure_copy(time_ms) -> dict:
    src = torch.randn(COPY_ELEMENTS, device=DEVICE, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    timing = time_ms(lambda: dst.copy_(src))
    nbytes = 2 * src.numel() * src.element_size()  # read + write
    del src, dst
    torch.cuda.empty_cache()
    return {"bytes": nbytes, **timing, "tb_s": nbytes / (timing["ms"] * 1e-3) / 1e12}


def _rms_impls(fused: bool) -> dict[str, Callable]:
    from mupbench.kernels import rmsnorm

    if fused:
        return {"triton": rmsnorm.add_rms_norm, "torch": reference.add_rms_norm,
                "compile": _compiled(reference.add_rms_norm)}
    impls = {"triton": rmsnorm.rms_norm, "torch": reference.rms_norm, "compile": _compiled(reference.rms_norm)}
    if hasattr(F, "rms_norm"):
        impls["F.rms_norm"] = lambda x, w, eps: F.rms_norm(x, (x.shape[-1],), w, eps)
    return impls


def measure_rms_norm(time_ms, copy_tb_s: float, widths, gains, graphs: bool) -> list[dict]:
    """RMSNorm (bf16) and the fused residual add + RMSNorm (bf16 branch + fp32 residual, bf16 output)."""
    records = []
    for fused in (False, True):
        for width in widths:
            for gain in gains:
                x = torch.randn(ROWS, width, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
                res = torch.randn(ROWS, width, device=DEVICE, dtype=torch.float32, requires_grad=True) if fused else None
                w = (torch.rand(width, device=DEVICE, dtype=torch.float32 if fused else torch.bfloat16).add_(0.5)
                     .requires_grad_(True)) if gain == "vector" else None
                leaves = [t for t in (x, res, w) if t is not None]
                impls = _rms_impls(fused)
                # bytes the op must move: forward reads x (and the residual) and writes y (and the new residual);
                # backward reads dy (and dh) and x (or h) and writes dx (and dresidual).
                n = ROWS * width
                fwd_bytes = n * (2 + 2) if not fused else n * (2 + 4 + 4 + 2)
                bwd_bytes = n * (2 + 2 + 2) if not fused else n * (2 + 4 + 4 + 2 + 4)
                dy = torch.randn(ROWS, width, device=DEVICE, dtype=torch.bfloat16)
                dh = torch.randn(ROWS, width, device=DEVICE, dtype=torch.float32) if fused else None
                for mode, nbytes in (("fwd", fwd_bytes), ("fwd+bwd", fwd_bytes + bwd_bytes)):
                    def call_for(fn, mode=mode):
                        if fused:
                            def fwd():
                                return fn(x, res, w, 1e-6, torch.bfloat16)
                        else:
                            def fwd():
                                return fn(x, w, 1e-6)
                        if mode == "fwd":
                            def call():
                                with torch.no_grad():
                                    fwd()
                        elif fused:
                            def call():
                                y, h = fwd()
                                torch.autograd.grad((y, h), leaves, (dy, dh))
                        else:
                            def call():
                                torch.autograd.grad(fwd(), leaves, dy)
                        return call

                    def rate(ms, nbytes=nbytes):
                        tb_s = nbytes / (ms * 1e-3) / 1e12
                        return {"tb_s": tb_s, "pct_copy": 100 * tb_s / copy_tb_s}

                    label = f"{'add_rms_norm' if fused else 'rms_norm'} w{width} {gain} {mode}"
                    record = {"op": "add_rms_norm" if fused else "rms_norm", "dtype": "bfloat16", "rows": ROWS,
                              "width": width, "gain": gain, "mode": mode, "bytes": nbytes,
                              "results": _time_impls(time_ms, impls, call_for, leaves, graphs, label, rate)}
                    _add_speedups(record)
                    records.append(record)
                    _print_record(label, record, "tb_s", "TB/s")
                del x, res, w, dy, dh, leaves, impls
                torch.cuda.empty_cache()
    return records


def _sdpa_default_backend(q, k, v, scale) -> str:
    try:
        from torch.nn.attention import SDPBackend

        return SDPBackend(torch._fused_sdp_choice(q, k, v, is_causal=True, scale=scale)).name
    except Exception:  # noqa: BLE001 - a private API; the name is informative only
        return "unknown"


def _sdpa(backend: str, gqa: bool) -> Callable:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def fn(q, k, v, scale, causal):
        with sdpa_kernel(getattr(SDPBackend, backend)):
            kwargs = {"enable_gqa": True} if gqa else {}
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, **kwargs)

    return fn


def _config_resources(used: dict, head_dim: int) -> dict:
    """Registers, spill bytes, shared memory and MMA instructions of the attention configs used, as this GPU's Triton
    builds them with the JIT's specialisation (kernels/tune.py `compile_config`; a cache hit after the first launch)."""
    from mupbench.kernels import configs, flash_attention, tune

    major, minor = torch.cuda.get_device_capability()
    out = {}
    for entry in used.values():
        for cls, part in ((configs.FwdConfig, "fwd"), (configs.BwdConfig, "bwd")):
            config = cls(**entry[part])
            if config.name not in out:
                out[config.name] = _attempt(f"resources of {config.name}", lambda c=config: tune.compile_config(
                    c, flash_attention.padded_head_dim(head_dim), major * 10 + minor))
    return out


def measure_attention(time_ms, shapes, with_math: bool, graphs: bool) -> list[dict]:
    from mupbench.kernels import configs, flash_attention

    records = []
    for seq, head_dim, heads, kv_heads in shapes:
        batch = TOKENS // seq
        scale = 1.0 / head_dim
        q = torch.randn(batch, heads, seq, head_dim, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
        k, v = (torch.randn(batch, kv_heads, seq, head_dim, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
                for _ in range(2))
        do = torch.randn_like(q)
        leaves = [q, k, v]
        impls = {"triton": flash_attention.attention, "torch": reference.attention,
                 "compile": _compiled(reference.attention)}
        for backend in SDPA_BACKENDS if with_math else SDPA_BACKENDS[:3]:
            impls[f"sdpa[{backend.removesuffix('_ATTENTION')}]"] = _sdpa(backend, kv_heads != heads)
        configs.clear_used()
        with torch.no_grad():
            ref = reference.attention(q, k, v, scale, True)
            max_err = (flash_attention.attention(q, k, v, scale, True).float() - ref.float()).abs().max().item()
            del ref
        used = {k_: c for k_, c in configs.used().items() if k_.startswith("attention")}
        resources = _config_resources(used, head_dim)
        flops_fwd = 4 * batch * heads * seq * seq * head_dim / 2
        for mode, flops in (("fwd", flops_fwd), ("fwd+bwd", 3.5 * flops_fwd)):
            def call_for(fn, mode=mode):
                if mode == "fwd":
                    def call():
                        with torch.no_grad():
                            fn(q, k, v, scale, True)
                else:
                    def call():
                        torch.autograd.grad(fn(q, k, v, scale, True), leaves, do)
                return call

            def rate(ms, flops=flops):
                return {"tflops": flops / (ms * 1e-3) / 1e12}

            label = f"attention d{head_dim} t{seq} h{heads}/{kv_heads} {mode}"
            record = {"dtype": "bfloat16", "batch": batch, "heads": heads, "kv_heads": kv_heads, "seq": seq,
                      "head_dim": head_dim, "causal": True, "mode": mode, "flops": flops,
                      "sdpa_default_backend": _sdpa_default_backend(q, k.repeat_interleave(heads // kv_heads, 1),
                                                                    v.repeat_interleave(heads // kv_heads, 1), scale),
                      "triton_config": used, "triton_resources": resources, "max_abs_err_vs_torch": max_err,
                      "results": _time_impls(time_ms, impls, call_for, leaves, graphs, label, rate)}
            _add_speedups(record)
            records.append(record)
            _print_record(label, record, "tflops", "TFLOP/s")
        del q, k, v, do, leaves, impls
        torch.cuda.empty_cache()
    return records


def _add_speedups(record: dict) -> None:
    """speedup[mode][name] = time(name) / time(triton) in the same timing mode: above 1, Triton is faster; plus
    best_sdpa[mode], the fastest fused SDPA backend."""
    results = record["results"]
    record["speedup"], record["best_sdpa"] = {}, {}
    for mode in ("plain", "graph"):
        base = results.get("triton", {}).get(mode, {}).get("ms")
        times = {n: r[mode]["ms"] for n, r in results.items() if "ms" in r.get(mode, {})}
        if not base or not times:
            continue
        speedup = {n: t / base for n, t in times.items() if n != "triton"}
        fused = {n: t for n, t in times.items() if n.startswith("sdpa[") and "MATH" not in n}
        if fused:
            best = min(fused, key=fused.get)
            record["best_sdpa"][mode] = best
            speedup["best_sdpa"] = fused[best] / base
        record["speedup"][mode] = speedup


def _print_record(label: str, record: dict, rate: str, unit: str) -> None:
    parts = []
    for name, r in record["results"].items():
        for mode, m in r.items():
            parts.append(f"{name}/{mode} {m['ms'] * 1e3:.1f}us {m[rate]:.2f} {unit}" if "ms" in m else f"{name}/{mode} n/a")
    print(f"{label}: " + "; ".join(parts), flush=True)


def measure_all(size: str = "full", train_step: Callable[[str], list[dict]] | None = None, graphs: bool = True,
                on_section: Callable[[dict], None] | None = None) -> dict:
    """The whole report; `on_section(report)` after each section (the report so far, targets included)."""
    from mupbench import kernels

    plan = SIZES[size]
    kernels.reset_record()
    time_ms = _timer(*plan.timer)
    report = {"env": environment(size)}
    env = report["env"]
    print(f"GPU {env['gpu']} (driver {env['driver']}), torch {env['torch']}, triton {env['triton']}, git {env['git']}",
          flush=True)

    def section(name: str, measure: Callable[[], object]) -> None:
        report[name] = measure()
        report["configs_used"] = kernels.configs_used()
        report["targets"] = check_targets(report)
        if on_section is not None:
            on_section(report)

    section("copy", lambda: measure_copy(time_ms))
    print(f"copy: {report['copy']['tb_s']:.2f} TB/s", flush=True)
    section("rms_norm", lambda: measure_rms_norm(time_ms, report["copy"]["tb_s"], widths=plan.rms_widths,
                                                 gains=plan.gains, graphs=graphs))
    section("attention", lambda: measure_attention(time_ms, plan.attention, with_math=plan.with_math, graphs=graphs))
    if train_step is not None:
        section("train_step", lambda: train_step(size))
    return report


# ------------------------------------------------------------------------------------------------------ reporting


def check_targets(report: dict) -> list[dict]:
    """The H100 targets of issue 15, each with the measured value and whether it is met (a statement, not a gate)."""
    out = []
    for r in report.get("rms_norm", []):
        if r["mode"] != "fwd+bwd":
            continue
        tri = r["results"].get("triton", {}).get("plain", {})
        where = f"{r['op']} width {r['width']} gain {r['gain']} fwd+bwd"
        if r["width"] >= 1024 and "pct_copy" in tri:
            out.append({"target": f"{where}: ≥ {TARGET_RMS_PCT_COPY:.0f}% of copy bandwidth",
                        "value": f"{tri['pct_copy']:.0f}%", "met": tri["pct_copy"] >= TARGET_RMS_PCT_COPY})
        vs = r.get("speedup", {}).get("plain", {}).get("compile")
        if vs is not None:
            out.append({"target": f"{where}: faster than torch.compile", "value": f"{vs:.2f}×", "met": vs > 1.0})
    for r in report.get("attention", []):
        if r["mode"] != "fwd+bwd":
            continue
        mode = "plain" if r["seq"] >= 1024 else "graph" if r["seq"] == 256 else None
        ratio = r.get("speedup", {}).get(mode, {}).get("best_sdpa") if mode else None
        if ratio is None:
            continue
        out.append({"target": f"attention d{r['head_dim']} T {r['seq']} H {r['heads']}/{r['kv_heads']} fwd+bwd"
                              f"{' (CUDA graphs)' if mode == 'graph' else ''}: ≥ {TARGET_ATTN_VS_SDPA}× best SDPA "
                              f"({r['best_sdpa'][mode]})", "value": f"{ratio:.2f}×",
                    "met": ratio >= TARGET_ATTN_VS_SDPA})
    for r in report.get("train_step", []):
        ratio = r.get("speedup_vs_compiled_torch")
        if ratio is None or r.get("width") not in (256, 1024):
            continue
        out.append({"target": f"train step width {r['width']} kv_heads {r.get('kv_heads')}: Triton kernels ≥ "
                              f"{TARGET_TRAIN_VS_COMPILE}× torch.compile(model) tokens/s", "value": f"{ratio:.2f}×",
                    "met": ratio >= TARGET_TRAIN_VS_COMPILE})
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def _fmt_time(r: dict) -> str:
    if "ms" not in r:
        return "n/a"
    us = r["ms"] * 1e3
    return f"{us:.1f}" if us < 100 else f"{us:.0f}"


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}×"


def _names(records: list[dict]) -> list[str]:
    names: list[str] = []
    for r in records:
        names += [n for n in r["results"] if n not in names]
    return names


def _table(records: list[dict], keys: list[tuple[str, Callable[[dict], str]]], rate: str, rate_unit: str) -> list[str]:
    """One row per (record, timing mode): times of every implementation, Triton's rate, ratios to each baseline."""
    names = _names(records)
    others = [n for n in names if n != "triton"]
    header = ([k for k, _ in keys] + ["timing"] + [f"{n} µs" for n in names] + [f"Triton {rate_unit}"]
              + [f"vs {n}" for n in others] + ["vs best SDPA"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        for mode in ("plain", "graph"):
            if not any(mode in res for res in r["results"].values()):
                continue
            tri = r["results"].get("triton", {}).get(mode, {})
            speed = r.get("speedup", {}).get(mode, {})
            cells = ([fmt(r) for _, fmt in keys] + [mode]
                     + [_fmt_time(r["results"].get(n, {}).get(mode, {})) for n in names]
                     + [f"{tri[rate]:.2f}" if rate in tri else "n/a"]
                     + [_fmt_ratio(speed.get(n)) for n in others] + [_fmt_ratio(speed.get("best_sdpa"))])
            lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def format_markdown(report: dict) -> str:
    env = report["env"]
    lines = [
        f"# Kernel benchmarks: {env['gpu']}",
        "",
        f"{env['date']} · driver {env.get('driver', '?')} · torch {env['torch']} · triton {env['triton']} · "
        f"CUDA {env['cuda']} · cuDNN {env['cudnn']} · {env['sms']} SMs · capability {env['capability']} · "
        f"git {env.get('git', '?')} · configs {env.get('kernel_table', '?')}"
        + (f" · {env['size']} size" if env.get("size", "full") != "full" else ""),
        "",
        "Times are medians of CUDA-event timings (triton.testing.do_bench, L2 flushed), in µs per call; `graph` rows "
        f"replay a CUDA graph of {GRAPH_CALLS} calls. Ratios = baseline time / Triton time (above 1: Triton faster).",
        "",
    ]
    copy = report.get("copy")
    if copy:
        lines += [f"Device copy bandwidth: **{copy['tb_s']:.2f} TB/s** ({copy['bytes'] / 2**30:.0f} GiB moved).", ""]
    rms = report.get("rms_norm", [])
    if rms:
        lines += [f"## RMSNorm and residual add + RMSNorm ({rms[0]['rows']} rows, bf16; the fused form with an fp32 "
                  "residual)", ""]
        lines += _table(rms, [("op", lambda r: r["op"]), ("width", lambda r: str(r["width"])),
                              ("gain", lambda r: r["gain"]), ("pass", lambda r: r["mode"])], "tb_s", "TB/s")
        pct = [(r, r["results"].get("triton", {}).get("plain", {}).get("pct_copy")) for r in rms]
        lines += [f"Triton plain-launch % of copy bandwidth: " + ", ".join(
            f"{r['op']} w{r['width']} {r['gain']} {r['mode']} {p:.0f}%" for r, p in pct if p is not None), ""]
    attn = report.get("attention", [])
    if attn:
        lines += ["## Attention (causal, bf16, 16k tokens per batch)", "",
                  f"SDPA's default backend here: {', '.join(sorted({r['sdpa_default_backend'] for r in attn}))}.", ""]
        lines += _table(attn, [("D", lambda r: str(r["head_dim"])), ("T", lambda r: str(r["seq"])),
                               ("B×H/H_kv", lambda r: f"{r['batch']}×{r['heads']}/{r['kv_heads']}"),
                               ("pass", lambda r: r["mode"]),
                               ("max err", lambda r: f"{r['max_abs_err_vs_torch']:.1e}")], "tflops", "TFLOP/s")
        built = {}
        for r in attn:
            for name, res in r.get("triton_resources", {}).items():
                built.setdefault(f"{name} d{r['head_dim']}", res)
        if built:
            lines += ["Attention configs as this GPU's Triton builds them (registers / spill bytes / shared KB / MMA): "
                      + "; ".join(f"{name} {res['registers']} / {res['spill_bytes']} / {res['smem_kb']} / {res['mma']}"
                                  if "registers" in res else f"{name} {res.get('error', 'n/a')}"
                                  for name, res in sorted(built.items())), ""]
    train = [r for r in report.get("train_step", []) if "width" in r]
    if train:
        s = train[0]
        names = _names(train)
        lines += [f"## Training step (depth {s['depth']}, head dim {s['head_dim']}, seq {s['seq']}, batch {s['batch']}, "
                  "bf16 autocast, AdamW; tokens/s)", "",
                  "| width | KV heads | " + " | ".join(names) + " | best Triton vs torch.compile(model) |",
                  "|" + "---|" * (len(names) + 3)]
        for r in train:
            tok = [r["results"].get(n, {}).get("tokens_per_s") for n in names]
            lines.append(f"| {r['width']} | {r.get('kv_heads') or 'all'} | "
                         + " | ".join(f"{t:,.0f}" if t else "n/a" for t in tok)
                         + f" | {_fmt_ratio(r.get('speedup_vs_compiled_torch'))} |")
        lines.append("")
    used = report.get("configs_used")
    if used:
        lines += ["## Triton launch configurations used", "", "| where | config | source |", "|---|---|---|"]
        for where, c in sorted(used.items()):
            config = {k: v for k, v in c.items() if k != "source"}
            lines.append(f"| {where} | {json.dumps(config)} | {c.get('source', 'width rule')} |")
        lines.append("")
    targets = report.get("targets", [])
    if targets:
        met = sum(t["met"] for t in targets)
        lines += [f"## H100 targets ({met} of {len(targets)} met)", "", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {t['target']} | {t['value']} | {'yes' if t['met'] else '**no**'} |" for t in targets]
        lines.append("")
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.fromisoformat(report["env"]["date"]).strftime("%Y%m%d-%H%M")
    stem = f"kernels-{_slug(report['env']['gpu'])}-{stamp}"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md_path.write_text(format_markdown(report))
    return json_path, md_path
