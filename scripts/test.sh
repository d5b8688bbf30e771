#!/usr/bin/env bash
# Set up (with Ray, for the Ray executor's tests), then run the test suite (no GPU needed; CUDA tests skip themselves
# without one).
set -euo pipefail
cd "$(dirname "$0")/.."
MUPBENCH_EXTRAS=${MUPBENCH_EXTRAS:-dev,ray} bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
