"""A sweep, end to end: plan → execute → store → analyse, until the planner has nothing left to ask.

    planner   mupbench.plan        which runs next: the coarse grid (seed 0), grid extensions past edge optima, seeds
                                   1… on each scale's optimum neighbourhood; the order runs are handed out in
    executor  mupbench.executors   where they train (local worker processes, or Ray); each result goes to the store
    store     mupbench.store       one row per run: the only state between the planner and the executors
    analysis  mupbench.transfer    the verdicts, read from the store (by the command line and the reports, after this)

Resumable at any point: every decision is derived from the specs and the stored runs, so running the same command again
plans the same runs, finds the finished ones stored and trains the rest.
"""
from __future__ import annotations

import sys
from pathlib import Path

from mupbench import byo, plan
from mupbench.config import RunSpec
from mupbench.directory import TRAINER_META_KEY, remove_finished_checkpoints, store_counts, trainer_meta
from mupbench.executors import Executor
from mupbench.store import Store
from mupbench.trainers.external import trainer_entry


def run_sweep(out: str | Path, specs: list[RunSpec], executor: Executor, extend: int = 0, seeds: int = 1,
              progress: bool = True, retry_failed: bool = False, max_seeds: int | None = None,
              tolerance: float | None = None, on_extend=None, on_stored=None) -> dict:
    """Train `specs` (the coarse grid: seed 0; their stored failures again with `retry_failed`), then, round by round
    from the stored runs, what the planner asks for next: up to `extend` grid points per side past an edge optimum
    (`on_extend(new_specs)` is told of each such round) and seeds 1…seeds-1 on each scale's optimum neighbourhood;
    a group whose verdict (at δ = `tolerance`) is inconclusive for noise gets sequential seeds up to `max_seeds`.
    `on_stored(spec)` is called in this process after each result is stored (mupbench.tracking logs it).
    Returns the store's counts (mupbench.store.Store.counts), with `trained` (runs trained by this call), `skipped`
    (planned runs found stored) and `specs` (every spec of the sweep, extensions included)."""
    out = Path(out)
    rounds = trained = 0
    retry = retry_failed  # failures stored before this call are retried once, in the first round
    while True:
        trained += _execute(out, specs, executor, progress, retry, on_stored)
        retry = False
        store = Store(out)
        try:
            runs = store.runs()
        finally:
            store.close()
        more, near = plan.next_round(specs, runs, seeds, extend=rounds < extend, max_seeds=max_seeds,
                                     tolerance=tolerance)
        if not more and not near:
            break
        if more:
            rounds += 1
            if on_extend is not None:
                on_extend(more)
        specs = specs + more + near
    remove_finished_checkpoints(out)
    planned = len({s.run_hash for s in specs})
    return {**store_counts(out), "trained": trained, "skipped": planned - trained, "specs": specs}


def _execute(out: Path, specs: list[RunSpec], executor: Executor, progress: bool, retry_failed: bool,
             on_stored=None) -> int:
    """Plan `specs` into the store and have `executor` train those not stored yet; returns how many it trained."""
    store = Store(out, create=True)
    try:
        model = byo.model_entry(specs)  # `mupbench run --model`: the specs carry the user's model
        if model is not None:
            store.set_meta(byo.STORE_META_KEY, model)
        trainer = trainer_entry(specs)  # `--trainer`, `--trainer-command`: the specs carry the user's trainer
        if trainer is not None:
            store.set_meta(TRAINER_META_KEY, trainer_meta(trainer))
        store.add_plan(specs)
        stored = store.statuses()
        todo = plan.to_train(specs, stored, retry_failed)
        planned = len({s.run_hash for s in specs})
        kept_failed = 0 if retry_failed else sum(stored.get(h) == "failed" for h in {s.run_hash for s in specs})
        if progress:
            sys.stderr.write(f"mupbench: {planned} runs planned, {planned - len(todo)} already stored, {len(todo)} to "
                             f"train on {executor.describe()}\n")
        if kept_failed:  # said even with --quiet: a re-run that trains nothing should say why
            sys.stderr.write(f"mupbench: {kept_failed} stored run(s) failed and are kept as failed: add --retry-failed "
                             "to train them again\n")
        if todo:
            if on_stored is None:
                executor.train(store, todo, progress)
            else:
                executor.train(store, todo, progress, on_stored=on_stored)
    finally:
        store.close()
    return len(todo)
