"""TensorBoard: event files in DIR/tracking/tensorboard/, one folder per training run, one for the sweep.

    <ablation>/<parameterization>/<scale>_lr2^<x>_seed<n>/   scalars loss/train and loss/val by step; final/val_loss,
                                                           final/wall_s, ... ; text run/status and run/config; the
                                                           run's settings and final numbers in the HParams tab
    _sweep/                                                text verdicts (the verdict table) and artifacts (the
                                                           report files' paths); scalars optimum/<ablation>/<param>
                                                           (optimal log2 LR, by scale as the step) and drift/...

`tensorboard --logdir DIR/tracking/tensorboard` shows them. Written with torch.utils.tensorboard (needs the
`tensorboard` package: mupbench[tensorboard]).
"""
from __future__ import annotations

import math
from pathlib import Path

from mupbench.directory import check_writable
from mupbench.tracking import TRACKING_DIR, Sweep, StoredRun, import_library, verdict_rows

FOLDER = "tensorboard"
SWEEP_FOLDER = "_sweep"


def check(sweep_dir: Path) -> None:
    import_library("tensorboard")
    import_library("tensorboard", "torch.utils.tensorboard")
    check_writable(Path(sweep_dir) / TRACKING_DIR / FOLDER, "--log tensorboard: the event files' directory")


def make():
    return TensorBoardTracker()


def _writer(folder: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(folder))


def _markdown(headers: list[str], rows: list[list]) -> str:
    def cell(x):
        if isinstance(x, float):
            return f"{x:.3g}" if math.isfinite(x) else str(x)
        return "–" if x is None else str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows])


class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self):
        self.root: Path | None = None
        self.key = ""

    def open(self, sweep: Sweep) -> None:
        self.root = sweep.tracking_dir / FOLDER
        self.root.mkdir(parents=True, exist_ok=True)
        self.key = "tensorboard"  # always inside the sweep directory: moving the directory moves what was logged

    def run_folder(self, run: StoredRun) -> Path:
        """The run's folder; a run trained again (a retried failure) gets a fresh one beside the first."""
        p = run.params
        where = {"depth": f"d{p['depth']}", "tokens": f"{p['steps']}steps"}.get(p["axis"], f"w{p['width']}")
        base = self.root / p["ablation"] / p["parameterization"] / f"{where}_lr2^{p['log2_lr']:g}_seed{p['seed']}"
        folder, attempt = base, 1
        while folder.exists():
            attempt += 1
            folder = base.with_name(f"{base.name}_attempt{attempt}")
        return folder

    def log_run(self, run: StoredRun) -> str:
        folder = self.run_folder(run)
        writer = _writer(folder)
        try:
            for step, split, loss in run.curve:
                writer.add_scalar(f"loss/{split}", loss, step)
            last = run.steps_done or (run.curve[-1][0] if run.curve else 0)
            for key, value in run.summary().items():
                writer.add_scalar(f"final/{key.removeprefix('final_')}", value, last)
            status = run.state + (f": {run.error}" if run.status == "failed" and run.error else "")
            writer.add_text("run/status", status, last)
            writer.add_text("run/config", _markdown(["setting", "value"], [[k, v] for k, v in run.params.items()]), 0)
            hparams = {k: v for k, v in run.params.items() if isinstance(v, (int, float, str))}
            metrics = {f"hparam/{k}": v for k, v in run.summary().items()}
            writer.add_hparams({**hparams, "status": run.state}, metrics or {"hparam/wall_s": math.nan}, run_name=".")
        finally:
            writer.close()
        return str(folder.relative_to(self.root))

    def log_sweep(self, verdicts: list[dict], artifacts: dict[str, Path]) -> None:
        writer = _writer(self.root / SWEEP_FOLDER)
        try:
            step = len(list((self.root / SWEEP_FOLDER).glob("events.*"))) - 1  # one step per time the sweep is logged
            writer.add_text("verdicts", _markdown(*verdict_rows(verdicts)), step)
            writer.add_text("artifacts", "\n".join(f"- `{p.resolve()}`" for p in artifacts.values()) or "none", step)
            for v in verdicts:
                group = f"{v['ablation']}/{v['parameterization']}"
                for scale, x in v["optimal_log2_lr"].items():
                    if x is not None:
                        writer.add_scalar(f"optimum/{group}", x, int(scale))
                if v.get("drift_per_doubling") is not None:
                    writer.add_scalar(f"drift/{group}", v["drift_per_doubling"], step)
        finally:
            writer.close()

    def close(self) -> None:
        pass
