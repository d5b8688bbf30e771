"""A μP transformer written the way a team would write its own: plain PyTorch, its own init, its own optimizer groups.

Point mupbench at it:

    mupbench coord-check --model examples/my_model.py:build
    mupbench run --model examples/my_model.py:build --suite smoke --out runs/my-model

`build(width)` is the factory: token ids (B, T) → logits (B, T, 256). The number of heads is fixed and the head dim
grows with width (D = width / HEADS), the case where μP's 1/D attention scale differs from SP's 1/sqrt(D) by more than
a constant. μP as in Lingle's μ-transfer study, with BASE_WIDTH the width whose learning rate is tuned:

    tensor                 init std        Adam learning rate
    embedding              1               lr
    q, k, v, o, MLP        fan_in^-1/2     lr · BASE_WIDTH / width
    readout                1 / width       lr · BASE_WIDTH / width
    attention logits       q·k / D

mupbench reads the learning rates from `mup_parameter_groups(lr)` (the same function this model's training script
would hand to torch.optim.AdamW) and trusts `_init_weights` unless run with --reinit.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = 256
DEPTH = 2
HEADS = 4
BASE_WIDTH = 64


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def rope(x: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding over the last dim of (B, H, T, D)."""
    t, d = x.shape[-2], x.shape[-1]
    inv_freq = 10000.0 ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angles = torch.outer(torch.arange(t, device=x.device, dtype=torch.float32), inv_freq).repeat(1, 2)
    half = d // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * angles.cos().to(x.dtype) + rotated * angles.sin().to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.head_dim = width // HEADS
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, m = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, HEADS, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True, scale=1.0 / self.head_dim)
        return self.proj(y.transpose(1, 2).reshape(b, t, m))


class FeedForward(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.up = nn.Linear(width, 4 * width, bias=False)
        self.down = nn.Linear(4 * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.relu(self.up(x)))


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.attn = SelfAttention(width)
        self.mlp = FeedForward(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(rms_norm(x))
        return x + self.mlp(rms_norm(x))


class MyModel(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.tok_emb = nn.Embedding(VOCAB, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(DEPTH))
        self.lm_head = nn.Linear(width, VOCAB, bias=False)
        self.apply(self._init_weights)
        nn.init.normal_(self.lm_head.weight, std=1.0 / width)  # μP readout: 1/width

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=module.in_features**-0.5)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=1.0)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(tokens)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(rms_norm(x))

    def mup_parameter_groups(self, lr: float) -> list[dict]:
        """AdamW groups for base learning rate `lr`: hidden matrices and the readout at lr / width multiplier."""
        width_mult = self.width / BASE_WIDTH
        embedding = [self.tok_emb.weight]
        hidden = [p for name, p in self.named_parameters() if name.startswith("blocks.")]
        readout = [self.lm_head.weight]
        return [
            {"params": embedding, "lr": lr},
            {"params": hidden, "lr": lr / width_mult},
            {"params": readout, "lr": lr / width_mult},
        ]


def build(width: int) -> MyModel:
    """The factory mupbench calls: a MyModel of this width."""
    if width % (2 * HEADS):
        raise ValueError(f"width {width} must be a multiple of {2 * HEADS} ({HEADS} heads of an even head dim)")
    return MyModel(width)
