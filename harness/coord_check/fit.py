"""Fitting a coordinate check: the slope of log2 magnitude against log2 width, per module, quantity and step (one fit
per seed, then their mean and its standard error), the attention scale's exponent in the head dim, and the exponent
of each decaying tensor's per-step weight decay in width; pass/fail against the threshold."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SCALE_EXPONENT_TOLERANCE = 0.05  # μP: attention scale ∝ D^-1 where the head dim D grows with width
DECAY_EXPONENT_TOLERANCE = 0.05  # μP: a weight's per-step decay lr·λ is the same at every width


@dataclass
class Record:
    width: int
    step: int
    module: str
    mean_abs: float
    mean_abs_delta: float
    mean_abs_update: float | None = None  # mean |ΔW·x|: the module's own weight update through its own forward
    seed: int = 0
    size: int | None = None  # the output's last dim: a width-sized output must keep Θ(1) coordinates at init


@dataclass
class Slope:
    module: str
    step: int
    # mean_abs (step 0: initialisation) | mean_abs_delta | mean_abs_update | attention_scale_exponent (d log2 scale /
    # d log2 head dim) | decay_exponent (d log2 lr·λ / d log2 width)
    quantity: str
    slope: float | None  # mean over seeds of log2 magnitude per width doubling; None when not measurable
    passed: bool
    # both: |slope| ≤ t; growth: slope ≤ t; exact: an exponent read exactly; frozen: never trains; info: shown, not judged
    bound: str = "both"
    stderr: float | None = None  # standard error of the mean over seeds (None with one seed)
    seeds: list[float | None] = field(default_factory=list)  # the slope at each seed


@dataclass
class AttentionScale:
    """The scale a module passed to F.scaled_dot_product_attention at each width, against its head dim."""

    module: str
    head_dims: list[int]
    scales: list[float]
    exponent: float | None  # d log2(scale) / d log2(head dim); None when the head dim does not change with width
    passed: bool


QUANTITY_TEXT = {"mean_abs": "mean|x| at init", "mean_abs_delta": "mean|Δx|", "mean_abs_update": "mean|ΔW·x|"}


def describe_failure(s: Slope, axis: str = "width") -> str:
    if s.quantity == "attention_scale_exponent":
        return (f"{s.module}: attention scale ∝ D^{s.slope:+.2f} where the head dim D grows with width: "
                "μP needs 1/D (exponent −1)")
    if s.quantity == "decay_exponent":
        return (f"{s.module}: weight decay per step lr·λ ∝ width^{s.slope:+.2f}: μP keeps it the same at every width "
                "(scale λ by width/base width where lr is divided by it, as MuAdamW does)")
    if s.bound == "frozen":
        return f"{s.module}: its weight never changes (ΔW·x = 0 at every width): frozen, no gradient or LR 0"
    what = QUANTITY_TEXT.get(s.quantity, s.quantity)
    if s.slope is None or not math.isfinite(s.slope):
        return f"{s.module}: {what} is not finite at step {s.step} (the model blew up)"
    verb = "grows" if s.slope > 0 else "shrinks"
    at = "" if s.quantity == "mean_abs" else f" at step {s.step}"
    spread = f" (±{s.stderr:.2f} over {len(s.seeds)} seeds)" if s.stderr is not None else ""
    return f"{s.module}: {what} {verb} 2^{s.slope:+.2f} per {axis} doubling{at}{spread}"


def _slope(widths: list[int], values: np.ndarray) -> float | None:
    if not np.isfinite(values).all():
        return math.nan
    if (values <= 0).any():  # exactly zero at some width (zero init, or not trained): no slope to judge
        return None
    return float(np.polyfit(np.log2(widths), np.log2(values), 1)[0])


def growth_only(quantity: str, width_sized: bool) -> bool:
    """Outputs whose size does not grow with width (logits, attention logits) are sums over width whose incoherent
    parts vanish as width^-1/2, which μP allows: a 1/width readout makes logits ∝ width^-1/2 at init, and their change
    approaches its Θ(1) limit from above at small widths (−0.34 measured on a correct model). Their init and change are
    judged on growth only; a readout's own update ΔW·x, and everything width-sized, on both sides."""
    return quantity in ("mean_abs", "mean_abs_delta") and not width_sized


