"""Running a sweep: plan into the store, skip what is finished, train the rest on local worker processes (or hand them
to another executor: harness/ray_executor.py).

Each worker owns one device (a GPU, or a share of the CPU cores), trains one run at a time and writes its result to the
store itself, so a killed parent loses only the runs in flight. Workers die with their parent (PR_SET_PDEATHSIG on
Linux). The parent shows progress: runs done, running, failed, and an ETA from a cost model calibrated as runs finish.

WSD runs that differ only in length (a duration sweep) branch off one trunk (harness.branches): the parent hands out
each family's longest run first and its shorter runs only once that one is stored, keeping the workers busy with other
runs meanwhile; the workers keep the family's checkpoints in `<sweep dir>/checkpoints/`, which the parent deletes
once the family is finished.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import json
import math
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from harness import branches, byo
from harness.config import RunSpec, axis_value, spec_axis
from harness.errors import UserError
from harness.store import Store

# A step costs this many FLOPs' worth of fixed overhead (Python, kernel launches) besides its arithmetic: measured on
# a 2-core CPU, it makes the cost model's width ratios match wall-clock ratios at the smoke scale.
STEP_OVERHEAD_FLOPS = 1e9


def run_cost(spec: RunSpec) -> float:
    from harness.model import flops_per_token

    tc = spec.train
    return tc.steps * (flops_per_token(spec.model, tc.seq_len) * tc.tokens_per_step + STEP_OVERHEAD_FLOPS)


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


def environment() -> dict:
    """Library versions and the project revision, recorded with every run."""
    import platform

    versions = {"python": platform.python_version()}
    for dist in ("mupbench", "torch", "triton", "numpy", "lion-pytorch"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"versions": versions, "git_rev": git_revision()}


def git_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if rev.returncode:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip()[:12] + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --- worker side --------------------------------------------------------------------------------------------------
_WORKER: dict = {}


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _worker_init(device: str, threads: int, sweep_dir: str, env: dict) -> None:
    from harness.data import open_tokens

    name = use_device(device, threads)
    _WORKER.update(device=device, store=Store(sweep_dir), tokens=open_tokens(Path(sweep_dir)),
                   env={**env, "device": name}, checkpoints=Path(sweep_dir) / branches.CHECKPOINT_DIR)


def use_device(device: str, threads: int) -> str:
    """Set this process's torch threads and CUDA device; returns the device's name as the store records it."""
    import torch

    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
        return torch.cuda.get_device_name(device)
    return f"cpu ({threads} thread{'s' if threads > 1 else ''})"


def train_spec(spec: RunSpec, tokens, device: str, checkpoints: Path | None = None) -> dict:
    """Train one run and return its result record, writing nothing but checkpoints (with `checkpoints`, a WSD
    family's, harness.branches): the executor stores it (Store.record).
    A crash in the run (a bug, out of memory, user code exiting) is a result too, `failed` with its traceback."""
    from harness.train import train

    start = time.perf_counter()
    try:
        result = train(spec, tokens, device, checkpoints=checkpoints)
    except (Exception, SystemExit) as e:  # a crash in one run is stored as failed; the sweep goes on
        result = {"status": "failed", "final_val_loss": None, "error": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc()}
    result["wall_s"] = time.perf_counter() - start
    return result


def _worker_run(spec_json: dict) -> tuple[str, str, float, float]:
    spec = RunSpec.from_json(spec_json)
    result = train_spec(spec, _WORKER["tokens"], _WORKER["device"], _WORKER["checkpoints"])
    _WORKER["store"].record(spec, result, _WORKER["env"])
    return spec.run_hash, result["status"], result["wall_s"], result.get("final_val_loss") or float("nan")


def _worker_main(conn, device: str, threads: int, sweep_dir: str, env: dict) -> None:
    """A worker process: start up, say "ready", then train one run per message until told to stop (None).

    What cannot be stored as a failed run (the store itself failing: disk full) goes back as ("fatal", message)."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the workers
    try:
        _worker_init(device, threads, sweep_dir, env)
        conn.send(("ready",))
        while (task := conn.recv()) is not None:
            conn.send(("done", *_worker_run(task)))
    except EOFError:  # the parent is gone
        pass
    except BaseException as e:
        conn.send(("fatal", str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"))


def death_message(exitcode: int | None) -> str:
    """Why a worker process ended in the middle of a run, for the run's stored error."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = ": out of memory?" if -exitcode == signal.SIGKILL else ""
        return f"worker killed by {name}{hint} (re-run with --retry-failed to train it again)"
    return f"worker exited with status {exitcode} during the run (re-run with --retry-failed to train it again)"


# --- parent side --------------------------------------------------------------------------------------------------
def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Runs done / running / failed and an ETA, on one refreshed line on a terminal, or a line per run otherwise."""

    def __init__(self, total: int, cost_total: float, workers: int, stream=sys.stderr, enabled: bool = True):
        self.total, self.cost_total, self.workers = total, cost_total, workers
        self.stream, self.enabled = stream, enabled
        self.tty = enabled and stream.isatty()
        self.start = time.perf_counter()
        self.done = self.cost_done = 0.0
        self.counts = {"ok": 0, "diverged": 0, "failed": 0}

    def eta(self) -> float | None:
        elapsed = time.perf_counter() - self.start
        if not self.cost_done:
            return None
        return elapsed * (self.cost_total - self.cost_done) / self.cost_done

    def update(self, spec: RunSpec, status: str, wall: float, loss: float, cost: float) -> None:
        self.done += 1
        self.cost_done += cost
        self.counts[status] = self.counts.get(status, 0) + 1
        if not self.enabled:
            return
        running = min(self.workers, self.total - int(self.done))
        eta = self.eta()
        state = (
            f"[{int(self.done)}/{self.total}] ok {self.counts['ok']} · diverged {self.counts['diverged']} · "
            f"failed {self.counts['failed']} · running {running} · elapsed {_fmt_time(time.perf_counter() - self.start)}"
            + (f" · ETA {_fmt_time(eta)}" if eta is not None and running else "")
        )
        axis = spec_axis(spec)
        where = {"width": f"width {spec.model.width}", "depth": f"depth {spec.model.depth}",
                 "tokens": f"{spec.train.steps} steps"}[axis]
        last = (f"{spec.ablation}/{spec.model.parameterization} {where} "
                f"lr 2^{spec.train.log2_lr:g}: {status}" + (f" {loss:.3f}" if status == "ok" else "") + f" ({wall:.1f}s)")
        if self.tty:
            self.stream.write(f"\r\033[K{state}  | {last}")
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(f"{state} | {last}\n")
        self.stream.flush()


class _Worker:
    """One worker process on one device, and the run it is training (None when idle)."""

    def __init__(self, ctx, device: str, threads: int, sweep_dir: Path, env: dict):
        self.device, self.spec, self.ready, self.started = device, None, False, 0.0
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, device, threads, str(sweep_dir), env),
                                name=f"mupbench-worker-{device}")
        self.proc.start()
        child.close()

    def give(self, spec: RunSpec) -> None:
        self.spec, self.started = spec, time.perf_counter()
        self.conn.send(spec.to_json())

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.proc.join(timeout=None if kill else 30)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def stopped_message(stored: int) -> str:
    return f"\nmupbench: interrupted; {stored} run(s) stored, run the same command again to resume\n"


MAX_WORKER_RESTARTS = 3  # a worker dying before it ever trained: this many fresh ones, then the sweep stops


def run_sweep(
    sweep_dir: str | Path,
    specs: list[RunSpec],
    device: str = "auto",
    workers: int | None = None,
    progress: bool = True,
    retry_failed: bool = False,
    executor=None,
) -> dict:
    """Plan `specs` into the store, train every one not stored yet (and the failed ones with `retry_failed`), and
    return counts. Resumable at any point.

    A worker process that dies in the middle of a run (the OOM killer, a segfault, user code calling os._exit) takes
    only that run with it: the run is stored as failed with the cause, a fresh worker takes the dead one's place, and
    the rest of the sweep goes on. A stored failure is a result like any other: it is not trained again unless
    `retry_failed`, so a run that kills its worker every time cannot hold a sweep open forever.

    `executor` (e.g. harness.ray_executor.RayExecutor) trains the runs instead of local worker processes: it has
    `describe()` and `train(store, specs, progress)`, which stores each result with `store.record` as it arrives.
    """
    sweep_dir = Path(sweep_dir)
    plan = executor or plan_workers(device, workers)
    store = Store(sweep_dir, create=True)
    model = byo.model_entry(specs)  # `mupbench run --model`: the specs carry the user's model
    if model is not None:
        store.set_meta(byo.STORE_META_KEY, model)
    store.add_plan(specs)
    stored = store.statuses()
    unique = {s.run_hash: s for s in branches.annotate(specs)}
    kept_failed = 0 if retry_failed else sum(stored.get(h) == "failed" for h in unique)
    todo = sorted((s for h, s in unique.items() if h not in stored or (retry_failed and stored[h] == "failed")),
                  key=run_cost, reverse=True)
    skipped = len(unique) - len(todo)
    out = sys.stderr
    if progress:
        out.write(f"mupbench: {len(unique)} runs planned, {skipped} already stored, {len(todo)} to train "
                  f"on {plan.describe()}\n")
    if kept_failed:  # said even with --quiet: a re-run that trains nothing should say why
        out.write(f"mupbench: {kept_failed} stored run(s) failed and are kept as failed: add --retry-failed to "
                  "train them again\n")
    if not todo:
        store.close()
        _remove_finished_checkpoints(sweep_dir)
        return {"planned": len(unique), "skipped": skipped, "trained": 0, **store_counts(sweep_dir)}
    if executor is not None:
        try:
            executor.train(store, todo, progress)
        finally:
            store.close()
        return {"planned": len(unique), "skipped": skipped, "trained": len(todo), **store_counts(sweep_dir)}

    n_workers = min(len(plan.devices), len(todo))
    ctx = mp.get_context("spawn")
    env = environment()
    waits_for = branches.trunks(todo)  # a shorter WSD run → its family's longest run, which it branches off
    costs = {s.run_hash: branch_cost(s) if s.run_hash in waits_for else run_cost(s) for s in todo}
    bar = Progress(len(todo), sum(costs.values()), n_workers, enabled=progress)
    pending = branches.branch_order(todo)  # the most expensive first, the runs that wait for a trunk last
    finished: set[str] = set()  # run hashes stored by this sweep, whatever their status
    pool = [_Worker(ctx, d, plan.threads, sweep_dir, env) for d in plan.devices[:n_workers]]
    restarts = 0
    try:
        while pending or any(w.spec is not None for w in pool):
            for w in pool:
                if w.ready and w.spec is None and (spec := _next_run(pending, waits_for, finished)) is not None:
                    w.give(spec)
            waiting = {w.conn: w for w in pool} | {w.proc.sentinel: w for w in pool}
            for w in dict.fromkeys(waiting[r] for r in mp_connection.wait(list(waiting))):
                message = None
                try:
                    if w.conn.poll():
                        message = w.conn.recv()
                except (EOFError, OSError):
                    pass
                if message is None:  # the worker is gone
                    w.proc.join()
                    if w.spec is None:
                        restarts += 1
                        if not w.ready and restarts > MAX_WORKER_RESTARTS:
                            raise UserError(f"worker processes on {w.device} keep dying as they start "
                                            f"({death_message(w.proc.exitcode)}): see the messages above")
                    else:
                        spec = w.spec
                        wall = time.perf_counter() - w.started
                        store.record(spec, {"status": "failed", "final_val_loss": None, "wall_s": wall,
                                            "error": death_message(w.proc.exitcode)}, {**env, "device": w.device})
                        bar.update(spec, "failed", wall, math.nan, costs[spec.run_hash])
                        finished.add(spec.run_hash)
                    w.conn.close()
                    pool[pool.index(w)] = _Worker(ctx, w.device, plan.threads, sweep_dir, env)
                elif message[0] == "ready":
                    w.ready = True
                elif message[0] == "done":
                    _, _, status, wall, loss = message
                    bar.update(w.spec, status, wall, loss, costs[w.spec.run_hash])
                    finished.add(w.spec.run_hash)
                    w.spec = None
                else:  # ("fatal", why): the worker could not start or could not store a result
                    raise UserError(message[1])
    except KeyboardInterrupt:
        for w in pool:
            w.stop(kill=True)
        out.write(stopped_message(int(bar.done)))
        raise
    except BaseException:
        for w in pool:
            w.stop(kill=True)
        raise
    finally:
        store.close()
    for w in pool:
        w.stop()
    _remove_finished_checkpoints(sweep_dir)
    return {"planned": len(unique), "skipped": skipped, "trained": len(todo), **store_counts(sweep_dir)}


def branch_cost(spec: RunSpec) -> float:
    """run_cost of a shorter WSD run that starts from its family's checkpoint: only its decay is trained."""
    return run_cost(spec) * (1 - branches.branch_point(spec) / spec.train.steps)


def _next_run(pending: list[RunSpec], waits_for: dict[str, str], finished: set[str]) -> RunSpec | None:
    """Take the first pending run that waits for no trunk, or whose trunk is stored; None when every pending run
    still waits (the worker idles until a run finishes)."""
    for i, spec in enumerate(pending):
        trunk = waits_for.get(spec.run_hash)
        if trunk is None or trunk in finished:
            return pending.pop(i)
    return None


def _remove_finished_checkpoints(sweep_dir: Path) -> None:
    """Delete the checkpoints of the WSD families whose planned runs (every run the store's plan holds) are all
    stored as finished."""
    if not (sweep_dir / branches.CHECKPOINT_DIR).is_dir():
        return
    store = Store(sweep_dir)
    try:
        planned = [RunSpec.from_json(json.loads(text)) for text in store.planned()["spec"]]
        branches.remove_finished(sweep_dir, planned, store.finished_hashes())
    finally:
        store.close()


def store_counts(sweep_dir: Path) -> dict:
    store = Store(sweep_dir)
    try:
        return store.counts()
    finally:
        store.close()


MAX_LOG2_LR = 0.0  # a grid is never extended past LR 1
MIN_COMMON_LRS = 3  # LRs every seed ran at a scale before their mean may call for a grid extension


def _groups(specs: list[RunSpec]) -> dict[tuple[str, str], list[RunSpec]]:
    groups: dict[tuple[str, str], list[RunSpec]] = {}
    for s in specs:
        groups.setdefault((s.ablation, s.model.parameterization), []).append(s)
    return groups


def _lr_key(spec: RunSpec) -> float:
    return round(math.log2(spec.train.lr), 6)


def _scale(spec: RunSpec) -> int:
    """The spec's value on the axis it was planned on (its width, depth or training tokens)."""
    return axis_value(spec, spec_axis(spec))


def coarse_seeds(group: list[RunSpec]) -> set[int]:
    """The seeds that run the group's whole LR grid at every scale (seed 0 of an adaptive sweep); the other seeds run
    only each scale's optimum neighbourhood."""
    grid = {_lr_key(s) for s in group}
    have: dict[tuple[int, int], set[float]] = {}
    for s in group:
        have.setdefault((s.train.seed, _scale(s)), set()).add(_lr_key(s))
    widths = {_scale(s) for s in group}
    return {seed for seed in {k for k, _ in have} if all(have.get((seed, w)) == grid for w in widths)}


def _best(means: pd.Series) -> float | None:
    """The log2 LR (the index) of the lowest finite mean loss; None when every point diverged."""
    finite = means[means < math.inf]
    return float(finite.idxmin()) if len(finite) else None


def grid_extensions(specs: list[RunSpec], runs) -> list[RunSpec]:
    """The next grid point beyond each edge optimum.

    For every (ablation, parameterization) of `specs` where some scale's (width's, depth's, duration's) best finished
    LR is the lowest or the highest of the group's grid — the best of the coarse seeds' mean, or the best of the mean
    over every seed at the LRs all of them ran there (at least MIN_COMMON_LRS: a neighbourhood, whose seeds may prefer
    the edge although seed 0 did not) — the runs one grid step further out, for every spec at that edge: every scale,
    and every seed that has the edge point, so the scales keep one shared grid. `runs` is the store's table
    (Store.runs()); only the runs of `specs` count, so a resumed sweep re-derives the same extensions, round by round,
    and finds them stored.
    """
    from harness.transfer import grid_step

    out = []
    finished = runs[runs["status"].isin(["ok", "diverged"])]
    for group in _groups(specs).values():
        hashes = {s.run_hash for s in group}
        coarse = coarse_seeds(group)
        done = finished[finished["run_hash"].isin(hashes)]
        grid = sorted({math.log2(s.train.lr) for s in group})
        if len(grid) < 2 or done.empty:
            continue
        step = grid_step(grid)
        ends = set()
        scale_of = {s.run_hash: _scale(s) for s in group}
        for _, table in done.groupby(done["run_hash"].map(scale_of)):
            bests = [_best(table[table["seed"].isin(coarse)].groupby("log2_lr")["final_val_loss"].mean())]
            common = table.pivot_table(index="seed", columns="log2_lr", values="final_val_loss").dropna(axis=1)
            if common.shape[1] >= MIN_COMMON_LRS:
                bests.append(_best(common.mean(axis=0)))
            for best in bests:  # None: every LR diverged at this scale, no optimum to chase
                if best is not None and math.isclose(best, grid[0]):
                    ends.add((grid[0], -step))
                elif best is not None and math.isclose(best, grid[-1]):
                    ends.add((grid[-1], step))
        for edge, delta in sorted(ends):
            if edge + delta > MAX_LOG2_LR:
                continue
            for s in group:
                if math.isclose(math.log2(s.train.lr), edge):
                    out.append(dataclasses.replace(s, train=dataclasses.replace(s.train, lr=2.0 ** (edge + delta))))
    return out


def seed_neighbourhoods(specs: list[RunSpec], runs, seeds: int) -> list[RunSpec]:
    """The runs of seeds 1…seeds-1 that the adaptive grid asks for, given what is stored.

    Per (ablation, parameterization) and scale (width, depth or duration): the grid points within one step of the
    coarse seeds' best LR; once
    all of them are finished, while the best mean loss over every seed sits on the neighbourhood's edge (and the grid
    goes further), one more point on that side. Derived from the stored runs alone, so a resumed sweep asks for the
    same runs. Returns every neighbourhood run so far, stored or not.
    """
    from harness.transfer import grid_step

    out: dict[str, RunSpec] = {}
    finished = runs[runs["status"].isin(["ok", "diverged"])]
    loss = dict(zip(finished["run_hash"], finished["final_val_loss"].astype(float)))
    for group in _groups(specs).values():
        coarse = coarse_seeds(group)
        others = [k for k in range(seeds) if k not in coarse]
        if not coarse or not others:
            continue
        grid = sorted({_lr_key(s) for s in group})
        step = grid_step(grid)
        by_width: dict[int, dict[float, list[RunSpec]]] = {}
        for s in group:
            if s.train.seed in coarse:
                by_width.setdefault(_scale(s), {}).setdefault(_lr_key(s), []).append(s)
        for width, at in by_width.items():
            template = {x: min(ss, key=lambda s: s.train.seed) for x, ss in at.items()}
            coarse_means = pd.Series({x: _mean([loss.get(s.run_hash) for s in ss]) for x, ss in at.items()})
            centre = _best(coarse_means.dropna())
            if centre is None or coarse_means.isna().any():
                continue  # the coarse seeds are not done at this width yet, or every LR diverged
            hood = [x for x in grid if abs(x - centre) <= step * 1.001]
            while True:
                wanted = {x: [dataclasses.replace(template[x], train=dataclasses.replace(template[x].train, seed=k))
                              for k in others] for x in hood}
                for ss in wanted.values():
                    out.update((s.run_hash, s) for s in ss)
                means = pd.Series({x: _mean([loss.get(s.run_hash) for s in ss + at[x]]) for x, ss in wanted.items()})
                if means.isna().any():
                    break  # wait for these runs
                best = _best(means)
                i = grid.index(hood[0]) if best is not None else -1
                if best == hood[0] and i > 0:
                    hood.insert(0, grid[i - 1])
                elif best == hood[-1] and grid.index(hood[-1]) < len(grid) - 1:
                    hood.append(grid[grid.index(hood[-1]) + 1])
                else:
                    break
    return list(out.values())


def _mean(values: list) -> float:
    """Mean of stored losses (inf = diverged); NaN while any is missing."""
    return math.nan if any(v is None for v in values) else float(np.mean(values))


# --- a sweep directory, end to end --------------------------------------------------------------------------------
def check_directory(out: Path, preset: str, model: dict | None) -> None:
    """Refuse a sweep directory that holds another preset's sweep or another model's runs (UserError)."""
    if not (out / "mupbench.sqlite").exists():
        return
    store = Store(out)
    try:
        stored_preset = store.get_meta("preset")
        stored_model = store.get_meta(byo.STORE_META_KEY)
        has_runs = bool(store.counts()["planned"])
    finally:
        store.close()
    if stored_preset not in (None, preset):
        raise UserError(f"{out} holds a sweep at preset {stored_preset!r}, not {preset!r}: use another --out")
    if model is None:
        if stored_model is not None:
            raise UserError(f"{out} holds runs of --model {stored_model['spec']}: pass that --model, or use another --out")
        return
    if stored_model is not None and byo.ModelSource.identity(stored_model) != byo.ModelSource.identity(model):
        same_file = stored_model["file"] == model["file"] and stored_model["factory"] == model["factory"]
        what = "an earlier version of this model file" if same_file else "a different model"
        raise UserError(f"{out} holds runs of {what} ({stored_model['spec']}, sha256 {stored_model['sha256'][:12]}, "
                        f"reinit {stored_model['reinit']}): use a new --out for this one")
    if stored_model is None and has_runs:
        raise UserError(f"{out} holds runs of the built-in model: use a new --out for --model {model['spec']}")


def sweep_data(out: Path, path: str | None, vocab_size: int | None, dtype: str):
    """(DataSpec, tokens to write or None): the directory's stored corpus, or the one `path` names (default stdlib).

    A stored corpus whose tokens.npy is missing or damaged is prepared again from its source when that still gives the
    same tokens (same SHA-256), and refused otherwise; a damaged tokens.json is recovered from the planned runs."""
    import numpy as np

    from harness import data

    spec = data.stored_spec(out) or _planned_data(out)
    if spec is None:
        tokens, spec = data.describe(*data.load_tokens(path, vocab_size, dtype))
        return spec, tokens
    if path is not None and spec.name != str(path):
        raise UserError(f"{out} was prepared from data {spec.name!r}, not {path!r}: use another --out")
    if data.corpus_intact(out, spec):
        # intact tokens; a damaged tokens.json is written again from the planned runs' spec
        return spec, (None if data.stored_spec(out) == spec else np.load(out / data.TOKEN_FILE))
    source = None if spec.name == "stdlib" else spec.name
    try:
        tokens, rebuilt = data.describe(*data.load_tokens(source, spec.vocab_size, dtype))
    except UserError as e:
        raise UserError(f"{out}/{data.TOKEN_FILE} is missing or damaged and its source cannot be read again ({e}): "
                        "restore the file, or use a new --out") from None
    if rebuilt.sha256 != spec.sha256:
        raise UserError(f"{out}/{data.TOKEN_FILE} is missing or damaged, and its source {spec.name} now gives other "
                        f"tokens (sha256 {rebuilt.sha256[:12]}, the sweep's {spec.sha256[:12]}): restore the data, or "
                        "use a new --out")
    return spec, tokens


def _planned_data(out: Path):
    """The corpus the runs already planned in `out` were planned with (when tokens.json is gone), or None."""
    from harness.config import DataSpec

    if not (out / "mupbench.sqlite").exists():
        return None
    store = Store(out)
    try:
        plan = store.planned()
    finally:
        store.close()
    return DataSpec(**json.loads(plan["spec"].iloc[0])["data"]) if len(plan) else None


LOCK_FILE = "mupbench.lock"


@contextlib.contextmanager
def locked(out: Path):
    """Hold the sweep directory for one `mupbench run` (flock on DIR/mupbench.lock, released when the process ends,
    however it ends); a second one on the same directory is refused with one line."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            raise UserError(f"another `mupbench run` (pid {holder}) is running in {out}: wait for it to finish, "
                            "or use another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def check_writable(path: Path, option: str = "--out") -> None:
    """`path` is, or can be made, a directory this process can write in (UserError otherwise): checked by creating
    and removing an empty directory in it or in its nearest existing ancestor, so nothing is left behind."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == path else f"lies under the file {existing}"
        raise UserError(f"{option} {path} {where}: give a directory path")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".mupbench-probe-"))
    except OSError as e:
        raise UserError(f"{option} {path}: cannot write in {existing} ({e.strerror}): choose a writable directory") from None


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
    from harness import data

    for seq_len, spec in {s.train.seq_len: s for s in specs}.items():
        data.check_split(spec.data, seq_len)
    built_in = [s for s in specs if not byo.is_byo(s)]  # a user's model's size is its factory's business
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


