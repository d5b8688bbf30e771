"""One coordinate check: build the model at each width, record, fit; the coord_check.json document."""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mupbench.coord_check.fit import AttentionScale, Record, Slope, fit_attention_scales, fit_decay, fit_slopes
from mupbench.coord_check.record import BATCH_SIZE, SEQ_LEN, fixed_batch, measure
from mupbench.store import atomic_write

SCHEMA = "mupbench.coord_check/2"
FILE_NAME = "coord_check.json"
DEFAULT_WIDTHS = (64, 128, 256, 512, 1024)
DEFAULT_STEPS = 3
DEFAULT_LR = 2.0**-7
DEFAULT_SEEDS = (0, 1, 2)
THRESHOLD = 0.3  # see the package docstring (harness/coord_check/__init__.py) for the evidence
# The built-in model's shape for the check: the cpu-tiny preset's (depth 2, head dim 16), base width = smallest width.
BUILTIN_DEPTH, BUILTIN_HEAD_DIM = 2, 16


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
    seeds: list[int] = field(default_factory=lambda: [0])
    batch: list[int] = field(default_factory=lambda: [BATCH_SIZE, SEQ_LEN])  # sequences × tokens of the fixed batch
    axis: str = "width"  # what `widths` holds: widths, or depths (coord_check/depth.py)
    expected_outcome: str | None = None  # "pass" | "fail" where the parameterization alone does not say
    depth_parameterization: str | None = None  # the depth rule a depth check checks

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.slopes) and all(a.passed for a in self.attention)

    @property
    def expected(self) -> str:
        """μP should pass; SP is the counterexample that shows the check can tell them apart."""
        if self.expected_outcome is not None:
            return self.expected_outcome
        return "fail" if self.parameterization == "sp" else "pass"

    @property
    def as_expected(self) -> bool:
        return self.passed == (self.expected == "pass")

    def failures(self) -> list[Slope]:
        return [s for s in self.slopes if not s.passed]

    def to_json(self) -> dict:
        return {
            "label": self.label, "parameterization": self.parameterization, "axis": self.axis, self.axis + "s": self.widths,
            "steps": self.steps, "threshold": self.threshold, "passed": self.passed, "expected": self.expected,
            "lr": self.lr, "lr_source": self.lr_source, "seconds": round(self.seconds, 3), "seeds": self.seeds,
            "batch": self.batch, "depth_parameterization": self.depth_parameterization,
            "records": [{k: _finite(v) for k, v in asdict(r).items()} for r in self.records],
            "slopes": [{k: _finite(v) for k, v in asdict(s).items()} for s in self.slopes],
            "attention": [{k: _finite(v) for k, v in asdict(a).items()} for a in self.attention],
        }


def _finite(x):
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _builtin(parameterization: str, base_width: int):
    from mupbench.config import ModelConfig
    from mupbench.model import build_model
    from mupbench.optim import parameter_groups

    def make(width: int, lr: float):
        cfg = ModelConfig(width=width, depth=BUILTIN_DEPTH, head_dim=BUILTIN_HEAD_DIM, base_width=base_width,
                          parameterization=parameterization)
        model = build_model(cfg)
        return model, parameter_groups(model, lr, 0.0, "coupled")

    label = f"built-in transformer (depth {BUILTIN_DEPTH}, head dim {BUILTIN_HEAD_DIM})"
    return make, label, f"the {parameterization} table"


def _byo(source, parameterization: str, base_width: int, widths: list[int], reinit: bool):
    from mupbench import byo

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
              threshold: float = THRESHOLD, source=None, reinit: bool = False, seeds=DEFAULT_SEEDS,
              base_width: int | None = None, batch_size: int = BATCH_SIZE, seq_len: int = SEQ_LEN) -> Check:
    """The coordinate check of one parameterization on the built-in model, or on a user's model (`source`).

    Each seed is a replica: the model's initialisation and the fixed batch both come from it."""
    widths = sorted(widths)
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    base_width = base_width or widths[0]
    if source is None:
        make, label, lr_source = _builtin(parameterization, base_width)
    else:
        make, label, lr_source = _byo(source, parameterization, base_width, widths, reinit)
    check = Check(f"{label} · {parameterization}", parameterization, widths, list(range(steps + 1)), threshold, lr,
                  seeds=seeds, batch=[batch_size, seq_len])
    start = time.perf_counter()
    scales, decay = {}, {}
    for seed in seeds:
        batch = None
        for width in widths:
            torch.manual_seed(seed)
            model, groups = make(width, lr)
            if batch is None:
                with torch.no_grad():
                    vocab = model(torch.zeros(1, 2, dtype=torch.long)).shape[-1]
                batch = fixed_batch(vocab, batch_size, seq_len, seed=seed)
            decay[width] = {name: g["lr"] * g["weight_decay"] for g in groups if g.get("weight_decay")
                            for name in g.get("names", [])}
            rows, scales[width] = measure(model, groups, batch, steps, lr, label)
            for step, module, size, mean_abs, delta, update in rows:
                check.records.append(Record(width, step, module, mean_abs, delta, update, seed, size))
    check.seconds = time.perf_counter() - start
    check.lr_source = lr_source if isinstance(lr_source, str) else (lr_source[0] if lr_source else "")
    check.slopes = fit_slopes(check.records, threshold)
    check.attention = fit_attention_scales(scales)
    check.slopes += [Slope(a.module, 0, "attention_scale_exponent", a.exponent, a.passed, "exact")
                     for a in check.attention if a.exponent is not None]
    check.slopes += fit_decay(decay)
    return check


def document(checks: list[Check]) -> dict:
    return {"schema": SCHEMA, "checks": [c.to_json() for c in checks]}


def write(path: str | Path, checks: list[Check]) -> Path:
    return atomic_write(path, json.dumps(document(checks), indent=1, allow_nan=False) + "\n")


