#!/usr/bin/env bash
# Set up (with Ray, the trackers W&B, MLflow and TensorBoard, and pyarrow, so their tests run), then run the test suite
# (no GPU needed; CUDA tests skip themselves without one). None of these extras depends on torch.
set -euo pipefail
cd "$(dirname "$0")/.."
MUPBENCH_EXTRAS=${MUPBENCH_EXTRAS:-dev,ray,wandb,mlflow,tensorboard,parquet} bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
