"""mupbench: does the learning rate tuned on a small model stay optimal as the model gets wider?

One installed package. In the repository, this folder (harness/) is the package itself and the three folders beside it
are its subpackages:

    mupbench.<module>     harness/      config, model, parameterization, training, planning, executors, store,
                                        transfer analysis, gate, command line (mupbench.cli)
    mupbench.ablations    ablations/    the ablation registry, presets and suites
    mupbench.kernels      kernels/      Triton RMSNorm and attention, with a plain-torch reference beside each
    mupbench.reports      reports/      report.html, results.json, summary.md, junit.xml

The public Python API, importable from here (each imported on first use, so `import mupbench` loads neither torch nor
pandas): `ModelConfig`, `TrainConfig`, `build_model`, `build_optimizer` (the built-in model and its μP optimizer),
`analyze_frame` (the transfer verdicts of a table of runs), `rms_norm`, `add_rms_norm`, `attention` (the kernels).
"""
from __future__ import annotations

import importlib

_PUBLIC = {
    "ModelConfig": "mupbench.config",
    "TrainConfig": "mupbench.config",
    "build_model": "mupbench.model",
    "build_optimizer": "mupbench.optim",
    "analyze_frame": "mupbench.transfer",
    "rms_norm": "mupbench.kernels",
    "add_rms_norm": "mupbench.kernels",
    "attention": "mupbench.kernels",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'mupbench' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
