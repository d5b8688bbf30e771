"""Choosing the pinned attention configurations offline (`mupbench bench tune`), and checking them for spills.

- `tune(...)` (needs a CUDA GPU): for each key of the pinned table (GPU architecture, padded head dim, dtype, causal,
  group size) at the shapes the presets run, times every candidate forward configuration (forward alone) and every
  candidate backward configuration (forward + backward, the forward fixed at the fastest), with CUDA-event timings
  (triton.testing.do_bench, L2 flushed), and picks the fastest of each. Candidates that fail to compile or launch, or
  that spill registers in this GPU's Triton build (`compile_config`, the JIT's specialisation), are recorded and
  skipped. The result is a JSON file in the pinned table's layout: point MUPBENCH_KERNEL_CONFIGS at it to use it, or
  copy its "attention" entries into kernels/pinned.py to pin it.
- `compile_report(...)` (no GPU needed): compiles every candidate for a GPU architecture (sm_90 by default) with
  Triton's own ptxas and reads registers and spill (stack) bytes with cuobjdump, shared memory and the MMA
  instructions (wgmma shapes, or mma.sync) from the build, which is how the candidates' `max_head_dim` limits were
  set. The build is the one the JIT makes at run time: the operators' real launch arguments at the benchmarks' shape
  are recorded (kernels/library.py `recorded_launches`) and specialised by Triton's own JIT binder (`specialise`), so
  pointer and stride alignment hints match; tests/test_kernels_library.py checks the hints, and on a GPU
  tests/test_kernels_cuda.py checks that the offline build hashes and allocates like the JIT's. It reports what the
  local Triton version compiles.

- `warm(...)` / `warm_cases(...)`: the same offline build, in parallel processes, of every attention launch a
  workload will make (recorded on CPU tensors): the builds land in Triton's on-disk cache, where the JIT finds them,
  so the workload's first launches load instead of compiling one by one (scripts/gpu-check's `warm` stage).

Nothing here parses arguments: the CLI passes values in.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import torch

from mupbench.kernels import configs

TUNE_SHAPES = (  # (tokens, heads, kv heads, seq, head dim): the presets' attention shapes (GQA: multi-query)
    (16384, 16, 16, 256, 64), (16384, 16, 1, 256, 64), (16384, 16, 16, 1024, 64), (16384, 16, 1, 1024, 64),
    (16384, 16, 16, 256, 128), (16384, 16, 1, 256, 128), (16384, 16, 16, 1024, 128), (16384, 16, 1, 1024, 128),
)


def _cuobjdump() -> str:
    from triton.backends.nvidia import compiler

    return os.path.join(os.path.dirname(compiler.__file__), "bin", "cuobjdump")


# The shape the offline compile specialises for: what the benchmarks and the presets run (16 heads, T 1024; batch does
# not enter the specialisation: it is in the grid and in strides that are multiples of 16 anyway).
COMPILE_SHAPE = {"batch": 1, "heads": 16, "seq": 1024}


def attention_launches(fwd: configs.FwdConfig, bwd: configs.BwdConfig, head_dim: int, causal: bool = True,
                       kv_heads: int | None = None, dtype: torch.dtype = torch.bfloat16, batch: int | None = None,
                       heads: int | None = None, seq: int | None = None, layout: str = "bhtd") -> list[tuple]:
    """The launches (kernel, grid, args, kwargs) the attention operators make for one forward and backward at this
    shape, recorded from the operator bodies themselves on CPU tensors (nothing runs): the arguments the JIT sees."""
    from mupbench.kernels import flash_attention as fa
    from mupbench.kernels.library import recorded_launches

    batch, heads, seq = (batch or COMPILE_SHAPE["batch"], heads or COMPILE_SHAPE["heads"],
                         seq or COMPILE_SHAPE["seq"])
    kv_heads = kv_heads or heads

    def make(h):
        if layout == "bthd":  # a transposed view of (B, T, H, D), as the model makes q, k, v
            return torch.empty(batch, seq, h, head_dim, dtype=dtype).transpose(1, 2)
        return torch.empty(batch, h, seq, head_dim, dtype=dtype)

    q, k, v = make(heads), make(kv_heads), make(kv_heads)
    with recorded_launches(fa) as launches:
        o, lse = fa._attn_fwd_impl(q, k, v, 1.0 / head_dim, causal, list(fwd.launch), list(bwd.launch))
        fa._attn_bwd_impl(torch.empty_like(o), q, k, v, o, lse, 1.0 / head_dim, causal, list(bwd.launch))
    return launches


def specialise(kernel, args: tuple, kwargs: dict, capability: int = 90):
    """(target, signature, constexprs, attrs, options) of `kernel` launched with these arguments, computed by the JIT's
    own binder and argument packing (triton.runtime.jit: create_function_from_signature, JITFunction._pack_args, as
    in JITFunction.run): the same types, constants and divisibility/alignment hints (tt.divisibility = 16 on pointers
    and on integers that are multiples of 16) as at run time, for sm_<capability>, with no GPU."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    from triton import knobs

    target = GPUTarget("cuda", capability, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    # the options JITFunction.run adds before binding (those this Triton has)
    kwargs = {**kwargs, "debug": kwargs.get("debug", kernel.debug) or knobs.runtime.debug}
    for name in ("instrumentation_mode", "fpsan_homomorphic_casts"):
        if hasattr(knobs.compilation, name):
            kwargs[name] = getattr(knobs.compilation, name)
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound_args, specialization, options)
    return target, signature, constexprs, attrs, options


