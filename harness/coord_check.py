"""Coordinate check: do activation updates keep their size as the model gets wider, after a few large-LR steps?

The fast first line of the gate (microsoft/mup's check, made pass/fail). For each width (default 64…1024), seed torch,
build the model, and take `steps` AdamW steps (default 3) at a deliberately large base LR (2^-5) on one fixed batch
(8 × 64 bytes of text, the same at every width). Before each step, record for every module's output x_t (embedding,
projections, each block's attention and MLP, norms, the logits — forward hooks on every module) mean|x_t| and
mean|x_t − x_0|, and for nn.Linear / nn.Embedding modules mean|(W_t − W_0)·x_t|, the part of the change the layer's
own weight update makes. Every F.scaled_dot_product_attention call is intercepted too: its logits q·k·scale are
recorded as "<module>.attn_logits", and the scale it was given is kept.

Per module, quantity and step t ≥ 1 the check fits the slope of log2 magnitude against log2 width (log2 magnitude per
width doubling). μP keeps updates Θ(1): slope ≈ 0. Getting one μP rule wrong makes them grow — an LR of α instead of
α/wm on a matrix or the readout makes that layer's update ∝ width, slope ≈ +1 — so the check passes when

    mean|Δx|  (every module)                      |slope| ≤ threshold      (both directions: growth and vanishing)
    mean|ΔW·x| (weight layers), attention logits  slope ≤ threshold        (growth only; see below)
    attention scale, where the head dim D grows   scale ∝ D^e with |e + 1| ≤ 0.05  (μP: 1/D)

Growth only, because at widths a CPU can run the μP expectation for these is a *negative* slope that tends to 0: with
a batch whose rank is comparable to the width, part of a layer's own update (and of q·k/D) is incoherent, ∝ width^-1/2.
Measured on the example model, attention logits' Δ slopes run from −0.9 to −0.1 under μP.

The attention scale is read, not inferred from magnitudes: with the head dim growing (heads fixed), 1/√D instead of 1/D
multiplies the logits' update by √D — +0.5 per doubling on top of μP's negative finite-width slope, which at these
widths lands at +0.30…+0.34, inside the noise of the magnitudes. Reading the scale passed to attention tells 1/D from
1/√D exactly, at any width. Where the head dim is fixed (the built-in model, Lingle's D = 128) the two differ by a
constant factor, which no width scaling can show: the check reports it and passes (the LR sweep is the test there).
Attention computed by hand (softmax(q kᵀ · s)) is not intercepted; call F.scaled_dot_product_attention to be checked.

Threshold 0.5 — a magnitude may change by at most 2^0.5 ≈ 1.41× per width doubling. Measured here (3 steps,
lr 2^-5, the default batch), the worst slope over every module, step and quantity of a run:

    model                                   widths       seeds  worst slope (quantity)
    μP built-in (depth 2, head dim 16)      64…1024      0,1,2  0.11  0.34  0.18   (logits ΔW·x at step 1 is the noisiest)
    μP examples/my_model.py                 64…1024      0,1,2  0.09  0.12  0.28
                                            64…512       0…3    0.17  0.15  0.36  0.22
                                            32…256       0      0.18
    SP built-in                             64…1024      0,1,2  2.16  2.20  2.32   (blocks.0.attn.o)
    SP examples/my_model.py                 64…1024      0,1,2  2.10  2.21  2.01
    (a) hidden LR α, not α/wm               64…1024      0,1,2  2.29  2.21  2.34   (attn.proj, mlp.down)
    (b) readout SP init and LR α            64…1024      0,1,2  0.89  1.07  1.10   (logits ΔW·x at step 1)
                                            64…512       0…3    1.09  1.12  1.11  1.08
    (c) attention 1/√D, head dim ∝ width    64…1024      0,1,2  scale exponent −0.50 (magnitudes: 0.31…0.34)

Every μP run stays below 0.36 and every planted LR/init mistake is above 0.89: 0.5 leaves a margin on both sides
(microsoft/mup's own test allows a 1.2× ratio over a 4× width change, |slope| ≈ 0.13; allenai OLMo-core asserts
|slope| ≤ 0.05 on magnitudes averaged over 10 seeds — single-seed slopes at CPU widths are noisier than that). μP's
Δx slopes alone stay within ±0.22. SP is the counterexample: a check under SP is expected to fail, and one that passes
says the settings cannot tell SP from μP (exit 1). Runs on one CPU thread by default (`--threads`), so results are
identical on any machine with the same torch.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.errors import UserError
from harness.tables import text_table

SCHEMA = "mupbench.coord_check/1"
FILE_NAME = "coord_check.json"
DEFAULT_WIDTHS = (64, 128, 256, 512, 1024)
DEFAULT_STEPS = 3
DEFAULT_LR = 2.0**-5
THRESHOLD = 0.5  # see the module docstring for the evidence
BATCH_SIZE, SEQ_LEN = 8, 64
# The built-in model's shape for the check: the cpu-tiny preset's (depth 2, head dim 16), base width = smallest width.
BUILTIN_DEPTH, BUILTIN_HEAD_DIM = 2, 16
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


@dataclass
class Check:
    label: str
    parameterization: str
    widths: list[int]
    steps: list[int]
    threshold: float
    lr: float
    records: list[Record] = field(default_factory=list)
    slopes: list[Slope] = field(default_factory=list)
    attention: list[AttentionScale] = field(default_factory=list)
    seconds: float = 0.0
    lr_source: str = ""

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.slopes) and all(a.passed for a in self.attention)

    @property
    def expected(self) -> str:
        """μP should pass; SP is the counterexample that shows the check can tell them apart."""
        return "fail" if self.parameterization == "sp" else "pass"

    @property
    def as_expected(self) -> bool:
        return self.passed == (self.expected == "pass")

    def failures(self) -> list[Slope]:
        return [s for s in self.slopes if not s.passed]

    def to_json(self) -> dict:
        return {
            "label": self.label, "parameterization": self.parameterization, "widths": self.widths,
            "steps": self.steps, "threshold": self.threshold, "passed": self.passed, "expected": self.expected,
            "lr": self.lr, "lr_source": self.lr_source, "seconds": round(self.seconds, 3),
            "records": [{k: _finite(v) for k, v in asdict(r).items()} for r in self.records],
            "slopes": [{k: _finite(v) for k, v in asdict(s).items()} for s in self.slopes],
            "attention": [{k: _finite(v) for k, v in asdict(a).items()} for a in self.attention],
        }


def _finite(x):
    return None if isinstance(x, float) and not math.isfinite(x) else x


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


# --- recording ------------------------------------------------------------------------------------------------------
def _first_tensor(output):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, torch.Tensor)), None)
    return None


class Recorder:
    """Forward hooks on every module (the model's own output is "logits"), plus the attention logits of every
    F.scaled_dot_product_attention call, named after the module that made it ("<module>.attn_logits").

    For nn.Linear and nn.Embedding modules it also records (W_t − W_0)·x_t, the part of the output change that the
    module's own weight update makes (W_0 is snapshotted when the recorder is made, before any step).
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.outputs: dict[str, torch.Tensor] = {}
        self.updates: dict[str, torch.Tensor] = {}
        self.scales: dict[str, tuple[int, float]] = {}
        self._stack: list[str] = []
        self._handles = []
        self._initial: dict[int, torch.Tensor] = {}
        for name, module in model.named_modules():
            label = name or "logits"
            if isinstance(module, (nn.Linear, nn.Embedding)) and module.weight is not None:
                self._initial[id(module)] = module.weight.detach().clone()
            self._handles.append(module.register_forward_pre_hook(self._enter(label)))
            self._handles.append(module.register_forward_hook(self._leave(label)))

    def _enter(self, label):
        def hook(module, args):
            self._stack.append(label)

        return hook

    def _leave(self, label):
        def hook(module, args, output):
            self._stack.pop()
            tensor = _first_tensor(output)
            if tensor is None or not tensor.is_floating_point():
                return
            key = self._store(self.outputs, label, tensor)
            w0 = self._initial.get(id(module))
            if w0 is not None and args and isinstance(args[0], torch.Tensor):
                with torch.no_grad():
                    delta_w = module.weight.detach() - w0
                    if isinstance(module, nn.Embedding):
                        update = F.embedding(args[0], delta_w)
                    else:
                        update = F.linear(args[0].detach().to(delta_w.dtype), delta_w)
                self.updates[key] = update.float()

        return hook

    @staticmethod
    def _store(into: dict, label: str, tensor: torch.Tensor) -> str:
        key, n = label, 2
        while key in into:  # a module called twice in one forward
            key, n = f"{label}#{n}", n + 1
        into[key] = tensor.detach().float()
        return key

    def attention(self, original):
        def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
            out = original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                           scale=scale, **kwargs)
            with torch.no_grad():
                q, k = query.float(), key.float()
                if k.shape[-3] != q.shape[-3] and q.shape[-3] % k.shape[-3] == 0:
                    k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
                effective = scale if scale is not None else q.shape[-1] ** -0.5
                logits = (q @ k.transpose(-2, -1)) * effective
                if is_causal:
                    t, s = logits.shape[-2:]
                    logits = logits[..., torch.ones(t, s, dtype=torch.bool, device=logits.device).tril()]
                elif isinstance(attn_mask, torch.Tensor) and attn_mask.dtype == torch.bool:
                    logits = logits[attn_mask.expand_as(logits)]
                owner = self._stack[-1] if self._stack else "attention"
                name = self._store(self.outputs, f"{owner}.attn_logits" if owner != "logits" else "attn_logits", logits)
                self.scales[name] = (int(q.shape[-1]), float(effective))
            return out

        return sdpa

    @contextlib.contextmanager
    def active(self):
        original = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = self.attention(original)
        try:
            yield
        finally:
            F.scaled_dot_product_attention = original

    def forward(self, tokens: torch.Tensor):
        """(logits, outputs, updates): every module's output and, for weight layers, (W_t − W_0)·x."""
        self.outputs, self.updates, self._stack = {}, {}, []
        with self.active():
            logits = self.model(tokens)
        outputs, updates = self.outputs, self.updates
        root = outputs.get("logits")
        if root is not None:  # the module that produced the logits (the readout) is reported once, as "logits"
            same = [k for k, v in outputs.items()
                    if k != "logits" and v.data_ptr() == root.data_ptr() and v.shape == root.shape]
            for k in same:
                if k in updates:
                    updates["logits"] = updates.pop(k)
                del outputs[k]
        return logits, outputs, updates

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def fixed_batch(vocab_size: int, batch_size: int = BATCH_SIZE, seq_len: int = SEQ_LEN, seed: int = 0) -> torch.Tensor:
    """One batch of byte-level text (this package's model source), the same for every width; ids mod vocab."""
    from harness import model as model_module

    data = np.frombuffer(Path(model_module.__file__).read_bytes(), dtype=np.uint8).astype(np.int64)
    need = seq_len + 1
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(data) - need, size=batch_size)
    return torch.from_numpy(np.stack([data[s : s + need] for s in starts]) % vocab_size)


