"""`mupbench bench kernels [--out DIR] [--quick]`: time the Triton kernels against torch on this GPU.

One run measures, on the same GPU:
- device-to-device copy bandwidth (the memory-bound ceiling RMSNorm is reported against);
- RMSNorm over 16k rows at widths 128…8192, no gain and a vector gain, forward and forward+backward: Triton, torch
  eager (kernels.reference), torch.compile of the reference, and F.rms_norm; achieved TB/s of the bytes the op must
  move (forward: read x, write y; backward adds read x and dy, write dx) and % of copy bandwidth;
- causal attention at 16k tokens per batch (B = 16384 / T, H = 2048 / D), T 256/1024/2048, D 64/128, forward and
  forward+backward: Triton, torch eager (kernels.reference, i.e. SDPA's default choice, whose backend is recorded),
  torch.compile of the reference, and SDPA pinned to each of FLASH / CUDNN / EFFICIENT (whichever run) and MATH (the
  unfused computation); TFLOP/s with FLOPs = 4·B·H·T²·D, halved for causal, ×3.5 for forward+backward;
- the whole training step (harness.build_model / build_optimizer, bf16 autocast as in training): tokens/s with the
  Triton kernels and with the torch kernels.

Kernel times are CUDA-event timings from triton.testing.do_bench (L2 flushed before each run; median and 20/80%
quantiles over ~`rep` ms), never host wall clock per call. Results go to <out>/kernels-<gpu>-<date>.json and .md.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from kernels import reference

DEVICE = "cuda"
ROWS = 16384
COPY_ELEMENTS = 2**29  # 1 GiB of bf16
RMS_WIDTHS = (128, 512, 1024, 2048, 4096, 8192)
TOKENS = 16384
MODEL_DIM = 2048  # attention heads = MODEL_DIM / head dim, as in FlashAttention's benchmarks
SEQ_LENS = (256, 1024, 2048)
HEAD_DIMS = (64, 128)
TRAIN_WIDTHS = (256, 1024)
TRAIN_SHAPE = {"depth": 4, "head_dim": 64, "seq": 256, "batch": 64}
SDPA_BACKENDS = ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH")
FUSED_SDPA = SDPA_BACKENDS[:3]

# What the kernels are built to reach on an H100 (see README.md, "Kernels"); the report says which are met.
TARGET_RMS_PCT_COPY = 80.0  # fwd+bwd, widths ≥ 1024
TARGET_ATTN_VS_SDPA = 0.9  # fwd+bwd speed relative to the best fused SDPA backend, seq ≥ 1024

NO_GPU = "mupbench: error: bench kernels needs a CUDA GPU (none found)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks"),
                        help="directory for the JSON and markdown results (default: reports/benchmarks)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer shapes and shorter timings: a smoke run of a few minutes")


def run(out: Path, quick: bool = False) -> int:
    if not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    import kernels

    if not kernels.triton_available():
        print("mupbench: error: bench kernels needs Triton (pip install triton)", file=sys.stderr)
        return 2
    if os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on"):
        print("mupbench: error: bench kernels cannot time the interpreter: unset TRITON_INTERPRET", file=sys.stderr)
        return 2
    report = measure_all(quick)
    json_path, md_path = write_report(report, out)
    print(f"wrote {json_path} and {md_path}")
    return 0


# ------------------------------------------------------------------------------------------------------ timing


def _timer(quick: bool) -> Callable[..., dict]:
    from triton.testing import do_bench

    warmup, rep = (10, 40) if quick else (25, 200)

    def time_ms(fn: Callable[[], object], grad_to_none: list[torch.Tensor] | None = None) -> dict:
        fn()  # compile / autotune outside the timed runs
        torch.cuda.synchronize()
        median, p20, p80 = do_bench(fn, warmup=warmup, rep=rep, grad_to_none=grad_to_none, quantiles=[0.5, 0.2, 0.8])
        return {"ms": median, "p20_ms": p20, "p80_ms": p80}

    return time_ms


def cuda_graph(fn: Callable[[], object], calls: int) -> torch.cuda.CUDAGraph:
    """A CUDA graph replaying `calls` calls of fn (warmed up first, so autotuning and compilation happen outside)."""
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


def _attempt(what: str, fn: Callable[[], dict]) -> dict:
    """Run one measurement; a failure (unsupported backend, out of memory) is recorded, not raised."""
    try:
        result = fn()
    except Exception as err:  # noqa: BLE001 - every failure is a result here
        first_line = (str(err).strip().splitlines() or [""])[0]
        message = f"{type(err).__name__}: {first_line}"[:300]
        print(f"  {what}: unavailable ({message})", flush=True)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        return {"error": message}
    return result


def _compiled(fn: Callable) -> Callable:
    torch._dynamo.reset()  # a fresh cache per shape: no recompile limit, no dynamic-shape kernels
    return torch.compile(fn, dynamic=False)


# ----------------------------------------------------------------------------------------------------- measuring


def environment(quick: bool) -> dict:
    import triton

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {
        "gpu": torch.cuda.get_device_name(),
        "capability": f"{props.major}.{props.minor}",
        "sms": props.multi_processor_count,
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
    }


def measure_copy(time_ms) -> dict:
    n = COPY_ELEMENTS
    src = torch.randn(n, device=DEVICE, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    timing = time_ms(lambda: dst.copy_(src))
    nbytes = 2 * src.numel() * src.element_size()  # read + write
    del src, dst
    torch.cuda.empty_cache()
    return {"bytes": nbytes, **timing, "tb_s": nbytes / (timing["ms"] * 1e-3) / 1e12}


def measure_rms_norm(time_ms, copy_tb_s: float, widths, gains, dtypes) -> list[dict]:
    from kernels import rmsnorm

    records = []
    for dtype in dtypes:
        for width in widths:
            for gain in gains:
                x = torch.randn(ROWS, width, device=DEVICE, dtype=dtype, requires_grad=True)
                w = torch.rand(width, device=DEVICE, dtype=dtype).add_(0.5).requires_grad_(True) if gain == "vector" else None
                dy = torch.randn_like(x)
                leaves = [x] + ([w] if w is not None else [])
                impls = {
                    "triton": rmsnorm.rms_norm,
                    "torch": reference.rms_norm,
                    "compile": _compiled(reference.rms_norm),
                }
                if hasattr(F, "rms_norm"):
                    impls["F.rms_norm"] = lambda x_, w_, eps: F.rms_norm(x_, (x_.shape[-1],), w_, eps)
                elt = x.element_size()
                for mode, nbytes in (("fwd", 2 * ROWS * width * elt), ("fwd+bwd", 5 * ROWS * width * elt)):
                    record = {"dtype": str(dtype).removeprefix("torch."), "rows": ROWS, "width": width, "gain": gain,
                              "mode": mode, "bytes": nbytes, "results": {}}
                    for name, fn in impls.items():
                        if mode == "fwd":
                            call = (lambda f=fn: f(x, w, 1e-6))
                            ctx = torch.no_grad()
                        else:
                            call = (lambda f=fn: f(x, w, 1e-6).backward(dy))
                            ctx = contextlib.nullcontext()

                        def one(call=call, ctx=ctx):
                            with ctx:
                                timing = time_ms(call, grad_to_none=leaves)
                            tb_s = nbytes / (timing["ms"] * 1e-3) / 1e12
                            return {**timing, "tb_s": tb_s, "pct_copy": 100 * tb_s / copy_tb_s}

                        record["results"][name] = _attempt(f"rms_norm {name} {width} {gain} {mode}", one)
                    _add_speedups(record)
                    records.append(record)
                    _print_record("rms_norm", record, ("dtype", "width", "gain", "mode"), "tb_s", "TB/s")
                del x, w, dy, leaves, impls
                torch.cuda.empty_cache()
    return records


def _sdpa_default_backend(q, k, v, scale) -> str:
    try:
        from torch.nn.attention import SDPBackend

        return SDPBackend(torch._fused_sdp_choice(q, k, v, is_causal=True, scale=scale)).name
    except Exception:  # noqa: BLE001 - a private API; the name is informative only
        return "unknown"


def measure_attention(time_ms, seq_lens, head_dims, with_math: bool) -> list[dict]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from kernels import flash_attention

    records = []
    for head_dim in head_dims:
        for seq in seq_lens:
            batch, heads = TOKENS // seq, MODEL_DIM // head_dim
            scale = 1.0 / head_dim
            shape = (batch, heads, seq, head_dim)
            q, k, v = (torch.randn(shape, device=DEVICE, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
            do = torch.randn_like(q)
            leaves = [q, k, v]

            def sdpa(backend):
                def fn(q_, k_, v_, s_, causal):
                    with sdpa_kernel(getattr(SDPBackend, backend)):
                        return F.scaled_dot_product_attention(q_, k_, v_, is_causal=causal, scale=s_)
                return fn

            impls = {
                "triton": flash_attention.attention,
                "torch": reference.attention,
                "compile": _compiled(reference.attention),
            }
            for backend in SDPA_BACKENDS if with_math else FUSED_SDPA:
                impls[f"sdpa[{backend.removesuffix('_ATTENTION')}]"] = sdpa(backend)

            with torch.no_grad():
                ref = reference.attention(q, k, v, scale, True)
                max_err = (flash_attention.attention(q, k, v, scale, True).float() - ref.float()).abs().max().item()
                del ref
            flops_fwd = 4 * batch * heads * seq * seq * head_dim / 2
            for mode, flops in (("fwd", flops_fwd), ("fwd+bwd", 3.5 * flops_fwd)):
                record = {"dtype": "bfloat16", "batch": batch, "heads": heads, "seq": seq, "head_dim": head_dim,
                          "causal": True, "mode": mode, "flops": flops,
                          "sdpa_default_backend": _sdpa_default_backend(q, k, v, scale),
                          "max_abs_err_vs_torch": max_err, "results": {}}
                for name, fn in impls.items():
                    if mode == "fwd":
                        call = (lambda f=fn: f(q, k, v, scale, True))
                        ctx = torch.no_grad()
                    else:
                        call = (lambda f=fn: f(q, k, v, scale, True).backward(do))
                        ctx = contextlib.nullcontext()

                    def one(call=call, ctx=ctx):
                        with ctx:
                            timing = time_ms(call, grad_to_none=leaves)
                        return {**timing, "tflops": flops / (timing["ms"] * 1e-3) / 1e12}

                    record["results"][name] = _attempt(f"attention {name} d{head_dim} t{seq} {mode}", one)
                fused = {n: r["ms"] for n, r in record["results"].items()
                         if n.startswith("sdpa[") and "MATH" not in n and "ms" in r}
                record["best_sdpa"] = min(fused, key=fused.get) if fused else None
                _add_speedups(record)
                records.append(record)
                _print_record("attention", record, ("head_dim", "seq", "mode"), "tflops", "TFLOP/s")
            del q, k, v, do, leaves, impls
            torch.cuda.empty_cache()
    return records


def measure_train_step(widths, steps: int) -> list[dict]:
    """Tokens/s of a whole training step (forward, backward, AdamW) with each kernel backend, in bf16 autocast."""
    try:
        from harness import ModelConfig, build_model, build_optimizer
    except ImportError as err:
        print(f"  train step: skipped (harness not importable: {err})", flush=True)
        return [{"error": f"harness not importable: {err}"}]

    shape = TRAIN_SHAPE
    records = []
    for width in widths:
        record = {**shape, "width": width, "results": {}}
        for backend in ("torch", "triton"):
            def one(backend=backend):
                previous = os.environ.get("MUPBENCH_KERNELS")
                os.environ["MUPBENCH_KERNELS"] = backend
                try:
                    return _train_step_timing(ModelConfig, build_model, build_optimizer, width, steps)
                finally:
                    if previous is None:
                        os.environ.pop("MUPBENCH_KERNELS")
                    else:
                        os.environ["MUPBENCH_KERNELS"] = previous

            record["results"][backend] = _attempt(f"train step {backend} width {width}", one)
        torch_r, triton_r = record["results"]["torch"], record["results"]["triton"]
        if "tokens_per_s" in torch_r and "tokens_per_s" in triton_r:
            record["speedup"] = triton_r["tokens_per_s"] / torch_r["tokens_per_s"]
        records.append(record)
        print(f"train step width {width}: " + ", ".join(
            f"{b} {r['tokens_per_s']:,.0f} tok/s" for b, r in record["results"].items() if "tokens_per_s" in r
        ), flush=True)
    return records


def _train_step_timing(ModelConfig, build_model, build_optimizer, width: int, steps: int) -> dict:
    shape = TRAIN_SHAPE
    cfg = ModelConfig(width=width, depth=shape["depth"], head_dim=shape["head_dim"], vocab_size=256,
                      parameterization="mup", base_width=128)
    torch.manual_seed(0)
    model = build_model(cfg).to(DEVICE)
    opt = build_optimizer(model, lr=2**-8, optimizer="adamw")
    tokens = torch.randint(0, cfg.vocab_size, (shape["batch"], shape["seq"] + 1), device=DEVICE)
    x, y = tokens[:, :-1], tokens[:, 1:]

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):  # autotuning, allocator warm-up
        step()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        step()
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / steps
    del model, opt
    torch.cuda.empty_cache()
    return {"ms_per_step": ms, "tokens_per_s": shape["batch"] * shape["seq"] / (ms * 1e-3)}


def _add_speedups(record: dict) -> None:
    """speedup[name] = time(name) / time(triton): above 1, Triton is faster."""
    results = record["results"]
    base = results.get("triton", {}).get("ms")
    record["speedup"] = {n: r["ms"] / base for n, r in results.items() if n != "triton" and base and "ms" in r}
    if record.get("best_sdpa") and base:
        record["speedup"]["best_sdpa"] = results[record["best_sdpa"]]["ms"] / base


def _print_record(kind: str, record: dict, keys: tuple[str, ...], rate: str, unit: str) -> None:
    label = " ".join(f"{k}={record[k]}" for k in keys)
    parts = []
    for name, r in record["results"].items():
        parts.append(f"{name} {r['ms'] * 1e3:.1f}us {r[rate]:.2f} {unit}" if "ms" in r else f"{name} n/a")
    print(f"{kind} {label}: " + "; ".join(parts), flush=True)


def measure_all(quick: bool) -> dict:
    time_ms = _timer(quick)
    report = {"env": environment(quick)}
    print(f"GPU {report['env']['gpu']}, torch {report['env']['torch']}, triton {report['env']['triton']}", flush=True)
    report["copy"] = measure_copy(time_ms)
    print(f"copy: {report['copy']['tb_s']:.2f} TB/s", flush=True)
    report["rms_norm"] = measure_rms_norm(
        time_ms, report["copy"]["tb_s"],
        widths=(1024, 4096) if quick else RMS_WIDTHS,
        gains=("none", "vector"),
        # bf16 as specified; float32 too, since under bf16 autocast the residual stream (RMSNorm's input) stays fp32.
        dtypes=(torch.bfloat16,) if quick else (torch.bfloat16, torch.float32),
    )
    report["attention"] = measure_attention(
        time_ms, seq_lens=(1024,) if quick else SEQ_LENS, head_dims=HEAD_DIMS, with_math=not quick,
    )
    report["train_step"] = measure_train_step((TRAIN_WIDTHS[0],) if quick else TRAIN_WIDTHS, steps=10 if quick else 30)
    report["targets"] = check_targets(report)
    return report


# ------------------------------------------------------------------------------------------------------ reporting


def check_targets(report: dict) -> list[dict]:
    """The H100 targets, each with the measured value and whether it is met (a statement, not a gate)."""
    out = []
    for r in report.get("rms_norm", []):
        tri = r["results"].get("triton", {})
        if r["mode"] != "fwd+bwd" or "pct_copy" not in tri:
            continue
        where = f"rms_norm {r['dtype']} width {r['width']} gain {r['gain']} fwd+bwd"
        if r["width"] >= 1024:
            out.append({"target": f"{where}: ≥ {TARGET_RMS_PCT_COPY:.0f}% of copy bandwidth",
                        "value": f"{tri['pct_copy']:.0f}%", "met": tri["pct_copy"] >= TARGET_RMS_PCT_COPY})
        if "compile" in r.get("speedup", {}):
            out.append({"target": f"{where}: faster than torch.compile", "value": f"{r['speedup']['compile']:.2f}×",
                        "met": r["speedup"]["compile"] > 1.0})
    for r in report.get("attention", []):
        if r["mode"] != "fwd+bwd" or r["seq"] < 1024 or "best_sdpa" not in r.get("speedup", {}):
            continue
        ratio = r["speedup"]["best_sdpa"]
        out.append({"target": f"attention d{r['head_dim']} seq {r['seq']} fwd+bwd: ≥ {TARGET_ATTN_VS_SDPA}× best SDPA "
                              f"({r['best_sdpa']})", "value": f"{ratio:.2f}×", "met": ratio >= TARGET_ATTN_VS_SDPA})
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def _fmt_time(r: dict) -> str:
    if "ms" not in r:
        return "n/a"
    us = r["ms"] * 1e3
    return f"{us:.1f}" if us < 100 else f"{us:.0f}"


def format_markdown(report: dict) -> str:
    env = report["env"]
    lines = [
        f"# Kernel benchmarks: {env['gpu']}",
        "",
        f"{env['date']} · torch {env['torch']} · triton {env['triton']} · CUDA {env['cuda']} · cuDNN {env['cudnn']} · "
        f"{env['sms']} SMs · capability {env['capability']}" + (" · quick run" if env.get("quick") else ""),
        "",
        "Times are medians of CUDA-event timings (triton.testing.do_bench, L2 flushed), in µs. "
        "Speedup = baseline time / Triton time (above 1: Triton faster).",
        "",
    ]
    copy = report.get("copy")
    if copy:
        lines += [f"Device copy bandwidth: **{copy['tb_s']:.2f} TB/s** ({copy['bytes'] / 2**30:.0f} GiB moved).", ""]

    rms = report.get("rms_norm", [])
    if rms:
        names = _names(rms)
        lines += [
            f"## RMSNorm ({rms[0]['rows']} rows; bytes = x + y, plus x + dy + dx for the backward)",
            "",
            "| dtype | width | gain | pass | " + " | ".join(f"{n} µs" for n in names)
            + " | Triton TB/s | % of copy | " + " | ".join(f"vs {n}" for n in names if n != "triton") + " |",
            "|" + "---|" * (4 + len(names) + 2 + len(names) - 1),
        ]
        for r in rms:
            tri = r["results"].get("triton", {})
            lines.append(
                f"| {r['dtype']} | {r['width']} | {r['gain']} | {r['mode']} | "
                + " | ".join(_fmt_time(r["results"].get(n, {})) for n in names)
                + f" | {tri.get('tb_s', float('nan')):.2f} | {tri.get('pct_copy', float('nan')):.0f}% | "
                + " | ".join(_fmt_ratio(r["speedup"].get(n)) for n in names if n != "triton") + " |"
            )
        lines.append("")

    attn = report.get("attention", [])
    if attn:
        names = _names(attn)
        lines += [
            "## Attention (causal, bf16, 16k tokens per batch, H = 2048 / D)",
            "",
            f"SDPA's default backend here: {', '.join(sorted({r['sdpa_default_backend'] for r in attn}))}.",
            "",
            "| D | T | B×H | pass | " + " | ".join(f"{n} µs" for n in names)
            + " | Triton TFLOP/s | best SDPA | vs best SDPA | " + " | ".join(f"vs {n}" for n in names if n != "triton")
            + " | max err |",
            "|" + "---|" * (4 + len(names) + 3 + len(names) - 1 + 1),
        ]
        for r in attn:
            tri = r["results"].get("triton", {})
            lines.append(
                f"| {r['head_dim']} | {r['seq']} | {r['batch']}×{r['heads']} | {r['mode']} | "
                + " | ".join(_fmt_time(r["results"].get(n, {})) for n in names)
                + f" | {tri.get('tflops', float('nan')):.0f} | {r.get('best_sdpa') or 'n/a'} | "
                + _fmt_ratio(r["speedup"].get("best_sdpa")) + " | "
                + " | ".join(_fmt_ratio(r["speedup"].get(n)) for n in names if n != "triton")
                + f" | {r['max_abs_err_vs_torch']:.1e} |"
            )
        lines.append("")

    train = [r for r in report.get("train_step", []) if "width" in r]
    if train:
        s = train[0]
        lines += [
            f"## Training step (depth {s['depth']}, head dim {s['head_dim']}, seq {s['seq']}, batch {s['batch']}, "
            "bf16 autocast, AdamW)",
            "",
            "| width | torch kernels tok/s | Triton kernels tok/s | speedup |",
            "|---|---|---|---|",
        ]
        for r in train:
            tok = [r["results"].get(b, {}).get("tokens_per_s") for b in ("torch", "triton")]
            lines.append(f"| {r['width']} | " + " | ".join(f"{t:,.0f}" if t else "n/a" for t in tok)
                         + f" | {_fmt_ratio(r.get('speedup'))} |")
        lines.append("")

    targets = report.get("targets", [])
    if targets:
        met = sum(t["met"] for t in targets)
        lines += [f"## Targets ({met} of {len(targets)} met)", "", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {t['target']} | {t['value']} | {'yes' if t['met'] else '**no**'} |" for t in targets]
        lines.append("")
    return "\n".join(lines)


def _names(records: list[dict]) -> list[str]:
    names: list[str] = []
    for r in records:
        names += [n for n in r["results"] if n not in names]
    return names


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}×"


def write_report(report: dict, out: Path) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.fromisoformat(report["env"]["date"]).strftime("%Y%m%d-%H%M")
    stem = f"kernels-{_slug(report['env']['gpu'])}-{stamp}"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md_path.write_text(format_markdown(report))
    return json_path, md_path
