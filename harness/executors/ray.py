"""Training a sweep's runs as Ray tasks, on a local Ray instance or a cluster of many GPUs and nodes.

Each run is one task (one GPU on a GPU cluster, one CPU core otherwise) that trains the spec and returns its result
record (mupbench.trainers.train_spec, as a local worker does); it writes nothing. The driver — the process running
`mupbench run` — is the only writer of the store: it records each result in one transaction as it arrives, so SQLite
stays on the driver's local disk, killing the driver loses only the runs in flight (Ray ends the job's tasks with it),
and re-running the same command trains only what is missing.

The corpus goes into Ray's object store once per sweep (`ray.put`); each node fetches it once and its tasks read it
from shared memory. mupbench's own packages travel with the job (runtime_env py_modules), so every node runs the
driver's code, the code whose revision the store records; the nodes need Python, torch and Ray.

Failures: a task whose worker process dies or whose node is lost is retried by Ray (MAX_RETRIES times); a run that
fails in training (an exception, out of memory in torch) is not retried: it comes back as a `failed` result, as with
local workers. A run whose task is lost more often than that is stored as `failed` with Ray's reason; re-running
retries it.

WSD duration sweeps do not branch here: the local workers start a family's shorter runs from checkpoints its longest
run left in the sweep directory (mupbench.branches), which Ray's nodes do not share. Each run is trained from scratch,
with the same result; it takes the time of the whole run rather than of its decay.
"""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from mupbench.config import RunSpec
from mupbench.errors import CodeChanged, UserError

MAX_RETRIES = 3  # infrastructure failures (worker killed, node lost) per run; training failures are never retried
# A Ray instance started here (no --ray-address) advertises 127.0.0.1 and requires Ray's token authentication (Ray
# 2.52 introduced it): its servers listen on every interface, so without a token anyone who can reach this machine
# could run code in the sweep's workers while it runs.
TOKEN_AUTH_RAY = (2, 52)
CONNECT_TIMEOUT_S = 5.0
INSTALL_HINT = 'pip install "mupbench[ray]"'


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed here: {INSTALL_HINT}") from None
    return ray


def _require_token_auth(version: str | None = None) -> None:
    """A local instance needs a Ray with token authentication (UserError otherwise, before it starts)."""
    from importlib import metadata

    try:
        version = version or metadata.version("ray")
        release = tuple(int(x) for x in version.split(".")[:2])
    except metadata.PackageNotFoundError:
        return  # import_ray says what to install
    except ValueError:
        return  # a development build: assume it is recent
    if release < TOKEN_AUTH_RAY:
        raise UserError(f"Ray {version} has no token authentication, so the Ray instance `--executor ray` "
                        f"would start here would accept anyone's jobs: upgrade it ({INSTALL_HINT}, Ray >= "
                        f"{'.'.join(map(str, TOKEN_AUTH_RAY))}), or give --ray-address of a cluster you secured")


def _check_reachable(address: str) -> None:
    """Fail fast (ray.init can wait a minute) when nothing listens at host:port."""
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address!r} is not host:port (the head node's address, e.g. 10.0.0.1:6379; "
                        "`ray start --head` prints it)")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise UserError(f"cannot reach a Ray cluster at {address} ({e.strerror or e}): start one with "
                        f"`ray start --head` on that machine, or fix --ray-address") from None


def runtime_env() -> dict:
    """The job's runtime environment: the package `mupbench` as the driver imports it, shipped to every node, so the
    nodes run the driver's code."""
    return {"py_modules": [str(package_folder())]}


def package_folder() -> Path:
    """A folder named `mupbench` holding the whole package: the installed one, or — from a source checkout, where the
    package's parts are the repository's folders harness/, ablations/, kernels/ and reports/ — a copy assembled once
    per process in a temporary directory (Ray ships a module under its folder's name)."""
    import mupbench

    installed = Path(mupbench.__file__).parent
    if installed.name == "mupbench":
        return installed
    global _ASSEMBLED
    if _ASSEMBLED is None:
        import importlib.util
        import shutil
        import tempfile

        target = Path(tempfile.mkdtemp(prefix="mupbench-ray-")) / "mupbench"
        skip = shutil.ignore_patterns("__pycache__", "*.pyc", "sweeps", "benchmarks")
        shutil.copytree(installed, target, ignore=skip)
        for sub in ("ablations", "kernels", "reports"):  # located, not imported: the executor needs only their files
            folder = Path(importlib.util.find_spec(f"mupbench.{sub}").origin).parent
            shutil.copytree(folder, target / sub, ignore=skip)
        _ASSEMBLED = target
    return _ASSEMBLED


_ASSEMBLED: Path | None = None


def _train_task(spec_json: dict, tokens, device: str, threads: int) -> dict:
    """One run on a Ray worker: its result record, with the device's name. Writes nothing."""
    from mupbench.devices import use_device
    from mupbench.trainers import train_spec

    name = use_device(device, threads)
    result = train_spec(RunSpec.from_json(spec_json), tokens, device)
    result["device"] = name
    return result


