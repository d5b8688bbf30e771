"""Choosing the pinned attention configurations offline (`mupbench bench tune`), and checking them for spills.

- `tune(...)` (needs a CUDA GPU): for each key of the pinned table (GPU architecture, padded head dim, dtype, causal,
  group size) at the shapes the presets run, times every candidate forward configuration (forward alone) and every
  candidate backward configuration (forward + backward, the forward fixed at the fastest), with CUDA-event timings
  (triton.testing.do_bench, L2 flushed), and picks the fastest of each. Candidates that fail to compile or launch, or
  that spill registers, are recorded and skipped. The result is a JSON file in the pinned table's layout: point
  MUPBENCH_KERNEL_CONFIGS at it to use it, or copy its "attention" entries into kernels/pinned.py to pin it.
- `compile_report(...)` (no GPU needed): compiles every candidate for a GPU architecture (sm_90 by default) with
  Triton's own ptxas and reads registers and spill (stack) bytes with cuobjdump, which is how the candidates'
  `max_head_dim` limits were set. It reports what the local Triton version compiles; the GPU tests check the
  compiled kernels' spills again on the GPU's own Triton.

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


def _signature(kernel, constexprs: dict, element: str) -> dict[str, str]:
    """Argument types for triton.compile: upper-case names are pointers (fp32 for LSE/DELTA/RSTD), the rest ints."""
    sig = {}
    for name in kernel.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in ("sm_scale", "eps"):
            sig[name] = "fp32"
        elif name in ("LSE", "DELTA", "RSTD", "DW_PARTIAL"):
            sig[name] = "*fp32"
        elif name.isupper() and name not in ("H", "T", "GROUP", "N_BLOCKS", "H_PROGRAMS"):
            sig[name] = f"*{element}"
        else:
            sig[name] = "i32"
    return sig


def _resources(cubin: bytes) -> dict[str, int]:
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run([_cuobjdump(), "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    regs = re.search(r"REG:(\d+)", out)
    stack = re.search(r"STACK:(\d+)", out)
    return {"registers": int(regs.group(1)) if regs else -1, "spill_bytes": int(stack.group(1)) if stack else -1}


def compile_one(kernel, constexprs: dict, warps: int, stages: int, capability: int = 90,
                element: str = "bf16") -> dict[str, int]:
    """Registers and stack (spill) bytes of one kernel specialisation compiled for sm_<capability>, no GPU needed."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn=kernel, signature=_signature(kernel, constexprs, element), constexprs=constexprs)
    compiled = triton.compile(src, target=GPUTarget("cuda", capability, 32),
                              options={"num_warps": warps, "num_stages": stages})
    return _resources(compiled.asm["cubin"])


def compile_report(head_dims=(64, 128), capability: int = 90, causal: bool = True) -> list[dict]:
    """Every candidate forward and backward config at each padded head dim (bf16), compiled for sm_<capability>."""
    from mupbench.kernels import flash_attention as fa

    rows = []
    for d in head_dims:
        base = {"HEAD_DIM": d, "D_PAD": d, "CAUSAL": causal, "PRECISION": "tf32"}
        for c in configs.FWD_CANDIDATES:
            res = compile_one(fa._attn_fwd, {**base, "BLOCK_M": c.block_m, "BLOCK_N": c.block_n}, c.warps, c.stages,
                              capability)
            rows.append({"kernel": "fwd", "config": c.name, "head_dim": d, "fits": d <= c.max_head_dim, **res})
        for c in configs.BWD_CANDIDATES:
            consts = {**base, "HEADS_PER_PROGRAM": 1, "BLOCK": c.block, "BLOCK_M1": c.block_m1, "BLOCK_N2": c.block_n2}
            res = compile_one(fa._attn_bwd, consts, c.warps, c.stages, capability)
            rows.append({"kernel": "bwd", "config": c.name, "head_dim": d, "fits": d <= c.max_head_dim, **res})
    return rows


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
    table, timings = {}, []
    for key, key_shapes in by_key.items():
        d_pad = flash_attention.padded_head_dim(key_shapes[0][-1])
        fwd_candidates = [c for c in configs.FWD_CANDIDATES if d_pad <= c.max_head_dim]
        bwd_candidates = [c for c in configs.BWD_CANDIDATES if d_pad <= c.max_head_dim]
        fwd_rows = [_time_candidates(sh, dtype, causal, fwd_candidates, None, "fwd") for sh in key_shapes]
        best_fwd = _fastest(fwd_rows, fwd_candidates)
        bwd_rows = [_time_candidates(sh, dtype, causal, bwd_candidates, best_fwd, "fwd+bwd") for sh in key_shapes]
        best_bwd = _fastest(bwd_rows, bwd_candidates)
        timings.append({"key": key, "shapes": key_shapes, "fwd": fwd_rows, "fwd+bwd": bwd_rows})
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
