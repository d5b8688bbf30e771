"""One training run: build the model and optimizer, train on the sweep's batches, evaluate, return a result record.

The whole loop is here. bf16 autocast on CUDA, float32 elsewhere; on a CPU a given spec (and thread count) gives the
same losses bit for bit. A run whose loss turns non-finite or climbs well above its starting loss stops and comes
back as `diverged` with final loss inf — a result for the analysis, never an exception.

A run is a `Trainer` stepped from `Trainer.step` to the end, so it can also start part-way: a WSD run of a duration
sweep starts from the checkpoint a longer run of its family left at this run's decay start (mupbench.branches) and
trains only its decay, with the same result as from scratch. Its record's `tokens_per_s` and `train_seconds` cover
the steps it trained itself; `resumed_from_step` says where it started.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mupbench import kernels
from mupbench import branches, byo
from mupbench.config import RunSpec
from mupbench.model import build_model, count_parameters
from mupbench.optim import build_optimizer, schedule, set_lr

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


@dataclass
class Trainer:
    """A run in progress: the model, the optimizer, and everything else a step changes (the step count, the divergence
    detector's first and smoothed loss, the curve so far) — exactly what a checkpoint holds."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    step: int = 0
    first_loss: float | None = None
    smoothed: float | None = None
    curve: list[tuple[int, str, float]] = field(default_factory=list)

    @classmethod
    def fresh(cls, spec: RunSpec, device: torch.device) -> Trainer:
        """Step 0: the model initialised from the run's seed and its optimizer."""
        tc = spec.train
        torch.manual_seed(tc.seed)
        groups = None
        if byo.is_byo(spec):  # a user's model (`--model`): built by its factory, LRs from its hook or inferred roles
            prepared = byo.build_for_spec(spec)
            model = prepared.model.to(device)
            groups = prepared.groups(tc.lr, tc.weight_decay, tc.weight_decay_mode,
                                     weight_decay_tensors=tc.weight_decay_tensors, optimizer=tc.optimizer, eps=tc.eps,
                                     eps_scaling=tc.eps_scaling)
        else:
            model = build_model(spec.model).to(device)
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
        return cls(model, opt)

    @classmethod
    def start(cls, spec: RunSpec, device: torch.device, checkpoints: Path | None) -> Trainer:
        """A fresh trainer, or with `checkpoints` the latest checkpoint of the run's WSD family it can start from
        (mupbench.branches); a checkpoint that will not load into this run is passed over."""
        trainer = cls.fresh(spec, device)
        if checkpoints is None:
            return trainer
        for state in branches.candidates(checkpoints, spec, map_location=device):
            try:
                trainer.restore(state, device)
                return trainer
            except (RuntimeError, ValueError, KeyError, TypeError, AttributeError):
                trainer = cls.fresh(spec, device)  # what a failed restore left half-loaded is not used
        return trainer

    def state(self, device: torch.device) -> dict:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "first_loss": self.first_loss,
            "smoothed": self.smoothed,
            "curve": list(self.curve),
            "rng": {"cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
        }

    def restore(self, state: dict, device: torch.device) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["cpu"].cpu())
        if device.type == "cuda" and state["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), device)
        self.step, self.first_loss, self.smoothed = int(state["step"]), state["first_loss"], state["smoothed"]
        self.curve = [tuple(c) for c in state["curve"]]

    def observe(self, loss: float) -> bool:
        """Count a step that ended at training loss `loss`; True when the run has diverged."""
        self.step += 1
        self.first_loss = loss if self.first_loss is None else self.first_loss
        self.smoothed = loss if self.smoothed is None else 0.9 * self.smoothed + 0.1 * loss
        self.curve.append((self.step - 1, "train", loss))
        return not math.isfinite(loss) or self.smoothed > DIVERGENCE_FACTOR * self.first_loss


def train(spec: RunSpec, tokens: np.ndarray, device: str | torch.device = "cpu", on_step=None,
          checkpoints: Path | None = None) -> dict:
    """Train `spec` on `tokens` (a prepared corpus) and return the result record the store keeps.

    `checkpoints` (a sweep's checkpoint directory) lets a WSD run start from its family's checkpoint at or before its
    decay start and leave checkpoints at the branch points it passes (mupbench.branches); the result is the same.
    `resumed_from_step` in the record says where it started (0: from scratch)."""
    from mupbench.data import Batches

    device = torch.device(device)
    tc = spec.train
    kernels.reset_record()  # the record says what this run ran, not what earlier runs in this worker did
    run = Trainer.start(spec, device, checkpoints)
    resumed_from = run.step
    save_at = set(branches.save_points(spec, resumed_from)) if checkpoints is not None else set()
    batches = Batches(tokens, tc.batch_size, tc.seq_len, tc.steps, tc.eval_tokens, (tc.data_seed, tc.seed))
    model, opt = run.model, run.opt

    status = "ok"
    start = time.perf_counter()
    for step in range(run.step, tc.steps):
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

        if run.observe(loss.item()):
            status = "diverged"
            break
        if run.step % tc.eval_every == 0 and run.step < tc.steps:
            run.curve.append((run.step, "val", evaluate(model, batches, device)))
        if run.step in save_at:  # a branch point: the state a shorter run of the family starts from
            branches.save(checkpoints, spec, run.state(device))
        if on_step is not None:
            on_step(run.step, tc.steps)

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_seconds = time.perf_counter() - start
    final = math.inf
    if status == "ok":
        final = evaluate(model, batches, device)
        run.curve.append((run.step, "val", final))
        if not math.isfinite(final):
            status, final = "diverged", math.inf
    return {
        "status": status,
        "final_val_loss": final,
        "steps_done": run.step,
        "resumed_from_step": resumed_from,
        "tokens_per_s": (run.step - resumed_from) * tc.tokens_per_step / max(train_seconds, 1e-9),
        "train_seconds": train_seconds,
        "n_params": count_parameters(model),
        "kernels": _kernels_used(device),
        "curve": run.curve,
    }


def _kernels_used(device: torch.device) -> str:
    """What the store's `kernels` column says: the backend, and the Triton launch configs when any ran (JSON)."""
    configs = kernels.configs_used()
    return kernels.backend(device) + (" " + json.dumps(configs, sort_keys=True) if configs else "")
