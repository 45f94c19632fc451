#!/usr/bin/env bash
# What tests/test_mesh_*.py need: text4d's "mesh" extra (xatlas, fast-simplification, scikit-image,
# scipy, pygltflib), installed without touching the already installed torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c "import xatlas, fast_simplification, skimage, scipy, pygltflib" 2>/dev/null || "$PY" -m pip install -q -e ".[mesh]"
