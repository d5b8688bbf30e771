#!/usr/bin/env bash
# Set up, then run the CPU smoke suite (μP vs SP, widths 32/64/128): the verdict table in about 7.5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mupbench run "$@"
