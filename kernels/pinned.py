"""The pinned attention configurations: key (see kernels/configs.py `key`) → forward and backward config.

Nothing here is timed yet. The sm90 entries are predicted choices (`source` says so) among the candidates that compile
for sm_90 without spilling and use wgmma (checked offline with the runtime's specialisation, see kernels/configs.py),
for the shapes the presets run: head dims 64 (gpu-small) and 128 (paper), bf16, causal, one KV head per query head or multi-query with 2–16 query
heads per KV head. `mupbench bench tune` on an H100 times every candidate per key and writes a JSON file in this
layout (`{"attention": {key: entry}}`); review it, then replace the dict below with its "attention" entries (or point
MUPBENCH_KERNEL_CONFIGS at the file to use it without committing).
"""
from __future__ import annotations

_PREDICTED = "predicted (untuned): replace with `mupbench bench tune` results from an H100"


def _entry(fwd: tuple[int, int, int, int], bwd: tuple[int, int, int, int, int]) -> dict:
    return {
        "fwd": dict(zip(("block_m", "block_n", "warps", "stages"), fwd)),
        "bwd": dict(zip(("block", "block_m1", "block_n2", "warps", "stages"), bwd)),
        "source": _PREDICTED,
    }


ATTENTION: dict[str, dict] = {
    # d64: forward 128×64 (120 registers, 2 CTAs per SM), backward 128-row blocks stepping 32 (190 registers)
    **{f"sm90/d64/bfloat16/causal/g{g}": _entry((128, 64, 8, 3), (128, 32, 32, 8, 2)) for g in (1, 2, 4, 8, 16)},
    # d128: forward 128×64 (200 registers, PV as wgmma m64n128), backward 64-row blocks stepping 32 (217 registers)
    **{f"sm90/d128/bfloat16/causal/g{g}": _entry((128, 64, 8, 3), (64, 32, 32, 8, 2)) for g in (1, 2, 4, 8, 16)},
}
