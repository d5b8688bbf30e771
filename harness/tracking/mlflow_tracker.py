"""MLflow: a parent run per sweep, a child run per training run, in the experiment $MLFLOW_EXPERIMENT_NAME (default
"mupbench").

Where: $MLFLOW_TRACKING_URI if set (a server, a database, a folder), else a SQLite store inside the sweep directory,
DIR/tracking/mlflow.db, with artifacts in DIR/tracking/mlflow-artifacts/ (`mlflow ui --backend-store-uri
sqlite:///DIR/tracking/mlflow.db` shows it).

    parent run  "<sweep>-<id>"   tags verdict.<ablation>.<param>; metrics drift/<ablation>/<param> and
                                 optimum/<ablation>/<param> (optimal log2 LR, the scale as the step); artifacts
                                 verdicts.json (the verdict table) and report/ (report.html, results.json, junit.xml)
    child run   "<ablation> <param> w64 lr=2^-7 seed1"   params: the settings and the whole spec (spec.train.*,
                                 spec.model.*, ...); metrics loss/train and loss/val by step, final_val_loss, wall_s,
                                 steps_done, n_params, tokens_per_s; tags mupbench.status (finished, diverged, failed)
                                 and mupbench.error; status FINISHED (FAILED for a failed run); start and end times
                                 those of the training run
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from urllib.parse import urlparse

from mupbench.directory import check_writable
from mupbench.errors import UserError
from mupbench.tracking import TRACKING_DIR, Sweep, StoredRun, import_library, verdict_rows

DB_FILE = "mlflow.db"
ARTIFACT_FOLDER = "mlflow-artifacts"
DEFAULT_EXPERIMENT = "mupbench"
# An unreachable server fails within seconds, not MLflow's default of minutes of retries (the sweep waits on it):
# MLFLOW_HTTP_REQUEST_* set in the environment win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
BATCH = 100  # params per log_batch call (MLflow's limit); metrics go 1000 at a time


def tracking_uri(sweep_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(sweep_dir) / TRACKING_DIR / DB_FILE).resolve()}"


def _local_folder(uri: str) -> Path | None:
    """The local folder a sqlite:/// or file: tracking URI (or a plain path) writes in; None for a server."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        return Path(parsed.path[1:]).parent  # sqlite:///relative.db, sqlite:////absolute.db
    if parsed.scheme in ("", "file"):
        return Path(parsed.path)
    return None


def check(sweep_dir: Path) -> None:
    import_library("mlflow")
    uri = tracking_uri(sweep_dir)
    if uri.startswith("sqlite:"):  # mlflow-skinny has no database store without these
        import_library("mlflow", "sqlalchemy")
        import_library("mlflow", "alembic")
    folder = _local_folder(uri)
    if folder is not None:
        check_writable(folder, f"--log mlflow: the tracking store {uri}")


def make():
    return MlflowTracker()


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _flatten(value, prefix: str) -> dict[str, str]:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}"))
        return out
    return {prefix: str(value)[:MAX_PARAM_LENGTH]}


