#!/usr/bin/env bash
# Create .venv (if missing) and install mupbench into it. On a machine without torch, the CPU build of torch 2.13.0 is
# installed first so pip never pulls a multi-GB CUDA wheel; set MUPBENCH_TORCH to pin another (e.g. a CUDA build).
# MUPBENCH_EXTRAS names the optional extras (default dev; scripts/test.sh adds ray so the Ray executor's tests run).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q "${MUPBENCH_TORCH:-torch==2.13.0}"
fi
EXTRAS=${MUPBENCH_EXTRAS:-dev}
.venv/bin/pip install -q -e ".[$EXTRAS]"
case ",$EXTRAS," in
  *,dev,*)  # microsoft/mup for the coordinate check's tests on third-party μP code; --no-deps: its torchvision
            # requirement would replace torch (mup itself needs only numpy, pandas, torch and PyYAML, all installed)
    .venv/bin/pip install -q --no-deps "mup==1.0.0" ;;
esac
