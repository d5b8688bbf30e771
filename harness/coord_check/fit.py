"""Fitting a coordinate check: the slope of log2 magnitude against log2 width, per module, quantity and step, and the
attention scale's exponent in the head dim; pass/fail against the threshold."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SCALE_EXPONENT_TOLERANCE = 0.05  # μP: attention scale ∝ D^-1 where the head dim D grows with width


@dataclass
class Record:
    width: int
    step: int
    module: str
    mean_abs: float
    mean_abs_delta: float
    mean_abs_update: float | None = None  # mean |(W_t − W_0) x_t|: the module's own weight update (Linear, Embedding)


@dataclass
class Slope:
    module: str
    step: int
    quantity: str  # mean_abs_delta | mean_abs_update | attention_scale_exponent (d log2 scale / d log2 head dim)
    slope: float | None  # log2 magnitude per width doubling; None when a magnitude is zero at some width
    passed: bool
    bound: str = "both"  # "both": |slope| ≤ threshold; "growth": slope ≤ threshold; "exact": attention scale exponent


@dataclass
class AttentionScale:
    """The scale a module passed to F.scaled_dot_product_attention at each width, against its head dim."""

    module: str
    head_dims: list[int]
    scales: list[float]
    exponent: float | None  # d log2(scale) / d log2(head dim); None when the head dim does not change with width
    passed: bool


QUANTITY_TEXT = {"mean_abs_delta": "mean|Δx|", "mean_abs_update": "mean|ΔW·x|"}


def describe_failure(s: Slope) -> str:
    if s.quantity == "attention_scale_exponent":
        return (f"{s.module}: attention scale ∝ D^{s.slope:+.2f} where the head dim D grows with width: "
                "μP needs 1/D (exponent −1)")
    what = QUANTITY_TEXT.get(s.quantity, s.quantity)
    if s.slope is None or not math.isfinite(s.slope):
        return f"{s.module}: {what} is not finite at step {s.step} (the model blew up)"
    verb = "grows" if s.slope > 0 else "shrinks"
    return f"{s.module}: {what} {verb} 2^{s.slope:+.2f} per width doubling at step {s.step}"


def _slope(widths: list[int], values: np.ndarray) -> float | None:
    if not np.isfinite(values).all():
        return math.nan
    if (values <= 0).any():  # not trained at some width (frozen, or exactly zero): no slope to judge
        return None
    return float(np.polyfit(np.log2(widths), np.log2(values), 1)[0])


def growth_only(module: str, quantity: str) -> bool:
    """Attention logits and a layer's own update ΔW·x are judged on growth only (see the module docstring)."""
    return quantity == "mean_abs_update" or module.split("#")[0].endswith("attn_logits")


def fit_slopes(records: list[Record], threshold: float) -> list[Slope]:
    """Per module, quantity and step ≥ 1, the least-squares slope of log2 magnitude against log2 width."""
    series: dict[tuple[str, str, int], dict[int, float]] = {}
    order: list[str] = []
    for r in records:
        if r.module not in order:
            order.append(r.module)
        if r.step < 1:
            continue
        series.setdefault((r.module, "mean_abs_delta", r.step), {})[r.width] = r.mean_abs_delta
        if r.mean_abs_update is not None:
            series.setdefault((r.module, "mean_abs_update", r.step), {})[r.width] = r.mean_abs_update
    slopes = []
    for (module, quantity, step), values in sorted(
            series.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1], kv[0][2])):
        widths = sorted(values)
        if len(widths) < 2:
            continue
        slope = _slope(widths, np.array([values[w] for w in widths], dtype=float))
        bound = "growth" if growth_only(module, quantity) else "both"
        if slope is None:
            slopes.append(Slope(module, step, quantity, None, True, bound))
        elif not math.isfinite(slope):
            slopes.append(Slope(module, step, quantity, None, False, bound))
        else:
            ok = slope <= threshold if bound == "growth" else abs(slope) <= threshold
            slopes.append(Slope(module, step, quantity, slope, ok, bound))
    return slopes


def fit_attention_scales(scales: dict[int, dict[str, tuple[int, float]]]) -> list[AttentionScale]:
    """From {width: {module: (head dim, scale)}}: where the head dim grows with width, μP needs scale ∝ 1/D."""
    out = []
    modules = sorted({m for per in scales.values() for m in per})
    for module in modules:
        points = [(w, *scales[w][module]) for w in sorted(scales) if module in scales[w]]
        dims = [d for _, d, _ in points]
        values = [s for _, _, s in points]
        if len(set(dims)) < 2:
            out.append(AttentionScale(module, dims, values, None, True))
            continue
        exponent = float(np.polyfit(np.log2(dims), np.log2(values), 1)[0])
        out.append(AttentionScale(module, dims, values, exponent, abs(exponent + 1.0) <= SCALE_EXPONENT_TOLERANCE))
    return out


def worst_failures(fails: list[Slope], per: str = "quantity") -> list[Slope]:
    """The worst failing slope per (module, quantity) — or per module — worst first."""
    worst: dict[tuple, Slope] = {}
    for s in fails:
        key = (s.module, s.quantity) if per == "quantity" else (s.module, s.quantity == "attention_scale_exponent")
        prev = worst.get(key)
        if prev is None or s.slope is None or (prev.slope is not None and abs(s.slope) > abs(prev.slope)):
            worst[key] = s
    return sorted(worst.values(), key=lambda s: -(math.inf if s.slope is None else abs(s.slope)))


