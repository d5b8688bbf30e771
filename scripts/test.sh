#!/usr/bin/env bash
# Set up, then run the test suite (no GPU needed; CUDA tests skip themselves without one).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