def compile_launch(kernel, args: tuple, kwargs: dict, capability: int = 90):
    """The CompiledKernel the JIT would build for this launch on sm_<capability>, built offline (no GPU needed)."""
    import triton
    from triton.compiler import ASTSource

    target, signature, constexprs, attrs, options = specialise(kernel, args, kwargs, capability)
    return triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target, options=options.__dict__)


def resources(compiled) -> dict:
    """Registers, spill (stack) bytes, shared memory and the MMA instructions of a compiled kernel."""
    ptx = compiled.asm.get("ptx", "")
    wgmma = sorted(set(re.findall(r"wgmma\.mma_async\.sync\.aligned\.(m\d+n\d+k\d+)", ptx)),
                   key=lambda s: [int(n) for n in re.findall(r"\d+", s)])
    mma = "wgmma " + "/".join(wgmma) if wgmma else ("mma.sync" if "mma.sync" in ptx else "none")
    return {**_cuobjdump_resources(compiled.asm["cubin"]), "smem_kb": round(compiled.metadata.shared / 1024),
            "mma": mma}


def _cuobjdump_resources(cubin: bytes) -> dict[str, int]:
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run([_cuobjdump(), "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    regs = re.search(r"REG:(\d+)", out)
    stack = re.search(r"STACK:(\d+)", out)
    return {"registers": int(regs.group(1)) if regs else -1, "spill_bytes": int(stack.group(1)) if stack else -1}


def compile_config(config, head_dim: int, capability: int = 90, causal: bool = True) -> dict:
    """Resources of one candidate (forward or backward config) at a padded head dim, compiled offline as the JIT
    builds it for the benchmarks' shape (bf16, MHA)."""
    from mupbench.kernels import flash_attention as fa

    is_fwd = isinstance(config, configs.FwdConfig)
    fwd = config if is_fwd else configs.FWD_CANDIDATES[0]
    bwd = configs.BWD_CANDIDATES[0] if is_fwd else config
    wanted = fa._attn_fwd if is_fwd else fa._attn_bwd
    kernel, _, args, kwargs = next(launch for launch in attention_launches(fwd, bwd, head_dim, causal)
                                   if launch[0] is wanted)
    return resources(compile_launch(kernel, args, kwargs, capability))


def compile_report(head_dims=(64, 128), capability: int = 90, causal: bool = True, candidates=None) -> list[dict]:
    """Every candidate forward and backward config at each padded head dim (bf16), compiled for sm_<capability> with
    the runtime's specialisation."""
    candidates = candidates or (*configs.FWD_CANDIDATES, *configs.BWD_CANDIDATES)
    rows = []
    for d in head_dims:
        for c in candidates:
            kind = "fwd" if isinstance(c, configs.FwdConfig) else "bwd"
            try:
                res = compile_config(c, d, capability, causal)
            except Exception as err:  # noqa: BLE001 - a candidate that does not compile is a result
                res = {"error": f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"}
            rows.append({"kernel": kind, "config": c.name, "head_dim": d, "fits": d <= c.max_head_dim, **res})
            print(json.dumps(rows[-1]), flush=True)
    return rows


# ------------------------------------------------------------------------------------------- warming the cache


def case_launches(case, dtype: torch.dtype = torch.bfloat16, arch: str = "sm90", sms: int = 132) -> list[tuple]:
    """The attention launches (kernel, grid, args, kwargs) of one kernels/testing.py AttentionCase, forward and
    backward, with the configuration and GQA path a GPU of this architecture and SM count picks: recorded on CPU
    tensors, nothing runs."""
    from unittest import mock

    from mupbench.kernels import flash_attention as fa
    from mupbench.kernels.library import recorded_launches

    def leaf(heads):
        if case.layout == "bthd":
            return torch.empty(case.batch, case.seq, heads, case.head_dim, dtype=dtype).transpose(1, 2)
        return torch.empty(case.batch, heads, case.seq, case.head_dim, dtype=dtype)

    q, k, v = leaf(case.heads), leaf(case.kv_heads), leaf(case.kv_heads)
    with mock.patch.object(configs, "arch", lambda device: arch), mock.patch.object(fa, "_sm_count", lambda d: sms):
        fwd, bwd, _ = configs.attention(torch.device("cpu"), fa.padded_head_dim(case.head_dim), dtype, case.causal,
                                        case.heads // case.kv_heads)
        with recorded_launches(fa) as launches:
            o, lse = fa._attn_fwd_impl(q, k, v, case.softmax_scale, case.causal, list(fwd.launch), list(bwd.launch))
            fa._attn_bwd_impl(torch.empty_like(o), q, k, v, o, lse, case.softmax_scale, case.causal,
                              list(bwd.launch))
    return launches


def _compile_spec(module: str, name: str, capability: int, signature, constexprs, attrs, options: dict) -> str:
    """Compile one specialisation into Triton's on-disk cache (a worker process); returns the kernel's hash."""
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = getattr(importlib.import_module(module), name)
    compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs),
                              target=GPUTarget("cuda", capability, 32), options=options)
    return compiled.hash


def warm(launches: list[tuple], capability: int, workers: int = 8) -> dict:
    """Compile every distinct specialisation of `launches` in parallel processes into Triton's on-disk cache, where
    the JIT finds them (the offline build hashes as the JIT's: tests/test_kernels_cuda.py): a first launch then loads
    instead of compiling. Returns {"kernels": distinct specialisations, "hashes": [...], "errors": [...]}."""
    import concurrent.futures
    import multiprocessing

    specs = {}
    for kernel, _, args, kwargs in launches:
        _, signature, constexprs, attrs, options = specialise(kernel, args, kwargs, capability)
        key = (kernel.fn.__module__, kernel.__name__, repr(signature), repr(sorted(constexprs.items())),
               repr(sorted(attrs.items())), repr(sorted(options.__dict__.items())))
        specs.setdefault(key, (kernel.fn.__module__, kernel.__name__, capability, signature, constexprs, attrs,
                               dict(options.__dict__)))
    hashes, errors = [], []
    context = multiprocessing.get_context("spawn")  # workers never touch CUDA, whatever the parent did
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, workers), mp_context=context) as pool:
        futures = {pool.submit(_compile_spec, *spec): spec[1] for spec in specs.values()}
        for future in concurrent.futures.as_completed(futures):
            try:
                hashes.append(future.result())
            except Exception as err:  # noqa: BLE001 - a failed warm-up only means the JIT compiles it later
                errors.append(f"{futures[future]}: {type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}")
    return {"kernels": len(specs), "hashes": sorted(hashes), "errors": errors}


