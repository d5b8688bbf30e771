"""Devices and memory: the local workers a machine gives (one per GPU, or one per CPU core), this process's torch
threads and CUDA device, and whether a sweep's largest run fits one worker's memory."""
from __future__ import annotations

import os
from dataclasses import dataclass

from mupbench import byo
from mupbench.config import RunSpec
from mupbench.errors import UserError
from mupbench.trainers import is_external

def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass(frozen=True)
class WorkerPlan:
    devices: tuple[str, ...]  # one entry per worker
    threads: int  # torch threads per worker

    def describe(self) -> str:
        kinds = sorted(set(self.devices))
        return f"{len(self.devices)} worker(s) on {', '.join(kinds)}, {self.threads} thread(s) each"


def plan_workers(device: str = "auto", workers: int | None = None) -> WorkerPlan:
    """Default: one worker per GPU; on a CPU one single-threaded worker per core (faster than threads at these sizes)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but torch sees no CUDA GPU: use --device cpu")
        gpus = [device] if ":" in device else [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        n = workers or len(gpus)
        return WorkerPlan(tuple(gpus[i % len(gpus)] for i in range(n)), threads=max(1, cpu_cores() // n))
    if device != "cpu":
        raise UserError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    cores = cpu_cores()
    n = workers or cores
    return WorkerPlan(("cpu",) * n, threads=max(1, cores // n))


def use_device(device: str, threads: int) -> str:
    """Set this process's torch threads and CUDA device; returns the device's name as the store records it."""
    import torch

    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
        return torch.cuda.get_device_name(device)
    return f"cpu ({threads} thread{'s' if threads > 1 else ''})"


def machine_memory() -> int:
    """Physical memory of this machine in bytes (0 when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def memory_needed(spec: RunSpec) -> float:
    """A rough lower bound on a run's memory in bytes: fp32 weights, gradients and two optimizer moments, plus the
    activations of one step (per layer about 34·width + 5·heads·seq values per token, and the logits)."""
    cfg, tc = spec.model, spec.train
    tokens = tc.batch_size * tc.seq_len
    activations = tokens * (cfg.depth * (34 * cfg.width + 5 * cfg.heads * tc.seq_len) + 3 * cfg.vocab_size) * 4
    return 16.0 * cfg.parameter_count() + activations


def check_plan(specs: list[RunSpec], plan: WorkerPlan) -> None:
    """The checks of a resolved plan that need more than one config: the data splits into sequences of every
    spec's length, and the largest run fits the memory one worker has (UserError otherwise)."""
    from mupbench import data

    for seq_len, spec in {s.train.seq_len: s for s in specs}.items():
        data.check_split(spec.data, seq_len)
    # a user's model's size is its factory's business, a user's trainer's memory its own
    built_in = [s for s in specs if not byo.is_byo(s) and not is_external(s)]
    if not built_in:
        return
    worst = max(built_in, key=memory_needed)
    device = plan.devices[0]
    if device.startswith("cuda"):
        import torch

        have = torch.cuda.get_device_properties(torch.device(device)).total_memory / plan.devices.count(device)
    else:
        have = machine_memory() / len(plan.devices)
    need = memory_needed(worst)
    if have and need > have:
        raise UserError(f"{worst.ablation} at width {worst.model.width} needs at least {need / 2**30:.3g} GiB "
                        f"({worst.model.parameter_count():.3g} parameters), more than the {have / 2**30:.3g} GiB one "
                        f"worker has on {device}: choose smaller --widths (or fewer --workers)")
