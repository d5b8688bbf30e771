"""The ablation registry, scale presets and suites.

Importing this package registers the built-in ablations. Users add their own with the same `@ablation` decorator in a
file passed as `mupbench run --ablations path.py` or in a module exposed under the `mupbench.ablations` entry point.
"""
# isort: off  (import order is the order `mupbench list` shows)
from mupbench.ablations import (  # noqa: F401  (registration happens on import)
    baseline,
    normalisation,
    initialisation,
    attention,
    activations,
    batch_size,
    schedules,
    weight_decay,
    optimizers,
    depth,
    duration,
)
# isort: on
from mupbench.ablations.presets import PRESETS, Preset, get_preset
from mupbench.ablations.registry import REGISTRY, Ablation, ablation, get
from mupbench.ablations.suites import SUITES, Suite, get_suite, plan

__all__ = [
    "PRESETS", "Preset", "get_preset", "REGISTRY", "Ablation", "ablation", "get", "SUITES", "Suite", "get_suite", "plan",
]
