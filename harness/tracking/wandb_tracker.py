"""Weights & Biases: a W&B run per training run, grouped by sweep, in the project $WANDB_PROJECT (default "mupbench";
entity $WANDB_ENTITY or your default).

Mode: $WANDB_MODE if set (online, offline, disabled); otherwise online when W&B credentials are found ($WANDB_API_KEY,
or a `wandb login` entry in ~/.netrc) and offline when not. Local files go to DIR/tracking/wandb/ either way; offline
runs are uploaded later with `wandb sync DIR/tracking/wandb/offline-run-*`.

    group "<sweep>-<id>", job type train, one run per training run, named "<ablation> <param> w64 lr=2^-7 seed1":
        config: the settings (ablation, parameterization, width, depth, steps, lr, log2_lr, seed, ...) and the whole
        spec; tags: ablation, parameterization, status; history loss/train and loss/val with the training step as
        W&B's step; summary final_val_loss, wall_s, steps_done, n_params, tokens_per_s, status (finished, diverged,
        failed) and error; a failed run ends with exit code 1 (W&B shows it as failed)
    job type sweep, one run named "<sweep>-<id> verdicts" each time the verdicts change: the table `verdicts`, history
        optimum/<ablation>/<param> (optimal log2 LR, the scale as the step), summary verdict/... and drift/..., and the
        artifact report-<sweep>-<id> (type mupbench-report: report.html, results.json, junit.xml)
"""
from __future__ import annotations

import math
import netrc
import os
import re
from pathlib import Path
from urllib.parse import urlparse

from mupbench.directory import check_writable
from mupbench.tracking import TRACKING_DIR, Sweep, StoredRun, import_library, verdict_rows

DEFAULT_PROJECT = "mupbench"
INIT_TIMEOUT_S = 30.0  # W&B's own default is 90 s; $WANDB_INIT_TIMEOUT overrides either


def check(sweep_dir: Path) -> None:
    import_library("wandb")
    check_writable(Path(sweep_dir) / TRACKING_DIR / "wandb", "--log wandb: the local W&B directory")


def make():
    return WandbTracker()


def has_credentials() -> bool:
    """Whether W&B would log in without asking: an API key in the environment, or a netrc entry for its host."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def mode() -> str:
    return os.environ.get("WANDB_MODE") or ("online" if has_credentials() else "offline")


class WandbTracker:
    name = "wandb"

    def __init__(self):
        self.wandb = None
        self.sweep: Sweep | None = None
        self.key = ""
        self.project = os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT

    def open(self, sweep: Sweep) -> None:
        self.wandb = import_library("wandb")
        self.sweep = sweep
        self.key = f"wandb:{os.environ.get('WANDB_ENTITY', '')}/{self.project}"
        (sweep.tracking_dir / "wandb").mkdir(parents=True, exist_ok=True)

    def _init(self, **kwargs):
        wandb = self.wandb
        settings = wandb.Settings(silent=True, console="off", disable_git=True, save_code=False,
                                  x_disable_stats=True, x_disable_machine_info=True, x_save_requirements=False,
                                  init_timeout=float(os.environ.get("WANDB_INIT_TIMEOUT") or INIT_TIMEOUT_S))
        return wandb.init(project=self.project, group=self.sweep.label, dir=str(self.sweep.tracking_dir), mode=mode(),
                          reinit="create_new", settings=settings, **kwargs)

    def log_run(self, run: StoredRun) -> str:
        w = self._init(name=run.name, job_type="train", config={**run.params, "spec": run.spec},
                       tags=[run.params["ablation"], run.params["parameterization"], run.state])
        try:
            by_step: dict[int, dict] = {}
            for step, split, loss in run.curve:
                by_step.setdefault(step, {})[f"loss/{split}"] = loss
            for step in sorted(by_step):
                w.log(by_step[step], step=step)
            w.summary.update({**run.summary(), "status": run.state, **({"error": run.error} if run.error else {})})
        except BaseException:
            w.finish(exit_code=1)
            raise
        w.finish(exit_code=1 if run.status == "failed" else 0)
        return w.id

    def log_sweep(self, verdicts: list[dict], artifacts: dict[str, Path]) -> None:
        wandb = self.wandb
        headers, rows = verdict_rows(verdicts)
        w = self._init(name=f"{self.sweep.label} verdicts", job_type="sweep")
        try:
            w.log({"verdicts": wandb.Table(columns=headers, data=[[_cell(x) for x in row] for row in rows])})
            by_scale: dict[int, dict] = {}
            for v in verdicts:
                group = f"{v['ablation']}/{v['parameterization']}"
                for scale, x in v["optimal_log2_lr"].items():
                    if x is not None:
                        by_scale.setdefault(int(scale), {})[f"optimum/{group}"] = x
                w.summary[f"verdict/{group}"] = v["verdict"]
                if v.get("drift_per_doubling") is not None:
                    w.summary[f"drift/{group}"] = v["drift_per_doubling"]
            for scale in sorted(by_scale):
                w.log(by_scale[scale], step=scale)
            if artifacts:
                artifact = wandb.Artifact(re.sub(r"[^\w.-]", "-", f"report-{self.sweep.label}"), type="mupbench-report")
                for name, path in artifacts.items():
                    artifact.add_file(str(path), name=name)
                w.log_artifact(artifact)
        except BaseException:
            w.finish(exit_code=1)
            raise
        w.finish()

    def close(self) -> None:
        pass


def _cell(x):
    return None if isinstance(x, float) and not math.isfinite(x) else x
