"""mupbench's harness: model, parameterization, training, sweeps, store and transfer analysis.

Public API: `ModelConfig`, `build_model`, `build_optimizer`. The model and optimizer (and torch with them) are
imported on first use, so the command line starts — and answers Ctrl-C — before torch is loaded.
"""
from harness.config import ModelConfig, TrainConfig

__all__ = ["ModelConfig", "TrainConfig", "build_model", "build_optimizer"]


def __getattr__(name: str):
    if name == "build_model":
        from harness.model import build_model

        return build_model
    if name == "build_optimizer":
        from harness.optim import build_optimizer

        return build_optimizer
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