class MlflowTracker:
    name = "mlflow"

    def __init__(self):
        self.client = None
        self.key = ""
        self.experiment_id = None
        self.parent_id = None

    def open(self, sweep: Sweep) -> None:
        import_library("mlflow")
        from mlflow import MlflowClient

        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        for logger in ("mlflow", "alembic"):  # their INFO lines (database migrations) are not the sweep's output
            logging.getLogger(logger).setLevel(logging.WARNING)
        uri = tracking_uri(sweep.dir)
        # the default store moves with the sweep directory; another tracking URI is another place to log to
        self.key = f"mlflow:{os.environ['MLFLOW_TRACKING_URI']}" if os.environ.get("MLFLOW_TRACKING_URI") else "mlflow"
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            local = "MLFLOW_TRACKING_URI" not in os.environ
            location = (sweep.tracking_dir / ARTIFACT_FOLDER).resolve().as_uri() if local else None
            self.experiment_id = self.client.create_experiment(name, artifact_location=location)
        elif experiment.lifecycle_stage != "active":
            raise UserError(f"--log mlflow: the experiment {name!r} at {uri} is deleted: restore it "
                            "(`mlflow experiments restore`) or set MLFLOW_EXPERIMENT_NAME to another")
        else:
            self.experiment_id = experiment.experiment_id
        state = sweep.state.setdefault(self.key, {})
        parent = state.get("parent_run_id")
        if parent is not None:
            try:
                run = self.client.get_run(parent)
                if run.info.lifecycle_stage != "active":
                    parent = None
            except Exception:  # deleted from the store meanwhile: a new parent run
                parent = None
        if parent is None:
            parent = self.client.create_run(self.experiment_id, run_name=sweep.label,
                                            tags={"mupbench.sweep": sweep.label,
                                                  "mupbench.sweep_dir": str(sweep.dir.resolve())}).info.run_id
            state["parent_run_id"] = parent
        else:
            self.client.update_run(parent, status="RUNNING")
        self.parent_id = parent

    def _log_batch(self, run_id: str, metrics=(), params=(), tags=()) -> None:
        for i in range(0, len(params), BATCH):
            self.client.log_batch(run_id, params=params[i:i + BATCH])
        for i in range(0, len(tags), BATCH):
            self.client.log_batch(run_id, tags=tags[i:i + BATCH])
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000])

    def log_run(self, run: StoredRun) -> str:
        from mlflow.entities import Metric, Param

        end = run.finished_at
        start = end - (run.wall_s or 0.0)
        tags = {"mlflow.parentRunId": self.parent_id, "mupbench.status": run.state, "mupbench.run_hash": run.run_hash,
                "mupbench.sweep_run": "child"}
        if run.error:
            tags["mupbench.error"] = run.error[:5000]
        child = self.client.create_run(self.experiment_id, start_time=_ms(start), run_name=run.name, tags=tags)
        run_id = child.info.run_id
        params = {k: str(v) for k, v in run.params.items()} | _flatten(run.spec, "spec")
        metrics = [Metric(f"loss/{split}", loss, _ms(end), step) for step, split, loss in run.curve]
        last = run.steps_done or (run.curve[-1][0] if run.curve else 0)
        metrics += [Metric(k, v, _ms(end), last) for k, v in run.summary().items()]
        self._log_batch(run_id, metrics, [Param(k, v) for k, v in params.items()])
        self.client.set_terminated(run_id, "FAILED" if run.status == "failed" else "FINISHED", end_time=_ms(end))
        return run_id

    def log_sweep(self, verdicts: list[dict], artifacts: dict[str, Path]) -> None:
        from mlflow.entities import Metric, RunTag

        headers, rows = verdict_rows(verdicts)
        self.client.log_table(self.parent_id, {h: [row[i] for row in rows] for i, h in enumerate(headers)},
                              "verdicts.json")
        now = _ms(time.time())
        metrics, tags = [], []
        for v in verdicts:
            group = f"{v['ablation']}/{v['parameterization']}"
            tags.append(RunTag(f"verdict.{v['ablation']}.{v['parameterization']}", f"{v['verdict']}: {v['reason']}"))
            metrics += [Metric(f"optimum/{group}", x, now, int(scale))
                        for scale, x in v["optimal_log2_lr"].items() if x is not None]
            if v.get("drift_per_doubling") is not None:
                metrics.append(Metric(f"drift/{group}", v["drift_per_doubling"], now, 0))
        self._log_batch(self.parent_id, metrics, tags=tags)
        for name, path in artifacts.items():
            folder = str(Path(name).parent)
            self.client.log_artifact(self.parent_id, str(path), artifact_path=None if folder == "." else folder)

    def close(self) -> None:
        if self.client is not None and self.parent_id is not None:
            self.client.set_terminated(self.parent_id, "FINISHED")
