"""Launch configurations of the Triton kernels: pinned per GPU, never autotuned while training, and recorded.

A seeded run must pick the same block sizes in every process (block sizes change the accumulation order), so the
attention kernels read their configuration from a table pinned per

    (GPU architecture, padded head dim, dtype, causal, GQA group size)

(`kernels/pinned.py`, chosen offline by `mupbench bench tune`, see kernels/tune.py). A key missing from the table
gets the first candidate that fits its head dim (a documented default, `source: "default"`). `MUPBENCH_KERNEL_CONFIGS`
names a JSON file in the tune command's format that replaces the pinned table (to try a fresh tuning before committing
it). The attention operators take the chosen configuration as arguments (kernels/flash_attention.py
`launch_configs`), read once while torch.compile traces, so a compiled graph and its cache entry carry it. RMSNorm's
configuration is a function of the width (and the SM count for the backward's program count), so it needs no table.

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

    @property
    def launch(self) -> tuple[int, int, int, int]:
        """What the forward operator takes: (BLOCK_M, BLOCK_N, num_warps, num_stages)."""
        return self.block_m, self.block_n, self.warps, self.stages


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

    @property
    def launch(self) -> tuple[int, int, int, int, int]:
        """What the backward operator takes: (BLOCK, BLOCK_M1, BLOCK_N2, num_warps, num_stages)."""
        return self.block, self.block_m1, self.block_n2, self.warps, self.stages


# Candidates, best guesses first, for Hopper-class GPUs: tiles wide enough for wgmma (64-row warpgroup MMAs with
# N ≥ 32) and 8 warps (two warpgroups). max_head_dim is the largest padded head dim at which the config compiles for
# sm_90 without spilling, with the runtime's specialisation (`mupbench bench tune --compile-only`; kernels/tune.py
# specialises the operators' real launch arguments through Triton's own JIT binder). The comments give registers /
# spill bytes / shared memory (KB) at d64 and d128 from that check (Triton 3.9, bf16, causal, T 1024, 16 heads);
# Triton 3.6 (the device image's) spills the same ones and no others (docs/kernels.md has both builds' numbers).
FWD_CANDIDATES = (
    FwdConfig(128, 64, 8, 3),  # d64 120/0/64 wgmma m64n64; d128 200/0/128 m64n64 + m64n128
    FwdConfig(128, 128, 8, 2),  # d64 185/0/80; d128 255/0/160 (at the register cap)
    FwdConfig(128, 64, 8, 2),  # d64 122/0/48; d128 199/0/96
    FwdConfig(128, 32, 8, 3),  # d64 111/0/40; d128 141/0/80
    FwdConfig(64, 64, 4, 3),  # d64 128/0/56; d128 172/0/112
    FwdConfig(64, 32, 8, 2),  # d64 80/0/24; d128 115/0/48 (the v2 d128 pin: QKᵀ as m64n16)
)
BWD_CANDIDATES = (
    BwdConfig(128, 32, 32, 8, 2),  # d64 190/0/48 wgmma m64n32 + m64n64; d128 248/0/96
    BwdConfig(64, 32, 32, 8, 2),  # d64 133/0/32; d128 217/0/64 wgmma m64n16 + m64n64
    BwdConfig(128, 64, 64, 8, 2, max_head_dim=64),  # d64 249/0/64; d128 255/328 spilled
    BwdConfig(128, 32, 64, 8, 2, max_head_dim=64),  # d64 192/0/64; d128 255/24 spilled
    BwdConfig(64, 32, 32, 8, 3),  # d64 128/0/41; d128 208/0/81
    BwdConfig(64, 16, 16, 8, 2),  # d64 114/0/24 (the v2 d64 pin: mostly m64n8); d128 174/0/48
    BwdConfig(32, 32, 16, 8, 2),  # d64 151/0/18; d128 150/0/34 (the v2 d128 pin: mma.sync only, no wgmma)
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
