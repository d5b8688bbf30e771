"""A small GPT training script, written the way a team writes its own: argparse flags, its own model, its own μP
parameter groups and initialisation, its own data loading from a text file, its own loop. Nothing here imports
mupbench; mupbench sweeps it from the outside (docs/your-trainer.md):

    mupbench run --suite pr --ablation baseline --trainer-command \\
        'python examples/train_gpt.py --width {width} --lr {lr} --seed {seed} --steps {steps} \\
         --parameterization {parameterization} --data README.md --result {result}'

or through its Python entry point, `train(run)` in examples/gpt_trainer.py.

μP here (Adam; Yang et al. 2021, Tensor Programs V, Table 3), with width multiplier m = width / base_width:
hidden matrices init std 1/sqrt(fan_in) and LR lr / m; the embedding init std 1 and LR lr; the readout (unembedding)
zero-initialised, its logits multiplied by 1/m, LR lr. Under SP every tensor has LR lr, std 0.02, no multiplier.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

HEAD_DIM = 16


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.heads = width // HEAD_DIM
        self.norm1 = nn.RMSNorm(width, elementwise_affine=False)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.norm2 = nn.RMSNorm(width, elementwise_affine=False)
        self.up = nn.Linear(width, 4 * width, bias=False)
        self.down = nn.Linear(4 * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, HEAD_DIM).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class GPT(nn.Module):
    def __init__(self, width: int, depth: int, vocab: int, base_width: int, mup: bool):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.norm = nn.RMSNorm(width, elementwise_affine=False)
        self.head = nn.Linear(width, vocab, bias=False)
        self.mult = width / base_width  # the width multiplier m: every μP rule below scales with it
        self.mup = mup
        self.output_mult = 1 / self.mult if mup else 1.0
        for name, p in self.named_parameters():
            if name == "embed.weight":
                nn.init.normal_(p, std=1.0 if mup else 0.02)
            elif name == "head.weight":
                nn.init.zeros_(p) if mup else nn.init.normal_(p, std=0.02)
            else:
                nn.init.normal_(p, std=p.shape[1] ** -0.5 if mup else 0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)) * self.output_mult

    def param_groups(self, lr: float) -> list[dict]:
        """One Adam group per LR rule: under μP the hidden matrices' LR is divided by the width multiplier."""
        if not self.mup:
            return [{"params": list(self.parameters()), "lr": lr}]
        hidden = [p for n, p in self.named_parameters() if n.startswith("blocks.")]
        vector_like = [p for n, p in self.named_parameters() if not n.startswith("blocks.")]
        hidden_lr = lr / self.mult
        return [{"params": hidden, "lr": hidden_lr}, {"params": vector_like, "lr": lr}]


def load_bytes(path: str) -> torch.Tensor:
    data = Path(path).read_bytes()
    if len(data) < 4096:
        sys.exit(f"train_gpt.py: {path} holds {len(data)} bytes; give a text file of at least 4 KiB")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def batches(data: torch.Tensor, batch: int, seq: int, seed: int):
    """Random training windows from the first 90% of the data, in an order fixed by the seed."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    limit = int(len(data) * 0.9) - seq - 1
    while True:
        starts = torch.randint(0, limit, (batch,), generator=gen)
        windows = torch.stack([data[s:s + seq + 1] for s in starts.tolist()])
        yield windows[:, :-1], windows[:, 1:]


@torch.no_grad()
def evaluate(model: nn.Module, data: torch.Tensor, seq: int, windows: int = 64) -> float:
    """Mean loss on fixed windows of the last 10% of the data (the same for every run)."""
    start = int(len(data) * 0.9)
    step = max(1, (len(data) - start - seq - 1) // windows)
    xs = torch.stack([data[start + i * step: start + i * step + seq + 1] for i in range(windows)])
    logits = model(xs[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), xs[:, 1:].reshape(-1)).item()


def train_model(width: int, lr: float, seed: int, steps: int, parameterization: str, data_path: str,
                depth: int = 2, base_width: int = 32, batch: int = 32, seq: int = 32, warmup: int = 5) -> dict:
    torch.manual_seed(seed)
    data = load_bytes(data_path)
    model = GPT(width, depth, 256, base_width, mup=parameterization == "mup")
    opt = torch.optim.AdamW(model.param_groups(lr), betas=(0.9, 0.95), weight_decay=0.0)
    peaks = [g["lr"] for g in opt.param_groups]
    curve = []
    stream = batches(data, batch, seq, seed)
    for step in range(steps):
        scale = min(1.0, (step + 1) / warmup) * (1 - step / steps if step >= warmup else 1.0)
        for group, peak in zip(opt.param_groups, peaks):
            group["lr"] = peak * scale
        x, y = next(stream)
        loss = F.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1))
        if not math.isfinite(loss.item()):
            return {"final_val_loss": math.inf, "status": "diverged", "curve": curve, "steps_done": step}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % max(1, steps // 4) == 0:
            curve.append([step + 1, evaluate(model, data, seq)])
    final = evaluate(model, data, seq)
    return {"final_val_loss": final if math.isfinite(final) else math.inf, "curve": curve, "steps_done": steps}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--parameterization", choices=("mup", "sp"), default="mup")
    p.add_argument("--data", required=True, help="a text file (byte-level)")
    p.add_argument("--result", default=None, help="write the result JSON here (default: print it as the last line)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    result = train_model(args.width, args.lr, args.seed, args.steps, args.parameterization, args.data)
    text = json.dumps(result)
    if args.result:
        Path(args.result).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
