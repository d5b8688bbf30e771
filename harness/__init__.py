"""mupbench's harness: model, parameterization, training, sweeps, store and transfer analysis.

Public API: `ModelConfig`, `build_model`, `build_optimizer`.
"""
from harness.config import ModelConfig, TrainConfig
from harness.model import build_model
from harness.optim import build_optimizer

__all__ = ["ModelConfig", "TrainConfig", "build_model", "build_optimizer"]
