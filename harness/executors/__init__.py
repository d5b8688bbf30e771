"""Executors: where a sweep's runs train. The planner (mupbench.plan) decides which runs; an executor trains them and
stores each result in the sweep's store as it arrives; the store is the only state between the two.

An executor has three methods:

    describe() -> str                          one line for the progress header ("4 worker(s) on cpu, ...")
    train(store, specs, progress, on_stored=None) -> None
                                               train every spec, in the planner's Dispatch order, storing each result
                                               with store.record(spec, result, env) — a crash is a `failed` result —
                                               and then calling on_stored(spec) in this process (the driver: trackers
                                               log from here, never from a worker)
    close() -> None                            release what it holds (a Ray connection)

Two ship with mupbench, as peers: LocalExecutor (mupbench.executors.local: worker processes on this machine) and
RayExecutor (mupbench.executors.ray: a task per run on a Ray cluster). Both train one run through
mupbench.trainers.train_spec.
"""
from __future__ import annotations

from typing import Protocol

from mupbench.config import RunSpec
from mupbench.store import Store


class Executor(Protocol):
    def describe(self) -> str: ...

    def train(self, store: Store, specs: list[RunSpec], progress: bool = True, on_stored=None) -> None: ...

    def close(self) -> None: ...



def make_executor(kind: str, device: str = "auto", workers: int | None = None, ray_address: str | None = None) -> Executor:
    """The executor `mupbench run --executor` names; validates its options (UserError) before anything is written."""
    if kind == "ray":
        from mupbench.executors.ray import RayExecutor

        return RayExecutor(ray_address, device, workers)
    from mupbench.executors.local import LocalExecutor

    return LocalExecutor(device, workers)