def fit_slopes(records: list[Record], threshold: float, two_sided: bool = False) -> list[Slope]:
    """Per module, quantity and step, the least-squares slope of log2 magnitude against log2 width at each seed; the
    verdict is on their mean, which must lie within ±threshold (≤ threshold for growth-only quantities; every
    quantity is two-sided with `two_sided`, as in the depth check, where no output grows with the scale).

    Step 0 judges initialisation (mean|x|); steps ≥ 1 judge the change (mean|Δx|) and each weight layer's own update
    (mean|ΔW·x|). A weight layer whose update is exactly zero at every width and step fails as frozen."""
    series: dict[tuple[str, str, int], dict[int, dict[int, float]]] = {}
    sizes: dict[str, set] = {}
    order: list[str] = []
    for r in records:
        if r.module not in order:
            order.append(r.module)
        sizes.setdefault(r.module, set()).add(r.size)
        if r.step == 0:
            series.setdefault((r.module, "mean_abs", 0), {}).setdefault(r.seed, {})[r.width] = r.mean_abs
            continue
        series.setdefault((r.module, "mean_abs_delta", r.step), {}).setdefault(r.seed, {})[r.width] = r.mean_abs_delta
        if r.mean_abs_update is not None:
            series.setdefault((r.module, "mean_abs_update", r.step), {}).setdefault(r.seed, {})[r.width] = \
                r.mean_abs_update
    rank = {"mean_abs": 0, "mean_abs_delta": 1, "mean_abs_update": 2}
    slopes = []
    never_trained = {m for (m, q, _), by_seed in series.items() if q == "mean_abs_update"}
    for (module, quantity, step), by_seed in series.items():
        if quantity == "mean_abs_update" and any(v > 0 for per in by_seed.values() for v in per.values()):
            never_trained.discard(module)
    for (module, quantity, step), by_seed in sorted(
            series.items(), key=lambda kv: (order.index(kv[0][0]), rank[kv[0][1]], kv[0][2])):
        if quantity == "mean_abs_update" and module in never_trained:
            continue
        per_seed = []
        for seed in sorted(by_seed):
            values = by_seed[seed]
            widths = sorted(values)
            if len(widths) >= 2:
                per_seed.append(_slope(widths, np.array([values[w] for w in widths], dtype=float)))
        if not per_seed:
            continue
        width_sized = len(sizes.get(module, ())) > 1
        bound = "growth" if growth_only(quantity, width_sized) and not two_sided else "both"
        measured = [s for s in per_seed if s is not None]
        if any(not math.isfinite(s) for s in measured):
            slopes.append(Slope(module, step, quantity, None, False, bound, None, per_seed))
            continue
        if not measured:  # exactly zero somewhere at every seed (e.g. a zero-initialised readout's logits at init)
            slopes.append(Slope(module, step, quantity, None, True, bound, None, per_seed))
            continue
        mean = float(np.mean(measured))
        stderr = float(np.std(measured, ddof=1) / math.sqrt(len(measured))) if len(measured) > 1 else None
        ok = mean <= threshold if bound == "growth" else abs(mean) <= threshold
        slopes.append(Slope(module, step, quantity, mean, ok, bound, stderr, per_seed))
    for module in sorted(never_trained, key=order.index):
        slopes.append(Slope(module, 0, "mean_abs_update", None, False, "frozen"))
    return slopes


def _exponent(xs, ys) -> float:
    return float(np.polyfit(np.log2(xs), np.log2(ys), 1)[0])


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
        exponent = _exponent(dims, values)
        out.append(AttentionScale(module, dims, values, exponent, abs(exponent + 1.0) <= SCALE_EXPONENT_TOLERANCE))
    return out


def fit_decay(decay: dict[int, dict[str, float]]) -> list[Slope]:
    """From {width: {parameter: lr·λ}} (the per-step decoupled decay of every decaying tensor): μP keeps lr·λ the same
    at every width. One finding per module whose decay exponent is off (the worst of its tensors), read exactly."""
    per_module: dict[str, float] = {}
    names = sorted({n for per in decay.values() for n in per})
    for name in names:
        points = [(w, decay[w][name]) for w in sorted(decay) if name in decay[w]]
        if len(points) < 2 or all(v == points[0][1] for _, v in points):
            continue
        if any(v <= 0 for _, v in points):
            exponent = math.inf
        else:
            exponent = _exponent([w for w, _ in points], [v for _, v in points])
        module = name.rsplit(".", 1)[0] if "." in name else name
        if abs(exponent) > abs(per_module.get(module, 0.0)):
            per_module[module] = exponent
    return [Slope(m, 0, "decay_exponent", e, abs(e) <= DECAY_EXPONENT_TOLERANCE, "exact") for m, e in
            per_module.items()]


def worst_failures(fails: list[Slope], per: str = "quantity") -> list[Slope]:
    """The worst failing slope per (module, quantity) — or per module — worst first."""
    worst: dict[tuple, Slope] = {}
    for s in fails:
        exact = s.quantity in ("attention_scale_exponent", "decay_exponent")
        key = (s.module, s.quantity) if per == "quantity" else (s.module, exact and s.quantity)
        prev = worst.get(key)
        if prev is None or s.slope is None or (prev.slope is not None and abs(s.slope) > abs(prev.slope)):
            worst[key] = s
    return sorted(worst.values(), key=lambda s: -(math.inf if s.slope is None else abs(s.slope)))