def measure(model: nn.Module, groups: list[dict], batch: torch.Tensor, steps: int, lr: float):
    """Rows (step, module, mean|x|, mean|x − x_0|, mean|ΔW·x| or None) for steps 0..steps — forward on `batch`,
    record, then an AdamW step — and the attention scales seen ({module: (head dim, scale)})."""
    from harness.optim import build_optimizer

    opt = build_optimizer(model, lr, "adamw", groups=groups)
    recorder = Recorder(model)
    x, y = batch[:, :-1], batch[:, 1:]
    initial: dict[str, torch.Tensor] = {}
    rows = []
    model.eval()  # no dropout: every step sees the same function of the same batch
    try:
        for step in range(steps + 1):
            logits, outputs, updates = recorder.forward(x)
            if step == 0:
                initial = outputs
            for name, value in outputs.items():
                start = initial.get(name)
                delta = (value - start).abs().mean().item() if start is not None and start.shape == value.shape else math.nan
                update = updates[name].abs().mean().item() if name in updates else None
                rows.append((step, name, value.abs().mean().item(), delta, update))
            if step == steps:
                break
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        recorder.close()
    return rows, dict(recorder.scales)


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


# --- one check ------------------------------------------------------------------------------------------------------
def _builtin(parameterization: str, base_width: int):
    from harness.config import ModelConfig
    from harness.model import build_model
    from harness.optim import parameter_groups

    def make(width: int, lr: float):
        cfg = ModelConfig(width=width, depth=BUILTIN_DEPTH, head_dim=BUILTIN_HEAD_DIM, base_width=base_width,
                          parameterization=parameterization)
        model = build_model(cfg)
        return model, parameter_groups(model, lr, 0.0, "coupled")

    label = f"built-in transformer (depth {BUILTIN_DEPTH}, head dim {BUILTIN_HEAD_DIM})"
    return make, label, f"the {parameterization} table"


