"""The depth coordinate check: do the residual stream, the logits and every block's own features keep their size and
their updates as the model gets deeper, at a fixed width?

The same recording as the width check (record.py: forward hooks, each weight layer's own update ΔW·x, a few AdamW
steps on one fixed batch), on the built-in model at depths L = 2…16 under one `depth_parameterization`, with the
depth's log2 in place of the width's. Modules are named per block (`blocks.3.mlp.fc_in`), so a deeper model has more
of them: each block-level quantity is averaged over the blocks (`blocks.*.mlp.fc_in`), and the last block's output is
the residual stream that reaches the final norm ("residual stream"). Judged two-sided, |slope| ≤ threshold per depth
doubling (width is fixed, so no output is a sum over a growing dimension):

    residual stream  mean|x_0|, mean|Δx|   a standard model adds L branches of Θ(1): its stream grows as √L at init,
                                           its updates ∝ L; scaling the branches by L^-α keeps both Θ(1) (α ≥ 1/2)
    logits           mean|Δx|              the same through the final norm
    blocks.*.<layer> mean|x_0|, mean|ΔW·x| each block's own feature update: Θ(1) under CompleteP (α = 1, LR m_L^0),
                                           ∝ L^-1/2 under Depth-μP (α = 1/2, LR m_L^-1/2) — the "lazy" blocks of
                                           Dey et al. 2025 — and Θ(1) under the standard rule

A block's change mean|Δx| is shown but not judged: it carries the updates of every block above it, l/L of the
stream's at block l, so its average over the blocks rises with depth at small L whatever the rule (+0.42 per doubling
on CompleteP's first attention norm over depths 2–8, one seed; +0.28 over 2–16).

So CompleteP passes, Depth-μP fails on the blocks' own updates (as the CompleteP paper predicts: its features stay
near their linearisation as L grows) and the standard rule fails on the residual stream.
"""
from __future__ import annotations

import re
import time
from statistics import fmean

import torch

from mupbench.coord_check.check import DEFAULT_LR, DEFAULT_SEEDS, DEFAULT_STEPS, THRESHOLD, BUILTIN_HEAD_DIM, Check
from mupbench.coord_check.fit import Record, fit_slopes
from mupbench.coord_check.record import BATCH_SIZE, SEQ_LEN, fixed_batch, measure

DEFAULT_DEPTHS = (2, 4, 8, 16)
DEFAULT_WIDTH = 64
# what each depth rule should do in this check (see the module docstring)
EXPECTED = {"standard": "fail", "depth_mup": "fail", "completep": "pass"}
_BLOCK = re.compile(r"^blocks\.(\d+)(\..+)?$")


def _aggregate(rows, depth: int, seed: int) -> list[Record]:
    """Records comparable across depths: per-block modules averaged over the blocks, the last block's output as the
    residual stream, everything else (embedding, final norm, unembedding, logits) as it is. The other blocks' outputs
    (the stream part-way down) are left out: block l of L holds l/L of the branches, not a depth-free quantity."""
    groups: dict[tuple[int, str], list[tuple]] = {}
    for step, name, size, mean_abs, delta, update in rows:
        m = _BLOCK.match(name)
        if m and m.group(2) is None:  # a block's output: the residual stream after it; only the last one is compared
            if int(m.group(1)) == depth - 1:
                groups.setdefault((step, "residual stream"), []).append((size, mean_abs, delta, update))
            continue
        label = "blocks.*" + m.group(2) if m else name
        groups.setdefault((step, label), []).append((size, mean_abs, delta, update))
    out = []
    for (step, label), values in groups.items():
        updates = [u for *_, u in values if u is not None]
        out.append(Record(depth, step, label, fmean(v[1] for v in values), fmean(v[2] for v in values),
                          fmean(updates) if updates else None, seed, values[0][0]))
    return out


def run_depth_check(depth_parameterization: str = "completep", depths=DEFAULT_DEPTHS, width: int = DEFAULT_WIDTH,
                    steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR, threshold: float = THRESHOLD,
                    seeds=DEFAULT_SEEDS, parameterization: str = "mup", base_depth: int | None = None) -> Check:
    """The depth coordinate check of one depth rule on the built-in model (μP in width, at `width`). The Check's
    `widths` hold the depths; its records' `width` field the depth."""
    from mupbench.config import ModelConfig
    from mupbench.model import build_model
    from mupbench.optim import parameter_groups

    depths = sorted(depths)
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    base_depth = base_depth or depths[0]
    label = f"built-in transformer (width {width}, head dim {BUILTIN_HEAD_DIM}) · depth rule {depth_parameterization}"
    check = Check(label, parameterization, depths, list(range(steps + 1)), threshold, lr, seeds=seeds,
                  batch=[BATCH_SIZE, SEQ_LEN], axis="depth", expected_outcome=EXPECTED.get(depth_parameterization),
                  depth_parameterization=depth_parameterization)
    check.lr_source = f"the {parameterization} table × the {depth_parameterization} depth rule (base depth {base_depth})"
    start = time.perf_counter()
    for seed in seeds:
        for depth in depths:
            cfg = ModelConfig(width=width, depth=depth, head_dim=BUILTIN_HEAD_DIM, base_width=width,
                              parameterization=parameterization, depth_parameterization=depth_parameterization,
                              base_depth=base_depth)
            torch.manual_seed(seed)
            model = build_model(cfg)
            batch = fixed_batch(cfg.vocab_size, BATCH_SIZE, SEQ_LEN, seed=seed)
            groups = parameter_groups(model, lr, 0.0, "coupled", eps=1e-8)
            rows, _ = measure(model, groups, batch, steps, lr, label)
            check.records += _aggregate(rows, depth, seed)
    check.seconds = time.perf_counter() - start
    check.slopes = fit_slopes(check.records, threshold, two_sided=True)
    for slope in check.slopes:  # a block's Δx carries the upstream blocks' updates: l/L of them at block l (see above)
        if slope.module.startswith("blocks.*") and slope.quantity == "mean_abs_delta":
            slope.passed, slope.bound = True, "info"
    return check
