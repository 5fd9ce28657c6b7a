#!/usr/bin/env bash
# Create .venv/ at the project root and install ddmkit into it (CPU build of torch where one is on disk).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Ask for the exact torch release first: on these machines pip takes its CPU build from local disk
# instead of resolving an open range to a multi-GB CUDA build.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install --quiet "torch==${DDMKIT_TORCH_VERSION:-2.13.0}"
fi
.venv/bin/pip install --quiet -e ".[test]"
# torch-fidelity's Inception extractor for FID (and its tests), pinned in ddmkit.metrics.fidelity; without its
# dependencies: ddmkit never imports its torchvision-bound parts, and torchvision could pull another torch
TORCH_FIDELITY_VERSION=$(.venv/bin/python -c "from ddmkit.metrics.fidelity import TORCH_FIDELITY_VERSION as v; print(v)")
.venv/bin/pip install --quiet --no-deps "torch-fidelity==${TORCH_FIDELITY_VERSION}"