def _byo(source, parameterization: str, base_width: int, widths: list[int], reinit: bool):
    from harness import byo

    factory = byo.load_factory(source)
    infos = byo.infer(factory, widths[0], byo.partner_width(widths[0], widths), source.label)
    lr_source = []

    def make(width: int, lr: float):
        prepared = byo.prepare(factory, width, base_width, parameterization, reinit, source.label, infos=infos)
        byo.check_forward(prepared.model, source.label)
        lr_source[:] = [f"{prepared.lr_source}; tensors: {byo.describe(infos)}"]
        return prepared.model, prepared.groups(lr)

    return make, source.label + (" --reinit" if reinit else ""), lr_source


def run_check(parameterization: str = "mup", widths=DEFAULT_WIDTHS, steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR,
              threshold: float = THRESHOLD, source=None, reinit: bool = False, seed: int = 0,
              base_width: int | None = None) -> Check:
    """The coordinate check of one parameterization on the built-in model, or on a user's model (`source`)."""
    widths = sorted(widths)
    base_width = base_width or widths[0]
    if source is None:
        make, label, lr_source = _builtin(parameterization, base_width)
    else:
        make, label, lr_source = _byo(source, parameterization, base_width, widths, reinit)
    check = Check(f"{label} · {parameterization}", parameterization, widths, list(range(steps + 1)), threshold, lr)
    start = time.perf_counter()
    batch, scales = None, {}
    for width in widths:
        torch.manual_seed(seed)
        model, groups = make(width, lr)
        if batch is None:
            with torch.no_grad():
                vocab = model(torch.zeros(1, 2, dtype=torch.long)).shape[-1]
            batch = fixed_batch(vocab, seed=seed)
        rows, scales[width] = measure(model, groups, batch, steps, lr)
        for step, module, mean_abs, delta, update in rows:
            check.records.append(Record(width, step, module, mean_abs, delta, update))
    check.seconds = time.perf_counter() - start
    check.lr_source = lr_source if isinstance(lr_source, str) else (lr_source[0] if lr_source else "")
    check.slopes = fit_slopes(check.records, threshold)
    check.attention = fit_attention_scales(scales)
    check.slopes += [Slope(a.module, 0, "attention_scale_exponent", a.exponent, a.passed, "exact")
                     for a in check.attention if a.exponent is not None]
    return check