def warm_cases(cases, capability: int, sms: int, workers: int = 8, dtype: torch.dtype = torch.bfloat16) -> dict:
    """`warm` for the attention launches of these AttentionCases on a GPU of sm_<capability> with `sms` SMs."""
    import time

    start = time.perf_counter()
    launches = [launch for case in cases
                for launch in case_launches(case, dtype, f"sm{capability}", sms)]
    result = warm(launches, capability, workers)
    return {"cases": len(cases), "launches": len(launches), "kernels": result["kernels"],
            "compiled": len(result["hashes"]), "errors": result["errors"],
            "seconds": round(time.perf_counter() - start, 1)}


# ---------------------------------------------------------------------------------------------------- on a GPU


def _time_candidates(shape, dtype, causal, candidates, fwd_fixed, mode) -> list[dict]:
    from triton.testing import do_bench

    from mupbench.kernels import flash_attention

    tokens, heads, kv_heads, seq, head_dim = shape
    batch = max(1, tokens // seq)
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(batch, heads, seq, head_dim, device="cuda", dtype=dtype, generator=gen, requires_grad=True)
    k, v = (torch.randn(batch, kv_heads, seq, head_dim, device="cuda", dtype=dtype, generator=gen,
                        requires_grad=True) for _ in range(2))
    do = torch.randn_like(q)
    rows = []
    for c in candidates:
        fwd, bwd = (c, None) if mode == "fwd" else (fwd_fixed, c)
        try:
            with configs.forced(fwd, bwd):
                if mode == "fwd":
                    def fn():
                        with torch.no_grad():
                            flash_attention.attention(q, k, v, 1.0 / head_dim, causal)
                else:
                    def fn():
                        torch.autograd.grad(flash_attention.attention(q, k, v, 1.0 / head_dim, causal), (q, k, v), do)
                fn()
                torch.cuda.synchronize()
                ms = do_bench(fn, warmup=10, rep=50, quantiles=[0.5])[0]
            rows.append({"config": c.name, "ms": ms})
        except Exception as err:  # noqa: BLE001 - an unusable candidate is a result
            rows.append({"config": c.name, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"})
            torch.cuda.synchronize()
    return rows


def tune(quick: bool = False, shapes=TUNE_SHAPES, dtype: torch.dtype = torch.bfloat16, causal: bool = True) -> dict:
    """Time every candidate per table key at the given shapes on this GPU and pick, per key, the candidate with the
    least total time over that key's shapes (sequence lengths share a key). Returns {"attention": table, "timings": …}."""
    import triton

    from mupbench.kernels import flash_attention

    arch = configs.arch(torch.device("cuda"))
    gpu = torch.cuda.get_device_name()
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    by_key: dict[str, list] = {}
    for shape in shapes[:2] if quick else shapes:
        _, heads, kv_heads, _, head_dim = shape
        key = configs.key(arch, flash_attention.padded_head_dim(head_dim), dtype, causal, heads // kv_heads)
        by_key.setdefault(key, []).append(shape)
    major, minor = torch.cuda.get_device_capability()
    table, timings = {}, []
    for key, key_shapes in by_key.items():
        d_pad = flash_attention.padded_head_dim(key_shapes[0][-1])
        # this GPU's Triton builds each candidate as its JIT would: a candidate that spills here is not timed
        resources = {}
        for c in (*configs.FWD_CANDIDATES, *configs.BWD_CANDIDATES):
            if d_pad <= c.max_head_dim:
                try:
                    resources[c.name] = compile_config(c, d_pad, major * 10 + minor, causal)
                except Exception as err:  # noqa: BLE001 - a candidate that does not build is a result
                    resources[c.name] = {"error": f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"}
        usable = {name for name, r in resources.items() if r.get("spill_bytes") == 0}
        fwd_candidates = [c for c in configs.FWD_CANDIDATES if c.name in usable]
        bwd_candidates = [c for c in configs.BWD_CANDIDATES if c.name in usable]
        fwd_rows = [_time_candidates(sh, dtype, causal, fwd_candidates, None, "fwd") for sh in key_shapes]
        best_fwd = _fastest(fwd_rows, fwd_candidates)
        bwd_rows = [_time_candidates(sh, dtype, causal, bwd_candidates, best_fwd, "fwd+bwd") for sh in key_shapes]
        best_bwd = _fastest(bwd_rows, bwd_candidates)
        timings.append({"key": key, "shapes": key_shapes, "resources": resources, "fwd": fwd_rows,
                        "fwd+bwd": bwd_rows})
        if best_fwd and best_bwd:
            table[key] = {
                "fwd": {k: getattr(best_fwd, k) for k in ("block_m", "block_n", "warps", "stages")},
                "bwd": {k: getattr(best_bwd, k) for k in ("block", "block_m1", "block_n2", "warps", "stages")},
                "source": f"tuned on {gpu}, {date}, seq {'/'.join(str(sh[3]) for sh in key_shapes)}",
            }
        print(f"tune {key}: fwd {best_fwd and best_fwd.name}, bwd {best_bwd and best_bwd.name}", flush=True)
    return {"gpu": gpu, "torch": torch.__version__, "triton": triton.__version__, "date": date,
            "attention": table, "timings": timings}


def _fastest(rows_per_shape: list[list[dict]], candidates):
    """The candidate with the least total time over the shapes, among those that ran on every shape."""
    totals: dict[str, float] = {}
    for rows in rows_per_shape:
        for r in rows:
            totals[r["config"]] = totals.get(r["config"], 0.0) + r.get("ms", float("inf"))
    finite = {name: t for name, t in totals.items() if t != float("inf")}
    if not finite:
        return None
    name = min(finite, key=finite.get)
    return next(c for c in candidates if c.name == name)


def write(result: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
