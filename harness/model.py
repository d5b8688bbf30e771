"""The decoder-only transformer of Lingle's μ-transfer study, with every ablation switch as a config field.

    x = embed(tokens) [→ RMSNorm]
    repeat depth times:  x += b·Attn(RMSNorm(x));  x += b·MLP(RMSNorm(x))     (b: the depth rule's branch multiplier)
    logits = unembed(RMSNorm(x))

Every weight-bearing module carries a `role` (see parameterization.py); initialisation and the optimizer read it, so
the model itself holds no parameterization logic. RMSNorm and attention go through the `kernels` API.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mupbench import kernels
from mupbench.config import ModelConfig
from mupbench.parameterization import depth_factor, in_block, init_std, rule


class RoleLinear(nn.Linear):
    def __init__(self, fan_in: int, fan_out: int, role: str, bias: bool):
        super().__init__(fan_in, fan_out, bias=bias)
        self.role = role


class RoleEmbedding(nn.Embedding):
    role = "embedding"


class RMSNorm(nn.Module):
    """RMSNorm with no gain (the baseline), one learnable scalar gain, or a per-channel gain vector."""

    role = "gain"

    def __init__(self, width: int, gains: str, eps: float):
        super().__init__()
        self.eps = eps
        shape = {"none": None, "scalar": (1,), "vector": (width,)}[gains]
        self.weight = nn.Parameter(torch.ones(shape)) if shape else None

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        """The normalised x; with a residual, (normalised x + residual, x + residual): one fused kernel on CUDA."""
        if residual is None:
            return kernels.rms_norm(x, self.weight, self.eps)
        return kernels.add_rms_norm(x, residual, self.weight, self.eps)


def rope_tables(seq_len: int, head_dim: int, base: float, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.heads, cfg.n_kv_heads, cfg.head_dim
        self.rope_base = cfg.rope_base
        # μP scales logits by 1/D: with a fixed head dim this is a constant, but it keeps q·k O(1) as q and k align.
        # attention_logit_mult multiplies it (sp_attention_scale: √128, the paper's SP/μP ratio at any head dim).
        scale = 1.0 / cfg.head_dim if cfg.attention_scale == "inv_d" else cfg.head_dim**-0.5
        self.scale = scale * cfg.attention_logit_mult
        bias = cfg.projection_biases
        m, d = cfg.width, cfg.head_dim
        self.q = RoleLinear(m, self.heads * d, "attn_q", bias)
        self.k = RoleLinear(m, self.kv_heads * d, "attn_k", bias)
        self.v = RoleLinear(m, self.kv_heads * d, "attn_v", bias)
        self.o = RoleLinear(self.heads * d, m, "attn_o", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rope_tables(t, self.head_dim, self.rope_base, x.device, q.dtype)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = kernels.attention(q, k, v, self.scale, causal=True)
        return self.o(y.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.activation = cfg.activation
        f, bias = cfg.ff_width, cfg.projection_biases
        self.fc_in = RoleLinear(cfg.width, 2 * f if cfg.activation == "swiglu" else f, "ff_in", bias)
        self.fc_out = RoleLinear(f, cfg.width, "ff_out", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc_in(x)
        if self.activation == "relu":
            h = F.relu(h)
        elif self.activation == "gelu":
            h = F.gelu(h)
        elif self.activation == "squared_relu":
            h = F.relu(h).square()
        else:  # swiglu: the two branches live in one matrix
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        return self.fc_out(h)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm_attn = RMSNorm(cfg.width, cfg.norm_gains, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.norm_mlp = RMSNorm(cfg.width, cfg.norm_gains, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.branch_mult = depth_factor(cfg, "branch_mult")  # 1 under the standard depth rule: no multiply at all

    def _branch(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.branch_mult == 1.0 else y * self.branch_mult

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, x = self.norm_mlp(self._branch(self.attn(self.norm_attn(x))), residual=x)
        return x + self._branch(self.mlp(h))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = RoleEmbedding(cfg.vocab_size, cfg.width)
        self.embed_norm = RMSNorm(cfg.width, cfg.norm_gains, cfg.norm_eps) if cfg.embedding_norm else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.final_norm = RMSNorm(cfg.width, cfg.norm_gains, cfg.norm_eps)
        self.unembed = RoleLinear(cfg.width, cfg.vocab_size, "unembedding", bias=cfg.unembedding_bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.final_norm(x))


def parameter_roles(model: nn.Module) -> list[tuple[str, nn.Parameter, str, int]]:
    """(name, parameter, role, fan_in) for every parameter of a model built from role-carrying modules."""
    out = []
    for module_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            role = "bias" if pname == "bias" else getattr(module, "role", None)
            if role is None:
                raise TypeError(f"parameter {module_name}.{pname} belongs to a module without a role")
            fan_in = getattr(module, "in_features", 0)
            out.append((f"{module_name}.{pname}" if module_name else pname, p, role, fan_in))
    return out


@torch.no_grad()
def init_parameters(model: Transformer) -> None:
    cfg = model.cfg
    for name, p, role, fan_in in parameter_roles(model):
        kind = rule(cfg.parameterization, role).init
        if kind == "ones":
            p.fill_(1.0)
        elif kind == "zeros":
            p.zero_()
        else:
            std = init_std(cfg, role, fan_in, in_block=in_block(name))
            p.normal_(0.0, std) if std > 0 else p.zero_()


def build_model(cfg: ModelConfig) -> Transformer:
    """A transformer initialised by `cfg.parameterization` (from torch's global RNG: seed it for repeatable inits)."""
    model = Transformer(cfg)
    init_parameters(model)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 × matrix parameters plus causal attention scores (for cost estimates)."""
    m, f, kv = cfg.width, cfg.ff_width, cfg.n_kv_heads * cfg.head_dim
    ff_in = 2 * f if cfg.activation == "swiglu" else f
    per_layer = m * m * 2 + 2 * m * kv + m * ff_in + f * m
    attn = 2 * seq_len * m  # q·k and p·v, halved for causal, ×2 for multiply-add
    return 6 * (cfg.depth * per_layer + m * cfg.vocab_size) + 3 * cfg.depth * attn
