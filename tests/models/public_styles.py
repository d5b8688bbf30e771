"""μP GPTs in the styles of public implementations, written here from their descriptions (no code copied):

* `nanogpt_mup` — EleutherAI nanoGPT-mup: m_d = width / base; embeddings tied to the readout; logits multiplied by
  α_out / m_d (out of place); hidden init σ/√m_d, c_proj σ/√(2·L·m_d), embeddings σ; attention 1/d_head with a fixed
  number of heads (the head dim grows); learned positions, LayerNorm with biases, GELU; hidden LR / m_d, the rest α.
* `cerebras` — Cerebras-GPT's μP: untied embeddings times a multiplier of 10, logits scaled by 1/m, attention 1/d
  with a fixed head dim (the heads grow), hidden LR / m; init σ_base/√m for hidden matrices, σ_base for embeddings.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB, DEPTH, BASE_WIDTH, BLOCK = 256, 2, 64, 64


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.c_attn = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)
        self.c_fc = nn.Linear(width, 4 * width)
        self.mlp_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, m = x.shape
        d = m // self.heads
        q, k, v = self.c_attn(self.ln_1(x)).view(b, t, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / d)
        x = x + self.c_proj(y.transpose(1, 2).reshape(b, t, m))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, width: int, heads: int, tied: bool, input_mult: float, output_mult: float, std: float,
                 block: int = BLOCK):
        super().__init__()
        self.block = block
        self.width_mult = width / BASE_WIDTH
        self.input_mult, self.output_mult = input_mult, output_mult
        self.wte = nn.Embedding(VOCAB, width)
        self.wpe = nn.Embedding(block, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(DEPTH))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, VOCAB, bias=False)
        if tied:
            self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif name.startswith(("wte", "wpe")):
                nn.init.normal_(p, std=std)
            elif name.endswith("c_proj.weight") or name.endswith("mlp_proj.weight"):
                nn.init.normal_(p, std=std / math.sqrt(2 * DEPTH * self.width_mult))
            elif p.ndim == 2:
                nn.init.normal_(p, std=std / math.sqrt(self.width_mult))
        if not tied:
            nn.init.normal_(self.lm_head.weight, std=std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        assert idx.shape[1] <= self.block, f"Cannot forward sequence of length {idx.shape[1]}, block size is {self.block}"
        x = self.wte(idx) * self.input_mult + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x)) * (self.output_mult / self.width_mult)

    def mup_parameter_groups(self, lr: float) -> list[dict]:
        hidden = [p for n, p in self.named_parameters() if n.startswith("blocks.") and p.ndim == 2]
        other = [p for n, p in self.named_parameters() if not (n.startswith("blocks.") and p.ndim == 2)]
        return [{"params": hidden, "lr": lr / self.width_mult}, {"params": other, "lr": lr}]


def nanogpt_mup(width: int) -> GPT:
    return GPT(width, heads=4, tied=True, input_mult=1.0, output_mult=1.0, std=0.02)


def cerebras(width: int) -> GPT:
    return GPT(width, heads=max(1, width // 32), tied=False, input_mult=10.0, output_mult=1.0, std=0.08)


def nanogpt_mup_block32(width: int) -> GPT:
    """With a block size of 32, shorter than a default batch of many tools: needs --seq-len ≤ 32."""
    print(f"building a nanoGPT-style model of width {width}")  # chatty factories must not corrupt --json output
    return GPT(width, heads=4, tied=True, input_mult=1.0, output_mult=1.0, std=0.02, block=32)
