"""examples/train_gpt.py as a Python-callable trainer: `mupbench run --trainer examples/gpt_trainer.py:train`.

mupbench calls `train(run)` once per run with the run's settings as a dict and stores what it returns (docs/your-trainer.md).
The data file comes from the environment (GPT_DATA), the way a team's config would name it; width, LR, seed, steps and
parameterization come from mupbench.
"""
from __future__ import annotations

import os

from train_gpt import train_model  # beside this file: mupbench imports a trainer file the way `python file.py` would


def train(run: dict) -> dict:
    data = os.environ.get("GPT_DATA") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md")
    return train_model(run["width"], run["lr"], run["seed"], run["steps"], run["parameterization"], data)
