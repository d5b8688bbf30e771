"""The local executor: worker processes on this machine, one per device (a GPU, or a share of the CPU cores).

Each worker trains one run at a time and writes its result to the store itself, so a killed parent loses only the runs
in flight. Workers die with their parent (PR_SET_PDEATHSIG on Linux). A worker that dies in the middle of a run (the
OOM killer, a segfault, user code calling os._exit) takes only that run with it: the run is stored as failed with the
cause, a fresh worker takes the dead one's place, and the rest goes on.

WSD runs that differ only in length branch off one trunk (mupbench.branches): the planner's Dispatch hands out each
family's longest run first and its shorter runs only once that one is stored, keeping the workers busy with other runs
meanwhile; the workers keep the family's checkpoints in `<sweep dir>/checkpoints/`.
"""
from __future__ import annotations

import ctypes
import math
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import signal
import sys
import time
from pathlib import Path

from mupbench import branches
from mupbench.config import RunSpec
from mupbench.devices import WorkerPlan, plan_workers, use_device
from mupbench.environment import environment
from mupbench.errors import UserError
from mupbench.trainers import train_spec
from mupbench.plan import Dispatch
from mupbench.progress import Progress, stopped_message
from mupbench.store import Store

# --- worker side --------------------------------------------------------------------------------------------------
_WORKER: dict = {}


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _worker_init(device: str, threads: int, sweep_dir: str, env: dict) -> None:
    from mupbench.data import open_tokens

    name = use_device(device, threads)
    _WORKER.update(device=device, store=Store(sweep_dir), tokens=open_tokens(Path(sweep_dir)),
                   env={**env, "device": name}, checkpoints=Path(sweep_dir) / branches.CHECKPOINT_DIR)


def _worker_run(spec_json: dict) -> tuple[str, str, float, float]:
    spec = RunSpec.from_json(spec_json)
    result = train_spec(spec, _WORKER["tokens"], _WORKER["device"], _WORKER["checkpoints"], _WORKER["store"].dir)
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


MAX_WORKER_RESTARTS = 3  # a worker dying before it ever trained: this many fresh ones, then the sweep stops



class LocalExecutor:
    """Worker processes on this machine (`device`: auto, cpu, cuda or cuda:N; `workers`: how many, by default one per
    GPU or one single-threaded worker per CPU core)."""

    def __init__(self, device: str = "auto", workers: int | None = None):
        self.plan: WorkerPlan = plan_workers(device, workers)

    def describe(self) -> str:
        return self.plan.describe()

    def close(self) -> None:
        pass

    def train(self, store: Store, specs: list[RunSpec], progress: bool = True, on_stored=None) -> None:
        """Train `specs` in the planner's order, each worker storing its runs' results as they finish;
        `on_stored(spec)` is called here, in the parent, once a run's result is stored."""
        sweep_dir = store.dir
        dispatch = Dispatch(specs)
        plan = self.plan
        n_workers = min(len(plan.devices), len(specs))
        ctx = mp.get_context("spawn")
        env = environment()
        bar = Progress(len(specs), dispatch.total_cost, n_workers, enabled=progress)
        finished: set[str] = set()  # run hashes stored by this call, whatever their status
        pool = [_Worker(ctx, d, plan.threads, sweep_dir, env) for d in plan.devices[:n_workers]]
        restarts = 0
        try:
            while dispatch.pending or any(w.spec is not None for w in pool):
                for w in pool:
                    if w.ready and w.spec is None and (spec := dispatch.next(finished)) is not None:
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
                            bar.update(spec, "failed", wall, math.nan, dispatch.cost[spec.run_hash])
                            finished.add(spec.run_hash)
                            if on_stored is not None:
                                on_stored(spec)
                        w.conn.close()
                        pool[pool.index(w)] = _Worker(ctx, w.device, plan.threads, sweep_dir, env)
                    elif message[0] == "ready":
                        w.ready = True
                    elif message[0] == "done":
                        _, _, status, wall, loss = message
                        bar.update(w.spec, status, wall, loss, dispatch.cost[w.spec.run_hash])
                        finished.add(w.spec.run_hash)
                        spec, w.spec = w.spec, None
                        if on_stored is not None:
                            on_stored(spec)
                    else:  # ("fatal", why): the worker could not start or could not store a result
                        raise UserError(message[1])
        except KeyboardInterrupt:
            for w in pool:
                w.stop(kill=True)
            sys.stderr.write(stopped_message(int(bar.done)))
            raise
        except BaseException:
            for w in pool:
                w.stop(kill=True)
            raise
        for w in pool:
            w.stop()
