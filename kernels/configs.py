"""Launch configurations of the Triton kernels: pinned per GPU, never autotuned while training, and recorded.

A seeded run must pick the same block sizes in every process (block sizes change the accumulation order), so the
attention kernels read their configuration from a table pinned per

    (GPU architecture, padded head dim, dtype, causal, GQA group size)

(`kernels/pinned.py`, chosen offline by `mupbench bench tune`, see kernels/tune.py). A key missing from the table
gets the first candidate that fits its head dim (a documented default, `source: "default"`). `MUPBENCH_KERNEL_CONFIGS`
names a JSON file in the tune command's format that replaces the pinned table (to try a fresh tuning before committing
it). RMSNorm's configuration is a function of the width (and the SM count for the backward's program count), so it
needs no table.

Every launch records its configuration; `used()` returns them (for a run record), `clear_used()` forgets them.
`forced(fwd=..., bwd=...)` overrides the table inside a `with` block: the tests use it to run every candidate, the
tuner to time them.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass

import torch

INTERPRET = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on")
TABLE_ENV = "MUPBENCH_KERNEL_CONFIGS"


@dataclass(frozen=True)
class FwdConfig:
    """Attention forward: BLOCK_M query rows per program, BLOCK_N keys per step."""

    block_m: int
    block_n: int
    warps: int
    stages: int
    max_head_dim: int = 128  # largest padded head dim this config compiles for without spilling (sm_90, ptxas)

    @property
    def name(self) -> str:
        return f"fwd-m{self.block_m}-n{self.block_n}-w{self.warps}-s{self.stages}"


@dataclass(frozen=True)
class BwdConfig:
    """Attention backward, one launch: each program owns BLOCK key rows (dK, dV; stepping over queries BLOCK_M1 at a
    time) and BLOCK query rows (dQ; stepping over keys BLOCK_N2 at a time)."""

    block: int
    block_m1: int
    block_n2: int
    warps: int
    stages: int
    max_head_dim: int = 128

    @property
    def name(self) -> str:
        return f"bwd-b{self.block}-m{self.block_m1}-n{self.block_n2}-w{self.warps}-s{self.stages}"


# Candidates, best guesses first, for Hopper-class GPUs. max_head_dim is the largest padded head dim at which the
# config compiled for sm_90 without spilling registers (`mupbench bench tune --compile-only`, Triton 3.9, bf16, causal;
# registers / spill bytes at d64 and d128 in the comments; "-" not compiled). Configs at 16 warps were all capped at
# 128 registers and spilled; every backward at 4 warps spilled.
FWD_CANDIDATES = (
    FwdConfig(128, 64, 8, 3, max_head_dim=64),  # d64 237/0, d128 255/408
    FwdConfig(64, 32, 8, 2),  # d128 254/0
    FwdConfig(64, 32, 4, 3, max_head_dim=64),  # d64 222/0, d128 255/320
    FwdConfig(128, 32, 8, 2, max_head_dim=64),  # d128 255/8
    FwdConfig(64, 64, 8, 2, max_head_dim=64),  # d128 255/72
)
BWD_CANDIDATES = (
    BwdConfig(64, 16, 16, 8, 2, max_head_dim=64),  # d64 157/0, d128 255/120
    BwdConfig(32, 32, 16, 8, 2),  # d128 255/0
    BwdConfig(64, 16, 16, 8, 3, max_head_dim=64),  # d64 158/0
    BwdConfig(32, 16, 16, 8, 2, max_head_dim=64),  # d64 186/0, d128 254/48
    BwdConfig(64, 16, 32, 8, 2, max_head_dim=64),  # d64 189/0
)
# Under TRITON_INTERPRET=1 (CPU, numpy): small blocks that do not line up, so tests cover partial and diagonal blocks.
INTERPRET_FWD = FwdConfig(32, 16, 4, 1)
INTERPRET_BWD = BwdConfig(32, 16, 16, 4, 1)


def arch(device: torch.device) -> str:
    """'sm90' for an H100, 'interpreter' under TRITON_INTERPRET, 'cpu' elsewhere."""
    if INTERPRET:
        return "interpreter"
    if device.type != "cuda" or not torch.cuda.is_available():
        return device.type
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm{major}{minor}"


def key(arch_name: str, head_dim_pad: int, dtype: torch.dtype, causal: bool, group: int) -> str:
    dtype_name = str(dtype).removeprefix("torch.")
    return f"{arch_name}/d{head_dim_pad}/{dtype_name}/{'causal' if causal else 'full'}/g{group}"


def _load_table() -> dict:
    path = os.environ.get(TABLE_ENV)
    if path:
        with open(path) as f:
            return json.load(f)["attention"]
    from mupbench.kernels.pinned import ATTENTION

    return ATTENTION


def _from_entry(entry: dict) -> tuple[FwdConfig, BwdConfig]:
    return FwdConfig(**entry["fwd"]), BwdConfig(**entry["bwd"])


def default(head_dim_pad: int) -> tuple[FwdConfig, BwdConfig]:
    fwd = next(c for c in FWD_CANDIDATES if head_dim_pad <= c.max_head_dim)
    bwd = next(c for c in BWD_CANDIDATES if head_dim_pad <= c.max_head_dim)
    return fwd, bwd


_FORCED: list[tuple[FwdConfig | None, BwdConfig | None]] = []
_USED: dict[str, dict] = {}


@contextlib.contextmanager
def forced(fwd: FwdConfig | None = None, bwd: BwdConfig | None = None):
    """Use these configs (instead of the table) for attention launches inside the block."""
    _FORCED.append((fwd, bwd))
    try:
        yield
    finally:
        _FORCED.pop()


def attention(device: torch.device, head_dim_pad: int, dtype: torch.dtype, causal: bool,
              group: int) -> tuple[FwdConfig, BwdConfig, str]:
    """(forward config, backward config, where they came from) for one attention call; records them."""
    name = arch(device)
    k = key(name, head_dim_pad, dtype, causal, group)
    if name == "interpreter":
        fwd, bwd, source = INTERPRET_FWD, INTERPRET_BWD, "interpreter"
    else:
        entry = _load_table().get(k)
        if entry is not None:
            (fwd, bwd), source = _from_entry(entry), entry.get("source", "pinned")
        else:
            (fwd, bwd), source = default(head_dim_pad), "default"
    if _FORCED and _FORCED[-1] != (None, None):
        f, b = _FORCED[-1]
        fwd, bwd, source = f or fwd, b or bwd, "forced"
    _USED[f"attention {k}"] = {"fwd": asdict(fwd), "bwd": asdict(bwd), "source": source}
    return fwd, bwd, source


def note(what: str, config: dict) -> None:
    """Record a configuration that is not from the table (RMSNorm's, a function of the width)."""
    _USED[what] = config


def used() -> dict[str, dict]:
    """Every configuration launched since `clear_used()`: '<op> <key>' → config (and its source)."""
    return dict(_USED)


def clear_used() -> None:
    _USED.clear()