class RayExecutor:
    """Connects to Ray (`address`: a running cluster, "auto", or None for a local instance started here) and trains a
    sweep's runs as tasks. `device`: auto (GPUs when the cluster has any), cpu or cuda. `workers` caps the tasks in
    flight; by default every run is submitted at once and Ray queues what the cluster cannot hold yet (an autoscaler
    sees the demand)."""

    def __init__(self, address: str | None = None, device: str = "auto", workers: int | None = None):
        if workers is not None and workers < 1:
            raise UserError(f"--workers must be at least 1, got {workers}")
        if device not in ("auto", "cpu", "cuda"):
            raise UserError(f"--device {device} with --executor ray: use auto, cpu or cuda (Ray assigns the GPUs)")
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address not in (None, "auto"):
            _check_reachable(address)
        if address is None and "ray" not in sys.modules:  # a local instance: token auth, read by Ray at import
            _require_token_auth()
            os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray generates the token of a local instance itself
        ray = import_ray()
        self.owns_ray = not ray.is_initialized()  # else: this process's Ray connection (an embedding program's)
        if self.owns_ray:
            self._connect(ray, address)
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        if device == "cuda" and not gpus:
            self.close()
            raise UserError("--device cuda asked for, but the Ray cluster has no GPU: use --device cpu or add GPU nodes")
        self.device = "cuda" if device == "cuda" or (device == "auto" and gpus) else "cpu"
        self.slots = max(1, gpus if self.device == "cuda" else cpus)  # runs the cluster holds at once, now
        self.workers = workers
        self.nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        self.address = address
        self._corpus: dict[str, object] = {}  # corpus digest → object ref: put once per sweep, not per run
        self._remote = ray.remote(_train_task).options(
            num_cpus=1, num_gpus=1 if self.device == "cuda" else 0, max_retries=MAX_RETRIES, retry_exceptions=False)

    @staticmethod
    def _connect(ray, address: str | None) -> None:
        import logging

        kwargs = dict(include_dashboard=False, logging_level=logging.WARNING,
                      runtime_env=runtime_env())
        if address is None:
            from mupbench.devices import cpu_cores

            kwargs["num_cpus"] = cpu_cores()  # a local instance: this machine's cores, never more
            kwargs["_node_ip_address"] = "127.0.0.1"
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
            where = f"at {address}" if address else "locally"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"could not connect to Ray {where} ({first}): check --ray-address "
                            "(`ray start --head` prints it) and that this machine runs the cluster's Ray version") from None

    def describe(self) -> str:
        unit = "GPU" if self.device == "cuda" else "CPU core"
        where = self.address or "a local Ray instance"
        cap = f", at most {self.workers} at a time" if self.workers else ""
        return f"Ray ({where}: {self.nodes} node(s), {self.slots} {unit}(s)), a task per run on one {unit}{cap}"

    def close(self) -> None:
        """Shut Ray down if this executor started the connection."""
        if self.owns_ray:
            import_ray().shutdown()
            self.owns_ray = False

    def _corpus_ref(self, store, digest: str):
        from mupbench.data import open_tokens

        if digest not in self._corpus:
            import numpy as np

            self._corpus[digest] = import_ray().put(np.ascontiguousarray(open_tokens(store.dir)))
        return self._corpus[digest]

    def train(self, store, specs: list[RunSpec], progress: bool = True, on_stored=None) -> None:
        """Train `specs` (longest first), `workers` tasks in flight, storing each result as it arrives and then
        calling `on_stored(spec)` (here, in the driver)."""
        from mupbench.environment import environment
        from mupbench.plan import Dispatch
        from mupbench.progress import Progress, stopped_message

        ray = import_ray()
        env = environment()
        dispatch = Dispatch(specs, branching=False)  # the nodes share no checkpoints: every run from scratch
        costs = dispatch.cost
        bar = Progress(len(specs), dispatch.total_cost, min(self.workers or self.slots, self.slots), enabled=progress)
        threads = 1  # one core per task (torch's default would use every core of the node)
        running: dict = {}
        cap = self.workers or len(specs)
        try:
            while dispatch.pending or running:
                while dispatch.pending and len(running) < cap:
                    spec = dispatch.next(set())
                    tokens = self._corpus_ref(store, spec.data.sha256)
                    running[self._remote.remote(spec.to_json(), tokens, self.device, threads)] = spec
                done, _ = ray.wait(list(running), num_returns=1)
                spec = running.pop(done[0])
                result = self._result(ray, done[0])
                store.record(spec, result, {**env, "device": result.pop("device", None)})
                loss = result.get("final_val_loss")
                bar.update(spec, result["status"], result["wall_s"], float("nan") if loss is None else loss,
                           costs[spec.run_hash])
                if on_stored is not None:
                    on_stored(spec)
        except KeyboardInterrupt:
            for ref in running:
                ray.cancel(ref, force=True)
            sys.stderr.write(stopped_message(int(bar.done)))
            raise

    @staticmethod
    def _result(ray, ref) -> dict:
        """The task's result record, or a `failed` record when Ray lost the task more than MAX_RETRIES times (or it
        could not run at all, e.g. a node without torch)."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as e:
            lines = str(e).strip().splitlines()
            if isinstance(e, ray.exceptions.RayTaskError) and isinstance(e.cause, CodeChanged):
                raise e.cause from None  # the user's code changed mid-sweep: stop once, store nothing as failed
            if isinstance(e, ray.exceptions.RayTaskError):  # raised on the worker, outside training: not retried
                what = f"{type(e.cause).__name__}: {e.cause}" if e.cause is not None else lines[-1]
            else:
                what = f"{type(e).__name__}, {MAX_RETRIES} retries spent: {lines[0] if lines else ''}"
            return {"status": "failed", "final_val_loss": None, "wall_s": 0.0, "device": None, "error": f"Ray: {what}"}
