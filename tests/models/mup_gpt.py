"""A small GPT written against microsoft/mup the way its README says: MuReadout for the logits, `set_base_shapes`
against a base and a delta model, attention scaled by 1/d, and the optimizer groups MuAdamW makes, handed to mupbench
through `mup_parameter_groups`. `build` is μP; `build_sp` is the same code with `set_base_shapes(model, None)`, which
is how mup gives standard parameterization (every width multiplier 1)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from mup import MuAdamW, MuReadout, set_base_shapes
from mup.init import normal_ as mup_normal_

VOCAB, DEPTH, HEADS, BASE_WIDTH = 256, 2, 4, 64


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.c_attn = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_out = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, m = x.shape
        d = m // HEADS
        q, k, v = self.c_attn(self.ln_1(x)).view(b, t, 3, HEADS, d).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=8.0 / d)  # μP: 1/d (8/d matches 1/√d at d=64)
        x = x + self.c_proj(y.transpose(1, 2).reshape(b, t, m))
        return x + self.c_out(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, width)
        self.wpe = nn.Embedding(64, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(DEPTH))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = MuReadout(width, VOCAB, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def mup_parameter_groups(self, lr: float) -> list[dict]:
        return MuAdamW(self.parameters(), lr=lr).param_groups


def _shaped(width: int, base) -> GPT:
    model = GPT(width)
    if base is None:
        set_base_shapes(model, None)
    else:
        set_base_shapes(model, GPT(base).to("meta"), delta=GPT(2 * base).to("meta"))
    for name, p in model.named_parameters():  # mup's recommended re-initialisation of the hidden matrices
        if p.ndim == 2 and not name.startswith(("wte", "wpe", "lm_head")):
            mup_normal_(p, std=BASE_WIDTH**-0.5)
    return model


def build(width: int) -> GPT:
    with torch.device("cpu"):
        return _shaped(width, BASE_WIDTH)


def build_sp(width: int) -> GPT:
    with torch.device("cpu"):
        return _shaped(width, None)
