"""Training-duration sweeps for the price of their longest run: WSD runs of one family branch off a shared trunk.

A sweep over training length T (× learning rate) under the WSD schedule repeats most of its work: warmup, then the
peak rate until the decay start, then a linear decay over the last `decay_fraction` of the steps. Up to its decay
start a run's schedule does not depend on T, and neither do its batches (the window of step t is row t of a generator
drawn once per (data seed, seed): the first rows are the same for any number of steps). So two runs that differ only
in `train.steps` — a *family* — train identically up to the shorter one's decay start, and a run of length T can
start from the state a longer run of its family had there and train only its decay. On a CPU the result is bit for
bit the run trained from scratch (same thread count); on a GPU it is the same run up to the usual bf16 noise.

    family_key(spec)   the hash of the spec's identity without `train.steps`; None where runs do not branch (other
                       schedules, a user's own model)
    branch_point(spec) the last step a run shares with every longer run of its family (its decay start), or None
    annotate(specs)    gives every WSD spec extra["wsd_branch_points"]: the branch points of its planned family, the
                       steps at which a run passing through them leaves a checkpoint (extra is a label, not in the hash)
    branch_order(specs), trunks(specs)
                       train each family's longest run first and the others only after it has finished

Checkpoints live in `<sweep dir>/checkpoints/<family key>/step_<s>.pt`: the state after s steps (model, optimizer,
the divergence detector's first and smoothed loss, the loss curve so far, torch's RNG state). They are written with
`atomic_write`, so a killed process leaves the old file or the new one; a file that cannot be read or does not
match its name is skipped (the run starts from an earlier one, or from scratch) and removed so a later run can write
it again. A trunk that diverges leaves no checkpoint past the step where it diverged; the shorter runs then train
from the last checkpoint there is, and come out as they would from scratch. `remove_finished` deletes a family's
checkpoints once every run of it the sweep planned is stored as finished (ok or diverged; a failed run may be retried
with --retry-failed and keeps them).

Every run stays an ordinary run: its own hash, its own row and curve in the store. Only training time changes: a
family of durations T_1 < … < T_n costs the longest run's stable phase plus the sum of the decays, not the sum of T_i.

A user's own model (`--model`) does not branch: it may keep state that its state_dict does not hold (plain
attributes, non-persistent buffers), so the harness cannot promise that a restored model is the one it saved.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from mupbench.config import BYO_SPEC_KEY, TRAINER_SPEC_KEY, RunSpec, wsd_decay_start

CHECKPOINT_DIR = "checkpoints"  # under the sweep directory
BRANCH_POINTS = "wsd_branch_points"  # the spec.extra key annotate() sets
CHECKPOINT_FORMAT = 1
_STEP_FILE = re.compile(r"step_(\d+)\.pt")
_KEYS = ("format", "family", "step", "model", "optimizer", "first_loss", "smoothed", "curve", "rng")


def family_key(spec: RunSpec) -> str | None:
    """The hash of everything that changes `spec`'s result except its length; None for a run that does not branch
    (a schedule other than WSD, a user's own model, a user's own trainer)."""
    if spec.train.schedule != "wsd" or {BYO_SPEC_KEY, TRAINER_SPEC_KEY} & set(spec.extra or {}):
        return None
    identity = spec.identity()
    identity["train"] = {k: v for k, v in identity["train"].items() if k != "steps"}
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def branch_point(spec: RunSpec) -> int | None:
    """The step up to which `spec` trains exactly like every longer run of its family (its decay start): where it can
    start from their checkpoint. None when it has no family, or when that step is 0 or the end (warmup = steps)."""
    if family_key(spec) is None:
        return None
    tc = spec.train
    start = wsd_decay_start(tc.steps, tc.warmup, tc.decay_fraction)
    return start if 0 < start < tc.steps else None


def families(specs: Iterable[RunSpec]) -> dict[str, list[RunSpec]]:
    """family key → its specs (one per run hash, shortest first); specs without a family are left out."""
    out: dict[str, dict[str, RunSpec]] = {}
    for s in specs:
        key = family_key(s)
        if key is not None:
            out.setdefault(key, {})[s.run_hash] = s
    return {k: sorted(v.values(), key=lambda s: s.train.steps) for k, v in out.items()}


def annotate(specs: list[RunSpec]) -> list[RunSpec]:
    """`specs` with extra["wsd_branch_points"] on every WSD spec: the sorted branch points of its family within `specs`
    (the checkpoints a run of the family leaves as it passes them). Other specs are returned unchanged."""
    points = {key: sorted({p for s in members if (p := branch_point(s)) is not None})
              for key, members in families(specs).items()}
    out = []
    for s in specs:
        key = family_key(s)
        out.append(s if key is None else dataclasses.replace(s, extra={**s.extra, BRANCH_POINTS: points[key]}))
    return out


def trunks(specs: Iterable[RunSpec]) -> dict[str, str]:
    """run hash → the hash of the run it should wait for: the longest run of its family among `specs` (the trunk,
    whose checkpoints it starts from). The trunks themselves and runs without a family are not keys."""
    out = {}
    for members in families(specs).values():
        trunk = members[-1].run_hash
        out.update((s.run_hash, trunk) for s in members[:-1] if branch_point(s) is not None)
    return out


def branch_order(specs: list[RunSpec]) -> list[RunSpec]:
    """`specs` with every run that waits for a trunk (trunks()) moved after all the others, order otherwise kept."""
    waiting = trunks(specs)
    return [s for s in specs if s.run_hash not in waiting] + [s for s in specs if s.run_hash in waiting]


# --- checkpoint files ----------------------------------------------------------------------------------------------
def checkpoint_path(root: Path, key: str, step: int) -> Path:
    return Path(root) / key / f"step_{step}.pt"


def save_points(spec: RunSpec, after: int) -> list[int]:
    """The branch points (extra["wsd_branch_points"]) `spec` passes in its stable phase after step `after`: where it
    leaves a checkpoint unless one is there already."""
    end = branch_point(spec)
    if end is None:
        return []
    return [p for p in spec.extra.get(BRANCH_POINTS, ()) if after < p <= end]


def save(root: Path, spec: RunSpec, state: dict) -> bool:
    """Write `state` (the trainer's, with "step") as the checkpoint of `spec`'s family at that step, atomically.

    Returns False when one is there already or the disk refused it: a checkpoint only saves time, so a failed write
    is never a failed run."""
    from mupbench.store import atomic_write

    key = family_key(spec)
    path = checkpoint_path(root, key, state["step"])
    if path.exists():
        return False
    payload = {**state, "format": CHECKPOINT_FORMAT, "family": key}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, writer=lambda f: torch.save(payload, f))
    except OSError:
        return False
    return True


def candidates(root: Path, spec: RunSpec, map_location=None) -> Iterator[dict]:
    """The intact checkpoints `spec` can start from (its family's, at steps up to its branch point), latest first.

    A file that cannot be read, or whose content does not match its name, is skipped and removed."""
    end = branch_point(spec)
    if end is None:
        return
    key = family_key(spec)
    folder = Path(root) / key
    try:
        names = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_FILE.fullmatch(p.name))]
    except OSError:  # no checkpoints yet
        return
    for step, path in sorted(names, reverse=True):
        if step > end:
            continue
        state = _load(path, map_location)
        if state is None or state["family"] != key or state["step"] != step or state["format"] != CHECKPOINT_FORMAT:
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        yield state


def _load(path: Path, map_location) -> dict | None:
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # noqa: BLE001 — truncated, overwritten, not a torch file: a dozen exception types
        return None
    return state if isinstance(state, dict) and all(k in state for k in _KEYS) else None


def remove_finished(sweep_dir: Path, planned: Iterable[RunSpec], finished: set[str]) -> list[str]:
    """Delete the checkpoints of every family whose planned runs are all in `finished` (run hashes stored as ok or
    diverged); returns the family keys removed. The checkpoint directory goes too once it is empty."""
    root = Path(sweep_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    removed = []
    for key, members in families(planned).items():
        folder = root / key
        if folder.is_dir() and all(s.run_hash in finished for s in members):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(key)
    with contextlib.suppress(OSError):
        root.rmdir()  # only when empty
    return removed