def document(checks: list[Check]) -> dict:
    return {"schema": SCHEMA, "checks": [c.to_json() for c in checks]}


def write(path: str | Path, checks: list[Check]) -> Path:
    path = Path(path)
    path.write_text(json.dumps(document(checks), indent=1, allow_nan=False) + "\n")
    return path


# --- printing -------------------------------------------------------------------------------------------------------
def _fmt_slope(s: Slope | None) -> str:
    if s is None or (s.slope is None and s.passed):
        return "–"
    text = "nan" if s.slope is None else f"{s.slope:+.2f}"
    return text if s.passed else text + "!"


def table(check: Check) -> str:
    """One row per module: the slope of log2 mean|Δx| vs log2 width at each step, the worst slope of its own update
    mean|ΔW·x| (weight layers), and whether it passed. '!' marks a slope over the threshold."""
    steps = [s for s in check.steps if s >= 1]
    delta: dict[str, dict[int, Slope]] = {}
    update: dict[str, list[Slope]] = {}
    scale: dict[str, Slope] = {}
    for s in check.slopes:
        if s.quantity == "attention_scale_exponent":
            scale[s.module] = s
        elif s.quantity == "mean_abs_update":
            update.setdefault(s.module, []).append(s)
        else:
            delta.setdefault(s.module, {})[s.step] = s
    out = []
    for module in dict.fromkeys([*delta, *update]):
        by_step, own = delta.get(module, {}), update.get(module, [])
        worst_own = max(own, key=lambda s: math.inf if s.slope is None else s.slope, default=None)
        ok = all(s.passed for s in [*by_step.values(), *own]) and (module not in scale or scale[module].passed)
        notes = (["growth only"] if growth_only(module, "mean_abs_delta") else []) + (
            [f"scale ∝ D^{scale[module].slope:+.2f}" + ("" if scale[module].passed else "!")] if module in scale else [])
        out.append([module + (f" ({', '.join(notes)})" if notes else ""),
                    *[_fmt_slope(by_step.get(t)) for t in steps], _fmt_slope(worst_own), "ok" if ok else "FAIL"])
    return text_table(["module", *[f"Δx step {t}" for t in steps], "ΔW·x max", ""], out)


