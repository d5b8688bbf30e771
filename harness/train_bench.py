"""The training-step benchmark: tokens/s of a whole step (forward, backward, AdamW) of the harness model on a GPU,
with the Triton kernels and with the torch kernels, each eager and under `torch.compile(model)`.

It lives in harness/ (mupbench.train_bench) because it builds the model; kernels/bench.py (which imports nothing of ours outside mupbench.kernels) takes
`measure_train_step` as a plain callable from the CLI and puts its records in the same report.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from mupbench import kernels
from mupbench.config import ModelConfig
from mupbench.model import build_model
from mupbench.optim import build_optimizer

WIDTHS = (256, 1024)
# The gpu-small preset's shape (depth 4, head dim 64, 32 × 256 tokens per step), plus its multi-query variant.
SHAPE = {"depth": 4, "head_dim": 64, "seq": 256, "batch": 32}
KV_HEADS = (None, 1)
VARIANTS = (  # name → (MUPBENCH_KERNELS, compile the model)
    ("torch eager", "torch", False),
    ("torch compile(model)", "torch", True),
    ("triton eager", "triton", False),
    ("triton compile(model)", "triton", True),
)
BASELINE = "torch compile(model)"


# size (kernels/bench.py SIZES) → (widths, KV heads, timed steps); the lease runs the wider width (Inductor compiles
# dominate its time: two per width)
SIZES = {"full": (WIDTHS, KV_HEADS, 30), "lease": ((1024,), (None,), 20), "quick": ((256,), (None,), 10)}


def measure_train_step(size: str = "full", widths=None, steps: int | None = None) -> list[dict]:
    """One record per (width, KV heads): tokens/s per variant, what ran, the Triton configurations, and the speedup of
    the best Triton variant over torch.compile(model) with the torch kernels. Failures are recorded, not raised."""
    size_widths, kv_options, size_steps = SIZES[size]
    steps = steps or size_steps
    records = []
    for width in widths or size_widths:
        for kv_heads in kv_options:
            record = {**SHAPE, "width": width, "kv_heads": kv_heads, "steps": steps, "results": {}}
            for name, backend, compiled in VARIANTS:
                record["results"][name] = _attempt(lambda: _timed(width, kv_heads, backend, compiled, steps))
            base = record["results"][BASELINE].get("tokens_per_s")
            triton = [r["tokens_per_s"] for n, r in record["results"].items() if n.startswith("triton")
                      and "tokens_per_s" in r]
            if base and triton:
                record["speedup_vs_compiled_torch"] = max(triton) / base
            records.append(record)
            print(f"train step width {width} kv_heads {kv_heads}: " + "; ".join(
                f"{n} {r['tokens_per_s']:,.0f} tok/s" if "tokens_per_s" in r else f"{n} n/a"
                for n, r in record["results"].items()), flush=True)
    return records


def _attempt(fn) -> dict:
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - a failed variant is a result
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        return {"error": f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:300]}"}


def _timed(width: int, kv_heads: int | None, backend: str, compiled: bool, steps: int) -> dict:
    previous = os.environ.get("MUPBENCH_KERNELS")
    os.environ["MUPBENCH_KERNELS"] = backend
    torch._dynamo.reset()  # the kernel choice is read while tracing: no graph reused across variants
    kernels.reset_record()
    try:
        return _run_steps(width, kv_heads, compiled, steps)
    finally:
        if previous is None:
            os.environ.pop("MUPBENCH_KERNELS", None)
        else:
            os.environ["MUPBENCH_KERNELS"] = previous


def _run_steps(width: int, kv_heads: int | None, compiled: bool, steps: int) -> dict:
    cfg = ModelConfig(width=width, depth=SHAPE["depth"], head_dim=SHAPE["head_dim"], vocab_size=256,
                      parameterization="mup", base_width=128, kv_heads=kv_heads, norm_gains="vector")
    torch.manual_seed(0)
    model = build_model(cfg).to("cuda")
    forward = torch.compile(model, fullgraph=True) if compiled else model
    opt = build_optimizer(model, lr=2**-8, optimizer="adamw")
    tokens = torch.randint(0, cfg.vocab_size, (SHAPE["batch"], SHAPE["seq"] + 1), device="cuda")
    x, y = tokens[:, :-1], tokens[:, 1:]

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = forward(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):  # compilation, allocator warm-up
        step()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        step()
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / steps
    result = {"ms_per_step": ms, "tokens_per_s": SHAPE["batch"] * SHAPE["seq"] / (ms * 1e-3),
              "ran": kernels.backend("cuda"), "fallbacks": kernels.fallbacks(), "configs": kernels.configs_used()}
    del model, opt, forward
    torch.cuda.empty_cache()
    return result
