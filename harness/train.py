"""One training run: build the model and optimizer, train on the sweep's batches, evaluate, return a result record.

The whole loop is here. bf16 autocast on CUDA, float32 elsewhere; on a CPU a given spec (and thread count) gives the
same losses bit for bit. A run whose loss turns non-finite or climbs well above its starting loss stops and comes
back as `diverged` with final loss inf — a result for the analysis, never an exception.
"""
from __future__ import annotations

import contextlib
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

import kernels
from harness import byo
from harness.config import RunSpec
from harness.model import build_model, count_parameters
from harness.optim import build_optimizer, schedule, set_lr

# A run has diverged once its smoothed training loss exceeds this multiple of its first loss.
DIVERGENCE_FACTOR = 1.5


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model, batches, device) -> float:
    model.eval()
    total, count = 0.0, 0
    for x, y in batches.val_batches():
        with _autocast(device):
            logits = model(x.to(device))
        total += F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten(), reduction="sum").item()
        count += y.numel()
    model.train()
    return total / count


def train(spec: RunSpec, tokens: np.ndarray, device: str | torch.device = "cpu", on_step=None) -> dict:
    """Train `spec` on `tokens` (a prepared corpus) and return the result record the store keeps."""
    from harness.data import Batches

    device = torch.device(device)
    cfg, tc = spec.model, spec.train
    kernels.reset_record()  # the record says what this run ran, not what earlier runs in this worker did
    torch.manual_seed(tc.seed)
    groups = None
    if byo.is_byo(spec):  # a user's model (`--model`): built by its factory, LRs from its hook or inferred roles
        prepared = byo.build_for_spec(spec)
        model = prepared.model.to(device)
        groups = prepared.groups(tc.lr, tc.weight_decay, tc.weight_decay_mode,
                                 weight_decay_tensors=tc.weight_decay_tensors, optimizer=tc.optimizer, eps=tc.eps,
                                 eps_scaling=tc.eps_scaling)
    else:
        model = build_model(cfg).to(device)
    opt = build_optimizer(
        model,
        lr=tc.lr,
        optimizer=tc.optimizer,
        weight_decay=tc.weight_decay,
        weight_decay_mode=tc.weight_decay_mode,
        betas=(tc.beta1, tc.beta2),
        eps=tc.eps,
        groups=groups,
        weight_decay_tensors=tc.weight_decay_tensors,
        eps_scaling=tc.eps_scaling,
    )
    batches = Batches(tokens, tc.batch_size, tc.seq_len, tc.steps, tc.eval_tokens, (tc.data_seed, tc.seed))

    curve: list[tuple[int, str, float]] = []
    status, first_loss, smoothed = "ok", None, None
    start = time.perf_counter()
    steps_done = 0
    for step in range(tc.steps):
        set_lr(opt, schedule(step, tc.steps, tc.warmup, tc.schedule, tc.final_lr_fraction, tc.decay_fraction))
        x, y = batches.train_batch(step)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device):
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        steps_done = step + 1

        value = loss.item()
        first_loss = value if first_loss is None else first_loss
        smoothed = value if smoothed is None else 0.9 * smoothed + 0.1 * value
        curve.append((step, "train", value))
        if not math.isfinite(value) or smoothed > DIVERGENCE_FACTOR * first_loss:
            status = "diverged"
            break
        if steps_done % tc.eval_every == 0 and steps_done < tc.steps:
            curve.append((steps_done, "val", evaluate(model, batches, device)))
        if on_step is not None:
            on_step(steps_done, tc.steps)

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_seconds = time.perf_counter() - start
    final = math.inf
    if status == "ok":
        final = evaluate(model, batches, device)
        curve.append((steps_done, "val", final))
        if not math.isfinite(final):
            status, final = "diverged", math.inf
    return {
        "status": status,
        "final_val_loss": final,
        "steps_done": steps_done,
        "tokens_per_s": steps_done * tc.tokens_per_step / max(train_seconds, 1e-9),
        "train_seconds": train_seconds,
        "n_params": count_parameters(model),
        "kernels": _kernels_used(device),
        "curve": curve,
    }


def _kernels_used(device: torch.device) -> str:
    """What the store's `kernels` column says: the backend, and the Triton launch configs when any ran (JSON)."""
    configs = kernels.configs_used()
    return kernels.backend(device) + (" " + json.dumps(configs, sort_keys=True) if configs else "")