def record_sweep(out: Path, tokens, data_spec, preset: str, suite: str, ablation_info: dict, seeds: int = 1) -> None:
    """Write what a sweep directory holds besides runs: the corpus (first time) and the sweep's metadata."""
    from harness import data

    out.mkdir(parents=True, exist_ok=True)
    if tokens is not None:
        data.write(out, tokens, data_spec)
    store = Store(out, create=True)
    try:
        store.set_meta("preset", preset)
        store.set_meta("seeds", max(seeds, store.get_meta("seeds", 1)))
        store.set_meta("suites", sorted(set(store.get_meta("suites", [])) | {suite}))
        store.set_meta("ablation_info", {**store.get_meta("ablation_info", {}), **ablation_info})
    finally:
        store.close()


def run_with_extensions(out: Path, specs: list[RunSpec], extend: int, device: str = "auto", workers: int | None = None,
                        progress: bool = True, on_extend=None, seeds: int = 1, executor=None,
                        retry_failed: bool = False) -> list[RunSpec]:
    """Train `specs` (the coarse grid, seed 0; their stored failures again with `retry_failed`), then, round by round
    from the stored runs: chase edge optima up to `extend` grid points per side (`on_extend(new_specs)` is told of each
    such round), and run seeds 1…seeds-1 on each width's optimum neighbourhood (seed_neighbourhoods). Returns every
    spec of the sweep, extensions included."""
    run_sweep(out, specs, device=device, workers=workers, progress=progress, executor=executor,
              retry_failed=retry_failed)
    rounds = 0
    while True:
        store = Store(out)
        runs = store.runs()
        store.close()
        # an optimum on the grid's edge is no optimum yet: chase it a step at a time (never already in `specs`)
        more = grid_extensions(specs, runs) if rounds < extend else []
        known = {s.run_hash for s in specs} | {s.run_hash for s in more}
        near = [s for s in seed_neighbourhoods(specs + more, runs, seeds) if s.run_hash not in known]
        if not more and not near:
            break
        if more:
            rounds += 1
            if on_extend is not None:
                on_extend(more)
        specs = specs + more + list({s.run_hash: s for s in near}.values())
        run_sweep(out, specs, device=device, workers=workers, progress=progress, executor=executor)
    return specs