def report(check: Check) -> str:
    verdict = "PASS" if check.passed else "FAIL"
    note = ""
    if check.expected == "fail":
        note = ("  (expected: SP is the counterexample)" if not check.passed else
                "  ← unexpected: SP should fail; at these widths and LR the check cannot tell μP from SP (raise --lr)")
    lines = [
        f"{check.label}: {verdict}{note}",
        f"  widths {'/'.join(map(str, check.widths))}, {len(check.steps) - 1} AdamW steps at lr {check.lr:g} "
        f"(LRs from {check.lr_source}); slopes are log2 magnitude per width doubling, allowed within "
        f"±{check.threshold:g} (growth-only rows and ΔW·x: ≤ {check.threshold:g}); {check.seconds:.1f}s",
        table(check),
    ]
    problems = [describe_failure(s) for s in worst_failures(check.failures(), per="module")]
    if problems:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        more = len(problems) - len(shown)
        lines.append(f"  {len(problems)} module(s) drift, worst first:")
        lines += [f"    {p}" for p in shown] + ([f"    … and {more} more (the table has them all)"] if more else [])
    return "\n".join(lines)


MAX_PROBLEMS_SHOWN = 8


def worst_failures(fails: list[Slope], per: str = "quantity") -> list[Slope]:
    """The worst failing slope per (module, quantity) — or per module — worst first."""
    worst: dict[tuple, Slope] = {}
    for s in fails:
        key = (s.module, s.quantity) if per == "quantity" else (s.module, s.quantity == "attention_scale_exponent")
        prev = worst.get(key)
        if prev is None or s.slope is None or (prev.slope is not None and abs(s.slope) > abs(prev.slope)):
            worst[key] = s
    return sorted(worst.values(), key=lambda s: -(math.inf if s.slope is None else abs(s.slope)))


# --- CLI ------------------------------------------------------------------------------------------------------------
def add_parser(sub) -> None:
    p = sub.add_parser("coord-check", help="coordinate check: do activation updates keep their size as width grows?")
    p.add_argument("--parameterization", default="mup", help="mup | sp | both (default mup)")
    p.add_argument("--widths", default=",".join(map(str, DEFAULT_WIDTHS)),
                   help=f"comma-separated widths (default {','.join(map(str, DEFAULT_WIDTHS))})")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"AdamW steps on one batch, 1-10 (default {DEFAULT_STEPS})")
    p.add_argument("--lr", default=None, help="base learning rate, e.g. 2^-5 or 0.03 (default 2^-5: deliberately large)")
    p.add_argument("--threshold", type=float, default=THRESHOLD,
                   help=f"largest allowed |slope| of log2 mean|Δx| per width doubling (default {THRESHOLD})")
    p.add_argument("--base-width", type=int, default=None, help="width whose LR is α (default the smallest width)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the same numbers on every machine, no oversubscription)")
    p.add_argument("--model", default=None, metavar="FILE.py:FACTORY",
                   help="check your own model: path/to/file.py:factory or package.module:factory")
    p.add_argument("--reinit", action="store_true",
                   help="with --model: initialise by the parameterization table instead of trusting the model's init")
    p.add_argument("--out", default=None, help="directory to write coord_check.json into (e.g. a sweep directory)")
    p.add_argument("--json", action="store_true", help="print the coord_check.json document instead of tables")
    p.set_defaults(func=cmd_coord_check)


def cmd_coord_check(args) -> int:
    from harness.cli import _learning_rate, _parse_list, _positive_int

    params = {"mup": ["mup"], "sp": ["sp"], "both": ["mup", "sp"]}.get(args.parameterization)
    if params is None:
        raise UserError(f"--parameterization {args.parameterization!r} is not one of: mup, sp, both")
    widths = sorted(set(_parse_list(args.widths, "--widths", _positive_int)))
    if len(widths) < 3:
        raise UserError(f"--widths needs at least three different widths to fit a slope, got {widths}")
    if not 1 <= args.steps <= 10:
        raise UserError(f"--steps must be between 1 and 10, got {args.steps}")
    lr = DEFAULT_LR if args.lr is None else _learning_rate(args.lr, "--lr")
    if not (math.isfinite(args.threshold) and args.threshold > 0):
        raise UserError(f"--threshold must be > 0, got {args.threshold}")
    if args.reinit and not args.model:
        raise UserError("--reinit applies only with --model")
    if args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    source = None
    if args.model:
        from harness import byo

        source = byo.resolve(args.model)
    torch.set_num_threads(args.threads)
    checks = [run_check(p, widths, args.steps, lr, args.threshold, source, args.reinit, args.seed, args.base_width)
              for p in params]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write(out / FILE_NAME, checks)
    if args.json:
        print(json.dumps(document(checks), indent=1, allow_nan=False))
    else:
        print("\n\n".join(report(c) for c in checks))
        if out is not None:
            print(f"\nwrote {out / FILE_NAME}")
    return 0 if all(c.as_expected for c in checks) else 1
