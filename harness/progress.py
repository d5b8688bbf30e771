"""The progress line of a sweep: runs done, diverged, failed, running, elapsed and an ETA from the runs' costs."""
from __future__ import annotations

import sys
import time

from mupbench.config import RunSpec, spec_axis

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


def stopped_message(stored: int) -> str:
    return f"\nmupbench: interrupted; {stored} run(s) stored, run the same command again to resume\n"
